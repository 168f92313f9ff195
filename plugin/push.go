package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/podman-migrate/podman-migrate/export"
	"github.com/podman-migrate/podman-migrate/migrate"
)

type pushOptions struct {
	global       *globalOptions
	leaveRunning bool
	checkpoint   *checkpointFlags
	image        *imageFlags
	seal         *sealFlags
	registry     *registryFlags
	staging      *stagingFlags
	out          *outputFlags
}

func newPushCmd(g *globalOptions) *cobra.Command {
	o := &pushOptions{global: g}
	cmd := &cobra.Command{
		Use:   "push [flags] CONTAINER|POD DEST | push [flags] CONTAINER CONTAINER... DEST",
		Short: "Checkpoint a running container, or a pod, and publish it as an OCI image",
		Long: `Checkpoint CONTAINER with CRIU and publish the checkpoint to DEST.

DEST is a registry reference (host[:port]/repo:tag) or any containers/image
transport: docker://host/repo:tag, oci:DIR:TAG, oci-archive:FILE, dir:DIR.
The container stops (its checkpoint is kept on this host) unless
--leave-running is given; if anything fails after the checkpoint, it is
restored here. Prints DEST@DIGEST on success; --format json prints the
reference, digest, container, per-phase seconds, bytes and layers, and
--format '{{.Digest}}' one of them (see the man page).

A checkpoint that takes longer than --checkpoint-timeout (CRIU < 4.2 hangs
forever on VM guests) is ended, the container runs on, and push exits 3;
after 30s it warns. A first Ctrl-C waits for the checkpoint, then restores
the container; a second stops waiting at once and prints how to recover.

A POD (a name that is no container's) is pushed whole: its members are
frozen through their cgroups before the first is dumped, and DEST gets one
OCI image index, a checkpoint image per member and the pod's record; pull
makes the pod again. This needs the podman service on this machine;
--include-base copies each distinct base image of the members once, before
any is frozen, encryption encrypts every member, and signing signs the
index and every member.

Several CONTAINERs are pushed as one group: a container and those that
join its namespaces (podman run --network, --ipc, --pid or --uts
container:X), which podman cannot checkpoint apart. A container that joins another is refused
alone, naming the other. The members are frozen together, dumped leaving
them running, and stopped (killed while still frozen) once the image is
out; any failure thaws them and they run on. DEST gets one image index, as
for a pod; pull restores the members in order, each joined again to the
namespaces of those it joined. Same needs as a pod.

--encryption-key encrypts the layers on their way to DEST (the staging copy
on this host stays plaintext, readable by root only);
--sign-by-sigstore-private-key signs the image (see the man page).`,
		Args: minArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.leaveRunning, "leave-running", false, "keep the source container running (copy, not move)")
	o.checkpoint = addCheckpointFlags(f)
	o.image = addImageFlags(f)
	o.seal = addSealFlags(f)
	o.registry = addRegistryFlags(f)
	o.staging = addStagingFlags(f)
	o.out = addOutputFlags(f)
	return cmd
}

func (o *pushOptions) run(ctx context.Context, args []string, stdout io.Writer) error {
	if err := o.out.checkAny(&export.PushResult{}, &migrate.PodPushResult{}); err != nil {
		return err
	}
	names, dest := args[:len(args)-1], args[len(args)-1]
	if err := o.seal.check(dest); err != nil {
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
	group := len(names) > 1
	pod := false
	if !group {
		if pod, err = migrate.IsPod(ctx, c, names[0]); err != nil {
			return err
		}
	}
	var sample any = &export.PushResult{}
	if pod || group {
		sample = &migrate.PodPushResult{}
	}
	if err := o.out.check(sample); err != nil {
		return err
	}
	po := export.PushOptions{
		Container:    names[0],
		Dest:         dest,
		LeaveRunning: o.leaveRunning,
		ToolVersion:  Version,
		TmpDir:       o.staging.dir,
		Log:          o.global.log(),
		StopWaiting:  secondInterrupt(ctx),
	}
	o.checkpoint.fill(&po)
	o.image.fill(&po)
	o.registry.fill(&po.Transfer)
	o.seal.fill(&po.Transfer)
	po.Transfer.Report = o.global.log()
	if pod || group {
		var res *migrate.PodPushResult
		if group {
			res, err = migrate.PushGroup(ctx, c, po, names)
		} else {
			res, err = migrate.PushPod(ctx, c, po)
		}
		if err != nil {
			what := "pod"
			if group {
				what = "group"
			}
			return fmt.Errorf("pushing %s %q to %q: %w", what, strings.Join(names, ", "), dest, err)
		}
		if !o.out.text() {
			return o.out.write(stdout, res)
		}
		_, err = fmt.Fprintf(stdout, "%s@%s\n", res.Reference, res.Digest)
		return err
	}
	res, err := migrate.Push(ctx, c, po)
	if err != nil {
		return fmt.Errorf("pushing %q to %q: %w", names[0], dest, err)
	}
	if !o.out.text() {
		return o.out.write(stdout, res)
	}
	_, err = fmt.Fprintf(stdout, "%s@%s\n", res.Reference, res.Digest)
	return err
}
