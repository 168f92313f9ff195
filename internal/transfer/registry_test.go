package transfer

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containers/image/v5/oci/layout"
	"github.com/google/go-containerregistry/pkg/registry"

	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
)

// failing wraps the in-memory registry and fails manifest uploads while
// fail is set, as a registry with a full disk would.
type failing struct {
	next http.Handler
	fail atomic.Bool
}

func (f *failing) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.fail.Load() && r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") {
		http.Error(w, `{"errors":[{"code":"UNKNOWN","message":"disk full"}]}`, http.StatusInternalServerError)
		return
	}
	f.next.ServeHTTP(w, r)
}

func TestCopyThroughRegistry(t *testing.T) {
	h := &failing{next: registry.New(registry.Logger(log.New(io.Discard, "", 0)))}
	srv := httptest.NewServer(h)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	ctx := context.Background()
	src := ckpttest.WriteImage(t, t.TempDir(), []ckpttest.Layer{{Tar: ckpttest.Tar(t, ckpttest.Archive(t))}},
		map[string]string{ckpt.AnnRuntimeName: "runc"})
	opts := Options{TLSVerify: TLSVerify(true, false), Retries: 1, RetryDelay: time.Millisecond}

	dst, err := ParseReference(host + "/ckpt/web:v1")
	if err != nil {
		t.Fatal(err)
	}
	h.fail.Store(true)
	_, err = Copy(ctx, "pushing", dst, src, opts)
	var terr *Error
	if !errors.As(err, &terr) || terr.Op != "pushing" || !strings.Contains(err.Error(), host) {
		t.Fatalf("failed push: err = %v, want a *transfer.Error naming the registry", err)
	}
	h.fail.Store(false)
	pushed, err := Copy(ctx, "pushing", dst, src, opts)
	if err != nil {
		t.Fatalf("push: %v", err)
	}

	back, err := layout.NewReference(t.TempDir(), "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	pulled, err := Copy(ctx, "pulling", back, dst, opts)
	if err != nil {
		t.Fatalf("pull: %v", err)
	}
	if pushed != pulled {
		t.Fatalf("digest changed in transit: pushed %s, pulled %s", pushed, pulled)
	}

	// Verification on: the test registry speaks plain HTTP, so this must fail.
	if _, err := Copy(ctx, "pulling", back, dst, Options{TLSVerify: TLSVerify(true, true)}); err == nil {
		t.Fatal("--tls-verify=true pulled over plain HTTP")
	}
	missing, _ := ParseReference(host + "/ckpt/none:v1")
	if _, err := Copy(ctx, "pulling", back, missing, opts); !errors.As(err, &terr) {
		t.Fatalf("missing image: err = %v", err)
	}
}

func TestPreflight(t *testing.T) {
	ctx := context.Background()
	opts := Options{TLSVerify: TLSVerify(true, false)}
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	fresh, _ := ParseReference(host + "/not/pushed/yet:v1")
	if err := Preflight(ctx, fresh, opts); err != nil {
		t.Errorf("a reachable registry without the repository yet: %v", err)
	}

	locked := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
	}))
	defer locked.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closedHost := strings.TrimPrefix(closed.URL, "http://")
	closed.Close()

	for name, host := range map[string]string{"credentials refused": strings.TrimPrefix(locked.URL, "http://"), "nothing listening": closedHost} {
		ref, _ := ParseReference(host + "/x/y:v1")
		var terr *Error
		if err := Preflight(ctx, ref, opts); !errors.As(err, &terr) || terr.Op != "checking" {
			t.Errorf("%s: err = %v, want a *transfer.Error", name, err)
		}
	}

	// TLS verification against a plain-HTTP registry fails before any push.
	if err := Preflight(ctx, fresh, Options{TLSVerify: TLSVerify(true, true)}); err == nil {
		t.Error("--tls-verify=true accepted a plain-HTTP registry")
	}
	// Other transports are left to the push itself.
	layoutRef, err := ParseReference("oci:" + t.TempDir() + ":tag")
	if err != nil {
		t.Fatal(err)
	}
	if err := Preflight(ctx, layoutRef, opts); err != nil {
		t.Errorf("oci: %v", err)
	}
}

// flaky answers the first n requests that match with status code, then
// passes everything through, counting the matching requests.
type flaky struct {
	next   http.Handler
	match  func(*http.Request) bool
	code   int
	n      int32
	counts atomic.Int32
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.match(r) {
		if f.counts.Add(1) <= f.n {
			code := map[int]string{http.StatusUnauthorized: "UNAUTHORIZED", http.StatusForbidden: "DENIED", http.StatusTooManyRequests: "TOOMANYREQUESTS"}[f.code]
			if code == "" {
				code = "UNKNOWN"
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(f.code)
			w.Write([]byte(`{"errors":[{"code":"` + code + `","message":"injected"}]}`))
			return
		}
	}
	f.next.ServeHTTP(w, r)
}

func TestTransientErrorsAreRetriedPermanentOnesNot(t *testing.T) {
	src := ckpttest.WriteImage(t, t.TempDir(), []ckpttest.Layer{{Tar: ckpttest.Tar(t, ckpttest.Archive(t))}},
		map[string]string{ckpt.AnnRuntimeName: "runc"})
	manifestPut := func(r *http.Request) bool {
		return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/")
	}
	for _, tt := range []struct {
		name      string
		code      int
		failures  int32
		wantOK    bool
		wantTries int32
	}{
		{"503 once", http.StatusServiceUnavailable, 1, true, 2},
		{"429 twice", http.StatusTooManyRequests, 2, true, 3},
		{"500 always", http.StatusInternalServerError, 100, false, 4}, // 1 + 3 retries
		{"401", http.StatusUnauthorized, 100, false, 1},
		{"403", http.StatusForbidden, 100, false, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := &flaky{next: registry.New(registry.Logger(log.New(io.Discard, "", 0))), match: manifestPut, code: tt.code, n: tt.failures}
			srv := httptest.NewServer(f)
			defer srv.Close()
			dst, err := ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/ckpt/web:v1")
			if err != nil {
				t.Fatal(err)
			}
			_, err = Copy(context.Background(), "pushing", dst, src, Options{TLSVerify: TLSVerify(true, false), RetryDelay: time.Millisecond})
			if (err == nil) != tt.wantOK {
				t.Fatalf("err = %v, want ok=%t", err, tt.wantOK)
			}
			if got := f.counts.Load(); got != tt.wantTries {
				t.Fatalf("%d manifest uploads, want %d", got, tt.wantTries)
			}
		})
	}
}
