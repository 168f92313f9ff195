package main

import (
	"context"
	"fmt"
	"io"

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
	registry  *registryFlags
	policy    string
	limits    *limitFlags
}

func newKubeCmd(g *globalOptions) *cobra.Command {
	o := &kubeOptions{global: g}
	cmd := &cobra.Command{
		Use:   "kube [flags] SOURCE",
		Short: "Print a Kubernetes Pod manifest that restores a checkpoint image in CRI-O",
		Long: `Print a Kubernetes Pod manifest that restores the checkpoint image SOURCE
(a registry reference, as push printed it) in a CRI-O node with CRIU
support: the image by digest as the container's image, every mount the
checkpoint needs (hostPath from the bind mount sources, mapped with
--mount-map; an emptyDir for podman volumes and tmpfs), the published
ports, and an init container that pulls the base image, which CRI-O needs
present and does not pull itself. Notes about what differs from the
podman container come as comments above the manifest.

Only the manifest, the image config and the metadata layer are read,
under the signature policy. No podman service is needed.

  podman-migrate kube registry.example:5000/ckpt/web:v1@sha256:… | kubectl apply -f -`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&o.mountMap, "mount-map", nil, "a mount whose source was SRC, or lies below it, comes from DST on the node: SRC=DST (repeatable)")
	f.StringVar(&o.name, "name", "", "the pod's name (default: the container's, as a DNS label)")
	f.StringVar(&o.baseImage, "base-image", "", "the base image the node pulls, by digest (default: push --include-base's copy, else the origin by digest)")
	o.registry = addRegistryAuthFlags(f)
	f.StringVar(&o.policy, "signature-policy", "", "signature policy file to use instead of the system's policy.json")
	o.limits = addLimitFlags(f)
	return cmd
}

func (o *kubeOptions) run(ctx context.Context, args []string, stdout io.Writer) error {
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
	r, err := kube.FromSource(ctx, args[0], tr, lim, kube.Options{Name: o.name, MountMap: o.mountMap, BaseImage: o.baseImage})
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
