package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/fault"
	"github.com/podman-migrate/podman-migrate/internal/progress"
)

// ErrStoppedWaiting is wrapped when a second interrupt ended the wait for
// a checkpoint that podman may still be taking.
var ErrStoppedWaiting = fault.New(fault.Interrupted, "stopped waiting for the checkpoint")

// DefaultStall is how long a checkpoint may take before push warns that it
// may hang.
const DefaultStall = 30 * time.Second

// EndGrace bounds the wait for podman's answer once CRIU was ended: the
// runtime then fails, and podman answers, within seconds (tests shorten it).
var EndGrace = time.Minute

// stallAfter is when a checkpoint earns the warning: o.CheckpointStall, or
// DefaultStall, or half the timeout if that is shorter.
func stallAfter(o PushOptions) time.Duration {
	d := o.CheckpointStall
	if d <= 0 {
		d = DefaultStall
		if o.CheckpointTimeout > 0 && o.CheckpointTimeout/2 < d {
			d = o.CheckpointTimeout / 2
		}
	}
	return d
}

type checkpointAnswer struct {
	archive io.ReadCloser
	err     error
}

// AwaitCheckpoint takes the checkpoint and waits for it, showing the time
// elapsed, within o.CheckpointTimeout. An interrupt (ctx) does not cancel
// the request: podman carries on after the client hangs up, and the
// rollback could not tell whether the container stopped; the checkpoint is
// awaited, then undone. o.StopWaiting (a second interrupt) ends the wait
// at once, with the commands that recover the container.
//
// done says whether podman answered; when it did not, err is final and
// no rollback is due (it would block on the container podman still holds).
func AwaitCheckpoint(ctx context.Context, c podman.Source, ctr *podman.Container, copts podman.CheckpointOptions, o PushOptions, logw io.Writer) (archive io.ReadCloser, done bool, err error) {
	rctx, hangUp := context.WithCancel(context.WithoutCancel(ctx))
	answer := make(chan checkpointAnswer, 1)
	go func() {
		a, err := c.Checkpoint(rctx, ctr.ID, copts)
		answer <- checkpointAnswer{a, err}
	}()
	wait := progress.StartWaiting(logw, fmt.Sprintf("Checkpointing container %s (%s)", ctr.Name, ckpt.ShortID(ctr.ID)), progress.WaitOptions{
		Stall: stallAfter(o),
		Warn: func(d time.Duration) string {
			return fmt.Sprintf("the checkpoint has taken %s; if it hangs, run `podman-migrate check` on that host", d)
		},
	})
	defer wait.Stop()
	var timeout <-chan time.Time
	if o.CheckpointTimeout > 0 {
		t := time.NewTimer(o.CheckpointTimeout)
		defer t.Stop()
		timeout = t.C
	}
	interrupted := ctx.Done()
	for {
		select {
		case a := <-answer:
			if a.err != nil {
				hangUp()
				return nil, true, a.err
			}
			return hangUpOnClose{a.archive, hangUp}, true, nil
		case <-interrupted:
			interrupted = nil
			again := ""
			if o.StopWaiting != nil {
				again = "; interrupt again to stop waiting"
			}
			wait.Note("Interrupted: waiting for the checkpoint of %s to end, then restoring it%s", ctr.Name, again)
		case <-o.StopWaiting:
			hangUp()
			return nil, false, stoppedWaiting(c, ctr)
		case <-timeout:
			wait.Stop()
			return endStuck(c, ctr, o, answer, hangUp, logw)
		}
	}
}

// endStuck ends the CRIU of a checkpoint that outlived its timeout and
// awaits podman's answer, which is then a failure for rollback to undo; a
// service on another machine gets the command that ends it there.
func endStuck(c podman.Source, ctr *podman.Container, o PushOptions, answer <-chan checkpointAnswer, hangUp func(), logw io.Writer) (io.ReadCloser, bool, error) {
	stuck := func(detail string) error {
		return podman.StuckError(fmt.Sprintf("checkpointing container %q", ctr.Name), o.CheckpointTimeout, detail)
	}
	pids, err := c.EndStuckCRIU(ctr.ID, "checkpoint")
	if errors.Is(err, podman.ErrRemote) {
		hangUp()
		return nil, false, stuck(fmt.Sprintf("the podman service is on another machine: end CRIU there with `%s`, and the container runs on (if `podman ps -a` then shows it stopped, `podman container restore --keep %s` resumes it)",
			podman.EndStuckCRIUCommand(ctr.ID, "checkpoint"), ctr.Name))
	}
	ended := podman.DescribeEnded("checkpoint", pids, err)
	fmt.Fprintf(logw, "The checkpoint of %s took longer than %s; %s; waiting for podman to answer\n", ctr.Name, o.CheckpointTimeout, ended)
	grace := time.NewTimer(EndGrace)
	defer grace.Stop()
	select {
	case a := <-answer:
		if a.err == nil {
			// It finished as it was ended: a checkpoint like any other.
			return hangUpOnClose{a.archive, hangUp}, true, nil
		}
		hangUp()
		return nil, true, stuck(fmt.Sprintf("%s; podman then answered: %v", ended, a.err))
	case <-grace.C:
		hangUp()
		return nil, true, stuck(fmt.Sprintf("%s, and podman had not answered %s later", ended, EndGrace))
	case <-o.StopWaiting:
		hangUp()
		return nil, false, stoppedWaiting(c, ctr)
	}
}

// hangUpOnClose ends the checkpoint request's context once its archive
// has been read.
type hangUpOnClose struct {
	io.ReadCloser
	hangUp context.CancelFunc
}

func (h hangUpOnClose) Close() error {
	defer h.hangUp()
	return h.ReadCloser.Close()
}

// stoppedWaiting is the error of a second interrupt: podman may still be
// checkpointing, so it names the commands that recover the container.
func stoppedWaiting(c podman.Host, ctr *podman.Container) error {
	where := "on this machine"
	if _, err := c.ServicePID(); err != nil {
		where = "on the podman service's host"
	}
	return fmt.Errorf("%w of container %q (second interrupt); podman may still be taking it: once it ends, `podman container restore --keep %s` resumes the container if `podman ps -a` shows it stopped; if CRIU is stuck, end it %s with `%s`",
		ErrStoppedWaiting, ctr.Name, ctr.Name, where, podman.EndStuckCRIUCommand(ctr.ID, "checkpoint"))
}
