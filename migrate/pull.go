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
	verify  *ckpt.StreamVerifier // nil: verified after the fetch
	img     ckpt.Archive         // the verified image, or a move's live archive
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
	if err := runPhases(ctx, "plan", []phase{{"metadata", p.metadata}, {"plan", p.makePlan}}); err != nil {
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
	err := runOp(ctx, "pull", []phase{
		{"metadata", p.metadata},
		{"plan", p.makePlan},
		{"check", p.checkPlan},
		{"stage", p.stage},
		{"fetch", p.fetch},
		{"verify", p.verifyImage},
		{"base", p.ensureBase},
		{"restore", p.restore},
	}, func(err error) error { return p.undo(ctx, err) })
	if err != nil {
		return nil, err
	}
	p.res.Seconds["total"] = since(p.began)
	return p.res, nil
}

// metadata reads what planning needs, in place (an encrypted image is
// fetched whole and decrypted first).
func (p *pulling) metadata(ctx context.Context) error {
	var err error
	if p.src, err = transfer.ParseReference(p.o.Source); err != nil {
		return err
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
// first blocker, before anything is fetched.
func (p *pulling) checkPlan(context.Context) error {
	for _, w := range p.plan.Warnings {
		fmt.Fprintf(p.log, "Warning: %s\n", w)
	}
	for _, b := range p.plan.Blockers {
		fmt.Fprintf(p.log, "Problem: %s\n", b)
	}
	return p.plan.Err()
}

func (p *pulling) stage(context.Context) error {
	tmp, err := os.MkdirTemp(transfer.StagingDir(p.o.TmpDir), "podman-migrate-pull-")
	if err != nil {
		return fmt.Errorf("creating a staging directory: %w", err)
	}
	p.tmp = tmp
	p.local, err = layout.NewReference(tmp, "checkpoint")
	return err
}

// fetch copies the very image that was planned; one read in place is
// verified layer by layer while it is fetched.
func (p *pulling) fetch(ctx context.Context) error {
	from, err := transfer.Pinned(p.src, p.meta.ManifestDigest)
	if err != nil {
		return err
	}
	if p.staged == nil {
		if p.verify, err = ckpt.NewStreamVerifier(p.meta, p.o.Limits); err != nil {
			return err
		}
	}
	fmt.Fprintf(p.log, "Fetching %s\n", transfer.Display(from))
	start := time.Now()
	d, err := p.staged.Fetch(ctx, p.tmp, p.local, from, p.verify, p.o.Transfer)
	if err != nil {
		if p.verify != nil && p.verify.Err() != nil {
			// The image is bad, not the transfer.
			return fmt.Errorf("checking %s: %w", transfer.Display(p.src), p.verify.Err())
		}
		return err
	}
	if d != p.meta.ManifestDigest {
		return fmt.Errorf("%w: %s changed while it was read (manifest %s, then %s); pull again", tarsafe.ErrUnsafe, transfer.Display(p.src), p.meta.ManifestDigest, d)
	}
	if p.verify != nil {
		fmt.Fprintf(p.log, "Fetched and verified the layers in %s\n", time.Since(start).Round(time.Millisecond))
	} else {
		fmt.Fprintf(p.log, "Fetched in %s; verifying\n", time.Since(start).Round(time.Millisecond))
	}
	p.res.Seconds["fetch"] = since(start)
	p.res.Source, p.res.Digest = transfer.Display(p.src), d.String()
	p.res.Bytes["image"] = p.meta.Manifest.Config.Size
	for _, l := range p.meta.Manifest.Layers {
		p.res.Bytes["image"] += l.Size
	}
	return nil
}

// verifyImage finishes the verification: every entry of every layer.
func (p *pulling) verifyImage(ctx context.Context) error {
	var err error
	if p.imgSrc, err = p.local.NewImageSource(ctx, nil); err != nil {
		return err
	}
	start := time.Now()
	if p.verify != nil {
		p.img, err = p.verify.Image(ctx, p.imgSrc)
	} else {
		p.img, err = ckpt.Open(ctx, p.imgSrc, p.o.Limits)
	}
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
