package migrate

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/containers/image/v5/oci/layout"
	"github.com/containers/image/v5/types"
	units "github.com/docker/go-units"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/export"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/progress"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// rollbackBound bounds the restore of the source after a failure, which
// runs even when the operation was interrupted.
const rollbackBound = 5 * time.Minute

// pushing is one push: what each phase learned, for the next.
type pushing struct {
	c   podman.Source
	o   export.PushOptions
	log io.Writer
	res *export.PushResult

	began    time.Time
	dest     types.ImageReference
	src      *export.Source
	tmp      string
	archive  io.ReadCloser
	answered bool // podman answered the checkpoint: a failure now needs the rollback
	staged   types.ImageReference
	streamer *transfer.Streamer // nil: nothing streamed
	built    *ckpt.Built
	// tag names the image in the staging layout; shared says the layout
	// is a pod's, which removes it.
	tag    string
	shared bool
	// described brings what the image records of the source's host,
	// learnt while the checkpoint is taken: podman's info alone takes
	// 0.6 s on Debian's 4.3.1, which asks dpkg about its helpers.
	described chan describedSource
}

// Push checkpoints a running container, converts the checkpoint into an
// OCI image and copies it to o.Dest. Any failure after the checkpoint
// restores the container on this host from the kept checkpoint: the
// error is then an *export.PushError saying what became of it.
func Push(ctx context.Context, c podman.Source, o export.PushOptions) (*export.PushResult, error) {
	p := &pushing{c: c, o: o, log: logOrDiscard(o.Log), began: time.Now(),
		res: &export.PushResult{Seconds: map[string]float64{}, Bytes: map[string]int64{}}}
	defer p.removeStaging()
	err := runOp(ctx, "push", []phase{
		{"inspect", p.inspect},
		{"preflight", p.preflight},
		{"stage", p.stage},
		{"base", p.includeBase},
		{"checkpoint", p.checkpoint},
		{"build", p.build},
		{"upload", p.upload},
	}, func(err error) error { return p.rollback(ctx, err) })
	if err != nil {
		return nil, err
	}
	p.res.Seconds["total"] = since(p.began)
	return p.res, nil
}

// inspect finds the running container and what the image records of it.
func (p *pushing) inspect(ctx context.Context) error {
	var err error
	if p.dest, err = transfer.ParseReference(p.o.Dest); err != nil {
		return err
	}
	if _, _, err := ckpt.MediaType(p.o.Compression); err != nil {
		return err
	}
	ctr, err := export.InspectRunning(ctx, p.c, p.o.Container, p.o.Group...)
	if err != nil {
		return err
	}
	p.src = &export.Source{Container: ctr, Known: map[string]string{}}
	p.res.Container, p.res.ID = ctr.Name, ctr.ID
	p.described = make(chan describedSource, 1)
	go func() {
		s, err := export.Describe(ctx, p.c, ctr)
		p.described <- describedSource{s, err}
	}()
	return nil
}

// describe waits for what Describe learnt, keeping what push settled
// meanwhile (the --include-base copy).
func (p *pushing) describe() error {
	ds := <-p.described
	p.described = nil
	if ds.err != nil {
		return ds.err
	}
	for k, v := range p.src.Known {
		ds.s.Known[k] = v
	}
	p.src = ds.s
	return nil
}

// preflight checks, before any downtime, that DEST takes the image and
// that the staging directory has room for it.
func (p *pushing) preflight(ctx context.Context) error {
	if err := transfer.Preflight(ctx, p.dest, p.o.Transfer); err != nil {
		return fmt.Errorf("%w; container %q was not touched", err, p.src.Container.Name)
	}
	return export.CheckStagingRoom(ctx, p.c, transfer.StagingDir(p.o.TmpDir), p.src.Container)
}

func (p *pushing) stage(context.Context) error {
	tmp, err := os.MkdirTemp(transfer.StagingDir(p.o.TmpDir), "podman-migrate-push-")
	if err != nil {
		return fmt.Errorf("creating a staging directory: %w", err)
	}
	p.tmp = tmp
	return nil
}

func (p *pushing) removeStaging() {
	p.release()
	if p.tmp != "" && !p.shared {
		os.RemoveAll(p.tmp)
	}
}

// release waits for Describe and closes podman's archive.
func (p *pushing) release() {
	if p.described != nil {
		<-p.described // Describe ends within ctx's bounds; nothing outlives the push
	}
	if p.archive != nil {
		p.archive.Close()
		p.archive = nil
	}
}

// includeBase copies the base image first: it costs no downtime before the
// checkpoint.
func (p *pushing) includeBase(ctx context.Context) error {
	if !p.o.IncludeBase {
		return nil
	}
	start := time.Now()
	ref, err := export.IncludeBase(ctx, p.c, p.src.Container, p.dest, p.tmp, p.o, p.log)
	if err != nil {
		return fmt.Errorf("including the base image: %w; container %q was not touched", err, p.src.Container.Name)
	}
	p.src.Known[ckpt.AnnBaseIncluded] = ref
	p.res.BaseImage = ref
	p.res.Seconds["base"] = since(start)
	return nil
}

// freezeCopy freezes a container pushed with --leave-running, when the
// podman service is on this machine, until podman answered: the frozen
// container stays frozen through its dump (CRIU gives the freezer back the
// state it found), so the root-filesystem diff podman exports after the
// dump, before it answers, is the dumped one. Running on, a process that
// renames a file it has open (write to a temporary file, then rename) would
// leave the dump naming a file the diff no longer has. It returns the
// thaw; a container it cannot freeze is pushed as before.
func (p *pushing) freezeCopy(ctx context.Context) (thaw func()) {
	none := func() {}
	ps, ok := p.c.(podman.PodSource)
	if !p.o.LeaveRunning || p.shared || !ok || p.src.Container.State.CgroupPath == "" {
		return none
	}
	if _, err := ps.ServicePID(); err != nil {
		return none
	}
	ctr := p.src.Container
	if err := ps.FreezeContainer(ctx, ctr, true); err != nil {
		fmt.Fprintf(p.log, "Not freezing %s for a consistent copy: %v\n", ctr.Name, err)
		return none
	}
	return func() {
		tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackBound)
		defer cancel()
		if err := ps.FreezeContainer(tctx, ctr, false); err != nil {
			fmt.Fprintf(p.log, "Warning: thawing %s after its checkpoint failed: %v; thaw it with `podman unpause` or through its cgroup\n", ctr.Name, err)
		}
	}
}

// checkpoint takes the checkpoint. Once podman answered, a failure is
// rolled back; while it did not, the rollback would wait on the container
// podman still holds, so the error stands alone.
func (p *pushing) checkpoint(ctx context.Context) error {
	start := time.Now()
	p.res.FrozeAt = start
	thaw := p.freezeCopy(ctx)
	archive, answered, err := export.AwaitCheckpoint(ctx, p.c, p.src.Container, export.CheckpointOptions(p.o), p.o, p.log)
	thaw()
	p.answered, p.archive = answered, archive
	if err == nil && ctx.Err() != nil {
		err = fmt.Errorf("checkpointing container %q: %w", p.src.Container.Name, ctx.Err())
	}
	if err != nil {
		return err
	}
	next := "building the image"
	if p.o.Dest == "" {
		next = "streaming it to the target" // a move without a registry
	}
	fmt.Fprintf(p.log, "Checkpoint taken in %s; %s\n", time.Since(start).Round(time.Millisecond), next)
	p.res.Seconds["checkpoint"] = since(start)
	return nil
}

// build converts the archive into the image, in the staging layout; the
// CRIU layer goes on to a registry DEST while it is built.
func (p *pushing) build(ctx context.Context) error {
	start := time.Now()
	if err := p.describe(); err != nil {
		return err
	}
	counted := progress.NewReader(p.archive, p.log, "Reading the checkpoint from podman")
	created := time.Now().UTC()
	var err error
	if p.staged, err = layout.NewReference(p.tmp, cmp.Or(p.tag, "checkpoint")); err != nil {
		return err
	}
	dest, err := p.staged.NewImageDestination(ctx, nil)
	if err != nil {
		return err
	}
	if !p.o.NoStream && transfer.IsRegistry(p.dest) && p.o.Transfer.Encrypt == nil {
		// Encrypted layers differ from the plain ones built here.
		if p.streamer, err = transfer.NewStreamer(ctx, dest, p.tmp, p.dest, p.o.Transfer, export.Streamed, p.log); err != nil {
			dest.Close()
			return err
		}
		dest = p.streamer
	}
	built, err := export.Convert(ctx, counted, dest, p.src, p.o, created)
	cerr := p.archive.Close()
	p.archive = nil
	if err == nil && cerr != nil {
		err = fmt.Errorf("reading the checkpoint from podman: %w", cerr)
	}
	if err != nil {
		return fmt.Errorf("converting the checkpoint: %w", err)
	}
	if len(built.Cleared) > 0 {
		fmt.Fprintf(p.log, "Removed source-host paths from config.dump: %v\n", built.Cleared)
	}
	counted.Close()
	p.built = built
	p.res.Seconds["build"] = since(start)
	p.res.Bytes["archive"] = counted.N()
	p.res.Bytes["image"] = built.Manifest.Config.Size
	for _, l := range built.Layers {
		p.res.Bytes["image"] += l.Desc.Size
	}
	fmt.Fprintf(p.log, "Built %d layers (%s) from %s of checkpoint in %s\n", len(built.Layers), units.BytesSize(float64(p.res.Bytes["image"])), units.BytesSize(float64(counted.N())), time.Since(start).Round(time.Millisecond))
	return nil
}

// upload copies the staged image to DEST; blobs DEST has, or that were
// streamed, are not sent again.
func (p *pushing) upload(ctx context.Context) error {
	start := time.Now()
	fmt.Fprintf(p.log, "Copying the image to %s\n", transfer.Display(p.dest))
	topts := p.o.Transfer
	topts.Sent = &transfer.Blobs{}
	d, err := transfer.Copy(ctx, "pushing", p.dest, p.staged, topts)
	if err != nil {
		return err
	}
	p.res.Seconds["upload"] = since(start)
	p.reportLayers(topts.Sent)
	p.res.Reference, p.res.Digest = transfer.Display(p.dest), d.String()
	return nil
}

// reportLayers lists the image's layers, and which of them were sent.
func (p *pushing) reportLayers(sent *transfer.Blobs) {
	p.res.Bytes["sent"] = 0
	for _, l := range p.built.Layers {
		pl := export.PushedLayer{Role: string(l.Role), Volume: l.Volume, Digest: l.Desc.Digest.String(), Size: l.Desc.Size}
		pl.Sent = p.streamer.Uploaded(l.Desc.Digest) || sent.Has(l.Desc.Digest)
		if pl.Sent {
			p.res.Bytes["sent"] += l.Desc.Size
		}
		p.res.Layers = append(p.res.Layers, pl)
	}
}

// rollback is push's one way back: after a failure past the checkpoint,
// the container is restored from the checkpoint podman kept, even if ctx
// was cancelled (an interrupted push).
func (p *pushing) rollback(ctx context.Context, cause error) error {
	if !p.answered {
		return cause // the container was not touched, or podman still holds it
	}
	ctr := p.src.Container
	perr := &export.PushError{Container: ctr.Name, Err: cause, LeftRunning: p.o.LeaveRunning}
	if p.o.LeaveRunning {
		return perr
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackBound)
	defer cancel()
	now, err := p.c.InspectContainer(rctx, ctr.ID)
	if err == nil && now.State.Running {
		// The checkpoint itself failed and CRIU left the process running.
		perr.NotStopped = true
		return perr
	}
	fmt.Fprintf(p.log, "Push failed; restoring container %s on this host\n", ctr.Name)
	if err == nil {
		err = p.c.RestoreKept(rctx, ctr.ID, export.CheckpointOptions(p.o))
	}
	if err != nil {
		perr.RollbackErr = err
		return perr
	}
	perr.RolledBack = true
	return perr
}

// Resume restores a pushed container on its host from the checkpoint push
// kept: the way back when the restore elsewhere failed.
func Resume(ctx context.Context, c podman.Checkpointer, container string, o export.PushOptions) error {
	copts := export.CheckpointOptions(o)
	copts.LeaveRunning = false
	return c.RestoreKept(ctx, container, copts)
}

func logOrDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
