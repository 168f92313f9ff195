package ckpt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/containers/image/v5/docker/reference"

	"github.com/podman-migrate/podman-migrate/internal/dump"
)

// CRI-O writes these in spec.dump's annotations (cri-o internal/annotations).
const (
	specAnnManager      = "io.container.manager"
	specAnnCRIOName     = "io.kubernetes.cri-o.Name"
	specAnnCRIOMetadata = "io.kubernetes.cri-o.Metadata"
	specAnnCRIOLabels   = "io.kubernetes.cri-o.Labels"
	specAnnRepoDigests  = "io.kubernetes.cri-o.ImageRepoDigests"
)

// imageIDPattern is a containers/storage image ID, the form CRI-O parses
// rootfsImageRef in.
var imageIDPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// MadeByCRIO reports whether CRI-O checkpointed the container: its spec.dump
// says so (podman writes "libpod" there).
func MadeByCRIO(specDump []byte) bool {
	return specAnnotations(specDump)[specAnnManager] == "cri-o"
}

// specAnnotations reads what it can of spec.dump's annotations.
func specAnnotations(specDump []byte) map[string]string {
	s, err := ParseSpec(specDump)
	if err != nil {
		return nil
	}
	a, _ := s.Annotations()
	return a
}

// KubeNames are the Kubernetes names of a container CRI-O checkpointed.
type KubeNames struct {
	Pod       string `json:"pod,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Container string `json:"container,omitempty"`
}

// CRIONames reads the pod, namespace and container names from a CRI-O
// spec.dump: the kubelet's labels when there are any, else CRI-O's own
// container name, k8s_CONTAINER_POD_NAMESPACE_UID_ATTEMPT (Kubernetes names
// have no '_').
func CRIONames(specDump []byte) KubeNames {
	a := specAnnotations(specDump)
	var n KubeNames
	var labels map[string]string
	_ = json.Unmarshal([]byte(a[specAnnCRIOLabels]), &labels)
	n.Pod, n.Namespace, n.Container = labels[SpecAnnKubePodName], labels[SpecAnnKubePodNamespace], labels[SpecAnnKubeContainerName]
	if parts := strings.Split(a[specAnnCRIOName], "_"); len(parts) == 6 && parts[0] == "k8s" {
		n.Container = orDefault(n.Container, parts[1])
		n.Pod = orDefault(n.Pod, parts[2])
		n.Namespace = orDefault(n.Namespace, parts[3])
	}
	var md struct {
		Name string `json:"name"`
	}
	if json.Unmarshal([]byte(a[specAnnCRIOMetadata]), &md) == nil {
		n.Container = orDefault(n.Container, md.Name)
	}
	return n
}

// FromCRIO turns, in place, the metadata of a checkpoint CRI-O made into
// what podman's restore reads, as measured with podman 4.3.1 and 5.4.2:
//   - config.dump: CRI-O's is a short record; podman needs rootfsImageID
//     (CRI-O's rootfsImageRef: "both RootfsImageName and RootfsImageID
//     must be set"), a network namespace of its own on podman's default
//     network (CRIU restores into an external one, as it was dumped), and
//     the CRI container name rather than CRI-O's k8s_… one; the bind
//     mounts become the user's volumes, as podman lists them;
//   - spec.dump: CRI-O's namespace paths (its pinned namespaces) exist only
//     on the source node: podman creates its own; CRI-O's annotations
//     describe a CRI-O container and go.
//
// The base image's digest, which the image's manifest does not give, is
// taken from the repository digests CRI-O recorded, so that pull can fetch
// the base image by digest. It returns what it changed, for the log.
func FromCRIO(m *Metadata) ([]string, error) {
	c, err := readCRIODumps(m)
	if err != nil {
		return nil, err
	}
	for _, step := range []func() error{
		c.setImageID,
		c.setName,
		c.setNetwork,
		c.setUserVolumes,
		c.setBaseDigest,
		c.dropNamespacePaths,
		c.dropAnnotations,
		c.write,
	} {
		if err := step(); err != nil {
			return nil, err
		}
	}
	return c.changed, nil
}

// crioDumps are the dumps FromCRIO edits, and what it changed so far.
type crioDumps struct {
	m       *Metadata
	cfg     *dump.Config
	spec    *Spec
	changed []string
}

// readCRIODumps parses both dumps: a checkpoint without them is no
// checkpoint.
func readCRIODumps(m *Metadata) (*crioDumps, error) {
	cfg, err := dump.ReadConfig(bytes.NewReader(m.ConfigDump))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNotCheckpoint, err)
	}
	spec, err := ParseSpec(m.SpecDump)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not a JSON object", ErrNotCheckpoint, SpecDump)
	}
	return &crioDumps{m: m, cfg: cfg, spec: spec}, nil
}

// set sets a config.dump field; why, unless empty, goes to the log.
func (c *crioDumps) set(key string, v any, why string) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	c.cfg.SetRaw(key, b)
	if why != "" {
		c.changed = append(c.changed, why)
	}
	return nil
}

// setImageID gives podman the image ID it requires, from CRI-O's
// rootfsImageRef when that is one.
func (c *crioDumps) setImageID() error {
	ref := c.cfg.String("rootfsImageRef")
	if c.cfg.RootfsImageID() != "" || !imageIDPattern.MatchString(ref) {
		return nil
	}
	return c.set("rootfsImageID", ref, "config.dump: rootfsImageID from CRI-O's rootfsImageRef")
}

// setName names the container as Kubernetes did, not as CRI-O does.
func (c *crioDumps) setName() error {
	names := CRIONames(c.m.SpecDump)
	if names.Container == "" || names.Container == c.cfg.Name() {
		return nil
	}
	return c.set("name", names.Container, fmt.Sprintf("config.dump: name %s (CRI-O's %s)", names.Container, c.cfg.Name()))
}

// setNetwork gives a container CRI-O left without podman networks a
// namespace of its own on podman's default network.
func (c *crioDumps) setNetwork() error {
	if c.cfg.Raw("newNetworks") != nil {
		return nil
	}
	if err := c.set("createNetNS", true, ""); err != nil {
		return err
	}
	if err := c.set("networkMode", "bridge", ""); err != nil {
		return err
	}
	return c.set("newNetworks", map[string]any{"podman": map[string]any{}}, "config.dump: a network namespace of its own on podman's default network \"podman\"")
}

// setUserVolumes lists the bind mounts as the user's: podman lists these
// as the container's mounts (inspect).
func (c *crioDumps) setUserVolumes() error {
	if c.cfg.Raw("userVolumes") != nil {
		return nil
	}
	mounts, _ := c.spec.Mounts()
	var dests []string
	for _, mt := range UserBinds(mounts, nil) {
		dests = append(dests, mt.Destination)
	}
	if len(dests) == 0 {
		return nil
	}
	return c.set("userVolumes", dests, fmt.Sprintf("config.dump: bind mounts %s listed as the user's", strings.Join(dests, ", ")))
}

// setBaseDigest records the base image's digest, which pull fetches the
// base image by, from the repository digests CRI-O recorded.
func (c *crioDumps) setBaseDigest() error {
	if c.m.Manifest.Annotations[AnnBaseDigest] != "" {
		return nil
	}
	specAnn, _ := c.spec.Annotations()
	d := repoDigest(c.cfg.RootfsImageName(), specAnn[specAnnRepoDigests])
	if d == "" {
		return nil
	}
	if c.m.Manifest.Annotations == nil {
		c.m.Manifest.Annotations = map[string]string{}
	}
	c.m.Manifest.Annotations[AnnBaseDigest] = d
	return nil
}

// dropNamespacePaths drops CRI-O's pinned namespaces, which exist only on
// the source node.
func (c *crioDumps) dropNamespacePaths() error {
	dropped, err := c.spec.DropNamespacePaths()
	if err != nil {
		return err
	}
	if dropped > 0 {
		c.changed = append(c.changed, fmt.Sprintf("spec.dump: %d namespace path(s) of CRI-O's dropped", dropped))
	}
	return nil
}

// dropAnnotations drops CRI-O's annotations: they describe a CRI-O
// container.
func (c *crioDumps) dropAnnotations() error {
	ann, err := c.spec.Annotations()
	if err != nil || ann == nil {
		return nil
	}
	n := 0
	for k := range ann {
		if strings.HasPrefix(k, "io.kubernetes.cri-o.") || k == "platform-runtime-path.crio.io" {
			delete(ann, k)
			n++
		}
	}
	if n == 0 {
		return nil
	}
	if err := c.spec.SetAnnotations(ann); err != nil {
		return err
	}
	c.changed = append(c.changed, fmt.Sprintf("spec.dump: %d CRI-O annotation(s) dropped", n))
	return nil
}

// write puts the edited dumps back into the metadata.
func (c *crioDumps) write() error {
	sb, err := c.spec.Bytes()
	if err != nil {
		return err
	}
	cb, err := c.cfg.Bytes()
	if err != nil {
		return err
	}
	c.m.ConfigDump, c.m.SpecDump, c.m.Config = cb, sb, c.cfg
	return nil
}

// repoDigest picks, from CRI-O's comma-separated REPO@DIGEST list, the
// digest in the repository of name.
func repoDigest(name, list string) string {
	named, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return ""
	}
	for _, s := range strings.Split(list, ",") {
		c, err := reference.ParseNormalizedNamed(strings.TrimSpace(s))
		if err != nil {
			continue
		}
		if cd, ok := c.(reference.Canonical); ok && c.Name() == named.Name() {
			return cd.Digest().String()
		}
	}
	return ""
}

// ToCRIO returns the edits of podman's archive (BuildOptions.Rewrite) that
// CRI-O needs to restore the image as it is (measured with CRI-O 1.36):
// spec.dump must carry the container's CRI annotations as JSON, and
// config.dump must name the base image by ID (rootfsImageRef), which
// CRI-O finds under any name it pulled it by; by name it looks only for
// the source host's name. podman ignores both.
func ToCRIO() map[string]func([]byte) ([]byte, error) {
	return map[string]func([]byte) ([]byte, error){
		SpecDump:   crioSpecDump,
		ConfigDump: crioConfigDump,
	}
}

// crioSpecDump adds an empty set of CRI annotations to spec.dump, unless it
// has a valid one: the container had no kubelet to give it any.
func crioSpecDump(b []byte) ([]byte, error) {
	spec, err := ParseSpec(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrBadArchive, SpecDump, err)
	}
	ann, err := spec.Annotations()
	if err != nil {
		return nil, fmt.Errorf("%w: %s annotations: %w", ErrBadArchive, SpecDump, err)
	}
	if v, ok := ann[SpecAnnCRIOAnnotations]; ok && json.Valid([]byte(v)) {
		return b, nil
	}
	if ann == nil {
		ann = map[string]string{}
	}
	ann[SpecAnnCRIOAnnotations] = "{}"
	if err := spec.SetAnnotations(ann); err != nil {
		return nil, err
	}
	return spec.Bytes()
}

// crioConfigDump records the base image's ID as rootfsImageRef, which
// CRI-O prefers to rootfsImageName.
func crioConfigDump(b []byte) ([]byte, error) {
	cfg, err := dump.ReadConfig(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadArchive, err)
	}
	id := cfg.RootfsImageID()
	if cfg.String("rootfsImageRef") != "" || !imageIDPattern.MatchString(id) {
		return b, nil
	}
	raw, err := json.Marshal(id)
	if err != nil {
		return nil, err
	}
	cfg.SetRaw("rootfsImageRef", raw)
	return cfg.Bytes()
}
