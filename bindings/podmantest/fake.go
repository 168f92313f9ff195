package podmantest

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"

	"github.com/containers/storage/pkg/archive"

	podman "github.com/podman-migrate/podman-migrate/bindings"
)

// Fake is an in-memory podman service: it implements podman.Source and
// podman.Target, records each call by method name, and fails any method
// the test names in Fail. Its containers live in Containers by name;
// Checkpoint returns Archive, RestoreImport reads the archive to its end
// and creates the container config.dump names.
type Fake struct {
	mu         sync.Mutex
	Containers map[string]*podman.Container
	Images     map[string]*podman.Image
	Volumes    map[string]bool
	Networks   map[string]*podman.Network
	InfoValue  podman.Info
	// Archive is the checkpoint archive Checkpoint returns; Archives,
	// when it has the container's name, replaces it for that container.
	Archive  []byte
	Archives map[string][]byte
	// Fail makes the named method fail with the error; "Checkpoint:NAME"
	// fails the checkpoint of container NAME only.
	Fail map[string]error
	// DumpLogs are the CRIU error lines DumpErrors gives, by container
	// name.
	DumpLogs map[string][]string
	// KillLeaves is how many inspections a killed container reads
	// "stopped" before podman's cleanup makes it "exited".
	KillLeaves int
	cleanups   map[string]int
	// KeepOnFailure: a failed RestoreImport leaves its container behind,
	// as podman 4.3.1 does (state Created).
	KeepOnFailure bool
	// OnLoad is the image LoadImage adds, if any.
	OnLoad *podman.Image
	// RestoredAs is how the last archive came: "tar" or "tar.zst".
	RestoredAs string
	// Addr is the service's URI Address gives; "" is fake://podman.
	Addr string
	// RestoredConfig is the config.dump of the last archive RestoreImport
	// read; Restored holds each archive's config.dump and spec.dump by the
	// name of the container it made.
	RestoredConfig []byte
	Restored       map[string]Dumps
	// InfoGate, when set, holds Info's answer until it is closed.
	InfoGate chan struct{}
	// Reading, when set, is closed as RestoreImport starts to read (once).
	Reading chan struct{}
	// Pods live here by name; a container's Pod field is its pod's ID.
	Pods map[string]*podman.Pod
	// PodSpecs are the specs CreatePod was given.
	PodSpecs []podman.PodSpec
	// Frozen is whether each container is frozen now (FreezeContainer).
	Frozen map[string]bool
	// Conns are each container's established TCP connections, each
	// container in a namespace of its own.
	Conns map[string][]podman.TCPConn
	// Memory is each container's memory use, by name (none: no figure).
	Memory map[string]uint64
	// Local makes the fake's service count as on this machine (ServicePID
	// answers), as a pod's push needs; Root is then its root directory
	// (ServiceRoot; "" is /proc/1/root).
	Local bool
	Root  string
	// RestoredWith are the options of each RestoreImport, by the name of
	// the container it made; OnRestore, when set, runs as each starts.
	RestoredWith map[string]podman.RestoreOptions
	OnRestore    func(o podman.RestoreOptions)
	calls        []string
}

// NewFake is a fake podman with one running container, name, of image
// imageID, whose checkpoint is archive.
func NewFake(name, imageID string, archive []byte) *Fake {
	f := &Fake{
		Containers: map[string]*podman.Container{},
		Images:     map[string]*podman.Image{imageID: {ID: imageID}},
		Volumes:    map[string]bool{},
		Networks:   map[string]*podman.Network{},
		Archive:    archive,
		Fail:       map[string]error{},
		Pods:       map[string]*podman.Pod{},
		Frozen:     map[string]bool{},
	}
	f.InfoValue.Host.Arch = "amd64"
	f.InfoValue.Version.Version = "4.3.1"
	if name != "" {
		ctr := &podman.Container{ID: fakeID(name), Name: name, Image: imageID}
		ctr.State.Running, ctr.State.Status = true, "running"
		f.Containers[name] = ctr
	}
	return f
}

func fakeID(name string) string {
	return fmt.Sprintf("%064x", []byte(name + strings.Repeat("\x00", 32))[:32])
}

// call records method and returns the failure the test asked for.
func (f *Fake) call(method string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, method)
	return f.Fail[method]
}

// Count is how often method was called.
func (f *Fake) Count(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c == method {
			n++
		}
	}
	return n
}

// Calls are the methods called, in order.
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// Running says whether container name exists and runs.
func (f *Fake) Running(name string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.find(name)
	return c != nil && c.State.Running
}

func (f *Fake) find(nameOrID string) *podman.Container {
	if c, ok := f.Containers[nameOrID]; ok {
		return c
	}
	for _, c := range f.Containers {
		if c.ID == nameOrID {
			return c
		}
	}
	return nil
}

func notFound(what string) error {
	return &podman.Error{Op: "inspecting " + what, Status: 404, Err: podman.ErrNotFound}
}

// Info implements podman.Inspector.
func (f *Fake) Info(ctx context.Context) (*podman.Info, error) {
	if f.InfoGate != nil {
		select {
		case <-f.InfoGate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err := f.call("Info"); err != nil {
		return nil, err
	}
	i := f.InfoValue
	return &i, nil
}

// InspectContainer implements podman.Inspector.
func (f *Fake) InspectContainer(_ context.Context, nameOrID string) (*podman.Container, error) {
	if err := f.call("InspectContainer"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.find(nameOrID)
	if c == nil {
		return nil, notFound(nameOrID)
	}
	if n, ok := f.cleanups[c.ID]; ok {
		f.cleanups[c.ID] = n - 1
		if n <= 0 {
			c.State.Status = "exited"
			delete(f.cleanups, c.ID)
		}
	}
	cp := *c
	return &cp, nil
}

// ContainerExists implements podman.Inspector.
func (f *Fake) ContainerExists(_ context.Context, nameOrID string) (bool, error) {
	if err := f.call("ContainerExists"); err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.find(nameOrID) != nil, nil
}

// InspectImage implements podman.Inspector.
func (f *Fake) InspectImage(_ context.Context, nameOrID string) (*podman.Image, error) {
	return lookupIn(f, "InspectImage", f.Images, nameOrID)
}

// InspectNetwork implements podman.Inspector.
func (f *Fake) InspectNetwork(_ context.Context, name string) (*podman.Network, error) {
	return lookupIn(f, "InspectNetwork", f.Networks, name)
}

// lookupIn records method and returns a copy of m[key], or podman's not
// found, unless the test made method fail.
func lookupIn[V any](f *Fake, method string, m map[string]*V, key string) (*V, error) {
	if err := f.call(method); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := m[key]
	if !ok {
		return nil, notFound(key)
	}
	cp := *v
	return &cp, nil
}

// VolumeExists implements podman.Inspector.
func (f *Fake) VolumeExists(_ context.Context, name string) (bool, error) {
	if err := f.call("VolumeExists"); err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.Volumes[name], nil
}

// MemoryUsage implements podman.Inspector: Memory's figure for the
// container (by name), else none, as a service without cgroup statistics.
func (f *Fake) MemoryUsage(_ context.Context, nameOrID string) (uint64, error) {
	if err := f.call("MemoryUsage"); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.find(nameOrID); c != nil {
		if m, ok := f.Memory[c.Name]; ok {
			return m, nil
		}
	}
	return 0, errors.New("no statistics")
}

// CRIUVersion implements podman.Inspector: unknown, as for a remote host.
func (f *Fake) CRIUVersion(context.Context) string {
	_ = f.call("CRIUVersion")
	return ""
}

// Checkpoint implements podman.Checkpointer: the container stops (unless
// o.LeaveRunning) and its archive is f.Archive.
func (f *Fake) Checkpoint(_ context.Context, nameOrID string, o podman.CheckpointOptions) (io.ReadCloser, error) {
	if err := f.call("Checkpoint"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.find(nameOrID)
	if c == nil {
		return nil, notFound(nameOrID)
	}
	if err := f.Fail["Checkpoint:"+c.Name]; err != nil { // this container's only
		return nil, err
	}
	if o.Joined && (len(c.Peers()) == 0 || !o.LeaveRunning) {
		return nil, fmt.Errorf("checkpoint of %s: joined, but joins %v, leave running %t", nameOrID, c.Peers(), o.LeaveRunning)
	}
	if !o.LeaveRunning {
		c.State.Running, c.State.Status = false, "exited"
	}
	if a, ok := f.Archives[c.Name]; ok {
		return io.NopCloser(bytes.NewReader(a)), nil
	}
	return io.NopCloser(bytes.NewReader(f.Archive)), nil
}

// KillContainer implements podman.PodSource: the container stops, and
// reads "stopped" for KillLeaves inspections.
func (f *Fake) KillContainer(_ context.Context, nameOrID string) error {
	if err := f.setRunning("KillContainer", nameOrID, false); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.find(nameOrID); c != nil && f.KillLeaves > 0 {
		if f.cleanups == nil {
			f.cleanups = map[string]int{}
		}
		c.State.Status, f.cleanups[c.ID] = "stopped", f.KillLeaves
	}
	return nil
}

// RestoreKept implements podman.Checkpointer: the container runs again.
func (f *Fake) RestoreKept(_ context.Context, nameOrID string, _ podman.CheckpointOptions) error {
	return f.setRunning("RestoreKept", nameOrID, true)
}

// DumpErrors implements podman.PodSource.
func (f *Fake) DumpErrors(_ context.Context, nameOrID string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.find(nameOrID); c != nil {
		return f.DumpLogs[c.Name]
	}
	return nil
}

// setRunning is a call that starts or stops a container.
func (f *Fake) setRunning(op, nameOrID string, running bool) error {
	if err := f.call(op); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.find(nameOrID)
	if c == nil {
		return notFound(nameOrID)
	}
	c.State.Running, c.State.Status = running, "exited"
	if running {
		c.State.Status = "running"
	}
	return nil
}

// SaveImage implements podman.Checkpointer.
func (f *Fake) SaveImage(context.Context, string) (io.ReadCloser, error) {
	if err := f.call("SaveImage"); err != nil {
		return nil, err
	}
	return nil, errors.New("the fake saves no images")
}

// RestoreImport implements podman.Restorer: it reads the archive to its
// end and creates the running container config.dump (or o.Name) names.
func (f *Fake) RestoreImport(_ context.Context, body io.Reader, o podman.RestoreOptions) (string, error) {
	br := bufio.NewReader(body)
	head, _ := br.Peek(10)
	f.mu.Lock()
	if f.Reading != nil {
		close(f.Reading)
		f.Reading = nil
	}
	f.mu.Unlock()
	c := archive.DetectCompression(head)
	kind := c.Extension()
	name, dumps, rerr := nameInArchive(br)
	cfg := dumps.Config
	if o.Name != "" {
		name = o.Name
	}
	if f.OnRestore != nil {
		f.OnRestore(o)
	}
	err := f.call("RestoreImport")
	if err == nil && rerr != nil {
		err = &podman.Error{Op: "restoring", Status: 500, Err: rerr}
	}
	if err != nil && !f.KeepOnFailure {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.RestoredConfig, f.RestoredAs = cfg, kind
	ctr := &podman.Container{ID: fakeID(name), Name: name, Pod: o.Pod}
	if o.Pod != "" && f.findPod(o.Pod) == nil {
		return "", &podman.Error{Op: "restoring", Status: 404, Err: podman.ErrNotFound}
	}
	ctr.State.Running, ctr.State.Status = err == nil, map[bool]string{true: "running", false: "created"}[err == nil]
	if err == nil {
		ctr.State.Pid = 1000 + len(f.Containers)
	}
	f.Containers[name] = ctr
	if f.Restored == nil {
		f.Restored = map[string]Dumps{}
	}
	f.Restored[name] = dumps
	if f.RestoredWith == nil {
		f.RestoredWith = map[string]podman.RestoreOptions{}
	}
	f.RestoredWith[name] = o
	return ctr.ID, err
}

// Dumps are the container's configuration files in a checkpoint archive.
type Dumps struct{ Config, Spec []byte }

// nameInArchive reads a checkpoint archive to its end and returns the
// container name its config.dump records, and its dumps.
func nameInArchive(r io.Reader) (string, Dumps, error) {
	var d Dumps
	// As podman's import does: the storage library detects compression.
	dr, err := archive.DecompressStream(r)
	if err != nil {
		return "", d, err
	}
	defer dr.Close()
	tr := tar.NewReader(dr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", d, err
		}
		var into *[]byte
		switch path.Clean(h.Name) {
		case "config.dump":
			into = &d.Config
		case "spec.dump":
			into = &d.Spec
		default:
			continue
		}
		if *into, err = io.ReadAll(io.LimitReader(tr, 16<<20)); err != nil {
			return "", d, err
		}
	}
	var c struct{ Name string }
	if err := json.Unmarshal(d.Config, &c); err != nil || c.Name == "" {
		return "", d, errors.New("the archive has no config.dump naming the container")
	}
	return c.Name, d, nil
}

// LoadImage implements podman.Restorer: it reads the archive and adds
// OnLoad to Images.
func (f *Fake) LoadImage(_ context.Context, archive io.Reader) ([]string, error) {
	if err := f.call("LoadImage"); err != nil {
		return nil, err
	}
	if _, err := io.Copy(io.Discard, archive); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.OnLoad == nil {
		return []string{"sha256:" + strings.Repeat("0", 64)}, nil
	}
	f.Images[f.OnLoad.ID] = f.OnLoad
	return []string{"sha256:" + f.OnLoad.ID}, nil
}

// TagImage implements podman.Restorer.
func (f *Fake) TagImage(context.Context, string, string, string) error {
	return f.call("TagImage")
}

// RemoveContainer implements podman.Remover.
func (f *Fake) RemoveContainer(_ context.Context, nameOrID string) error {
	if err := f.call("RemoveContainer"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.find(nameOrID)
	if c == nil {
		return notFound(nameOrID)
	}
	delete(f.Containers, c.Name)
	return nil
}

// RemoveVolume implements podman.Remover.
func (f *Fake) RemoveVolume(_ context.Context, name string) error {
	return removeFrom(f, "RemoveVolume", f.Volumes, name)
}

// RemoveImage implements podman.Remover.
func (f *Fake) RemoveImage(_ context.Context, nameOrID string) error {
	return removeFrom(f, "RemoveImage", f.Images, nameOrID)
}

// removeFrom records method and deletes key from m, unless the test made
// method fail.
func removeFrom[V any](f *Fake, method string, m map[string]V, key string) error {
	if err := f.call(method); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(m, key)
	return nil
}

// ServicePID implements podman.Host: the fake is on this machine only
// when Local, as PID 1.
func (f *Fake) ServicePID() (int, error) {
	if f.Local {
		return 1, nil
	}
	return 0, podman.ErrRemote
}

// ServiceRoot implements podman.Host: Root, or /proc/1/root, when Local.
func (f *Fake) ServiceRoot() (string, error) {
	if !f.Local {
		return "", podman.ErrRemote
	}
	if f.Root != "" {
		return f.Root, nil
	}
	return "/proc/1/root", nil
}

// EndStuckCRIU implements podman.Host.
func (f *Fake) EndStuckCRIU(string, string) ([]int, error) {
	_ = f.call("EndStuckCRIU")
	return nil, podman.ErrRemote
}

// RestoringID implements podman.Host.
func (f *Fake) RestoringID(string) (string, error) { return "", podman.ErrRemote }

// Address implements podman.Host.
func (f *Fake) Address() string {
	if f.Addr != "" {
		return f.Addr
	}
	return "fake://podman"
}

// AddPod adds a running pod with an infra container and the named
// running members, and returns the pod.
func (f *Fake) AddPod(name string, members ...string) *podman.Pod {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := &podman.Pod{ID: fakeID("pod " + name), Name: name, State: "Running", SharedNamespaces: []string{"net", "uts", "ipc"}}
	infra := &podman.Container{ID: fakeID(name + "-infra"), Name: name + "-infra", Pod: p.ID, IsInfra: true}
	infra.State.Running, infra.State.Status = true, "running"
	f.Containers[infra.Name], p.InfraContainerID = infra, infra.ID
	for _, m := range members {
		c := &podman.Container{ID: fakeID(m), Name: m, Pod: p.ID, Dependencies: []string{infra.ID}}
		c.State.Running, c.State.Status, c.State.CgroupPath = true, "running", "/libpod_parent/"+p.ID+"/"+m
		f.Containers[m] = c
	}
	f.Pods[name] = p
	return p
}

func (f *Fake) findPod(nameOrID string) *podman.Pod {
	if p, ok := f.Pods[nameOrID]; ok {
		return p
	}
	for _, p := range f.Pods {
		if p.ID == nameOrID {
			return p
		}
	}
	return nil
}

// InspectPod implements podman.PodSource: the pod with its containers.
func (f *Fake) InspectPod(_ context.Context, nameOrID string) (*podman.Pod, error) {
	if err := f.call("InspectPod"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.findPod(nameOrID)
	if p == nil {
		return nil, notFound("pod " + nameOrID)
	}
	cp := *p
	cp.Containers = nil
	for _, c := range f.Containers {
		if c.Pod == p.ID {
			cp.Containers = append(cp.Containers, struct {
				ID    string `json:"Id"`
				Name  string `json:"Name"`
				State string `json:"State"`
			}{c.ID, c.Name, c.State.Status})
		}
	}
	return &cp, nil
}

// PodExists implements podman.PodSource and podman.PodTarget.
func (f *Fake) PodExists(_ context.Context, nameOrID string) (bool, error) {
	if err := f.call("PodExists"); err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.findPod(nameOrID) != nil, nil
}

// FreezeContainer implements podman.PodSource.
func (f *Fake) FreezeContainer(_ context.Context, ctr *podman.Container, frozen bool) error {
	if err := f.call("FreezeContainer"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.Frozen[ctr.Name] = frozen
	return nil
}

// TCPConnections implements podman.PodSource.
func (f *Fake) TCPConnections(ctr *podman.Container) ([]podman.TCPConn, string, error) {
	if err := f.call("TCPConnections"); err != nil {
		return nil, "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.Conns[ctr.Name], "net:" + ctr.Name, nil
}

// CreatePod implements podman.PodTarget: a pod with its infra container,
// not started.
func (f *Fake) CreatePod(_ context.Context, spec podman.PodSpec) (string, error) {
	if err := f.call("CreatePod"); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.findPod(spec.Name) != nil {
		return "", &podman.Error{Op: "creating pod", Status: 409, Err: errors.New("pod exists")}
	}
	p := &podman.Pod{ID: fakeID("pod " + spec.Name), Name: spec.Name, State: "Created", SharedNamespaces: spec.SharedNamespaces}
	infra := &podman.Container{ID: fakeID(spec.Name + "-infra"), Name: spec.Name + "-infra", Pod: p.ID, IsInfra: true}
	f.Containers[infra.Name], p.InfraContainerID = infra, infra.ID
	f.Pods[spec.Name] = p
	f.PodSpecs = append(f.PodSpecs, spec)
	return p.ID, nil
}

// StartPod implements podman.PodTarget.
func (f *Fake) StartPod(_ context.Context, nameOrID string) error {
	if err := f.call("StartPod"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.findPod(nameOrID)
	if p == nil {
		return notFound("pod " + nameOrID)
	}
	p.State = "Running"
	for _, c := range f.Containers {
		if c.Pod == p.ID && c.ID == p.InfraContainerID {
			c.State.Running, c.State.Status = true, "running"
		}
	}
	return nil
}

// RemovePod implements podman.PodTarget: the pod and all its containers.
func (f *Fake) RemovePod(_ context.Context, nameOrID string) error {
	if err := f.call("RemovePod"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.findPod(nameOrID)
	if p == nil {
		return notFound("pod " + nameOrID)
	}
	for n, c := range f.Containers {
		if c.Pod == p.ID {
			delete(f.Containers, n)
		}
	}
	delete(f.Pods, p.Name)
	return nil
}

var (
	_ podman.Source    = (*Fake)(nil)
	_ podman.Target    = (*Fake)(nil)
	_ podman.PodSource = (*Fake)(nil)
	_ podman.PodTarget = (*Fake)(nil)
)

// StandIn is a client of a fake libpod whose host is played by the test:
// its EndStuckCRIU and RestoringID, when set, replace the client's.
type StandIn struct {
	*podman.Client
	End       func(ctrID, op string) ([]int, error)
	Restoring func(name string) (string, error)
}

// EndStuckCRIU implements podman.Host.
func (s StandIn) EndStuckCRIU(ctrID, op string) ([]int, error) {
	if s.End != nil {
		return s.End(ctrID, op)
	}
	return s.Client.EndStuckCRIU(ctrID, op)
}

// RestoringID implements podman.Host.
func (s StandIn) RestoringID(name string) (string, error) {
	if s.Restoring != nil {
		return s.Restoring(name)
	}
	return s.Client.RestoringID(name)
}
