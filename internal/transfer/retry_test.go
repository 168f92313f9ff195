package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containers/image/v5/docker"
	"github.com/containers/image/v5/oci/layout"
	"github.com/containers/image/v5/signature"
	"github.com/docker/distribution/registry/api/errcode"
	v2 "github.com/docker/distribution/registry/api/v2"
	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
)

// resetting resets the TCP connection of the first n requests that match,
// as a load balancer or a restarting registry does, then passes everything
// through, counting the matching requests.
type resetting struct {
	next   http.Handler
	match  func(*http.Request) bool
	n      int32
	counts atomic.Int32
}

func (h *resetting) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h.match(r) && h.counts.Add(1) <= h.n {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			if tcp, ok := conn.(*net.TCPConn); ok {
				_ = tcp.SetLinger(0) // RST, not FIN
			}
			conn.Close()
		}
		return
	}
	h.next.ServeHTTP(w, r)
}

func TestConnectionResetIsRetried(t *testing.T) {
	src := ckpttest.WriteImage(t, t.TempDir(), []ckpttest.Layer{{Tar: ckpttest.Tar(t, ckpttest.Archive(t))}},
		map[string]string{ckpt.AnnRuntimeName: "runc"})
	h := &resetting{
		next: registry.New(registry.Logger(log.New(io.Discard, "", 0))),
		match: func(r *http.Request) bool {
			return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/")
		},
		n: 1,
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	dst, err := ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/ckpt/web:v1")
	if err != nil {
		t.Fatal(err)
	}
	var report bytes.Buffer
	if _, err := Copy(context.Background(), "pushing", dst, src, Options{TLSVerify: TLSVerify(true, false), RetryDelay: time.Millisecond, Report: &report}); err != nil {
		t.Fatalf("push after one reset: %v", err)
	}
	if got := h.counts.Load(); got != 2 {
		t.Fatalf("%d manifest uploads, want 2", got)
	}
	if !strings.Contains(report.String(), "Transient failure, retrying in 1ms (1/3)") {
		t.Fatalf("the retry was not reported: %q", report.String())
	}
}

// dropping cuts the first n blob fetches halfway through their body, and
// answers no resumed (Range) fetch while it does: a link that went down.
type dropping struct {
	next   http.Handler
	n      int32
	counts atomic.Int32
}

func (h *dropping) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet || !strings.Contains(r.URL.Path, "/blobs/sha256:") {
		h.next.ServeHTTP(w, r)
		return
	}
	if r.Header.Get("Range") != "" && h.counts.Load() <= h.n {
		panic(http.ErrAbortHandler)
	}
	if h.counts.Add(1) > h.n {
		h.next.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	h.next.ServeHTTP(rec, r)
	body := rec.Body.Bytes()
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(rec.Code)
	w.Write(body[:len(body)/2])
	w.(http.Flusher).Flush()
	panic(http.ErrAbortHandler)
}

func TestBlobCutShortIsRetried(t *testing.T) {
	ctx := context.Background()
	src := ckpttest.WriteImage(t, t.TempDir(), []ckpttest.Layer{{Tar: ckpttest.Tar(t, ckpttest.Archive(t))}},
		map[string]string{ckpt.AnnRuntimeName: "runc"})
	h := &dropping{next: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	srv := httptest.NewServer(h)
	defer srv.Close()
	ref, err := ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/ckpt/web:v1")
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{TLSVerify: TLSVerify(true, false), RetryDelay: time.Millisecond}
	if _, err := Copy(ctx, "pushing", ref, src, opts); err != nil {
		t.Fatal(err)
	}
	back, _ := layout.NewReference(t.TempDir(), "checkpoint")
	h.n = 1
	if _, err := Copy(ctx, "pulling", back, ref, opts); err != nil {
		t.Fatalf("pull after one cut blob: %v", err)
	}
	// The cut blob and the retry's, then each of the other blobs once.
	if got := h.counts.Load(); got < 3 {
		t.Fatalf("%d blob fetches, want the cut one again", got)
	}
	opts.Retries = -1
	h.counts.Store(0)
	back, _ = layout.NewReference(t.TempDir(), "checkpoint")
	if _, err := Copy(ctx, "pulling", back, ref, opts); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("without retries: err = %v, want the cut blob's unexpected EOF", err)
	}
}

func TestPreflightRetries(t *testing.T) {
	tags := func(r *http.Request) bool { return strings.HasSuffix(r.URL.Path, "/tags/list") }
	// Two resets: net/http itself resends a GET once when a kept-alive
	// connection turns out dead, so one alone proves nothing.
	h := &resetting{next: registry.New(registry.Logger(log.New(io.Discard, "", 0))), match: tags, n: 2}
	srv := httptest.NewServer(h)
	defer srv.Close()
	ref, _ := ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/x/y:v1")
	if err := Preflight(context.Background(), ref, Options{TLSVerify: TLSVerify(true, false), RetryDelay: time.Millisecond}); err != nil {
		t.Fatalf("preflight after two resets: %v", err)
	}
	if got := h.counts.Load(); got != 3 {
		t.Fatalf("%d tag lists, want 3", got)
	}

	// Nothing listening: a wrong address, refused at once.
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	ref, _ = ParseReference(strings.TrimPrefix(closed.URL, "http://") + "/x/y:v1")
	var report bytes.Buffer
	err := Preflight(context.Background(), ref, Options{TLSVerify: TLSVerify(true, false), RetryDelay: time.Millisecond, Report: &report})
	if !errors.Is(err, syscall.ECONNREFUSED) || report.Len() != 0 {
		t.Fatalf("err = %v, report %q; want ECONNREFUSED without retries", err, report.String())
	}
}

func TestRetryable(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection reset", &net.OpError{Op: "read", Err: syscall.ECONNRESET}, true},
		{"connection refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, true},
		{"HTTP 503", errors.New("writing manifest: received unexpected HTTP status: 503 Service Unavailable"), true},
		{"HTTP 429", fmt.Errorf("fetching blob: %w", docker.ErrTooManyRequests), true},
		{"registry error UNKNOWN", errcode.ErrorCodeUnknown.WithMessage("disk full"), true},
		{"unauthorized", errcode.ErrorCodeUnauthorized.WithMessage("no"), false},
		{"denied", errcode.ErrorCodeDenied.WithMessage("no"), false},
		{"name unknown (404)", v2.ErrorCodeNameUnknown.WithMessage("no such repository"), false},
		{"manifest unknown (404)", v2.ErrorCodeManifestUnknown.WithMessage("no such tag"), false},
		{"digest mismatch", fmt.Errorf("%w: Digest did not match", ErrDigestMismatch), false},
		{"policy rejection", fmt.Errorf("copying: %w", signature.PolicyRequirementError("rejected")), false},
		{"interrupted", fmt.Errorf("copying: %w", context.Canceled), false},
	} {
		if got := retryable(tt.err); got != tt.want {
			t.Errorf("%s: retryable = %t, want %t", tt.name, got, tt.want)
		}
		if got := copyRetryable(tt.err); got != tt.want {
			t.Errorf("%s: copyRetryable = %t, want %t", tt.name, got, tt.want)
		}
	}
	// A blob cut short: the network's doing within copy.Image only.
	cut := fmt.Errorf("writing blob: happened during read: %w (while reconnecting: EOF)", io.ErrUnexpectedEOF)
	if retryable(cut) || !copyRetryable(cut) || copyRetryable(fmt.Errorf("%w: %w", ErrDigestMismatch, cut)) {
		t.Error("a blob cut short: want retried by copy.Image's loop only, and never a digest mismatch")
	}
}

// TestRetryStopsWhenInterrupted: a Ctrl-C during the pause ends it.
func TestRetryStopsWhenInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	tries := 0
	err := Retry(ctx, Options{RetryDelay: time.Hour}, func() error {
		tries++
		cancel()
		return &net.OpError{Op: "read", Err: syscall.ECONNRESET}
	})
	if tries != 1 || !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("tries %d, err %v; want one try and its error", tries, err)
	}
}

// TestRetryAsksAgain: a destination that cannot take the image twice says
// so through Options.Again, and the first failure stands, unretried; while
// it can, transient failures are retried as ever.
func TestRetryAsksAgain(t *testing.T) {
	reset := &net.OpError{Op: "read", Err: syscall.ECONNRESET}
	for _, can := range []bool{true, false} {
		tries := 0
		err := RetryIf(context.Background(), Options{Retries: 2, RetryDelay: time.Millisecond, Again: func() bool { return can }}, Transient, func() error {
			tries++
			return reset
		})
		want := 3
		if !can {
			want = 1
		}
		if tries != want || !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("Again %v: %d tries, err %v; want %d and the reset", can, tries, err, want)
		}
	}
}
