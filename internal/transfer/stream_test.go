package transfer

import (
	"bytes"
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containers/image/v5/oci/layout"
	"github.com/containers/image/v5/types"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"

	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
	"github.com/podman-migrate/podman-migrate/internal/dump"
)

// uploads wraps the in-memory registry, counts the blob uploads that
// completed, by digest, and can cut or stall the first upload body it
// sees.
type uploads struct {
	next      http.Handler
	cutNext   atomic.Bool
	stallNext atomic.Bool
	mu        sync.Mutex
	done      map[string]int
}

func (u *uploads) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPatch {
		if u.cutNext.CompareAndSwap(true, false) {
			io.CopyN(io.Discard, r.Body, 1024)
			panic(http.ErrAbortHandler) // the connection drops mid-body
		}
		if u.stallNext.CompareAndSwap(true, false) {
			// Takes nothing for longer than the test's Stall (a handler
			// that has not read the body does not see the client leave).
			time.Sleep(time.Second)
			return
		}
		// The in-memory registry reads upload bodies under one lock: read
		// them first, as a real registry takes several at once.
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(b))
	}
	rec := httptest.NewRecorder()
	u.next.ServeHTTP(rec, r)
	if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/") && rec.Code == http.StatusCreated {
		u.mu.Lock()
		u.done[r.URL.Query().Get("digest")]++
		u.mu.Unlock()
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}

func (u *uploads) count(d digest.Digest) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.done[d.String()]
}

// archiveWith is a checkpoint archive whose volume tar member carries
// mtime, as podman writes it afresh at each checkpoint, and whose CRIU
// pages come from seed.
func archiveWith(t *testing.T, mtime time.Time, seed int64) []byte {
	entries := ckpttest.Archive(t)
	for i := range entries {
		switch entries[i].Name {
		case "volumes/fixvol.tar", "rootfs-diff.tar":
			entries[i].ModTime = mtime
		case "checkpoint/pages-1.img":
			entries[i].Body = ckpttest.Pages(3<<20, seed)
		}
	}
	return ckpttest.Tar(t, entries)
}

// push builds archive into a staging layout through a Streamer to dst,
// then copies it with Copy, as export.Push does.
func push(t *testing.T, archive []byte, dst types.ImageReference, opts Options, stall time.Duration) (*ckpt.Built, *Streamer, *Blobs, string) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	staged, err := layout.NewReference(dir, "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	sd, err := staged.NewImageDestination(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	var notes bytes.Buffer
	s, err := NewStreamer(ctx, sd, dir, dst, opts, func(i types.BlobInfo) bool {
		r := ckpt.Role(i.Annotations[ckpt.AnnLayerRole])
		return r == ckpt.RoleCRIU // as push streams
	}, &notes)
	if err != nil {
		t.Fatal(err)
	}
	if stall > 0 {
		s.Stall = stall
	}
	built, err := ckpt.Build(ctx, bytes.NewReader(archive), s, ckpt.BuildOptions{
		Created: time.Now(),
		Annotate: func(cfg *dump.Config) (map[string]string, error) {
			return map[string]string{ckpt.AnnFormat: ckpt.FormatVersion, ckpt.AnnName: cfg.Name()}, nil
		},
	})
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	o := opts
	o.Sent = &Blobs{}
	d, err := Copy(ctx, "pushing", dst, staged, o)
	if err != nil {
		t.Fatalf("Copy: %v", err)
	}
	if d != built.Digest {
		t.Fatalf("pushed manifest %s, built %s", d, built.Digest)
	}
	return built, s, o.Sent, notes.String()
}

func layerOf(t *testing.T, b *ckpt.Built, role ckpt.Role) ckpt.Layer {
	t.Helper()
	for _, l := range b.Layers {
		if l.Role == role {
			return l
		}
	}
	t.Fatalf("no %s layer in %+v", role, b.Layers)
	return ckpt.Layer{}
}

// TestStreamerUploadsWhileBuilding: the CRIU layer reaches the registry
// during the build and Copy does not send it again; the others go through
// Copy; every blob is uploaded once; the image pulls back whole. A second
// push with new CRIU images but the same volume and root-filesystem diff
// sends the CRIU layer only.
func TestStreamerUploadsWhileBuilding(t *testing.T) {
	u := &uploads{next: registry.New(registry.Logger(log.New(io.Discard, "", 0))), done: map[string]int{}}
	srv := httptest.NewServer(u)
	defer srv.Close()
	opts := Options{TLSVerify: TLSVerify(true, false), Retries: 1, RetryDelay: time.Millisecond}
	dst, err := ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/ckpt/web:v1")
	if err != nil {
		t.Fatal(err)
	}

	built, s, sent, notes := push(t, archiveWith(t, time.Unix(1700000000, 0), 1), dst, opts, 0)
	if notes != "" {
		t.Fatalf("notes from a clean push: %q", notes)
	}
	for _, l := range built.Layers {
		streamed := l.Role == ckpt.RoleCRIU
		if s.Uploaded(l.Desc.Digest) != streamed {
			t.Errorf("%s layer: streamed %t, want %t", l.Role, s.Uploaded(l.Desc.Digest), streamed)
		}
		if sent.Has(l.Desc.Digest) == streamed {
			t.Errorf("%s layer: Copy sent it %t, want %t", l.Role, sent.Has(l.Desc.Digest), !streamed)
		}
		if n := u.count(l.Desc.Digest); n != 1 {
			t.Errorf("%s layer uploaded %d times, want once", l.Role, n)
		}
	}
	pullAndOpen(t, dst, opts)

	// The same volume and rootfs diff at the next checkpoint: podman's
	// tars of them are new (another mtime), their content is not.
	again, _, sent, _ := push(t, archiveWith(t, time.Unix(1800000000, 0), 2), dst, opts, 0)
	for _, role := range []ckpt.Role{ckpt.RoleVolume, ckpt.RoleRootfs} {
		l, l2 := layerOf(t, built, role), layerOf(t, again, role)
		if l.Desc.Digest != l2.Desc.Digest {
			t.Fatalf("an unchanged %s layer made a new blob: %s, then %s", role, l.Desc.Digest, l2.Desc.Digest)
		}
		if sent.Has(l2.Desc.Digest) || u.count(l2.Desc.Digest) != 1 {
			t.Fatalf("the unchanged %s layer was sent again (Copy read it: %t, uploads: %d)", role, sent.Has(l2.Desc.Digest), u.count(l2.Desc.Digest))
		}
	}
	if c := layerOf(t, again, ckpt.RoleCRIU); c.Desc.Digest == layerOf(t, built, ckpt.RoleCRIU).Desc.Digest || u.count(c.Desc.Digest) != 1 {
		t.Fatalf("the changed CRIU layer: same digest or not uploaded once (%d)", u.count(c.Desc.Digest))
	}
}

// TestStreamerFailedUpload: a streamed upload that the registry cuts, or
// one that takes no bytes, leaves the staged image whole, and Copy sends
// that blob from staging.
func TestStreamerFailedUpload(t *testing.T) {
	for _, tc := range []struct {
		name, says string
		fault      func(*uploads)
	}{
		{"cut", "while building it failed", func(u *uploads) { u.cutNext.Store(true) }},
		{"stalled", "the registry took no data for 200ms", func(u *uploads) { u.stallNext.Store(true) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := &uploads{next: registry.New(registry.Logger(log.New(io.Discard, "", 0))), done: map[string]int{}}
			srv := httptest.NewServer(u)
			defer srv.Close()
			opts := Options{TLSVerify: TLSVerify(true, false), Retries: 1, RetryDelay: time.Millisecond}
			dst, err := ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/ckpt/fault:v1")
			if err != nil {
				t.Fatal(err)
			}
			tc.fault(u)
			built, s, sent, notes := push(t, archiveWith(t, time.Unix(1700000000, 0), 1), dst, opts, 200*time.Millisecond)
			if !strings.Contains(notes, tc.says) || !strings.Contains(notes, "sent again from staging") {
				t.Fatalf("no note of the failed streamed upload: %q", notes)
			}
			var resent int
			for _, l := range built.Layers {
				if s.Uploaded(l.Desc.Digest) && sent.Has(l.Desc.Digest) {
					t.Errorf("%s layer sent twice", l.Role)
				}
				if !s.Uploaded(l.Desc.Digest) && !sent.Has(l.Desc.Digest) {
					t.Errorf("%s layer never sent", l.Role)
				}
				if l.Role == ckpt.RoleCRIU && sent.Has(l.Desc.Digest) {
					resent++
				}
			}
			if resent != 1 {
				t.Fatalf("%d streamed layers sent again from staging, want the one that failed", resent)
			}
			pullAndOpen(t, dst, opts)
		})
	}
}

func pullAndOpen(t *testing.T, ref types.ImageReference, opts Options) {
	t.Helper()
	ctx := context.Background()
	back, err := layout.NewReference(t.TempDir(), "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Copy(ctx, "pulling", back, ref, opts); err != nil {
		t.Fatalf("pull: %v", err)
	}
	src, err := back.NewImageSource(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := ckpt.Open(ctx, src, ckpt.Limits{}); err != nil {
		t.Fatalf("the pushed image does not verify: %v", err)
	}
}
