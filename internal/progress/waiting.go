package progress

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// WaitOptions are the settings of a Waiting.
type WaitOptions struct {
	// Stall is how long the wait may take before Warn's line is printed,
	// once; 0 never warns.
	Stall time.Duration
	// Warn makes the warning line from the time waited so far.
	Warn func(elapsed time.Duration) string
}

// Waiting shows how long a call that reports no progress of its own (a
// checkpoint) has taken: label and the seconds elapsed, redrawn every second
// on a terminal, a plain line every Every elsewhere.
type Waiting struct {
	w     io.Writer
	label string
	tty   bool
	start time.Time
	o     WaitOptions

	mu       sync.Mutex
	drawn    bool // a terminal line is open
	stop     chan struct{}
	finished chan struct{}
}

// StartWaiting begins showing label on w; Stop ends it.
func StartWaiting(w io.Writer, label string, o WaitOptions) *Waiting {
	if w == nil {
		w = io.Discard
	}
	tty := IsTerminal(w)
	tick := Every
	if tty {
		tick = time.Second
	}
	return startWaiting(w, label, o, tty, tick)
}

func startWaiting(w io.Writer, label string, o WaitOptions, tty bool, tick time.Duration) *Waiting {
	p := &Waiting{w: w, label: label, tty: tty, start: time.Now(), o: o, stop: make(chan struct{}), finished: make(chan struct{})}
	p.mu.Lock()
	if tty {
		p.redraw()
	} else {
		fmt.Fprintf(w, "%s\n", label)
	}
	p.mu.Unlock()
	go p.run(tick)
	return p
}

func (p *Waiting) run(tick time.Duration) {
	defer close(p.finished)
	t := time.NewTicker(tick)
	defer t.Stop()
	var stall <-chan time.Time
	if p.o.Stall > 0 && p.o.Warn != nil {
		st := time.NewTimer(p.o.Stall)
		defer st.Stop()
		stall = st.C
	}
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.mu.Lock()
			if p.tty {
				p.redraw()
			} else {
				fmt.Fprintf(p.w, "%s: %s\n", p.label, p.elapsed())
			}
			p.mu.Unlock()
		case <-stall:
			stall = nil
			p.Note("Warning: %s", p.o.Warn(round(time.Since(p.start))))
		}
	}
}

func (p *Waiting) elapsed() time.Duration { return time.Since(p.start).Round(time.Second) }

// round keeps whole seconds, but for waits shorter than one.
func round(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(time.Second)
}

// redraw is called with mu held.
func (p *Waiting) redraw() {
	fmt.Fprintf(p.w, "\r%s: %s\x1b[K", p.label, p.elapsed())
	p.drawn = true
}

// Note prints a line of its own without mangling the redrawn one.
func (p *Waiting) Note(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.drawn = false
	}
	fmt.Fprintf(p.w, format+"\n", args...)
	if p.tty {
		select {
		case <-p.stop:
		default:
			p.redraw()
		}
	}
}

// Stop ends the report, completing the terminal line. It may be called
// more than once.
func (p *Waiting) Stop() {
	p.mu.Lock()
	select {
	case <-p.stop:
		p.mu.Unlock()
		return
	default:
		close(p.stop)
	}
	p.mu.Unlock()
	<-p.finished
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		p.redraw()
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}
