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
	"strings"

	"github.com/containers/image/v5/docker/reference"
	"github.com/containers/image/v5/image"
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
	if meta.Provenance().CRIOName == "" {
		return nil, fault.Hinted(fmt.Errorf("%w: its manifest has no %s annotation, so CRI-O would run it as an ordinary image", ErrNotRestorable, ckpt.AnnCRIOName), "push it with podman-migrate push, without --no-cri-o-annotations")
	}
	if err := checkSpecAnnotations(meta.SpecDump); err != nil {
		return nil, err
	}
	if meta.Config.String("rootfsImageRef") == "" {
		return nil, fault.Hinted(fmt.Errorf("%w: its %s has no rootfsImageRef, so CRI-O would look for the base image under the source host's name %q", ErrNotRestorable, ckpt.ConfigDump, meta.Config.RootfsImageName()), "push it with podman-migrate push, without --no-cri-o-annotations")
	}
	maps, err := mountmap.Parse(o.MountMap)
	if err != nil {
		return nil, err
	}
	d := ckpt.Describe(meta)
	name := o.Name
	if name == "" {
		name = dnsLabel(d.Container.Name)
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
	base := o.BaseImage
	if base == "" {
		if base, err = baseImage(meta); err != nil {
			return nil, err
		}
	}
	r := &Result{BaseImage: base}
	ctr := v1.Container{Name: dnsLabel(d.Container.Name), Image: o.Image}
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
	vols, err := r.mounts(meta, maps, &ctr)
	if err != nil {
		return nil, err
	}
	notes := []string{
		fmt.Sprintf("Restores container %q (%s) from checkpoint image %s.", d.Container.Name, d.Format, o.Image),
		"Needs CRI-O 1.25 or later with enable_criu_support = true in [crio.runtime], runc, and CRIU on CRI-O's PATH (podman-migrate kube --check-node on the node checks them). containerd is not supported (its 2.4 removes restore through CreateContainer).",
	}
	if pull == BaseImageVolume {
		// Unmounted: CRI-O's restore mounts only what spec.dump has.
		vols = append(vols, v1.Volume{Name: BaseVolumeName})
		r.ImageVolumes = map[string]ImageVolume{BaseVolumeName: {Reference: base, PullPolicy: string(v1.PullIfNotPresent)}}
		notes = append(notes, fmt.Sprintf("CRI-O does not pull the base image: the kubelet pulls %s as image volume %s, mounted nowhere, nothing run in it. Needs image volumes (Kubernetes 1.31 or later, feature gate ImageVolume, on by default from 1.35); without them, use --base-pull=node.", base, BaseVolumeName))
	} else {
		notes = append(notes, fmt.Sprintf("CRI-O does not pull the base image, and this Pod does not either: run `crictl pull %s` on the node first.", base))
	}
	r.Pod = &v1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.PodSpec{
			Containers: []v1.Container{ctr},
			Volumes:    vols,
		},
	}
	r.Notes = append(notes, r.Notes...)
	return r, nil
}

// FromSource reads the metadata of the checkpoint image at source (a
// registry reference: the node pulls it from there), under the signature
// policy and lim, and makes its manifest; o.Image is set to the image by
// digest.
func FromSource(ctx context.Context, source string, to transfer.Options, lim ckpt.Limits, o Options) (*Result, error) {
	ref, err := transfer.ParseReference(source)
	if err != nil {
		return nil, err
	}
	if !transfer.IsRegistry(ref) || ref.DockerReference() == nil {
		return nil, fault.Hinted(fmt.Errorf("%w: %s is not in a registry, and the node pulls the image from one", transfer.ErrBadReference, transfer.Display(ref)), "push it to a registry first")
	}
	src, err := transfer.OpenSource(ctx, ref, to)
	if err != nil {
		return nil, err
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
			return nil, fault.Hinted(fmt.Errorf("%w: the metadata layer of %s is encrypted, and kube reads it", ErrNotRestorable, transfer.Display(ref)), "push with --encrypt-layer for the other layers only; CRI-O decrypts them with the keys in its decryption_keys_path")
		}
		err = nil // ReadMetadata reads the metadata layer only
	}
	if err != nil {
		return nil, fmt.Errorf("checking %s: %w", transfer.Display(ref), err)
	}
	var meta *ckpt.Metadata
	err = transfer.Retry(ctx, to, func() error {
		var err error
		meta, err = ckpt.ReadMetadata(ctx, src, lim)
		if err != nil && !errors.Is(err, tarsafe.ErrUnsafe) && !errors.Is(err, tarsafe.ErrTooLarge) &&
			!errors.Is(err, ckpt.ErrNotCheckpoint) && !errors.Is(err, context.Canceled) {
			// Not the image's fault: the registry failed to deliver it.
			return &transfer.Error{Op: "reading", Ref: transfer.Display(ref), Err: err}
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("checking %s: %w", transfer.Display(ref), err)
	}
	o.Image = transfer.WithDigest(ref, meta.ManifestDigest)
	r, err := Generate(meta, o)
	if err != nil {
		return nil, err
	}
	if err := checkBaseCommand(ctx, r.BaseImage, to); err != nil {
		return nil, err
	}
	if encrypted {
		r.Notes = append(r.Notes, "Layers of the image are encrypted: CRI-O needs the private key in its decryption_keys_path.")
	}
	return r, nil
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
func (r *Result) mounts(meta *ckpt.Metadata, maps mountmap.Maps, ctr *v1.Container) ([]v1.Volume, error) {
	required, err := RequiredMounts(meta.SpecDump)
	if err != nil {
		return nil, err
	}
	volumeAt := map[string]string{}
	for _, v := range meta.Config.NamedVolumeMounts() {
		volumeAt[path.Clean(v.Destination)] = v.Name
	}
	kinds := meta.Provenance().BindKinds
	used := map[string]bool{}
	names := map[string]bool{BaseVolumeName: true}
	var vols []v1.Volume
	for _, m := range required {
		if m.Destination == KubeletHosts {
			r.Notes = append(r.Notes, "/etc/hosts is the kubelet's (podman's is not carried over); resolv.conf and hostname are the pod's.")
			continue
		}
		vol := v1.Volume{Name: volumeName(m.Destination, names)}
		switch {
		case m.Type == "tmpfs":
			vol.EmptyDir = &v1.EmptyDirVolumeSource{Medium: v1.StorageMediumMemory}
			r.Notes = append(r.Notes, fmt.Sprintf("%s: a tmpfs in podman, an empty memory-backed emptyDir here (CRIU restores what was in it only if it was in the checkpoint).", m.Destination))
		case m.Type != "bind":
			return nil, fmt.Errorf("%w: the %s mount at %s has no Kubernetes equivalent", ErrNotRestorable, m.Type, m.Destination)
		default:
			src, mapped := maps.Apply(m.Source, used)
			if v := volumeAt[m.Destination]; v != "" && !mapped {
				vol.EmptyDir = &v1.EmptyDirVolumeSource{}
				r.Notes = append(r.Notes, fmt.Sprintf("podman volume %q at %s: CRI-O does not restore volume content (the image's volumes/%s.tar): the pod gets an empty directory; put the content on the node and give --mount-map %s=NODE_PATH.", v, m.Destination, v, m.Source))
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
	for _, m := range maps {
		if !used[m.Src] {
			return nil, fmt.Errorf("%w: --mount-map %s=%s matches no mount of the checkpoint", mountmap.ErrBadMap, m.Src, m.Dst)
		}
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
	name := base
	for i := 2; taken[name]; i++ {
		name = fmt.Sprintf("%s-%d", base, i)
	}
	taken[name] = true
	return name
}
