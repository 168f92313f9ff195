package ckpt

import (
	"encoding/json"
	"sort"
	"strings"
	"time"
)

// Description is what `podman-migrate inspect` shows of a checkpoint image.
// Its JSON form is a documented, stable interface: fields are only ever
// added.
type Description struct {
	// Format is "podman-migrate" for our images, "podman" for those of
	// `podman container checkpoint --create-image`, "cri-o" for a
	// checkpoint CRI-O made (Kubernetes).
	Format    string         `json:"format"`
	Digest    string         `json:"digest"`
	Created   string         `json:"created,omitempty"`
	Container ContainerFacts `json:"container"`
	Base      BaseFacts      `json:"baseImage"`
	Source    SourceHost     `json:"sourceHost"`
	Layers    []LayerFacts   `json:"layers"`
	Binds     []BindFacts    `json:"bindMounts"`
	Volumes   []VolumeFacts  `json:"volumes"`
	Networks  []NetFacts     `json:"networks"`
	Ports     []PortFacts    `json:"ports"`
	Options   OptionFacts    `json:"checkpointOptions"`
	// Kubernetes names the pod, namespace and container of a checkpoint
	// CRI-O made.
	Kubernetes *KubeNames `json:"kubernetes,omitempty"`
}

// ContainerFacts names the checkpointed container.
type ContainerFacts struct {
	Name    string   `json:"name"`
	ID      string   `json:"id"`
	Command []string `json:"command"`
	Image   string   `json:"image"`
}

// BaseFacts is the image the container was created from.
type BaseFacts struct {
	Name     string `json:"name"`
	ID       string `json:"id"`
	Digest   string `json:"digest,omitempty"`
	Included string `json:"included,omitempty"`
}

// SourceHost is what the annotations record of the checkpointed host.
type SourceHost struct {
	Kernel       string `json:"kernel,omitempty"`
	Arch         string `json:"arch,omitempty"`
	Podman       string `json:"podman,omitempty"`
	Runtime      string `json:"runtime,omitempty"`
	CRIU         string `json:"criu,omitempty"`
	Cgroups      string `json:"cgroups,omitempty"`
	Distribution string `json:"distribution,omitempty"`
	CRIO         string `json:"crio,omitempty"`
}

// LayerFacts is one layer of the image.
type LayerFacts struct {
	Role      string `json:"role"`
	Volume    string `json:"volume,omitempty"`
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// BindFacts is one bind mount the user gave the container.
type BindFacts struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
	ReadOnly    bool   `json:"readOnly"`
}

// VolumeFacts is one named volume.
type VolumeFacts struct {
	Name        string `json:"name"`
	Destination string `json:"destination"`
}

// NetFacts is one network attachment, with the addresses it had.
type NetFacts struct {
	Name string   `json:"name"`
	IPs  []string `json:"ips,omitempty"`
	MAC  string   `json:"mac,omitempty"`
}

// PortFacts is one published port.
type PortFacts struct {
	HostIP        string `json:"hostIP,omitempty"`
	HostPort      int    `json:"hostPort"`
	ContainerPort int    `json:"containerPort"`
	Protocol      string `json:"protocol"`
}

// OptionFacts says which CRIU options the checkpoint was taken with;
// Recorded is false for images that do not record them (podman's).
type OptionFacts struct {
	Recorded       bool `json:"recorded"`
	TCPEstablished bool `json:"tcpEstablished"`
	FileLocks      bool `json:"fileLocks"`
	LeaveRunning   bool `json:"leaveRunning"`
	TCPClose       bool `json:"tcpClose,omitempty"`
}

// Describe summarises a checkpoint image from its metadata alone.
func Describe(m *Metadata) *Description {
	p := m.Provenance()
	d := &Description{Format: "podman", Digest: m.ManifestDigest.String(), Created: p.Created}
	if p.Format != "" {
		d.Format = "podman-migrate"
	}
	if d.Created == "" && m.ImageConfig.Created != nil {
		d.Created = m.ImageConfig.Created.UTC().Format(time.RFC3339)
	}
	cfg := m.Config
	d.Container = ContainerFacts{Name: cfg.Name(), ID: cfg.ID(), Image: cfg.RawImageName()}
	d.Base = BaseFacts{Name: cfg.RootfsImageName(), ID: cfg.RootfsImageID(), Digest: p.BaseDigest, Included: p.BaseIncluded}
	d.Source = SourceHost{
		Kernel: p.HostKernel, Arch: p.HostArch, Podman: p.PodmanVersion,
		Runtime: p.RuntimeName, CRIU: p.CRIUVersion, Cgroups: p.CgroupVersion,
		Distribution: strings.TrimSpace(p.DistributionName + " " + p.DistributionVersion),
	}
	for _, l := range m.Manifest.Layers {
		role := l.Annotations[AnnLayerRole]
		if role == "" {
			role = "all" // podman's images keep the whole archive in one layer
		}
		d.Layers = append(d.Layers, LayerFacts{Role: role, Volume: l.Annotations[AnnLayerVolume], MediaType: l.MediaType, Digest: l.Digest.String(), Size: l.Size})
	}
	var mounts []SpecMount
	if spec, err := ParseSpec(m.SpecDump); err == nil {
		d.Container.Command = spec.Args()
		mounts, _ = spec.Mounts() // what can be read of them
	}
	volumeAt := map[string]string{}
	for _, v := range cfg.NamedVolumeMounts() {
		volumeAt[v.Destination] = v.Name
		d.Volumes = append(d.Volumes, VolumeFacts{Name: v.Name, Destination: v.Destination})
	}
	for _, mt := range UserBinds(mounts, volumeAt) {
		d.Binds = append(d.Binds, BindFacts{Source: mt.Source, Destination: mt.Destination, ReadOnly: mt.ReadOnly()})
	}
	d.Networks = networks(m)
	d.Ports = ports(cfg.Raw("newPortMappings"))
	if MadeByCRIO(m.SpecDump) {
		describeCRIO(d, m)
	}
	if o := p.Options; o != nil {
		d.Options = OptionFacts{Recorded: true, TCPEstablished: o.TCPEstablished, FileLocks: o.FileLocks, LeaveRunning: o.LeaveRunning, TCPClose: o.TCPClose}
	}
	return d
}

func networks(m *Metadata) []NetFacts {
	byName := map[string]*NetFacts{}
	status, _ := ParseNetStatus(m.NetworkStatus)
	for _, name := range status.Names() {
		att, _ := status.Network(name)
		n := &NetFacts{Name: name}
		n.IPs, n.MAC = att.Addresses()
		byName[name] = n
	}
	for _, name := range m.Config.NetworkNames() {
		if byName[name] == nil {
			byName[name] = &NetFacts{Name: name}
		}
	}
	out := make([]NetFacts, 0, len(byName))
	for _, n := range byName {
		out = append(out, *n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// maxPorts bounds the ports listed: every TCP, UDP and SCTP port.
const maxPorts = 3 << 16

func ports(raw json.RawMessage) []PortFacts {
	var pm []struct {
		HostIP        string `json:"host_ip"`
		ContainerPort int    `json:"container_port"`
		HostPort      int    `json:"host_port"`
		Range         int    `json:"range"`
		Protocol      string `json:"protocol"`
	}
	_ = json.Unmarshal(raw, &pm)
	var out []PortFacts
	for _, p := range pm {
		n := p.Range
		if n < 1 {
			n = 1
		}
		// Ports are 16-bit: a range past them is not podman's, and must
		// not make a pulled config.dump choose how much is allocated.
		if p.HostPort < 0 || p.ContainerPort < 0 || n > 65536 || p.HostPort+n > 65536 || p.ContainerPort+n > 65536 {
			continue
		}
		for i := 0; i < n && len(out) < maxPorts; i++ {
			out = append(out, PortFacts{HostIP: p.HostIP, HostPort: p.HostPort + i, ContainerPort: p.ContainerPort + i, Protocol: p.Protocol})
		}
	}
	return out
}

// describeCRIO fills in what CRI-O records elsewhere than podman.
func describeCRIO(d *Description, m *Metadata) {
	p, cfg := m.Provenance(), m.Config
	d.Format = "cri-o"
	names := CRIONames(m.SpecDump)
	d.Kubernetes = &names
	if names.Container != "" {
		d.Container.Name = names.Container
	}
	d.Container.Image = cfg.String("rootfsImage")
	d.Base.ID = orDefault(d.Base.ID, cfg.String("rootfsImageRef"))
	if d.Base.Digest == "" {
		d.Base.Digest = repoDigest(d.Base.Name, specAnnotations(m.SpecDump)[specAnnRepoDigests])
	}
	d.Source.Runtime = orDefault(d.Source.Runtime, cfg.Runtime())
	d.Source.CRIU = orDefault(d.Source.CRIU, p.CRIOCRIUVersion)
	d.Source.CRIO = p.CRIOVersion
}
