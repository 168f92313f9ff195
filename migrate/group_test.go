package migrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/bindings/podmantest"
	"github.com/podman-migrate/podman-migrate/export"
	restore "github.com/podman-migrate/podman-migrate/import"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
	"github.com/podman-migrate/podman-migrate/internal/fault"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// groupSource is a fake podman, on this machine, running "srv" and "cli",
// which joins srv's network namespace (--network container:srv); each
// one's checkpoint says so in its config.dump.
func groupSource(t *testing.T) *podmantest.Fake { return groupSourceJoining(t, "net") }

// groupSourceJoining is groupSource with cli joining srv's namespaces ns.
func groupSourceJoining(t *testing.T, ns ...string) *podmantest.Fake {
	f := podmantest.NewFake("", baseID, nil)
	f.Local = true
	f.Archives = map[string][]byte{}
	srvID := ""
	for _, n := range []string{"srv", "cli"} {
		c := &podman.Container{ID: strings.Repeat(n[:1], 64), Name: n, Image: baseID}
		c.State.Running, c.State.Status, c.State.CgroupPath = true, "running", "/machine.slice/libpod-"+c.ID+".scope"
		if n == "cli" {
			c.Dependencies = []string{srvID}
			modes := map[string]*string{"net": &c.HostConfig.NetworkMode, "ipc": &c.HostConfig.IpcMode, "pid": &c.HostConfig.PidMode, "uts": &c.HostConfig.UTSMode}
			for _, s := range ns {
				*modes[s] = "container:" + srvID
			}
		} else {
			srvID = c.ID
		}
		f.Containers[n] = c
		var entries []ckpttest.Entry
		for _, e := range ckpttest.ArchiveWithoutVolumes(t) {
			if e.Name == "config.dump" {
				e.Body = ckpttest.EditJSON(t, e.Body, func(m map[string]any) {
					m["name"], m["id"] = n, c.ID
					if n == "cli" {
						for _, s := range ns {
							m[s+"NsCtr"] = srvID
						}
					}
				})
			}
			entries = append(entries, e)
		}
		f.Archives[n] = ckpttest.Tar(t, entries)
	}
	return f
}

var groupNames = []string{"cli", "srv"} // as a user may name them: dependent first

func groupPushOpts(t *testing.T) export.PushOptions {
	o := podPushOpts(t)
	o.Container, o.Dest = "", strings.TrimSuffix(o.Dest, ":web")+":srv"
	return o
}

func TestGroupPushAndPullWithFakes(t *testing.T) {
	src := groupSource(t)
	o := groupPushOpts(t)
	res, err := PushGroup(context.Background(), src, o, groupNames)
	if err != nil {
		t.Fatal(err)
	}
	calls := src.Calls()
	firstDump := slices.Index(calls, "Checkpoint")
	if n := strings.Count(strings.Join(calls[:firstDump], " "), "FreezeContainer"); n != 2 {
		t.Fatalf("%d freezes before the first checkpoint, want 2: %v", n, calls)
	}
	// Killed while frozen, then thawed: never running again here.
	last := len(calls) - 1 - slices.Index(reversed(calls), "FreezeContainer")
	if k := slices.Index(calls, "KillContainer"); k < 0 || k > last {
		t.Fatalf("the members were not killed before the thaw: %v", calls)
	}
	for _, n := range groupNames {
		if src.Frozen[n] || src.Running(n) {
			t.Fatalf("member %s after the push: frozen %t, running %t", n, src.Frozen[n], src.Running(n))
		}
	}
	if res.Pod != "srv" || len(res.Members) != 2 || res.Members[0].Container != "srv" || res.Members[1].Container != "cli" {
		t.Fatalf("push result %+v: want srv first, then cli, which joins it", res)
	}

	_, err = restore.Inspect(context.Background(), o.Dest, transfer.Options{}, ckpt.Limits{})
	var ix *ckpt.IndexError
	if !errors.As(err, &ix) {
		t.Fatalf("inspect of a group's index: %v", err)
	}
	desc, err := restore.InspectPod(context.Background(), o.Dest, ix, transfer.Options{}, ckpt.Limits{})
	if err != nil || !desc.Pod.Group || desc.Pod.Name != "srv" || len(desc.Pod.Members) != 2 ||
		desc.Pod.Members[1].Joins["net"] != "srv" || len(desc.Pod.Members[0].Joins) != 0 {
		t.Fatalf("inspect of the group: %+v, %v", desc, err)
	}

	dst := target()
	_, err = Pull(context.Background(), dst, restore.PullOptions{Source: o.Dest, TmpDir: t.TempDir()})
	if !errors.As(err, &ix) {
		t.Fatalf("pull of a group's index: %v", err)
	}
	pulled, err := PullPod(context.Background(), dst, restore.PullOptions{Source: o.Dest, TmpDir: t.TempDir(), Publish: []string{"9090:8080"}}, ix)
	if err != nil {
		t.Fatal(err)
	}
	if !pulled.Group || pulled.Pod != "srv" || len(pulled.Members) != 2 || len(dst.Pods) != 0 || dst.Count("CreatePod") != 0 {
		t.Fatalf("pull result %+v, pods on the target %v", pulled, dst.Pods)
	}
	srv, err := dst.InspectContainer(context.Background(), "srv")
	if err != nil || !srv.State.Running || !dst.Running("cli") {
		t.Fatalf("the members on the target: %+v, %v, cli running %t", srv, err, dst.Running("cli"))
	}
	// cli joins srv as restored here: its ID and its process's namespace.
	var cfg map[string]any
	if err := json.Unmarshal(dst.Restored["cli"].Config, &cfg); err != nil || cfg["netNsCtr"] != srv.ID {
		t.Fatalf("cli's config.dump joins %v, want the new srv %s (%v)", cfg["netNsCtr"], srv.ID, err)
	}
	wantPath := fmt.Sprintf("/proc/%d/ns/net", srv.State.Pid)
	if netnsPath(t, dst.Restored["cli"].Spec) != wantPath {
		t.Fatalf("cli's spec.dump joins %q, want %q", netnsPath(t, dst.Restored["cli"].Spec), wantPath)
	}
	if p := netnsPath(t, dst.Restored["srv"].Spec); strings.HasPrefix(p, "/proc/") {
		t.Fatalf("srv's spec.dump joins %q, want a namespace of its own", p)
	}
}

// netnsPath is the network namespace's path in a spec.dump.
func netnsPath(t *testing.T, spec []byte) string { return nsPath(t, spec, "network") }

// nsPath is the path of namespace typ ("network", "ipc") in a spec.dump.
func nsPath(t *testing.T, spec []byte, typ string) string {
	t.Helper()
	var s struct {
		Linux struct {
			Namespaces []struct{ Type, Path string }
		}
	}
	if err := json.Unmarshal(spec, &s); err != nil {
		t.Fatal(err)
	}
	for _, ns := range s.Linux.Namespaces {
		if ns.Type == typ {
			return ns.Path
		}
	}
	return ""
}

// TestGroupJoinsIPCAndUTS: a member joining another's IPC and UTS
// namespaces, not its network, moves with it: the record says so, and
// the pull points config.dump and spec.dump at the restored peer's.
func TestGroupJoinsIPCAndUTS(t *testing.T) {
	src := groupSourceJoining(t, "ipc", "uts")
	o := groupPushOpts(t)
	res, err := PushGroup(context.Background(), src, o, groupNames)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Members) != 2 || res.Members[0].Container != "srv" {
		t.Fatalf("push result %+v: want srv first", res)
	}
	dst := target()
	_, err = Pull(context.Background(), dst, restore.PullOptions{Source: o.Dest, TmpDir: t.TempDir()})
	var ix *ckpt.IndexError
	if !errors.As(err, &ix) {
		t.Fatalf("pull of a group's index: %v", err)
	}
	if _, err := PullPod(context.Background(), dst, restore.PullOptions{Source: o.Dest, TmpDir: t.TempDir()}, ix); err != nil {
		t.Fatal(err)
	}
	srv, err := dst.InspectContainer(context.Background(), "srv")
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(dst.Restored["cli"].Config, &cfg); err != nil || cfg["ipcNsCtr"] != srv.ID || cfg["utsNsCtr"] != srv.ID || cfg["netNsCtr"] != nil {
		t.Fatalf("cli's config.dump joins ipc %v, uts %v, net %v; want the new srv %s for ipc and uts (%v)", cfg["ipcNsCtr"], cfg["utsNsCtr"], cfg["netNsCtr"], srv.ID, err)
	}
	for _, typ := range []string{"ipc", "uts"} {
		if got, want := nsPath(t, dst.Restored["cli"].Spec, typ), fmt.Sprintf("/proc/%d/ns/%s", srv.State.Pid, typ); got != want {
			t.Fatalf("cli's spec.dump joins %s %q, want %q", typ, got, want)
		}
	}
	if p := netnsPath(t, dst.Restored["cli"].Spec); strings.HasPrefix(p, "/proc/") {
		t.Fatalf("cli's spec.dump joins network %q, want its own", p)
	}
}

// TestGroupPushWaitsForCleanup: push returns once podman's cleanup made
// the killed members "exited"; a cleanup slower than the bound is not an
// error once the processes are gone.
func TestGroupPushWaitsForCleanup(t *testing.T) {
	src := groupSource(t)
	src.KillLeaves = 3
	if _, err := PushGroup(context.Background(), src, groupPushOpts(t), groupNames); err != nil {
		t.Fatal(err)
	}
	for _, n := range groupNames {
		if c, err := src.InspectContainer(context.Background(), n); err != nil || c.State.Status != "exited" {
			t.Fatalf("member %s after the push: %s, %v; want exited (calls %v)", n, c.State.Status, err, src.Calls())
		}
	}
	defer func(w time.Duration) { exitWait = w }(exitWait)
	exitWait = 0
	src = groupSource(t)
	src.KillLeaves = 1 << 30
	if _, err := PushGroup(context.Background(), src, groupPushOpts(t), groupNames); err != nil {
		t.Fatalf("a member stopped but not cleaned up: %v", err)
	}
}

// inFlightLog is what CRIU 4.2.1 logged (dump.log, as runc asked for it)
// when a member's listening socket held a connection not yet accepted.
var inFlightLog = []string{
	"inet: In-flight connection (l) for b70c7",
	"inet: In-flight connections can be ignored with the --skip-in-flight option.",
	"Dump files (pid: 8657) failed with -1",
	"Dumping FAILED.",
}

// TestGroupPushRetriesInFlight: a dump CRIU refused for a connection in
// flight is tried again, as a new push once the members run again, and
// the error after the last try says what CRIU said.
func TestGroupPushRetriesInFlight(t *testing.T) {
	src := groupSource(t)
	src.DumpLogs = map[string][]string{"srv": inFlightLog}
	src.Fail = map[string]error{"Checkpoint": errors.New("runc checkpoint failed: exit status 1")}
	var log strings.Builder
	o := groupPushOpts(t)
	o.Log = &log
	_, err := PushGroup(context.Background(), src, o, groupNames)
	if !errors.Is(err, ErrInFlight) || !strings.Contains(err.Error(), "CRIU: inet: In-flight connection (l) for b70c7") ||
		!strings.Contains(fault.HintOf(err), "push again") {
		t.Fatalf("error %v (hint %q), want ErrInFlight with CRIU's words and a hint", err, fault.HintOf(err))
	}
	if n := src.Count("Checkpoint"); n != inFlightTries {
		t.Fatalf("%d dumps, want %d", n, inFlightTries)
	}
	if !strings.Contains(log.String(), "trying again (3 of 3)") {
		t.Errorf("log %q does not say it tries again", log.String())
	}
	for _, n := range groupNames {
		if src.Frozen[n] || !src.Running(n) || src.Count("KillContainer") > 0 {
			t.Fatalf("member %s after the failed push: frozen %t, running %t; calls %v", n, src.Frozen[n], src.Running(n), src.Calls())
		}
	}

	// Busy only once: the second push goes through.
	src = groupSource(t)
	src.DumpLogs = map[string][]string{"srv": inFlightLog}
	src.Fail = map[string]error{"Checkpoint": errors.New("runc checkpoint failed: exit status 1")}
	inspects := 0
	beforePhase = func(op, name string) error {
		if op == "push group" && name == "inspect" {
			if inspects++; inspects == 2 {
				delete(src.Fail, "Checkpoint")
			}
		}
		return nil
	}
	t.Cleanup(func() { beforePhase = nil })
	if _, err := PushGroup(context.Background(), src, groupPushOpts(t), groupNames); err != nil {
		t.Fatalf("the second try: %v", err)
	}

	// Any other dump failure is not tried again, and says what CRIU said.
	beforePhase = nil
	src = groupSource(t)
	src.DumpLogs = map[string][]string{"srv": {"Can't dump half of stream unix connection."}}
	src.Fail = map[string]error{"Checkpoint": errors.New("runc checkpoint failed: exit status 1")}
	_, err = PushGroup(context.Background(), src, groupPushOpts(t), groupNames)
	if err == nil || errors.Is(err, ErrInFlight) || src.Count("Checkpoint") != 1 || !strings.Contains(err.Error(), "(CRIU: Can't dump half of stream unix connection.)") {
		t.Fatalf("error %v after %d dumps, want one dump and CRIU's words", err, src.Count("Checkpoint"))
	}
}

// TestGroupPushFailsAtEachPhase: whatever fails, the members were only
// frozen (dumped leaving them running): they are thawed, never killed and
// never restored from a checkpoint.
func TestGroupPushFailsAtEachPhase(t *testing.T) {
	phases := phasesOf(t, "push group", func() {
		if _, err := PushGroup(context.Background(), groupSource(t), groupPushOpts(t), groupNames); err != nil {
			t.Fatal(err)
		}
	})
	if !slices.Equal(phases, []string{"inspect", "preflight", "stage", "base", "freeze", "connections", "checkpoint", "index", "encrypt", "upload"}) {
		t.Fatalf("a group's push phases are %v", phases)
	}
	check := func(t *testing.T, src *podmantest.Fake, err error) {
		t.Helper()
		if !errors.Is(err, errInjected) {
			t.Fatalf("error %v, want the injected failure", err)
		}
		if src.Count("KillContainer") != 0 || src.Count("RestoreKept") != 0 {
			t.Fatalf("a failed group push killed or restored members: %v", src.Calls())
		}
		for _, n := range groupNames {
			if src.Frozen[n] || !src.Running(n) {
				t.Fatalf("member %s after a failed push: frozen %t, running %t: %v", n, src.Frozen[n], src.Running(n), err)
			}
		}
		if src.Count("FreezeContainer") > 0 && !strings.Contains(err.Error(), `group "cli, srv" runs again on this host`) {
			t.Fatalf("error %q does not say the group runs on", err)
		}
	}
	for _, name := range phases {
		t.Run(name, func(t *testing.T) {
			src := groupSource(t)
			failAt(t, "push group", name, errInjected)
			_, err := PushGroup(context.Background(), src, groupPushOpts(t), groupNames)
			check(t, src, err)
		})
	}
	t.Run("second member's dump refused", func(t *testing.T) {
		src := groupSource(t)
		failNth(t, "push member", "checkpoint", 2, errInjected)
		_, err := PushGroup(context.Background(), src, groupPushOpts(t), groupNames)
		check(t, src, err)
	})
}

func TestGroupPushRefuses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		names []string
		setup func(*podmantest.Fake)
		is    error
		want  string
	}{
		{"a member left out", []string{"cli"}, nil, export.ErrDependency, `push cli srv DEST`},
		{"two network namespaces", []string{"srv", "other"}, func(f *podmantest.Fake) {
			c := &podman.Container{ID: strings.Repeat("o", 64), Name: "other"}
			c.State.Running, c.State.Status = true, "running"
			f.Containers["other"] = c
		}, ErrGroup, "2 of them join no other's namespaces"},
		{"requires another", []string{"srv", "cli", "db"}, func(f *podmantest.Fake) {
			c := &podman.Container{ID: strings.Repeat("d", 64), Name: "db", Dependencies: []string{f.Containers["srv"].ID}}
			c.State.Running, c.State.Status = true, "running"
			f.Containers["db"] = c
		}, export.ErrDependency, "only joined namespaces move with a group"},
		{"a pod member", groupNames, func(f *podmantest.Fake) { f.Containers["srv"].Pod = "p0d" }, ErrGroup, "push the pod instead"},
		{"named twice", []string{"srv", "cli", "srv"}, nil, nil, "named twice"},
		{"a remote service", groupNames, func(f *podmantest.Fake) { f.Local = false }, nil, "needs the podman service on this machine"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := groupSource(t)
			if tc.setup != nil {
				tc.setup(src)
			}
			_, err := PushGroup(context.Background(), src, groupPushOpts(t), tc.names)
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) || !strings.Contains(err.Error()+fault.HintOf(err), tc.want) {
				t.Fatalf("error %v, want %v naming %q", err, tc.is, tc.want)
			}
			if src.Count("FreezeContainer") != 0 || src.Count("Checkpoint") != 0 {
				t.Fatalf("a refused push touched the group: %v", src.Calls())
			}
		})
	}
}

// TestGroupPullFails: a failed restore removes what the pull made, the
// joined member before the one it joins; --name is refused.
func TestGroupPullFails(t *testing.T) {
	o := groupPushOpts(t)
	if _, err := PushGroup(context.Background(), groupSource(t), o, groupNames); err != nil {
		t.Fatal(err)
	}
	pull := func(dst *podmantest.Fake, po restore.PullOptions) error {
		po.Source, po.TmpDir = o.Dest, t.TempDir()
		_, err := Pull(context.Background(), dst, po)
		var ix *ckpt.IndexError
		if !errors.As(err, &ix) {
			t.Fatalf("pull of a group's index: %v", err)
		}
		_, err = PullPod(context.Background(), dst, po, ix)
		return err
	}
	dst := target()
	failNth(t, "pull member", "restore", 2, errInjected)
	err := pull(dst, restore.PullOptions{})
	if !errors.Is(err, errInjected) || !strings.Contains(err.Error(), `member "cli"`) || !strings.Contains(err.Error(), `group of srv, made by the pull, was removed again`) {
		t.Fatalf("a failed member restore: %v", err)
	}
	if len(dst.Containers) != 0 || dst.Count("RemovePod") != 0 {
		t.Fatalf("the target keeps %v (calls %v)", dst.Containers, dst.Calls())
	}
	beforePhase = nil
	dst = target()
	if err := pull(dst, restore.PullOptions{Name: "x"}); fault.KindOf(err) != fault.Usage || dst.Count("RestoreImport") != 0 {
		t.Fatalf("--name on a group: %v (kind %s)", err, fault.KindOf(err))
	}
}

// TestMoveGroup: a group moves as one unit, named in any order among
// other containers; a target that fails leaves it thawed on the source.
func TestMoveGroup(t *testing.T) {
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	units, err := groupUnits(context.Background(), groupSource(t), []string{"cli", "lone", "srv"})
	if err != nil || !slices.Equal(units, []string{"cli srv", "lone"}) {
		t.Fatalf("units %q, %v", units, err)
	}
	for _, tc := range []struct {
		name  string
		via   string
		fail  string
		moved bool
	}{
		{"direct", "", "", true},
		{"through a registry", strings.TrimPrefix(reg.URL, "http://") + "/groups", "", true},
		{"a member's restore fails", "", "RestoreImport", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, dst := groupSource(t), target()
			if tc.fail != "" {
				dst.Fail[tc.fail] = errInjected
			}
			o := MoveOptions{Containers: groupNames, Via: tc.via, Push: groupPushOpts(t), Pull: restore.PullOptions{TmpDir: t.TempDir()}}
			plain := transfer.Options{TLSVerify: transfer.TLSVerify(true, false), Retries: -1}
			o.Push.Dest, o.Push.Transfer, o.Pull.Transfer = "", plain, plain
			var got []MoveResult
			err := Move(context.Background(), src, dst, o, func(r MoveResult) { got = append(got, r) })
			if tc.moved {
				if err != nil || len(got) != 1 || got[0].PodPulled == nil || got[0].Name != "srv" || got[0].Downtime <= 0 ||
					(tc.via != "") != strings.HasPrefix(got[0].Digest, "sha256:") {
					t.Fatalf("move: %v, %+v", err, got)
				}
				for _, n := range groupNames {
					if !dst.Running(n) || src.Running(n) || src.Frozen[n] {
						t.Fatalf("member %s: on the target %t, on the source %t (frozen %t)", n, dst.Running(n), src.Running(n), src.Frozen[n])
					}
				}
				return
			}
			var me *MoveError
			if !errors.As(err, &me) || !me.Group || !me.Resumed || fault.SideOf(err) != fault.Target ||
				!strings.Contains(err.Error(), "was only frozen on the source host, and runs on there") {
				t.Fatalf("error %v, want the target's, the group thawed", err)
			}
			if len(dst.Containers) != 0 || src.Count("KillContainer") != 0 || src.Count("RestoreKept") != 0 {
				t.Fatalf("target keeps %v; source calls %v", dst.Containers, src.Calls())
			}
			for _, n := range groupNames {
				if !src.Running(n) || src.Frozen[n] {
					t.Fatalf("member %s on the source: running %t, frozen %t", n, src.Running(n), src.Frozen[n])
				}
			}
		})
	}
}

func reversed(s []string) []string {
	r := slices.Clone(s)
	slices.Reverse(r)
	return r
}
