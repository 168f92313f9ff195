package restore

import (
	"bytes"
	"io"
	"math/rand"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/containers/storage/pkg/archive"
	"github.com/klauspost/compress/zstd"
)

// wire is a target that takes rate bytes a second on a fake clock, which
// also moves by step at every reading (the compressor's time).
type wire struct {
	buf  bytes.Buffer
	rate float64 // 0: at once
	t    time.Time
	step time.Duration
}

func (w *wire) now() time.Time { w.t = w.t.Add(w.step); return w.t }

func (w *wire) Write(p []byte) (int, error) {
	if w.rate > 0 {
		w.t = w.t.Add(time.Duration(float64(len(p)) / w.rate * float64(time.Second)))
	}
	return w.buf.Write(p)
}

// mixed is a checkpoint's shape: random memory, then text-like pages.
func mixed() []byte {
	random := make([]byte, 8<<20)
	rand.New(rand.NewSource(1)).Read(random)
	return append(random, bytes.Repeat([]byte("page of a heap with some structure 0123456789\n"), 8<<20/46)...)
}

func send(t *testing.T, w *wire, data []byte) *adaptive {
	t.Helper()
	a, err := newAdaptive(w, zstd.SpeedFastest)
	if err != nil {
		t.Fatal(err)
	}
	a.now = w.now
	for p := data; len(p) > 0; {
		n := min(len(p), 300<<10) // tar writes in pieces
		if _, err := a.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestAdaptiveChooses: segments are compressed only where that beats
// sending them as they are, by the measured speeds: never while the
// target keeps up, never for random memory, and for the rest only when
// the compressor outruns what it saves on the wire.
func TestAdaptiveChooses(t *testing.T) {
	data := mixed()
	for _, tc := range []struct {
		name       string
		rate       float64
		step       time.Duration
		minPct     float64
		maxPct     float64
		smallerOut bool
	}{
		{"the target keeps up", 0, 100 * time.Microsecond, 0, 0, false},
		// 1 Gbit/s; the sample compresses at 650 MB/s: the text half
		// goes compressed, the random half as it is.
		{"1 Gbit/s", 125e6, 100 * time.Microsecond, 40, 50, true},
		// 500 MB/s against a compressor of 650 MB/s: compressing the
		// text still wins ((1-r)/W > 1/C).
		{"500 MB/s, fast compressor", 500e6, 100 * time.Microsecond, 40, 50, true},
		// 500 MB/s against 160 MB/s: it would not.
		{"500 MB/s, slow compressor", 500e6, 400 * time.Microsecond, 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &wire{rate: tc.rate, step: tc.step}
			a := send(t, w, data)
			pct := 100 * float64(a.packed) / float64(a.in)
			if a.in != int64(len(data)) || pct < tc.minPct || pct > tc.maxPct {
				t.Fatalf("%.0f%% of %d bytes compressed, want %.0f-%.0f%% (%s)", pct, a.in, tc.minPct, tc.maxPct, a.Report())
			}
			if tc.smallerOut != (w.buf.Len() < len(data)*3/4) {
				t.Errorf("%d bytes sent for %d", w.buf.Len(), len(data))
			}
			if !strings.HasPrefix(a.Report(), "auto: zstd for ") {
				t.Errorf("report %q", a.Report())
			}
		})
	}
}

// TestAdaptiveStreamsDecode: stored and compressed frames in one stream
// read back whole with podman's decompression (the storage library's)
// and with the zstd tool.
func TestAdaptiveStreamsDecode(t *testing.T) {
	data := mixed()
	w := &wire{rate: 125e6, step: 100 * time.Microsecond}
	a := send(t, w, data)
	if a.packed == 0 || a.packed == a.in {
		t.Fatalf("want both kinds of frame, got %s", a.Report())
	}
	stream := w.buf.Bytes()
	dr, err := archive.DecompressStream(bytes.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(dr)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("storage library: %d bytes back, %v", len(got), err)
	}
	cmd := exec.Command("zstd", "-d", "-c")
	cmd.Stdin = bytes.NewReader(stream)
	out, err := cmd.Output()
	if err != nil || !bytes.Equal(out, data) {
		t.Fatalf("zstd -d: %d bytes back, %v", len(out), err)
	}
	// A stored frame of an odd size, alone.
	odd := data[:blockMax*2+17]
	cmd = exec.Command("zstd", "-d", "-c")
	cmd.Stdin = bytes.NewReader(storedFrame(odd, nil))
	if out, err := cmd.Output(); err != nil || !bytes.Equal(out, odd) {
		t.Fatalf("zstd -d of one stored frame: %d bytes, %v", len(out), err)
	}
}
