package ckpt

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"

	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
)

// zstdOf compresses n bytes of r's output.
func zstdOf(t *testing.T, r io.Reader, n int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(zw, r, n); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func openLimited(t *testing.T, layers []ckpttest.Layer, lim Limits) error {
	t.Helper()
	ref := ckpttest.WriteImage(t, t.TempDir(), layers, podmanAnn)
	src, err := ref.NewImageSource(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	_, err = Open(context.Background(), src, lim)
	if _, rerr := ReadMetadata(context.Background(), src, lim); (rerr == nil) != (err == nil) {
		t.Errorf("Open says %v, ReadMetadata %v", err, rerr)
	}
	return err
}

func TestLimits(t *testing.T) {
	const mib = 1 << 20
	// 64 MiB of zeros is a few KiB of zstd: the stream ends the archive at
	// once, and the rest is padding walk drains.
	bomb := zstdOf(t, zeros{}, 64*mib)
	bombID, _ := digest.SHA256.FromReader(io.LimitReader(zeros{}, 64*mib))
	many := ckpttest.Archive(t)
	for i := 0; i < 50; i++ {
		many = append(many, ckpttest.Entry{Name: "artifacts/f" + strings.Repeat("x", i)})
	}
	var nested []ckpttest.Entry
	for i := 0; i < 50; i++ {
		nested = append(nested, ckpttest.Entry{Name: "f" + strings.Repeat("x", i)})
	}
	tests := []struct {
		name   string
		layers []ckpttest.Layer
		lim    Limits
		want   string // "" means accepted
	}{
		{"standard image under defaults", []ckpttest.Layer{{Tar: base(t)}}, Limits{}, ""},
		{"zstd bomb of zeros", []ckpttest.Layer{{Tar: bomb, DiffID: bombID}}, Limits{MaxLayerSize: 8 * mib}, "expands to more than 8MiB"},
		{"member larger than the layer may be", []ckpttest.Layer{{Tar: base(t)}}, Limits{MaxLayerSize: 2 * mib}, "expands to more than 2MiB"},
		{"too many entries", []ckpttest.Layer{{Tar: ckpttest.Tar(t, many)}}, Limits{MaxLayerEntries: 40}, "holds more than 40 archive entries"},
		{"entries of a tar inside count", []ckpttest.Layer{{Tar: replace(t, RootfsDiffTar, ckpttest.Tar(t, nested))}}, Limits{MaxLayerEntries: 40}, "holds more than 40 archive entries"},
		{"a tar inside bigger than allowed", []ckpttest.Layer{{Tar: replace(t, RootfsDiffTar, ckpttest.Tar(t, []ckpttest.Entry{{Name: "big", Body: make([]byte, 5*mib)}}))}}, Limits{MaxLayerSize: 4 * mib}, "expands to more than 4MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := openLimited(t, tt.layers, tt.lim)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, tarsafe.ErrTooLarge) || !errors.Is(err, tarsafe.ErrUnsafe) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrTooLarge (and ErrUnsafe) saying %q", err, tt.want)
			}
			t.Log(err)
		})
	}
}

// A declared entry size, not only the bytes read, is held to the limit:
// a GNU sparse entry expands to its logical size when read.
func TestLimitsDeclaredSize(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "checkpoint/pages-1.img", Typeflag: tar.TypeReg, Size: 3 << 20, Mode: 0o644})
	b := Limits{MaxLayerSize: 1 << 20}.budget()
	err := tarsafe.NewChecker(tarsafe.Plain).Walk(bytes.NewReader(buf.Bytes()), tarsafe.ErrUnsafe, b, func(string, *tar.Header, io.Reader) error { return nil })
	if !errors.Is(err, tarsafe.ErrTooLarge) {
		t.Fatalf("err = %v, want ErrTooLarge", err)
	}
}

func TestOtherCompressionRefused(t *testing.T) {
	// xz's magic, then anything: neither podman nor podman-migrate writes xz.
	xz := append([]byte{0xFD, '7', 'z', 'X', 'Z', 0x00}, make([]byte, 64)...)
	err := openLimited(t, []ckpttest.Layer{{Tar: xz}}, Limits{})
	if !errors.Is(err, tarsafe.ErrUnsafe) || !strings.Contains(err.Error(), "xz compression is not used") {
		t.Fatalf("err = %v, want xz refused", err)
	}
}

// A pulled config.dump must not choose how much inspect allocates: port
// ranges beyond 16 bits are dropped (found while fuzzing Describe).
func TestDescribeBoundsPorts(t *testing.T) {
	got := ports([]byte(`[{"container_port":80,"host_port":8080,"range":2000000000,"protocol":"tcp"},
		{"container_port":-5,"host_port":1,"range":3,"protocol":"udp"},
		{"container_port":1000,"host_port":2000,"range":3,"protocol":"tcp"}]`))
	if len(got) != 3 || got[2].HostPort != 2002 || got[2].ContainerPort != 1002 {
		t.Fatalf("ports = %+v, want only the three valid ones", got)
	}
}
