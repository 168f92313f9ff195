// Package progress reports how far a long stream has come: a line redrawn
// in place on a terminal, plain lines now and then elsewhere (journald and
// pipes get no redraws).
package progress

import (
	"fmt"
	"io"
	"sync"
	"time"

	units "github.com/docker/go-units"
	"golang.org/x/term"
)

// Every is how often a plain (non-terminal) progress line is written.
const Every = 10 * time.Second

// IsTerminal reports whether w writes to a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}

// Reader counts what is read through r and reports it to w under label.
// Close ends the report with the total.
type Reader struct {
	r     io.Reader
	w     io.Writer
	label string
	tty   bool
	start time.Time

	mu   sync.Mutex
	n    int64
	last time.Time
	done bool
}

// NewReader wraps r; a nil or io.Discard w reports nothing.
func NewReader(r io.Reader, w io.Writer, label string) *Reader {
	now := time.Now()
	return &Reader{r: r, w: w, label: label, tty: IsTerminal(w), start: now, last: now}
}

// N is the number of bytes read so far.
func (p *Reader) N() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

func (p *Reader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n += int64(n)
	if p.w == nil || p.w == io.Discard || p.done {
		return n, err
	}
	now := time.Now()
	switch {
	case p.tty && now.Sub(p.last) >= 250*time.Millisecond:
		fmt.Fprintf(p.w, "\r%s: %s (%s/s)\x1b[K", p.label, units.BytesSize(float64(p.n)), units.BytesSize(p.rate(now)))
		p.last = now
	case !p.tty && now.Sub(p.last) >= Every:
		fmt.Fprintf(p.w, "%s: %s so far\n", p.label, units.BytesSize(float64(p.n)))
		p.last = now
	}
	return n, err
}

func (p *Reader) rate(now time.Time) float64 {
	s := now.Sub(p.start).Seconds()
	if s <= 0 {
		return 0
	}
	return float64(p.n) / s
}

// Close finishes the report; the terminal line is completed.
func (p *Reader) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done || p.w == nil || p.w == io.Discard {
		p.done = true
		return
	}
	p.done = true
	if p.tty {
		fmt.Fprintf(p.w, "\r%s: %s\x1b[K\n", p.label, units.BytesSize(float64(p.n)))
	}
}
