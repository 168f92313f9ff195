package ckpt

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/containers/image/v5/docker/reference"
	"github.com/containers/image/v5/types"
	"github.com/opencontainers/go-digest"

	"github.com/podman-migrate/podman-migrate/internal/asyncw"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
)

// CopyFunc copies the planned image into dest with copy.Image, which
// applies the signature policy before any blob and checks every blob
// against its digest. again says whether a failed attempt may be tried
// afresh: not once part of the image went to podman.
type CopyFunc func(ctx context.Context, dest types.ImageReference, again func() bool) error

// Fetching is a checkpoint image sent to podman while it is fetched: in
// place of a fetch into a staging directory, a verification and a second
// read, one copy.Image writes into a destination that checks every entry as
// Open does and passes it on into podman's archive. A layer's digest and
// diff ID are checked when its blob ends, the whole image when the last
// one has; only then does the archive end. Anything amiss ends the stream
// short instead, and podman, which saves the whole request body before it
// unpacks any of it, acts on none of it.
type Fetching struct {
	meta   *Metadata
	limits Limits
	copy   CopyFunc
}

var _ Archive = (*Fetching)(nil)

// NewFetching returns the image meta describes (as ReadMetadata read it,
// with its digest pinned by the copy) to be fetched by copy each time it is
// written. Layers are held to lim as in Open.
func NewFetching(meta *Metadata, lim Limits, copy CopyFunc) (*Fetching, error) {
	if err := checkLayerTable(meta); err != nil {
		return nil, err
	}
	return &Fetching{meta: meta, limits: lim.orDefault(), copy: copy}, nil
}

// Meta is what planning read.
func (f *Fetching) Meta() *Metadata { return f.meta }

// WriteArchive fetches the image and writes it to w as podman's archive,
// with the edits applied; each call fetches it again.
func (f *Fetching) WriteArchive(ctx context.Context, w io.Writer, e Edits) (retErr error) {
	aw := asyncw.New(w, stageBuffer, stageDepth)
	defer func() {
		if err := aw.Close(); retErr == nil {
			retErr = err
		}
	}()
	out := &emitter{edit: newApplying(e)}
	out.tw = tar.NewWriter(podmanSide{aw, out})
	s := &sink{f: f, out: out}
	s.reset()
	err := f.copy(ctx, sinkRef{s}, func() bool { return !s.out.wrote })
	switch {
	case s.out.err != nil:
		return s.out.err // podman stopped reading: its answer says why
	case s.bad() != nil:
		return &SourceError{s.bad()} // the image's fault, which err wraps
	case err != nil:
		return &SourceError{err}
	case s.next != len(s.v.meta.Manifest.Layers) || !s.manifest:
		return &SourceError{fmt.Errorf("%w: the copy wrote %d of %d layers", tarsafe.ErrUnsafe, s.next, len(s.v.meta.Manifest.Layers))}
	}
	if err := s.v.complete(true); err != nil {
		return &SourceError{err}
	}
	if err := s.out.edit.check("image"); err != nil {
		return err
	}
	return s.out.tw.Close() // only now does podman see the archive end
}

// SourceError is a streamed restore's failure on the image's side: its
// source failed, or the image was found bad. podman's failure to read the
// rest is only its consequence.
type SourceError struct{ Err error }

func (e *SourceError) Error() string { return e.Err.Error() }
func (e *SourceError) Unwrap() error { return e.Err }

// emitter writes checked entries into podman's archive.
type emitter struct {
	tw    *tar.Writer
	edit  *applying
	prior map[string]bool // files of the layers before
	wrote bool            // something went out: the copy cannot start over
	err   error           // writing to podman failed: not the image's fault
}

func (e *emitter) write(name string, h *tar.Header, body io.Reader, size int64) error {
	e.wrote = true
	return WriteMember(e.tw, name, h, body, size)
}

// podmanSide records a failure to write to podman, as opposed to one
// reading the image, which WriteMember's error does not tell apart.
type podmanSide struct {
	w io.Writer
	e *emitter
}

func (p podmanSide) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	if err != nil && p.e.err == nil {
		p.e.err = err
	}
	return n, err
}

func (e *emitter) dir(name string, h *tar.Header) error {
	if e == nil {
		return nil
	}
	name, _, _ = e.edit.member(name, h, nil, 0)
	return e.write(name, h, nil, 0)
}

func (e *emitter) seen(name string) bool { return e != nil && e.prior[name] }

// member returns where a regular file's checked content goes; nil when
// nothing is emitted.
func (e *emitter) member(name string, h *tar.Header) func(io.Reader) error {
	if e == nil {
		return nil
	}
	return func(body io.Reader) error {
		out, body, size := e.edit.member(name, h, body, h.Size)
		return e.write(out, h, body, size)
	}
}

// sink is the destination copy.Image writes the image into. It takes
// blobs one at a time (HasThreadSafePutBlob), so layers come in manifest
// order.
type sink struct {
	f   *Fetching
	out *emitter

	mu       sync.Mutex
	v        *verifier
	next     int   // the layer expected next
	failed   error // the first layer found bad
	manifest bool
}

// reset starts an attempt afresh; only while nothing went out.
func (s *sink) reset() {
	m := s.f.meta
	meta := Metadata{Manifest: m.Manifest, ManifestDigest: m.ManifestDigest, ImageConfig: m.ImageConfig, Options: m.Options}
	s.v = &verifier{meta: &meta, limits: s.f.limits, seen: map[string]bool{}}
	s.out.prior = s.v.seen
	s.next, s.failed, s.manifest = 0, nil, false
}

func (s *sink) bad() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// sinkRef names the sink for copy.Image; nothing else can open it.
type sinkRef struct{ s *sink }

var errSinkOnly = errors.New("podman's restore can only be written to")

func (sinkRef) Transport() types.ImageTransport         { return sinkTransport{} }
func (sinkRef) StringWithinTransport() string           { return "restore" }
func (sinkRef) DockerReference() reference.Named        { return nil }
func (sinkRef) PolicyConfigurationIdentity() string     { return "" }
func (sinkRef) PolicyConfigurationNamespaces() []string { return nil }
func (sinkRef) NewImage(context.Context, *types.SystemContext) (types.ImageCloser, error) {
	return nil, errSinkOnly
}
func (sinkRef) NewImageSource(context.Context, *types.SystemContext) (types.ImageSource, error) {
	return nil, errSinkOnly
}
func (sinkRef) DeleteImage(context.Context, *types.SystemContext) error { return errSinkOnly }

// NewImageDestination opens the sink for one copy attempt.
func (r sinkRef) NewImageDestination(context.Context, *types.SystemContext) (types.ImageDestination, error) {
	s := r.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.out.wrote {
		return nil, errors.New("part of the checkpoint already went to podman: it cannot be fetched again")
	}
	if s.failed != nil {
		return nil, s.failed
	}
	s.reset()
	return sinkDest{s}, nil
}

type sinkTransport struct{}

func (sinkTransport) Name() string { return "podman-restore" }
func (sinkTransport) ParseReference(string) (types.ImageReference, error) {
	return nil, errSinkOnly
}
func (sinkTransport) ValidatePolicyConfigurationScope(string) error { return errSinkOnly }

// sinkDest implements only the public interface: copy.Image wraps it, and
// every blob then comes through PutBlob.
type sinkDest struct{ s *sink }

func (d sinkDest) Reference() types.ImageReference                             { return sinkRef(d) }
func (sinkDest) Close() error                                                  { return nil }
func (sinkDest) SupportedManifestMIMETypes() []string                          { return nil } // as published
func (sinkDest) SupportsSignatures(context.Context) error                      { return nil }
func (sinkDest) DesiredLayerCompression() types.LayerCompression               { return types.PreserveOriginal }
func (sinkDest) AcceptsForeignLayerURLs() bool                                 { return false }
func (sinkDest) MustMatchRuntimeOS() bool                                      { return false }
func (sinkDest) IgnoresEmbeddedDockerReference() bool                          { return true }
func (sinkDest) HasThreadSafePutBlob() bool                                    { return false }
func (sinkDest) PutSignatures(context.Context, [][]byte, *digest.Digest) error { return nil }
func (sinkDest) Commit(context.Context, types.UnparsedImage) error             { return nil }

// TryReusingBlob reuses nothing: every layer must come through PutBlob.
func (sinkDest) TryReusingBlob(context.Context, types.BlobInfo, types.BlobInfoCache, bool) (bool, types.BlobInfo, error) {
	return false, types.BlobInfo{}, nil
}

// PutManifest accepts only the manifest that was planned.
func (d sinkDest) PutManifest(_ context.Context, m []byte, instance *digest.Digest) error {
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if got := digest.FromBytes(m); instance != nil || got != s.v.meta.ManifestDigest {
		return fmt.Errorf("%w: the fetched manifest is %s, the planned one %s", tarsafe.ErrUnsafe, got, s.v.meta.ManifestDigest)
	}
	s.manifest = true
	return nil
}

// PutBlob checks a layer while its entries go on to podman. It reads the
// blob to its end whatever the verdict, so that copy.Image checks its
// digest: a blob altered on the way is a digest mismatch (or a transport
// failure), not a bad image.
func (d sinkDest) PutBlob(_ context.Context, stream io.Reader, info types.BlobInfo, _ types.BlobInfoCache, isConfig bool) (types.BlobInfo, error) {
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return types.BlobInfo{}, s.failed
	}
	layers := s.v.meta.Manifest.Layers
	want := s.v.meta.Manifest.Config
	if !isConfig {
		if s.next >= len(layers) {
			return types.BlobInfo{}, fmt.Errorf("%w: blob %s is not a layer of the planned image", tarsafe.ErrUnsafe, info.Digest)
		}
		want = layers[s.next]
	}
	if info.Digest != want.Digest {
		return types.BlobInfo{}, fmt.Errorf("%w: blob %s where the planned image has %s", tarsafe.ErrUnsafe, info.Digest, want.Digest)
	}
	body := &boundedBlob{r: stream, max: want.Size}
	if isConfig {
		n, err := io.Copy(io.Discard, body)
		return types.BlobInfo{Digest: info.Digest, Size: n}, err
	}
	i := s.next
	f, err := s.v.check(i, body, s.out)
	switch {
	case s.out.err != nil:
		return types.BlobInfo{}, fmt.Errorf("sending layer %d to podman: %w", i, s.out.err)
	case body.err != nil:
		return types.BlobInfo{}, body.err // the transport's, or a digest mismatch
	}
	if _, derr := io.Copy(io.Discard, body); derr != nil {
		return types.BlobInfo{}, derr
	}
	if err == nil {
		err = s.v.add(i, f)
	}
	if err != nil {
		err = &badLayer{fmt.Errorf("verifying layer %d (%s): %w", i, want.Digest, err)}
		s.failed = err
		return types.BlobInfo{}, err
	}
	s.next++
	return types.BlobInfo{Digest: info.Digest, Size: body.n}, nil
}

// badLayer is a layer that failed verification although its bytes matched
// their digest: the image's fault, for good. It hides io.ErrUnexpectedEOF
// (a member cut short), which transfer.Copy takes for a connection dropped
// mid-blob and retries; errors.Is and errors.As see the rest.
type badLayer struct{ err error }

func (e *badLayer) Error() string { return e.err.Error() }

func (e *badLayer) Is(target error) bool {
	return target != io.ErrUnexpectedEOF && errors.Is(e.err, target)
}

func (e *badLayer) As(target any) bool { return errors.As(e.err, target) }
