package transfer

import (
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"
)

// FuzzParseReference: any SOURCE or DEST a user (or a unit file) gives
// parses or fails with ErrBadReference; what parses displays, pins and
// parses again.
func FuzzParseReference(f *testing.F) {
	d := digest.FromString("x")
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := ParseReference(s)
		if err != nil {
			if !errors.Is(err, ErrBadReference) {
				t.Fatalf("ParseReference(%q): %v is not ErrBadReference", s, err)
			}
			return
		}
		shown := Display(ref)
		_ = WithDigest(ref, d)
		if _, err := Pinned(ref, d); err != nil {
			t.Fatalf("Pinned(%q): %v", s, err)
		}
		if IsRegistry(ref) {
			again, err := ParseReference(shown)
			if err != nil || Display(again) != shown {
				t.Fatalf("ParseReference(%q) shows %q, which parses as %v, %v", s, shown, again, err)
			}
		}
	})
}
