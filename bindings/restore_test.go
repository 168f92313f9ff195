package podman

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// TestRestoreImportSendsTheArchiveOnce: a service that drops the
// connection mid-archive gets no second, truncated, archive.
func TestRestoreImportSendsTheArchiveOnce(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var restores atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Libpod-API-Version", "4.3.1")
		if strings.HasSuffix(r.URL.Path, "/_ping") {
			w.Write([]byte("OK"))
			return
		}
		restores.Add(1)
		io.CopyN(io.Discard, r.Body, 1000)
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close() // the service went away mid-archive
	})}
	go srv.Serve(ln)
	defer srv.Close()
	c, err := ConnectTo(context.Background(), Destination{URI: "unix://" + sock})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.RestoreImport(context.Background(), strings.NewReader(strings.Repeat("x", 1<<20)), RestoreOptions{})
	if err == nil {
		t.Fatal("restore succeeded against a service that hung up")
	}
	if n := restores.Load(); n != 1 {
		t.Fatalf("the archive was sent %d times, want once", n)
	}
}

// TestRestoreImportAsksForTCPCloseOnlyWhenSet: podman 5.7's tcpClose is
// sent only when asked for, so older servers never see it.
func TestRestoreImportAsksForTCPCloseOnlyWhenSet(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	queries := make(chan url.Values, 2)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Libpod-API-Version", "5.7.0")
		if strings.HasSuffix(r.URL.Path, "/_ping") {
			w.Write([]byte("OK"))
			return
		}
		io.Copy(io.Discard, r.Body)
		queries <- r.URL.Query()
		w.Write([]byte(`{"Id":"` + strings.Repeat("a", 64) + `"}`))
	})}
	go srv.Serve(ln)
	defer srv.Close()
	c, err := ConnectTo(context.Background(), Destination{URI: "unix://" + sock})
	if err != nil {
		t.Fatal(err)
	}
	for _, close := range []bool{true, false} {
		if _, err := c.RestoreImport(context.Background(), strings.NewReader("archive"), RestoreOptions{TCPEstablished: true, TCPClose: close}); err != nil {
			t.Fatal(err)
		}
		q := <-queries
		if got, sent := q.Get("tcpClose"), q.Has("tcpClose"); sent != close || (close && got != "true") {
			t.Fatalf("TCPClose %t: tcpClose %q (sent %t)", close, got, sent)
		}
	}
}
