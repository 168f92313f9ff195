package tarsafe

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"math"
	"strings"
	"testing"
)

func TestBudgetReader(t *testing.T) {
	for _, tt := range []struct {
		n       int
		wantErr bool
	}{{1024, false}, {1025, true}, {1 << 20, true}} {
		b := NewBudget(Limits{MaxBytes: 1024})
		got, err := io.Copy(io.Discard, b.Reader(bytes.NewReader(make([]byte, tt.n))))
		if (err != nil) != tt.wantErr || (err != nil && !errors.Is(err, ErrTooLarge)) {
			t.Errorf("%d bytes: err = %v, want error %v", tt.n, err, tt.wantErr)
		}
		if got > 1025 {
			t.Errorf("%d bytes: read %d, more than one past the limit", tt.n, got)
		}
	}
}

func TestBudgetEntries(t *testing.T) {
	b := NewBudget(Limits{MaxBytes: 100, MaxEntries: 3})
	n := b.Nested()
	for i, want := range []error{nil, nil, nil, ErrTooLarge} {
		bb := b
		if i%2 == 1 {
			bb = n // nested entries count towards the outer archive's
		}
		if err := bb.Entry(&tar.Header{Size: 10}); !errors.Is(err, want) {
			t.Fatalf("entry %d: err = %v, want %v", i, err, want)
		}
	}
	if err := NewBudget(Limits{MaxBytes: 100}).Entry(&tar.Header{Size: math.MaxInt64}); !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrUnsafe) {
		t.Fatalf("huge size: err = %v", err)
	}
	// Sizes are summed per archive: the nested one has its own sum.
	b = NewBudget(Limits{MaxBytes: 100})
	if err := b.Entry(&tar.Header{Size: 90}); err != nil {
		t.Fatal(err)
	}
	if err := b.Nested().Entry(&tar.Header{Size: 90}); err != nil {
		t.Fatalf("nested: %v", err)
	}
	if err := b.Entry(&tar.Header{Size: 11}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("sum past the limit: err = %v", err)
	}
	var none *Budget
	if err := none.Entry(&tar.Header{Size: math.MaxInt64}); err != nil || none.Nested() != nil {
		t.Fatalf("nil budget bounds something: %v", err)
	}
}

func TestVerifyBudget(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range []string{"a", "b", "c"} {
		_ = tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644})
	}
	_ = tw.Close()
	if _, err := Verify(bytes.NewReader(buf.Bytes()), Tree, NewBudget(Limits{MaxEntries: 3})); err != nil {
		t.Fatalf("3 entries, limit 3: %v", err)
	}
	if _, err := Verify(bytes.NewReader(buf.Bytes()), Tree, NewBudget(Limits{MaxEntries: 2})); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("3 entries, limit 2: err = %v", err)
	}
	// Padding after the end counts as read bytes too.
	padded := append(buf.Bytes(), make([]byte, 1<<20)...)
	if _, err := Verify(bytes.NewReader(padded), Tree, NewBudget(Limits{MaxBytes: 64 << 10})); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("1 MiB of padding, limit 64 KiB: err = %v", err)
	}
}

func TestLongNames(t *testing.T) {
	long := strings.Repeat("a/", 2049)
	if _, err := CleanName(long); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("a %d-byte name: err = %v", len(long), err)
	}
	if _, err := NewChecker(Tree).Check(&tar.Header{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "/" + long}); !errors.Is(err, ErrUnsafe) {
		t.Fatalf("a %d-byte link target: err = %v", len(long)+1, err)
	}
	if _, err := CleanName(strings.Repeat("a/", 2047)); err != nil {
		t.Fatalf("a name within PATH_MAX: %v", err)
	}
}
