package migrate

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containers/image/v5/oci/layout"
	"github.com/containers/image/v5/types"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/export"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/fault"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// podTag names the pod's index in the staging layout; members are
// member/N (podman's names are not all OCI reference names).
const podTag = "pod/index"

// PodPushResult is what a pod's push did, for people and programs.
type PodPushResult struct {
	Reference string `json:"reference"`
	Digest    string `json:"digest"` // the index's
	Pod       string `json:"pod"`
	ID        string `json:"id"`
	// Members in the index's order, each as a container's push.
	Members []*export.PushResult `json:"members"`
	// Seconds: freeze (the first freeze to the last member built: the
	// members' downtime on this host), upload, total.
	Seconds map[string]float64 `json:"seconds"`
	// FrozeAt is when the first member was frozen: the pod's downtime
	// begins.
	FrozeAt time.Time `json:"-"`
}

// PodPushError is a failure after a member was frozen. It says what
// became of each member on this host.
type PodPushError struct {
	Pod string
	Err error
	// Restored members run again from their kept checkpoints; Thawed
	// ones were only frozen; Stuck ones are still checkpointed (why).
	Restored, Thawed []string
	Stuck            map[string]error
}

func (e *PodPushError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v; %s", e.Err, e.Pod)
	if len(e.Stuck) == 0 {
		b.WriteString(" runs again on this host")
		if len(e.Restored) > 0 {
			fmt.Fprintf(&b, " (restored from their checkpoints: %s)", strings.Join(e.Restored, ", "))
		}
		return b.String()
	}
	names := make([]string, 0, len(e.Stuck))
	for n := range e.Stuck {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(&b, "; restoring member %q on this host failed (%v): it is still checkpointed, run `podman container restore --keep %s` to resume it", n, e.Stuck[n], n)
	}
	return b.String()
}

func (e *PodPushError) Unwrap() error { return e.Err }

// IsPod says whether name is no container but a pod on the host c serves:
// push and move take either.
func IsPod(ctx context.Context, c podman.PodSource, name string) (bool, error) {
	if ok, err := c.ContainerExists(ctx, name); err != nil || ok {
		return false, err
	}
	return c.PodExists(ctx, name)
}

// podPushing is one pod's push: its members each go through a
// container's checkpoint and build into one staging layout, all frozen
// before the first is dumped, and then out as one image index.
type podPushing struct {
	c     podman.PodSource
	o     export.PushOptions
	log   io.Writer
	res   *PodPushResult
	began time.Time

	pod     *podman.Pod
	dest    types.ImageReference
	tmp     string
	members []*pushing
	frozen  []*podman.Container
	// group names the containers of a group's push (no pod); its members
	// are dumped leaving them frozen, and stay so until released.
	group []string
	// rec is the pod's record as the index upload copies names it (the
	// encrypted members' digests once encrypt ran).
	rec *ckpt.Pod
}

// what names the pod or group for messages.
func (pp *podPushing) what() string {
	if pp.group != nil {
		return fmt.Sprintf("group %q", strings.Join(pp.group, ", "))
	}
	return fmt.Sprintf("pod %q", pp.pod.Name)
}

// PushPod checkpoints every member of a pod, each frozen through its
// cgroup before the first is dumped and none resumed before the last is,
// and publishes one OCI image index: a checkpoint image per member, the
// pod's record in the index's annotation. A failure after the freeze
// restores every checkpointed member and thaws the others.
func PushPod(ctx context.Context, c podman.PodSource, o export.PushOptions) (*PodPushResult, error) {
	pp, err := retryInFlight(ctx, o, func() (*podPushing, error) {
		pp := &podPushing{c: c, o: o, log: logOrDiscard(o.Log), began: time.Now(),
			res: &PodPushResult{Seconds: map[string]float64{}}}
		return pp, pp.run(ctx, "push pod", pp.inspect)
	})
	if err != nil {
		return nil, err
	}
	pp.res.Seconds["total"] = since(pp.began)
	return pp.res, nil
}

// run runs a pod's or a group's push, inspect first. Members talk over
// their shared loopback: both ends of such a connection move together, so
// they are dumped and restored.
func (pp *podPushing) run(ctx context.Context, op string, inspect func(context.Context) error) error {
	pp.o.TCPEstablished = true
	defer pp.removeStaging()
	return runOp(ctx, op, []phase{
		{"inspect", inspect},
		{"preflight", pp.preflight},
		{"stage", pp.stage},
		{"base", pp.includeBase},
		{"freeze", pp.freeze},
		{"connections", pp.connections},
		{"checkpoint", pp.checkpoint},
		{"index", pp.index},
		{"encrypt", pp.encrypt},
		{"upload", pp.upload},
	}, func(err error) error { return pp.rollback(ctx, err) })
}

// ErrInFlight is wrapped when CRIU refused a member's dump because a TCP
// connection was in flight: one the server's kernel had completed but the
// server had not accepted yet ("In-flight connection"; podman 4 offers no
// --skip-in-flight). Peers that connect often, as members do over their
// loopback, meet it now and then.
var ErrInFlight = fault.New(fault.Podman, "a TCP connection was in flight at the checkpoint")

// inFlightTries bounds the pushes tried when a connection was in flight.
const inFlightTries = 3

// retryInFlight runs push again when it failed on a connection in flight
// and its rollback left every member running, as a new push: nothing of
// the failed one is kept.
func retryInFlight(ctx context.Context, o export.PushOptions, push func() (*podPushing, error)) (*podPushing, error) {
	for try := 1; ; try++ {
		pp, err := push()
		var perr *PodPushError
		if err == nil || try == inFlightTries || !errors.Is(err, ErrInFlight) || !errors.As(err, &perr) || len(perr.Stuck) > 0 || ctx.Err() != nil {
			if errors.Is(err, ErrInFlight) {
				err = fault.Hinted(err, "push again when the members are less busy; CRIU cannot dump a connection the server has not accepted yet")
			}
			return pp, err
		}
		fmt.Fprintf(logOrDiscard(o.Log), "A TCP connection was in flight at the checkpoint, and %s runs again; trying again (%d of %d)\n", perr.Pod, try+1, inFlightTries)
	}
}

// criuSays adds to a member's failed dump what CRIU logged, and marks a
// connection in flight.
func (pp *podPushing) criuSays(ctx context.Context, ctr *podman.Container, err error) error {
	lines := pp.c.DumpErrors(ctx, ctr.ID)
	if len(lines) == 0 {
		return err
	}
	for _, l := range lines {
		if strings.Contains(l, "In-flight connection") {
			return fmt.Errorf("%w: %w (CRIU: %s)", ErrInFlight, err, strings.Join(lines, "; "))
		}
	}
	return fmt.Errorf("%w (CRIU: %s)", err, strings.Join(lines, "; "))
}

func (pp *podPushing) inspect(ctx context.Context) error {
	var err error
	if pp.dest, err = transfer.ParseReference(pp.o.Dest); err != nil {
		return err
	}
	if _, err := pp.c.ServicePID(); err != nil {
		return fault.Wrap(fault.Usage, fmt.Errorf("pushing a pod freezes its members through their cgroups, which needs the podman service on this machine (%s): %w", pp.c.Address(), err))
	}
	if pp.pod, err = pp.c.InspectPod(ctx, pp.o.Container); err != nil {
		return err
	}
	pp.res.Pod, pp.res.ID = pp.pod.Name, pp.pod.ID
	var names []string
	for _, m := range pp.pod.Containers {
		if m.ID != pp.pod.InfraContainerID {
			names = append(names, m.Name)
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("%w: pod %q has no containers but its infra container", export.ErrNotRunning, pp.pod.Name)
	}
	slices.Sort(names)
	for i, name := range names {
		mo := pp.o
		mo.Container, mo.NoStream = name, true
		m := &pushing{c: pp.c, o: mo, log: pp.log, began: pp.began, tag: fmt.Sprintf("member/%d", i), shared: true,
			res: &export.PushResult{Seconds: map[string]float64{}, Bytes: map[string]int64{}}}
		pp.members = append(pp.members, m)
		if err := m.inspect(ctx); err != nil {
			return fmt.Errorf("member %q of pod %q: %w", name, pp.pod.Name, err)
		}
		if m.src.Container.Pod != pp.pod.ID {
			return fmt.Errorf("member %q left pod %q while it was read", name, pp.pod.Name)
		}
	}
	return nil
}

// preflight checks DEST once, and the staging room for every member.
func (pp *podPushing) preflight(ctx context.Context) error {
	if err := transfer.Preflight(ctx, pp.dest, pp.o.Transfer); err != nil {
		return fmt.Errorf("%w; %s was not touched", err, pp.what())
	}
	ctrs := make([]*podman.Container, len(pp.members))
	for i, m := range pp.members {
		ctrs[i] = m.src.Container
	}
	return export.CheckStagingRoom(ctx, pp.c, transfer.StagingDir(pp.o.TmpDir), ctrs...)
}

func (pp *podPushing) stage(context.Context) error {
	tmp, err := os.MkdirTemp(transfer.StagingDir(pp.o.TmpDir), "podman-migrate-push-")
	if err != nil {
		return fmt.Errorf("creating a staging directory: %w", err)
	}
	pp.tmp = tmp
	for _, m := range pp.members {
		m.tmp = tmp
	}
	return nil
}

func (pp *podPushing) removeStaging() {
	for _, m := range pp.members {
		m.removeStaging()
	}
	if pp.tmp != "" {
		os.RemoveAll(pp.tmp)
	}
}

// includeBase copies each distinct base image of the members into DEST's
// repository once, before any member is frozen: it costs no downtime.
func (pp *podPushing) includeBase(ctx context.Context) error {
	if !pp.o.IncludeBase {
		return nil
	}
	start := time.Now()
	copied := map[string]string{}
	for _, m := range pp.members {
		ctr := m.src.Container
		ref, ok := copied[ctr.Image]
		if !ok {
			var err error
			if ref, err = export.IncludeBase(ctx, pp.c, ctr, pp.dest, pp.tmp, pp.o, pp.log); err != nil {
				return fmt.Errorf("including the base image of member %q: %w; %s was not touched", ctr.Name, err, pp.what())
			}
			copied[ctr.Image] = ref
		}
		m.src.Known[ckpt.AnnBaseIncluded] = ref
		m.res.BaseImage = ref
	}
	pp.res.Seconds["base"] = since(start)
	return nil
}

// freeze stops every member before the first is dumped.
func (pp *podPushing) freeze(ctx context.Context) error {
	fmt.Fprintf(pp.log, "Freezing the %d members of %s\n", len(pp.members), pp.what())
	pp.res.FrozeAt = time.Now()
	for _, m := range pp.members {
		ctr := m.src.Container
		pp.frozen = append(pp.frozen, ctr)
		if err := pp.c.FreezeContainer(ctx, ctr, true); err != nil {
			return fmt.Errorf("freezing member %q: %w", ctr.Name, err)
		}
	}
	return nil
}

// ErrOutsideConnection is wrapped when a pod's member holds a TCP
// connection to a peer outside the pod, which cannot move with it.
var ErrOutsideConnection = fault.New(fault.Input, "a TCP connection to a peer outside the pod")

// connections refuses, with every member frozen (no connection comes or
// goes), a pod holding a TCP connection that is not over its loopback,
// unless they are to be closed on restore (--tcp-close):
// its address is the pod's on this host, which the target's pod does not
// have, so CRIU could not restore it there (measured: "Can't bind inet
// socket back: Cannot assign requested address").
func (pp *podPushing) connections(context.Context) error {
	type netns struct {
		members []string
		conns   []podman.TCPConn
	}
	var order []string
	byNS := map[string]*netns{}
	for _, m := range pp.members {
		ctr := m.src.Container
		conns, ns, err := pp.c.TCPConnections(ctr)
		if err != nil {
			return fmt.Errorf("reading member %q's TCP connections: %w", ctr.Name, err)
		}
		if byNS[ns] == nil {
			byNS[ns] = &netns{conns: conns}
			order = append(order, ns)
		}
		byNS[ns].members = append(byNS[ns].members, ctr.Name)
	}
	for _, ns := range order {
		n := byNS[ns]
		holder := fmt.Sprintf("member %q", n.members[0])
		if len(n.members) > 1 {
			holder = fmt.Sprintf("the network namespace of members %s", strings.Join(n.members, ", "))
		}
		for _, c := range n.conns {
			if c.Loopback() {
				continue
			}
			if pp.o.TCPClose {
				fmt.Fprintf(pp.log, "%s holds %s, a connection to a peer outside the pod: it is closed on restore (--tcp-close)\n", holder, c)
				continue
			}
			return fault.Hinted(fmt.Errorf("%w: %s holds %s", ErrOutsideConnection, holder, c),
				"push with --tcp-close to have the pod's connections closed on restore, or close it (stop the client, or wait for it to end) and push again")
		}
	}
	return nil
}

// checkpoint dumps and builds each member in turn; the frozen ones wait.
func (pp *podPushing) checkpoint(ctx context.Context) error {
	for _, m := range pp.members {
		dumpFailed := false
		dump := func(ctx context.Context) error {
			err := m.checkpoint(ctx)
			dumpFailed = err != nil
			return err
		}
		if err := runPhases(ctx, "push member", []phase{{"checkpoint", dump}, {"build", m.build}}); err != nil {
			if dumpFailed {
				err = pp.criuSays(ctx, m.src.Container, err)
			}
			return fmt.Errorf("member %q: %w", m.src.Container.Name, err)
		}
	}
	pp.res.Seconds["freeze"] = since(pp.res.FrozeAt)
	if pp.group != nil {
		return nil // dumped leaving them running: frozen until released
	}
	return pp.thaw(ctx)
}

// thaw thaws the frozen members: those dumped are gone with their cgroups.
func (pp *podPushing) thaw(ctx context.Context) error {
	var errs []error
	for _, ctr := range pp.frozen {
		if err := pp.c.FreezeContainer(ctx, ctr, false); err != nil {
			errs = append(errs, fmt.Errorf("thawing member %q: %w", ctr.Name, err))
		}
	}
	pp.frozen = nil
	return errors.Join(errs...)
}

// index writes the pod's record and index next to its members' images.
func (pp *podPushing) index(ctx context.Context) error {
	var rec *ckpt.Pod
	if pp.group != nil {
		rec = &ckpt.Pod{Name: pp.members[0].src.Container.Name, Group: true}
	} else {
		rec = podRecord(pp.pod)
	}
	ids := map[string]string{}
	var descs []imgspecv1.Descriptor
	for _, m := range pp.members {
		ctr := m.src.Container
		ids[ctr.ID] = ctr.Name
		pm := ckpt.PodMember{Name: ctr.Name, ID: ctr.ID, Digest: m.built.Digest}
		if peers := ctr.Peers(); len(peers) > 0 && pp.group != nil {
			pm.Joins = map[string]string{}
			for ns, id := range peers {
				pm.Joins[ns] = ids[id]
			}
		}
		rec.Members = append(rec.Members, pm)
		descs = append(descs, imgspecv1.Descriptor{Digest: m.built.Digest, Size: m.built.Size,
			Platform: &imgspecv1.Platform{OS: "linux", Architecture: m.src.Info.Host.Arch}})
	}
	pp.rec = rec
	return pp.writeIndex(ctx, podTag, rec, descs)
}

// writeIndex writes the index of rec's members, descs, into the staging
// layout under tag.
func (pp *podPushing) writeIndex(ctx context.Context, tag string, rec *ckpt.Pod, descs []imgspecv1.Descriptor) error {
	ix, err := ckpt.PodIndex(rec, descs)
	if err != nil {
		return err
	}
	ref, err := layout.NewReference(pp.tmp, tag)
	if err != nil {
		return err
	}
	dest, err := ref.NewImageDestination(ctx, nil)
	if err != nil {
		return err
	}
	defer dest.Close()
	if err := dest.PutManifest(ctx, ix, nil); err != nil {
		return err
	}
	return dest.Commit(ctx, nil)
}

// podRecord is what the target needs to make the pod again, as its
// inspect data says.
func podRecord(p *podman.Pod) *ckpt.Pod {
	rec := &ckpt.Pod{Name: p.Name, ID: p.ID, Hostname: p.Hostname, Labels: p.Labels,
		Shared: slices.Clone(p.SharedNamespaces), InfraID: p.InfraContainerID,
		CgroupParent: p.CgroupParent, CPUPeriod: p.CPUPeriod, CPUQuota: p.CPUQuota,
		CPUSetCPUs: p.CPUSetCPUs, MemoryLimit: p.MemoryLimit}
	slices.Sort(rec.Shared)
	for _, m := range p.Containers {
		if m.ID == p.InfraContainerID {
			rec.InfraName = m.Name
		}
	}
	if ic := p.InfraConfig; ic != nil {
		rec.HostNetwork, rec.Networks = ic.HostNetwork, ic.Networks
		rec.DNSServer, rec.DNSSearch, rec.DNSOption = ic.DNSServer, ic.DNSSearch, ic.DNSOption
		rec.NoManageResolvConf, rec.NoManageHosts, rec.HostAdd = ic.NoManageResolvConf, ic.NoManageHosts, ic.HostAdd
		for port, binds := range ic.PortBindings {
			num, proto, _ := strings.Cut(port, "/")
			cport, err := strconv.ParseUint(num, 10, 16)
			if err != nil {
				continue
			}
			for _, b := range binds {
				hport, err := strconv.ParseUint(cmp.Or(b.HostPort, num), 10, 16)
				if err != nil {
					continue
				}
				rec.Ports = append(rec.Ports, ckpt.PodPort{HostIP: b.HostIP, HostPort: uint16(hport), ContainerPort: uint16(cport), Protocol: cmp.Or(proto, "tcp")})
			}
		}
		slices.SortFunc(rec.Ports, func(a, b ckpt.PodPort) int {
			return cmp.Or(cmp.Compare(a.ContainerPort, b.ContainerPort), strings.Compare(a.Protocol, b.Protocol), cmp.Compare(a.HostPort, b.HostPort))
		})
	}
	return rec
}

// encryptedTag names the encrypted copy of the pod's index in the
// staging layout.
const encryptedTag = "pod/encrypted"

// encrypt, with --encryption-key, encrypts every member into the staging
// layout first: encryption gives each member a new digest, which the
// pod's record names, so the record is written again for the encrypted
// members before anything is uploaded (or signed).
func (pp *podPushing) encrypt(ctx context.Context) error {
	if pp.o.Transfer.Encrypt == nil {
		return nil
	}
	start := time.Now()
	fmt.Fprintf(pp.log, "Encrypting the members of %s\n", pp.what())
	plain, err := layout.NewReference(pp.tmp, podTag)
	if err != nil {
		return err
	}
	enc, err := layout.NewReference(pp.tmp, encryptedTag)
	if err != nil {
		return err
	}
	topts := pp.o.Transfer
	topts.AllImages, topts.Sent, topts.Report = true, nil, nil
	topts.SignBySigstoreKey, topts.SignPassphrase = "", nil
	topts.BlobInfoCacheDir = pp.tmp
	if _, err := transfer.Copy(ctx, "encrypting", enc, plain, topts); err != nil {
		return err
	}
	src, err := enc.NewImageSource(ctx, nil)
	if err != nil {
		return err
	}
	raw, _, err := src.GetManifest(ctx, nil)
	src.Close()
	if err != nil {
		return err
	}
	var ix imgspecv1.Index
	if err := json.Unmarshal(raw, &ix); err != nil {
		return fmt.Errorf("reading the encrypted index: %w", err)
	}
	if len(ix.Manifests) != len(pp.rec.Members) {
		return fmt.Errorf("the encrypted index lists %d images for %d members", len(ix.Manifests), len(pp.rec.Members))
	}
	rec := *pp.rec
	rec.Members = slices.Clone(pp.rec.Members)
	var descs []imgspecv1.Descriptor
	for i, d := range ix.Manifests {
		// copy.Image keeps the instances in order.
		if d.Annotations[ckpt.AnnPodMember] != rec.Members[i].Name {
			return fmt.Errorf("the encrypted index lists %q where member %q was", d.Annotations[ckpt.AnnPodMember], rec.Members[i].Name)
		}
		rec.Members[i].Digest = d.Digest
		descs = append(descs, imgspecv1.Descriptor{Digest: d.Digest, Size: d.Size, Platform: d.Platform})
	}
	if err := pp.writeIndex(ctx, encryptedTag, &rec, descs); err != nil {
		return err
	}
	pp.rec = &rec
	pp.res.Seconds["encrypt"] = since(start)
	return nil
}

// upload copies the index and every member's image to DEST.
func (pp *podPushing) upload(ctx context.Context) error {
	start := time.Now()
	fmt.Fprintf(pp.log, "Copying the pod's images to %s\n", transfer.Display(pp.dest))
	tag := podTag
	if pp.o.Transfer.Encrypt != nil {
		tag = encryptedTag // encrypt wrote it
	}
	staged, err := layout.NewReference(pp.tmp, tag)
	if err != nil {
		return err
	}
	topts := pp.o.Transfer
	topts.AllImages, topts.Sent = true, &transfer.Blobs{}
	topts.Encrypt, topts.EncryptLayers = nil, nil // done (encrypt)
	d, err := transfer.Copy(ctx, "pushing", pp.dest, staged, topts)
	if err != nil {
		return err
	}
	pp.res.Seconds["upload"] = since(start)
	pp.res.Reference, pp.res.Digest = transfer.Display(pp.dest), d.String()
	for i, m := range pp.members {
		d := pp.rec.Members[i].Digest
		m.reportLayers(topts.Sent)
		m.res.Reference, m.res.Digest = transfer.WithDigest(pp.dest, d), d.String()
		pp.res.Members = append(pp.res.Members, m.res)
	}
	return nil
}

// rollback is a pod push's one way back: frozen members are thawed, and
// every member podman checkpointed is restored from its kept checkpoint,
// even if ctx was cancelled.
func (pp *podPushing) rollback(ctx context.Context, cause error) error {
	if (pp.pod == nil && pp.group == nil) || (len(pp.frozen) == 0 && !pp.anyAnswered()) {
		return cause
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackBound)
	defer cancel()
	perr := &PodPushError{Pod: pp.what(), Err: cause, Stuck: map[string]error{}}
	for _, ctr := range pp.frozen {
		if err := pp.c.FreezeContainer(rctx, ctr, false); err != nil {
			perr.Stuck[ctr.Name] = fmt.Errorf("thawing it: %w", err)
		}
	}
	for _, m := range pp.members {
		name := m.src.Container.Name
		if _, stuck := perr.Stuck[name]; stuck {
			continue
		}
		if !m.answered {
			if slices.Contains(pp.frozen, m.src.Container) {
				perr.Thawed = append(perr.Thawed, name)
			}
			continue
		}
		var merr *export.PushError
		if !errors.As(m.rollback(rctx, cause), &merr) {
			continue
		}
		switch {
		case merr.RolledBack:
			perr.Restored = append(perr.Restored, name)
		case merr.NotStopped, merr.LeftRunning:
			perr.Thawed = append(perr.Thawed, name)
		default:
			perr.Stuck[name] = merr.RollbackErr
		}
	}
	pp.frozen = nil
	return perr
}

func (pp *podPushing) anyAnswered() bool {
	return slices.ContainsFunc(pp.members, func(m *pushing) bool { return m.answered })
}
