package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containers/image/v5/types"
	"github.com/opencontainers/go-digest"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	restore "github.com/podman-migrate/podman-migrate/import"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/fault"
	"github.com/podman-migrate/podman-migrate/internal/mountmap"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// PodPullResult is what a pod's pull made.
type PodPullResult struct {
	Pod   string `json:"pod"`
	Group bool   `json:"group,omitempty"` // no pod: Pod names the first member

	ID      string                `json:"id"`
	Source  string                `json:"source"`
	Digest  string                `json:"digest"` // the index's
	Members []*restore.PullResult `json:"members"`
	// Seconds: plan (every member), pod (made and started), restore
	// (every member), total.
	Seconds map[string]float64 `json:"seconds"`
}

// PodPlan is what a pod's pull would do: the pod as it would be made, and
// each member's plan.
type PodPlan struct {
	Source string         `json:"source"`
	Digest string         `json:"digest"`
	Pod    podman.PodSpec `json:"pod"`
	// Group: the members are no pod's, and join one another's network
	// namespace; Pod is then only named after the first.
	Group   bool            `json:"group,omitempty"`
	Members []*restore.Plan `json:"members"`
	// Blockers of the pod itself; each member's are in its plan.
	Blockers []string `json:"blockers"`
}

// Err returns nil when the pod's restore can proceed.
func (p *PodPlan) Err() error {
	var all []string
	all = append(all, p.Blockers...)
	for _, m := range p.Members {
		for _, b := range m.Blockers {
			all = append(all, fmt.Sprintf("member %s: %s", m.Name, b))
		}
	}
	if len(all) == 0 {
		return nil
	}
	return fmt.Errorf("%w (%d problem(s)): %s", restore.ErrBlocked, len(all), strings.Join(all, "; "))
}

// Print writes the plan for people.
func (p *PodPlan) Print(w io.Writer) {
	if p.Group {
		fmt.Fprintf(w, "Group index: %s\nDigest:      %s\nGroup:       %d containers joined to the namespaces of %s\n", p.Source, p.Digest, len(p.Members), p.Pod.Name)
	} else {
		fmt.Fprintf(w, "Pod index:   %s\nDigest:      %s\nPod:         %s (shares %s)\n", p.Source, p.Digest, p.Pod.Name, strings.Join(p.Pod.SharedNamespaces, ", "))
	}
	for _, pm := range p.Pod.PortMappings {
		fmt.Fprintf(w, "  port       %s:%d -> %d/%s\n", pm.HostIP, pm.HostPort, pm.ContainerPort, pm.Protocol)
	}
	for _, b := range p.Blockers {
		fmt.Fprintf(w, "Problem:     %s\n", b)
	}
	for _, m := range p.Members {
		fmt.Fprintf(w, "\nMember %s:\n", m.Name)
		m.Print(w)
	}
}

// podPulling is one pod's pull: every member planned before anything is
// made, then the pod made from its record, then each member restored
// into it; any failure removes the pod and all it holds.
type podPulling struct {
	c     podman.PodTarget
	o     restore.PullOptions
	log   io.Writer
	res   *PodPullResult
	began time.Time

	src     types.ImageReference
	rec     *ckpt.Pod
	plan    *PodPlan
	members []*pulling
	podID   string
}

// PlanPodPull reads a pod's index (as pull found it at o.Source) and
// every member's metadata, and works out what a pull would do, creating
// nothing. PodPlan.Err says whether it can proceed.
func PlanPodPull(ctx context.Context, c podman.PodTarget, o restore.PullOptions, ix *ckpt.IndexError) (*PodPlan, error) {
	pp := newPodPulling(c, o, io.Discard)
	if err := pp.makePlan(ctx, ix); err != nil {
		return nil, err
	}
	for _, m := range pp.members {
		if err := m.plan.Settle(ctx, nil); err != nil {
			return nil, err
		}
	}
	return pp.plan, nil
}

// PullPod makes the pod whose index pull found at o.Source on the host c
// serves, and restores every member into it.
func PullPod(ctx context.Context, c podman.PodTarget, o restore.PullOptions, ix *ckpt.IndexError) (*PodPullResult, error) {
	pp := newPodPulling(c, o, logOrDiscard(o.Log))
	defer func() {
		for _, m := range pp.members {
			m.close()
		}
	}()
	err := runOp(ctx, "pull pod", []phase{
		{"plan", func(ctx context.Context) error { return pp.makePlan(ctx, ix) }},
		{"check", pp.check},
		{"pod", pp.makePod},
		{"restore", pp.restore},
	}, func(err error) error { return pp.undo(ctx, err) })
	if err != nil {
		return nil, err
	}
	pp.res.Seconds["total"] = since(pp.began)
	return pp.res, nil
}

func newPodPulling(c podman.PodTarget, o restore.PullOptions, log io.Writer) *podPulling {
	return &podPulling{c: c, o: o, log: log, began: time.Now(),
		res: &PodPullResult{Seconds: map[string]float64{}}}
}

// makePlan checks the pod's record, and reads and plans every member as
// an image of its own, pinned to the digest the index gives.
func (pp *podPulling) makePlan(ctx context.Context, ix *ckpt.IndexError) error {
	if pp.o.Pod != "" {
		return fault.Wrap(fault.Usage, fmt.Errorf("--pod: %s holds a pod or a group of containers, which pull makes anew, in no other pod", pp.o.Source))
	}
	var err error
	if pp.rec, err = ckpt.ReadPodIndex(ix.Manifest); err != nil {
		return err
	}
	if pp.src, err = transfer.ParseReference(pp.o.Source); err != nil {
		return err
	}
	spec := podman.PodSpec{Name: pp.rec.Name}
	if pp.rec.Group {
		if pp.o.Name != "" {
			return fault.Wrap(fault.Usage, fmt.Errorf("--name: %s holds a group of containers, which keep their names", pp.o.Source))
		}
	} else if spec, err = podSpec(pp.rec, pp.o); err != nil {
		return err
	}
	pp.plan = &PodPlan{Source: transfer.Display(pp.src), Digest: digest.FromBytes(ix.Manifest).String(), Pod: spec, Group: pp.rec.Group}
	pp.res.Source, pp.res.Digest, pp.res.Pod, pp.res.Group = pp.plan.Source, pp.plan.Digest, spec.Name, pp.rec.Group
	if pp.rec.Group {
		fmt.Fprintf(pp.log, "Group of %d containers joined to the namespaces of %s\n", len(pp.rec.Members), pp.rec.Name)
	} else if exists, err := pp.c.PodExists(ctx, spec.Name); err != nil {
		return err
	} else if exists {
		pp.plan.Blockers = append(pp.plan.Blockers, fmt.Sprintf("pod %q %s: choose another name with --name", spec.Name, restore.ErrConflict))
	}
	if !pp.rec.Group {
		fmt.Fprintf(pp.log, "Pod %s: %d members\n", pp.rec.Name, len(pp.rec.Members))
	}
	for i, rm := range pp.rec.Members {
		mo := pp.o
		mo.Name, mo.Publish, mo.Pod = rm.Name, nil, ""
		if pp.rec.Group && i == 0 {
			mo.Publish = pp.o.Publish // the network namespace's owner publishes
		}
		m := newPulling(pp.c, mo, pp.log)
		pp.members = append(pp.members, m)
		if m.src, err = transfer.Instance(pp.src, rm.Digest); err != nil {
			return err
		}
		if err := runPhases(ctx, "plan member", m.planPhases()); err != nil {
			return fmt.Errorf("member %q: %w", rm.Name, err)
		}
		if err := pp.checkMember(rm, m.meta); err != nil {
			return err
		}
		pp.plan.Members = append(pp.plan.Members, m.plan)
	}
	pp.res.Seconds["plan"] = since(pp.began)
	return nil
}

// checkMember holds a member's checkpoint to the record: it was taken in
// this pod, and joins no namespace but the pod's.
func (pp *podPulling) checkMember(rm ckpt.PodMember, meta *ckpt.Metadata) error {
	if meta.ManifestDigest != rm.Digest {
		return fmt.Errorf("%w: member %q: manifest %s, the index says %s", tarsafe.ErrUnsafe, rm.Name, meta.ManifestDigest, rm.Digest)
	}
	if meta.Config == nil {
		return fmt.Errorf("%w: member %q has no config.dump", ckpt.ErrNotCheckpoint, rm.Name)
	}
	if pp.rec.Group {
		return pp.checkGroupMember(rm, meta)
	}
	if got := meta.Config.Pod(); got != pp.rec.ID {
		return fmt.Errorf("%w: member %q was checkpointed in pod %q, not the index's %q", tarsafe.ErrUnsafe, rm.Name, got, pp.rec.ID)
	}
	if out := pp.rec.Outside(meta.Config.NamespaceContainers()); out != "" {
		return fmt.Errorf("%w: member %q joins the namespaces of container %s, which is not the pod's infra container", tarsafe.ErrUnsafe, rm.Name, ckpt.ShortID(out))
	}
	return nil
}

// checkGroupMember holds a group's member to the record: no pod's, and
// joining exactly the namespaces the record says, of the members it names.
func (pp *podPulling) checkGroupMember(rm ckpt.PodMember, meta *ckpt.Metadata) error {
	if got := meta.Config.Pod(); got != "" {
		return fmt.Errorf("%w: member %q of a group was checkpointed in pod %q", tarsafe.ErrUnsafe, rm.Name, got)
	}
	joined := meta.Config.Joined()
	for ns, id := range joined {
		other := pp.memberByName(rm.Joins[ns])
		if other == nil || other.ID != id {
			return fmt.Errorf("%w: member %q joins the %s namespace of container %s, which the group's record does not say", tarsafe.ErrUnsafe, rm.Name, ns, ckpt.ShortID(id))
		}
	}
	for ns := range rm.Joins {
		if joined[ns] == "" {
			return fmt.Errorf("%w: member %q joins no %s namespace, which the group's record says it does", tarsafe.ErrUnsafe, rm.Name, ns)
		}
	}
	return nil
}

func (pp *podPulling) memberByName(name string) *ckpt.PodMember {
	for i := range pp.rec.Members {
		if m := &pp.rec.Members[i]; name != "" && m.Name == name {
			return m
		}
	}
	return nil
}

// check prints every member's findings and stops at the first blocker,
// before anything is made.
func (pp *podPulling) check(ctx context.Context) error {
	for _, m := range pp.members {
		if len(pp.plan.Blockers) > 0 || len(m.plan.Blockers) > 0 {
			if err := m.plan.Settle(ctx, nil); err != nil {
				return err
			}
		}
		m.plan.LogFindings(pp.log)
	}
	return pp.plan.Err()
}

// makePod makes the pod and starts its infra container, whose namespaces
// the members join.
func (pp *podPulling) makePod(ctx context.Context) error {
	if pp.rec.Group {
		return nil
	}
	start := time.Now()
	fmt.Fprintf(pp.log, "Creating pod %s\n", pp.plan.Pod.Name)
	id, err := pp.c.CreatePod(ctx, pp.plan.Pod)
	if err != nil {
		return err
	}
	pp.podID, pp.res.ID = id, id
	if err := pp.c.StartPod(ctx, id); err != nil {
		return err
	}
	pp.res.Seconds["pod"] = since(start)
	return nil
}

// restore restores each member into the pod, in the record's order.
func (pp *podPulling) restore(ctx context.Context) error {
	start := time.Now()
	for i, m := range pp.members {
		m.o.Pod = pp.podID
		if err := pp.join(ctx, m, pp.rec.Members[i]); err != nil {
			return fmt.Errorf("restoring member %q: %w", m.o.Name, err)
		}
		err := runOp(ctx, "pull member", m.restorePhases(), func(err error) error { return m.undo(ctx, err) })
		if err != nil {
			return fmt.Errorf("restoring member %q: %w", m.o.Name, err)
		}
		m.res.Seconds["total"] = since(m.began)
		pp.res.Members = append(pp.res.Members, m.res)
	}
	pp.res.Seconds["restore"] = since(start)
	return nil
}

// join points a group's member at the namespaces of the members it
// joins, restored before it on this host.
func (pp *podPulling) join(ctx context.Context, m *pulling, rm ckpt.PodMember) error {
	for ns, name := range rm.Joins {
		var id string
		for _, o := range pp.members {
			if o.o.Name == name {
				id = o.res.ID
			}
		}
		if id == "" {
			return fmt.Errorf("member %q, whose %s namespace it joins, was not restored", name, ns)
		}
		ctr, err := pp.c.InspectContainer(ctx, id)
		if err != nil {
			return err
		}
		if !ctr.State.Running {
			return fmt.Errorf("member %q, whose %s namespace it joins, is %s", name, ns, ctr.State.Status)
		}
		if err := m.plan.Join(ns, ctr.ID, ctr.State.Pid); err != nil {
			return err
		}
	}
	return nil
}

// undo removes the pod, every member restored into it, and what they
// brought (volumes, base images): a pod never ends half made. A group's
// members go last first: none is removed while another joins it.
func (pp *podPulling) undo(ctx context.Context, cause error) error {
	restored := slices.ContainsFunc(pp.members, func(m *pulling) bool { return m.res.ID != "" })
	if pp.podID == "" && !restored {
		return cause
	}
	what := fmt.Sprintf("pod %q", pp.plan.Pod.Name)
	if pp.rec.Group {
		what = fmt.Sprintf("group of %s", pp.plan.Pod.Name)
	}
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	var errs []error
	for i := len(pp.members) - 1; i >= 0; i-- {
		if m := pp.members[i]; m.res.ID != "" {
			fmt.Fprintf(pp.log, "Removing member %s, restored by the failed pull\n", m.plan.Name)
			errs = append(errs, restore.Cleanup(uctx, pp.c, m.plan.Name, m.plan.CreatedVolumes(), m.base, io.Discard))
		}
	}
	if pp.podID != "" {
		fmt.Fprintf(pp.log, "Removing pod %s, made by the failed pull\n", pp.plan.Pod.Name)
		errs = append(errs, pp.c.RemovePod(uctx, pp.podID))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w; removing %s, made by the failed pull, also failed: %w", cause, what, err)
	}
	return fmt.Errorf("%w; %s, made by the pull, was removed again", cause, what)
}

// podDefaultParents are podman's own cgroup parents: a record of one of
// them says nothing the target's podman would not choose by itself.
var podDefaultParents = map[string]bool{"": true, "/libpod_parent": true, "machine.slice": true, "user.slice": true}

// podSpec is the pod to make from the record, renamed by --name, its
// ports replaced by --publish and its networks renamed by --network-map.
func podSpec(rec *ckpt.Pod, o restore.PullOptions) (podman.PodSpec, error) {
	spec := podman.PodSpec{Name: rec.Name, Hostname: rec.Hostname, Labels: rec.Labels,
		SharedNamespaces: rec.Shared, DNSServer: rec.DNSServer, DNSSearch: rec.DNSSearch,
		DNSOption: rec.DNSOption, NoManageResolvConf: rec.NoManageResolvConf,
		NoManageHosts: rec.NoManageHosts, HostAdd: rec.HostAdd,
		CPUPeriod: rec.CPUPeriod, CPUQuota: rec.CPUQuota}
	if o.Name != "" {
		spec.Name = o.Name
	}
	if !podDefaultParents[rec.CgroupParent] {
		spec.CgroupParent = rec.CgroupParent
	}
	limits := map[string]any{}
	if rec.MemoryLimit > 0 {
		limits["memory"] = map[string]any{"limit": rec.MemoryLimit}
	}
	if rec.CPUSetCPUs != "" {
		limits["cpu"] = map[string]any{"cpus": rec.CPUSetCPUs}
	}
	if len(limits) > 0 {
		spec.ResourceLimits = limits
	}
	ports := rec.Ports
	if len(o.Publish) > 0 {
		ports = nil
		for _, s := range o.Publish {
			p, err := parsePublish(s)
			if err != nil {
				return spec, err
			}
			ports = append(ports, p)
		}
	}
	for _, p := range ports {
		spec.PortMappings = append(spec.PortMappings, podman.PortMapping{HostIP: p.HostIP, HostPort: p.HostPort, ContainerPort: p.ContainerPort, Protocol: p.Protocol})
	}
	if rec.HostNetwork {
		spec.NetNS = &podman.Namespace{NSMode: "host"}
		return spec, nil
	}
	nets, err := restore.NameMaps("--network-map", o.NetworkMap)
	if err != nil {
		return spec, err
	}
	for _, n := range rec.Networks {
		if spec.Networks == nil {
			spec.Networks = map[string]any{}
		}
		if to, ok := nets[n]; ok {
			n = to
		}
		spec.Networks[n] = map[string]any{}
	}
	if len(spec.Networks) > 0 {
		spec.NetNS = &podman.Namespace{NSMode: "bridge"}
	}
	return spec, nil
}

// parsePublish reads one --publish for a pod: [[IP:][HOSTPORT]:]PORT[/PROTO]
// (no ranges).
func parsePublish(s string) (ckpt.PodPort, error) {
	bad := func(why string) (ckpt.PodPort, error) {
		return ckpt.PodPort{}, fmt.Errorf("%w: --publish %q: %s; want [[IP:][HOSTPORT]:]PORT[/tcp|udp|sctp]", mountmap.ErrBadMap, s, why)
	}
	rest, proto, _ := strings.Cut(s, "/")
	p := ckpt.PodPort{Protocol: "tcp"}
	if proto != "" {
		p.Protocol = proto
	}
	if p.Protocol != "tcp" && p.Protocol != "udp" && p.Protocol != "sctp" {
		return bad("protocol " + proto)
	}
	port := func(v string, zero bool) (uint16, bool) {
		if v == "" && zero {
			return 0, true
		}
		n, err := strconv.ParseUint(v, 10, 16)
		return uint16(n), err == nil && (n > 0 || zero)
	}
	var host, ctr string
	if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		host, ctr = rest[:i], rest[i+1:]
		if j := strings.LastIndexByte(host, ':'); j >= 0 {
			p.HostIP, host = strings.Trim(host[:j], "[]"), host[j+1:]
			if net.ParseIP(p.HostIP) == nil {
				return bad("host IP " + p.HostIP)
			}
		}
	} else {
		ctr = rest
	}
	var ok bool
	if p.ContainerPort, ok = port(ctr, false); !ok {
		return bad("container port " + ctr)
	}
	if p.HostPort, ok = port(host, true); !ok {
		return bad("host port " + host)
	}
	return p, nil
}
