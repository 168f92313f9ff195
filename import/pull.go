package restore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/containers/image/v5/docker/reference"
	ociarchive "github.com/containers/image/v5/oci/archive"
	"github.com/containers/image/v5/types"
	"github.com/opencontainers/go-digest"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/fault"
	"github.com/podman-migrate/podman-migrate/internal/progress"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// ErrConflict is wrapped when the target host already has a container or
// volume the restore would create.
var ErrConflict = fault.New(fault.Input, "already exists on the target host")

// errRestoreDone closes the archive pipe once podman has answered.
var errRestoreDone = errors.New("restore request finished")

// ErrBaseImage is wrapped when the target host has the checkpoint's base
// image name, but as a different image: CRIU's view of the file system
// would not match it.
var ErrBaseImage = fault.New(fault.Input, "base image differs on the target host")

// PullOptions are the settings of one pull.
type PullOptions struct {
	Source          string
	Name            string // new container name; "" keeps the checkpointed name
	IgnoreStaticIP  bool
	IgnoreStaticMAC bool
	Publish         []string
	Pod             string
	// MountMap, VolumeMap and NetworkMap relocate what the target host
	// has elsewhere or under another name: "SRC=DST", "OLD=NEW".
	MountMap   []string
	VolumeMap  []string
	NetworkMap []string
	Transfer   transfer.Options
	// Limits bound what each layer may expand to (zero: ckpt.DefaultLimits).
	Limits ckpt.Limits
	// AllowPrivileged lets a checkpoint that asks for more than an ordinary
	// container (privileged mode, host namespaces, devices, capabilities,
	// runtime annotations) be restored.
	AllowPrivileged bool
	TmpDir          string // "" means $TMPDIR or /var/tmp
	Log             io.Writer
	// RestoreTimeout bounds podman's restore (0: no bound). Then CRIU is
	// ended if the service is on this machine, the half-made container
	// removed, and the error wraps podman.ErrCRIUStuck.
	RestoreTimeout time.Duration
	// Compress is how the archive travels to podman: auto (zstd to a
	// tcp:// or ssh:// service, none to a unix socket), none, zstd,
	// zstd:LEVEL.
	Compress string
	// TCPClose restores the checkpoint's TCP connections closed, as does
	// an image pushed with it: connections to peers that did not move
	// cannot be restored on another host.
	TCPClose bool
}

// PullResult is what a pull did, for people and programs (--format json).
type PullResult struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Source string `json:"source"`
	Digest string `json:"digest"`
	// Seconds per phase: plan, fetch, verify, base (when pulled), restore,
	// and total. fetch includes verifying the layers (but for an encrypted
	// image), verify is what is left after the fetch.
	Seconds map[string]float64 `json:"seconds"`
	// Bytes: image (config and layers as stored in the source), sent (the
	// archive as sent to podman, after Compress).
	Bytes map[string]int64 `json:"bytes"`
	// Compress is how the archive was sent: none or zstd:LEVEL.
	Compress string `json:"compress,omitempty"`
}

// ReadMetadata reads what planning needs, in place; an image with
// encrypted layers is fetched whole and decrypted first, into the *staged
// it returns (the caller removes it).
func ReadMetadata(ctx context.Context, ref types.ImageReference, o transfer.Options, lim ckpt.Limits, tmpDir string) (*ckpt.Metadata, *Staged, error) {
	src, err := transfer.OpenSource(ctx, ref, o)
	if err != nil {
		return nil, nil, err
	}
	defer src.Close()
	mb, encrypted, err := transfer.CheckDecryption(ctx, src, o.Decrypt)
	if err != nil {
		return nil, nil, fmt.Errorf("checking %s: %w", transfer.Display(ref), err)
	}
	if encrypted {
		return fetchDecrypted(ctx, ref, mb, o, lim, tmpDir)
	}
	var meta *ckpt.Metadata
	err = transfer.Retry(ctx, o, func() error {
		var err error
		meta, err = ckpt.ReadMetadata(ctx, src, lim)
		if err != nil && !isContentError(err) {
			// Not the image's fault: the source failed to deliver it.
			return &transfer.Error{Op: "reading", Ref: transfer.Display(ref), Err: err}
		}
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("checking %s: %w", transfer.Display(ref), err)
	}
	return meta, nil, nil
}

// isContentError tells what is wrong with an image's bytes from a failure
// to fetch them.
func isContentError(err error) bool {
	return errors.Is(err, tarsafe.ErrUnsafe) || errors.Is(err, tarsafe.ErrTooLarge) ||
		errors.Is(err, ckpt.ErrNotCheckpoint) || errors.Is(err, ckpt.ErrBadArchive) ||
		errors.Is(err, context.Canceled)
}

// NewPlan works out what restoring meta (read from source) would do on
// the host c serves, creating nothing; Plan.Err says whether it can
// proceed. The comparison of the hosts goes on in the background until
// Settle (Restore settles it before the archive ends); ctx bounds it.
func NewPlan(ctx context.Context, c podman.Target, source string, meta *ckpt.Metadata, o PullOptions) (*Plan, error) {
	t := newTarget(c)
	var (
		fromCRIO []string
		err      error
	)
	if ckpt.MadeByCRIO(meta.SpecDump) {
		if fromCRIO, err = ckpt.FromCRIO(meta); err != nil {
			return nil, err
		}
	}
	cfg := meta.Config
	p := &Plan{Source: source, Digest: meta.ManifestDigest.String(), Name: o.Name, Image: cfg.RawImageName()}
	if len(fromCRIO) > 0 {
		p.warn("a checkpoint CRI-O made, rewritten for podman: %s", strings.Join(fromCRIO, "; "))
	}
	if p.Name == "" {
		p.Name = cfg.Name()
	}
	if p.Image == "" {
		p.Image = cfg.RootfsImageName()
	}
	if exists, err := c.ContainerExists(ctx, p.Name); err != nil {
		return nil, err
	} else if exists {
		p.block("container %q %s: choose another name with --name", p.Name, ErrConflict)
	}
	if err := p.basePlan(ctx, t, meta, cfg); err != nil {
		return nil, err
	}
	if err := p.relocate(ctx, t, meta, o); err != nil {
		return nil, err
	}
	p.privileges(meta, o.AllowPrivileged)
	p.compareHosts(ctx, t, meta, cfg)
	return p, nil
}

// networkTries is how often a restore is tried when podman's network
// set-up races (networkRace).
const networkTries = 3

// NetworkPause is the wait before attempt n+1.
func NetworkPause(n int) <-chan time.Time { return time.After(time.Duration(n) * time.Second) }

// networkRace tells podman 4.3.1's netavark failing to set up the
// firewall because another container on the network was set up or torn
// down at the same time (seen with two restores at once on one host:
// "unable to append rule … to table 'nat': … No chain/target/match by
// that name"). podman sets up the network before CRIU runs, and cleanup
// removes what it made, so the restore can be tried again.
func networkRace(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "netavark") && strings.Contains(s, "iptables") &&
		(strings.Contains(s, "No chain/target/match by that name") || strings.Contains(strings.ToLower(s), "chain already exists"))
}

// IsNetworkRace tells a restore that failed because podman's network
// set-up raced with another container's, and may be tried again.
func IsNetworkRace(err error) bool { return networkRace(err) }

// RetryRestore runs try until it succeeds, fails otherwise than by a
// network race, or has been tried networkTries times. After each failure
// undo removes what that attempt left; last says no attempt follows.
func RetryRestore(ctx context.Context, try func() (string, error), undo func(last bool) error, logw io.Writer, pause func(int) <-chan time.Time) (string, error) {
	for attempt := 1; ; attempt++ {
		id, err := try()
		if err == nil {
			return id, nil
		}
		again := attempt < networkTries && networkRace(err) && ctx.Err() == nil
		if uerr := undo(!again); uerr != nil {
			return "", fmt.Errorf("%w; removing what the failed restore left also failed: %w", err, uerr)
		}
		if !again {
			return "", err
		}
		fmt.Fprintf(logw, "podman's network set-up failed (%v); restoring again (%d/%d)\n", err, attempt, networkTries-1)
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w; interrupted before restoring again", err)
		case <-pause(attempt):
		}
	}
}

// Restore streams the verified image, or the live archive, to podman's
// restore once, as the plan relocated it, and returns the new container's
// ID; a failure carries the reasons CRIU's restore log gives. An interrupt
// stops the archive stream, not the request: podman goes on working after
// a client hangs up, so its answer is awaited before the caller cleans up
// what it made.
func (p *Plan) Restore(ctx context.Context, c podman.Target, img ckpt.Archive, o PullOptions, logw io.Writer) (string, error) {
	id, err := p.restore(ctx, c, img, o, logw)
	if err != nil {
		// CRIU's reasons are in its log, under the container that
		// cleanup is about to remove: read them first.
		if lines := criuErrors(c, err); lines != "" {
			err = fmt.Errorf("%w; CRIU's restore log says: %s", err, lines)
		}
	}
	return id, err
}

func (p *Plan) restore(ctx context.Context, c podman.Target, img ckpt.Archive, o PullOptions, logw io.Writer) (string, error) {
	name, rel := p.Name, p.relocated
	wire, err := ChooseWire(o.Compress, c.Address())
	if err != nil {
		return "", err
	}
	p.Wire = wire
	switch p.TCPClose {
	case TCPClosePodman:
		fmt.Fprintln(logw, "The checkpoint's TCP connections are restored closed (podman's tcpClose)")
	case TCPCloseCRIUConfig:
		fmt.Fprintf(logw, "The checkpoint's TCP connections are restored closed: podman before %s has no tcpClose, so the runtime hands CRIU %s, with tcp-close, for this restore\n", tcpCloseSince, rel.criuConfig.path)
		if err := rel.criuConfig.write(); err != nil {
			return "", err
		}
		defer rel.criuConfig.remove()
	}
	pr, pw := io.Pipe()
	werr := make(chan error, 1)
	// The comparison of the hosts may still be running: a blocker it
	// finds stops the stream early, and the stream ends only once it is
	// settled and found none.
	wctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	if h := p.host; h != nil {
		go func() {
			select {
			case <-h.done:
				if h.blocks() {
					stop(errHostBlocked)
				}
			case <-wctx.Done():
			}
		}()
	}
	go func() {
		w, err := wire.writer(pw)
		if err == nil {
			err = img.WriteArchive(wctx, w, rel.edits)
			if err == nil || errors.Is(context.Cause(wctx), errHostBlocked) {
				err = p.settle(ctx, logw)
			}
			if ferr := w.Close(); err == nil {
				err = ferr
			}
			p.Compressed = w.Report()
		}
		pw.CloseWithError(err)
		werr <- err
	}()
	label := "Sending the checkpoint to podman"
	if wire.Zstd || wire.Adaptive {
		label += " (" + wire.String() + ")"
	}
	sent := progress.NewReader(pr, logw, label)
	defer func() { p.Sent = sent.N() }()
	ropts := podman.RestoreOptions{
		Name:            o.Name,
		IgnoreStaticIP:  o.IgnoreStaticIP || rel.dropIP,
		IgnoreStaticMAC: o.IgnoreStaticMAC,
		Publish:         o.Publish,
		Pod:             o.Pod,
		TCPEstablished:  img.Meta().Options.TCPEstablished,
		FileLocks:       img.Meta().Options.FileLocks,
		TCPClose:        p.TCPClose == TCPClosePodman,
	}
	// name is what podman calls the new container: a stuck restore is
	// found by it.
	id, err := awaitRestore(ctx, c, name, o.RestoreTimeout, func(rctx context.Context) (string, error) {
		return c.RestoreImport(rctx, sent, ropts)
	})
	// Unblock the writer if podman stopped reading, and let it finish
	// before the staging directory goes.
	sent.Close()
	pr.CloseWithError(errRestoreDone)
	var (
		source *ckpt.SourceError
		before *unsettled
	)
	if wErr := <-werr; err != nil && wErr != nil && !errors.Is(wErr, errRestoreDone) {
		if errors.As(wErr, &before) {
			err = before.err // podman's failure is the stream cut short
		} else if errors.As(wErr, &source) && ctx.Err() == nil {
			// Fetching failed, or found the image bad: podman's failure
			// is the stream cut short.
			err = source
		} else if errors.Is(err, wErr) || strings.Contains(err.Error(), wErr.Error()) {
			// The request failed because its body did: one cause.
			err = fmt.Errorf("streaming the checkpoint to podman: %w", wErr)
		} else {
			err = fmt.Errorf("streaming the checkpoint to podman: %w (podman: %w)", wErr, err)
		}
	}
	if err == nil && ctx.Err() != nil {
		// Restored, but the user asked to stop: undo it, as for a failure.
		err = fmt.Errorf("restoring: %w; podman had restored container %s, which is removed again", ctx.Err(), ckpt.ShortID(id))
	}
	return id, err
}

// errHostBlocked stops a restore's stream when the comparison of the
// hosts found a blocker.
var errHostBlocked = errors.New("the hosts differ")

// unsettled is the plan failing to settle before the archive's end.
type unsettled struct{ err error }

func (u *unsettled) Error() string { return u.err.Error() }
func (u *unsettled) Unwrap() error { return u.err }

// settle settles the plan before a restore's archive ends: its error
// (a blocker, or podman's info failing) stops the archive short of its
// end, so that podman acts on none of it.
func (p *Plan) settle(ctx context.Context, logw io.Writer) error {
	if err := p.Settle(ctx, logw); err != nil {
		return &unsettled{err}
	}
	if err := p.Err(); err != nil {
		return &unsettled{err}
	}
	return nil
}

// criuLog finds the restore log podman names when CRIU failed ("criu
// failed: type … log file: /…/userdata/restore.log").
var criuLog = regexp.MustCompile(`log file: (/\S+/userdata/restore\.log)`)

// criuErrors returns the error lines of CRIU's restore log, read in the
// podman service's mount namespace when it runs on this machine; "" when
// there is no such log or it cannot be read.
func criuErrors(c podman.Host, err error) string {
	m := criuLog.FindStringSubmatch(err.Error())
	if m == nil {
		return ""
	}
	root, rerr := c.ServiceRoot()
	if rerr != nil {
		return ""
	}
	f, oerr := os.Open(filepath.Join(root, m[1]))
	if oerr != nil {
		return ""
	}
	defer f.Close()
	return criuReasons(io.LimitReader(f, 16<<20))
}

// criuStamp is the time and pid prefix of a CRIU log line.
var criuStamp = regexp.MustCompile(`^\(\s*[0-9.]+\)\s+(?:[0-9]+:\s+)?`)

// criuNoise are CRIU error lines that never explain a failure: the summary,
// the cgroup daemon's complaint once the restore is torn down, and an
// rlimit CRIU carries on without.
var criuNoise = []string{"Restoring FAILED", "cgroupd:", "Can't setup RLIMIT_NOFILE"}

// criuReasons picks the last few "Error (" lines of a CRIU log, leaving
// out criuNoise unless nothing else is left.
func criuReasons(r io.Reader) string {
	var all, reasons []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.Contains(line, "Error (") {
			continue
		}
		line = criuStamp.ReplaceAllString(line, "")
		all = append(all, line)
		if !slices.ContainsFunc(criuNoise, func(n string) bool { return strings.Contains(line, n) }) {
			reasons = append(reasons, line)
		}
	}
	if len(reasons) == 0 {
		reasons = all
	}
	if len(reasons) > 3 {
		reasons = reasons[len(reasons)-3:]
	}
	return strings.Join(reasons, " | ")
}

// EnsureBase makes the base image available when the plan says it is
// absent: by digest from its origin, else from the copy push
// --include-base made, tagged with its original name because podman's
// restore looks it up by name. It returns the image it pulled, if any.
func EnsureBase(ctx context.Context, c podman.Target, p *Plan, o PullOptions, logw io.Writer) (string, error) {
	if p.Base.Present {
		if p.Base.ByID {
			fmt.Fprintf(logw, "Base image %s is named by digest; restoring from image %s, already here\n", p.Base.Name, ckpt.ShortID(p.Base.ID))
			return "", nil
		}
		if repo, tag := splitName(p.Base.Name); p.Base.Tag && repo != "" {
			fmt.Fprintf(logw, "Naming base image %s %s\n", ckpt.ShortID(p.Base.ID), p.Base.Name)
			return "", c.TagImage(ctx, p.Base.ID, repo, tag)
		}
		return "", nil
	}
	var failed []string
	for _, ref := range p.Base.From {
		fmt.Fprintf(logw, "Pulling base image %s\n", ref)
		id, err := fetchBase(ctx, c, ref, p.Base.ID, o)
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", ref, err))
			continue
		}
		repo, tag := splitName(p.Base.Name)
		if repo != "" && !p.Base.ByID {
			if err := c.TagImage(ctx, id, repo, tag); err != nil {
				return id, err
			}
		}
		return id, nil
	}
	return "", fault.Hinted(fmt.Errorf("%w: base image %s (%s) is not on this host and could not be pulled: %s",
		ErrBaseImage, p.Base.Name, ckpt.ShortID(p.Base.ID), strings.Join(failed, "; ")),
		"push with --include-base, or podman save/load the image here")
}

// fetchBase copies the base image from ref with pull's own transfer
// settings (TLS, credentials, retries, signature policy: podman's pull
// would use its own) into an archive in the staging directory, loads it
// into podman, and returns its ID, which must be want.
func fetchBase(ctx context.Context, c podman.Target, ref, want string, o PullOptions) (id string, retErr error) {
	src, err := transfer.ParseReference(ref)
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(transfer.StagingDir(o.TmpDir), "podman-migrate-base-")
	if err != nil {
		return "", fmt.Errorf("creating a staging directory: %w", err)
	}
	defer os.RemoveAll(dir)
	file := filepath.Join(dir, "base.tar")
	dst, err := ociarchive.NewReference(file, "")
	if err != nil {
		return "", err
	}
	if _, err := transfer.Copy(ctx, "pulling", dst, src, o.Transfer); err != nil {
		return "", err
	}
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	names, err := c.LoadImage(ctx, f)
	if err != nil {
		return "", err
	}
	img, err := c.InspectImage(ctx, want)
	if err != nil {
		return "", fmt.Errorf("loaded %v, which is not image %s: %w", names, ckpt.ShortID(want), err)
	}
	return img.ID, nil
}

// splitName splits NAME[:TAG] into the repository and tag podman's tag
// endpoint takes.
func splitName(name string) (string, string) {
	named, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return "", ""
	}
	tag := "latest"
	if t, ok := named.(reference.NamedTagged); ok {
		tag = t.Tag()
	}
	return reference.TrimNamed(named).String(), tag
}

// Cleanup removes what a failed restore left: podman 4.3.1 can leave the
// new container in state Created, and restored volumes behind.
func Cleanup(ctx context.Context, c podman.Target, name string, volumes []string, pulledBase string, logw io.Writer) error {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
	defer cancel()
	var errs []error
	if exists, err := c.ContainerExists(cctx, name); err != nil {
		errs = append(errs, err)
	} else if exists {
		fmt.Fprintf(logw, "Removing container %s, left behind by the failed restore\n", name)
		errs = append(errs, c.RemoveContainer(cctx, name))
	}
	for _, v := range volumes {
		if exists, err := c.VolumeExists(cctx, v); err != nil {
			errs = append(errs, err)
		} else if exists {
			fmt.Fprintf(logw, "Removing volume %s, left behind by the failed restore\n", v)
			errs = append(errs, c.RemoveVolume(cctx, v))
		}
	}
	if pulledBase != "" {
		fmt.Fprintf(logw, "Removing base image %s, pulled for the failed restore\n", ckpt.ShortID(pulledBase))
		errs = append(errs, c.RemoveImage(cctx, pulledBase))
	}
	return errors.Join(errs...)
}

// Inspect describes the checkpoint image at source from its metadata,
// under the signature policy and lim, without a podman service.
func Inspect(ctx context.Context, source string, o transfer.Options, lim ckpt.Limits) (*ckpt.Description, error) {
	ref, err := transfer.ParseReference(source)
	if err != nil {
		return nil, err
	}
	meta, st, err := ReadMetadata(ctx, ref, o, lim, "")
	defer st.Remove()
	if err != nil {
		return nil, err
	}
	return ckpt.Describe(meta), nil
}

// InspectPod describes the pod whose index ix Inspect found at source:
// its record, and every member's checkpoint, each read (and verified) as
// Inspect reads one.
func InspectPod(ctx context.Context, source string, ix *ckpt.IndexError, o transfer.Options, lim ckpt.Limits) (*ckpt.PodDescription, error) {
	ref, err := transfer.ParseReference(source)
	if err != nil {
		return nil, err
	}
	pod, err := ckpt.ReadPodIndex(ix.Manifest)
	if err != nil {
		return nil, err
	}
	d := &ckpt.PodDescription{Format: "podman-migrate pod", Digest: digest.FromBytes(ix.Manifest).String(), Pod: pod}
	for _, m := range pod.Members {
		inst, err := transfer.Instance(ref, m.Digest)
		if err != nil {
			return nil, err
		}
		meta, st, err := ReadMetadata(ctx, inst, o, lim, "")
		st.Remove()
		if err != nil {
			return nil, fmt.Errorf("member %q: %w", m.Name, err)
		}
		d.Members = append(d.Members, ckpt.Describe(meta))
	}
	return d, nil
}
