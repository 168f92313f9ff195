package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/bindings/podmantest"
)

// fakeLibpod is the part of podman's libpod API that check uses, behind a
// unix socket.
type fakeLibpod struct {
	mu        sync.Mutex
	images    map[string]bool
	created   []podman.ContainerSpec
	ids       []string
	removed   []string
	running   map[string]bool
	listening bool          // the exec output shows a socket in state 0A
	hang      chan struct{} // checkpoint waits for it when not nil
	ckptErr   string        // checkpoint fails with this message
}

// procNetTCP is /proc/net/tcp with port 8080 (1F90) listening.
const procNetTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
`

func (f *fakeLibpod) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Libpod-API-Version", "4.3.1")
	p := podmantest.Path(r)
	parts := strings.Split(strings.Trim(p, "/"), "/")
	f.mu.Lock()
	defer f.mu.Unlock()
	reply := func(code int, v any) { podmantest.Reply(w, code, v) }
	notFound := func() {
		reply(http.StatusNotFound, map[string]any{"cause": "no such object", "message": p + ": no such object"})
	}
	switch {
	case p == "/_ping":
		w.Write([]byte("OK"))
	case p == "/info":
		var info podman.Info
		info.Version.Version, info.Version.APIVersion = "4.3.1", "4.3.1"
		info.Host.Kernel = "6.1.0-18-amd64"
		info.Host.OCIRuntime.Name, info.Host.OCIRuntime.Path = "runc", "/usr/bin/runc"
		info.Host.OCIRuntime.Version = "runc version 1.1.5\ncommit: v1.1.5"
		reply(http.StatusOK, info)
	case p == "/images/json":
		var list []podman.ImageSummary
		for name := range f.images {
			list = append(list, podman.ImageSummary{ID: "sha256:" + name, RepoTags: []string{name}})
		}
		reply(http.StatusOK, list)
	case len(parts) == 3 && parts[0] == "images" && parts[2] == "json":
		if !f.images[parts[1]] {
			notFound()
			return
		}
		reply(http.StatusOK, podman.Image{ID: "sha256:" + parts[1]})
	case p == "/containers/create" && r.Method == http.MethodPost:
		var spec podman.ContainerSpec
		if err := json.NewDecoder(r.Body).Decode(&spec); err != nil {
			reply(http.StatusBadRequest, map[string]string{"message": err.Error()})
			return
		}
		id := strings.Repeat("c", 60) + string(rune('0'+len(f.ids)))
		f.created, f.ids = append(f.created, spec), append(f.ids, id)
		reply(http.StatusCreated, map[string]any{"Id": id, "Warnings": []string{}})
	case len(parts) == 3 && parts[0] == "containers":
		id := parts[1]
		switch parts[2] {
		case "start", "restore":
			f.running[id] = true
			reply(http.StatusOK, map[string]string{"Id": id})
		case "json":
			ctr := podman.Container{ID: id}
			ctr.State.Running = f.running[id]
			ctr.State.Status = map[bool]string{true: "running", false: "exited"}[ctr.State.Running]
			reply(http.StatusOK, ctr)
		case "exec":
			reply(http.StatusCreated, map[string]string{"Id": "exec-" + id})
		case "checkpoint":
			if hang := f.hang; hang != nil {
				f.mu.Unlock()
				select {
				case <-hang: // CRIU was killed: runc fails, the container runs on
				case <-r.Context().Done():
				}
				f.mu.Lock()
				reply(http.StatusInternalServerError, map[string]string{"message": "criu failed: type NOTIFY errno 0"})
				return
			}
			if f.ckptErr != "" {
				reply(http.StatusInternalServerError, map[string]string{"message": f.ckptErr})
				return
			}
			f.running[id] = false
			reply(http.StatusOK, map[string]string{"Id": id})
		default:
			notFound()
		}
	case len(parts) == 3 && parts[0] == "exec" && parts[2] == "start":
		w.Header().Set("Content-Type", "application/vnd.docker.multiplexed-stream")
		w.WriteHeader(http.StatusOK)
		out := "  sl  local_address rem_address   st\n"
		if f.listening {
			out = procNetTCP
		}
		hdr := make([]byte, 8)
		hdr[0] = 1
		binary.BigEndian.PutUint32(hdr[4:], uint32(len(out)))
		w.Write(append(hdr, out...))
	case len(parts) == 2 && parts[0] == "containers" && r.Method == http.MethodDelete:
		f.removed = append(f.removed, parts[1])
		delete(f.running, parts[1])
		reply(http.StatusOK, []any{})
	default:
		notFound()
	}
}

// state returns what the fake saw: created specs, their IDs, removed IDs.
func (f *fakeLibpod) state() ([]podman.ContainerSpec, []string, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.created), slices.Clone(f.ids), slices.Clone(f.removed)
}

// serve starts f on a unix socket and returns its URI.
func (f *fakeLibpod) serve(t *testing.T) string { return podmantest.Serve(t, f) }

// fakeProbe stands for the service's machine.
type fakeProbe struct {
	remote bool
	ended  chan struct{} // closed by EndStuckCRIU
	once   sync.Once
	calls  []string
}

func (p *fakeProbe) ServicePID() (int, error) {
	if p.remote {
		return 0, podman.ErrRemote
	}
	return 1, nil
}

func (p *fakeProbe) CRIUCheck(context.Context) (*podman.CRIUReport, error) {
	return &podman.CRIUReport{Version: "4.1.1", Path: "/usr/local/sbin/criu", Check: []string{"Looks good."}, Breakpoints: "unknown"}, nil
}

func (p *fakeProbe) RuntimeVersion(context.Context, string) (string, error) { return "", nil }

func (p *fakeProbe) EndStuckCRIU(ctrID, op string) ([]int, error) {
	p.calls = append(p.calls, op+" "+ctrID)
	if p.ended != nil {
		p.once.Do(func() { close(p.ended) })
	}
	if p.remote {
		return nil, podman.ErrRemote
	}
	return []int{4242}, nil
}

func withProbe(t *testing.T, p *fakeProbe) {
	old := newHostProbe
	newHostProbe = func(*podman.Client) hostProbe { return p }
	t.Cleanup(func() { newHostProbe = old })
}

func newFake() *fakeLibpod {
	return &fakeLibpod{images: map[string]bool{"localhost/podman-migrate-test:latest": true}, running: map[string]bool{}, listening: true}
}

func TestCheckHappyPath(t *testing.T) {
	f := newFake()
	withProbe(t, &fakeProbe{})
	code, stdout, stderr := runCLI(t, "check", "--url", f.serve(t))
	created, ids, removed := f.state()
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout, stderr)
	if code != ExitOK {
		t.Fatalf("exit %d; stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"ok    server", "ok    runtime     runc 1.1.5 (/usr/bin/runc): supports CRIU", "ok    create", "TCP port 8080",
		"ok    checkpoint", "ok    restore", "ok    restored", "ok    remove", "\nok: unix://"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	if len(created) != 1 || created[0].Labels[checkLabel] != "true" || !strings.HasPrefix(created[0].Name, "podman-migrate-check-") ||
		created[0].Image != "localhost/podman-migrate-test:latest" {
		t.Errorf("created %+v", created)
	}
	if len(removed) != 1 || removed[0] != ids[0] {
		t.Errorf("removed %v, want %v", removed, ids)
	}
}

func TestCheckJSON(t *testing.T) {
	f := newFake()
	withProbe(t, &fakeProbe{remote: true})
	code, stdout, stderr := runCLI(t, "check", "--format", "json", "--url", f.serve(t))
	if code != ExitOK {
		t.Fatalf("exit %d; stderr:\n%s", code, stderr)
	}
	var rep checkReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("%v: %s", err, stdout)
	}
	var names []string
	for _, s := range rep.Steps {
		names = append(names, s.Name)
	}
	if !rep.OK || rep.CRIU.Known || rep.Server.Podman != "4.3.1" || strings.Join(names, " ") != "server runtime criu create checkpoint restore restored remove" {
		t.Errorf("report %+v, steps %v", rep, names)
	}
}

func TestCheckStuckCheckpoint(t *testing.T) {
	for _, remote := range []bool{false, true} {
		t.Run(map[bool]string{false: "local", true: "remote"}[remote], func(t *testing.T) {
			f := newFake()
			f.hang = make(chan struct{})
			p := &fakeProbe{remote: remote, ended: f.hang}
			withProbe(t, p)
			began := time.Now()
			code, stdout, stderr := runCLI(t, "check", "--timeout", "1s", "--url", f.serve(t))
			_, ids, removed := f.state()
			t.Logf("stdout:\n%s\nstderr:\n%s", stdout, stderr)
			if d := time.Since(began); d > 10*time.Second {
				t.Errorf("check took %s with --timeout 1s", d)
			}
			if code != ExitPodman {
				t.Errorf("exit %d, want %d", code, ExitPodman)
			}
			lines := strings.Split(strings.TrimSpace(stderr), "\n")
			last := lines[len(lines)-1]
			for _, want := range []string{"Error: ", "CRIU did not finish in time", "CRIU >= 4.2", "CRIU_FAULT=130"} {
				if !strings.Contains(last, want) {
					t.Errorf("last stderr line lacks %q: %s", want, last)
				}
			}
			if strings.Count(stderr, "Error: ") != 1 {
				t.Errorf("want one Error line, got:\n%s", stderr)
			}
			if len(p.calls) != 1 || p.calls[0] != "checkpoint "+ids[0] {
				t.Errorf("EndStuckCRIU calls %v", p.calls)
			}
			if remote != strings.Contains(stdout, "pkill -KILL") {
				t.Errorf("remote %v, but stdout:\n%s", remote, stdout)
			}
			if !strings.Contains(stdout, "FAIL  checkpoint") || strings.Contains(stdout, "ok    restore") || !strings.Contains(stdout, "\nFAIL: ") {
				t.Errorf("stdout:\n%s", stdout)
			}
			if len(removed) != 1 || removed[0] != ids[0] {
				t.Errorf("removed %v, want %v", removed, ids)
			}
		})
	}
}

func TestCheckSocketError(t *testing.T) {
	f := newFake()
	f.ckptErr = "criu failed: type NOTIFY errno 0\nlog file: dump.log\n(00.031) Error (criu/sockets.c:503): sockets: Can't get 1:16 opt: Operation not supported"
	withProbe(t, &fakeProbe{})
	code, stdout, stderr := runCLI(t, "check", "--url", f.serve(t))
	_, _, removed := f.state()
	if code != ExitPodman || !strings.Contains(stderr, "kernels >= 6.16") || !strings.Contains(stderr, "install CRIU >= 4.2") {
		t.Errorf("exit %d, stderr %s", code, stderr)
	}
	if !strings.Contains(stdout, "FAIL  checkpoint") || len(removed) != 1 {
		t.Errorf("removed %v, stdout:\n%s", removed, stdout)
	}
}

func TestCheckImageErrors(t *testing.T) {
	t.Run("missing --image", func(t *testing.T) {
		f := newFake()
		withProbe(t, &fakeProbe{})
		code, _, stderr := runCLI(t, "check", "--image", "nope", "--url", f.serve(t))
		created, _, _ := f.state()
		if code != ExitInput || !strings.Contains(stderr, `image "nope" is not on`) {
			t.Errorf("exit %d, stderr %s", code, stderr)
		}
		if len(created) != 0 {
			t.Errorf("created %v", created)
		}
	})
	t.Run("no listener", func(t *testing.T) {
		f := newFake()
		f.listening = false
		withProbe(t, &fakeProbe{})
		old := listenTimeout
		listenTimeout = time.Second
		t.Cleanup(func() { listenTimeout = old })
		began := time.Now()
		code, _, stderr := runCLI(t, "check", "--url", f.serve(t))
		_, _, removed := f.state()
		if code != ExitInput || !strings.Contains(stderr, "--image") {
			t.Errorf("exit %d, stderr %s", code, stderr)
		}
		if len(removed) != 1 {
			t.Errorf("removed %v", removed)
		}
		if d := time.Since(began); d > listenTimeout+5*time.Second {
			t.Errorf("took %s", d)
		}
	})
	t.Run("bad flags", func(t *testing.T) {
		for _, args := range [][]string{{"check", "--timeout", "0s"}, {"check", "--format", "yaml"}, {"check", "extra"}} {
			if code, _, stderr := runCLI(t, args...); code != ExitUsage {
				t.Errorf("%v: exit %d, stderr %s", args, code, stderr)
			}
		}
	})
}

func TestListenPort(t *testing.T) {
	if got := listenPort(procNetTCP); got != "8080" {
		t.Errorf("listenPort = %q", got)
	}
	established := strings.Replace(procNetTCP, " 0A ", " 01 ", 1)
	if got := listenPort(established); got != "" {
		t.Errorf("listenPort of an established socket = %q", got)
	}
}

func TestMajorMinor(t *testing.T) {
	for in, want := range map[string][2]int{"6.16.3-amd64": {6, 16}, "4.1.1": {4, 1}, "4.2": {4, 2}, "6.1.0-18-amd64": {6, 1}, "": {0, 0}, "x": {0, 0}} {
		if got := majorMinor(in); got != want {
			t.Errorf("majorMinor(%q) = %v, want %v", in, got, want)
		}
	}
}
