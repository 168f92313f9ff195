// Package move moves containers from one podman service to another in one
// go: push (checkpoint, image) then pull (plan, verify, restore), and back
// again when the target refuses, so a move never loses a container.
package move

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/export"
	restore "github.com/podman-migrate/podman-migrate/import"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// Options are the settings of one move.
type Options struct {
	Containers []string
	// Via is a registry repository (host/repo) the images go through and
	// stay in, one tag per container; "" passes them through a staging
	// OCI layout on this machine, with no registry.
	Via      string
	Parallel int
	// Push and Pull are templates: Container, Dest and Source are set per
	// container. Pull.Name is only allowed with a single container.
	Push export.PushOptions
	Pull restore.PullOptions
	Log  io.Writer
}

// Result is what became of one container.
type Result struct {
	Container string              `json:"container"`
	Name      string              `json:"name,omitempty"`
	ID        string              `json:"id,omitempty"`
	Ref       string              `json:"reference,omitempty"`
	Digest    string              `json:"digest,omitempty"`
	Seconds   float64             `json:"seconds"`
	Pushed    *export.PushResult  `json:"push,omitempty"`
	Pulled    *restore.PullResult `json:"pull,omitempty"`
	Err       error               `json:"-"`
	Error     string              `json:"error,omitempty"`
	Took      time.Duration       `json:"-"`
}

// ErrSomeFailed is wrapped when at least one container did not move.
var ErrSomeFailed = errors.New("not every container moved")

// Error is a failed restore on the target after which the source was
// resumed, or could not be.
type Error struct {
	Container string
	Err       error
	Resumed   bool
	ResumeErr error
}

func (e *Error) Error() string {
	if e.Resumed {
		return fmt.Sprintf("%v; container %q was restored from its checkpoint and is running again on the source host", e.Err, e.Container)
	}
	return fmt.Sprintf("%v; restoring container %q on the source host also failed (%v): it is still checkpointed there, run `podman container restore --keep %s` on it to resume it", e.Err, e.Container, e.ResumeErr, e.Container)
}

func (e *Error) Unwrap() error { return e.Err }

// Move moves every container, at most o.Parallel at once, and reports each
// result as it is known.
func Move(ctx context.Context, from, to *podman.Client, o Options, report func(Result)) error {
	if len(o.Containers) > 1 && o.Pull.Name != "" {
		return errors.New("--name applies to a single container")
	}
	if len(o.Containers) > 1 && len(o.Pull.Publish) > 0 {
		return errors.New("--publish applies to a single container")
	}
	par := o.Parallel
	if par < 1 {
		par = 1
	}
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, ctr := range o.Containers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			start := time.Now()
			r := one(ctx, from, to, ctr, o)
			r.Took = time.Since(start)
			r.Seconds = r.Took.Round(time.Millisecond).Seconds()
			if r.Err != nil {
				r.Error = r.Err.Error()
			}
			mu.Lock()
			defer mu.Unlock()
			if r.Err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", ctr, r.Err))
			}
			report(r)
		}()
	}
	wg.Wait()
	switch {
	case len(errs) == 0:
		return nil
	case len(o.Containers) == 1:
		return errs[0] // its kind decides the exit code
	}
	return fmt.Errorf("%w (%d of %d): %w", ErrSomeFailed, len(errs), len(o.Containers), errors.Join(errs...))
}

func one(ctx context.Context, from, to *podman.Client, ctr string, o Options) Result {
	r := Result{Container: ctr}
	logw := o.Log
	if logw == nil {
		logw = io.Discard
	}
	prefixed := &prefixWriter{w: logw, prefix: ctr + ": "}
	push := o.Push
	push.Container, push.LeaveRunning, push.Log = ctr, false, prefixed
	push.Transfer.Report = nil
	if o.Via != "" {
		push.Dest = o.Via + ":" + ctr
	} else {
		dir, err := os.MkdirTemp(transfer.StagingDir(push.TmpDir), "podman-migrate-move-")
		if err != nil {
			r.Err = fmt.Errorf("creating a staging directory: %w", err)
			return r
		}
		defer os.RemoveAll(dir)
		push.Dest = "oci:" + filepath.Join(dir, "layout") + ":" + ctr
	}
	pushed, err := export.Push(ctx, from, push)
	if err != nil {
		r.Err = fmt.Errorf("pushing: %w", err)
		return r
	}
	r.Ref, r.Digest, r.Pushed = pushed.Reference, pushed.Digest, pushed
	dest, dgst := pushed.Reference, pushed.Digest
	pull := o.Pull
	pull.Source, pull.Log = dest, prefixed
	pull.Transfer.Report = nil
	if o.Via != "" {
		pull.Source = dest + "@" + dgst
	}
	pulled, err := restore.Pull(ctx, to, pull)
	if err != nil {
		me := &Error{Container: ctr, Err: fmt.Errorf("restoring on %s: %w", to.URI, err)}
		fmt.Fprintf(prefixed, "Restore on the target failed; restoring %s on the source host\n", ctr)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
		defer cancel()
		if rerr := export.Resume(rctx, from, ctr, push); rerr != nil {
			me.ResumeErr = rerr
		} else {
			me.Resumed = true
		}
		r.Err = me
		return r
	}
	r.ID, r.Name, r.Pulled = pulled.ID, pulled.Name, pulled
	return r
}

// prefixWriter prefixes each line, so the logs of concurrent moves can be
// told apart.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	midLn  bool
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []byte
	for _, c := range b {
		if !p.midLn {
			out = append(out, p.prefix...)
			p.midLn = true
		}
		out = append(out, c)
		if c == '\n' {
			p.midLn = false
		}
	}
	if _, err := p.w.Write(out); err != nil {
		return 0, err
	}
	return len(b), nil
}
