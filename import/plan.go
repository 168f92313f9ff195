package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containers/image/v5/docker/reference"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/dump"
	"github.com/podman-migrate/podman-migrate/internal/fault"
)

// ErrBlocked is wrapped when the plan for a restore has blockers.
var ErrBlocked = fault.New(fault.Input, "the restore cannot proceed on this host")

// Plan is what a pull will do on the target host, and what stops it.
type Plan struct {
	Source   string        `json:"source"`
	Digest   string        `json:"digest"`
	Name     string        `json:"name"`
	Image    string        `json:"image"`
	Base     BasePlan      `json:"baseImage"`
	Mounts   []MountPlan   `json:"bindMounts"`
	Volumes  []VolumePlan  `json:"volumes"`
	Networks []NetworkPlan `json:"networks"`
	Host     []HostFact    `json:"host"`
	// TCPClose is how the restore closes the checkpoint's TCP connections
	// (TCPClosePodman, TCPCloseCRIUConfig); "" keeps them.
	TCPClose  string   `json:"tcpClose,omitempty"`
	Warnings  []string `json:"warnings"`
	Blockers  []string `json:"blockers"`
	relocated *relocated
	host      *hostCheck // until Settle
	// Wire and Sent are how the last restore attempt sent the archive,
	// and how many bytes podman read; Compressed is what the wire did
	// ("auto: zstd for 40% of 256 MiB").
	Wire       Wire   `json:"-"`
	Sent       int64  `json:"-"`
	Compressed string `json:"-"`
}

// BasePlan says where the base image will come from.
type BasePlan struct {
	Name string `json:"name"`
	ID   string `json:"id"`
	// Present: the target has the image (by ID).
	Present bool `json:"present"`
	// From lists the references pull will try, in order, when absent.
	From []string `json:"from,omitempty"`
	// Tag: present by ID but not under Name, which pull gives it.
	Tag bool `json:"tag,omitempty"`
	// ByID: Name is a digest reference (as a kubelet pulls by), which no
	// tag can give an image and which podman's restore would pull with its
	// own settings; pull points the restore at the image's ID instead.
	ByID bool `json:"byID,omitempty"`
}

// MountPlan is one bind mount, old source to new.
type MountPlan struct {
	Destination string `json:"destination"`
	Old         string `json:"old"`
	New         string `json:"new"`
	Dir         bool   `json:"dir"`
	ReadOnly    bool   `json:"readOnly"`
	// State is "ok", "missing", "wrong type" or "unknown" (a remote host).
	State string `json:"state"`
}

// VolumePlan is one named volume.
type VolumePlan struct {
	Name        string `json:"name"`
	New         string `json:"new"`
	Destination string `json:"destination"`
	Collides    bool   `json:"collides"`
}

// NetworkPlan is one network the container was attached to.
type NetworkPlan struct {
	Old    string `json:"old"`
	New    string `json:"new"`
	Exists bool   `json:"exists"`
	IP     string `json:"ip,omitempty"`
	MAC    string `json:"mac,omitempty"`
	// KeepIP: the checkpoint's address will be requested again.
	KeepIP bool   `json:"keepIP"`
	Note   string `json:"note,omitempty"`
}

// HostFact compares one fact of the source and target hosts.
type HostFact struct {
	What   string `json:"what"`
	Source string `json:"source"`
	Target string `json:"target"`
}

func (p *Plan) block(format string, a ...any) {
	p.Blockers = append(p.Blockers, fmt.Sprintf(format, a...))
}
func (p *Plan) warn(format string, a ...any) {
	p.Warnings = append(p.Warnings, fmt.Sprintf(format, a...))
}

// Err returns nil when the restore can proceed, else an error listing every
// blocker, each with the flag that fixes it.
func (p *Plan) Err() error {
	if len(p.Blockers) == 0 {
		return nil
	}
	return fmt.Errorf("%w (%d problem(s)): %s", ErrBlocked, len(p.Blockers), strings.Join(p.Blockers, "; "))
}

// Print writes the plan for people.
func (p *Plan) Print(w io.Writer) {
	fmt.Fprintf(w, "Checkpoint:  %s\n", p.Source)
	if p.Digest != "" {
		fmt.Fprintf(w, "Digest:      %s\n", p.Digest)
	}
	fmt.Fprintf(w, "Container:   %s\n", p.Name)
	fmt.Fprintf(w, "Image:       %s\n", p.Image)
	switch {
	case p.Base.Present:
		fmt.Fprintf(w, "Base image:  %s (%s), present on this host%s\n", p.Base.Name, ckpt.ShortID(p.Base.ID), map[bool]string{true: "; restored by its ID"}[p.Base.ByID])
	case len(p.Base.From) > 0:
		fmt.Fprintf(w, "Base image:  %s (%s), will be pulled from %s\n", p.Base.Name, ckpt.ShortID(p.Base.ID), strings.Join(p.Base.From, ", then "))
	default:
		fmt.Fprintf(w, "Base image:  %s (%s), not available\n", p.Base.Name, ckpt.ShortID(p.Base.ID))
	}
	for _, m := range p.Mounts {
		kind := "file"
		if m.Dir {
			kind = "dir"
		}
		ro := ""
		if m.ReadOnly {
			ro = ", ro"
		}
		src := m.Old
		if m.New != m.Old {
			src = m.Old + " -> " + m.New
		}
		fmt.Fprintf(w, "Bind mount:  %s at %s (%s%s): %s\n", src, m.Destination, kind, ro, m.State)
	}
	for _, v := range p.Volumes {
		name := v.Name
		if v.New != v.Name {
			name = v.Name + " -> " + v.New
		}
		state := "will be created"
		if v.Collides {
			state = "already exists"
		}
		fmt.Fprintf(w, "Volume:      %s at %s: %s\n", name, v.Destination, state)
	}
	for _, n := range p.Networks {
		name := n.Old
		if n.New != n.Old {
			name = n.Old + " -> " + n.New
		}
		state := "exists"
		if !n.Exists {
			state = "missing"
		}
		ip := n.IP
		if ip == "" {
			ip = "no address recorded"
		} else if !n.KeepIP {
			ip += ", not kept"
		}
		fmt.Fprintf(w, "Network:     %s (%s): %s", name, ip, state)
		if n.Note != "" {
			fmt.Fprintf(w, "; %s", n.Note)
		}
		fmt.Fprintln(w)
	}
	for _, h := range p.Host {
		fmt.Fprintf(w, "%-12s source %s, target %s\n", h.What+":", orUnknown(h.Source), orUnknown(h.Target))
	}
	switch p.TCPClose {
	case TCPClosePodman:
		fmt.Fprintln(w, "TCP:         connections restored closed (podman's tcpClose)")
	case TCPCloseCRIUConfig:
		fmt.Fprintln(w, "TCP:         connections restored closed (a CRIU configuration with tcp-close, for this restore)")
	}
	for _, s := range p.Warnings {
		fmt.Fprintf(w, "Warning:     %s\n", s)
	}
	for _, s := range p.Blockers {
		fmt.Fprintf(w, "Blocker:     %s\n", s)
	}
	if len(p.Blockers) == 0 {
		fmt.Fprintln(w, "The restore can proceed.")
	}
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// target is what the plan needs to know of the host it restores on.
type target struct {
	c podman.Target
	// root is the service's root directory seen from here
	// (/proc/PID/root), "" when the service is not on this machine.
	root string
}

func newTarget(c podman.Target) *target {
	t := &target{c: c}
	if root, err := c.ServiceRoot(); err == nil {
		t.root = root
	}
	return t
}

// info is podman's info. podman gathers it afresh for each request, which
// takes 0.5 s on Debian's 4.3.1 (it asks dpkg for package versions), so
// the client keeps the answer and the plan asks only where it must.
func (t *target) info(ctx context.Context) (*podman.Info, error) { return t.c.Info(ctx) }

// stat looks a path up in the podman service's mount namespace.
func (t *target) stat(p string) (fs.FileInfo, error) {
	if t.root == "" {
		return nil, podman.ErrRemote
	}
	return os.Stat(filepath.Join(t.root, p))
}

// criuVersion asks the CRIU that the service would run, when the service
// is on this machine; "" when that cannot be known (podman's API does not
// report it).
func (t *target) criuVersion(ctx context.Context) string {
	if t.root == "" {
		return ""
	}
	return t.c.CRIUVersion(ctx)
}

// hostCheck is the comparison of the source host, as the annotations
// record it, with the target. It waits for podman's info, so it runs in
// the background: a restore settles it before its archive ends, and
// podman acts on none of an archive before its end.
type hostCheck struct {
	done               chan struct{}
	facts              []HostFact
	warnings, blockers []string
	err                error
}

func (p *Plan) compareHosts(ctx context.Context, t *target, meta *ckpt.Metadata, cfg *dump.Config) {
	h := &hostCheck{done: make(chan struct{})}
	p.host = h
	go func() {
		defer close(h.done)
		info, err := t.info(ctx)
		if err != nil {
			h.err = err
			return
		}
		var q Plan
		q.hostFacts(ctx, t, info, meta, cfg)
		h.facts, h.warnings, h.blockers = q.Host, q.Warnings, q.Blockers
	}()
}

// Settle waits for the comparison of the hosts and adds what it found to
// the plan, printing its warnings and problems to w (nil: none). Its error
// is a failure to ask podman; Err says whether the plan can proceed. A
// plan is settled once; later calls return nil at once.
func (p *Plan) Settle(ctx context.Context, w io.Writer) error {
	h := p.host
	if h == nil {
		return nil
	}
	select {
	case <-h.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	if h.err != nil {
		return h.err
	}
	p.host = nil
	p.Host = h.facts
	p.Warnings = append(p.Warnings, h.warnings...)
	p.Blockers = append(p.Blockers, h.blockers...)
	if w != nil {
		logFindings(w, h.warnings, h.blockers)
	}
	return nil
}

// LogFindings prints the plan's warnings and blockers, one line each.
func (p *Plan) LogFindings(w io.Writer) { logFindings(w, p.Warnings, p.Blockers) }

func logFindings(w io.Writer, warnings, blockers []string) {
	for _, s := range warnings {
		fmt.Fprintf(w, "Warning: %s\n", s)
	}
	for _, s := range blockers {
		fmt.Fprintf(w, "Problem: %s\n", s)
	}
}

// blocks says whether the comparison of the hosts, once done, stops the
// restore: it found a blocker, or could not ask podman.
func (h *hostCheck) blocks() bool { return h.err != nil || len(h.blockers) > 0 }

// hostFacts compares the source host, as the annotations record it, with
// the target: a different architecture blocks, other differences warn.
func (p *Plan) hostFacts(ctx context.Context, t *target, info *podman.Info, meta *ckpt.Metadata, cfg *dump.Config) {
	src := meta.Provenance()
	arch := src.HostArch
	if arch == "" {
		arch = meta.ImageConfig.Architecture
	}
	runtimeName := src.RuntimeName
	if r := cfg.Runtime(); r != "" {
		runtimeName = r
	}
	criu := t.criuVersion(ctx)
	p.Host = []HostFact{
		{"Arch", arch, info.Host.Arch},
		{"Kernel", src.HostKernel, info.Host.Kernel},
		{"Podman", src.PodmanVersion, info.Version.Version},
		{"Runtime", runtimeName, info.Host.OCIRuntime.Name},
		{"CRIU", src.CRIUVersion, criu},
		{"Cgroups", src.CgroupVersion, info.Host.CgroupsVersion},
	}
	if arch != "" && info.Host.Arch != "" && arch != info.Host.Arch {
		p.block("the checkpoint was taken on %s and this host is %s: CRIU cannot restore across architectures", arch, info.Host.Arch)
	}
	if k := src.HostKernel; k != "" && k != info.Host.Kernel {
		p.warn("kernel %s on the source, %s here: CRIU may refuse features the older kernel lacks", k, info.Host.Kernel)
	}
	if runtimeName != "" && info.Host.OCIRuntime.Name != "" && runtimeName != info.Host.OCIRuntime.Name {
		// podman restores with its default runtime whatever config.dump
		// says, and CRIU's images of one runtime do not restore under the
		// other (measured: crun's under runc, "mnt: No mapping for …
		// mountpoint").
		p.block("the checkpoint was taken under %s, and this host's podman restores with its default runtime %s: restore it on a host whose default runtime is %s (containers.conf [engine] runtime)",
			runtimeName, info.Host.OCIRuntime.Name, runtimeName)
	}
	if v := src.CRIUVersion; v != "" && criu != "" && versionLess(criu, v) {
		p.warn("CRIU %s here is older than the source's %s", criu, v)
	}
}

// versionLess compares dotted numeric versions ("4.1.1" < "4.2").
func versionLess(a, b string) bool {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		var x, y int
		if i < len(as) {
			x, _ = strconv.Atoi(as[i])
		}
		if i < len(bs) {
			y, _ = strconv.Atoi(bs[i])
		}
		if x != y {
			return x < y
		}
	}
	return false
}

// basePlan decides where the base image comes from: the target's own copy
// (by ID), its origin by digest, or the copy push --include-base made.
func (p *Plan) basePlan(ctx context.Context, t *target, meta *ckpt.Metadata, cfg *dump.Config) error {
	id, name := cfg.RootfsImageID(), cfg.RootfsImageName()
	p.Base = BasePlan{Name: name, ID: id, ByID: id != "" && isDigested(name)}
	if id == "" {
		p.Base.Present = true // nothing to find: podman checks it itself
		return nil
	}
	if _, err := t.c.InspectImage(ctx, id); err == nil {
		p.Base.Present = true
		// podman's restore pulls the base image by name when the name is
		// missing, whatever the ID (CRI-O's checkpoints name it as their
		// node pulled it).
		if name != "" && !p.Base.ByID {
			if _, err := t.c.InspectImage(ctx, name); errors.Is(err, podman.ErrNotFound) {
				p.Base.Tag = true
			}
		}
		return nil
	} else if !errors.Is(err, podman.ErrNotFound) {
		return err
	}
	if name == "" {
		p.block("base image %s is not on this host and the checkpoint names none to pull", ckpt.ShortID(id))
		return nil
	}
	have, err := t.c.InspectImage(ctx, name)
	if err == nil {
		hint := name
		if d := meta.Provenance().BaseDigest; d != "" {
			hint = fmt.Sprintf("%s (digest %s)", name, d)
		}
		p.block("%s: %s here is image %s, the checkpoint was made from image %s; make the source's %s available on this host (podman pull, or podman save/load), or restore elsewhere",
			ErrBaseImage, name, ckpt.ShortID(have.ID), ckpt.ShortID(id), hint)
		return nil
	}
	if !errors.Is(err, podman.ErrNotFound) {
		return err
	}
	prov := meta.Provenance()
	if ref := originRef(name, prov.BaseDigest); ref != "" {
		p.Base.From = append(p.Base.From, ref)
	}
	if inc := prov.BaseIncluded; inc != "" {
		p.Base.From = append(p.Base.From, inc)
	}
	if len(p.Base.From) == 0 {
		p.block("base image %s (%s) is not on this host and cannot be pulled (it has no registry origin): push again with --include-base, or podman save/load it here", name, ckpt.ShortID(id))
	}
	return nil
}

// originRef is NAME@DIGEST when name lives in a registry; images named
// localhost/… were built or imported locally and have no origin.
func originRef(name, dgst string) string {
	if dgst == "" {
		return ""
	}
	named, err := reference.ParseNormalizedNamed(name)
	if err != nil || reference.Domain(named) == "localhost" {
		return ""
	}
	return reference.TrimNamed(named).String() + "@" + dgst
}

// isDigested says whether name is a digest reference (REPO@sha256:…).
func isDigested(name string) bool {
	named, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return false
	}
	_, ok := named.(reference.Digested)
	return ok
}
