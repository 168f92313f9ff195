package migrate

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/bindings/podmantest"
	"github.com/podman-migrate/podman-migrate/export"
)

// stuckID is the fake container's ID: no real runtime names it.
const stuckID = "f00dfeed0000000000000000000000000000000000000000000000000000beef"

// hungLibpod is a podman whose checkpoint never answers (CRIU < 4.2 on a
// VM guest) until the test ends or, if endsCRIU, CRIU is ended.
type hungLibpod struct {
	mu sync.Mutex
	// stops: the container is stopped once the checkpoint began (CRIU
	// got as far as killing it), so the rollback must restore it.
	stops    bool
	calls    podmantest.Calls
	release  chan struct{} // closed: the checkpoint fails, as after CRIU is killed
	checking bool
}

func (f *hungLibpod) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Libpod-API-Version", "4.3.1")
	p := f.calls.Add(r)
	reply := func(code int, v any) { podmantest.Reply(w, code, v) }
	switch p {
	case "/_ping":
		w.Write([]byte("OK"))
	case "/info":
		reply(http.StatusOK, podman.Info{})
	case "/containers/web/json", "/containers/" + stuckID + "/json":
		f.mu.Lock()
		running := !(f.stops && f.checking)
		f.mu.Unlock()
		ctr := podman.Container{ID: stuckID, Name: "web", Image: "img"}
		ctr.State.Running = running
		ctr.State.Status = map[bool]string{true: "running", false: "exited"}[running]
		reply(http.StatusOK, ctr)
	case "/containers/" + stuckID + "/checkpoint":
		f.mu.Lock()
		f.checking = true
		f.mu.Unlock()
		select {
		case <-f.release:
		case <-r.Context().Done():
		}
		reply(http.StatusInternalServerError, map[string]string{"message": "runc checkpoint failed: criu killed"})
	case "/containers/" + stuckID + "/restore":
		reply(http.StatusOK, map[string]string{"Id": stuckID})
	default:
		reply(http.StatusNotFound, map[string]string{"message": p + ": no such object"})
	}
}

func (f *hungLibpod) called(call string) bool { return f.calls.Has(call) }

// serve serves the fake; end plays the host's CRIU being ended.
func (f *hungLibpod) serve(t *testing.T, end func(id, op string) ([]int, error)) podmantest.StandIn {
	t.Helper()
	f.release = make(chan struct{})
	oldGrace := export.EndGrace
	export.EndGrace = 200 * time.Millisecond
	t.Cleanup(func() { export.EndGrace = oldGrace })
	return podmantest.StandIn{Client: podmantest.Connect(t, f), End: end}
}

// pushWithin runs Push and fails the test if it does not return in a
// generous bound.
func pushWithin(t *testing.T, ctx context.Context, c podman.Source, o export.PushOptions) error {
	t.Helper()
	o.Container = "web"
	o.Dest = "oci:" + filepath.Join(t.TempDir(), "layout") + ":web"
	o.TmpDir = t.TempDir()
	errc := make(chan error, 1)
	go func() {
		_, err := Push(ctx, c, o)
		errc <- err
	}()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("push succeeded against a checkpoint that never ends")
		}
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("push still waits for a checkpoint that never ends")
		return nil
	}
}

func TestCheckpointTimeoutRollsBack(t *testing.T) {
	for _, stops := range []bool{false, true} {
		name := map[bool]string{false: "container runs on", true: "container stopped"}[stops]
		t.Run(name, func(t *testing.T) {
			f := &hungLibpod{stops: stops}
			var ended []string
			c := f.serve(t, func(id, op string) ([]int, error) {
				ended = append(ended, op+" "+id)
				close(f.release) // CRIU gone: runc fails, podman answers
				return []int{4242}, nil
			})
			var log podmantest.Buffer
			err := pushWithin(t, context.Background(), c, export.PushOptions{CheckpointTimeout: time.Second, CheckpointStall: 50 * time.Millisecond, Log: &log})
			t.Logf("log:\n%s\nerror: %v", log.String(), err)
			if !errors.Is(err, podman.ErrCRIUStuck) {
				t.Fatalf("error %v does not wrap ErrCRIUStuck", err)
			}
			var perr *podman.Error
			if !errors.As(err, &perr) {
				t.Fatalf("error %v is not a podman error (exit code 3)", err)
			}
			for _, want := range []string{"CRIU did not finish in time", "CRIU < 4.2", "PID 4242"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			if len(ended) != 1 || ended[0] != "checkpoint "+stuckID {
				t.Errorf("ended %v, want the checkpoint of %s", ended, stuckID)
			}
			var pe *export.PushError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a PushError: the rollback did not run", err)
			}
			if !f.called("GET /containers/" + stuckID + "/json") {
				t.Error("the rollback never inspected the container")
			}
			restored := f.called("POST /containers/" + stuckID + "/restore")
			if stops {
				if !pe.RolledBack || !restored {
					t.Errorf("a stopped container must be restored from its checkpoint: %+v, restore called %v", pe, restored)
				}
			} else if !pe.NotStopped || restored {
				t.Errorf("a running container must be left alone: %+v, restore called %v", pe, restored)
			}
			if !strings.Contains(log.String(), "Warning: the checkpoint has taken") || !strings.Contains(log.String(), "podman-migrate check") {
				t.Errorf("log %q lacks the stall warning", log.String())
			}
		})
	}
}

func TestCheckpointTimeoutRemoteNamesTheCommand(t *testing.T) {
	f := &hungLibpod{}
	c := f.serve(t, func(string, string) ([]int, error) { return nil, podman.ErrRemote })
	err := pushWithin(t, context.Background(), c, export.PushOptions{CheckpointTimeout: time.Second})
	if !errors.Is(err, podman.ErrCRIUStuck) {
		t.Fatalf("error %v does not wrap ErrCRIUStuck", err)
	}
	if cmd := podman.EndStuckCRIUCommand(stuckID, "checkpoint"); !strings.Contains(err.Error(), cmd) {
		t.Errorf("error %q lacks the command to run there, %s", err, cmd)
	}
	if f.called("POST /containers/" + stuckID + "/restore") {
		t.Error("restored a container whose checkpoint podman may still be taking")
	}
}

func TestSecondInterruptStopsWaiting(t *testing.T) {
	f := &hungLibpod{}
	c := f.serve(t, func(string, string) ([]int, error) {
		t.Error("CRIU ended without a timeout")
		return nil, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	again := make(chan struct{})
	var log podmantest.Buffer
	go func() {
		for !f.called("POST /containers/" + stuckID + "/checkpoint") {
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		for !strings.Contains(log.String(), "interrupt again") {
			time.Sleep(10 * time.Millisecond)
		}
		close(again)
	}()
	err := pushWithin(t, ctx, c, export.PushOptions{StopWaiting: again, Log: &log})
	t.Logf("log:\n%s\nerror: %v", log.String(), err)
	if !errors.Is(err, export.ErrStoppedWaiting) {
		t.Fatalf("error %v does not wrap export.ErrStoppedWaiting", err)
	}
	for _, want := range []string{"podman container restore --keep web", podman.EndStuckCRIUCommand(stuckID, "checkpoint")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks the recovery command %s", err, want)
		}
	}
}
