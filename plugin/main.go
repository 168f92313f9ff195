// Command podman-migrate moves running Podman containers between hosts
// through an OCI registry: push checkpoints a container into an image,
// pull restores that image as a new container on another host.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/podman-migrate/podman-migrate/internal/fault"
)

// Version is stamped at build time with -ldflags "-X main.Version=…".
var Version = "dev"

func main() {
	ctx, stop := notifyInterrupts(context.Background())
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the process exit code; tests
// call it in-process with their own writers.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return ExitOK
	}
	if ctx.Err() != nil {
		// Whatever failed after SIGINT or SIGTERM failed because of it.
		err = fault.Wrap(fault.Interrupted, err)
	}
	return report(stderr, err)
}

// report prints err as the one "Error:" line, with its hint, and returns
// the exit code of its kind.
func report(stderr io.Writer, err error) int {
	// One line, so scripts and journald keep it whole.
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	if fault.KindOf(err) == fault.Interrupted {
		// The user stopped it: no fix to suggest.
		msg = "interrupted: " + msg
	} else if hint := hintFor(err); hint != "" {
		msg += " (hint: " + hint + ")"
	}
	fmt.Fprintf(stderr, "Error: %s\n", msg)
	return exitCode(err)
}
