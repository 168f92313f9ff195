package ckpt

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
	"github.com/podman-migrate/podman-migrate/internal/dump"
)

// orderedTar packs entries with another tool, in the entries' order (as
// podman writes its export: the order is what Live relies on).
func orderedTar(t *testing.T, tool string, entries []ckpttest.Entry) []byte {
	t.Helper()
	dir, names := writeTree(t, entries)
	var cmd *exec.Cmd
	switch tool {
	case "gnu-tar":
		cmd = exec.Command("tar", append([]string{"-C", dir, "--no-recursion", "-cf", "-"}, names...)...)
	case "python-tarfile":
		cmd = exec.Command("python3", append([]string{"-c", `import os, sys, tarfile
os.chdir(sys.argv[1])
with tarfile.open(fileobj=sys.stdout.buffer, mode="w|", format=tarfile.GNU_FORMAT) as tf:
    for n in sys.argv[2:]:
        tf.add(n, recursive=False)`, dir}, names...)...)
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	return out
}

func readLive(t *testing.T, archive io.Reader, o LiveOptions) (*Live, error) {
	t.Helper()
	l, err := ReadLive(context.Background(), archive, Limits{}, o)
	if err == nil {
		t.Cleanup(l.Close)
	}
	return l, err
}

// TestLiveFromOtherTools: the head is read, planned on and edited, the
// rest streamed, for archives GNU tar, Python's tarfile and Go write.
func TestLiveFromOtherTools(t *testing.T) {
	entries := ckpttest.Archive(t)
	want := ckpttest.Members(t, ckpttest.Tar(t, entries))
	for _, tool := range []string{"gnu-tar", "python-tarfile", "go"} {
		t.Run(tool, func(t *testing.T) {
			archive := ckpttest.Tar(t, entries)
			if tool != "go" {
				archive = orderedTar(t, tool, entries)
			}
			l, err := readLive(t, bytes.NewReader(archive), LiveOptions{Arch: "amd64", Annotate: func(cfg *dump.Config) (map[string]string, error) {
				return map[string]string{AnnName: cfg.Name(), AnnTCPEstablished: "true"}, nil
			}})
			if err != nil {
				t.Fatal(err)
			}
			m := l.Meta()
			if m.Config.Name() != "fixture" || m.Provenance().Name != "fixture" || !m.Options.TCPEstablished || m.NetworkStatus == nil {
				t.Fatalf("head: name %q, annotations %v, options %+v, network.status %t", m.Config.Name(), m.Manifest.Annotations, m.Options, m.NetworkStatus != nil)
			}
			if bytes.Contains(m.ConfigDump, []byte("/var/lib/containers/storage/overlay-containers")) {
				t.Fatal("config.dump still holds the source host's storage paths")
			}
			spec := []byte(`{"ociVersion":"1.0.2","relocated":true}`)
			var out bytes.Buffer
			err = l.WriteArchive(context.Background(), &out, Edits{
				Replace: map[string][]byte{SpecDump: spec},
				Rename:  map[string]string{"volumes/fixvol.tar": "volumes/newvol.tar"},
			})
			if err != nil {
				t.Fatal(err)
			}
			got := ckpttest.Members(t, out.Bytes())
			if !bytes.Equal(got[SpecDump], spec) || !bytes.Equal(got[ConfigDump], m.ConfigDump) {
				t.Fatal("the edits were not applied")
			}
			if !bytes.Equal(got["volumes/newvol.tar"], want["volumes/fixvol.tar"]) || got["volumes/fixvol.tar"] != nil {
				t.Fatal("the volume was not renamed")
			}
			for name, body := range want {
				switch name {
				case SpecDump, ConfigDump, "volumes/fixvol.tar":
					continue
				}
				if b, ok := got[name]; !ok || !bytes.Equal(b, body) {
					t.Errorf("member %s: present %t, %d bytes, want %d", name, ok, len(b), len(body))
				}
			}
			if len(got) != len(want) {
				t.Errorf("%d members out, %d in: %v", len(got), len(want), ckpttest.Names(got))
			}
			if err := l.WriteArchive(context.Background(), io.Discard, Edits{}); !errors.Is(err, ErrConsumed) {
				t.Errorf("a second send: %v, want ErrConsumed", err)
			}
		})
	}
}

// errPast fails a read beyond the bytes a test allows.
var errPast = errors.New("read past the head")

// TestLiveReadsOnlyTheHead: planning needs no byte of the CRIU images, so
// it can begin while podman still writes them.
func TestLiveReadsOnlyTheHead(t *testing.T) {
	entries := ckpttest.Archive(t)
	var k int
	for k = range entries {
		if entries[k].Name == "checkpoint/" {
			break
		}
	}
	head := ckpttest.Tar(t, entries[:k+1])
	head = head[:len(head)-1024] // no end-of-archive: the stream goes on
	l, err := readLive(t, io.MultiReader(bytes.NewReader(head), iotestErr{errPast}), LiveOptions{})
	if err != nil {
		t.Fatalf("the head alone was not enough: %v", err)
	}
	if l.Config == nil || l.SpecDump == nil || l.NetworkStatus == nil {
		t.Fatal("the plan's inputs are missing")
	}
	var out bytes.Buffer
	if err := l.WriteArchive(context.Background(), &out, Edits{}); !errors.Is(err, errPast) {
		t.Fatalf("the rest: %v, want the source's failure", err)
	}
	if bytes.HasSuffix(out.Bytes(), make([]byte, 1024)) {
		t.Fatal("an archive cut short was ended as if whole")
	}
}

type iotestErr struct{ err error }

func (e iotestErr) Read([]byte) (int, error) { return 0, e.err }

// TestLiveRefusesHostile: what Open refuses in an image, Live refuses in
// the stream. The error fails the request body that carries the archive,
// so podman, which unpacks the whole archive before acting on any member,
// acts on none (TestMoveRefusesAHostileArchive).
func TestLiveRefusesHostile(t *testing.T) {
	tarOf := func(es ...ckpttest.Entry) []byte { return ckpttest.Tar(t, es) }
	replace := func(es []ckpttest.Entry, name string, e ckpttest.Entry) []ckpttest.Entry {
		var out []ckpttest.Entry
		for _, x := range es {
			if x.Name == name {
				if e.Name == "" {
					continue // drop it
				}
				x = e
			}
			out = append(out, x)
		}
		return out
	}
	with := func(name string, e ckpttest.Entry) []ckpttest.Entry { return replace(ckpttest.Archive(t), name, e) }
	linked := replace(with(RootfsDiffTar, ckpttest.Entry{Name: RootfsDiffTar, Body: tarOf(
		ckpttest.Entry{Name: "etc/", Type: tar.TypeDir},
		ckpttest.Entry{Name: "lnk", Type: tar.TypeSymlink, Linkname: "etc"})}),
		DeletedFiles, ckpttest.Entry{Name: DeletedFiles, Body: []byte(`["/lnk/passwd"]`)})
	insertAfter := func(es []ckpttest.Entry, after string, e ckpttest.Entry) []ckpttest.Entry {
		var out []ckpttest.Entry
		for _, x := range es {
			out = append(out, x)
			if x.Name == after {
				out = append(out, e)
			}
		}
		return out
	}
	for _, tc := range []struct {
		name    string
		entries []ckpttest.Entry
		inHead  bool // refused before planning
		want    string
	}{
		{"rootfs diff climbs out", with(RootfsDiffTar, ckpttest.Entry{Name: RootfsDiffTar, Body: tarOf(ckpttest.Entry{Name: "../../etc/cron.d/x", Body: []byte("x")})}), false, `".." in path`},
		{"volume holds a device", with("volumes/fixvol.tar", ckpttest.Entry{Name: "volumes/fixvol.tar", Body: tarOf(ckpttest.Entry{Name: "sda", Type: tar.TypeBlock})}), false, "device nodes"},
		{"devshm link out", with(DevShmTar, ckpttest.Entry{Name: DevShmTar, Body: tarOf(ckpttest.Entry{Name: "x", Type: tar.TypeSymlink, Linkname: "../../../etc"})}), true, "outside the archive"},
		{"member climbs out", insertAfter(ckpttest.Archive(t), "checkpoint/pages-1.img", ckpttest.Entry{Name: "checkpoint/../../x", Body: []byte("x")}), false, `".." in path`},
		{"unknown member", insertAfter(ckpttest.Archive(t), "checkpoint/pages-1.img", ckpttest.Entry{Name: "evil", Body: []byte("x")}), false, "not part of the checkpoint format"},
		{"member twice", insertAfter(ckpttest.Archive(t), "checkpoint/pages-1.img", ckpttest.Entry{Name: "checkpoint/inventory.img", Body: []byte("x")}), false, "appears twice"},
		{"device among the CRIU images", insertAfter(ckpttest.Archive(t), "checkpoint/pages-1.img", ckpttest.Entry{Name: "checkpoint/tty", Type: tar.TypeChar}), false, "device nodes"},
		{"network.status late", insertAfter(with(NetworkStatus, ckpttest.Entry{}), "checkpoint/pages-1.img", ckpttest.Entry{Name: NetworkStatus, Body: []byte(`{}`)}), false, "--via"},
		{"deleted beneath a link", linked, false, "beneath a symbolic link"},
		{"no CRIU images", func() []ckpttest.Entry {
			var out []ckpttest.Entry
			for _, e := range ckpttest.Archive(t) {
				if !strings.HasPrefix(e.Name, CheckpointDir+"/") {
					out = append(out, e)
				}
			}
			return out
		}(), false, "no checkpoint/"},
		{"no config.dump", with(ConfigDump, ckpttest.Entry{}), true, "no config.dump"},
		{"config.dump not JSON", with(ConfigDump, ckpttest.Entry{Name: ConfigDump, Body: []byte("{")}), true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries := tc.entries
			l, err := readLive(t, bytes.NewReader(ckpttest.Tar(t, entries)), LiveOptions{})
			if tc.inHead {
				if !errors.Is(err, ErrBadArchive) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("head: %v, want ErrBadArchive saying %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("head refused: %v", err)
			}
			var out bytes.Buffer
			err = l.WriteArchive(context.Background(), &out, Edits{})
			if !errors.Is(err, ErrBadArchive) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want ErrBadArchive saying %q", err, tc.want)
			}
		})
	}
}

// TestLiveHoldsABigHeadOnDisk: a /dev/shm tar larger than what is held in
// memory goes to a file in SpillDir, removed again; a small head uses no
// disk at all (a SpillDir that does not exist is never touched).
func TestLiveHoldsABigHeadOnDisk(t *testing.T) {
	shm := func(n int) ckpttest.Entry {
		return ckpttest.Entry{Name: DevShmTar, Body: ckpttest.Tar(t, []ckpttest.Entry{{Name: "seg", Body: ckpttest.Pages(n, 7)}})}
	}
	var entries []ckpttest.Entry
	for _, e := range ckpttest.Archive(t) {
		if e.Name == DevShmTar {
			e = shm(heldInMemory + 1<<20)
		}
		entries = append(entries, e)
	}
	archive := ckpttest.Tar(t, entries)
	if _, err := readLive(t, bytes.NewReader(archive), LiveOptions{SpillDir: filepath.Join(t.TempDir(), "none")}); err == nil || !strings.Contains(err.Error(), "holding "+DevShmTar) {
		t.Fatalf("a big head with nowhere to go: %v", err)
	}
	dir := t.TempDir()
	l, err := readLive(t, bytes.NewReader(archive), LiveOptions{SpillDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Fatalf("the spill file is left in the directory: %v", left)
	}
	var out bytes.Buffer
	if err := l.WriteArchive(context.Background(), &out, Edits{}); err != nil {
		t.Fatal(err)
	}
	if got := ckpttest.Members(t, out.Bytes())[DevShmTar]; !bytes.Equal(got, entries[2].Body) {
		t.Fatalf("the held /dev/shm tar came back as %d bytes, want %d", len(got), len(entries[2].Body))
	}
	small := ckpttest.Tar(t, ckpttest.Archive(t))
	if _, err := readLive(t, bytes.NewReader(small), LiveOptions{SpillDir: filepath.Join(t.TempDir(), "none")}); err != nil {
		t.Fatalf("a small head touched the disk: %v", err)
	}
}
