// Package ckpttest builds checkpoint archives and images for tests, shaped
// like what podman 4.3.1 exports, including the source-host paths that
// config.dump carries.
package ckpttest

import (
	"archive/tar"
	"bytes"
	_ "embed"
	"encoding/json"
	"math/rand"
	"sort"
	"testing"
	"time"
)

// Entry is one archive member.
type Entry struct {
	Name     string
	Type     byte
	Body     []byte
	Linkname string
	Mode     int64
	ModTime  time.Time // zero: a fixed time
}

// Captured from podman 4.3.1 on the project's machine kind: the checkpoint
// export of a container "fixture" with a named volume "fixvol" (at /data)
// and a bind mount /srv:/srv2.
var (
	//go:embed testdata/config.dump
	configDump []byte
	//go:embed testdata/spec.dump
	specDump []byte
	//go:embed testdata/network.status
	networkStatus []byte
)

// ConfigDump is a real config.dump, with the source host's storage paths
// in it.
func ConfigDump() []byte { return append([]byte(nil), configDump...) }

// Tar returns a tar archive of the entries, in order.
func Tar(t testing.TB, entries []Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mt := time.Unix(1700000000, 0)
	for _, e := range entries {
		typ := e.Type
		if typ == 0 {
			typ = tar.TypeReg
		}
		mode := e.Mode
		if mode == 0 {
			mode = 0o644
			if typ == tar.TypeDir {
				mode = 0o755
			}
		}
		h := &tar.Header{Name: e.Name, Typeflag: typ, Mode: mode, Linkname: e.Linkname, ModTime: mt}
		if !e.ModTime.IsZero() {
			h.ModTime = e.ModTime
		}
		if typ == tar.TypeReg {
			h.Size = int64(len(e.Body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("writing %q: %v", e.Name, err)
		}
		if _, err := tw.Write(e.Body); err != nil {
			t.Fatalf("writing %q: %v", e.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Pages returns n bytes of seeded random data, a stand-in for CRIU pages.
func Pages(n int, seed int64) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}

// Archive returns the entries of a podman-like export archive, in the
// order podman writes them.
func Archive(t testing.TB) []Entry {
	rootfs := Tar(t, []Entry{
		{Name: "etc/", Type: tar.TypeDir},
		{Name: "etc/marker", Body: []byte("migrated\n")},
		{Name: "etc/alias", Type: tar.TypeSymlink, Linkname: "marker"},
		{Name: "usr/bin/tool", Type: tar.TypeSymlink, Linkname: "/bin/busybox"},
	})
	volume := Tar(t, []Entry{{Name: "./", Type: tar.TypeDir}, {Name: "./file", Body: []byte("volume data")}})
	return []Entry{
		{Name: "./", Type: tar.TypeDir},
		{Name: "artifacts/", Type: tar.TypeDir},
		{Name: "devshm-checkpoint.tar", Body: Tar(t, nil)},
		{Name: "config.dump", Body: ConfigDump()},
		{Name: "spec.dump", Body: specDump},
		{Name: "network.status", Body: networkStatus},
		{Name: "stats-dump", Body: []byte{1, 2, 3}},
		{Name: "checkpoint/", Type: tar.TypeDir},
		{Name: "checkpoint/inventory.img", Body: []byte("inventory")},
		{Name: "checkpoint/pages-1.img", Body: Pages(3<<20, 1)},
		{Name: "rootfs-diff.tar", Body: rootfs},
		{Name: "deleted.files", Body: []byte(`["/etc/old"]`)},
		{Name: "volumes/", Type: tar.TypeDir},
		{Name: "volumes/fixvol.tar", Body: volume},
	}
}

// ArchiveWithoutVolumes is Archive without the named volume: neither its
// tar nor its mount in config.dump and spec.dump.
func ArchiveWithoutVolumes(t testing.TB) []Entry {
	t.Helper()
	var out []Entry
	for _, e := range Archive(t) {
		switch e.Name {
		case "volumes/", "volumes/fixvol.tar":
			continue
		case "config.dump":
			e.Body = EditJSON(t, e.Body, func(m map[string]any) {
				delete(m, "namedVolumes")
				m["userVolumes"] = []string{"/srv2"}
			})
		case "spec.dump":
			e.Body = EditJSON(t, e.Body, func(m map[string]any) {
				var keep []any
				for _, mt := range m["mounts"].([]any) {
					if mt.(map[string]any)["destination"] != "/data" {
						keep = append(keep, mt)
					}
				}
				m["mounts"] = keep
			})
		}
		out = append(out, e)
	}
	return out
}

// EditJSON applies edit to a JSON object (a dump) decoded generically.
func EditJSON(t testing.TB, b []byte, edit func(map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Members reads a tar archive into name → content (directories map to
// nil), normalising names the way podman's untar does.
func Members(t testing.TB, archive []byte) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		name := clean(h.Name)
		if name == "" {
			continue
		}
		var buf bytes.Buffer
		_, _ = buf.ReadFrom(tr)
		if h.Typeflag == tar.TypeDir {
			out[name+"/"] = nil
			continue
		}
		out[name] = buf.Bytes()
	}
	return out
}

// Names returns the sorted keys of Members.
func Names(m map[string][]byte) []string {
	var n []string
	for k := range m {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

func clean(name string) string {
	for len(name) > 0 && (name[0] == '.' && (len(name) == 1 || name[1] == '/')) {
		if len(name) == 1 {
			return ""
		}
		name = name[2:]
	}
	for len(name) > 0 && name[len(name)-1] == '/' {
		name = name[:len(name)-1]
	}
	return name
}
