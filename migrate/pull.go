package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/containers/image/v5/oci/layout"
	"github.com/containers/image/v5/types"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	restore "github.com/podman-migrate/podman-migrate/import"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// pulling is one pull: what each phase learned, for the next.
type pulling struct {
	c   podman.Target
	o   restore.PullOptions
	log io.Writer
	res *restore.PullResult

	began   time.Time
	src     types.ImageReference
	meta    *ckpt.Metadata
	staged  *restore.Staged // an encrypted image, decrypted while planning
	plan    *restore.Plan
	tmp     string
	local   types.ImageReference
	img     ckpt.Archive // the verified image, or a move's live archive
	imgSrc  types.ImageSource
	base    string // the base image this pull fetched, if any
	tried   bool   // a restore was attempted: what it made must go on failure
	lastErr error
}

func newPulling(c podman.Target, o restore.PullOptions, log io.Writer) *pulling {
	return &pulling{c: c, o: o, log: log, began: time.Now(),
		res: &restore.PullResult{Seconds: map[string]float64{}, Bytes: map[string]int64{}}}
}

// PlanPull reads only the manifest, config and metadata layer of the
// checkpoint and works out what a pull would do on the host c serves,
// creating nothing. Plan.Err says whether the restore can proceed.
func PlanPull(ctx context.Context, c podman.Target, o restore.PullOptions) (*restore.Plan, error) {
	p := newPulling(c, o, io.Discard)
	defer p.close()
	if err := runPhases(ctx, "plan", p.planPhases()); err != nil {
		return nil, err
	}
	if err := p.plan.Settle(ctx, nil); err != nil {
		return nil, err
	}
	return p.plan, nil
}

// Pull fetches a checkpoint image, verifies it, and restores it as a new
// container. It plans first (as PlanPull) and stops before fetching the
// CRIU images if the plan has blockers. If the restore fails, whatever it
// created is removed again, in one place.
func Pull(ctx context.Context, c podman.Target, o restore.PullOptions) (*restore.PullResult, error) {
	p := newPulling(c, o, logOrDiscard(o.Log))
	defer p.close()
	// The plan needs podman's info, which podman gathers afresh (0.5 s on
	// Debian's 4.3.1): ask while the metadata is fetched. The client keeps
	// the answer; a failure here is asked again by the plan, which waits
	// for it only to place named volumes, and compares the hosts while the
	// image streams (Plan.Settle).
	warm, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _, _ = c.Info(warm) }()
	phases := append(p.planPhases(), phase{"check", p.checkPlan})
	err := runOp(ctx, "pull", append(phases, p.restorePhases()...), func(err error) error { return p.undo(ctx, err) })
	if err != nil {
		return nil, err
	}
	p.res.Seconds["total"] = since(p.began)
	return p.res, nil
}

// planPhases read the metadata and plan the restore, creating nothing.
func (p *pulling) planPhases() []phase {
	return []phase{{"metadata", p.metadata}, {"plan", p.makePlan}}
}

// restorePhases fetch, verify and restore a planned and checked image.
func (p *pulling) restorePhases() []phase {
	return []phase{
		{"stage", p.stage},
		{"fetch", p.fetch},
		{"verify", p.verifyImage},
		{"base", p.ensureBase},
		{"restore", p.restore},
	}
}

// metadata reads what planning needs, in place (an encrypted image is
// fetched whole and decrypted first).
func (p *pulling) metadata(ctx context.Context) error {
	var err error
	if p.src == nil { // a pod's member comes as its instance of the index
		if p.src, err = transfer.ParseReference(p.o.Source); err != nil {
			return err
		}
	}
	fmt.Fprintf(p.log, "Reading the checkpoint's metadata from %s\n", transfer.Display(p.src))
	p.meta, p.staged, err = restore.ReadMetadata(ctx, p.src, p.o.Transfer, p.o.Limits, p.o.TmpDir)
	return err
}

func (p *pulling) makePlan(ctx context.Context) error {
	var err error
	p.plan, err = restore.NewPlan(ctx, p.c, transfer.Display(p.src), p.meta, p.o)
	p.res.Seconds["plan"] = since(p.began)
	return err
}

// checkPlan prints the plan's warnings and problems and stops at the
// first blocker, before anything is fetched. With a blocker already, it
// waits for the comparison of the hosts too, to name every problem.
func (p *pulling) checkPlan(ctx context.Context) error {
	if len(p.plan.Blockers) > 0 {
		if err := p.plan.Settle(ctx, nil); err != nil {
			return err
		}
	}
	p.plan.LogFindings(p.log)
	return p.plan.Err()
}

// stage makes a staging directory for an encrypted image; any other is
// fetched into podman's restore (fetch).
func (p *pulling) stage(context.Context) error {
	if p.streams() {
		return nil
	}
	tmp, err := os.MkdirTemp(transfer.StagingDir(p.o.TmpDir), "podman-migrate-pull-")
	if err != nil {
		return fmt.Errorf("creating a staging directory: %w", err)
	}
	p.tmp = tmp
	p.local, err = layout.NewReference(tmp, "checkpoint")
	return err
}

// streams says whether the image goes from its source into podman's
// restore in one pass, verified on the way (all but encrypted images,
// which were fetched whole to be decrypted).
func (p *pulling) streams() bool { return p.staged == nil }

// fetch copies the very image that was planned. Streamed, that copy runs
// during the restore, once per attempt; otherwise it goes to the staging
// directory, verified layer by layer while it is fetched.
func (p *pulling) fetch(ctx context.Context) error {
	from, err := transfer.Pinned(p.src, p.meta.ManifestDigest)
	if err != nil {
		return err
	}
	p.res.Source, p.res.Digest = transfer.Display(p.src), p.meta.ManifestDigest.String()
	p.res.Bytes["image"] = p.meta.Manifest.Config.Size
	for _, l := range p.meta.Manifest.Layers {
		p.res.Bytes["image"] += l.Size
	}
	if p.streams() {
		p.img, err = ckpt.NewFetching(p.meta, p.o.Limits, func(ctx context.Context, dest types.ImageReference, again func() bool) error {
			fmt.Fprintf(p.log, "Fetching %s into the restore\n", transfer.Display(from))
			o := p.o.Transfer
			o.Again = again
			d, err := transfer.Copy(ctx, "pulling", dest, from, o)
			if err == nil && d != p.meta.ManifestDigest {
				err = fmt.Errorf("%w: %s changed while it was read (manifest %s, then %s); pull again", tarsafe.ErrUnsafe, transfer.Display(p.src), p.meta.ManifestDigest, d)
			}
			return err
		})
		return err
	}
	// An encrypted image, decrypted into staging while planning.
	fmt.Fprintf(p.log, "Fetching %s\n", transfer.Display(from))
	start := time.Now()
	if err := p.staged.Fetch(ctx, p.tmp, p.local, p.o.Transfer); err != nil {
		return err
	}
	fmt.Fprintf(p.log, "Fetched in %s; verifying\n", time.Since(start).Round(time.Millisecond))
	p.res.Seconds["fetch"] = since(start)
	return nil
}

// verifyImage finishes the verification: every entry of every layer.
func (p *pulling) verifyImage(ctx context.Context) error {
	if p.streams() {
		p.plan.LogRelocation(p.log)
		return nil // during the restore
	}
	var err error
	if p.imgSrc, err = p.local.NewImageSource(ctx, nil); err != nil {
		return err
	}
	start := time.Now()
	p.img, err = ckpt.Open(ctx, p.imgSrc, p.o.Limits)
	if err != nil {
		return fmt.Errorf("checking %s: %w", transfer.Display(p.src), err)
	}
	fmt.Fprintf(p.log, "Verified in %s\n", time.Since(start).Round(time.Millisecond))
	p.res.Seconds["verify"] = since(start)
	p.plan.LogRelocation(p.log)
	return nil
}

func (p *pulling) ensureBase(ctx context.Context) error {
	start := time.Now()
	var err error
	p.base, err = restore.EnsureBase(ctx, p.c, p.plan, p.o, p.log)
	if p.base != "" {
		p.res.Seconds["base"] = since(start)
	}
	return err
}

// restore restores the image, trying again after podman's network set-up
// raced; what a failed attempt made is removed before the next.
func (p *pulling) restore(ctx context.Context) error {
	name := p.plan.Name
	fmt.Fprintf(p.log, "Restoring container %s\n", name)
	start := time.Now()
	p.tried = true
	try := func() (string, error) {
		id, err := p.plan.Restore(ctx, p.c, p.img, p.o, p.log)
		p.lastErr = err
		return id, err
	}
	if _, streamed := p.img.(*ckpt.Fetching); streamed {
		try = p.refetching(ctx, try)
	}
	var id string
	var err error
	if _, once := p.img.(*ckpt.Live); once {
		id, err = try() // a live archive cannot be sent again; undo cleans up
	} else {
		id, err = restore.RetryRestore(ctx, try, func(last bool) error {
			if last || errors.Is(p.lastErr, restore.ErrLeftOnHost) {
				return nil // undo removes what the last attempt left
			}
			return restore.Cleanup(ctx, p.c, name, p.plan.CreatedVolumes(), "", p.log)
		}, p.log, restore.NetworkPause)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(p.log, "Restored in %s\n", time.Since(start).Round(time.Millisecond))
	p.res.Seconds["restore"] = since(start)
	p.res.ID, p.res.Name = id, name
	p.res.Bytes["sent"], p.res.Compress = p.plan.Sent, p.plan.Compressed
	return nil
}

// refetching makes a streamed restore whole again after a transient
// failure of its fetch, as transfer.Copy does a copy: the copy cannot
// start over by itself once part of the image went to podman, but podman
// acts on nothing before the stream ends, so the restore can.
func (p *pulling) refetching(ctx context.Context, try func() (string, error)) func() (string, error) {
	return func() (id string, err error) {
		again := false
		err = transfer.RetryIf(ctx, p.o.Transfer, func(err error) bool {
			var source *ckpt.SourceError
			return errors.As(err, &source) && transfer.Transient(source.Err)
		}, func() error {
			if again {
				if err := restore.Cleanup(ctx, p.c, p.plan.Name, p.plan.CreatedVolumes(), "", p.log); err != nil {
					return err
				}
			}
			again = true
			id, err = try()
			return err
		})
		return id, err
	}
}

// undo is pull's one way back: it removes what the restore created and
// the base image the pull fetched, and says so when that fails too.
func (p *pulling) undo(ctx context.Context, cause error) error {
	if errors.Is(cause, restore.ErrLeftOnHost) {
		return cause // its error says how to remove it there
	}
	if !p.tried {
		return cause
	}
	if err := restore.Cleanup(ctx, p.c, p.plan.Name, p.plan.CreatedVolumes(), p.base, p.log); err != nil {
		return fmt.Errorf("%w; removing what the failed restore left also failed: %w", cause, err)
	}
	return cause
}

func (p *pulling) close() {
	if p.imgSrc != nil {
		p.imgSrc.Close()
	}
	if p.tmp != "" {
		os.RemoveAll(p.tmp)
	}
	p.staged.Remove()
}
