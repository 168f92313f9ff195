package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	restore "github.com/podman-migrate/podman-migrate/import"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

type inspectOptions struct {
	global   *globalOptions
	registry *registryFlags
	limits   *limitFlags
	trust    *trustFlags
	out      *outputFlags
}

func newInspectCmd(g *globalOptions) *cobra.Command {
	o := &inspectOptions{global: g}
	cmd := &cobra.Command{
		Use:   "inspect [flags] SOURCE",
		Short: "Show what a checkpoint image (or a pod's index) holds, without restoring it",
		Long: `Show what the checkpoint image SOURCE holds: the container's name and
command, its base image, the source host's kernel, architecture, podman,
runtime and cgroups, each layer with its role and size, bind mounts, named
volumes, networks with their addresses, published ports, and the CRIU
options it was taken with. Works on podman-migrate's images and on those of
'podman container checkpoint --create-image'. A pod's index (push POD)
shows the pod's record (shared namespaces, ports, networks, labels), then
each member as a container.

Only the manifest, the image config and the metadata layer are fetched
(the whole layer for podman's single-layer images; the whole image, into
a staging directory, when its layers are encrypted: --decryption-key); the
signature policy applies as for pull (--signature-policy), and every byte
read is verified. No podman service is needed. --format json prints the
document described in the README; a --format template runs on it, e.g.
--format '{{.Container.Name}}'.`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), args, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	o.registry = addRegistryAuthFlags(f)
	o.limits = addLimitFlags(f)
	o.trust = addTrustFlags(f)
	o.out = addOutputFlags(f)
	return cmd
}

func (o *inspectOptions) run(ctx context.Context, args []string, stdout io.Writer) error {
	if err := o.out.checkAny(&ckpt.Description{}, &ckpt.PodDescription{}); err != nil {
		return err
	}
	lim, err := o.limits.limits()
	if err != nil {
		return err
	}
	if err := o.trust.check(); err != nil {
		return err
	}
	var tr transfer.Options
	o.registry.fill(&tr)
	o.trust.fill(&tr)
	d, err := restore.Inspect(ctx, args[0], tr, lim)
	if ix := podIndex(err); ix != nil {
		if err := o.out.check(&ckpt.PodDescription{}); err != nil {
			return err
		}
		pd, err := restore.InspectPod(ctx, args[0], ix, tr, lim)
		if err != nil {
			return fmt.Errorf("inspecting pod %q: %w", args[0], err)
		}
		if !o.out.text() {
			return o.out.write(stdout, pd)
		}
		printPodDescription(stdout, pd)
		return nil
	}
	if err != nil {
		return fmt.Errorf("inspecting %q: %w", args[0], err)
	}
	if err := o.out.check(&ckpt.Description{}); err != nil {
		return err
	}
	if !o.out.text() {
		return o.out.write(stdout, d)
	}
	printDescription(stdout, d)
	return nil
}

func printDescription(w io.Writer, d *ckpt.Description) {
	fmt.Fprintf(w, "Format:      %s checkpoint image\n", d.Format)
	fmt.Fprintf(w, "Digest:      %s\n", d.Digest)
	if d.Created != "" {
		fmt.Fprintf(w, "Created:     %s\n", d.Created)
	}
	fmt.Fprintf(w, "Container:   %s (%s)\n", d.Container.Name, ckpt.ShortID(d.Container.ID))
	if k := d.Kubernetes; k != nil {
		fmt.Fprintf(w, "Kubernetes:  pod %s, namespace %s, container %s\n", orDash(k.Pod), orDash(k.Namespace), orDash(k.Container))
	}
	fmt.Fprintf(w, "Command:     %s\n", strings.Join(d.Container.Command, " "))
	fmt.Fprintf(w, "Base image:  %s (%s)", d.Base.Name, ckpt.ShortID(d.Base.ID))
	if d.Base.Digest != "" {
		fmt.Fprintf(w, " digest %s", d.Base.Digest)
	}
	fmt.Fprintln(w)
	if d.Base.Included != "" {
		fmt.Fprintf(w, "Base copy:   %s\n", d.Base.Included)
	}
	s := d.Source
	if d.Format == "cri-o" {
		fmt.Fprintf(w, "Source host: CRI-O %s, runtime %s, CRIU %s\n", orDash(s.CRIO), orDash(s.Runtime), orDash(s.CRIU))
	} else {
		fmt.Fprintf(w, "Source host: kernel %s, %s, podman %s, runtime %s, CRIU %s, cgroups %s\n",
			orDash(s.Kernel), orDash(s.Arch), orDash(s.Podman), orDash(s.Runtime), orDash(s.CRIU), orDash(s.Cgroups))
	}
	for i, l := range d.Layers {
		role := l.Role
		if l.Volume != "" {
			role += " " + l.Volume
		}
		fmt.Fprintf(w, "Layer %d:     %-16s %10d bytes  %s\n", i, role, l.Size, l.Digest)
	}
	for _, b := range d.Binds {
		ro := ""
		if b.ReadOnly {
			ro = " (ro)"
		}
		fmt.Fprintf(w, "Bind mount:  %s -> %s%s\n", b.Source, b.Destination, ro)
	}
	for _, v := range d.Volumes {
		fmt.Fprintf(w, "Volume:      %s -> %s\n", v.Name, v.Destination)
	}
	for _, n := range d.Networks {
		fmt.Fprintf(w, "Network:     %s %s %s\n", n.Name, strings.Join(n.IPs, ","), n.MAC)
	}
	for _, p := range d.Ports {
		fmt.Fprintf(w, "Port:        %s:%d -> %d/%s\n", p.HostIP, p.HostPort, p.ContainerPort, p.Protocol)
	}
	if d.Options.Recorded {
		fmt.Fprintf(w, "Options:     tcp-established=%t file-locks=%t leave-running=%t", d.Options.TCPEstablished, d.Options.FileLocks, d.Options.LeaveRunning)
		if d.Options.TCPClose {
			fmt.Fprint(w, " tcp-close=true (connections are closed on restore)")
		}
		fmt.Fprintln(w)
	} else {
		fmt.Fprintf(w, "Options:     not recorded (%s's image)\n", d.Format)
	}
}

func printPodDescription(w io.Writer, d *ckpt.PodDescription) {
	p := d.Pod
	fmt.Fprintf(w, "Format:      %s index\n", d.Format)
	fmt.Fprintf(w, "Digest:      %s\n", d.Digest)
	if p.Group {
		fmt.Fprintf(w, "Group:       %d containers joined to the namespaces of %s\n", len(p.Members), p.Name)
		for i, m := range d.Members {
			fmt.Fprintf(w, "\nMember %d:    %s\n", i, p.Members[i].Name)
			if j := p.Members[i].Joins["net"]; j != "" {
				fmt.Fprintf(w, "Joins:       the network namespace of %s\n", j)
			}
			printDescription(w, m)
		}
		return
	}
	fmt.Fprintf(w, "Pod:         %s (%s), hostname %s\n", p.Name, ckpt.ShortID(p.ID), orDash(p.Hostname))
	fmt.Fprintf(w, "Shares:      %s\n", orDash(strings.Join(p.Shared, ", ")))
	if p.HostNetwork {
		fmt.Fprintln(w, "Network:     host")
	} else if len(p.Networks) > 0 {
		fmt.Fprintf(w, "Networks:    %s\n", strings.Join(p.Networks, ", "))
	}
	for _, pp := range p.Ports {
		fmt.Fprintf(w, "Port:        %s:%d -> %d/%s\n", pp.HostIP, pp.HostPort, pp.ContainerPort, pp.Protocol)
	}
	keys := make([]string, 0, len(p.Labels))
	for k := range p.Labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "Label:       %s=%s\n", k, p.Labels[k])
	}
	for i, m := range d.Members {
		fmt.Fprintf(w, "\nMember %d:    %s\n", i, p.Members[i].Name)
		printDescription(w, m)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
