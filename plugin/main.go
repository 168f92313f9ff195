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
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	if ctx.Err() != nil {
		fmt.Fprintf(stderr, "Error: interrupted: %s\n", msg)
		return ExitInterrupted
	}
	// One line, so scripts and journald keep it whole.
	if hint := hintFor(err); hint != "" {
		msg += " (hint: " + hint + ")"
	}
	fmt.Fprintf(stderr, "Error: %s\n", msg)
	return exitCode(err)
}
