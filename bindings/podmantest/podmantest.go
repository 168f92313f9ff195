// Package podmantest serves fake libpod APIs to unit tests: a handler on a
// unix socket in the test's temporary directory, a record of the calls it
// saw, and a log buffer safe to read while it is written.
package podmantest

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"slices"
	"sync"
	"testing"

	podman "github.com/podman-migrate/podman-migrate/bindings"
)

// Serve runs h on a unix socket until the test ends and returns its URI.
func Serve(t *testing.T, h http.Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "podman.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return "unix://" + sock
}

// Connect serves h and returns a client of it.
func Connect(t *testing.T, h http.Handler) *podman.Client {
	t.Helper()
	c, err := podman.ConnectTo(context.Background(), podman.Destination{URI: Serve(t, h)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Reply answers as libpod does: JSON with the status code.
func Reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

var versionPrefix = regexp.MustCompile(`^/v[0-9.]+/libpod`)

// Path is a request's libpod endpoint without its version prefix.
func Path(r *http.Request) string {
	return versionPrefix.ReplaceAllString(r.URL.Path, "")
}

// Calls records "METHOD PATH" of each request a fake served.
type Calls struct {
	mu   sync.Mutex
	seen []string
}

// Add records r and returns its endpoint (see Path).
func (c *Calls) Add(r *http.Request) string {
	p := Path(r)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seen = append(c.seen, r.Method+" "+p)
	return p
}

// Has reports whether call ("METHOD PATH") was seen.
func (c *Calls) Has(call string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Contains(c.seen, call)
}

// All is every call seen, in order.
func (c *Calls) All() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.seen)
}

// Buffer is a bytes.Buffer for logs written by one goroutine and read by
// the test.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
