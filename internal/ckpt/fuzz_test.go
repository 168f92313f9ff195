package ckpt

import (
	"context"
	"errors"
	"testing"

	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
)

// FuzzOpen builds a one-layer image from the fuzzed layer bytes (a tar,
// or a zstd or gzip stream of one), opens it as pull does and describes it
// as inspect does: it must return, never panic, and refuse with ErrUnsafe
// or ErrNotCheckpoint.
// Seeds: testdata/fuzz/FuzzOpen (a small podman archive, compressed and
// not, and hostile variants).
func FuzzOpen(f *testing.F) {
	lim := Limits{MaxLayerSize: 8 << 20, MaxLayerEntries: 2000}
	f.Fuzz(func(t *testing.T, layer []byte) {
		ref := ckpttest.WriteImage(t, t.TempDir(), []ckpttest.Layer{{Tar: layer}}, podmanAnn)
		src, err := ref.NewImageSource(context.Background(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer src.Close()
		for _, read := range []func() error{
			func() error {
				meta, err := ReadMetadata(context.Background(), src, lim)
				if err == nil {
					_ = Describe(meta) // inspect shows what a pulled image says
				}
				return err
			},
			func() error { _, err := Open(context.Background(), src, lim); return err },
		} {
			if err := read(); err != nil && !errors.Is(err, tarsafe.ErrUnsafe) && !errors.Is(err, ErrNotCheckpoint) {
				t.Fatalf("error %v is neither ErrUnsafe nor ErrNotCheckpoint", err)
			}
		}
	})
}
