package ckpt

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/containers/image/v5/image"
	"github.com/containers/image/v5/types"
	"github.com/opencontainers/go-digest"

	"github.com/podman-migrate/podman-migrate/internal/asyncw"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
)

// StreamVerifier verifies a checkpoint image while copy.Image writes it, so
// that the image is verified when the copy ends: each layer as its blob
// streams through the destination's PutBlob, and the whole image (members
// across layers, the CRIU images, deleted.files) in Image. It holds what
// Open checks, and Image returns what Open would.
//
// One StreamVerifier serves every destination it wraps: transfer.Copy runs
// copy.Image again after a transient failure, with a new destination, and
// a layer verified by an earlier attempt stays verified (its blob, named by
// its digest, is the one copy.Image then reuses).
type StreamVerifier struct {
	v     *verifier             // meta and limits; merging is Image's
	first map[digest.Digest]int // blob digest → the first layer with it

	mu     sync.Mutex
	finds  []*layerFinds // by layer; nil until a PutBlob verified it
	failed error         // the first layer found bad
	late   int           // layers Image verified from the copy
}

// NewStreamVerifier returns a verifier of the image meta describes (as
// ReadMetadata read it: its manifest, digest and config are what the
// layers are checked against; its members are read again from the layers).
// Layers are held to lim as in Open.
func NewStreamVerifier(meta *Metadata, lim Limits) (*StreamVerifier, error) {
	if err := checkLayerTable(meta); err != nil {
		return nil, err
	}
	m := Metadata{Manifest: meta.Manifest, ManifestDigest: meta.ManifestDigest, ImageConfig: meta.ImageConfig, Options: meta.Options}
	s := &StreamVerifier{
		v:     &verifier{meta: &m, limits: lim.orDefault()},
		first: map[digest.Digest]int{},
		finds: make([]*layerFinds, len(m.Manifest.Layers)),
	}
	for i := len(m.Manifest.Layers) - 1; i >= 0; i-- {
		s.first[m.Manifest.Layers[i].Digest] = i
	}
	return s, nil
}

// Reference returns ref with destinations that verify through s.
func (s *StreamVerifier) Reference(ref types.ImageReference) types.ImageReference {
	return verifyingRef{ImageReference: ref, s: s}
}

// Destination wraps inner so that every layer blob written through it is
// verified on its way in.
func (s *StreamVerifier) Destination(inner types.ImageDestination) types.ImageDestination {
	return &verifyingDest{ImageDestination: inner, s: s}
}

// Err returns the first layer found bad, if any: the reason a copy through
// s failed, rather than the transport's error it is wrapped in.
func (s *StreamVerifier) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failed
}

// Image finishes the verification once copy.Image has written the image
// to where src reads it: the manifest must be the one verified, layers no
// PutBlob brought (blobs copy.Image reused) are verified from src, and the
// whole-image checks run. The Image reads its layers from src.
func (s *StreamVerifier) Image(ctx context.Context, src types.ImageSource) (*Image, error) {
	if err := s.Err(); err != nil {
		return nil, err
	}
	mb, _, err := image.UnparsedInstance(src, nil).Manifest(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the copied manifest: %w", err)
	}
	if d := digest.FromBytes(mb); d != s.v.meta.ManifestDigest {
		return nil, fmt.Errorf("%w: the copied manifest is %s, the verified one %s", tarsafe.ErrUnsafe, d, s.v.meta.ManifestDigest)
	}
	m := *s.v.meta
	v := &verifier{src: src, meta: &m, limits: s.v.limits, seen: map[string]bool{}}
	for i, desc := range m.Manifest.Layers {
		s.mu.Lock()
		f := s.finds[i]
		s.mu.Unlock()
		if f == nil {
			// Never seen whole by PutBlob: check it as stored, digest too.
			if f, err = v.fromSource(ctx, i, true); err != nil {
				return nil, fmt.Errorf("verifying layer %d (%s): %w", i, desc.Digest, err)
			}
			s.mu.Lock()
			s.late++
			s.mu.Unlock()
		}
		if err := v.add(i, f); err != nil {
			return nil, fmt.Errorf("verifying layer %d (%s): %w", i, desc.Digest, err)
		}
	}
	if err := v.complete(true); err != nil {
		return nil, err
	}
	return &Image{Metadata: m, src: src, limits: v.limits}, nil
}

type verifyingRef struct {
	types.ImageReference
	s *StreamVerifier
}

func (r verifyingRef) NewImageDestination(ctx context.Context, sys *types.SystemContext) (types.ImageDestination, error) {
	d, err := r.ImageReference.NewImageDestination(ctx, sys)
	if err != nil {
		return nil, err
	}
	return r.s.Destination(d), nil
}

// verifyingDest implements only the public interface, on purpose:
// copy.Image wraps it (imagedestination.FromPublic), and every blob then
// comes through PutBlob, none through PutBlobPartial.
type verifyingDest struct {
	types.ImageDestination
	s *StreamVerifier
}

type verdict struct {
	f   *layerFinds
	err error
}

// PutBlob passes the blob on to the inner destination, and a layer's
// bytes to the verifier on the way. It fails with the verifier's error
// only once the inner PutBlob has read the whole blob without error, that
// is once copy.Image has checked it against its digest: a blob altered on
// the way is a digest mismatch (or a transport error, retried), not a bad
// image.
func (d *verifyingDest) PutBlob(ctx context.Context, stream io.Reader, info types.BlobInfo, cache types.BlobInfoCache, isConfig bool) (types.BlobInfo, error) {
	i, ok := d.s.first[info.Digest]
	if isConfig || !ok {
		return d.ImageDestination.PutBlob(ctx, stream, info, cache, isConfig)
	}
	// A bounded buffer (2 MiB) between the blob and its verifier lets
	// fetching and verifying run at once.
	pipe := asyncw.NewPipe(64<<10, 32)
	res := make(chan verdict, 1)
	go func() {
		f, err := d.s.v.check(i, pipe)
		// Keep reading whatever the verdict, so the blob is written
		// whole and its digest checked.
		_, _ = io.Copy(io.Discard, pipe)
		res <- verdict{f, err}
	}()
	tee := io.TeeReader(stream, pipe)
	out, err := d.ImageDestination.PutBlob(ctx, tee, info, cache, isConfig)
	if err == nil {
		// Had inner stopped short, the verifier would have a cut blob.
		_, err = io.Copy(io.Discard, tee)
	}
	pipe.CloseWithError(err)
	r := <-res
	if err != nil {
		return types.BlobInfo{}, err
	}
	if r.err != nil {
		err := fmt.Errorf("verifying layer %d (%s): %w", i, d.s.v.meta.Manifest.Layers[i].Digest, r.err)
		d.s.mu.Lock()
		if d.s.failed == nil {
			d.s.failed = err
		}
		d.s.finds[i] = nil
		d.s.mu.Unlock()
		return types.BlobInfo{}, &badLayer{err}
	}
	d.s.mu.Lock()
	d.s.finds[i] = r.f
	d.s.mu.Unlock()
	return out, nil
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
