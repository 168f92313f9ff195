package transfer

import (
	"errors"
	"strings"
	"testing"

	"github.com/containers/image/v5/transports"
	"github.com/opencontainers/go-digest"
)

// FuzzParseReference: any SOURCE or DEST a user (or a unit file) gives
// parses or fails with ErrBadReference; what parses displays, pins and
// parses again.
func FuzzParseReference(f *testing.F) {
	d := digest.FromString("x")
	f.Fuzz(func(t *testing.T, s string) {
		// These transports act when parsed: tarball reads stdin or opens
		// files, containers-storage opens this host's store.
		if name, _, ok := strings.Cut(s, ":"); ok && (name == "tarball" || name == "containers-storage") && transports.Get(name) != nil {
			t.Skip("transport with side effects at parse time")
		}
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
