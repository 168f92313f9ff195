package migrate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	digest "github.com/opencontainers/go-digest"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/bindings/podmantest"
	"github.com/podman-migrate/podman-migrate/export"
	restore "github.com/podman-migrate/podman-migrate/import"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
	"github.com/podman-migrate/podman-migrate/internal/fault"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// The fixture archive's container and base image (ckpttest's config.dump).
const (
	fixture = "fixture"
	baseID  = "c99f376472fce746c958ce5990a9b1070bb93f59e752e81e9c2533c249f0f294"
)

// source is a fake podman running the fixture container.
func source(t *testing.T) *podmantest.Fake {
	return podmantest.NewFake(fixture, baseID, ckpttest.Tar(t, ckpttest.Archive(t)))
}

// target is a fake podman that has the base image and the fixture's
// network, and no container.
func target() *podmantest.Fake {
	f := podmantest.NewFake("", baseID, nil)
	f.Networks["podman"] = &podman.Network{Name: "podman"}
	return f
}

func pushOpts(t *testing.T) export.PushOptions {
	return export.PushOptions{
		Container: fixture, Dest: "oci:" + filepath.Join(t.TempDir(), "layout") + ":" + fixture,
		Compression: "zstd", TmpDir: t.TempDir(), ToolVersion: "test",
	}
}

// failAt makes phase name of operation op fail with err, for one test.
func failAt(t *testing.T, op, name string, err error) {
	t.Helper()
	beforePhase = func(o, n string) error {
		if o == op && n == name {
			return err
		}
		return nil
	}
	t.Cleanup(func() { beforePhase = nil })
}

// phasesOf lists the phases op runs on a clean run.
func phasesOf(t *testing.T, op string, run func()) []string {
	t.Helper()
	var names []string
	beforePhase = func(o, n string) error {
		if o == op {
			names = append(names, n)
		}
		return nil
	}
	defer func() { beforePhase = nil }()
	run()
	if len(names) == 0 {
		t.Fatalf("%s ran no phase", op)
	}
	return names
}

var errInjected = errors.New("injected failure")

func TestPushAndPullWithFakes(t *testing.T) {
	src, dst := source(t), target()
	o := pushOpts(t)
	res, err := Push(context.Background(), src, o)
	if err != nil {
		t.Fatal(err)
	}
	if src.Running(fixture) || src.Count("RestoreKept") != 0 {
		t.Fatalf("after a push the source must stay checkpointed: running %t, restored %d times", src.Running(fixture), src.Count("RestoreKept"))
	}
	if !strings.HasPrefix(res.Digest, "sha256:") || len(res.Layers) < 3 {
		t.Fatalf("push result %+v", res)
	}
	pulled, err := Pull(context.Background(), dst, restore.PullOptions{Source: o.Dest, TmpDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if pulled.Name != fixture || !dst.Running(fixture) || pulled.Digest != res.Digest {
		t.Fatalf("pull result %+v; running on the target: %t", pulled, dst.Running(fixture))
	}
}

// TestPushFailsAtEachPhase: a failure before the checkpoint leaves the
// container untouched; after it, the container is restored exactly once.
func TestPushFailsAtEachPhase(t *testing.T) {
	phases := phasesOf(t, "push", func() {
		if _, err := Push(context.Background(), source(t), pushOpts(t)); err != nil {
			t.Fatal(err)
		}
	})
	if !slices.Equal(phases, []string{"inspect", "preflight", "stage", "base", "checkpoint", "build", "upload"}) {
		t.Fatalf("push's phases are %v", phases)
	}
	checkpointed := false
	for _, name := range phases {
		t.Run(name, func(t *testing.T) {
			src := source(t)
			failAt(t, "push", name, fault.Wrap(fault.Registry, errInjected))
			_, err := Push(context.Background(), src, pushOpts(t))
			if !errors.Is(err, errInjected) || fault.KindOf(err) != fault.Registry {
				t.Fatalf("error %v (kind %s), want the injected registry failure", err, fault.KindOf(err))
			}
			var perr *export.PushError
			if !checkpointed {
				if errors.As(err, &perr) || src.Count("RestoreKept") != 0 || !src.Running(fixture) {
					t.Fatalf("failed before the checkpoint: %v; restored %d times, running %t", err, src.Count("RestoreKept"), src.Running(fixture))
				}
			} else if !errors.As(err, &perr) || !perr.RolledBack || src.Count("RestoreKept") != 1 || !src.Running(fixture) {
				t.Fatalf("failed after the checkpoint: %v; restored %d times, running %t", err, src.Count("RestoreKept"), src.Running(fixture))
			}
		})
		checkpointed = checkpointed || name == "checkpoint"
	}
}

// TestPushFaults: failures the fake podman and a fake registry make, the
// error kind each gives, and what becomes of the container.
func TestPushFaults(t *testing.T) {
	failingRegistry := httptest.NewServer(uploadsFail(registry.New(registry.Logger(log.New(io.Discard, "", 0)))))
	defer failingRegistry.Close()
	podmanDown := &podman.Error{Op: "checkpointing", Status: 500, Err: errors.New("runc checkpoint failed")}
	for _, tc := range []struct {
		name     string
		setup    func(*podmantest.Fake, *export.PushOptions)
		kind     fault.Kind
		restored int  // RestoreKept calls
		running  bool // the container afterwards
		is       error
	}{
		{"no such container", func(f *podmantest.Fake, o *export.PushOptions) { o.Container = "nothere" }, fault.Input, 0, true, export.ErrNoContainer},
		{"not running", func(f *podmantest.Fake, o *export.PushOptions) {
			f.Containers[fixture].State.Running, f.Containers[fixture].State.Status = false, "exited"
		}, fault.Input, 0, false, export.ErrNotRunning},
		{"bad destination", func(f *podmantest.Fake, o *export.PushOptions) { o.Dest = "bad::ref" }, fault.Input, 0, true, transfer.ErrBadReference},
		{"checkpoint refused, process runs on", func(f *podmantest.Fake, o *export.PushOptions) { f.Fail["Checkpoint"] = podmanDown }, fault.Podman, 0, true, nil},
		{"podman's archive is not a checkpoint", func(f *podmantest.Fake, o *export.PushOptions) { f.Archive = []byte("not a tar") }, fault.Podman, 1, true, nil},
		{"registry refuses the upload", func(f *podmantest.Fake, o *export.PushOptions) {
			o.Dest = strings.TrimPrefix(failingRegistry.URL, "http://") + "/ckpt/web:v1"
			o.Transfer = transfer.Options{TLSVerify: transfer.TLSVerify(true, false), Retries: -1}
		}, fault.Registry, 1, true, nil},
		// podman's info is asked during the checkpoint: its failure is
		// one past the checkpoint, and the container is restored.
		{"podman's info fails", func(f *podmantest.Fake, o *export.PushOptions) { f.Fail["Info"] = podmanDown }, fault.Podman, 1, true, nil},
		{"rollback fails too", func(f *podmantest.Fake, o *export.PushOptions) {
			f.Archive = []byte("not a tar")
			f.Fail["RestoreKept"] = podmanDown
		}, fault.Podman, 1, false, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := source(t)
			o := pushOpts(t)
			tc.setup(src, &o)
			_, err := Push(context.Background(), src, o)
			checkFailure(t, "push", err, tc.kind, tc.is)
			if n := src.Count("RestoreKept"); n != tc.restored {
				t.Errorf("restored %d times, want %d", n, tc.restored)
			}
			if src.Running(fixture) != tc.running {
				t.Errorf("running %t afterwards, want %t: %v", src.Running(fixture), tc.running, err)
			}
			if tc.restored > 0 && !tc.running && !strings.Contains(err.Error(), "podman container restore --keep "+fixture) {
				t.Errorf("error %q does not say how to resume the container", err)
			}
		})
	}
}

// checkFailure fails the test unless err is a failure of kind, wrapping
// is (when not nil).
func checkFailure(t *testing.T, op string, err error, kind fault.Kind, is error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded", op)
	}
	if k := fault.KindOf(err); k != kind {
		t.Errorf("error %v is of kind %s, want %s", err, k, kind)
	}
	if is != nil && !errors.Is(err, is) {
		t.Errorf("error %v does not wrap %v", err, is)
	}
}

// uploadsFail is a registry that answers reads but refuses every blob
// upload.
func uploadsFail(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/uploads") {
			http.Error(w, `{"errors":[{"code":"DENIED","message":"quota exceeded"}]}`, http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// pushed pushes the fixture to an OCI layout and returns its reference.
func pushed(t *testing.T) string {
	t.Helper()
	o := pushOpts(t)
	if _, err := Push(context.Background(), source(t), o); err != nil {
		t.Fatal(err)
	}
	return o.Dest
}

// TestPullFailsAtEachPhase: whatever phase fails, the target keeps no
// container, volume or pulled image of the pull.
func TestPullFailsAtEachPhase(t *testing.T) {
	ref := pushed(t)
	phases := phasesOf(t, "pull", func() {
		if _, err := Pull(context.Background(), target(), restore.PullOptions{Source: ref, TmpDir: t.TempDir()}); err != nil {
			t.Fatal(err)
		}
	})
	if !slices.Equal(phases, []string{"metadata", "plan", "check", "stage", "fetch", "verify", "base", "restore"}) {
		t.Fatalf("pull's phases are %v", phases)
	}
	for _, name := range phases {
		t.Run(name, func(t *testing.T) {
			dst := target()
			failAt(t, "pull", name, fault.Wrap(fault.Podman, errInjected))
			_, err := Pull(context.Background(), dst, restore.PullOptions{Source: ref, TmpDir: t.TempDir()})
			if !errors.Is(err, errInjected) || fault.KindOf(err) != fault.Podman {
				t.Fatalf("error %v, want the injected failure", err)
			}
			if len(dst.Containers) != 0 || dst.Count("RestoreImport") != 0 {
				t.Fatalf("a pull that failed at %s left %v (restores %d)", name, dst.Containers, dst.Count("RestoreImport"))
			}
		})
	}
}

func TestPullFaults(t *testing.T) {
	ref := pushed(t)
	criuFailed := &podman.Error{Op: "restoring", Status: 500, Err: errors.New("criu failed: type RESTORE errno 0")}
	for _, tc := range []struct {
		name    string
		setup   func(*podmantest.Fake, *restore.PullOptions)
		kind    fault.Kind
		is      error
		removes int // RemoveContainer calls
	}{
		{"name taken", func(f *podmantest.Fake, o *restore.PullOptions) {
			f.Containers[fixture] = &podman.Container{ID: "other", Name: fixture}
		}, fault.Input, restore.ErrBlocked, 0},
		{"restore fails, nothing left", func(f *podmantest.Fake, o *restore.PullOptions) { f.Fail["RestoreImport"] = criuFailed }, fault.Podman, nil, 0},
		{"restore fails, container left", func(f *podmantest.Fake, o *restore.PullOptions) {
			f.Fail["RestoreImport"], f.KeepOnFailure = criuFailed, true
		}, fault.Podman, nil, 1},
		{"no base image anywhere", func(f *podmantest.Fake, o *restore.PullOptions) { delete(f.Images, baseID) }, fault.Input, restore.ErrBlocked, 0},
		{"not a checkpoint", func(f *podmantest.Fake, o *restore.PullOptions) { o.Source = "oci:" + t.TempDir() + ":none" }, fault.Registry, nil, 0},
		{"another architecture", func(f *podmantest.Fake, o *restore.PullOptions) { f.InfoValue.Host.Arch = "arm64" }, fault.Input, restore.ErrBlocked, 0},
		{"podman's info fails", func(f *podmantest.Fake, o *restore.PullOptions) {
			f.Fail["Info"] = &podman.Error{Op: "reading podman info", Status: 500, Err: errors.New("dpkg-query failed")}
		}, fault.Podman, nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := target()
			o := restore.PullOptions{Source: ref, TmpDir: t.TempDir()}
			tc.setup(dst, &o)
			_, err := Pull(context.Background(), dst, o)
			checkFailure(t, "pull", err, tc.kind, tc.is)
			if n := dst.Count("RemoveContainer"); n != tc.removes {
				t.Errorf("removed %d containers, want %d", n, tc.removes)
			}
			if c, ok := dst.Containers[fixture]; ok && c.ID != "other" {
				t.Errorf("the failed pull left container %+v", c)
			}
		})
	}
}

// TestPullComparesHostsWhileStreaming: the restore starts before podman's
// info answers (podman gathers it afresh, 0.5 s on Debian's 4.3.1), and
// the archive does not end before the hosts are compared: a blocker found
// then leaves podman a cut stream, so nothing is made.
// (A named volume makes the plan wait for the info, to place it: the
// fixture here has none.)
func TestPullComparesHostsWhileStreaming(t *testing.T) {
	o := pushOpts(t)
	src := podmantest.NewFake(fixture, baseID, ckpttest.Tar(t, ckpttest.ArchiveWithoutVolumes(t)))
	if _, err := Push(context.Background(), src, o); err != nil {
		t.Fatal(err)
	}
	ref := o.Dest
	for _, arch := range []string{"amd64", "arm64"} {
		t.Run(arch, func(t *testing.T) {
			dst := target()
			dst.InfoValue.Host.Arch = arch
			dst.InfoGate, dst.Reading = make(chan struct{}), make(chan struct{})
			reading := dst.Reading
			errc := make(chan error, 1)
			go func() {
				_, err := Pull(context.Background(), dst, restore.PullOptions{Source: ref, TmpDir: t.TempDir()})
				errc <- err
			}()
			select {
			case <-reading:
			case err := <-errc:
				t.Fatalf("pull ended (%v) before the restore read anything", err)
			case <-time.After(time.Minute): // a deadline, not a timing
				close(dst.InfoGate)
				t.Fatalf("the restore did not start while podman's info was held back: %v", <-errc)
			}
			close(dst.InfoGate)
			err := <-errc
			if arch == "amd64" {
				if err != nil || !dst.Running(fixture) {
					t.Fatalf("pull: %v; running on the target: %t", err, dst.Running(fixture))
				}
				return
			}
			checkFailure(t, "pull", err, fault.Input, restore.ErrBlocked)
			if !strings.Contains(err.Error(), "arm64") || len(dst.Containers) != 0 {
				t.Fatalf("error %v; left %v", err, dst.Containers)
			}
		})
	}
}

func moveOpts(t *testing.T) MoveOptions {
	return MoveOptions{
		Containers: []string{fixture},
		Push:       export.PushOptions{Compression: "zstd", TmpDir: t.TempDir()},
		Pull:       restore.PullOptions{TmpDir: t.TempDir()},
	}
}

func moveOne(t *testing.T, src, dst *podmantest.Fake) (MoveResult, error) {
	t.Helper()
	return moveWith(t, src, dst, moveOpts(t))
}

func moveWith(t *testing.T, src, dst *podmantest.Fake, o MoveOptions) (MoveResult, error) {
	t.Helper()
	var got []MoveResult
	err := Move(context.Background(), src, dst, o, func(r MoveResult) { got = append(got, r) })
	if len(got) != 1 {
		t.Fatalf("%d results for one container", len(got))
	}
	return got[0], err
}

// TestMoveFailsAtEachPhase: a move that fails anywhere, directly or
// through a registry, leaves the source running (restored exactly once
// when it had been checkpointed), nothing on the target, and an error
// that says which side failed.
func TestMoveFailsAtEachPhase(t *testing.T) {
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	for _, via := range []string{"", strings.TrimPrefix(reg.URL, "http://") + "/moved"} {
		o := func(t *testing.T) MoveOptions {
			o := moveOpts(t)
			o.Via = via
			plain := transfer.Options{TLSVerify: transfer.TLSVerify(true, false), Retries: -1}
			o.Push.Transfer, o.Pull.Transfer = plain, plain
			return o
		}
		type point struct{ op, name string }
		var points []point
		beforePhase = func(op, name string) error {
			points = append(points, point{op, name})
			return nil
		}
		src, dst := source(t), target()
		r, err := moveWith(t, src, dst, o(t))
		beforePhase = nil
		if err != nil || !dst.Running(fixture) || src.Running(fixture) {
			t.Fatalf("move via %q: %v; running on the target %t, on the source %t", via, err, dst.Running(fixture), src.Running(fixture))
		}
		if r.Downtime <= 0 || r.Downtime > r.Seconds {
			t.Errorf("move via %q: downtime %v of %v seconds", via, r.Downtime, r.Seconds)
		}
		// The direct move's phases on the target; through a registry,
		// the target's are pull's.
		onTarget := map[string]bool{"move/plan": true, "move/base": true, "move/restore": true, "move/pull": true}
		checkpointed := false
		for _, p := range points {
			at := p.op + "/" + p.name
			side := fault.Source
			if p.op == "pull" || onTarget[at] {
				side = fault.Target
			}
			t.Run(fmt.Sprintf("via %q/%s", via, at), func(t *testing.T) {
				src, dst := source(t), target()
				failAt(t, p.op, p.name, fault.OnSide(side, fault.Wrap(fault.Podman, errInjected)))
				_, err := moveWith(t, src, dst, o(t))
				if !errors.Is(err, errInjected) || fault.KindOf(err) != fault.Podman {
					t.Fatalf("error %v, want the injected failure", err)
				}
				want := 0
				if checkpointed {
					want = 1
				}
				if n := src.Count("RestoreKept"); n != want || !src.Running(fixture) {
					t.Fatalf("source restored %d times (want %d), running %t: %v", n, want, src.Running(fixture), err)
				}
				if len(dst.Containers) != 0 {
					t.Fatalf("the target kept %v", dst.Containers)
				}
				var me *MoveError
				var pe *export.PushError
				switch {
				case !checkpointed:
				case side == fault.Target && (!errors.As(err, &me) || !me.Resumed):
					t.Fatalf("a failure on the target must resume the source: %v", err)
				case side == fault.Source && (!errors.As(err, &pe) || !pe.RolledBack):
					t.Fatalf("a failure on the source must roll it back: %v", err)
				}
				if got := fault.SideOf(err); got != side {
					t.Errorf("side %q, want %q", got, side)
				}
			})
			checkpointed = checkpointed || p.name == "checkpoint"
		}
	}
}

func TestMoveResumesOnceWhenTheTargetFails(t *testing.T) {
	src, dst := source(t), target()
	dst.Fail["RestoreImport"] = &podman.Error{Op: "restoring", Status: 500, Err: errors.New("criu failed")}
	dst.KeepOnFailure = true
	r, err := moveOne(t, src, dst)
	var me *MoveError
	if !errors.As(err, &me) || !me.Resumed || r.Err == nil {
		t.Fatalf("error %v, want a MoveError that resumed the source", err)
	}
	if fault.KindOf(err) != fault.Podman {
		t.Errorf("kind %s, want podman", fault.KindOf(err))
	}
	if src.Count("RestoreKept") != 1 || !src.Running(fixture) || len(dst.Containers) != 0 {
		t.Fatalf("source restored %d times, running %t; target has %v", src.Count("RestoreKept"), src.Running(fixture), dst.Containers)
	}
	if !strings.Contains(err.Error(), "running again on the source host") {
		t.Errorf("error %q does not say the source runs again", err)
	}
}

func TestMoveSeveralReportsEach(t *testing.T) {
	src, dst := source(t), target()
	o := moveOpts(t)
	o.Containers = []string{fixture, "missing"}
	var got []string
	err := Move(context.Background(), src, dst, o, func(r MoveResult) { got = append(got, fmt.Sprintf("%s:%t", r.Container, r.Err == nil)) })
	slices.Sort(got)
	if !errors.Is(err, ErrSomeFailed) || !slices.Equal(got, []string{"fixture:true", "missing:false"}) {
		t.Fatalf("error %v, results %v", err, got)
	}
	if fault.KindOf(err) != fault.Input {
		t.Errorf("kind %s: a missing container is bad input", fault.KindOf(err))
	}
}

// TestPullPointsTheRestoreAtTheLocalBaseImage: podman's restore pulls the
// base image config.dump names unless it finds it here. A name the target
// lacks is given to its copy of the image (a tag), but a digest reference,
// as a kubelet pulls by, cannot be a tag: the restore is pointed at the
// image's ID instead, and nothing is tagged.
func TestPullPointsTheRestoreAtTheLocalBaseImage(t *testing.T) {
	digested := "registry.example:5000/base@sha256:" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name, recorded, wantRestored string
		tags                         int
	}{
		{"tag", "localhost/podman-migrate-test:latest", "localhost/podman-migrate-test:latest", 1},
		{"digest", digested, baseID, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries := ckpttest.Archive(t)
			for i, e := range entries {
				if e.Name == "config.dump" {
					var cfg map[string]any
					if err := json.Unmarshal(e.Body, &cfg); err != nil {
						t.Fatal(err)
					}
					cfg["rootfsImageName"] = tc.recorded
					b, err := json.Marshal(cfg)
					if err != nil {
						t.Fatal(err)
					}
					entries[i].Body = b
				}
			}
			src := podmantest.NewFake(fixture, baseID, ckpttest.Tar(t, entries))
			o := pushOpts(t)
			if _, err := Push(context.Background(), src, o); err != nil {
				t.Fatal(err)
			}
			dst := target()
			if _, err := Pull(context.Background(), dst, restore.PullOptions{Source: o.Dest, TmpDir: t.TempDir()}); err != nil {
				t.Fatal(err)
			}
			var restored struct{ RootfsImageName, RootfsImageID string }
			if err := json.Unmarshal(dst.RestoredConfig, &restored); err != nil {
				t.Fatal(err)
			}
			if restored.RootfsImageName != tc.wantRestored || restored.RootfsImageID != baseID {
				t.Errorf("podman was asked for base image %q (ID %s), want %q", restored.RootfsImageName, restored.RootfsImageID, tc.wantRestored)
			}
			if n := dst.Count("TagImage"); n != tc.tags || dst.Count("LoadImage") != 0 {
				t.Errorf("tagged %d times (want %d), pulled %d times", n, tc.tags, dst.Count("LoadImage"))
			}
		})
	}
}

// TestPullFetchesTheBaseImageItself: a base image the target lacks is
// fetched by pull, with its own transfer settings (here a plain-HTTP
// registry and --tls-verify=false, which podman's own pull would not
// use), loaded into podman and named as the checkpoint names it.
func TestPullFetchesTheBaseImageItself(t *testing.T) {
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	plain := transfer.Options{TLSVerify: transfer.TLSVerify(true, false), Retries: -1}
	host := strings.TrimPrefix(reg.URL, "http://")
	layoutRef := ckpttest.WriteImage(t, t.TempDir(), []ckpttest.Layer{{Tar: ckpttest.Tar(t, []ckpttest.Entry{{Name: "etc/base", Body: []byte("base\n")}})}}, nil)
	baseRef, err := transfer.ParseReference(host + "/base:v1")
	if err != nil {
		t.Fatal(err)
	}
	d, err := transfer.Copy(context.Background(), "pushing", baseRef, layoutRef, plain)
	if err != nil {
		t.Fatal(err)
	}
	src, err := transfer.OpenSource(context.Background(), baseRef, plain)
	if err != nil {
		t.Fatal(err)
	}
	mb, _, err := src.GetManifest(context.Background(), nil)
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Config struct{ Digest digest.Digest }
	}
	if err := json.Unmarshal(mb, &m); err != nil {
		t.Fatal(err)
	}
	id := m.Config.Digest.Encoded() // podman's image ID

	entries := ckpttest.Archive(t)
	for i, e := range entries {
		if e.Name == "config.dump" {
			var cfg map[string]any
			if err := json.Unmarshal(e.Body, &cfg); err != nil {
				t.Fatal(err)
			}
			cfg["rootfsImageName"], cfg["rootfsImageID"] = host+"/base:v1", id
			if entries[i].Body, err = json.Marshal(cfg); err != nil {
				t.Fatal(err)
			}
		}
	}
	srcHost := podmantest.NewFake(fixture, id, ckpttest.Tar(t, entries))
	srcHost.Images[id].Digest = d.String()
	o := pushOpts(t)
	if _, err := Push(context.Background(), srcHost, o); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		serve bool // the target gets the image when it loads one
		err   error
	}{
		{"fetched and loaded", true, nil},
		{"loaded, but another image", false, restore.ErrBaseImage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := target()
			delete(dst.Images, baseID)
			if tc.serve {
				dst.OnLoad = &podman.Image{ID: id}
			}
			res, err := Pull(context.Background(), dst, restore.PullOptions{Source: o.Dest, TmpDir: t.TempDir(), Transfer: plain})
			if dst.Count("LoadImage") != 1 {
				t.Fatalf("loaded %d images, want 1: %v", dst.Count("LoadImage"), err)
			}
			if tc.err == nil {
				if err != nil || !dst.Running(fixture) || dst.Count("TagImage") != 1 || res.Seconds["base"] == 0 {
					t.Fatalf("pull: %v; running %t, tags %d, result %+v", err, dst.Running(fixture), dst.Count("TagImage"), res)
				}
				return
			}
			if !errors.Is(err, tc.err) || len(dst.Containers) != 0 || dst.Count("RestoreImport") != 0 {
				t.Fatalf("error %v, want %v with nothing restored", err, tc.err)
			}
		})
	}
}

// TestPullCompressesForTheNetwork: the archive goes to a tcp:// or ssh://
// podman as a zstd stream (compressed where that pays), to a unix socket
// as it is, unless --compress says otherwise; the target restores either
// (the fake decompresses as podman).
func TestPullCompressesForTheNetwork(t *testing.T) {
	o := pushOpts(t)
	if _, err := Push(context.Background(), source(t), o); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ addr, compress, want string }{
		{"unix:///run/podman/podman.sock", "", "none"},
		// The fake takes bytes at once: auto measures that compressing
		// would not pay, but the stream is zstd's all the same.
		{"tcp://10.0.0.2:8585", "", "auto: zstd for 0% of 3 MiB"},
		{"ssh://root@b/run/podman/podman.sock", "auto", "auto: zstd for 0% of 3 MiB"},
		{"tcp://10.0.0.2:8585", "zstd", "zstd:1"},
		{"tcp://10.0.0.2:8585", "none", "none"},
		{"unix:///run/podman/podman.sock", "zstd:7", "zstd:7"},
	} {
		dst := target()
		dst.Addr = tt.addr
		res, err := Pull(context.Background(), dst, restore.PullOptions{Source: o.Dest, TmpDir: t.TempDir(), Compress: tt.compress})
		if err != nil || !dst.Running(fixture) {
			t.Fatalf("%s, --compress %q: %v", tt.addr, tt.compress, err)
		}
		as := map[bool]string{true: "tar", false: "tar.zst"}[tt.want == "none"]
		if res.Compress != tt.want || res.Bytes["sent"] == 0 || dst.RestoredAs != as {
			t.Errorf("%s, --compress %q: sent %d bytes as %s, podman got a %s; want %s", tt.addr, tt.compress, res.Bytes["sent"], res.Compress, dst.RestoredAs, tt.want)
		}
	}
}

// TestMoveRefusesAHostileArchive: an entry that would climb out of the
// container's root, found while the archive streams to the target, fails
// the restore's request: the target keeps nothing and the source runs
// again.
func TestMoveRefusesAHostileArchive(t *testing.T) {
	var entries []ckpttest.Entry
	for _, e := range ckpttest.Archive(t) {
		if e.Name == "rootfs-diff.tar" {
			e.Body = ckpttest.Tar(t, []ckpttest.Entry{{Name: "../../etc/cron.d/x", Body: []byte("* * * * * root sh\n")}})
		}
		entries = append(entries, e)
	}
	src, dst := podmantest.NewFake(fixture, baseID, ckpttest.Tar(t, entries)), target()
	_, err := moveOne(t, src, dst)
	var me *MoveError
	if !errors.Is(err, ckpt.ErrBadArchive) || !errors.As(err, &me) || !me.Resumed {
		t.Fatalf("error %v, want the bad archive, and the source resumed", err)
	}
	if !strings.Contains(err.Error(), `".." in path`) {
		t.Errorf("error %q does not name the entry's fault", err)
	}
	if len(dst.Containers) != 0 || !src.Running(fixture) || src.Count("RestoreKept") != 1 {
		t.Fatalf("target has %v; source running %t, restored %d times", dst.Containers, src.Running(fixture), src.Count("RestoreKept"))
	}
}

// TestLeaveRunningFreezesTheCopy: push --leave-running on this machine's
// service freezes the container around the checkpoint, so the diff podman
// exports after the dump is the dumped one, and thaws it; without
// --leave-running, or through a remote service, it does not.
func TestLeaveRunningFreezesTheCopy(t *testing.T) {
	for _, tc := range []struct {
		name         string
		local, leave bool
		freezes      int
	}{
		{"leave-running, local", true, true, 2},
		{"leave-running, remote", false, true, 0},
		{"stop, local", true, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := source(t)
			src.Local = tc.local
			src.Containers[fixture].State.CgroupPath = "/machine.slice/libpod-x.scope"
			o := pushOpts(t)
			o.LeaveRunning = tc.leave
			if _, err := Push(context.Background(), src, o); err != nil {
				t.Fatal(err)
			}
			calls := src.Calls()
			if n := src.Count("FreezeContainer"); n != tc.freezes {
				t.Fatalf("%d freezes, want %d: %v", n, tc.freezes, calls)
			}
			first, dump := slices.Index(calls, "FreezeContainer"), slices.Index(calls, "Checkpoint")
			last := len(calls) - 1 - slices.Index(reversed(calls), "FreezeContainer")
			if tc.freezes > 0 && (first > dump || last < dump || src.Frozen[fixture]) {
				t.Fatalf("not frozen around the checkpoint, or left frozen: %v", calls)
			}
		})
	}
}
