package migrate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/fault"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// isPodMove says whether name is a pod on the source that both sides can
// move as one (a pod is no container there).
func isPodMove(ctx context.Context, from podman.Source, to podman.Target, name string) (bool, error) {
	ps, ok := from.(podman.PodSource)
	if !ok {
		return false, nil
	}
	pod, err := IsPod(ctx, ps, name)
	if err != nil || !pod {
		return false, err
	}
	if _, ok := to.(podman.PodTarget); !ok {
		return false, fmt.Errorf("%q is a pod, and the target cannot make pods", name)
	}
	return true, nil
}

// movePod moves a pod as push POD and pull of its index do, through the
// --via registry or, without one, a staging layout on this machine; if
// the pod cannot be made on the target, every member is restored on the
// source from its kept checkpoint.
func (m *moving) movePod(ctx context.Context, from podman.PodSource, to podman.PodTarget) error {
	dest, cleanup, err := m.indexDest("pod")
	if err != nil {
		return err
	}
	defer cleanup()
	return runOp(ctx, "move pod", []phase{
		{"push", func(ctx context.Context) error {
			po := m.push
			po.Dest = dest
			res, err := PushPod(ctx, from, po)
			if err != nil {
				return fault.OnSide(fault.Source, fmt.Errorf("pushing: %w", err))
			}
			m.r.PodPushed = res
			if m.o.Via != "" {
				m.r.Ref, m.r.Digest = res.Reference, res.Digest
			}
			return nil
		}},
		{"pull", func(ctx context.Context) error {
			res, err := m.pullIndex(ctx, to, dest, "pod")
			if err != nil {
				return err
			}
			m.r.ID = res.ID
			return nil
		}},
	}, func(err error) error { return m.resumePod(ctx, from, err) })
}

// indexDest is where a move pushes a pod's or a group's index: the --via
// registry, or a staging layout on this machine, removed by cleanup
// (members are not streamed host to host yet).
func (m *moving) indexDest(kind string) (dest string, cleanup func(), err error) {
	if m.o.Via != "" {
		return m.o.Via + ":" + m.push.Container, func() {}, nil
	}
	tmp, err := os.MkdirTemp(transfer.StagingDir(m.push.TmpDir), "podman-migrate-move-")
	if err != nil {
		return "", nil, fmt.Errorf("creating a staging directory: %w", err)
	}
	return "oci:" + filepath.Join(tmp, kind) + ":" + m.push.Container, func() { os.RemoveAll(tmp) }, nil
}

// pullIndex pulls the pod's or group's index the move pushed to dest onto
// the target, and records what it made.
func (m *moving) pullIndex(ctx context.Context, to podman.PodTarget, dest, kind string) (*PodPullResult, error) {
	pull := m.o.Pull
	pull.Source, pull.Log = m.r.PodPushed.Reference+"@"+m.r.PodPushed.Digest, m.log
	if m.o.Via == "" {
		pull.Source = dest // a layout of our own, read as written
	}
	pull.Transfer.Report = nil
	_, err := Pull(ctx, to, pull)
	var ix *ckpt.IndexError
	if !errors.As(err, &ix) {
		if err == nil {
			err = fmt.Errorf("the %s's index holds one container's checkpoint", kind)
		}
		return nil, fault.OnSide(fault.Target, fmt.Errorf("restoring on %s: %w", to.Address(), err))
	}
	res, err := PullPod(ctx, to, pull, ix)
	if err != nil {
		return nil, fault.OnSide(fault.Target, fmt.Errorf("restoring on %s: %w", to.Address(), err))
	}
	m.r.PodPulled, m.r.Name = res, res.Pod
	m.r.Downtime = since(m.r.PodPushed.FrozeAt)
	return res, nil
}

// resumePod restores every member of the pushed pod on the source.
func (m *moving) resumePod(ctx context.Context, from podman.PodSource, cause error) error {
	pushed := m.r.PodPushed
	if pushed == nil {
		return cause // the pod's push restored it itself, or never froze it
	}
	me := &MoveError{Container: pushed.Pod, Err: cause, Pod: true}
	fmt.Fprintf(m.log, "Restore on the target failed; restoring pod %s's members on the source host\n", pushed.Pod)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackBound)
	defer cancel()
	var errs []error
	for _, mem := range pushed.Members {
		if err := Resume(rctx, from, mem.ID, m.push); err != nil {
			errs = append(errs, fmt.Errorf("member %q: %w", mem.Container, err))
		}
	}
	me.ResumeErr = errors.Join(errs...)
	me.Resumed = me.ResumeErr == nil
	return me
}
