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

	imgcopy "github.com/containers/image/v5/copy"
	"github.com/containers/image/v5/oci/layout"
	"github.com/containers/image/v5/signature"
	"github.com/containers/image/v5/types"
	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
	"github.com/podman-migrate/podman-migrate/internal/dump"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// hookedRef lets a test wrap the sources and destinations of a reference.
type hookedRef struct {
	types.ImageReference
	src  func(types.ImageSource) types.ImageSource
	dest func(types.ImageDestination) types.ImageDestination
}

func (r hookedRef) NewImageSource(ctx context.Context, sys *types.SystemContext) (types.ImageSource, error) {
	s, err := r.ImageReference.NewImageSource(ctx, sys)
	if err != nil || r.src == nil {
		return s, err
	}
	return r.src(s), nil
}

func (r hookedRef) NewImageDestination(ctx context.Context, sys *types.SystemContext) (types.ImageDestination, error) {
	d, err := r.ImageReference.NewImageDestination(ctx, sys)
	if err != nil || r.dest == nil {
		return d, err
	}
	return r.dest(d), nil
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

// countingDest counts the blobs PutBlob receives; with barrier > 0, each
// layer's PutBlob waits until barrier of them are under way.
type countingDest struct {
	types.ImageDestination
	barrier int

	mu          sync.Mutex
	puts        map[digest.Digest]int
	inFlight    int
	maxInFlight int
	release     chan struct{}
}

func newCountingDest(inner types.ImageDestination, barrier int) *countingDest {
	return &countingDest{ImageDestination: inner, barrier: barrier, puts: map[digest.Digest]int{}, release: make(chan struct{})}
}

func (d *countingDest) PutBlob(ctx context.Context, stream io.Reader, info types.BlobInfo, cache types.BlobInfoCache, isConfig bool) (types.BlobInfo, error) {
	d.mu.Lock()
	d.puts[info.Digest]++
	if !isConfig {
		d.inFlight++
		d.maxInFlight = max(d.maxInFlight, d.inFlight)
		if d.inFlight == d.barrier {
			close(d.release)
		}
	}
	d.mu.Unlock()
	if !isConfig && d.barrier > 0 {
		select {
		case <-d.release:
		case <-time.After(10 * time.Second):
		}
	}
	defer func() {
		if !isConfig {
			d.mu.Lock()
			d.inFlight--
			d.mu.Unlock()
		}
	}()
	return d.ImageDestination.PutBlob(ctx, stream, info, cache, isConfig)
}

func (d *countingDest) count(dg digest.Digest) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.puts[dg]
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

func acceptAll(t *testing.T) *signature.PolicyContext {
	t.Helper()
	pc, err := signature.NewPolicyContext(&signature.Policy{Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Destroy() })
	return pc
}

// copyImage runs copy.Image from src to dst as transfer.Copy does for a
// pull, with a blob info cache of its own.
func copyImage(t *testing.T, dst, src types.ImageReference) error {
	t.Helper()
	sys := &types.SystemContext{BlobInfoCacheDir: t.TempDir()}
	_, err := imgcopy.Image(context.Background(), acceptAll(t), dst, src, &imgcopy.Options{
		ReportWriter: io.Discard, SourceCtx: sys, DestinationCtx: sys, RemoveSignatures: true,
	})
	return err
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

// streamed is the outcome of one copy through a StreamVerifier.
type streamed struct {
	sv    *StreamVerifier
	dst   types.ImageReference // the staged layout
	stage string               // where it failed: "copy" or "image"
	img   *Image
	err   error
}

// streamCopy copies from into a new layout through a StreamVerifier for
// meta, as pull does, and finishes the verification there. wrap, if not
// nil, wraps the layout's destination inside the verifying one.
func streamCopy(t *testing.T, meta *Metadata, from types.ImageReference, dir string, wrap func(types.ImageDestination) types.ImageDestination) streamed {
	t.Helper()
	sv, err := NewStreamVerifier(meta, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	dst, err := layout.NewReference(dir, "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	out := streamed{sv: sv, dst: dst}
	if out.err = copyImage(t, sv.Reference(hookedRef{ImageReference: dst, dest: wrap}), from); out.err != nil {
		out.stage = "copy"
		return out
	}
	src, err := dst.NewImageSource(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	if out.img, out.err = sv.Image(context.Background(), src); out.err != nil {
		out.stage = "image"
	}
	return out
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

// sameAsOpen checks that a streamed image is what Open gives for ref.
func sameAsOpen(t *testing.T, got *Image, ref types.ImageReference) {
	t.Helper()
	want, wantArchive := opened(t, ref)
	if diff := cmp.Diff(want.Metadata, got.Metadata, cmp.AllowUnexported(dump.Config{})); diff != "" {
		t.Errorf("metadata differs from Open's (-Open +streamed):\n%s", diff)
	}
	if !bytes.Equal(wantArchive, archiveOf(t, got)) {
		t.Error("WriteArchive output differs from Open's")
	}
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

// TestStreamVerifyRejects runs Open's table of hostile images through the
// streaming path: each must be refused with the same class of error, by
// the layer's PutBlob or by the whole-image checks, never let through.
func TestStreamVerifyRejects(t *testing.T) {
	cases := append(rejectCases(t),
		rejectCase{"deleted.files beneath a diff link", deletedBeneathLink(t), podmanAnn, tarsafe.ErrUnsafe},
		rejectCase{"hostile entry in the CRIU layer", roleLayers(t, append(ckpttest.Archive(t), ckpttest.Entry{Name: "checkpoint/evil", Type: tar.TypeSymlink, Linkname: "/etc"})), podmanAnn, tarsafe.ErrUnsafe},
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
			sv, err := NewStreamVerifier(meta, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantErr == tarsafe.ErrTooLarge {
				sv.v.limits = Limits{MaxLayerSize: 1 << 20, MaxLayerEntries: 100}
			}
			dst, err := layout.NewReference(t.TempDir(), "checkpoint")
			if err != nil {
				t.Fatal(err)
			}
			stage := "copy"
			err = copyImage(t, sv.Reference(dst), from)
			if err == nil {
				stage = "image"
				src, serr := dst.NewImageSource(context.Background(), nil)
				if serr != nil {
					t.Fatal(serr)
				}
				defer src.Close()
				// Else the layers went past the verifier unrecognised.
				if mb, _, err := src.GetManifest(context.Background(), nil); err != nil || digest.FromBytes(mb) != meta.ManifestDigest {
					t.Fatalf("the copy is not the image verified (%v)", err)
				}
				_, err = sv.Image(context.Background(), src)
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("%s: err = %v, want %v", stage, err, tt.wantErr)
			}
			if stage == "copy" && !errors.Is(sv.Err(), tt.wantErr) {
				t.Errorf("the copy failed, but Err() = %v", sv.Err())
			}
			if stage == "image" && sv.late != 0 {
				t.Errorf("%d layers verified after the copy, want all while copied", sv.late)
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("a bad image looks like a dropped connection: %v", err)
			}
			t.Logf("%s: %v", stage, err)
		})
	}
}

// TestStreamVerifyMatchesOpen: good images, podman's single layer and our
// four, verify while copied, and give the Image Open gives.
func TestStreamVerifyMatchesOpen(t *testing.T) {
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
	for name, mk := range images {
		t.Run(name, func(t *testing.T) {
			from := mk()
			s := streamCopy(t, planned(t, from), threadSafe(from, nil), t.TempDir(), nil)
			if s.err != nil {
				t.Fatalf("%s: %v", s.stage, s.err)
			}
			if s.sv.late != 0 {
				t.Errorf("%d layers verified after the copy, want none", s.sv.late)
			}
			sameAsOpen(t, s.img, s.dst)
		})
	}
}

// TestStreamVerifyConcurrentLayers holds every layer's PutBlob until all
// four are under way: the verifier must work on them at once.
func TestStreamVerifyConcurrentLayers(t *testing.T) {
	b, dir := build(t, ckpttest.Tar(t, ckpttest.Archive(t)), "zstd")
	from, err := layout.NewReference(dir, "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	var cd *countingDest
	s := streamCopy(t, planned(t, from), threadSafe(from, nil), t.TempDir(), func(d types.ImageDestination) types.ImageDestination {
		cd = newCountingDest(d, len(b.Layers))
		return cd
	})
	if s.err != nil {
		t.Fatalf("%s: %v", s.stage, s.err)
	}
	if cd.maxInFlight != len(b.Layers) {
		t.Fatalf("%d layers at once, want %d", cd.maxInFlight, len(b.Layers))
	}
	if s.sv.late != 0 {
		t.Errorf("%d layers verified after the copy, want none", s.sv.late)
	}
	sameAsOpen(t, s.img, s.dst)
}

// TestStreamVerifyReusedLayers: blobs copy.Image finds already in the
// destination never pass through PutBlob; Image must verify them there.
func TestStreamVerifyReusedLayers(t *testing.T) {
	b, dir := build(t, ckpttest.Tar(t, ckpttest.Archive(t)), "zstd")
	from, err := layout.NewReference(dir, "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	meta := planned(t, from)
	// The CRIU layer's blob is there before the copy.
	criu := b.Layers[1].Desc.Digest
	staging := t.TempDir()
	blob := func(root string, d digest.Digest) string {
		return filepath.Join(root, "blobs", d.Algorithm().String(), d.Encoded())
	}
	if err := os.MkdirAll(filepath.Dir(blob(staging, criu)), 0o755); err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile(blob(dir, criu))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(blob(staging, criu), body, 0o644); err != nil {
		t.Fatal(err)
	}
	var cd *countingDest
	s := streamCopy(t, meta, threadSafe(from, nil), staging, func(d types.ImageDestination) types.ImageDestination {
		cd = newCountingDest(d, 0)
		return cd
	})
	if s.err != nil {
		t.Fatalf("%s: %v", s.stage, s.err)
	}
	if cd.count(criu) != 0 || s.sv.late != 1 {
		t.Fatalf("CRIU layer PutBlob %d times, %d layers verified after the copy; want 0 and 1", cd.count(criu), s.sv.late)
	}
	sameAsOpen(t, s.img, s.dst)

	t.Run("hostile", func(t *testing.T) {
		// A hostile image already in the staging directory, copied
		// again: nothing comes through PutBlob, and Image refuses it.
		hostile := ckpttest.WriteImage(t, t.TempDir(), zstdLayers(t, roleLayers(t, append(ckpttest.Archive(t), ckpttest.Entry{Name: "checkpoint/mem", Type: tar.TypeChar}))), podmanAnn)
		staging := t.TempDir()
		dst, err := layout.NewReference(staging, "checkpoint")
		if err != nil {
			t.Fatal(err)
		}
		if err := copyImage(t, dst, hostile); err != nil {
			t.Fatal(err)
		}
		meta, err := header(t, hostile)
		if err != nil {
			t.Fatal(err)
		}
		s := streamCopy(t, meta, hostile, staging, nil)
		if s.stage != "image" || !errors.Is(s.err, tarsafe.ErrUnsafe) || s.sv.late == 0 {
			t.Fatalf("%s: err = %v, %d layers verified after the copy; want ErrUnsafe from Image", s.stage, s.err, s.sv.late)
		}
	})
}

// TestStreamVerifyRetriedLayer: a first copy.Image attempt loses the CRIU
// layer mid-blob; the second sends it through PutBlob again, and the
// verifier judges that one afresh.
func TestStreamVerifyRetriedLayer(t *testing.T) {
	b, dir := build(t, ckpttest.Tar(t, ckpttest.Archive(t)), "zstd")
	from, err := layout.NewReference(dir, "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	criu := b.Layers[1].Desc.Digest
	sv, err := NewStreamVerifier(planned(t, from), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	dst, err := layout.NewReference(t.TempDir(), "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	cd := newCountingDest(nil, 0)
	to := sv.Reference(hookedRef{ImageReference: dst, dest: func(d types.ImageDestination) types.ImageDestination {
		cd.ImageDestination = d
		return cd
	}})
	flaky := threadSafe(from, cutOnce(criu))
	err = copyImage(t, to, flaky)
	if !errors.Is(err, io.ErrUnexpectedEOF) || sv.Err() != nil {
		t.Fatalf("first attempt: err = %v, verifier %v; want the cut blob, no verdict", err, sv.Err())
	}
	if err := copyImage(t, to, flaky); err != nil {
		t.Fatalf("second attempt: %v", err)
	}
	if cd.count(criu) != 2 {
		t.Fatalf("CRIU layer PutBlob %d times, want 2", cd.count(criu))
	}
	src, err := dst.NewImageSource(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	img, err := sv.Image(context.Background(), src)
	if err != nil {
		t.Fatal(err)
	}
	if sv.late != 0 {
		t.Errorf("%d layers verified after the copy, want none", sv.late)
	}
	sameAsOpen(t, img, dst)
}

// TestStreamVerifyThroughTransferCopy runs the verifier inside
// transfer.Copy's retry loop: a dropped connection is retried and the
// image verified; a layer that is bad as published is refused at once,
// not fetched again; a blob altered on the way is a digest mismatch.
func TestStreamVerifyThroughTransferCopy(t *testing.T) {
	policy := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	o := transfer.Options{SignaturePolicy: policy, Retries: 3, RetryDelay: time.Millisecond}
	// counted returns ref, counting the GetBlob calls of digest dg.
	counted := func(ref types.ImageReference, dg digest.Digest, alter func(types.BlobInfo, io.ReadCloser) io.ReadCloser) (types.ImageReference, *int) {
		var mu sync.Mutex
		n := new(int)
		return threadSafe(ref, func(info types.BlobInfo, rc io.ReadCloser) io.ReadCloser {
			if info.Digest == dg {
				mu.Lock()
				*n++
				mu.Unlock()
			}
			if alter != nil {
				return alter(info, rc)
			}
			return rc
		}), n
	}
	pull := func(meta *Metadata, from types.ImageReference) (*StreamVerifier, types.ImageReference, error) {
		sv, err := NewStreamVerifier(meta, Limits{})
		if err != nil {
			t.Fatal(err)
		}
		dst, err := layout.NewReference(t.TempDir(), "checkpoint")
		if err != nil {
			t.Fatal(err)
		}
		_, err = transfer.Copy(context.Background(), "pulling", sv.Reference(dst), from, o)
		return sv, dst, err
	}

	t.Run("dropped once", func(t *testing.T) {
		b, dir := build(t, ckpttest.Tar(t, ckpttest.Archive(t)), "zstd")
		from, err := layout.NewReference(dir, "checkpoint")
		if err != nil {
			t.Fatal(err)
		}
		criu := b.Layers[1].Desc.Digest
		flaky, n := counted(from, criu, cutOnce(criu))
		sv, dst, err := pull(planned(t, from), flaky)
		if err != nil || *n != 2 {
			t.Fatalf("err = %v after %d fetches of the cut blob; want success after 2", err, *n)
		}
		src, err := dst.NewImageSource(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		img, err := sv.Image(context.Background(), src)
		if err != nil {
			t.Fatal(err)
		}
		sameAsOpen(t, img, dst)
	})

	t.Run("member cut short as published", func(t *testing.T) {
		layers := roleLayers(t, ckpttest.Archive(t))
		criu := layers[1].Tar
		layers[1].Tar = criu[:len(criu)/2] // its diff ID is of these bytes
		layers = zstdLayers(t, layers)
		from := ckpttest.WriteImage(t, t.TempDir(), layers, podmanAnn)
		dg := digest.FromBytes(layers[1].Tar)
		ref, n := counted(from, dg, nil)
		sv, _, err := pull(planned(t, from), ref)
		if !errors.Is(err, tarsafe.ErrUnsafe) || !errors.Is(sv.Err(), tarsafe.ErrUnsafe) || *n != 1 {
			t.Fatalf("err = %v (verifier: %v) after %d fetches; want ErrUnsafe after 1", err, sv.Err(), *n)
		}
	})

	t.Run("altered on the way", func(t *testing.T) {
		layers := zstdLayers(t, roleLayers(t, ckpttest.Archive(t)))
		from := ckpttest.WriteImage(t, t.TempDir(), layers, podmanAnn)
		dg := digest.FromBytes(layers[1].Tar)
		// Still zstd, so it reaches the verifier, which refuses it; the
		// digest tells what happened.
		tamper := func(info types.BlobInfo, rc io.ReadCloser) io.ReadCloser {
			if info.Digest != dg {
				return rc
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				t.Error(err)
			}
			copy(b[len(b)/2:], "tampered in transit")
			return io.NopCloser(bytes.NewReader(b))
		}
		ref, n := counted(from, dg, tamper)
		sv, _, err := pull(planned(t, from), ref)
		if !errors.Is(err, transfer.ErrDigestMismatch) || sv.Err() != nil || *n != 1 {
			t.Fatalf("err = %v (verifier: %v) after %d fetches; want a digest mismatch after 1, no verdict", err, sv.Err(), *n)
		}
	})
}
