package ckpt

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
)

// A pod is published as one OCI image index: one checkpoint image per
// member, each as a single container's, and the pod's record, as JSON, in
// the index's AnnPod annotation. Each manifest's descriptor names its
// member (AnnPodMember).
const (
	AnnPod       = Prefix + "pod"
	AnnPodMember = Prefix + "pod.member"
)

// Pod is the record of a pod: what the target needs to make it again.
// The same record holds a group of containers that no pod holds but that
// join one another's network namespace (--network container:X): Group is
// set, Name is the first member's, and no pod is made on the target.
type Pod struct {
	Name     string            `json:"name"`
	Group    bool              `json:"group,omitempty"`
	ID       string            `json:"id"` // on the source
	Hostname string            `json:"hostname,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
	// Shared are the namespaces the members share through the infra
	// container, as podman names them (net, ipc, uts, pid, cgroup, user).
	Shared             []string  `json:"sharedNamespaces,omitempty"`
	InfraID            string    `json:"infraID,omitempty"` // on the source
	InfraName          string    `json:"infraName,omitempty"`
	Ports              []PodPort `json:"ports,omitempty"`
	Networks           []string  `json:"networks,omitempty"`
	HostNetwork        bool      `json:"hostNetwork,omitempty"`
	DNSServer          []string  `json:"dnsServer,omitempty"`
	DNSSearch          []string  `json:"dnsSearch,omitempty"`
	DNSOption          []string  `json:"dnsOption,omitempty"`
	NoManageResolvConf bool      `json:"noManageResolvConf,omitempty"`
	NoManageHosts      bool      `json:"noManageHosts,omitempty"`
	HostAdd            []string  `json:"hostAdd,omitempty"`
	CgroupParent       string    `json:"cgroupParent,omitempty"`
	CPUPeriod          uint64    `json:"cpuPeriod,omitempty"`
	CPUQuota           int64     `json:"cpuQuota,omitempty"`
	CPUSetCPUs         string    `json:"cpusetCPUs,omitempty"`
	MemoryLimit        uint64    `json:"memoryLimit,omitempty"`
	// Members in the order they were checkpointed, and are restored.
	Members []PodMember `json:"members"`
}

// PodPort is one port the pod publishes.
type PodPort struct {
	HostIP        string `json:"hostIP,omitempty"`
	HostPort      uint16 `json:"hostPort"`
	ContainerPort uint16 `json:"containerPort"`
	Protocol      string `json:"protocol"` // tcp, udp or sctp
}

// PodMember is one member's checkpoint image in the index.
type PodMember struct {
	Name   string        `json:"name"`
	ID     string        `json:"id"` // on the source
	Digest digest.Digest `json:"digest"`
	// Joins names, in a group, the earlier member whose namespace this
	// one joins, by namespace ("net": GroupNamespaces).
	Joins map[string]string `json:"joins,omitempty"`
}

// GroupNamespaces are the namespaces a group's member may join of
// another: runc marks a joined network or PID namespace external in the
// dump and asks CRIU to join a joined IPC or UTS namespace's path at
// restore, so each is taken from the restored peer.
var GroupNamespaces = []string{"ipc", "net", "pid", "uts"}

// Namespaces a pod may share, as podman's pod create --share names them.
var podNamespaces = []string{"cgroup", "ipc", "net", "pid", "user", "uts"}

// podmanName is what podman accepts as a container or pod name.
var podmanName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// IndexError is what reading a checkpoint finds at a reference that
// holds an image index or manifest list, not a single image: a pod's
// index (IsPodIndex), or anything else, which is no checkpoint.
type IndexError struct {
	Manifest  []byte
	MediaType string
}

func (e *IndexError) Error() string {
	if IsPodIndex(e.MediaType, e.Manifest) {
		return "an image index of a pod's (or a group's) checkpoints, not one container's"
	}
	return fmt.Sprintf("%s: %s is a list of images (a multi-architecture image?), not one checkpoint nor a pod's index", ErrNotCheckpoint, e.MediaType)
}

// Unwrap makes an index no checkpoint of one container.
func (e *IndexError) Unwrap() error { return ErrNotCheckpoint }

// IsPodIndex says whether an index manifest is a pod's.
func IsPodIndex(mediaType string, index []byte) bool {
	if mediaType != imgspecv1.MediaTypeImageIndex {
		return false
	}
	var ix imgspecv1.Index
	return json.Unmarshal(index, &ix) == nil && ix.Annotations[AnnPod] != ""
}

// PodIndex returns the image index of a pod whose members' manifests are
// described by manifests, in the record's order.
func PodIndex(pod *Pod, manifests []imgspecv1.Descriptor) ([]byte, error) {
	if len(manifests) != len(pod.Members) {
		return nil, fmt.Errorf("%d manifests for %d members", len(manifests), len(pod.Members))
	}
	rec, err := json.Marshal(pod)
	if err != nil {
		return nil, err
	}
	ix := imgspecv1.Index{
		Versioned:   specs.Versioned{SchemaVersion: 2},
		MediaType:   imgspecv1.MediaTypeImageIndex,
		Annotations: map[string]string{AnnPod: string(rec), AnnFormat: FormatVersion},
	}
	for i, m := range manifests {
		m.MediaType = imgspecv1.MediaTypeImageManifest
		m.Annotations = map[string]string{AnnPodMember: pod.Members[i].Name}
		ix.Manifests = append(ix.Manifests, m)
	}
	if err := checkPod(pod, ix.Manifests); err != nil {
		return nil, err
	}
	return json.Marshal(ix)
}

// ReadPodIndex parses a pod's index and checks its record against it: a
// pulled index is untrusted until it passes.
func ReadPodIndex(index []byte) (*Pod, error) {
	if len(index) > maxMetaSize {
		return nil, fmt.Errorf("%w: index of %d bytes", tarsafe.ErrUnsafe, len(index))
	}
	var ix imgspecv1.Index
	if err := json.Unmarshal(index, &ix); err != nil {
		return nil, fmt.Errorf("%w: parsing the index: %w", tarsafe.ErrUnsafe, err)
	}
	rec := ix.Annotations[AnnPod]
	if rec == "" {
		return nil, fmt.Errorf("%w: an image index without the %s annotation", ErrNotCheckpoint, AnnPod)
	}
	var pod Pod
	dec := json.NewDecoder(strings.NewReader(rec))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pod); err != nil {
		return nil, fmt.Errorf("%w: the pod record: %w", ErrNotCheckpoint, err)
	}
	if err := checkPod(&pod, ix.Manifests); err != nil {
		return nil, err
	}
	return &pod, nil
}

// checkPod holds a record to what a restore may act on: names podman
// accepts, each member once and in the index exactly as listed, known
// namespaces, sane ports.
func checkPod(pod *Pod, manifests []imgspecv1.Descriptor) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: pod record: %s", tarsafe.ErrUnsafe, fmt.Sprintf(format, a...))
	}
	if !podmanName.MatchString(pod.Name) {
		return bad("pod name %q", pod.Name)
	}
	if pod.InfraName != "" && !podmanName.MatchString(pod.InfraName) {
		return bad("infra name %q", pod.InfraName)
	}
	if len(pod.Members) == 0 {
		return bad("no members")
	}
	if len(manifests) != len(pod.Members) {
		return bad("%d members but %d manifests in the index", len(pod.Members), len(manifests))
	}
	names, digests := map[string]bool{}, map[digest.Digest]bool{}
	for i, m := range pod.Members {
		if !podmanName.MatchString(m.Name) {
			return bad("member name %q", m.Name)
		}
		if names[m.Name] || digests[m.Digest] {
			return bad("member %q listed twice", m.Name)
		}
		names[m.Name], digests[m.Digest] = true, true
		if err := m.Digest.Validate(); err != nil {
			return bad("member %q: %v", m.Name, err)
		}
		d := manifests[i]
		if d.Digest != m.Digest || d.Annotations[AnnPodMember] != m.Name {
			return bad("member %q is not the index's manifest %d (%s, %q)", m.Name, i, d.Digest, d.Annotations[AnnPodMember])
		}
		if d.MediaType != imgspecv1.MediaTypeImageManifest {
			return bad("member %q: manifest type %q", m.Name, d.MediaType)
		}
	}
	if err := checkJoins(pod, bad); err != nil {
		return err
	}
	for _, ns := range pod.Shared {
		if !slices.Contains(podNamespaces, ns) {
			return bad("shared namespace %q", ns)
		}
	}
	for _, n := range pod.Networks {
		if !podmanName.MatchString(n) {
			return bad("network %q", n)
		}
	}
	for _, p := range pod.Ports {
		if p.ContainerPort == 0 || (p.Protocol != "tcp" && p.Protocol != "udp" && p.Protocol != "sctp") {
			return bad("port %+v", p)
		}
	}
	return nil
}

// checkJoins holds a group to members that join only earlier members'
// network namespace, and a pod to none, and to no pod settings.
func checkJoins(pod *Pod, bad func(string, ...any) error) error {
	if !pod.Group {
		for _, m := range pod.Members {
			if len(m.Joins) > 0 {
				return bad("member %q of a pod joins another member", m.Name)
			}
		}
		return nil
	}
	if pod.Name != pod.Members[0].Name || len(pod.Shared) > 0 || len(pod.Ports) > 0 || len(pod.Networks) > 0 || pod.InfraID != "" || pod.InfraName != "" {
		return bad("a group with a pod's settings")
	}
	seen := map[string]bool{}
	for _, m := range pod.Members {
		for ns, other := range m.Joins {
			if !slices.Contains(GroupNamespaces, ns) {
				return bad("member %q joins the %s namespace of %q", m.Name, ns, other)
			}
			if !seen[other] {
				return bad("member %q joins %q, which is no member before it", m.Name, other)
			}
		}
		seen[m.Name] = true
	}
	return nil
}

// Outside returns the first of a member's dependencies on other
// containers (config.dump's namespace links) that is not the pod's infra
// container, "" when all are.
func (p *Pod) Outside(deps []string) string {
	for _, d := range deps {
		if d != "" && d != p.InfraID {
			return d
		}
	}
	return ""
}

// PodDescription is what inspect shows of a pod's index: the record, and
// each member's checkpoint as a container's.
type PodDescription struct {
	Format  string         `json:"format"` // "podman-migrate pod"
	Digest  string         `json:"digest"` // the index's
	Pod     *Pod           `json:"pod"`
	Members []*Description `json:"members"`
}
