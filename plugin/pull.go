package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	restore "github.com/podman-migrate/podman-migrate/import"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

type pullOptions struct {
	global          *globalOptions
	name            string
	tlsVerify       bool
	authFile        string
	ignoreStaticIP  bool
	ignoreStaticMAC bool
	publish         []string
	pod             string
	tlsVerifySet    func() bool
}

func newPullCmd(g *globalOptions) *cobra.Command {
	o := &pullOptions{global: g}
	cmd := &cobra.Command{
		Use:   "pull [flags] SOURCE",
		Short: "Fetch a checkpoint image and restore it as a new container",
		Long: `Fetch the checkpoint image SOURCE, verify it (digests, signature policy,
every archive entry), and restore it through podman as a new container with
new storage. The process continues where it was checkpointed.

SOURCE is a registry reference or any containers/image transport, as for
push; images made by 'podman container checkpoint --create-image' work too.
Prints the new container's ID on success.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&o.name, "name", "n", "", "name of the new container (default: the checkpointed container's name)")
	f.BoolVar(&o.tlsVerify, "tls-verify", true, "require HTTPS and verify certificates when talking to the registry")
	f.StringVar(&o.authFile, "authfile", "", "path of the authentication file (default: podman login's)")
	f.BoolVar(&o.ignoreStaticIP, "ignore-static-ip", false, "let podman choose a new IP address")
	f.BoolVar(&o.ignoreStaticMAC, "ignore-static-mac", false, "let podman choose a new MAC address")
	f.StringArrayVarP(&o.publish, "publish", "p", nil, "publish a port, as podman run -p (repeatable; replaces the checkpoint's)")
	f.StringVar(&o.pod, "pod", "", "restore into this existing pod")
	o.tlsVerifySet = func() bool { return f.Changed("tls-verify") }
	return cmd
}

func (o *pullOptions) run(ctx context.Context, args []string, stdout io.Writer) error {
	c, err := o.global.client(ctx)
	if err != nil {
		return err
	}
	id, err := restore.Pull(ctx, c, restore.PullOptions{
		Source:          args[0],
		Name:            o.name,
		IgnoreStaticIP:  o.ignoreStaticIP,
		IgnoreStaticMAC: o.ignoreStaticMAC,
		Publish:         o.publish,
		Pod:             o.pod,
		Transfer: transfer.Options{
			TLSVerify: transfer.TLSVerify(o.tlsVerifySet(), o.tlsVerify),
			AuthFile:  o.authFile,
			Report:    o.global.stderr,
			UserAgent: "podman-migrate/" + Version,
		},
		Log: o.global.stderr,
	})
	if err != nil {
		return fmt.Errorf("pulling %q: %w", args[0], err)
	}
	_, err = fmt.Fprintln(stdout, id)
	return err
}
