package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/sirupsen/logrus"
	"github.com/spf13/cobra"

	podman "github.com/podman-migrate/podman-migrate/bindings"
)

// globalOptions are the flags every command takes.
type globalOptions struct {
	url        string
	connection string
	identity   string
	logLevel   string
	quiet      bool
	stderr     io.Writer
}

// log is where progress goes: stderr, unless --quiet or a --log-level
// above info asks for less.
func (g *globalOptions) log() io.Writer {
	if g.quiet {
		return io.Discard
	}
	if lvl, err := logrus.ParseLevel(g.logLevel); err == nil && lvl < logrus.InfoLevel {
		return io.Discard
	}
	return g.stderr
}

// destination is the podman service named by --url, or by --connection
// (or $CONTAINER_CONNECTION) from podman's own connection list.
func (g *globalOptions) destination() (podman.Destination, error) {
	name := g.connection
	if name == "" && g.url == "" {
		name = os.Getenv("CONTAINER_CONNECTION")
	}
	if name != "" && g.url != "" {
		return podman.Destination{}, usageError{errors.New("give --url or --connection, not both")}
	}
	return resolve(name, g.url, g.identity)
}

// resolve turns a connection name or a URI into a destination; identity
// overrides a connection's own.
func resolve(name, uri, identity string) (podman.Destination, error) {
	d := podman.Destination{URI: uri}
	if name != "" {
		var err error
		if d, err = podman.ResolveConnection(name); err != nil {
			return d, err
		}
	}
	if identity != "" {
		d.Identity = identity
	}
	return d, nil
}

// client connects to the podman service named by --url or --connection.
func (g *globalOptions) client(ctx context.Context) (*podman.Client, error) {
	d, err := g.destination()
	if err != nil {
		return nil, err
	}
	return podman.ConnectTo(ctx, d)
}

// connectRootful connects to the service at d for a command that runs
// CRIU (push, pull, and both ends of move): a rootless service is refused
// before anything happens, and podman info, which those commands all need,
// is fetched meanwhile.
func connectRootful(ctx context.Context, d podman.Destination) (*podman.Client, error) {
	c, err := podman.ConnectTo(ctx, d)
	if err != nil {
		return nil, err
	}
	if err := c.RequireRootful(ctx); err != nil {
		return nil, err
	}
	c.PrefetchInfo(ctx)
	return c, nil
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
content, a restore the plan blocks, a malformed map, a staging directory
too small for the checkpoint),
130 interrupted (SIGINT or SIGTERM; a pushed container is restored first,
unless a second interrupt stops the wait for its checkpoint).`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringVar(&g.url, "url", "",
		"podman service URI: unix:///PATH, ssh://USER@HOST[:PORT]/run/podman/podman.sock or tcp://HOST:PORT (default $CONTAINER_HOST, else unix:///run/podman/podman.sock, or the rootless socket)")
	root.PersistentFlags().StringVarP(&g.connection, "connection", "c", "",
		"use this podman system connection (podman-connections.json or containers.conf service_destinations; default $CONTAINER_CONNECTION)")
	root.PersistentFlags().StringVar(&g.identity, "identity", "", "ssh identity file for ssh:// URIs")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info",
		"log level, as podman's: trace, debug, info (progress), warn, error, fatal, panic")
	root.PersistentFlags().BoolVarP(&g.quiet, "quiet", "q", false, "print only the result")
	root.PersistentPreRunE = func(*cobra.Command, []string) error {
		lvl, err := logrus.ParseLevel(g.logLevel)
		if err != nil {
			return usageError{fmt.Errorf("--log-level %q: want trace, debug, info, warn, error, fatal or panic", g.logLevel)}
		}
		// containers/image and podman's bindings log through logrus.
		logrus.SetLevel(lvl)
		logrus.SetOutput(g.stderr)
		return nil
	}
	root.AddCommand(newPushCmd(g), newPullCmd(g), newMoveCmd(g), newInspectCmd(g), newKubeCmd(g), newVersionCmd(g), newCheckCmd(g))
	root.CompletionOptions.HiddenDefaultCmd = true
	return root
}

// exactArgs is cobra.ExactArgs with a usage exit code.
func minArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.MinimumNArgs(n)(cmd, args); err != nil {
			return usageError{errors.New(err.Error() + "; see --help")}
		}
		return nil
	}
}

func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return usageError{errors.New(err.Error() + "; see --help")}
		}
		return nil
	}
}
