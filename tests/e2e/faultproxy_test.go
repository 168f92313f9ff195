//go:build e2e

package e2e

import (
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// faultProxy stands in front of a real registry and injects one fault
// into the requests fault picks out. Everything else passes through.
type faultProxy struct {
	addr  string
	mu    sync.Mutex
	fault func(r *http.Request) string // "", "500", "401", "cut", "kill", "slow"
	kill  func()                       // stops the registry behind, for "kill"
	hits  map[string]int
}

func newFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	u, _ := url.Parse("http://" + target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Header.Get("X-Fault-Slow") != "" {
			resp.Body = slowReader{resp.Body}
		}
		return nil
	}
	p := &faultProxy{hits: map[string]int{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		f := ""
		if p.fault != nil {
			f = p.fault(r)
		}
		if f != "" {
			p.hits[f]++
		}
		kill := p.kill
		p.mu.Unlock()
		switch f {
		case "500":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `{"errors":[{"code":"UNKNOWN","message":"injected: disk full"}]}`)
			return
		case "401":
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"injected: authentication required"}]}`)
			return
		case "cut":
			// Take some of the body, then hang up.
			io.CopyN(io.Discard, r.Body, 64<<10)
			if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
				conn.Close()
			}
			return
		case "kill":
			if kill != nil {
				kill()
			}
		case "slow":
			r.Body = slowReader{r.Body}
			r.Header.Set("X-Fault-Slow", "1") // and the answer too
		}
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return p
}

func (p *faultProxy) set(fault func(r *http.Request) string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.fault = fault
	p.hits = map[string]int{}
}

func (p *faultProxy) count(f string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hits[f]
}

// slowReader stretches an upload so a signal can land during it.
type slowReader struct{ r io.ReadCloser }

func (s slowReader) Read(b []byte) (int, error) {
	time.Sleep(20 * time.Millisecond)
	if len(b) > 32<<10 {
		b = b[:32<<10]
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

func isBlobGet(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:")
}
