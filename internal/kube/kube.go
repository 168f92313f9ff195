// Package kube turns a checkpoint image into a Kubernetes Pod manifest
// that restores it: CRI-O (1.25 and later, enable_criu_support) restores a
// container from a checkpoint image when the pod's container image is one.
// The manifest is built from podman's own copy of the core/v1 types, the
// ones `podman kube generate` writes.
package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/containers/image/v5/docker/reference"
	"github.com/containers/image/v5/image"
	"github.com/containers/image/v5/types"
	v1 "github.com/containers/podman/v4/pkg/k8s.io/api/core/v1"
	metav1 "github.com/containers/podman/v4/pkg/k8s.io/apimachinery/pkg/apis/meta/v1"
	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
	"sigs.k8s.io/yaml"

	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/fault"
	"github.com/podman-migrate/podman-migrate/internal/mountmap"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// ErrNotRestorable is wrapped when CRI-O could not restore the image from
// the manifest: the image lacks what CRI-O needs, or the base image cannot
// be pulled by digest.
var ErrNotRestorable = fault.New(fault.Input, "CRI-O cannot restore this checkpoint image")

// ErrBadName is wrapped when a pod name is not a DNS label.
var ErrBadName = fault.New(fault.Input, "invalid pod name")

// BaseVolumeName is the image volume that makes the kubelet pull the base
// image: CRI-O needs it present and does not pull it itself. The kubelet
// pulls every image volume of a pod before its first container starts,
// mounted or not, and runs nothing from it.
const BaseVolumeName = "podman-migrate-base"

// How the base image reaches the node (Options.BasePull).
const (
	// BaseImageVolume: the pod names it in an image volume (Kubernetes
	// 1.31 and later, the ImageVolume feature gate; on by default from 1.35).
	BaseImageVolume = "image-volume"
	// BaseOnNode: the pod does not pull it; it must be on the node first.
	BaseOnNode = "node"
)

// ErrBadBasePull is wrapped when Options.BasePull is neither mode.
var ErrBadBasePull = fault.New(fault.Usage, "invalid --base-pull")

// ImageVolume is core/v1's ImageVolumeSource, which podman's copy of the
// types predates.
type ImageVolume struct {
	Reference  string `json:"reference"`
	PullPolicy string `json:"pullPolicy,omitempty"`
}

// Options say how the manifest is made.
type Options struct {
	// Image is the checkpoint image by digest (host/repo@sha256:…), as
	// the node pulls it.
	Image string
	// Name is the pod's name; "" derives it from the container's.
	Name string
	// MountMap is --mount-map SRC=DST: a mount whose source was SRC, or lies
	// below it, comes from DST on the node. The longest SRC wins.
	MountMap []string
	// BaseImage replaces the base image reference the image records.
	BaseImage string
	// BasePull is BaseImageVolume ("" means it) or BaseOnNode.
	BasePull string
}

// Result is the manifest and what a reader must know about it.
type Result struct {
	// Pod is the manifest but for the sources of ImageVolumes' volumes.
	Pod       *v1.Pod
	BaseImage string
	// ImageVolumes are the pod's image volumes by name; YAML writes them.
	ImageVolumes map[string]ImageVolume
	// Notes are comment lines printed above the manifest.
	Notes []string
	bases []string // every member's, BaseImage first
}

// CRIOIgnoredMounts are the spec.dump destinations CRI-O 1.36 sets up
// anew on restore (server/container_restore.go); every other mount must be
// defined, by destination, in the container it creates.
var CRIOIgnoredMounts = map[string]bool{
	"/proc": true, "/dev": true, "/dev/pts": true, "/dev/mqueue": true,
	"/sys": true, "/sys/fs/cgroup": true, "/dev/shm": true,
	"/etc/resolv.conf": true, "/etc/hostname": true, "/etc/passwd": true,
	"/etc/group": true, "/run/secrets": true, "/run/.containerenv": true,
}

// TCPEstablishedNote is the note on a checkpoint taken with its TCP
// connections (a pod's members always are): CRI-O has runc restore without
// CRIU's tcp-established, which then refuses a connection in the image
// ("Connected TCP socket in image"), unless the CRIU configuration file runc
// hands CRIU says it.
const TCPEstablishedNote = "The checkpoint holds TCP connections (tcp-established): CRI-O restores without that option, and CRIU refuses a connection open at the checkpoint (\"Connected TCP socket in image\") unless the node's /etc/criu/runc.conf, the CRIU configuration file runc reads, has the line tcp-established."

// TCPCloseNote is the note on a checkpoint pushed with --tcp-close: its
// connections to peers that did not move cannot be restored on the node,
// and CRI-O has no option to close them; CRIU closes them when the CRIU
// configuration file runc hands it says tcp-close.
const TCPCloseNote = "The checkpoint was pushed with --tcp-close: its TCP connections are to be restored closed, as those to peers that did not move must be. CRI-O has no such option; the line tcp-close in the node's /etc/criu/runc.conf, the CRIU configuration file runc reads, does it (for every restore on that node)."

// KubeletHosts is the mount the kubelet adds to every container of a pod
// with a network namespace of its own.
const KubeletHosts = "/etc/hosts"

// RequiredMounts lists the spec.dump mounts CRI-O's restore wants the
// container to define, by destination (cleaned, as CRI-O compares them),
// in the order spec.dump has them.
func RequiredMounts(specDump []byte) ([]ckpt.SpecMount, error) {
	spec, err := ckpt.ParseSpec(specDump)
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", ErrNotRestorable, ckpt.SpecDump, err)
	}
	mounts, err := spec.Mounts()
	if err != nil {
		return nil, fmt.Errorf("%w: reading %s: %w", ErrNotRestorable, ckpt.SpecDump, err)
	}
	var out []ckpt.SpecMount
	for _, m := range mounts {
		m.Destination = path.Clean(m.Destination)
		if CRIOIgnoredMounts[m.Destination] {
			continue
		}
		out = append(out, m)
	}
	return out, nil
}

// Generate makes the Pod manifest that restores the checkpoint meta
// describes.
func Generate(meta *ckpt.Metadata, o Options) (*Result, error) {
	d := ckpt.Describe(meta)
	b, err := newBuilder(o, d.Container.Name)
	if err != nil {
		return nil, err
	}
	ctr, err := b.container(meta, o.Image)
	if err != nil {
		return nil, err
	}
	for _, p := range d.Ports {
		cp := v1.ContainerPort{ContainerPort: int32(p.ContainerPort), Protocol: v1.Protocol(strings.ToUpper(p.Protocol)), HostIP: p.HostIP}
		if p.HostPort > 0 {
			cp.HostPort = int32(p.HostPort)
		}
		if cp.Protocol == "" {
			cp.Protocol = v1.ProtocolTCP
		}
		ctr.Ports = append(ctr.Ports, cp)
	}
	b.head = []string{fmt.Sprintf("Restores container %q (%s) from checkpoint image %s.", d.Container.Name, d.Format, o.Image)}
	r, err := b.result()
	if err != nil {
		return nil, err
	}
	r.Pod.Spec.Containers = []v1.Container{*ctr}
	return r, nil
}

// Member is one container of a pod's (or a group's) index: its
// checkpoint's metadata and its image by digest, as the node pulls it.
type Member struct {
	Meta  *ckpt.Metadata
	Image string
}

// GeneratePod makes one Pod manifest with a container per member of the
// pod (or group) rec records: a Kubernetes pod shares its network, IPC and
// UTS namespaces, as a podman pod does by default and as a group shares
// its network namespace. The record's ports are the Pod's, on its first
// container.
func GeneratePod(rec *ckpt.Pod, members []Member, o Options) (*Result, error) {
	if len(members) == 0 || len(members) != len(rec.Members) {
		return nil, fmt.Errorf("%w: %d members' checkpoints for a record of %d", ErrNotRestorable, len(members), len(rec.Members))
	}
	b, err := newBuilder(o, rec.Name)
	if err != nil {
		return nil, err
	}
	kind := "pod"
	if rec.Group {
		kind = "group of containers sharing the network namespace of"
	}
	var ctrs []v1.Container
	names := map[string]bool{}
	for i, m := range members {
		ctr, err := b.container(m.Meta, m.Image)
		if err != nil {
			return nil, fmt.Errorf("member %q: %w", rec.Members[i].Name, err)
		}
		ctr.Name = unique(ctr.Name, names)
		ctrs = append(ctrs, *ctr)
	}
	for _, p := range rec.Ports {
		cp := v1.ContainerPort{ContainerPort: int32(p.ContainerPort), HostPort: int32(p.HostPort), HostIP: p.HostIP, Protocol: v1.Protocol(strings.ToUpper(p.Protocol))}
		ctrs[0].Ports = append(ctrs[0].Ports, cp)
	}
	notes := []string{fmt.Sprintf("Restores %s %q: %d containers, each from its member's checkpoint image, in the record's order.", kind, rec.Name, len(members))}
	for _, ns := range rec.Shared {
		if ns == "pid" || ns == "cgroup" || ns == "user" {
			notes = append(notes, fmt.Sprintf("The podman pod shared its %s namespace; this Pod does not (a Kubernetes pod shares network, IPC and UTS).", ns))
		}
	}
	b.head = notes
	r, err := b.result()
	if err != nil {
		return nil, err
	}
	r.Pod.Spec.Containers = ctrs
	if rec.Hostname != "" && isDNSLabel(rec.Hostname) && !rec.Group {
		r.Pod.Spec.Hostname = rec.Hostname
	}
	return r, nil
}

// builder makes a Pod of one or more checkpoints: volume names unique in
// the Pod, each --mount-map used by some member, one image volume per
// distinct base image.
type builder struct {
	o     Options
	name  string
	pull  string
	maps  mountmap.Maps
	used  map[string]bool
	names map[string]bool
	// podmanVols are the emptyDirs made for podman volumes, by name: one
	// volume for the members that share it.
	podmanVols map[string]string
	bases      []string
	vols       []v1.Volume
	head       []string // notes about the whole Pod, first
	notes      []string // notes about the members' mounts, each once
}

func (b *builder) note(n string) {
	if !slices.Contains(b.notes, n) {
		b.notes = append(b.notes, n)
	}
}

func newBuilder(o Options, from string) (*builder, error) {
	maps, err := mountmap.Parse(o.MountMap)
	if err != nil {
		return nil, err
	}
	name := o.Name
	if name == "" {
		name = dnsLabel(from)
	} else if !isDNSLabel(name) {
		return nil, fmt.Errorf("%w %q: want at most 63 lower-case letters, digits and '-', starting and ending with a letter or digit", ErrBadName, name)
	}
	pull := o.BasePull
	if pull == "" {
		pull = BaseImageVolume
	}
	if pull != BaseImageVolume && pull != BaseOnNode {
		return nil, fmt.Errorf("%w %q: want %s or %s", ErrBadBasePull, pull, BaseImageVolume, BaseOnNode)
	}
	return &builder{o: o, name: name, pull: pull, maps: maps, used: map[string]bool{}, names: map[string]bool{BaseVolumeName: true}, podmanVols: map[string]string{}}, nil
}

// container checks that CRI-O can restore meta's checkpoint and makes its
// container, image the checkpoint image by digest.
func (b *builder) container(meta *ckpt.Metadata, image string) (*v1.Container, error) {
	if meta.Provenance().CRIOName == "" {
		return nil, fault.Hinted(fmt.Errorf("%w: its manifest has no %s annotation, so CRI-O would run it as an ordinary image", ErrNotRestorable, ckpt.AnnCRIOName), "push it with podman-migrate push, without --no-cri-o-annotations")
	}
	if err := checkSpecAnnotations(meta.SpecDump); err != nil {
		return nil, err
	}
	if meta.Config.String("rootfsImageRef") == "" {
		return nil, fault.Hinted(fmt.Errorf("%w: its %s has no rootfsImageRef, so CRI-O would look for the base image under the source host's name %q", ErrNotRestorable, ckpt.ConfigDump, meta.Config.RootfsImageName()), "push it with podman-migrate push, without --no-cri-o-annotations")
	}
	base := b.o.BaseImage
	if base == "" {
		var err error
		if base, err = baseImage(meta); err != nil {
			return nil, err
		}
	}
	if !slices.Contains(b.bases, base) {
		b.bases = append(b.bases, base)
	}
	d := ckpt.Describe(meta)
	if d.Options.TCPClose {
		b.note(TCPCloseNote)
	} else if d.Options.TCPEstablished {
		b.note(TCPEstablishedNote)
	}
	ctr := &v1.Container{Name: dnsLabel(d.Container.Name), Image: image}
	vols, err := b.mounts(meta, ctr)
	if err != nil {
		return nil, err
	}
	b.vols = append(b.vols, vols...)
	return ctr, nil
}

// finish refuses a --mount-map no member used.
func (b *builder) finish() error {
	for _, m := range b.maps {
		if !b.used[m.Src] {
			return fmt.Errorf("%w: --mount-map %s=%s matches no mount of the checkpoint", mountmap.ErrBadMap, m.Src, m.Dst)
		}
	}
	return nil
}

// result is the Pod of the containers made, with the base images' volumes.
func (b *builder) result() (*Result, error) {
	if err := b.finish(); err != nil {
		return nil, err
	}
	r := &Result{BaseImage: b.bases[0], bases: b.bases, Notes: append(b.head,
		"Needs CRI-O 1.25 or later with enable_criu_support = true in [crio.runtime], runc, and CRIU on CRI-O's PATH (podman-migrate kube --check-node on the node checks them). containerd is not supported (its 2.4 removes restore through CreateContainer).",
	)}
	vols := b.vols
	if b.pull == BaseImageVolume {
		// Unmounted: CRI-O's restore mounts only what spec.dump has.
		r.ImageVolumes = map[string]ImageVolume{}
		var pulls []string
		for i, base := range b.bases {
			name := BaseVolumeName
			if i > 0 {
				name = unique(BaseVolumeName, b.names)
			}
			vols = append(vols, v1.Volume{Name: name})
			r.ImageVolumes[name] = ImageVolume{Reference: base, PullPolicy: string(v1.PullIfNotPresent)}
			pulls = append(pulls, fmt.Sprintf("%s as image volume %s", base, name))
		}
		r.Notes = append(r.Notes, fmt.Sprintf("CRI-O does not pull the base image: the kubelet pulls %s, mounted nowhere, nothing run in it. Needs image volumes (Kubernetes 1.31 or later, feature gate ImageVolume, on by default from 1.35); without them, use --base-pull=node.", strings.Join(pulls, "; ")))
	} else {
		r.Notes = append(r.Notes, fmt.Sprintf("CRI-O does not pull the base image, and this Pod does not either: run `crictl pull %s` on the node first.", strings.Join(b.bases, " ")))
	}
	r.Pod = &v1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: b.name},
		Spec:       v1.PodSpec{Volumes: vols},
	}
	r.Notes = append(r.Notes, b.notes...)
	return r, nil
}

// FromSource reads the metadata of the checkpoint image at source (a
// registry reference: the node pulls it from there), under the signature
// policy and lim, and makes its manifest; o.Image is set to the image by
// digest. A pod's (or a group's) index makes one Pod of its members, each
// read by the digest the index gives.
func FromSource(ctx context.Context, source string, to transfer.Options, lim ckpt.Limits, o Options) (*Result, error) {
	ref, err := transfer.ParseReference(source)
	if err != nil {
		return nil, err
	}
	if !transfer.IsRegistry(ref) || ref.DockerReference() == nil {
		return nil, fault.Hinted(fmt.Errorf("%w: %s is not in a registry, and the node pulls the image from one", transfer.ErrBadReference, transfer.Display(ref)), "push it to a registry first")
	}
	meta, encrypted, err := readMetadata(ctx, ref, to, lim)
	var ix *ckpt.IndexError
	if errors.As(err, &ix) && ckpt.IsPodIndex(ix.MediaType, ix.Manifest) {
		return fromIndex(ctx, ref, ix, to, lim, o)
	}
	if err != nil {
		return nil, err
	}
	o.Image = transfer.WithDigest(ref, meta.ManifestDigest)
	r, err := Generate(meta, o)
	if err != nil {
		return nil, err
	}
	return r, finishRead(ctx, r, encrypted, to)
}

// fromIndex makes the Pod of a pod's index: the record, checked, and each
// member's checkpoint, which must be the manifest the index names.
func fromIndex(ctx context.Context, ref types.ImageReference, ix *ckpt.IndexError, to transfer.Options, lim ckpt.Limits, o Options) (*Result, error) {
	rec, err := ckpt.ReadPodIndex(ix.Manifest)
	if err != nil {
		return nil, fmt.Errorf("checking %s: %w", transfer.Display(ref), err)
	}
	var members []Member
	anyEncrypted := false
	for _, m := range rec.Members {
		inst, err := transfer.Instance(ref, m.Digest)
		if err != nil {
			return nil, err
		}
		meta, encrypted, err := readMetadata(ctx, inst, to, lim)
		if err != nil {
			return nil, fmt.Errorf("member %q: %w", m.Name, err)
		}
		if meta.ManifestDigest != m.Digest {
			return nil, fmt.Errorf("%w: member %q: manifest %s, the index says %s", tarsafe.ErrUnsafe, m.Name, meta.ManifestDigest, m.Digest)
		}
		anyEncrypted = anyEncrypted || encrypted
		members = append(members, Member{Meta: meta, Image: transfer.WithDigest(ref, m.Digest)})
	}
	r, err := GeneratePod(rec, members, o)
	if err != nil {
		return nil, err
	}
	return r, finishRead(ctx, r, anyEncrypted, to)
}

// readMetadata reads one checkpoint's metadata at ref, refusing an
// encrypted metadata layer (kube reads it, and the node decrypts the
// rest). It says whether other layers are encrypted.
func readMetadata(ctx context.Context, ref types.ImageReference, to transfer.Options, lim ckpt.Limits) (*ckpt.Metadata, bool, error) {
	src, err := transfer.OpenSource(ctx, ref, to)
	if err != nil {
		return nil, false, err
	}
	defer src.Close()
	mb, encrypted, err := transfer.CheckDecryption(ctx, src, nil)
	if encrypted {
		var m struct {
			Layers []struct {
				MediaType string `json:"mediaType"`
			} `json:"layers"`
		}
		if json.Unmarshal(mb, &m) == nil && len(m.Layers) > 0 && strings.HasSuffix(m.Layers[0].MediaType, "+encrypted") {
			return nil, false, fault.Hinted(fmt.Errorf("%w: the metadata layer of %s is encrypted, and kube reads it", ErrNotRestorable, transfer.Display(ref)), "push with --encrypt-layer for the other layers only; CRI-O decrypts them with the keys in its decryption_keys_path")
		}
		err = nil // ReadMetadata reads the metadata layer only
	}
	if err != nil {
		return nil, false, fmt.Errorf("checking %s: %w", transfer.Display(ref), err)
	}
	var meta *ckpt.Metadata
	err = transfer.Retry(ctx, to, func() error {
		var err error
		meta, err = ckpt.ReadMetadata(ctx, src, lim)
		var ix *ckpt.IndexError
		if err != nil && !errors.Is(err, tarsafe.ErrUnsafe) && !errors.Is(err, tarsafe.ErrTooLarge) &&
			!errors.Is(err, ckpt.ErrNotCheckpoint) && !errors.Is(err, context.Canceled) && !errors.As(err, &ix) {
			// Not the image's fault: the registry failed to deliver it.
			return &transfer.Error{Op: "reading", Ref: transfer.Display(ref), Err: err}
		}
		return err
	})
	if err != nil {
		return nil, false, fmt.Errorf("checking %s: %w", transfer.Display(ref), err)
	}
	return meta, encrypted, nil
}

// finishRead checks that every base image the Pod pulls has a command, and
// notes encrypted layers.
func finishRead(ctx context.Context, r *Result, encrypted bool, to transfer.Options) error {
	for _, base := range r.bases {
		if err := checkBaseCommand(ctx, base, to); err != nil {
			return err
		}
	}
	if encrypted {
		r.Notes = append(r.Notes, "Layers of the image are encrypted: CRI-O needs the private key in its decryption_keys_path.")
	}
	return nil
}

// ErrNoCommand is wrapped when the base image has neither ENTRYPOINT nor
// CMD. CRI-O 1.36 restores a container with its base image's command, not
// the Pod's (server/container_restore.go sets none), and without one fails
// with "no command specified"; CRIU would have replaced the process anyway.
var ErrNoCommand = fault.New(fault.Input, "CRI-O cannot restore a checkpoint whose base image has no ENTRYPOINT or CMD")

// checkBaseCommand reads the config of the base image the node pulls (of
// a list, the instance for this machine's platform, which a node of
// another architecture would not pull) and refuses one without a command.
func checkBaseCommand(ctx context.Context, base string, to transfer.Options) error {
	ref, err := transfer.ParseReference(base)
	if err != nil {
		return err
	}
	src, err := transfer.OpenSource(ctx, ref, to)
	if err != nil {
		return fmt.Errorf("checking base image %s: %w", base, err)
	}
	defer src.Close()
	var cfg *imgspecv1.Image
	err = transfer.Retry(ctx, to, func() error {
		img, err := image.FromUnparsedImage(ctx, to.SystemContext(), image.UnparsedInstance(src, nil))
		if err == nil {
			cfg, err = img.OCIConfig(ctx)
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			return &transfer.Error{Op: "reading", Ref: base, Err: err}
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("checking base image %s: %w", base, err)
	}
	if len(cfg.Config.Entrypoint) == 0 && len(cfg.Config.Cmd) == 0 {
		return fault.Hinted(fmt.Errorf("%w: %s has none, and CRI-O takes the restored container's command from it, not from the Pod", ErrNoCommand, base),
			"run the container from an image that has a CMD (for example `buildah config --cmd` on a copy of it), then checkpoint again; podman restores this checkpoint as it is (podman-migrate pull)")
	}
	return nil
}

// checkSpecAnnotations checks that spec.dump carries the CRI annotations
// CRI-O reads: without them it fails with "unexpected end of JSON input".
func checkSpecAnnotations(specDump []byte) error {
	spec, err := ckpt.ParseSpec(specDump)
	if err != nil {
		return fmt.Errorf("%w: reading %s: %w", ErrNotRestorable, ckpt.SpecDump, err)
	}
	ann, err := spec.Annotations()
	if err != nil {
		return fmt.Errorf("%w: reading %s: %w", ErrNotRestorable, ckpt.SpecDump, err)
	}
	if v, ok := ann[ckpt.SpecAnnCRIOAnnotations]; !ok || !json.Valid([]byte(v)) {
		return fault.Hinted(fmt.Errorf("%w: its %s has no valid %s annotation", ErrNotRestorable, ckpt.SpecDump, ckpt.SpecAnnCRIOAnnotations), "push it with podman-migrate push, without --no-cri-o-annotations")
	}
	return nil
}

// baseImage is the reference the node pulls the base image by: the copy
// push --include-base made, else the origin by digest.
func baseImage(meta *ckpt.Metadata) (string, error) {
	prov := meta.Provenance()
	if inc := prov.BaseIncluded; inc != "" {
		if _, err := reference.ParseNormalizedNamed(inc); err != nil {
			return "", fmt.Errorf("%w: annotation %s=%q: %w", ErrNotRestorable, ckpt.AnnBaseIncluded, inc, err)
		}
		return inc, nil
	}
	name := prov.BaseName
	if name == "" {
		name = meta.Config.RootfsImageName()
	}
	named, err := reference.ParseNormalizedNamed(name)
	if err == nil {
		if c, ok := named.(reference.Canonical); ok && reference.Domain(named) != "localhost" {
			return c.String(), nil // CRI-O's own images record it so
		}
	}
	// CRI-O's own checkpoints give it among their repository digests.
	dg := digest.Digest(ckpt.Describe(meta).Base.Digest)
	if err == nil && reference.Domain(named) != "localhost" && dg.Validate() == nil {
		c, err := reference.WithDigest(reference.TrimNamed(named), dg)
		if err == nil {
			return c.String(), nil
		}
	}
	return "", fault.Hinted(fmt.Errorf("%w: its base image %q (ID %s) cannot be pulled by digest from any registry", ErrNotRestorable, name, ckpt.ShortID(meta.Config.RootfsImageID())), "push with --include-base, or name a copy with --base-image REF@sha256:…")
}

// mounts defines every mount CRI-O requires in ctr and returns the pod's
// volumes.
func (b *builder) mounts(meta *ckpt.Metadata, ctr *v1.Container) ([]v1.Volume, error) {
	required, err := RequiredMounts(meta.SpecDump)
	if err != nil {
		return nil, err
	}
	volumeAt := map[string]string{}
	for _, v := range meta.Config.NamedVolumeMounts() {
		volumeAt[path.Clean(v.Destination)] = v.Name
	}
	kinds := meta.Provenance().BindKinds
	var vols []v1.Volume
	for _, m := range required {
		if m.Destination == KubeletHosts {
			b.note("/etc/hosts is the kubelet's (podman's is not carried over); resolv.conf and hostname are the pod's.")
			continue
		}
		vol := v1.Volume{Name: volumeName(m.Destination, b.names)}
		switch {
		case m.Type == "tmpfs":
			vol.EmptyDir = &v1.EmptyDirVolumeSource{Medium: v1.StorageMediumMemory}
			b.note(fmt.Sprintf("%s: a tmpfs in podman, an empty memory-backed emptyDir here (CRIU restores what was in it only if it was in the checkpoint).", m.Destination))
		case m.Type != "bind":
			return nil, fmt.Errorf("%w: the %s mount at %s has no Kubernetes equivalent", ErrNotRestorable, m.Type, m.Destination)
		default:
			src, mapped := b.maps.Apply(m.Source, b.used)
			if v := volumeAt[m.Destination]; v != "" && !mapped {
				if shared, ok := b.podmanVols[v]; ok { // another member's too
					b.names[vol.Name] = false
					ctr.VolumeMounts = append(ctr.VolumeMounts, v1.VolumeMount{Name: shared, MountPath: m.Destination, ReadOnly: m.ReadOnly()})
					continue
				}
				b.podmanVols[v] = vol.Name
				vol.EmptyDir = &v1.EmptyDirVolumeSource{}
				b.note(fmt.Sprintf("podman volume %q at %s: CRI-O does not restore volume content (the image's volumes/%s.tar): the pod gets an empty directory; put the content on the node and give --mount-map %s=NODE_PATH.", v, m.Destination, v, m.Source))
				break
			}
			// A bind mount of podman's own has no node path to take
			// unless one is given.
			if !m.UserBind(volumeAt) && !mapped {
				return nil, fmt.Errorf("%w: %s comes from podman's own files (%s) and has no Kubernetes equivalent; give it a node path with --mount-map %s=NODE_PATH", ErrNotRestorable, m.Destination, m.Source, m.Source)
			}
			hp := &v1.HostPathVolumeSource{Path: src}
			if dir, known := kinds.Dir(m.Destination); known {
				t := v1.HostPathFile
				if dir {
					t = v1.HostPathDirectory
				}
				hp.Type = &t
			}
			vol.HostPath = hp
		}
		vols = append(vols, vol)
		ctr.VolumeMounts = append(ctr.VolumeMounts, v1.VolumeMount{Name: vol.Name, MountPath: m.Destination, ReadOnly: m.ReadOnly()})
	}
	return vols, nil
}

// YAML returns the manifest with the notes as comments above it. Empty
// fields the types would print (creationTimestamp: null, status: {}) are
// left out.
func (r *Result) YAML() ([]byte, error) {
	b, err := json.Marshal(r.Pod)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	prune(doc)
	if len(r.ImageVolumes) > 0 {
		spec, _ := doc["spec"].(map[string]any)
		vols, _ := spec["volumes"].([]any)
		for _, v := range vols {
			if vm, ok := v.(map[string]any); ok {
				if iv, ok := r.ImageVolumes[vm["name"].(string)]; ok {
					vm["image"] = iv
				}
			}
		}
	}
	y, err := yaml.Marshal(doc)
	if err != nil {
		return nil, err
	}
	var out strings.Builder
	for _, n := range r.Notes {
		out.WriteString("# " + n + "\n")
	}
	out.Write(y)
	return []byte(out.String()), nil
}

// prune removes nulls, and the empty status and resources the types
// print; an empty object elsewhere (emptyDir: {}) means something.
func prune(m map[string]any) {
	for k, v := range m {
		switch x := v.(type) {
		case nil:
			delete(m, k)
		case map[string]any:
			prune(x)
			if len(x) == 0 && (k == "status" || k == "resources") {
				delete(m, k)
			}
		case []any:
			for _, e := range x {
				if em, ok := e.(map[string]any); ok {
					prune(em)
				}
			}
		}
	}
}

var dnsLabelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

func isDNSLabel(s string) bool { return dnsLabelRE.MatchString(s) }

// dnsLabel makes s a DNS label (RFC 1123), as Kubernetes names containers
// and pods: podman allows '_' and '.', and upper case.
func dnsLabel(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	out := b.String()
	if len(out) > 63 {
		out = out[:63]
	}
	out = strings.Trim(out, "-")
	if out == "" {
		return "restored"
	}
	return out
}

// volumeName names the volume mounted at dest, unique in the pod.
func volumeName(dest string, taken map[string]bool) string {
	base := dnsLabel(strings.TrimPrefix(dest, "/"))
	if base == "restored" && dest == "/" {
		base = "root"
	}
	if len(base) > 56 {
		base = strings.Trim(base[:56], "-")
	}
	return unique(base, taken)
}

// unique returns name, or name-2, name-3… when taken, and takes it.
func unique(name string, taken map[string]bool) string {
	out := name
	for i := 2; taken[out]; i++ {
		out = fmt.Sprintf("%s-%d", name, i)
	}
	taken[out] = true
	return out
}
