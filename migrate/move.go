package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/export"
	restore "github.com/podman-migrate/podman-migrate/import"
	"github.com/podman-migrate/podman-migrate/internal/fault"
)

// MoveOptions are the settings of one move.
type MoveOptions struct {
	Containers []string
	// Via is a registry repository (host/repo) the images go through and
	// stay in, one tag per container; "" streams each container's
	// checkpoint from the source's podman into the target's in one pass,
	// with no image and no staging.
	Via      string
	Parallel int
	// Push and Pull are templates: Container, Dest and Source are set per
	// container. Pull.Name is only allowed with a single container.
	Push export.PushOptions
	Pull restore.PullOptions
	Log  io.Writer
}

// MoveResult is what became of one container.
type MoveResult struct {
	Container string  `json:"container"`
	Name      string  `json:"name,omitempty"`
	ID        string  `json:"id,omitempty"`
	Ref       string  `json:"reference,omitempty"`
	Digest    string  `json:"digest,omitempty"`
	Seconds   float64 `json:"seconds"`
	// Downtime is how long the container was frozen: from the
	// checkpoint's request on the source to the restore's answer on the
	// target, in seconds.
	Downtime float64             `json:"downtime,omitempty"`
	Pushed   *export.PushResult  `json:"push,omitempty"`
	Pulled   *restore.PullResult `json:"pull,omitempty"`
	// A pod's move: Container and Name are the pod's, ID the new pod's.
	PodPushed *PodPushResult `json:"podPush,omitempty"`
	PodPulled *PodPullResult `json:"podPull,omitempty"`
	Err       error          `json:"-"`
	Error     string         `json:"error,omitempty"`
	Took      time.Duration  `json:"-"`
}

// ErrSomeFailed is wrapped when at least one container did not move.
var ErrSomeFailed = errors.New("not every container moved")

// MoveError is a failed restore on the target after which the source was
// resumed, or could not be.
type MoveError struct {
	Container string
	Err       error
	Resumed   bool
	ResumeErr error
	Pod       bool // Container names a pod, resumed member by member
	Group     bool // Container names a group's members, thawed
}

func (e *MoveError) Error() string {
	if e.Group {
		if e.Resumed {
			return fmt.Sprintf("%v; group %q was only frozen on the source host, and runs on there", e.Err, e.Container)
		}
		return fmt.Sprintf("%v; thawing group %q on the source host also failed (%v): check its members with `podman ps` there", e.Err, e.Container, e.ResumeErr)
	}
	if e.Pod {
		if e.Resumed {
			return fmt.Sprintf("%v; pod %q: every member was restored from its checkpoint and runs again on the source host", e.Err, e.Container)
		}
		return fmt.Sprintf("%v; restoring pod %q's members on the source host also failed (%v): run `podman container restore --keep` on each member still exited there", e.Err, e.Container, e.ResumeErr)
	}
	if e.Resumed {
		return fmt.Sprintf("%v; container %q was restored from its checkpoint and is running again on the source host", e.Err, e.Container)
	}
	return fmt.Sprintf("%v; restoring container %q on the source host also failed (%v): it is still checkpointed there, run `podman container restore --keep %s` on it to resume it", e.Err, e.Container, e.ResumeErr, e.Container)
}

func (e *MoveError) Unwrap() error { return e.Err }

// Move moves every container from one podman to another, at most
// o.Parallel at once, and reports each result as it is known.
func Move(ctx context.Context, from podman.Source, to podman.Target, o MoveOptions, report func(MoveResult)) error {
	if len(o.Containers) > 1 && o.Pull.Name != "" {
		return fault.Wrap(fault.Usage, errors.New("--name applies to a single container"))
	}
	if len(o.Containers) > 1 && len(o.Pull.Publish) > 0 {
		return fault.Wrap(fault.Usage, errors.New("--publish applies to a single container"))
	}
	par := o.Parallel
	if par < 1 {
		par = 1
	}
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	units, err := groupUnits(ctx, from, o.Containers)
	if err != nil {
		return fault.OnSide(fault.Source, err)
	}
	for _, ctr := range units {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			start := time.Now()
			var r MoveResult
			if names := strings.Split(ctr, " "); len(names) > 1 {
				r = moveGroup(ctx, from.(podman.PodSource), to, names, o)
			} else {
				r = one(ctx, from, to, ctr, o)
			}
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

// moving is the move of one container: push, then pull, and back.
type moving struct {
	from podman.Source
	to   podman.Target
	o    MoveOptions
	log  io.Writer
	r    *MoveResult
	push export.PushOptions
}

func one(ctx context.Context, from podman.Source, to podman.Target, ctr string, o MoveOptions) MoveResult {
	r := moveOnce(ctx, from, to, ctr, o)
	var me *MoveError
	if o.Via == "" && errors.As(r.Err, &me) && me.Resumed && restore.IsNetworkRace(me.Err) && ctx.Err() == nil {
		// The live archive was spent; the source runs again, so the
		// whole move can be done again.
		fmt.Fprintf(logOrDiscard(o.Log), "%s: podman's network set-up on the target raced with another container's; moving again\n", ctr)
		r = moveOnce(ctx, from, to, ctr, o)
	}
	return r
}

func moveOnce(ctx context.Context, from podman.Source, to podman.Target, ctr string, o MoveOptions) MoveResult {
	m := &moving{from: from, to: to, o: o, r: &MoveResult{Container: ctr},
		log: &prefixWriter{w: logOrDiscard(o.Log), prefix: ctr + ": "}}
	m.push = o.Push
	m.push.Container, m.push.LeaveRunning, m.push.Log = ctr, false, m.log
	m.push.Transfer.Report = nil
	pod, err := isPodMove(ctx, from, to, ctr)
	switch {
	case err != nil:
		err = fault.OnSide(fault.Source, err)
	case pod:
		err = m.movePod(ctx, from.(podman.PodSource), to.(podman.PodTarget))
	case o.Via == "":
		err = m.direct(ctx)
	default:
		m.push.Dest = o.Via + ":" + ctr
		err = runOp(ctx, "move", []phase{
			{"push", m.pushPhase},
			{"pull", m.pull},
		}, func(err error) error { return m.resume(ctx, err) })
	}
	m.r.Err = err
	return *m.r
}

func (m *moving) pushPhase(ctx context.Context) error {
	pushed, err := Push(ctx, m.from, m.push)
	if err != nil {
		return fault.OnSide(fault.Source, fmt.Errorf("pushing: %w", err))
	}
	m.r.Ref, m.r.Digest, m.r.Pushed = pushed.Reference, pushed.Digest, pushed
	return nil
}

func (m *moving) pull(ctx context.Context) error {
	pull := m.o.Pull
	pull.Source, pull.Log = m.r.Ref+"@"+m.r.Digest, m.log
	pull.Transfer.Report = nil
	pulled, err := Pull(ctx, m.to, pull)
	if err != nil {
		return fault.OnSide(fault.Target, fmt.Errorf("restoring on %s: %w", m.to.Address(), err))
	}
	m.r.ID, m.r.Name, m.r.Pulled = pulled.ID, pulled.Name, pulled
	m.r.Downtime = since(m.r.Pushed.FrozeAt)
	return nil
}

// resume is move's one way back: the source container is restored from
// the checkpoint push kept.
func (m *moving) resume(ctx context.Context, cause error) error {
	if m.r.Pushed == nil {
		return cause // push restored it itself, or never stopped it
	}
	ctr := m.push.Container
	me := &MoveError{Container: ctr, Err: cause}
	fmt.Fprintf(m.log, "Restore on the target failed; restoring %s on the source host\n", ctr)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackBound)
	defer cancel()
	if rerr := Resume(rctx, m.from, ctr, m.push); rerr != nil {
		me.ResumeErr = rerr
	} else {
		me.Resumed = true
	}
	return me
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
