package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/containers/image/v5/signature"
	"github.com/spf13/cobra"

	"github.com/podman-migrate/podman-migrate/internal/kube"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

type kubeOptions struct {
	global    *globalOptions
	mountMap  []string
	name      string
	baseImage string
	basePull  string
	registry  *registryFlags
	policy    string
	limits    *limitFlags
	checkNode bool
	node      kube.NodeOptions
	out       *outputFlags
}

func newKubeCmd(g *globalOptions) *cobra.Command {
	o := &kubeOptions{global: g}
	cmd := &cobra.Command{
		Use:   "kube [flags] SOURCE | kube --check-node [flags]",
		Short: "Print a Kubernetes Pod manifest that restores a checkpoint image in CRI-O",
		Long: `Print a Kubernetes Pod manifest that restores the checkpoint image SOURCE
(a registry reference, as push printed it) in a CRI-O node with CRIU
support: the image by digest as the container's image, every mount the
checkpoint needs (hostPath from the bind mount sources, mapped with
--mount-map; an emptyDir for podman volumes and tmpfs), the published
ports, and the base image, which CRI-O needs present and does not pull
itself, as an image volume the kubelet pulls without running anything in
it (--base-pull=node leaves the pull to you, for clusters without image
volumes). Notes about what differs from the podman container, and the
node settings the Pod relies on, come as comments above the manifest.

CRI-O takes the restored container's command from the base image, not
from the Pod: a base image with neither ENTRYPOINT nor CMD is refused.

SOURCE may be a pod's index (push POD) or a group's (push A B DEST): the
Pod then has one container per member, each its member's checkpoint image
by digest, with the pod's published ports; a Kubernetes pod shares
network, IPC and UTS namespaces, as the podman pod did.

Only the manifest, the image config and the metadata layer of SOURCE, and
the base image's config, are read, under the signature policy. No podman
service is needed.

  podman-migrate kube registry.example:5000/ckpt/web:v1@sha256:… | kubectl apply -f -

kube --check-node, run on the node, asks its runtime through crictl
(crictl version, crictl info) whether it can restore such a Pod: CRI-O
with checkpoint/restore on (enable_criu_support = true, criu on its PATH).
It prints what it found and the setting that fixes each problem: on stdout
with exit 0 when the node can restore, else on stderr with exit 3 (also
when crictl fails). --format json prints the report as one document.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if o.checkNode {
				return exactArgs(0)(cmd, args)
			}
			return exactArgs(1)(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.mountMap, "mount-map", nil, "a mount whose source was SRC, or lies below it, comes from DST on the node: SRC=DST (repeatable)")
	f.StringVar(&o.name, "name", "", "the pod's name (default: the container's, as a DNS label)")
	f.StringVar(&o.baseImage, "base-image", "", "the base image the node pulls, by digest (default: push --include-base's copy, else the origin by digest)")
	f.StringVar(&o.basePull, "base-pull", kube.BaseImageVolume, "how the base image reaches the node: image-volume (the kubelet pulls it as an unmounted image volume) or node (pull it there yourself first)")
	f.BoolVar(&o.checkNode, "check-node", false, "on a node: report whether its runtime can restore kube's Pods, and the settings that would let it")
	f.StringVar(&o.node.Endpoint, "runtime-endpoint", "", "with --check-node: the runtime's CRI socket (default: crictl's own configuration)")
	f.StringVar(&o.node.Crictl, "crictl", "", "with --check-node: the crictl binary (default: crictl on PATH)")
	f.DurationVar(&o.node.Timeout, "timeout", 30*time.Second, "with --check-node: bound of each crictl call")
	o.out = addOutputFlags(f)
	o.registry = addRegistryAuthFlags(f)
	f.StringVar(&o.policy, "signature-policy", "", "signature policy file to use instead of the system's policy.json")
	o.limits = addLimitFlags(f)
	return cmd
}

func (o *kubeOptions) run(ctx context.Context, args []string, stdout io.Writer) error {
	if o.checkNode {
		return o.runCheckNode(ctx, stdout)
	}
	if !o.out.text() {
		return usageError{fmt.Errorf("--format %q: the manifest is YAML; --format applies to --check-node", o.out.format)}
	}
	lim, err := o.limits.limits()
	if err != nil {
		return err
	}
	if o.policy != "" {
		if _, err := signature.NewPolicyFromFile(o.policy); err != nil {
			return usageError{fmt.Errorf("--signature-policy %s: %w", o.policy, err)}
		}
	}
	tr := transfer.Options{SignaturePolicy: o.policy}
	o.registry.fill(&tr)
	r, err := kube.FromSource(ctx, args[0], tr, lim, kube.Options{Name: o.name, MountMap: o.mountMap, BaseImage: o.baseImage, BasePull: o.basePull})
	if err != nil {
		return fmt.Errorf("making a Pod manifest for %q: %w", args[0], err)
	}
	y, err := r.YAML()
	if err != nil {
		return err
	}
	_, err = stdout.Write(y)
	return err
}

func (o *kubeOptions) runCheckNode(ctx context.Context, stdout io.Writer) error {
	if err := o.out.check(&kube.NodeReport{}); err != nil {
		return err
	}
	if o.node.Timeout <= 0 {
		return usageError{fmt.Errorf("--timeout %s: want a positive duration", o.node.Timeout)}
	}
	rep, err := kube.CheckNode(ctx, o.node)
	if err != nil {
		return fmt.Errorf("checking the node: %w", err)
	}
	// A failure prints nothing on stdout: the report goes to the log,
	// before the error line.
	out := stdout
	if !rep.OK {
		out = o.global.log()
	}
	if o.out.text() {
		_, err = io.WriteString(out, rep.Text())
	} else {
		err = o.out.write(out, rep)
	}
	if err != nil {
		return err
	}
	if !rep.OK {
		return fmt.Errorf("%w: %s", kube.ErrNodeNotReady, strings.Join(rep.Problems, "; "))
	}
	return nil
}
