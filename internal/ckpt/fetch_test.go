package ckpt

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containers/image/v5/oci/layout"
	"github.com/containers/image/v5/types"
	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// hookedRef lets a test wrap the sources of a reference.
type hookedRef struct {
	types.ImageReference
	src func(types.ImageSource) types.ImageSource
}

func (r hookedRef) NewImageSource(ctx context.Context, sys *types.SystemContext) (types.ImageSource, error) {
	s, err := r.ImageReference.NewImageSource(ctx, sys)
	if err != nil || r.src == nil {
		return s, err
	}
	return r.src(s), nil
}

// hookedSrc is a layout source that says GetBlob is thread-safe (as a
// registry's is, so copy.Image copies layers at once) and can alter the
// blobs it returns.
type hookedSrc struct {
	types.ImageSource
	blob func(info types.BlobInfo, rc io.ReadCloser) io.ReadCloser
}

func (s *hookedSrc) HasThreadSafeGetBlob() bool { return true }

func (s *hookedSrc) GetBlob(ctx context.Context, info types.BlobInfo, cache types.BlobInfoCache) (io.ReadCloser, int64, error) {
	rc, n, err := s.ImageSource.GetBlob(ctx, info, cache)
	if err == nil && s.blob != nil {
		rc = s.blob(info, rc)
	}
	return rc, n, err
}

// cutOnce returns blobs with digest dg cut short, the first time only, as
// a connection dropped mid-blob.
func cutOnce(dg digest.Digest) func(types.BlobInfo, io.ReadCloser) io.ReadCloser {
	var once sync.Once
	return func(info types.BlobInfo, rc io.ReadCloser) io.ReadCloser {
		cut := rc
		if info.Digest == dg {
			once.Do(func() { cut = &cutReader{ReadCloser: rc, left: info.Size / 2} })
		}
		return cut
	}
}

type cutReader struct {
	io.ReadCloser
	left int64
}

func (c *cutReader) Read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.ReadCloser.Read(p)
	c.left -= int64(n)
	return n, err
}

// header reads only the manifest and config, so that every layer of a
// hostile image reaches the streaming path instead of failing in planning.
func header(t *testing.T, ref types.ImageReference) (*Metadata, error) {
	t.Helper()
	src, err := ref.NewImageSource(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	v, err := newVerifier(context.Background(), src, Limits{})
	if err != nil {
		return nil, err
	}
	return v.meta, nil
}

// planned reads the metadata as pull's plan does.
func planned(t *testing.T, ref types.ImageReference) *Metadata {
	t.Helper()
	src, err := ref.NewImageSource(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	meta, err := ReadMetadata(context.Background(), src, Limits{})
	if err != nil {
		t.Fatalf("ReadMetadata: %v", err)
	}
	return meta
}

// threadSafe makes copy.Image read the layout source as a registry.
func threadSafe(ref types.ImageReference, blob func(types.BlobInfo, io.ReadCloser) io.ReadCloser) types.ImageReference {
	return hookedRef{ImageReference: ref, src: func(s types.ImageSource) types.ImageSource { return &hookedSrc{ImageSource: s, blob: blob} }}
}

// opened is the image at ref as Open verifies it, and its archive.
func opened(t *testing.T, ref types.ImageReference) (*Image, []byte) {
	t.Helper()
	src, err := ref.NewImageSource(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	img, err := Open(context.Background(), src, Limits{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return img, archiveOf(t, img)
}

func archiveOf(t *testing.T, img *Image) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := img.WriteArchive(context.Background(), &buf, Edits{}); err != nil {
		t.Fatalf("WriteArchive: %v", err)
	}
	return buf.Bytes()
}

// cleanName turns a tar entry name into the slash-separated form RoleOf
// takes: "./a/b/" becomes "a/b", and a hostile name some harmless one.
func cleanName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

// roleLayers splits archive entries into one layer per role, in the order
// and with the annotations Build gives them.
func roleLayers(t *testing.T, entries []ckpttest.Entry) []ckpttest.Layer {
	t.Helper()
	byRole := map[Role][]ckpttest.Entry{}
	for _, e := range entries {
		name := cleanName(e.Name)
		if name == "" {
			continue
		}
		role, _, ok := RoleOf(name)
		if !ok {
			role = RoleCRIU // hostile names go with the CRIU images
		}
		byRole[role] = append(byRole[role], e)
	}
	var layers []ckpttest.Layer
	for _, r := range []Role{RoleMetadata, RoleCRIU, RoleRootfs, RoleVolume} {
		if len(byRole[r]) > 0 {
			layers = append(layers, ckpttest.Layer{Tar: ckpttest.Tar(t, byRole[r]), Annotations: map[string]string{AnnLayerRole: string(r)}})
		}
	}
	return layers
}

// zstdLayers compresses layers as a registry holds them: copy.Image would
// compress uncompressed ones on the way into a layout, and the copy would
// no longer be the image verified.
func zstdLayers(t *testing.T, layers []ckpttest.Layer) []ckpttest.Layer {
	t.Helper()
	out := make([]ckpttest.Layer, len(layers))
	for i, l := range layers {
		if l.DiffID == "" {
			l.DiffID = digest.FromBytes(l.Tar)
		}
		l.Tar = zstdOf(t, bytes.NewReader(l.Tar), int64(len(l.Tar)))
		l.MediaType = imgspecv1.MediaTypeImageLayerZstd
		out[i] = l
	}
	return out
}

// rig fetches images with transfer.Copy, as pull does, counting the
// GetBlob calls per digest.
type rig struct {
	o    transfer.Options
	mu   sync.Mutex
	gets map[digest.Digest]int
}

func newRig(t *testing.T) *rig {
	t.Helper()
	policy := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	return &rig{o: transfer.Options{SignaturePolicy: policy, Retries: 3, RetryDelay: time.Millisecond}, gets: map[digest.Digest]int{}}
}

func (r *rig) count(d digest.Digest) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gets[d]
}

// fetching is the image at from as pull streams it; alter, if not nil,
// changes the blobs the source returns.
func (r *rig) fetching(t *testing.T, meta *Metadata, from types.ImageReference, lim Limits, alter func(types.BlobInfo, io.ReadCloser) io.ReadCloser) *Fetching {
	t.Helper()
	src := threadSafe(from, func(info types.BlobInfo, rc io.ReadCloser) io.ReadCloser {
		r.mu.Lock()
		r.gets[info.Digest]++
		r.mu.Unlock()
		if alter != nil {
			return alter(info, rc)
		}
		return rc
	})
	f, err := NewFetching(meta, lim, func(ctx context.Context, dest types.ImageReference, again func() bool) error {
		o := r.o
		o.Again = again
		_, err := transfer.Copy(ctx, "pulling", dest, src, o)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// ended says whether an archive ends as a tar does, with the zero blocks
// after its last member: what a failed stream must never give podman. (A
// stream cut at a member's end reads as a clean end in Go's reader too, so
// the blocks are looked for.)
func ended(b []byte) bool {
	c := &countingReader{r: bytes.NewReader(b)}
	tr := tar.NewReader(c)
	var end int64 // where the last member's padded data ends
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return c.n-end >= 1024
		}
		if err != nil {
			return false
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return false
		}
		end = c.n + (512-h.Size%512)%512
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// ourImage builds an image as push does (zstd), with its CRIU layer's
// digest.
func ourImage(t *testing.T) (types.ImageReference, digest.Digest, digest.Digest) {
	t.Helper()
	b, dir := build(t, ckpttest.Tar(t, ckpttest.Archive(t)), "zstd")
	from, err := layout.NewReference(dir, "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	return from, b.Layers[0].Desc.Digest, b.Layers[1].Desc.Digest
}

// TestFetchingMatchesOpen: good images (podman's single layer, ours in
// zstd and gzip) stream into the archive Open's verified image writes,
// with or without edits, every time they are written.
func TestFetchingMatchesOpen(t *testing.T) {
	archive := ckpttest.Tar(t, ckpttest.Archive(t))
	images := map[string]func() types.ImageReference{
		"podman": func() types.ImageReference {
			return ckpttest.WriteImage(t, t.TempDir(), zstdLayers(t, []ckpttest.Layer{{Tar: base(t)}}), podmanAnn)
		},
	}
	for _, comp := range []string{"zstd", "gzip"} {
		images["ours, "+comp] = func() types.ImageReference {
			_, dir := build(t, archive, comp)
			ref, err := layout.NewReference(dir, "checkpoint")
			if err != nil {
				t.Fatal(err)
			}
			return ref
		}
	}
	edits := Edits{Replace: map[string][]byte{ConfigDump: []byte(`{"edited":true}`)}}
	for name, mk := range images {
		t.Run(name, func(t *testing.T) {
			from := mk()
			img, want := opened(t, from)
			var wantEdited bytes.Buffer
			if err := img.WriteArchive(context.Background(), &wantEdited, edits); err != nil {
				t.Fatal(err)
			}
			r := newRig(t)
			f := r.fetching(t, planned(t, from), from, Limits{}, nil)
			for i, tc := range []struct {
				e    Edits
				want []byte
			}{{Edits{}, want}, {edits, wantEdited.Bytes()}, {Edits{}, want}} {
				var got bytes.Buffer
				if err := f.WriteArchive(context.Background(), &got, tc.e); err != nil {
					t.Fatalf("write %d: %v", i, err)
				}
				if !bytes.Equal(got.Bytes(), tc.want) {
					t.Fatalf("write %d differs from the verified image's archive", i)
				}
				if !ended(got.Bytes()) || ended(got.Bytes()[:got.Len()-1024]) {
					t.Fatal("ended() does not tell a whole archive from one cut at a member's end")
				}
			}
			if d := img.Manifest.Layers[0].Digest; r.count(d) != 3 {
				t.Errorf("layer 0 fetched %d times for 3 writes", r.count(d))
			}
		})
	}
}

// TestFetchingRejects runs Open's table of hostile images through the
// streamed pull: each is refused with the same class of error, as the
// image's fault, and the archive podman got never ends.
func TestFetchingRejects(t *testing.T) {
	cases := append(rejectCases(t),
		rejectCase{"deleted.files beneath a diff link", deletedBeneathLink(t), podmanAnn, tarsafe.ErrUnsafe},
		rejectCase{"hostile entry in the CRIU layer", roleLayers(t, append(ckpttest.Archive(t), ckpttest.Entry{Name: "checkpoint/evil", Type: tar.TypeSymlink, Linkname: "/etc"})), podmanAnn, tarsafe.ErrUnsafe},
		rejectCase{"device in the CRIU layer", roleLayers(t, append(ckpttest.Archive(t), ckpttest.Entry{Name: "checkpoint/mem", Type: tar.TypeChar})), podmanAnn, tarsafe.ErrUnsafe},
		rejectCase{"a member in two layers", append(roleLayers(t, ckpttest.Archive(t)), ckpttest.Layer{Tar: ckpttest.Tar(t, []ckpttest.Entry{{Name: "checkpoint/inventory.img", Body: []byte("again")}}), Annotations: map[string]string{AnnLayerRole: string(RoleCRIU)}}), podmanAnn, tarsafe.ErrUnsafe},
		rejectCase{"CRIU layer over the size limit", roleLayers(t, ckpttest.Archive(t)), podmanAnn, tarsafe.ErrTooLarge},
	)
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			from := ckpttest.WriteImage(t, t.TempDir(), zstdLayers(t, tt.layers), tt.ann)
			meta, err := header(t, from)
			if err != nil {
				// Only images refused from their manifest alone.
				if !errors.Is(err, tt.wantErr) || len(tt.ann) != 0 {
					t.Fatalf("refused before any layer: %v", err)
				}
				return
			}
			lim := Limits{}
			if tt.wantErr == tarsafe.ErrTooLarge {
				lim = Limits{MaxLayerSize: 1 << 20, MaxLayerEntries: 100}
			}
			var out bytes.Buffer
			err = newRig(t).fetching(t, meta, from, lim, nil).WriteArchive(context.Background(), &out, Edits{})
			var source *SourceError
			if !errors.Is(err, tt.wantErr) || !errors.As(err, &source) {
				t.Fatalf("err = %v, want %v as the image's fault", err, tt.wantErr)
			}
			if transfer.Transient(source.Err) || errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("a bad image looks like a transient failure: %v", err)
			}
			if ended(out.Bytes()) {
				t.Error("the archive ends: podman would act on it")
			}
			t.Log(err)
		})
	}
}

// TestFetchingFaults: what goes wrong on the way. A blob cut before any
// entry went out is fetched again by the copy; one cut later is not (the
// restore is made again instead, so the failure must say it is
// transient); a layer bad as published, or altered on the way, is not
// fetched again; podman hanging up is podman's side.
func TestFetchingFaults(t *testing.T) {
	write := func(f *Fetching, w io.Writer) error {
		return f.WriteArchive(context.Background(), w, Edits{})
	}
	t.Run("cut before anything went out", func(t *testing.T) {
		from, meta0, _ := ourImage(t)
		_, want := opened(t, from)
		r := newRig(t)
		var once sync.Once
		f := r.fetching(t, planned(t, from), from, Limits{}, func(info types.BlobInfo, rc io.ReadCloser) io.ReadCloser {
			if info.Digest == meta0 {
				once.Do(func() { rc = &cutReader{ReadCloser: rc} })
			}
			return rc
		})
		var out bytes.Buffer
		if err := write(f, &out); err != nil || !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("err = %v (archive as Open's: %v)", err, bytes.Equal(out.Bytes(), want))
		}
		if r.count(meta0) != 2 {
			t.Fatalf("the cut layer was fetched %d times, want 2", r.count(meta0))
		}
	})
	t.Run("cut after part went out", func(t *testing.T) {
		from, _, criu := ourImage(t)
		_, want := opened(t, from)
		r := newRig(t)
		f := r.fetching(t, planned(t, from), from, Limits{}, cutOnce(criu))
		var out bytes.Buffer
		err := write(f, &out)
		var source *SourceError
		if !errors.As(err, &source) || !transfer.Transient(source.Err) || r.count(criu) != 1 || ended(out.Bytes()) {
			t.Fatalf("err = %v after %d fetches (archive ended: %v); want a transient source error after 1, the archive open", err, r.count(criu), ended(out.Bytes()))
		}
		out.Reset()
		if err := write(f, &out); err != nil || !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("written again: err = %v (archive as Open's: %v)", err, bytes.Equal(out.Bytes(), want))
		}
	})
	t.Run("member cut short as published", func(t *testing.T) {
		layers := roleLayers(t, ckpttest.Archive(t))
		layers[1].Tar = layers[1].Tar[:len(layers[1].Tar)/2] // its diff ID is of these bytes
		layers = zstdLayers(t, layers)
		from := ckpttest.WriteImage(t, t.TempDir(), layers, podmanAnn)
		criu := digest.FromBytes(layers[1].Tar)
		r := newRig(t)
		var out bytes.Buffer
		err := write(r.fetching(t, planned(t, from), from, Limits{}, nil), &out)
		var source *SourceError
		if !errors.Is(err, tarsafe.ErrUnsafe) || !errors.As(err, &source) || transfer.Transient(source.Err) || r.count(criu) != 1 || ended(out.Bytes()) {
			t.Fatalf("err = %v after %d fetches; want ErrUnsafe after 1, not transient", err, r.count(criu))
		}
	})
	t.Run("altered on the way", func(t *testing.T) {
		layers := zstdLayers(t, roleLayers(t, ckpttest.Archive(t)))
		from := ckpttest.WriteImage(t, t.TempDir(), layers, podmanAnn)
		criu := digest.FromBytes(layers[1].Tar)
		r := newRig(t)
		var out bytes.Buffer
		err := write(r.fetching(t, planned(t, from), from, Limits{}, func(info types.BlobInfo, rc io.ReadCloser) io.ReadCloser {
			if info.Digest != criu {
				return rc
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Error(err)
			}
			copy(b[len(b)/2:], "tampered in transit")
			return io.NopCloser(bytes.NewReader(b))
		}), &out)
		if !errors.Is(err, transfer.ErrDigestMismatch) || r.count(criu) != 1 || ended(out.Bytes()) {
			t.Fatalf("err = %v after %d fetches; want a digest mismatch after 1", err, r.count(criu))
		}
	})
	t.Run("podman hangs up", func(t *testing.T) {
		from, _, _ := ourImage(t)
		hangup := errors.New("podman hung up")
		err := write(newRig(t).fetching(t, planned(t, from), from, Limits{}, nil), &failAfter{n: 64 << 10, err: hangup})
		var source *SourceError
		if !errors.Is(err, hangup) || errors.As(err, &source) {
			t.Fatalf("err = %v, want podman's side's failure, not the image's", err)
		}
	})
}

// failAfter takes n bytes, then fails.
type failAfter struct {
	n   int
	err error
}

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		n := f.n
		f.n = 0
		return n, f.err
	}
	f.n -= len(p)
	return len(p), nil
}
