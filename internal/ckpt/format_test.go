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

	"github.com/containers/image/v5/oci/layout"
	"github.com/containers/image/v5/types"
	"github.com/opencontainers/go-digest"

	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
)

func TestOptionsRoundTrip(t *testing.T) {
	for _, o := range []Options{{}, {TCPEstablished: true}, {FileLocks: true, LeaveRunning: true}} {
		got, err := OptionsFromAnnotations(o.ToAnnotations())
		if err != nil || got != o {
			t.Errorf("%+v came back as %+v (%v)", o, got, err)
		}
	}
	if got, err := OptionsFromAnnotations(nil); err != nil || got != (Options{}) {
		t.Errorf("no annotations: %+v %v", got, err)
	}
	if _, err := OptionsFromAnnotations(map[string]string{AnnTCPEstablished: "yes please"}); !errors.Is(err, ErrNotCheckpoint) {
		t.Errorf("a non-boolean was accepted: %v", err)
	}
}

// writeTree writes regular files and directories into a new directory,
// and returns it with the entries' names ("./a/b").
func writeTree(t *testing.T, entries []ckpttest.Entry) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	var names []string
	for _, e := range entries {
		p := filepath.Join(dir, filepath.FromSlash(e.Name))
		names = append(names, "./"+strings.TrimPrefix(strings.TrimSuffix(e.Name, "/"), "./"))
		if e.Type == tar.TypeDir {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, e.Body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir, names
}

// otherToolTar packs the standard archive with another tool, which pads
// the stream past the end-of-archive marker.
func otherToolTar(t *testing.T, tool string) []byte {
	t.Helper()
	dir, _ := writeTree(t, ckpttest.Archive(t))
	var cmd *exec.Cmd
	switch tool {
	case "gnu-tar":
		cmd = exec.Command("tar", "-C", dir, "-cf", "-", ".")
	case "python-tarfile":
		cmd = exec.Command("python3", "-c", `import sys, tarfile
with tarfile.open(fileobj=sys.stdout.buffer, mode="w|", format=tarfile.GNU_FORMAT) as tf:
    tf.add(sys.argv[1], arcname=".")`, dir)
	}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v", tool, err)
	}
	if len(out)%10240 != 0 {
		t.Fatalf("%s wrote %d bytes, not a whole 10 KiB record: the test would not exercise padding", tool, len(out))
	}
	return out
}

func TestLayersFromOtherTools(t *testing.T) {
	for _, tool := range []string{"gnu-tar", "python-tarfile"} {
		t.Run(tool, func(t *testing.T) {
			layer := otherToolTar(t, tool)
			if err := open(t, []ckpttest.Layer{{Tar: layer}}, podmanAnn); err != nil {
				t.Fatalf("padded layer refused: %v", err)
			}
			// Trailing bytes the diff ID does not cover are refused.
			garbage := append(append([]byte(nil), layer...), []byte("trailing garbage")...)
			err := open(t, []ckpttest.Layer{{Tar: garbage, DiffID: digest.FromBytes(layer)}}, podmanAnn)
			if !errors.Is(err, tarsafe.ErrUnsafe) {
				t.Fatalf("trailing garbage: err = %v, want ErrUnsafe", err)
			}
		})
	}
}

func TestMalformedDiffIDsAreRefusedNotPanics(t *testing.T) {
	for _, id := range []digest.Digest{"md5:d41d8cd98f00b204e9800998ecf8427e", "d41d8cd98f00b204e9800998ecf8427e", "sha256:zz", ""} {
		t.Run(string(id), func(t *testing.T) {
			err := open(t, []ckpttest.Layer{{Tar: base(t), DiffID: id}}, podmanAnn)
			if id == "" {
				return // WriteImage fills in the true ID
			}
			if !errors.Is(err, tarsafe.ErrUnsafe) {
				t.Fatalf("err = %v, want ErrUnsafe", err)
			}
		})
	}
}

func openBuilt(t *testing.T) (*Image, types.ImageSource) {
	t.Helper()
	_, dir := build(t, ckpttest.Tar(t, ckpttest.Archive(t)), "zstd")
	src := layoutSource(t, dir)
	img, err := Open(context.Background(), src, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	return img, src
}

func TestWriteArchiveEdits(t *testing.T) {
	img, _ := openBuilt(t)
	var out bytes.Buffer
	err := img.WriteArchive(context.Background(), &out, Edits{
		Replace: map[string][]byte{SpecDump: []byte(`{"new":true}`)},
		Rename:  map[string]string{"volumes/fixvol.tar": "volumes/other.tar"},
	})
	if err != nil {
		t.Fatal(err)
	}
	got := ckpttest.Members(t, out.Bytes())
	if string(got[SpecDump]) != `{"new":true}` {
		t.Errorf("spec.dump = %q", got[SpecDump])
	}
	if _, ok := got["volumes/fixvol.tar"]; ok {
		t.Error("the renamed member is still there")
	}
	if _, ok := got["volumes/other.tar"]; !ok {
		t.Error("the renamed member is missing")
	}
	for _, e := range []Edits{{Replace: map[string][]byte{"nosuch": nil}}, {Rename: map[string]string{"volumes/nosuch.tar": "x"}}} {
		if err := img.WriteArchive(context.Background(), io.Discard, e); err == nil {
			t.Errorf("edit of a missing member accepted: %+v", e)
		}
	}
}

// faultySource serves a layout but fails or alters chosen blobs.
type faultySource struct {
	types.ImageSource
	refuse digest.Digest
	alter  digest.Digest
}

func (f *faultySource) GetBlob(ctx context.Context, info types.BlobInfo, cache types.BlobInfoCache) (io.ReadCloser, int64, error) {
	if info.Digest == f.refuse {
		return nil, 0, errors.New("this blob must not be read")
	}
	rc, n, err := f.ImageSource.GetBlob(ctx, info, cache)
	if err != nil || info.Digest != f.alter {
		return rc, n, err
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	b[len(b)-1] ^= 1 // zstd ignores some trailing bits; the digest does not
	return io.NopCloser(bytes.NewReader(b)), n, nil
}

func TestReadMetadataReadsOnlyTheMetadataLayer(t *testing.T) {
	img, src := openBuilt(t)
	criu := img.Manifest.Layers[1].Digest
	meta, err := ReadMetadata(context.Background(), &faultySource{ImageSource: src, refuse: criu}, Limits{})
	if err != nil {
		t.Fatalf("ReadMetadata touched more than the metadata layer: %v", err)
	}
	if meta.Config.Name() != "fixture" || meta.SpecDump == nil || meta.NetworkStatus == nil || meta.ManifestDigest != img.ManifestDigest {
		t.Errorf("metadata: %+v", meta)
	}
	_, err = ReadMetadata(context.Background(), &faultySource{ImageSource: src, alter: img.Manifest.Layers[0].Digest}, Limits{})
	if !errors.Is(err, tarsafe.ErrUnsafe) {
		t.Fatalf("altered metadata blob: err = %v, want ErrUnsafe", err)
	}
}

func TestDescribe(t *testing.T) {
	img, _ := openBuilt(t)
	d := Describe(&img.Metadata)
	if d.Format != "podman-migrate" || d.Container.Name != "fixture" || len(d.Layers) != 4 || d.Layers[3].Volume != "fixvol" {
		t.Errorf("description: %+v", d)
	}
	if len(d.Binds) != 1 || d.Binds[0].Source != "/srv" || d.Binds[0].Destination != "/srv2" {
		t.Errorf("bind mounts (podman's own and the volume's left out): %+v", d.Binds)
	}
	if len(d.Volumes) != 1 || d.Volumes[0].Name != "fixvol" || len(d.Networks) != 1 || d.Networks[0].Name != "podman" {
		t.Errorf("volumes %+v, networks %+v", d.Volumes, d.Networks)
	}
}

func layoutSource(t *testing.T, dir string) types.ImageSource {
	t.Helper()
	ref, err := layout.NewReference(dir, "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	src, err := ref.NewImageSource(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func TestPodmanManaged(t *testing.T) {
	id := strings.Repeat("ab", 32)
	for _, tt := range []struct {
		dest, src string
		want      bool
	}{
		{"/etc/hosts", "/anything", true},
		{"/dev/shm", "/x", true},
		{"/run/app.sock", "/run/containers/storage/overlay-containers/" + id + "/userdata/app.sock", true},
		{"/data", "/home/me/userdata/f", false},
		{"/data", "/srv/data", false},
	} {
		if got := PodmanManaged(tt.dest, tt.src); got != tt.want {
			t.Errorf("PodmanManaged(%s, %s) = %t", tt.dest, tt.src, got)
		}
	}
}
