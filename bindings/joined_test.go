package podman

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
)

// fakeChanges serves podman diff's changes of container c1 and, for each
// path, a tar made by GNU tar in root, as podman cp answers.
func fakeChanges(t *testing.T, root string, changes []change) *Client {
	t.Helper()
	if _, err := exec.LookPath("tar"); err != nil {
		t.Skip("no GNU tar on this machine to write podman's archives")
	}
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Libpod-API-Version", "4.3.1")
		switch {
		case strings.HasSuffix(r.URL.Path, "/_ping"):
			w.Write([]byte("OK"))
		case strings.HasSuffix(r.URL.Path, "/containers/c1/changes"):
			json.NewEncoder(w).Encode(changes)
		case strings.HasSuffix(r.URL.Path, "/containers/c1/archive"):
			p := strings.TrimPrefix(r.URL.Query().Get("path"), "/")
			args := []string{"-C", filepath.Join(root, filepath.Dir(p)), "-cf", "-", filepath.Base(p)}
			if p == "esc" { // a hostile service's entry above the path
				args = []string{"-C", filepath.Join(root, "sub"), "-P", "-cf", "-", "../x"}
			}
			cmd := exec.Command("tar", args...)
			cmd.Stdout = w
			// The client may hang up once it has what it needs: of a
			// modified directory, copyOut reads the directory's own entry
			// only. tar's writes then fail on the closed connection.
			if err := cmd.Run(); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("tar %s: %v", p, err)
			}
		default:
			http.Error(w, `{"message":"not found"}`, http.StatusNotFound)
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c, err := ConnectTo(context.Background(), Destination{URI: "unix://" + sock})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func tarNames(t *testing.T, r io.Reader) map[string]string {
	t.Helper()
	out := map[string]string{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		out[hdr.Name] = string(b)
	}
}

func writeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRootfsDiff: an added directory comes whole and once, a changed one
// brings only its changed entries, deletions are listed.
func TestRootfsDiff(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{"new/f": "added", "new/sub/g": "deep", "etc/conf": "changed", "etc/other": "untouched"})
	c := fakeChanges(t, root, []change{
		{"/new", changeAdd}, {"/new/f", changeAdd}, {"/etc", changeModify}, {"/etc/conf", changeModify}, {"/gone", changeDelete},
	})
	f, deleted, err := c.rootfsDiff(context.Background(), "c1", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := tarNames(t, f)
	want := map[string]string{"new/": "", "new/f": "added", "new/sub/": "", "new/sub/g": "deep", "etc/conf": "changed"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("diff holds %v, want %v", got, want)
	}
	if !reflect.DeepEqual(deleted, []string{"/gone"}) {
		t.Errorf("deleted %v", deleted)
	}
}

// TestRootfsDiffRefusesEscapes: an archive entry that leaves the copied
// path is an error, not a file in the diff.
func TestRootfsDiffRefusesEscapes(t *testing.T) {
	root := t.TempDir()
	writeFiles(t, root, map[string]string{"x": "x", "sub/y": "y"})
	c := fakeChanges(t, root, []change{{"/esc", changeAdd}})
	_, _, err := c.rootfsDiff(context.Background(), "c1", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), `holds "../x"`) {
		t.Errorf("an entry above the copied path: %v", err)
	}
}

// TestWriteKept: the archive holds what podman's export would, under its
// names; sockets in the directory are left out.
func TestWriteKept(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"checkpoint/inventory.img": "inv", "config.dump": "{}", "spec.dump": "{}", "userdata-other": "no"})
	ln, err := net.Listen("unix", filepath.Join(dir, "checkpoint", "attach"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	diff, err := os.CreateTemp(t.TempDir(), "diff")
	if err != nil {
		t.Fatal(err)
	}
	defer diff.Close()
	diff.WriteString("tarbytes")
	diff.Seek(0, io.SeekStart)
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(writeKept(tar.NewWriter(pw), dir, diff, []string{"/gone"})) }()
	got := tarNames(t, pr)
	want := map[string]string{"checkpoint/": "", "checkpoint/inventory.img": "inv", "config.dump": "{}", "spec.dump": "{}", "rootfs-diff.tar": "tarbytes", "deleted.files": `["/gone"]`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("archive %v, want %v", got, want)
	}
}

// TestCriuErrors reads a dump.log as CRIU 4.2.1 wrote it (lines kept from
// a real failed dump): the messages of its error lines, the rlimit one it
// logs on every dump under runc left out.
func TestCriuErrors(t *testing.T) {
	log := `(00.075780) Warn  (criu/kerndat.c:1553): Can't keep kdat cache on non-tempfs
(00.075793) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.117320) inet: 	Dumping inet socket at 3
(00.117335) Error (criu/sk-inet.c:185): inet: In-flight connection (l) for b70c7
(00.117338) Error (criu/sk-inet.c:186): inet: In-flight connections can be ignored with the --skip-in-flight option.
(00.117449) Error (criu/cr-dump.c:1545): Dump files (pid: 8657) failed with -1
(00.166303) Error (criu/cr-dump.c:1975): Dumping FAILED.
`
	got := criuErrors(strings.NewReader(log))
	want := []string{
		"inet: In-flight connection (l) for b70c7",
		"inet: In-flight connections can be ignored with the --skip-in-flight option.",
		"Dump files (pid: 8657) failed with -1",
		"Dumping FAILED.",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("errors %q, want %q", got, want)
	}
}
