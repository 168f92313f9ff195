package progress

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

func TestPlainWriterGetsNoRedraws(t *testing.T) {
	var out bytes.Buffer
	p := NewReader(strings.NewReader(strings.Repeat("x", 1<<20)), &out, "Reading")
	p.last = p.last.Add(-2 * Every) // due at once
	n, err := io.Copy(io.Discard, p)
	p.Close()
	if err != nil || n != 1<<20 || p.N() != n {
		t.Fatalf("copied %d (%v), counted %d", n, err, p.N())
	}
	if strings.Contains(out.String(), "\r") || !strings.HasPrefix(out.String(), "Reading: ") || strings.Count(out.String(), "\n") != 1 {
		t.Fatalf("plain output %q: want one line, no carriage returns", out.String())
	}
}
