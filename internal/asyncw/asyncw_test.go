package asyncw

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand"
	"testing"
)

func TestWritesEverythingInOrder(t *testing.T) {
	data := make([]byte, 3<<20+12345)
	rand.New(rand.NewSource(1)).Read(data)
	var out bytes.Buffer
	a := New(&out, 64<<10, 2)
	r := rand.New(rand.NewSource(2))
	for p := data; len(p) > 0; {
		n := min(len(p), r.Intn(200<<10)+1) // writes smaller and larger than a buffer
		if k, err := a.Write(p[:n]); k != n || err != nil {
			t.Fatalf("Write: %d, %v", k, err)
		}
		p = p[n:]
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(out.Bytes()) != sha256.Sum256(data) {
		t.Fatalf("wrote %d bytes, not the %d given in order", out.Len(), len(data))
	}
	if err := a.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

type failAfter struct{ n int }

var errFull = errors.New("disk full")

func (f *failAfter) Write(p []byte) (int, error) {
	if f.n -= len(p); f.n < 0 {
		return 0, errFull
	}
	return len(p), nil
}

func TestErrorReachesWriterAndClose(t *testing.T) {
	a := New(&failAfter{n: 100 << 10}, 32<<10, 2)
	var err error
	for i := 0; i < 1000 && err == nil; i++ {
		_, err = a.Write(make([]byte, 16<<10))
	}
	if !errors.Is(err, errFull) {
		t.Fatalf("Write kept succeeding after the writer failed: %v", err)
	}
	if err := a.Close(); !errors.Is(err, errFull) {
		t.Fatalf("Close: %v, want the writer's error", err)
	}
}

// TestPipe: what is written comes out in order, then the writer's error.
func TestPipe(t *testing.T) {
	want := make([]byte, 3<<20+123)
	rand.New(rand.NewSource(7)).Read(want)
	p := NewPipe(64<<10, 4)
	go func() {
		for b := want; len(b) > 0; {
			k := min(len(b), 100<<10+5) // writes larger than a chunk
			p.Write(b[:k])
			b = b[k:]
		}
		p.CloseWithError(io.ErrUnexpectedEOF)
	}()
	got, err := io.ReadAll(p)
	if !errors.Is(err, io.ErrUnexpectedEOF) || !bytes.Equal(got, want) {
		t.Fatalf("read %d of %d bytes (equal: %v), err %v; want all, then the writer's error", len(got), len(want), bytes.Equal(got, want), err)
	}
}
