package restore

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"github.com/klauspost/compress/zstd"
)

// adaptive writes a zstd stream whose frames are each either compressed
// or stored (zstd's raw blocks), chosen segment by segment from what it
// measures, for --compress auto across a network: podman sees one zstd
// stream either way and decompresses it (the storage library's decoder
// reads concatenated frames).
//
// A segment is compressed when that costs less time than the bytes it
// saves take to cross: seg/C < (1-r)·seg/W, with r the segment's ratio
// (from compressing a sample of it), C the compressor's speed on that
// sample, and W the speed at which the target takes bytes (from how long
// each write waited). While the target keeps up, W is high and segments
// are stored; once writes wait, as across a 1 Gbit/s link, the segments
// that shrink enough are compressed.
type adaptive struct {
	w      io.Writer
	enc    *zstd.Encoder
	seg    []byte
	frame  []byte
	wRate  float64 // bytes/s the target took, smoothed; 0: not known yet
	now    func() time.Time
	in     int64 // bytes written to adaptive
	packed int64 // of which in compressed frames
}

const (
	segSize    = 1 << 20
	sampleSize = 64 << 10
	// blockMax is zstd's largest block, and the window of a stored frame.
	blockMax = 128 << 10
	// storeAbove: a sample that shrinks less than this is stored
	// without weighing speeds (random memory).
	storeAbove = 0.95
)

func newAdaptive(w io.Writer, level zstd.EncoderLevel) (*adaptive, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(segSize))
	if err != nil {
		return nil, err
	}
	return &adaptive{w: w, enc: enc, seg: make([]byte, 0, segSize), now: time.Now}, nil
}

func (a *adaptive) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), segSize-len(a.seg))
		a.seg = append(a.seg, p[:k]...)
		p, n = p[k:], n+k
		if len(a.seg) == segSize {
			if err := a.flushSegment(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// Close writes the last segment; it does not close w.
func (a *adaptive) Close() error {
	if len(a.seg) == 0 {
		return nil
	}
	return a.flushSegment()
}

func (a *adaptive) flushSegment() error {
	seg := a.seg
	a.in += int64(len(seg))
	if a.compressWorth(seg) {
		a.frame = a.enc.EncodeAll(seg, a.frame[:0])
		a.packed += int64(len(seg))
	} else {
		a.frame = storedFrame(seg, a.frame[:0])
	}
	a.seg = a.seg[:0]
	return a.send(a.frame)
}

// compressWorth weighs compressing seg against storing it.
func (a *adaptive) compressWorth(seg []byte) bool {
	if a.wRate == 0 {
		return false // the target's speed is not known yet
	}
	sample := seg[:min(len(seg), sampleSize)]
	start := a.now()
	a.frame = a.enc.EncodeAll(sample, a.frame[:0])
	took := a.now().Sub(start).Seconds()
	r := float64(len(a.frame)) / float64(len(sample))
	if r > storeAbove {
		return false
	}
	if took <= 0 {
		return true // faster than the clock can tell
	}
	c := float64(len(sample)) / took
	return 1/c < (1-r)/a.wRate
}

// send writes a frame and learns from the wait how fast the target takes
// bytes. A write that returns within a millisecond says little (buffers
// took it): it only raises a speed known to be lower.
func (a *adaptive) send(b []byte) error {
	start := a.now()
	_, err := a.w.Write(b)
	took := a.now().Sub(start)
	switch rate := float64(len(b)) / max(took, time.Millisecond).Seconds(); {
	case took >= time.Millisecond && a.wRate == 0:
		a.wRate = rate
	case took >= time.Millisecond, rate > a.wRate && a.wRate > 0:
		// A quick write only bounds the speed from below.
		a.wRate = 0.7*a.wRate + 0.3*rate
	}
	return err
}

// Report says what share went compressed, for results.
func (a *adaptive) Report() string {
	if a.in == 0 {
		return "auto"
	}
	return fmt.Sprintf("auto: zstd for %.0f%% of %d MiB", 100*float64(a.packed)/float64(a.in), a.in>>20)
}

// storedFrame appends a zstd frame holding b in raw blocks: the frame
// header (magic, no content size, no checksum, a 128 KiB window), then
// blocks of at most 128 KiB, the last marked.
func storedFrame(b, dst []byte) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, 0xFD2FB528)
	dst = append(dst, 0x00, 0x38) // descriptor; window 2^(10+7)
	for {
		n := min(len(b), blockMax)
		last := uint32(0)
		if n == len(b) {
			last = 1
		}
		h := last | uint32(n)<<3 // block type 0: raw
		dst = append(dst, byte(h), byte(h>>8), byte(h>>16))
		dst = append(dst, b[:n]...)
		b = b[n:]
		if last == 1 {
			return dst
		}
	}
}
