package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containers/image/v5/copy"
	"github.com/containers/image/v5/types"
	"github.com/opencontainers/go-digest"

	"github.com/podman-migrate/podman-migrate/internal/asyncw"
)

// Streamer is the staging destination a push builds its image in (an OCI
// layout), which also uploads some layers to the registry while they are
// written, so the upload overlaps the build instead of following it. It
// only ever adds blobs: the staged image stays complete, and Copy still
// commits it (manifest, signatures) and uploads whatever the registry
// lacks, finding the streamed blobs already there. A streamed upload that
// fails costs nothing but its bytes: Copy sends that blob again from
// staging, with its retries.
//
// A streamed blob is hashed once, by the registry destination (which must
// know its digest), and stored in the layout under that digest by Streamer
// itself: the layout destination would hash it a second time. Copy checks
// it against that digest if it ever reads it.
type Streamer struct {
	types.ImageDestination        // staging
	blobs                  string // the layout's blobs/sha256
	remote                 types.ImageDestination
	want                   func(types.BlobInfo) bool
	log                    io.Writer
	// Stall is how long a streamed upload may take no bytes before it
	// is given up (the build goes on; Copy sends the blob). Without it, a
	// registry that serialises uploads, or one that hangs, would hold
	// the build forever: the layers are written in turns.
	Stall time.Duration

	uploaded Blobs
}

// DefaultStall is Streamer.Stall's default.
const DefaultStall = 10 * time.Second

// NewStreamer wraps staging, the destination of the OCI layout in dir;
// every layer blob for which want is true is also uploaded to dest as it
// is written. Notes on failed uploads go to log. Close closes both
// destinations; on an error, the caller closes staging.
func NewStreamer(ctx context.Context, staging types.ImageDestination, dir string, dest types.ImageReference, o Options, want func(types.BlobInfo) bool, log io.Writer) (*Streamer, error) {
	blobs := filepath.Join(dir, "blobs", digest.Canonical.String())
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return nil, err
	}
	remote, err := dest.NewImageDestination(ctx, o.SystemContext())
	if err != nil {
		return nil, &Error{Op: "pushing", Ref: Display(dest), Err: classify(err)}
	}
	if log == nil {
		log = io.Discard
	}
	return &Streamer{ImageDestination: staging, blobs: blobs, remote: remote, want: want, log: log, Stall: DefaultStall}, nil
}

// Uploaded reports whether the blob with digest d reached the registry
// while it was built; never, for a nil Streamer.
func (s *Streamer) Uploaded(d digest.Digest) bool {
	return s != nil && s.uploaded.Has(d)
}

// Close closes the staging and the registry destinations. The registry
// keeps the uploaded blobs; without a manifest naming them, its garbage
// collection removes them.
func (s *Streamer) Close() error {
	return errors.Join(s.ImageDestination.Close(), s.remote.Close())
}

// PutBlob stores the blob in staging; a wanted layer also goes to the
// registry at the same pace.
func (s *Streamer) PutBlob(ctx context.Context, stream io.Reader, info types.BlobInfo, cache types.BlobInfoCache, isConfig bool) (types.BlobInfo, error) {
	if isConfig || !s.want(info) {
		return s.ImageDestination.PutBlob(ctx, stream, info, cache, isConfig)
	}
	f, err := os.CreateTemp(s.blobs, ".streamed-")
	if err != nil {
		return types.BlobInfo{}, err
	}
	defer os.Remove(f.Name()) // renamed away on success

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	var sent types.BlobInfo
	go func() {
		var err error
		sent, err = s.remote.PutBlob(rctx, pr, types.BlobInfo{Digest: info.Digest, Size: info.Size}, cache, false)
		// Unblock the tee if the registry stopped reading.
		pr.CloseWithError(errUploadEnded)
		done <- err
	}()
	tee := &bestEffort{w: asyncw.New(pw, 512<<10, 2), after: s.Stall}
	tee.stall = time.AfterFunc(time.Hour, func() {
		cancel()
		pr.CloseWithError(errStalled)
	})
	tee.stall.Stop()
	n, err := io.Copy(f, io.TeeReader(stream, tee))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		pw.CloseWithError(err)
		tee.w.Close()
		<-done
		return types.BlobInfo{}, err
	}
	tee.w.Close() // a failed upload reports its error through done
	pw.Close()
	// The registry answers once it has stored the blob; one that does not
	// is given up like a stalled one.
	var uerr error
	select {
	case uerr = <-done:
	case <-time.After(s.Stall):
		tee.stalled = true
		cancel()
		<-done
	}
	if tee.stalled {
		uerr = fmt.Errorf("the registry took no data for %s", s.Stall)
	}
	d := sent.Digest
	if uerr == nil && (sent.Size != n || d.Validate() != nil) {
		uerr = fmt.Errorf("the registry stored %d bytes as %q, %d were sent", sent.Size, d, n)
	}
	if uerr != nil {
		if d, err = fileDigest(f.Name()); err != nil {
			return types.BlobInfo{}, err
		}
		fmt.Fprintf(s.log, "Uploading layer %s while building it failed (%v); it is sent again from staging\n", d, classify(uerr))
	}
	if err := os.Rename(f.Name(), filepath.Join(s.blobs, d.Encoded())); err != nil {
		return types.BlobInfo{}, err
	}
	if uerr == nil {
		s.uploaded.add(d)
	}
	return types.BlobInfo{Digest: d, Size: n}, nil
}

// fileDigest hashes a staged blob whose upload failed.
func fileDigest(name string) (digest.Digest, error) {
	f, err := os.Open(name)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return digest.Canonical.FromReader(f)
}

var (
	errUploadEnded = errors.New("upload ended")
	errStalled     = errors.New("upload stalled")
)

// bestEffort forwards writes until the first failure, or until one waits
// longer than after, then drops them: a registry that hangs up or stalls
// must not fail or hold the staging copy.
type bestEffort struct {
	w       *asyncw.Writer
	stall   *time.Timer // gives the upload up
	after   time.Duration
	failed  bool
	stalled bool
}

func (b *bestEffort) Write(p []byte) (int, error) {
	if !b.failed {
		b.stall.Reset(b.after)
		_, err := b.w.Write(p)
		if !b.stall.Stop() {
			b.stalled = true
		}
		if err != nil || b.stalled {
			b.failed = true
		}
	}
	return len(p), nil
}

// Blobs is a set of blob digests, safe for concurrent use.
type Blobs struct {
	mu sync.Mutex
	m  map[digest.Digest]bool
}

// Has reports whether d is in the set.
func (b *Blobs) Has(d digest.Digest) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.m[d]
}

func (b *Blobs) add(d digest.Digest) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.m == nil {
		b.m = map[digest.Digest]bool{}
	}
	b.m[d] = true
}

// watch makes copy.Image report the blobs it starts reading, in any
// attempt (a blob a failed attempt sent is skipped by the next one, but
// was sent all the same); the returned func stops watching once
// copy.Image has returned.
func (b *Blobs) watch(copts *copy.Options) func() {
	ch := make(chan types.ProgressProperties, 16)
	copts.Progress, copts.ProgressInterval = ch, time.Hour
	done := make(chan struct{})
	go func() {
		defer close(done)
		for p := range ch {
			if p.Event == types.ProgressEventNewArtifact {
				b.add(p.Artifact.Digest)
			}
		}
	}()
	return func() {
		close(ch)
		<-done
	}
}
