package restore

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/bindings/podmantest"
)

const halfMadeID = "f00dfeed0000000000000000000000000000000000000000000000000000cafe"

// hungRestore is a podman whose import restore never answers (CRIU < 4.2
// on a VM guest) until CRIU is ended, having made container "web".
type hungRestore struct {
	mu      sync.Mutex
	calls   podmantest.Calls
	exists  bool
	release chan struct{}
}

func (f *hungRestore) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Libpod-API-Version", "4.3.1")
	p := f.calls.Add(r)
	reply := func(code int, v any) { podmantest.Reply(w, code, v) }
	f.mu.Lock()
	exists := f.exists
	f.mu.Unlock()
	switch {
	case p == "/_ping":
		w.Write([]byte("OK"))
	case p == "/containers/import/restore":
		io.Copy(io.Discard, r.Body)
		f.mu.Lock()
		f.exists = true
		f.mu.Unlock()
		select {
		case <-f.release:
		case <-r.Context().Done():
		}
		reply(http.StatusInternalServerError, map[string]string{"message": "runc restore failed: criu killed"})
	case p == "/containers/web/json" && exists:
		reply(http.StatusOK, podman.Container{ID: halfMadeID, Name: "web"})
	case p == "/containers/web" && r.Method == http.MethodDelete:
		f.mu.Lock()
		f.exists = false
		f.mu.Unlock()
		reply(http.StatusOK, []any{})
	default:
		reply(http.StatusNotFound, map[string]string{"message": p + ": no such object"})
	}
}

func (f *hungRestore) called(call string) bool { return f.calls.Has(call) }

// serve serves the fake; end plays the host's CRIU being ended.
func (f *hungRestore) serve(t *testing.T, end func(id, op string) ([]int, error)) podmantest.StandIn {
	t.Helper()
	f.release = make(chan struct{})
	oldGrace := EndGrace
	EndGrace = 200 * time.Millisecond
	t.Cleanup(func() { EndGrace = oldGrace })
	return podmantest.StandIn{Client: podmantest.Connect(t, f), End: end}
}

// restoreWithin runs the restore step as Pull does (bounded restore, then
// cleanup on failure), within a generous bound.
func restoreWithin(t *testing.T, c podman.Target) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		var lastErr error
		_, err := RetryRestore(context.Background(), func() (string, error) {
			_, err := awaitRestore(context.Background(), c, "web", time.Second, func(rctx context.Context) (string, error) {
				return c.RestoreImport(rctx, strings.NewReader("archive"), podman.RestoreOptions{})
			})
			lastErr = err
			return "", err
		}, func(bool) error {
			if errors.Is(lastErr, ErrLeftOnHost) {
				return nil
			}
			return Cleanup(context.Background(), c, "web", nil, "", io.Discard)
		}, io.Discard, NetworkPause)
		errc <- err
	}()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("restore succeeded against a restore that never ends")
		}
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("pull still waits for a restore that never ends")
		return nil
	}
}

func TestRestoreTimeoutRemovesTheHalfMadeContainer(t *testing.T) {
	f := &hungRestore{}
	var ended []string
	c := f.serve(t, func(id, op string) ([]int, error) {
		ended = append(ended, op+" "+id)
		close(f.release)
		return []int{4242}, nil
	})
	err := restoreWithin(t, c)
	if !errors.Is(err, podman.ErrCRIUStuck) {
		t.Fatalf("error %v does not wrap ErrCRIUStuck", err)
	}
	var perr *podman.Error
	if !errors.As(err, &perr) {
		t.Fatalf("error %v is not a podman error (exit code 3)", err)
	}
	if !strings.Contains(err.Error(), "CRIU did not finish in time") || !strings.Contains(err.Error(), "PID 4242") {
		t.Errorf("error %q does not say CRIU was stuck and ended", err)
	}
	if len(ended) != 1 || ended[0] != "restore "+halfMadeID {
		t.Errorf("ended %v, want the restore of %s", ended, halfMadeID)
	}
	if !f.called("DELETE /containers/web") {
		t.Error("the half-made container was not removed")
	}
}

func TestRestoreTimeoutRemote(t *testing.T) {
	f := &hungRestore{}
	c := f.serve(t, func(string, string) ([]int, error) { return nil, podman.ErrRemote })
	err := restoreWithin(t, c)
	if !errors.Is(err, podman.ErrCRIUStuck) {
		t.Fatalf("error %v does not wrap ErrCRIUStuck", err)
	}
	for _, want := range []string{podman.EndStuckCRIUCommand(halfMadeID, "restore"), "podman rm -f web"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %s", err, want)
		}
	}
	if f.called("DELETE /containers/web") {
		t.Error("removed a container the stuck restore still holds")
	}
}
