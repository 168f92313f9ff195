package migrate

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	encutils "github.com/containers/ocicrypt/utils"
	"github.com/google/go-containerregistry/pkg/registry"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/bindings/podmantest"
	"github.com/podman-migrate/podman-migrate/export"
	restore "github.com/podman-migrate/podman-migrate/import"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
	"github.com/podman-migrate/podman-migrate/internal/fault"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

var podMembers = []string{"web-a", "web-b"}

// podSource is a fake podman, on this machine, running pod "web" of two
// members whose checkpoints record the pod (edit changes config.dump
// further).
func podSource(t *testing.T, edit func(map[string]any)) *podmantest.Fake {
	f := podmantest.NewFake("", baseID, nil)
	f.Local = true
	p := f.AddPod("web", podMembers...)
	var entries []ckpttest.Entry
	for _, e := range ckpttest.ArchiveWithoutVolumes(t) {
		if e.Name == "config.dump" {
			e.Body = ckpttest.EditJSON(t, e.Body, func(m map[string]any) {
				m["pod"], m["netNsCtr"], m["ipcNsCtr"] = p.ID, p.InfraContainerID, p.InfraContainerID
				if edit != nil {
					edit(m)
				}
			})
		}
		entries = append(entries, e)
	}
	f.Archive = ckpttest.Tar(t, entries)
	return f
}

func podPushOpts(t *testing.T) export.PushOptions {
	o := pushOpts(t)
	o.Container, o.Dest = "web", "oci:"+filepath.Join(t.TempDir(), "layout")+":web"
	return o
}

// failNth makes phase name of op fail with err the nth time it runs.
func failNth(t *testing.T, op, name string, n int, err error) {
	t.Helper()
	seen := 0
	beforePhase = func(o, ph string) error {
		if o == op && ph == name {
			if seen++; seen == n {
				return err
			}
		}
		return nil
	}
	t.Cleanup(func() { beforePhase = nil })
}

// pushedPod pushes pod web from src and returns the index's reference.
func pushedPod(t *testing.T, src *podmantest.Fake) string {
	t.Helper()
	o := podPushOpts(t)
	if _, err := PushPod(context.Background(), src, o); err != nil {
		t.Fatal(err)
	}
	return o.Dest
}

// pullPod pulls ref as the CLI does: a pull that finds a pod's index
// pulls the pod.
func pullPod(t *testing.T, dst *podmantest.Fake, o restore.PullOptions) (*PodPullResult, error) {
	t.Helper()
	_, err := Pull(context.Background(), dst, o)
	var ix *ckpt.IndexError
	if !errors.As(err, &ix) || !ckpt.IsPodIndex(ix.MediaType, ix.Manifest) {
		t.Fatalf("pull of a pod's index: %v, want a pod's IndexError", err)
	}
	return PullPod(context.Background(), dst, o, ix)
}

func TestPodPushAndPullWithFakes(t *testing.T) {
	src := podSource(t, nil)
	src.Pods["web"].Hostname = "web-host"
	o := podPushOpts(t)
	res, err := PushPod(context.Background(), src, o)
	if err != nil {
		t.Fatal(err)
	}
	// Every member frozen before the first dump, all thawed after.
	calls := src.Calls()
	firstDump := slices.Index(calls, "Checkpoint")
	if n := strings.Count(strings.Join(calls[:firstDump], " "), "FreezeContainer"); n != len(podMembers) {
		t.Fatalf("%d freezes before the first checkpoint, want %d: %v", n, len(podMembers), calls)
	}
	for _, m := range podMembers {
		if src.Frozen[m] || src.Running(m) {
			t.Fatalf("member %s after the push: frozen %t, running %t", m, src.Frozen[m], src.Running(m))
		}
	}
	if res.Pod != "web" || len(res.Members) != 2 || res.Members[0].Container != "web-a" || !strings.HasPrefix(res.Digest, "sha256:") {
		t.Fatalf("push result %+v", res)
	}

	// inspect shows the pod and each member.
	_, err = restore.Inspect(context.Background(), o.Dest, transfer.Options{}, ckpt.Limits{})
	var ix *ckpt.IndexError
	if !errors.As(err, &ix) {
		t.Fatalf("inspect of a pod's index: %v", err)
	}
	desc, err := restore.InspectPod(context.Background(), o.Dest, ix, transfer.Options{}, ckpt.Limits{})
	if err != nil || desc.Pod.Name != "web" || desc.Pod.Hostname != "web-host" || len(desc.Members) != 2 ||
		desc.Members[1].Digest != res.Members[1].Digest || desc.Digest != res.Digest || !desc.Members[0].Options.TCPEstablished {
		t.Fatalf("inspect of the pod: %+v, %v", desc, err)
	}

	dst := target()
	pulled, err := pullPod(t, dst, restore.PullOptions{Source: o.Dest, TmpDir: t.TempDir(), Publish: []string{"9090:8080"}})
	if err != nil {
		t.Fatal(err)
	}
	pod := dst.Pods["web"]
	if pod == nil || pulled.ID != pod.ID || len(pulled.Members) != 2 || pulled.Digest != res.Digest {
		t.Fatalf("pull result %+v, pods on the target %v", pulled, dst.Pods)
	}
	spec := dst.PodSpecs[0]
	if spec.Hostname != "web-host" || !slices.Equal(spec.SharedNamespaces, []string{"ipc", "net", "uts"}) ||
		len(spec.PortMappings) != 1 || spec.PortMappings[0] != (podman.PortMapping{HostPort: 9090, ContainerPort: 8080, Protocol: "tcp"}) {
		t.Fatalf("pod spec %+v", spec)
	}
	for _, m := range podMembers {
		ctr, err := dst.InspectContainer(context.Background(), m)
		if err != nil || !ctr.State.Running || ctr.Pod != pod.ID {
			t.Fatalf("member %s on the target: %+v, %v", m, ctr, err)
		}
	}
}

// TestPodPushFailsAtEachPhase: before the freeze the pod is untouched;
// after it, every member runs again: thawed, or restored from its kept
// checkpoint exactly once.
func TestPodPushFailsAtEachPhase(t *testing.T) {
	phases := phasesOf(t, "push pod", func() {
		if _, err := PushPod(context.Background(), podSource(t, nil), podPushOpts(t)); err != nil {
			t.Fatal(err)
		}
	})
	if !slices.Equal(phases, []string{"inspect", "preflight", "stage", "base", "freeze", "connections", "checkpoint", "index", "encrypt", "upload"}) {
		t.Fatalf("a pod's push phases are %v", phases)
	}
	restoredAfter := map[string]int{"index": 2, "encrypt": 2, "upload": 2}
	for _, name := range phases {
		t.Run(name, func(t *testing.T) {
			src := podSource(t, nil)
			failAt(t, "push pod", name, fault.Wrap(fault.Registry, errInjected))
			_, err := PushPod(context.Background(), src, podPushOpts(t))
			checkPodPushFailed(t, src, err, restoredAfter[name])
		})
	}
	// Within the checkpoint phase, member by member.
	for _, tc := range []struct {
		name     string
		op, ph   string
		nth      int
		restored int
	}{
		{"first member's dump refused", "push member", "checkpoint", 1, 0},
		{"second member's dump refused", "push member", "checkpoint", 2, 1},
		{"second member's build fails", "push member", "build", 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := podSource(t, nil)
			failNth(t, tc.op, tc.ph, tc.nth, fault.Wrap(fault.Registry, errInjected))
			_, err := PushPod(context.Background(), src, podPushOpts(t))
			checkPodPushFailed(t, src, err, tc.restored)
		})
	}
}

func checkPodPushFailed(t *testing.T, src *podmantest.Fake, err error, restored int) {
	t.Helper()
	if !errors.Is(err, errInjected) || fault.KindOf(err) != fault.Registry {
		t.Fatalf("error %v (kind %s), want the injected registry failure", err, fault.KindOf(err))
	}
	if n := src.Count("RestoreKept"); n != restored {
		t.Fatalf("restored %d members, want %d: %v", n, restored, err)
	}
	for _, m := range podMembers {
		if src.Frozen[m] || !src.Running(m) {
			t.Fatalf("member %s after a failed push: frozen %t, running %t: %v", m, src.Frozen[m], src.Running(m), err)
		}
	}
	var perr *PodPushError
	if froze := src.Count("FreezeContainer") > 0; froze != errors.As(err, &perr) {
		t.Fatalf("froze %t, but the error %v is a PodPushError: %t", froze, err, !froze)
	}
	if perr != nil && !strings.Contains(err.Error(), `pod "web" runs again on this host`) {
		t.Fatalf("error %q does not say the pod runs again", err)
	}
}

// TestPodPushConnections: connections over the pod's loopback move with
// it; one to a peer outside refuses the push, naming it, and the pod runs
// on, thawed and never dumped.
func TestPodPushConnections(t *testing.T) {
	conn := func(local, remote string) podman.TCPConn {
		return podman.TCPConn{Local: netip.MustParseAddrPort(local), Remote: netip.MustParseAddrPort(remote)}
	}
	src := podSource(t, nil)
	src.Conns = map[string][]podman.TCPConn{"web-a": {conn("127.0.0.1:8080", "127.0.0.1:40000"), conn("[::1]:8080", "[::1]:40001")}}
	if _, err := PushPod(context.Background(), src, podPushOpts(t)); err != nil {
		t.Fatalf("loopback connections: %v", err)
	}
	src = podSource(t, nil)
	src.Conns = map[string][]podman.TCPConn{"web-b": {conn("127.0.0.1:8080", "127.0.0.1:40000"), conn("10.88.0.5:8080", "10.88.0.1:41922")}}
	_, err := PushPod(context.Background(), src, podPushOpts(t))
	if !errors.Is(err, ErrOutsideConnection) || fault.KindOf(err) != fault.Input || !strings.Contains(err.Error(), `member "web-b" holds 10.88.0.5:8080 <-> 10.88.0.1:41922`) {
		t.Fatalf("an outside connection: %v", err)
	}
	for _, m := range podMembers {
		if src.Frozen[m] || !src.Running(m) || src.Count("Checkpoint") != 0 {
			t.Fatalf("member %s after the refusal: frozen %t, running %t, %d checkpoints", m, src.Frozen[m], src.Running(m), src.Count("Checkpoint"))
		}
	}

	// --tcp-close lets it through; every member's image says so, and a
	// pull closes each member's connections.
	src.Conns = map[string][]podman.TCPConn{"web-b": {conn("10.88.0.5:8080", "10.88.0.1:41922")}}
	o := podPushOpts(t)
	o.TCPClose = true
	var log strings.Builder
	o.Log = &log
	if _, err := PushPod(context.Background(), src, o); err != nil {
		t.Fatalf("--tcp-close: %v", err)
	}
	if !strings.Contains(log.String(), `member "web-b" holds 10.88.0.5:8080 <-> 10.88.0.1:41922, a connection to a peer outside the pod: it is closed on restore (--tcp-close)`) {
		t.Fatalf("the log does not name the connection:\n%s", log.String())
	}
	dst := target()
	dst.InfoValue.Version.Version = "5.7.0"
	if _, err := pullPod(t, dst, restore.PullOptions{Source: o.Dest, TmpDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	for _, m := range podMembers {
		if ro := dst.RestoredWith[m]; !ro.TCPClose || !ro.TCPEstablished {
			t.Fatalf("member %s restored with %+v", m, ro)
		}
	}
}

// TestPodPushRetriesInFlight: the second member's dump refused for a
// connection in flight: the first is restored from its kept checkpoint,
// and the pod is pushed again, as a new push, up to the bound.
func TestPodPushRetriesInFlight(t *testing.T) {
	src := podSource(t, nil)
	src.DumpLogs = map[string][]string{"web-b": {"inet: In-flight connection (l) for b70c7", "Dumping FAILED."}}
	src.Fail = map[string]error{"Checkpoint:web-b": errors.New("runc checkpoint failed: exit status 1")}
	_, err := PushPod(context.Background(), src, podPushOpts(t))
	if !errors.Is(err, ErrInFlight) || fault.KindOf(err) != fault.Podman {
		t.Fatalf("error %v (kind %s), want ErrInFlight", err, fault.KindOf(err))
	}
	if n, r := src.Count("Checkpoint"), src.Count("RestoreKept"); n != 2*inFlightTries || r != inFlightTries {
		t.Fatalf("%d dumps and %d restores, want %d and %d", n, r, 2*inFlightTries, inFlightTries)
	}
	for _, m := range podMembers {
		if src.Frozen[m] || !src.Running(m) {
			t.Fatalf("member %s: frozen %t, running %t", m, src.Frozen[m], src.Running(m))
		}
	}
}

func TestPodPushRefuses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(*podmantest.Fake, *export.PushOptions)
		kind  fault.Kind
		want  string
	}{
		{"--include-base to a layout", func(_ *podmantest.Fake, o *export.PushOptions) { o.IncludeBase = true }, fault.Input, "--include-base needs a registry destination"},
		{"--include-base, the base not saved", func(_ *podmantest.Fake, o *export.PushOptions) {
			o.IncludeBase, o.Dest = true, strings.TrimPrefix(httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0)))).URL, "http://")+"/pods/web:v1"
			o.Transfer.TLSVerify, o.Transfer.Retries = transfer.TLSVerify(true, false), -1
		}, fault.Unknown, `including the base image of member "web-a": the fake saves no images; pod "web" was not touched`},
		{"a remote service", func(f *podmantest.Fake, _ *export.PushOptions) { f.Local = false }, fault.Usage, "needs the podman service on this machine"},
		{"no member but infra", func(f *podmantest.Fake, _ *export.PushOptions) {
			for _, m := range podMembers {
				delete(f.Containers, m)
			}
		}, fault.Input, "no containers but its infra"},
		{"a member not running", func(f *podmantest.Fake, _ *export.PushOptions) {
			f.Containers["web-b"].State.Running, f.Containers["web-b"].State.Status = false, "exited"
		}, fault.Input, `member "web-b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := podSource(t, nil)
			o := podPushOpts(t)
			tc.setup(src, &o)
			_, err := PushPod(context.Background(), src, o)
			if err == nil || fault.KindOf(err) != tc.kind || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v (kind %s), want %s naming %q", err, fault.KindOf(err), tc.kind, tc.want)
			}
			if src.Count("FreezeContainer") != 0 || src.Count("Checkpoint") != 0 {
				t.Fatalf("a refused push touched the pod: %v", src.Calls())
			}
		})
	}
}

// TestPodPullFailsAtEachPhase: whatever fails, the target keeps no pod
// and no container of the pull.
func TestPodPullFailsAtEachPhase(t *testing.T) {
	ref := pushedPod(t, podSource(t, nil))
	opts := func() restore.PullOptions { return restore.PullOptions{Source: ref, TmpDir: t.TempDir()} }
	phases := phasesOf(t, "pull pod", func() {
		if _, err := pullPod(t, target(), opts()); err != nil {
			t.Fatal(err)
		}
	})
	if !slices.Equal(phases, []string{"plan", "check", "pod", "restore"}) {
		t.Fatalf("a pod's pull phases are %v", phases)
	}
	check := func(t *testing.T, dst *podmantest.Fake, err error) {
		t.Helper()
		if !errors.Is(err, errInjected) {
			t.Fatalf("error %v, want the injected failure", err)
		}
		if len(dst.Pods) != 0 || len(dst.Containers) != 0 {
			t.Fatalf("a failed pull left pods %v and containers %v", dst.Pods, dst.Containers)
		}
	}
	for _, name := range phases {
		t.Run(name, func(t *testing.T) {
			dst := target()
			failAt(t, "pull pod", name, errInjected)
			_, err := pullPod(t, dst, opts())
			check(t, dst, err)
		})
	}
	t.Run("second member's restore fails", func(t *testing.T) {
		dst := target()
		failNth(t, "pull member", "restore", 2, errInjected)
		_, err := pullPod(t, dst, opts())
		check(t, dst, err)
		if !strings.Contains(err.Error(), `member "web-b"`) || !strings.Contains(err.Error(), "was removed again") {
			t.Fatalf("error %q names neither the member nor the pod's removal", err)
		}
	})
	t.Run("the pod does not start", func(t *testing.T) {
		dst := target()
		dst.Fail["StartPod"] = errInjected
		_, err := pullPod(t, dst, opts())
		check(t, dst, err)
	})
}

func TestPodPullRefuses(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(map[string]any) // the members' config.dump
		setup func(*podmantest.Fake, *restore.PullOptions)
		is    error
	}{
		{"pod name taken", nil, func(f *podmantest.Fake, _ *restore.PullOptions) { f.AddPod("web") }, restore.ErrBlocked},
		{"member name taken", nil, func(f *podmantest.Fake, _ *restore.PullOptions) {
			f.Containers["web-b"] = &podman.Container{ID: "x", Name: "web-b"}
		}, restore.ErrBlocked},
		{"--pod", nil, func(_ *podmantest.Fake, o *restore.PullOptions) { o.Pod = "other" }, nil},
		{"a member joins a container outside the pod", func(m map[string]any) { m["pidNsCtr"] = strings.Repeat("e", 64) }, nil, tarsafe.ErrUnsafe},
		{"a member of another pod", func(m map[string]any) { m["pod"] = strings.Repeat("f", 64) }, nil, tarsafe.ErrUnsafe},
		{"a bad --publish", nil, func(_ *podmantest.Fake, o *restore.PullOptions) { o.Publish = []string{"80-90:80"} }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ref := pushedPod(t, podSource(t, tc.edit))
			dst := target()
			o := restore.PullOptions{Source: ref, TmpDir: t.TempDir()}
			if tc.setup != nil {
				tc.setup(dst, &o)
			}
			before := len(dst.Containers)
			pods := len(dst.Pods)
			_, err := pullPod(t, dst, o)
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("error %v, want %v", err, tc.is)
			}
			if dst.Count("CreatePod") != 0 || dst.Count("RestoreImport") != 0 || len(dst.Containers) != before || len(dst.Pods) != pods {
				t.Fatalf("a refused pull made something: %v", dst.Calls())
			}
		})
	}
}

func TestParsePublish(t *testing.T) {
	for in, want := range map[string]ckpt.PodPort{
		"8080":                {ContainerPort: 8080, Protocol: "tcp"},
		"9090:8080":           {HostPort: 9090, ContainerPort: 8080, Protocol: "tcp"},
		"127.0.0.1:9090:8080": {HostIP: "127.0.0.1", HostPort: 9090, ContainerPort: 8080, Protocol: "tcp"},
		"127.0.0.1::53/udp":   {HostIP: "127.0.0.1", ContainerPort: 53, Protocol: "udp"},
		"[::1]:9090:8080":     {HostIP: "::1", HostPort: 9090, ContainerPort: 8080, Protocol: "tcp"},
	} {
		got, err := parsePublish(in)
		if err != nil || got != want {
			t.Errorf("parsePublish(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "x:80", "80:x", "70000:80", "80/icmp", "80-90:80", "nohost:80:80"} {
		if _, err := parsePublish(in); err == nil {
			t.Errorf("parsePublish(%q) accepted", in)
		}
	}
}

func TestPodSpec(t *testing.T) {
	rec := &ckpt.Pod{Name: "web", Shared: []string{"ipc", "net"}, Networks: []string{"appnet"},
		Ports: []ckpt.PodPort{{HostPort: 80, ContainerPort: 8080, Protocol: "tcp"}}, CgroupParent: "/libpod_parent",
		MemoryLimit: 64 << 20, CPUSetCPUs: "0"}
	spec, err := podSpec(rec, restore.PullOptions{Name: "web2", NetworkMap: []string{"appnet=prodnet"}})
	if err != nil {
		t.Fatal(err)
	}
	if spec.Name != "web2" || spec.CgroupParent != "" || spec.Networks["prodnet"] == nil || len(spec.Networks) != 1 ||
		spec.NetNS.NSMode != "bridge" || spec.PortMappings[0].HostPort != 80 || spec.ResourceLimits["memory"] == nil {
		t.Fatalf("spec %+v", spec)
	}
	rec.HostNetwork = true
	if spec, _ = podSpec(rec, restore.PullOptions{}); spec.NetNS.NSMode != "host" || spec.Networks != nil {
		t.Fatalf("a host-network pod's spec %+v", spec)
	}
}

// TestMovePod: move takes a pod's name, with or without a registry; a
// pod the target cannot make runs again on the source, every member
// restored from its kept checkpoint.
func TestMovePod(t *testing.T) {
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	for _, tc := range []struct {
		name  string
		via   string
		fail  string // a method of the target's podman that fails
		moved bool
	}{
		{"direct", "", "", true},
		{"through a registry", strings.TrimPrefix(reg.URL, "http://") + "/pods", "", true},
		{"the target's pod does not start", "", "StartPod", false},
		{"a member's restore fails", "", "RestoreImport", false},
		{"a member's restore fails, through a registry", strings.TrimPrefix(reg.URL, "http://") + "/pods", "RestoreImport", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, dst := podSource(t, nil), target()
			if tc.fail != "" {
				dst.Fail[tc.fail] = errInjected
			}
			o := MoveOptions{Containers: []string{"web"}, Via: tc.via, Push: podPushOpts(t), Pull: restore.PullOptions{TmpDir: t.TempDir()}}
			plain := transfer.Options{TLSVerify: transfer.TLSVerify(true, false), Retries: -1}
			o.Push.Dest, o.Push.Transfer, o.Pull.Transfer = "", plain, plain
			var got []MoveResult
			err := Move(context.Background(), src, dst, o, func(r MoveResult) { got = append(got, r) })
			if tc.moved {
				if err != nil || len(got) != 1 || got[0].PodPulled == nil || got[0].ID != dst.Pods["web"].ID || got[0].Downtime <= 0 ||
					(tc.via != "") != strings.HasPrefix(got[0].Digest, "sha256:") {
					t.Fatalf("move: %v, %+v", err, got)
				}
				for _, m := range podMembers {
					if !dst.Running(m) || src.Running(m) {
						t.Fatalf("member %s: on the target %t, on the source %t", m, dst.Running(m), src.Running(m))
					}
				}
				return
			}
			var me *MoveError
			if !errors.As(err, &me) || !me.Pod || !me.Resumed || fault.SideOf(err) != fault.Target {
				t.Fatalf("error %v, want the target's, the pod resumed", err)
			}
			if len(dst.Pods) != 0 || len(dst.Containers) != 0 || src.Count("RestoreKept") != 2 {
				t.Fatalf("target keeps %v %v; source restored %d members", dst.Pods, dst.Containers, src.Count("RestoreKept"))
			}
			for _, m := range podMembers {
				if !src.Running(m) {
					t.Fatalf("member %s does not run on the source again", m)
				}
			}
		})
	}
}

// TestPlanPodPull: --dry-run plans the pod and every member, making
// nothing; a member's blocker blocks the pod's plan, named.
func TestPlanPodPull(t *testing.T) {
	ref := pushedPod(t, podSource(t, nil))
	for _, taken := range []bool{false, true} {
		dst := target()
		if taken {
			dst.Containers["web-b"] = &podman.Container{ID: "x", Name: "web-b"}
		}
		_, err := Pull(context.Background(), dst, restore.PullOptions{Source: ref, TmpDir: t.TempDir()})
		var ix *ckpt.IndexError
		if !errors.As(err, &ix) {
			t.Fatal(err)
		}
		plan, err := PlanPodPull(context.Background(), dst, restore.PullOptions{Source: ref, Publish: []string{"8081:8080"}}, ix)
		if err != nil {
			t.Fatal(err)
		}
		if plan.Pod.Name != "web" || len(plan.Members) != 2 || plan.Pod.PortMappings[0].HostPort != 8081 || dst.Count("CreatePod") != 0 {
			t.Fatalf("plan %+v", plan)
		}
		perr := plan.Err()
		if taken != (perr != nil) || (taken && !strings.Contains(perr.Error(), "member web-b:")) {
			t.Fatalf("name taken %t: plan error %v", taken, perr)
		}
		var b strings.Builder
		plan.Print(&b)
		if !strings.Contains(b.String(), "Member web-a:") || !strings.Contains(b.String(), ":8081 -> 8080/tcp") {
			t.Fatalf("printed plan:\n%s", b.String())
		}
	}
}

// TestPushRefusesDependencies: a container that joins another's
// namespaces is refused before any downtime, naming the other; a pod
// member's dependency on its infra container is not one.
func TestPushRefusesDependencies(t *testing.T) {
	src := source(t)
	db := &podman.Container{ID: strings.Repeat("d", 64), Name: "db"}
	db.State.Running = true
	src.Containers["db"] = db
	src.Containers[fixture].Dependencies = []string{db.ID}
	_, err := Push(context.Background(), src, pushOpts(t))
	if !errors.Is(err, export.ErrDependency) || fault.KindOf(err) != fault.Input || !strings.Contains(err.Error(), `"fixture" needs "db"`) {
		t.Fatalf("push of a dependent container: %v", err)
	}
	if src.Count("Checkpoint") != 0 || !src.Running(fixture) {
		t.Fatalf("a refused push touched the container: %v", src.Calls())
	}
	pod := podSource(t, nil)
	o := pushOpts(t)
	o.Container = "web-a"
	if _, err := Push(context.Background(), pod, o); err != nil {
		t.Fatalf("push of a pod member, which needs only its infra container: %v", err)
	}
}

// TestPodPushLeaveRunning: --leave-running copies a pod: its members run
// on, thawed, and a failure restores none (none stopped).
func TestPodPushLeaveRunning(t *testing.T) {
	src := podSource(t, nil)
	o := podPushOpts(t)
	o.LeaveRunning = true
	if _, err := PushPod(context.Background(), src, o); err != nil {
		t.Fatal(err)
	}
	for _, m := range podMembers {
		if src.Frozen[m] || !src.Running(m) {
			t.Fatalf("member %s after a copy: frozen %t, running %t", m, src.Frozen[m], src.Running(m))
		}
	}
	src = podSource(t, nil)
	failAt(t, "push pod", "upload", errInjected)
	_, err := PushPod(context.Background(), src, o)
	var perr *PodPushError
	if !errors.As(err, &perr) || len(perr.Thawed) != 2 || src.Count("RestoreKept") != 0 {
		t.Fatalf("a failed copy: %v (%+v), %d restores", err, perr, src.Count("RestoreKept"))
	}
	for _, m := range podMembers {
		if src.Frozen[m] || !src.Running(m) {
			t.Fatalf("member %s after a failed copy: frozen %t, running %t", m, src.Frozen[m], src.Running(m))
		}
	}
}

// TestPodPushStagingRoom: the staging directory must hold every member's
// memory together; a pod that does not fit is refused before the freeze,
// naming its members.
func TestPodPushStagingRoom(t *testing.T) {
	src := podSource(t, nil)
	src.Memory = map[string]uint64{"web-a": 1 << 61, "web-b": 1 << 61}
	_, err := PushPod(context.Background(), src, podPushOpts(t))
	if !errors.Is(err, export.ErrStagingTooSmall) || !strings.Contains(err.Error(), `containers "web-a", "web-b" were not touched`) || !strings.Contains(err.Error(), "4EiB") {
		t.Fatalf("a pod too large for staging: %v", err)
	}
	if src.Count("FreezeContainer") != 0 {
		t.Fatalf("a refused push froze the pod: %v", src.Calls())
	}
	src = podSource(t, nil)
	src.Memory = map[string]uint64{"web-a": 1 << 20}
	if _, err := PushPod(context.Background(), src, podPushOpts(t)); err != nil {
		t.Fatalf("a pod that fits: %v", err)
	}
}

// TestPodPushEncrypted: --encryption-key encrypts every member, and the
// pod's record names the encrypted members' digests, as the index does:
// a pull without the key is refused, with it the pod is restored, each
// member checked against the record.
func TestPodPushEncrypted(t *testing.T) {
	dir := t.TempDir()
	pubPEM, privPEM, err := encutils.CreateRSATestKey(2048, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	pub, priv := filepath.Join(dir, "k.pub.pem"), filepath.Join(dir, "k.pem")
	if err := os.WriteFile(pub, pubPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(priv, privPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	src := podSource(t, nil)
	o := podPushOpts(t)
	if o.Transfer.Encrypt, err = transfer.EncryptionConfig([]string{"jwe:" + pub}); err != nil {
		t.Fatal(err)
	}
	res, err := PushPod(context.Background(), src, o)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := transfer.ParseReference(o.Dest)
	if err != nil {
		t.Fatal(err)
	}
	is, err := ref.NewImageSource(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, _, err := is.GetManifest(context.Background(), nil)
	is.Close()
	if err != nil {
		t.Fatal(err)
	}
	rec, err := ckpt.ReadPodIndex(raw)
	if err != nil {
		t.Fatalf("the pushed index: %v", err)
	}
	for i, m := range rec.Members {
		if m.Digest.String() != res.Members[i].Digest {
			t.Fatalf("member %s: the record says %s, push reported %s", m.Name, m.Digest, res.Members[i].Digest)
		}
		mis, err := ref.NewImageSource(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		mraw, _, err := mis.GetManifest(context.Background(), &m.Digest)
		mis.Close()
		if err != nil || !strings.Contains(string(mraw), "+encrypted") {
			t.Fatalf("member %s's manifest is not encrypted (%v): %s", m.Name, err, mraw)
		}
	}

	if _, err := pullPod(t, target(), restore.PullOptions{Source: o.Dest, TmpDir: t.TempDir()}); err == nil {
		t.Fatal("pulled an encrypted pod without the key")
	}
	dst := target()
	po := restore.PullOptions{Source: o.Dest, TmpDir: t.TempDir()}
	if po.Transfer.Decrypt, err = transfer.DecryptionConfig([]string{priv}); err != nil {
		t.Fatal(err)
	}
	if _, err := pullPod(t, dst, po); err != nil {
		t.Fatal(err)
	}
	for _, m := range podMembers {
		if !dst.Running(m) {
			t.Fatalf("member %s not restored", m)
		}
	}
}
