package main

import (
	"context"
	"errors"
	"io"

	"github.com/spf13/cobra"

	podman "github.com/podman-migrate/podman-migrate/bindings"
)

// globalOptions are the flags every command takes.
type globalOptions struct {
	url    string
	stderr io.Writer
}

// client connects to the podman service named by --url.
func (g *globalOptions) client(ctx context.Context) (*podman.Client, error) {
	return podman.Connect(ctx, g.url)
}

// usageError marks a bad command line (exit code 2).
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	g := &globalOptions{stderr: stderr}
	root := &cobra.Command{
		Use:   "podman-migrate",
		Short: "Move running Podman containers between hosts through an OCI registry",
		Long: `podman-migrate checkpoints a running container with CRIU, publishes the
checkpoint as an OCI image, and restores it on another host as a new
container whose process continues where it stopped.

Exit codes: 0 success, 1 other failure, 2 usage error, 3 podman failed,
4 the registry or image transport failed, 5 bad input (no such container,
not a checkpoint image, refused by the signature policy, unsafe image
content, a restore the plan blocks, a malformed map),
130 interrupted (SIGINT or SIGTERM; a pushed container is restored first).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringVar(&g.url, "url", "",
		"podman socket URI (default $CONTAINER_HOST, else unix:///run/podman/podman.sock, or the rootless socket)")
	root.AddCommand(newPushCmd(g), newPullCmd(g), newInspectCmd(g), newVersionCmd(g))
	root.CompletionOptions.HiddenDefaultCmd = true
	return root
}

// exactArgs is cobra.ExactArgs with a usage exit code.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{errors.New(err.Error() + "; see --help")}
		}
		return nil
	}
}
