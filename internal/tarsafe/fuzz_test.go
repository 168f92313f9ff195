package tarsafe

import (
	"archive/tar"
	"bytes"
	"errors"
	"testing"
)

// FuzzVerify: whatever a pulled tar holds, Verify returns (never panics),
// and a refusal is ErrUnsafe; an accepted archive names nothing outside it.
// Seeds: testdata/fuzz/FuzzVerify (GNU tar, PAX, sparse, links, padding).
func FuzzVerify(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, p := range []Policy{Plain, Tree} {
			c, err := Verify(bytes.NewReader(data), p, NewBudget(Limits{MaxBytes: 1 << 20, MaxEntries: 1000}))
			if err != nil {
				if !errors.Is(err, ErrUnsafe) {
					t.Fatalf("policy %d: error %v is not ErrUnsafe", p, err)
				}
				continue
			}
			// Every accepted entry has a safe clean name.
			tr := tar.NewReader(bytes.NewReader(data))
			for {
				h, err := tr.Next()
				if err != nil {
					break
				}
				name, err := CleanName(h.Name)
				if err != nil || escapes(name) {
					t.Fatalf("accepted entry %q (%v)", h.Name, err)
				}
				if h.Typeflag == tar.TypeChar || h.Typeflag == tar.TypeBlock {
					t.Fatalf("accepted device %q", h.Name)
				}
			}
			_ = c.BeneathLink("a/b")
		}
		_ = CheckDeletedPath(string(data))
	})
}
