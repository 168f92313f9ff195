package main

import (
	"context"
	"fmt"
	"io"
	"time"

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
	mountMap        []string
	volumeMap       []string
	networkMap      []string
	allowPrivileged bool
	limits          *limitFlags
	dryRun          bool
	trust           *trustFlags
	format          string
	retry           *retryFlags
	tmpDir          string
	tlsVerifySet    func() bool
	restoreTimeout  time.Duration
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
Prints the new container's ID on success.

Before it creates anything, pull plans the restore from the checkpoint's
metadata alone: the container name, bind-mount sources (as the podman
service sees its file system), named volumes, networks, the base image,
runtime, CRIU, kernel and architecture. Any problem stops it with one line
per problem, naming the flag that fixes it. --dry-run prints that plan and
exits 0 when the restore can proceed, 5 when it cannot. A checkpoint that
asks for more than an ordinary container (privileged mode, host namespaces,
added devices or capabilities, OCI hooks, runtime annotations) is one such
problem unless --allow-privileged is given. A layer that decompresses past
--max-layer-size or holds more than --max-layer-entries entries stops the
pull (exit 5) before anything is restored.

An encrypted image (push --encryption-key) needs --decryption-key; it is
fetched whole and decrypted before planning, --dry-run included.

Relocation:
  --mount-map /srv/a=/data/a    a bind mount from /srv/a, or from below it,
                                comes from /data/a (same relative path) here
  --volume-map web-data=web2    restore named volume web-data as web2
  --network-map appnet=prodnet  attach to prodnet where it was on appnet`,
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
	f.StringArrayVar(&o.mountMap, "mount-map", nil, "relocate bind mounts: SRC on the checkpointed host, or a path below it, is DST here (repeatable)")
	f.StringArrayVar(&o.volumeMap, "volume-map", nil, "restore named volume OLD as NEW: OLD=NEW (repeatable)")
	f.StringArrayVar(&o.networkMap, "network-map", nil, "attach to network NEW where the container was on OLD: OLD=NEW (repeatable)")
	f.BoolVar(&o.dryRun, "dry-run", false, "fetch only the metadata (an encrypted image: all of it), print the plan and create nothing; exit 5 if the restore could not proceed")
	f.StringVar(&o.format, "format", "text", "output: text (the container ID; the plan with --dry-run) or json (id, name, source, digest, per-phase seconds, bytes; the plan with --dry-run)")
	f.BoolVar(&o.allowPrivileged, "allow-privileged", false, "restore a checkpoint that asks for more than an ordinary container (privileged mode, host namespaces, devices, capabilities, hooks, runtime annotations)")
	o.limits = addLimitFlags(f)
	o.trust = addTrustFlags(f)
	o.retry = addRetryFlags(f)
	f.StringVar(&o.tmpDir, "tmpdir", "", "staging directory for the image (default $TMPDIR, else /var/tmp); needs room for the container's memory")
	o.tlsVerifySet = func() bool { return f.Changed("tls-verify") }
	f.DurationVar(&o.restoreTimeout, "restore-timeout", defaultCRIUTimeout, restoreTimeoutHelp)
	return cmd
}

func (o *pullOptions) run(ctx context.Context, args []string, stdout io.Writer) error {
	lim, err := o.limits.limits()
	if err != nil {
		return err
	}
	if err := outputFormat(o.format); err != nil {
		return err
	}
	if err := o.trust.check(); err != nil {
		return err
	}
	c, err := o.global.rootfulClient(ctx)
	if err != nil {
		return err
	}
	po := restore.PullOptions{
		Source:          args[0],
		Name:            o.name,
		IgnoreStaticIP:  o.ignoreStaticIP,
		IgnoreStaticMAC: o.ignoreStaticMAC,
		Publish:         o.publish,
		Pod:             o.pod,
		MountMap:        o.mountMap,
		VolumeMap:       o.volumeMap,
		NetworkMap:      o.networkMap,
		Limits:          lim,
		AllowPrivileged: o.allowPrivileged,
		Transfer: o.retry.set(o.trust.set(transfer.Options{
			TLSVerify: transfer.TLSVerify(o.tlsVerifySet(), o.tlsVerify),
			AuthFile:  o.authFile,
			Report:    o.global.log(),
			UserAgent: "podman-migrate/" + Version,
		})),
		Log:    o.global.log(),
		TmpDir: o.tmpDir,

		RestoreTimeout: o.restoreTimeout,
	}
	if o.dryRun {
		p, err := restore.PlanPull(ctx, c, po)
		if err != nil {
			return fmt.Errorf("planning the pull of %q: %w", args[0], err)
		}
		if o.format == "json" {
			err = writeJSON(stdout, p)
		} else {
			p.Print(stdout)
		}
		if err != nil {
			return err
		}
		if err := p.Err(); err != nil {
			return fmt.Errorf("pulling %q: %w", args[0], err)
		}
		return nil
	}
	res, err := restore.Pull(ctx, c, po)
	if err != nil {
		return fmt.Errorf("pulling %q: %w", args[0], err)
	}
	if o.format == "json" {
		return writeJSON(stdout, res)
	}
	_, err = fmt.Fprintln(stdout, res.ID)
	return err
}
