//go:build e2e

package e2e

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containers/image/v5/pkg/compression"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
)

// TestHostileImagesNeverReachPodman pushes crafted checkpoint images to the
// real registry and pulls them on B: each must be refused with exit 5 and
// its own message, before podman sees it (podman 4.3.1 creates directories
// outside its extraction dir before it refuses a ".." entry).
func TestHostileImagesNeverReachPodman(t *testing.T) {
	escape := filepath.Join(os.TempDir(), fmt.Sprintf("podman-migrate-escape-%d", os.Getpid()))
	rel := "../../../../../../.." + escape
	base := ckpttest.Archive(t)
	with := func(extra ...ckpttest.Entry) []ckpttest.Layer {
		return []ckpttest.Layer{{Tar: ckpttest.Tar(t, append(append([]ckpttest.Entry{}, base...), extra...))}}
	}
	swap := func(name string, body []byte) []ckpttest.Layer {
		entries := append([]ckpttest.Entry{}, base...)
		for i := range entries {
			if entries[i].Name == name {
				entries[i].Body = body
			}
		}
		return []ckpttest.Layer{{Tar: ckpttest.Tar(t, entries)}}
	}
	// A compression bomb: 512 MiB of zeros is about 16 KiB of zstd. The
	// lowered limit keeps the test fast; the default stops it the same way
	// at 64 GiB.
	bomb, bombID := zstdZeros(t, 512<<20)
	malformed := with()
	malformed[0].DiffID = "md5:d41d8cd98f00b204e9800998ecf8427e"
	cases := []struct {
		name   string
		layers []ckpttest.Layer
		args   []string
		want   string
	}{
		{"dotdot", with(ckpttest.Entry{Name: rel + "/a", Body: []byte("x")}), nil, `".." in path`},
		{"symlink-out", with(ckpttest.Entry{Name: "checkpoint/link", Type: tar.TypeSymlink, Linkname: escape}), nil, "symbolic links are not allowed here"},
		{"device", with(ckpttest.Entry{Name: "checkpoint/kmem", Type: tar.TypeChar}), nil, "device nodes are not allowed"},
		{"rootfs-escape", swap(ckpt.RootfsDiffTar, ckpttest.Tar(t, []ckpttest.Entry{{Name: "x", Type: tar.TypeSymlink, Linkname: escape}, {Name: "x/a", Body: []byte("x")}})), nil, "lies beneath a symbolic link"},
		{"deleted-escape", swap(ckpt.DeletedFiles, []byte(`["/../../../../`+strings.TrimPrefix(escape, "/")+`"]`)), nil, "not a path inside the container"},
		{"zstd-bomb", []ckpttest.Layer{{Tar: bomb, DiffID: bombID}}, []string{"--max-layer-size", "64MiB"}, "expands to more than 64MiB, the size limit (hint: if the image is genuine and this large, raise --max-layer-size"},
		{"md5-diff-id", malformed, nil, `the image config gives diff ID 0 as "md5:d41d8cd98f00b204e9800998ecf8427e": unsupported digest algorithm`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ckpttest.WriteImage(t, dir, tc.layers, map[string]string{ckpt.AnnRuntimeName: "runc", ckpt.AnnName: "hostile"})
			ref := hosts.Registry + "/e2e/hostile-" + tc.name + ":v1"
			if r := runCmd(t, "skopeo", "copy", "--dest-tls-verify=false", "oci:"+dir+":checkpoint", "docker://"+ref); r.code != 0 {
				t.Fatalf("skopeo copy: %s", r.stderr)
			}
			unchanged := unchangedOnB(t)
			args := append([]string{"--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", "e2e-hostile"}, tc.args...)
			r := migrate(t, append(args, ref)...)
			if r.code != 5 || !strings.Contains(r.stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want 5 and %q", r.code, r.stderr, tc.want)
			}
			if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "Fetching") {
				t.Fatalf("refused too late (or panicked): %q", r.stderr)
			}
			if _, err := os.Stat(escape); !os.IsNotExist(err) {
				t.Fatalf("%s exists after the pull (%v)", escape, err)
			}
			unchanged()
		})
	}
}

// TestHostileLayerRefusedWhileFetched: a real checkpoint whose CRIU layer,
// which planning does not read, gains a link out of the archive. The plan
// passes; pull must refuse the layer while fetching it into the restore,
// with exit 5. The link never goes to podman, which got the metadata layer
// but never the archive's end, so it acts on nothing: no container, volume,
// network or temporary file is left on B.
func TestHostileLayerRefusedWhileFetched(t *testing.T) {
	src, dst := "e2e-hostile-layer-src", "e2e-hostile-layer"
	real, ref := hosts.Registry+"/e2e/hostile-layer-real:v1", hosts.Registry+"/e2e/hostile-layer:v1"
	pushCopy(t, src, real)
	rmB(t, dst)
	dir := t.TempDir()
	if r := runCmd(t, "skopeo", "copy", "--src-tls-verify=false", "docker://"+real, "oci:"+dir+":checkpoint"); r.code != 0 {
		t.Fatalf("skopeo copy: %s", r.stderr)
	}
	var index imgspecv1.Index
	readJSON(t, filepath.Join(dir, "index.json"), &index)
	var m imgspecv1.Manifest
	readJSON(t, blobPath(dir, index.Manifests[0].Digest), &m)
	var layers []ckpttest.Layer
	for _, d := range m.Layers {
		f, err := os.Open(blobPath(dir, d.Digest))
		if err != nil {
			t.Fatal(err)
		}
		rc, _, err := compression.AutoDecompress(f)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(tw, tr); err != nil {
				t.Fatal(err)
			}
		}
		if ckpt.Role(d.Annotations[ckpt.AnnLayerRole]) == ckpt.RoleCRIU {
			if err := tw.WriteHeader(&tar.Header{Name: "checkpoint/link", Typeflag: tar.TypeSymlink, Linkname: "/etc", Mode: 0o777}); err != nil {
				t.Fatal(err)
			}
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		rc.Close()
		f.Close()
		layers = append(layers, ckpttest.Layer{Tar: buf.Bytes(), Annotations: d.Annotations})
	}
	hostile := t.TempDir()
	ckpttest.WriteImage(t, hostile, layers, m.Annotations)
	if r := runCmd(t, "skopeo", "copy", "--dest-tls-verify=false", "oci:"+hostile+":checkpoint", "docker://"+ref); r.code != 0 {
		t.Fatalf("skopeo copy: %s", r.stderr)
	}
	tmp := t.TempDir()
	unchanged := nothingLeftOnB(t, tmp)
	r := migrate(t, "--url", hosts.HostBURL, "pull", "--tmpdir", tmp, "--tls-verify=false", "--name", dst, ref)
	if r.code != 5 || !strings.Contains(r.stderr, "Fetching") || !strings.Contains(r.stderr, "verifying layer 1 (") ||
		!strings.Contains(r.stderr, "symbolic links are not allowed here") || strings.Contains(r.stderr, "Restored") {
		t.Fatalf("exit %d, stderr %q; want 5, the CRIU layer refused while fetched", r.code, r.stderr)
	}
	unchanged()
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

func blobPath(dir string, d digest.Digest) string {
	return filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// zstdZeros returns a zstd stream of n zero bytes and the digest of those
// bytes (the diff ID an honest config would give).
func zstdZeros(t *testing.T, n int64) ([]byte, digest.Digest) {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	h := digest.SHA256.Digester()
	if _, err := io.CopyN(io.MultiWriter(zw, h.Hash()), zeroReader{}, n); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), h.Digest()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestPrivilegedNeedsConsent: a privileged container migrates only with
// --allow-privileged; without it, pull lists what the checkpoint asks for
// and creates nothing.
func TestPrivilegedNeedsConsent(t *testing.T) {
	src, dst := "e2e-priv-src", "e2e-priv-dst"
	ref := hosts.Registry + "/e2e/privileged:v1"
	before := pushCopy(t, src, ref, "--privileged")
	unchanged := unchangedOnB(t)
	r := migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", dst, ref)
	if r.code != 5 {
		t.Fatalf("exit %d, want 5; stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{
		"Problem: the checkpoint asks for more than an ordinary container: privileged mode (--privileged); restore it only from a source you trust, with --allow-privileged",
		"Problem: the checkpoint asks for more than an ordinary container: capabilities beyond podman's defaults: CAP_",
		"Problem: the checkpoint asks for more than an ordinary container: no seccomp filter",
	} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
	if strings.Contains(r.stderr, "Fetching") {
		t.Errorf("fetched the CRIU images of a refused checkpoint: %q", r.stderr)
	}
	unchanged()

	rmB(t, dst)
	r = migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--allow-privileged", "--name", dst, ref)
	if r.code != 0 {
		t.Fatalf("pull --allow-privileged: exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "Warning: the checkpoint asks for more than an ordinary container: privileged mode (--privileged) (allowed by --allow-privileged)") {
		t.Errorf("the allowed privileges were not shown: %q", r.stderr)
	}
	if got := podman(t, hosts.HostBURL, "inspect", "--format", "{{.HostConfig.Privileged}}", dst); got != "true" {
		t.Errorf("restored container privileged = %s, want true", got)
	}
	checkContinued(t, hosts.HostBURL, dst, before)
}

// TestVersion reports the server the podman client sees.
func TestVersion(t *testing.T) {
	r := migrate(t, "--url", hosts.HostAURL, "version")
	want := podman(t, hosts.HostAURL, "version", "--format", "{{.Server.Version}}")
	if r.code != 0 || !strings.Contains(r.stdout, "Podman:      "+want) || !strings.Contains(r.stdout, "Version:     e2e") {
		t.Fatalf("version output %q, want server %s and client e2e", r.stdout, want)
	}
}
