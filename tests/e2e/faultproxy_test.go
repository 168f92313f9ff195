//go:build e2e

package e2e

import (
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Faults the proxy injects, chosen per request by faultProxy.fault.
const (
	noFault   = ""
	fault500  = "500"  // answer 500 with a registry error body
	fault401  = "401"  // answer 401: credentials refused
	faultCut  = "cut"  // take 64 KiB of the request body, then hang up
	faultKill = "kill" // kill the registry once killAfter upload bytes went through
	faultDrop = "drop" // send half the response body, then hang up; no answer to a resumed fetch
	faultFlip = "flip" // flip one byte in the middle of the response body
	faultSlow = "slow" // stretch the request and response bodies
)

const (
	killAfter  = 1 << 20 // bytes of blob uploads before faultKill strikes
	cutRequest = 64 << 10
	slowChunk  = 32 << 10 // bytes per slowed read
	slowPause  = 20 * time.Millisecond
)

// exchange is one request the proxy saw, and the status it answered.
type exchange struct {
	method, path string
	status       int
}

// faultProxy stands in front of a real registry and injects the fault
// its fault function picks for each request; it records every exchange.
type faultProxy struct {
	addr     string
	mu       sync.Mutex
	fault    func(r *http.Request) string
	kill     func() // stops the registry behind, for faultKill
	hits     map[string]int
	uploaded int64
	log      []exchange
}

func newFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	u, _ := url.Parse("http://" + target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0) // a killed registry is the point
	p := &faultProxy{hits: map[string]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w := &recorder{ResponseWriter: rw}
		defer func() {
			p.mu.Lock()
			p.log = append(p.log, exchange{r.Method, r.URL.Path, w.status})
			p.mu.Unlock()
		}()
		p.mu.Lock()
		f := noFault
		if p.fault != nil {
			f = p.fault(r)
		}
		if f != noFault {
			p.hits[f]++
		}
		p.mu.Unlock()
		switch f {
		case fault500:
			registryError(w, http.StatusInternalServerError, "UNKNOWN", "injected: disk full")
			return
		case fault401:
			registryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "injected: authentication required")
			return
		case faultCut:
			io.CopyN(io.Discard, r.Body, cutRequest)
			w.status = -1
			panic(http.ErrAbortHandler) // closes the connection, no answer
		case faultKill:
			r.Body = &killingReader{ReadCloser: r.Body, p: p}
		case faultDrop:
			if r.Header.Get("Range") != "" {
				// The link stays down: a resumed fetch gets no answer.
				// (Answering it and dropping again would not do:
				// containers/image 5.29 reconnects for as long as each
				// reconnection is answered.)
				w.status = -1
				panic(http.ErrAbortHandler)
			}
			w.cutAt = -1 // half of Content-Length
		case faultFlip:
			w.flipAt = -1
		case faultSlow:
			r.Body = slowReader{r.Body}
			w.slow = true
		}
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return p
}

func registryError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	io.WriteString(w, `{"errors":[{"code":"`+code+`","message":"`+msg+`"}]}`)
}

// set picks the faults from now on, and forgets the requests seen so far.
func (p *faultProxy) set(fault func(r *http.Request) string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault = fault
	p.hits = map[string]int{}
	p.uploaded = 0
	p.log = nil
}

// count is how many requests got fault f since set.
func (p *faultProxy) count(f string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hits[f]
}

func (p *faultProxy) exchanges() []exchange {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]exchange(nil), p.log...)
}

// noManifestStored fails the test if a manifest upload was accepted since
// set: no tag can point at what the failed push left.
func (p *faultProxy) noManifestStored(t *testing.T) {
	t.Helper()
	for _, e := range p.exchanges() {
		if e.method == http.MethodPut && strings.Contains(e.path, "/manifests/") && e.status >= 200 && e.status < 300 {
			t.Fatalf("a manifest was stored after all: %s %s -> %d", e.method, e.path, e.status)
		}
	}
}

// manifestLast fails the test unless the one stored manifest came after
// every blob upload had been accepted: a tag never names missing blobs.
func (p *faultProxy) manifestLast(t *testing.T) {
	t.Helper()
	seen := p.exchanges()
	manifest, blobs := -1, 0
	for i, e := range seen {
		switch {
		case e.method == http.MethodPut && strings.Contains(e.path, "/manifests/"):
			if manifest >= 0 || e.status != http.StatusCreated {
				t.Fatalf("manifest uploads: %v", seen)
			}
			manifest = i
		case e.method == http.MethodPut && strings.Contains(e.path, "/blobs/uploads/"):
			if manifest >= 0 || e.status != http.StatusCreated {
				t.Fatalf("blob upload %d after the manifest, or refused: %v", i, seen)
			}
			blobs++
		}
	}
	if manifest < 0 || blobs < 3 { // config, metadata and CRIU layers at least
		t.Fatalf("want blob uploads then one manifest, got %d blobs, manifest at %d: %v", blobs, manifest, seen)
	}
}

// recorder notes the status and injects the response-body faults.
type recorder struct {
	http.ResponseWriter
	status        int
	written       int64
	cutAt, flipAt int64 // -1: half of Content-Length; 0: off
	slow          bool
}

func (w *recorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	if n, err := strconv.ParseInt(w.Header().Get("Content-Length"), 10, 64); err == nil {
		if w.cutAt < 0 {
			w.cutAt = n / 2
		}
		if w.flipAt < 0 {
			w.flipAt = n / 2
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.slow {
		time.Sleep(slowPause)
	}
	if w.cutAt > 0 && w.written+int64(len(b)) > w.cutAt {
		w.ResponseWriter.Write(b[:w.cutAt-w.written])
		w.Flush()
		w.status = -1
		panic(http.ErrAbortHandler) // the rest never comes
	}
	if w.flipAt > 0 && w.written <= w.flipAt && w.flipAt < w.written+int64(len(b)) {
		b = append([]byte(nil), b...)
		b[w.flipAt-w.written] ^= 0xff
	}
	n, err := w.ResponseWriter.Write(b)
	w.written += int64(n)
	return n, err
}

func (w *recorder) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// killingReader kills the registry behind once killAfter bytes of blob
// uploads went through it.
type killingReader struct {
	io.ReadCloser
	p *faultProxy
}

func (k *killingReader) Read(b []byte) (int, error) {
	n, err := k.ReadCloser.Read(b)
	k.p.mu.Lock()
	before := k.p.uploaded
	k.p.uploaded += int64(n)
	strike := before < killAfter && k.p.uploaded >= killAfter
	k.p.mu.Unlock()
	if strike && k.p.kill != nil {
		k.p.kill()
	}
	return n, err
}

// slowReader stretches an upload so a signal can land during it.
type slowReader struct{ r io.ReadCloser }

func (s slowReader) Read(b []byte) (int, error) {
	time.Sleep(slowPause)
	if len(b) > slowChunk {
		b = b[:slowChunk]
	}
	return s.r.Read(b)
}

func (s slowReader) Close() error { return s.r.Close() }

func isBlobUpload(r *http.Request) bool {
	return (r.Method == http.MethodPatch || r.Method == http.MethodPut) && strings.Contains(r.URL.Path, "/blobs/uploads/")
}

func isManifestPut(r *http.Request) bool {
	return r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/")
}

// isBlobGet matches fetching the blob with this digest ("" for any blob).
func isBlobGet(r *http.Request, digest string) bool {
	return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") && strings.HasSuffix(r.URL.Path, digest)
}
