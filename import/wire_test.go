package restore

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/containers/storage/pkg/archive"
)

func TestChooseWire(t *testing.T) {
	for _, tt := range []struct {
		spec, addr, want string
		err              error
	}{
		{"auto", "unix:///run/podman/podman.sock", "none", nil},
		{"", "unix:///run/podman/podman.sock", "none", nil},
		{"auto", "tcp://10.0.0.2:8585", "auto", nil},
		{"auto", "ssh://root@hostb/run/podman/podman.sock", "auto", nil},
		{"none", "tcp://10.0.0.2:8585", "none", nil},
		{"zstd", "unix:///run/podman/podman.sock", "zstd:1", nil},
		{"zstd:3", "unix:///x", "zstd:3", nil},
		{"zstd:19", "unix:///x", "zstd:11", nil}, // the best level klauspost/compress has
		{"gzip", "tcp://h:1", "", ErrBadCompress},
		{"zstd:0", "tcp://h:1", "", ErrBadCompress},
		{"zstd:x", "tcp://h:1", "", ErrBadCompress},
	} {
		w, err := ChooseWire(tt.spec, tt.addr)
		if !errors.Is(err, tt.err) || err == nil && w.String() != tt.want {
			t.Errorf("ChooseWire(%q, %q) = %v, %v; want %s, %v", tt.spec, tt.addr, w, err, tt.want, tt.err)
		}
	}
}

// What the wire writes, podman's own decompression (the storage library's
// DecompressStream, which its restore import untars through) reads back.
func TestWireRoundTrip(t *testing.T) {
	data := bytes.Repeat([]byte("checkpoint "), 100000)
	for _, spec := range []string{"none", "zstd", "zstd:7"} {
		w, err := ChooseWire(spec, "")
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		zw, err := w.writer(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := zw.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		if w.Zstd == (buf.Len() >= len(data)) {
			t.Errorf("%s: %d bytes sent for %d", spec, buf.Len(), len(data))
		}
		dr, err := archive.DecompressStream(&buf)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(dr)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: read back %d bytes, %v", spec, len(got), err)
		}
	}
}
