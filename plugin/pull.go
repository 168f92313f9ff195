package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	restore "github.com/podman-migrate/podman-migrate/import"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/migrate"
)

type pullOptions struct {
	global     *globalOptions
	dryRun     bool
	restore    *restoreFlags
	relocation *relocationFlags
	trust      *trustFlags
	limits     *limitFlags
	registry   *registryFlags
	staging    *stagingFlags
	out        *outputFlags
}

func newPullCmd(g *globalOptions) *cobra.Command {
	o := &pullOptions{global: g}
	cmd := &cobra.Command{
		Use:   "pull [flags] SOURCE",
		Short: "Fetch a checkpoint image and restore it as a new container (or pod)",
		Long: `Fetch the checkpoint image SOURCE, verify it (digests, signature policy,
every archive entry), and restore it through podman as a new container with
new storage. The process continues where it was checkpointed.

SOURCE is a registry reference or any containers/image transport, as for
push; images made by 'podman container checkpoint --create-image' work too.
Prints the new container's ID on success; --format json prints the id,
name, source, digest, per-phase seconds and bytes (with --dry-run: the
plan), and --format '{{.ID}}' one of them (see the man page).

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

A pod's index (push POD) makes the pod again: a new pod with the recorded
shared namespaces, hostname, labels, DNS and resource settings, its ports
replaced by --publish and its networks renamed by --network-map, --name
naming the pod; then every member is restored into it, each planned before
anything is made. If one member fails, the pod and every member restored
into it are removed again. Prints the new pod's ID.

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
	f.BoolVar(&o.dryRun, "dry-run", false, "fetch only the metadata (an encrypted image: all of it), print the plan and create nothing; exit 5 if the restore could not proceed")
	o.restore = addRestoreFlags(f)
	f.BoolVar(&o.restore.tcpClose, "tcp-close", false, tcpCloseUsage)
	o.relocation = addRelocationFlags(f)
	o.trust = addTrustFlags(f)
	o.limits = addLimitFlags(f)
	o.registry = addRegistryFlags(f)
	o.staging = addStagingFlags(f)
	o.out = addOutputFlags(f)
	return cmd
}

func (o *pullOptions) run(ctx context.Context, args []string, stdout io.Writer) error {
	lim, err := o.limits.limits()
	if err != nil {
		return err
	}
	// The fields a template may name depend on what SOURCE holds (one
	// container's checkpoint or a pod's): a pod's are checked again before
	// the pod is made.
	var sample, podSample any = &restore.PullResult{}, &migrate.PodPullResult{}
	if o.dryRun {
		sample, podSample = &restore.Plan{}, &migrate.PodPlan{}
	}
	if err := o.out.checkAny(sample, podSample); err != nil {
		return err
	}
	if err := o.trust.check(); err != nil {
		return err
	}
	if err := o.restore.check(); err != nil {
		return err
	}
	d, err := o.global.destination()
	if err != nil {
		return err
	}
	c, err := connectRootful(ctx, d)
	if err != nil {
		return err
	}
	po := restore.PullOptions{
		Source: args[0],
		Limits: lim,
		Log:    o.global.log(),
		TmpDir: o.staging.dir,
	}
	o.restore.fill(&po)
	o.relocation.fill(&po)
	o.registry.fill(&po.Transfer)
	o.trust.fill(&po.Transfer)
	po.Transfer.Report = o.global.log()
	if o.dryRun {
		p, err := migrate.PlanPull(ctx, c, po)
		if ix := podIndex(err); ix != nil {
			return o.runPod(ctx, c, po, ix, args, stdout)
		}
		if err != nil {
			return fmt.Errorf("planning the pull of %q: %w", args[0], err)
		}
		return o.writePlan(stdout, p, fmt.Sprintf("%q", args[0]))
	}
	res, err := migrate.Pull(ctx, c, po)
	if ix := podIndex(err); ix != nil {
		return o.runPod(ctx, c, po, ix, args, stdout)
	}
	if err != nil {
		return fmt.Errorf("pulling %q: %w", args[0], err)
	}
	if !o.out.text() {
		return o.out.write(stdout, res)
	}
	_, err = fmt.Fprintln(stdout, res.ID)
	return err
}

// plan is a container's or a pod's plan, as --dry-run prints it.
type plan interface {
	Print(io.Writer)
	Err() error
}

// writePlan prints p, and fails as the pull of what would when p has
// blockers.
func (o *pullOptions) writePlan(stdout io.Writer, p plan, what string) error {
	if o.out.text() {
		p.Print(stdout)
	} else if err := o.out.write(stdout, p); err != nil {
		return err
	}
	if err := p.Err(); err != nil {
		return fmt.Errorf("pulling %s: %w", what, err)
	}
	return nil
}

// podIndex is the pod's index a pull found where it looked for one
// container's checkpoint, nil for any other outcome.
func podIndex(err error) *ckpt.IndexError {
	var ix *ckpt.IndexError
	if errors.As(err, &ix) && ckpt.IsPodIndex(ix.MediaType, ix.Manifest) {
		return ix
	}
	return nil
}

// runPod pulls, or plans, a pod's index: the pod is made anew.
func (o *pullOptions) runPod(ctx context.Context, c *podman.Client, po restore.PullOptions, ix *ckpt.IndexError, args []string, stdout io.Writer) error {
	var sample any = &migrate.PodPullResult{}
	if o.dryRun {
		sample = &migrate.PodPlan{}
	}
	if err := o.out.check(sample); err != nil {
		return err
	}
	if o.dryRun {
		p, err := migrate.PlanPodPull(ctx, c, po, ix)
		if err != nil {
			return fmt.Errorf("planning the pull of pod or group %q: %w", args[0], err)
		}
		return o.writePlan(stdout, p, fmt.Sprintf("pod %q", args[0]))
	}
	res, err := migrate.PullPod(ctx, c, po, ix)
	if err != nil {
		return fmt.Errorf("pulling pod or group %q: %w", args[0], err)
	}
	if !o.out.text() {
		return o.out.write(stdout, res)
	}
	if !res.Group {
		_, err = fmt.Fprintln(stdout, res.ID)
		return err
	}
	for _, m := range res.Members { // a group: the containers, no pod
		if _, err := fmt.Fprintln(stdout, m.ID); err != nil {
			return err
		}
	}
	return nil
}
