package migrate

import (
	"context"
	"fmt"
	"time"

	units "github.com/docker/go-units"

	"github.com/podman-migrate/podman-migrate/export"
	restore "github.com/podman-migrate/podman-migrate/import"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/fault"
	"github.com/podman-migrate/podman-migrate/internal/progress"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// direct is a move with no registry: the source's export stream goes
// straight into the target's restore, in one pass. Nothing is staged on
// disk and no image is made; the entries are checked, and config.dump
// and spec.dump relocated, on the way.
type direct struct {
	m    *moving
	push *pushing
	pull *pulling
	read *progress.Reader // the export stream, counted
	live *ckpt.Live
	// described brings what the source's host records, learnt during
	// the checkpoint.
	described chan describedSource
}

func (m *moving) direct(ctx context.Context) error {
	d := &direct{m: m,
		push: &pushing{c: m.from, o: m.push, log: m.log, began: time.Now(),
			res: &export.PushResult{Seconds: map[string]float64{}, Bytes: map[string]int64{}}},
	}
	pull := m.o.Pull
	pull.Log = m.log
	pull.Transfer.Report = nil
	d.pull = newPulling(m.to, pull, m.log)
	defer d.close()
	return runOp(ctx, "move", []phase{
		{"inspect", d.inspect},
		{"checkpoint", d.checkpoint},
		{"head", d.head},
		{"plan", d.target(d.plan)},
		{"base", d.target(d.pull.ensureBase)},
		{"restore", d.target(d.restore)},
	}, func(err error) error { return d.undo(ctx, err) })
}

// target marks a phase's failures as the target's.
func (d *direct) target(run func(context.Context) error) func(context.Context) error {
	return func(ctx context.Context) error {
		if err := run(ctx); err != nil {
			return fault.OnSide(fault.Target, fmt.Errorf("restoring on %s: %w", d.m.to.Address(), err))
		}
		return nil
	}
}

// inspect finds the running container, and checks what the target can
// tell before any downtime: the name is free there. What the source's
// host records (podman's info, slow) is learnt while the checkpoint is
// taken.
func (d *direct) inspect(ctx context.Context) error {
	ctr, err := export.InspectRunning(ctx, d.push.c, d.push.o.Container)
	if err != nil {
		return fault.OnSide(fault.Source, err)
	}
	d.push.src = &export.Source{Container: ctr}
	d.push.res.Container, d.push.res.ID = ctr.Name, ctr.ID
	if _, err := restore.ChooseWire(d.pull.o.Compress, d.m.to.Address()); err != nil {
		return err
	}
	name := d.pull.o.Name
	if name == "" {
		name = ctr.Name
	}
	exists, err := d.m.to.ContainerExists(ctx, name)
	if err == nil && exists {
		err = fmt.Errorf("container %q %w: choose another name with --name; container %q was not touched", name, restore.ErrConflict, ctr.Name)
	}
	if err != nil {
		return fault.OnSide(fault.Target, err)
	}
	d.described = make(chan describedSource, 1)
	go func() {
		s, err := export.Describe(ctx, d.push.c, ctr)
		d.described <- describedSource{s, err}
	}()
	return nil
}

type describedSource struct {
	s   *export.Source
	err error
}

func (d *direct) checkpoint(ctx context.Context) error {
	if err := d.push.checkpoint(ctx); err != nil {
		return fault.OnSide(fault.Source, err)
	}
	d.m.r.Pushed = d.push.res // the checkpoint is kept: the way back is open
	return nil
}

// head reads the archive up to what planning needs.
func (d *direct) head(ctx context.Context) error {
	start := time.Now()
	ds := <-d.described
	d.described = nil
	if ds.err != nil {
		return fault.OnSide(fault.Source, ds.err)
	}
	s := ds.s
	d.push.src = s
	d.read = progress.NewReader(d.push.archive, d.m.log, "Reading the checkpoint from podman")
	var err error
	d.live, err = ckpt.ReadLive(ctx, d.read, d.pull.o.Limits, ckpt.LiveOptions{
		Annotate: export.Annotator(s, d.push.o, time.Now().UTC()),
		Arch:     s.Info.Host.Arch,
		SpillDir: transfer.StagingDir(d.push.o.TmpDir),
	})
	if err != nil {
		return fault.OnSide(fault.Source, fmt.Errorf("reading the checkpoint from podman: %w", err))
	}
	if len(d.live.Cleared) > 0 {
		fmt.Fprintf(d.m.log, "Removed source-host paths from config.dump: %v\n", d.live.Cleared)
	}
	d.push.res.Seconds["head"] = since(start)
	return nil
}

// plan works out the restore on the target from the archive's head.
func (d *direct) plan(ctx context.Context) error {
	p := d.pull
	src := fmt.Sprintf("container %s on %s", d.push.src.Container.Name, d.m.from.Address())
	p.began = time.Now()
	var err error
	if p.plan, err = restore.NewPlan(ctx, p.c, src, d.live.Meta(), p.o); err != nil {
		return err
	}
	p.res.Seconds["plan"] = since(p.began)
	if err := p.checkPlan(ctx); err != nil {
		return err
	}
	p.plan.LogRelocation(p.log)
	p.img = d.live
	return nil
}

// restore streams the rest of the export into the target's restore.
func (d *direct) restore(ctx context.Context) error {
	if err := d.pull.restore(ctx); err != nil {
		return err
	}
	d.push.res.Bytes["archive"] = d.read.N()
	fmt.Fprintf(d.m.log, "Moved %s of checkpoint from podman to podman in one pass\n", units.BytesSize(float64(d.read.N())))
	d.m.r.ID, d.m.r.Name, d.m.r.Pulled = d.pull.res.ID, d.pull.res.Name, d.pull.res
	d.m.r.Downtime = since(d.push.res.FrozeAt)
	d.pull.res.Seconds["total"] = since(d.pull.began)
	d.push.res.Seconds["total"] = since(d.push.began)
	return nil
}

// undo removes what the target's restore made, then restores the source
// from its kept checkpoint: the source's own failures go through push's
// rollback, the target's through move's resume.
func (d *direct) undo(ctx context.Context, err error) error {
	if fault.SideOf(err) != fault.Target {
		return d.push.rollback(ctx, err)
	}
	return d.m.resume(ctx, d.pull.undo(ctx, err))
}

func (d *direct) close() {
	if d.described != nil {
		<-d.described // Describe ends within ctx's bounds; nothing outlives the move
	}
	if d.read != nil {
		d.read.Close()
	}
	if d.live != nil {
		d.live.Close()
	}
	if d.push.archive != nil {
		d.push.archive.Close()
	}
	d.pull.close()
}
