// Package asyncw decouples the stages of a streaming pipeline with bounded
// buffers, so that on 2 cores they overlap instead of taking turns. A
// Writer hands filled buffers to a goroutine that writes them on: the
// writer's side (reading podman's archive, compressing) does not wait for
// each write of the next stage (a hash, a file, an upload) to return. A
// Pipe does the same for a next stage that reads (a verifier).
package asyncw

import (
	"io"
	"sync"
)

// Writer is an io.WriteCloser that writes to w from its own goroutine,
// with at most depth buffers of size bytes in flight (backpressure
// beyond that). Close flushes and returns the first error of w.
type Writer struct {
	w     io.Writer
	size  int
	full  chan []byte
	free  chan []byte
	spare int // buffers not yet allocated
	cur   []byte
	done  chan struct{}

	mu     sync.Mutex
	err    error
	closed bool
}

// New starts a Writer on w.
func New(w io.Writer, size, depth int) *Writer {
	a := &Writer{w: w, size: size, full: make(chan []byte, depth), free: make(chan []byte, depth+1), spare: depth + 1, done: make(chan struct{})}
	go a.run()
	return a
}

func (a *Writer) run() {
	defer close(a.done)
	for b := range a.full {
		if a.failed() == nil {
			if _, err := a.w.Write(b); err != nil {
				a.mu.Lock()
				a.err = err
				a.mu.Unlock()
			}
		}
		a.free <- b[:0]
	}
}

func (a *Writer) failed() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

// buffer returns an empty buffer, allocating up to depth+1 of them
// before it waits for one to come back.
func (a *Writer) buffer() []byte {
	if a.spare > 0 {
		select {
		case b := <-a.free:
			return b
		default:
			a.spare--
			return make([]byte, 0, a.size)
		}
	}
	return <-a.free
}

func (a *Writer) Write(p []byte) (int, error) {
	if err := a.failed(); err != nil {
		return 0, err
	}
	n := len(p)
	for len(p) > 0 {
		if a.cur == nil {
			a.cur = a.buffer()
		}
		k := copy(a.cur[len(a.cur):cap(a.cur)], p)
		a.cur, p = a.cur[:len(a.cur)+k], p[k:]
		if len(a.cur) == cap(a.cur) {
			a.full <- a.cur
			a.cur = nil
		}
	}
	return n, nil
}

// Close writes what is buffered, waits for the goroutine and returns the
// first error w gave. It may be called more than once.
func (a *Writer) Close() error {
	a.mu.Lock()
	closed := a.closed
	a.closed = true
	a.mu.Unlock()
	if !closed {
		if len(a.cur) > 0 {
			a.full <- a.cur
			a.cur = nil
		}
		close(a.full)
	}
	<-a.done
	return a.failed()
}
