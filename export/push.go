package export

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"time"

	"github.com/containers/image/v5/oci/archive"
	"github.com/containers/image/v5/oci/layout"
	"github.com/containers/image/v5/types"
	units "github.com/docker/go-units"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/dump"
	"github.com/podman-migrate/podman-migrate/internal/progress"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// ErrNoContainer is wrapped when the container to push does not exist.
var ErrNoContainer = errors.New("no such container")

// ErrNotRunning is wrapped when the container to push is not running.
var ErrNotRunning = errors.New("container is not running")

// PushOptions are the settings of one push.
type PushOptions struct {
	Container      string
	Dest           string
	LeaveRunning   bool
	TCPEstablished bool
	FileLocks      bool
	IgnoreRootfs   bool
	// IncludeBase copies the container's base image into DEST's
	// repository (tag base-IMAGEID), for targets that cannot reach its
	// origin.
	IncludeBase bool
	// CompressionLevel is zstd's or gzip's level; nil: the library's
	// default.
	CompressionLevel *int
	Compression      string
	// NoStream stages the whole image before uploading any of it; by
	// default the CRIU layer is uploaded to a registry while it is built.
	NoStream bool
	Transfer transfer.Options
	// NoCRIOAnnotations leaves out what CRI-O needs to restore the image
	// (see crioRewrites); by default the image restores in CRI-O too.
	NoCRIOAnnotations bool
	// TmpDir holds the image between checkpoint and upload; "" means
	// $TMPDIR or /var/tmp (CRIU images can be far larger than a tmpfs).
	TmpDir      string
	ToolVersion string
	Log         io.Writer // progress and notes; nil discards
	// CheckpointTimeout bounds the wait for podman's checkpoint (0: no
	// bound). Then CRIU is ended if the service is on this machine, and
	// the container rolled back; the error wraps podman.ErrCRIUStuck.
	CheckpointTimeout time.Duration
	// CheckpointStall is when a slow checkpoint earns a warning; 0 means
	// DefaultStall, or half CheckpointTimeout if that is shorter.
	CheckpointStall time.Duration
	// StopWaiting, once closed (a second interrupt), ends the wait for the
	// checkpoint at once; the error wraps ErrStoppedWaiting.
	StopWaiting <-chan struct{}
}

// PushResult is what a push did, for people and programs (--format json).
type PushResult struct {
	Reference string `json:"reference"` // DEST as shown to users
	Digest    string `json:"digest"`
	Container string `json:"container"`
	ID        string `json:"id"`
	// Seconds per phase: base (--include-base), checkpoint, build, upload,
	// and total.
	Seconds map[string]float64 `json:"seconds"`
	// Bytes: archive (podman's export as read), image (config and layers
	// as stored), sent (the layers sent to DEST; those it had already are
	// not sent again).
	Bytes     map[string]int64 `json:"bytes"`
	Layers    []PushedLayer    `json:"layers"`
	BaseImage string           `json:"baseImage,omitempty"` // the --include-base copy
}

// PushedLayer is one layer of the pushed image.
type PushedLayer struct {
	Role   string `json:"role"` // metadata, criu, rootfs, volume
	Volume string `json:"volume,omitempty"`
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
	// Sent is false for a layer DEST already had (an unchanged volume).
	Sent bool `json:"sent"`
}

// since is seconds elapsed, to the millisecond (no float noise in JSON).
func since(t time.Time) float64 { return math.Round(time.Since(t).Seconds()*1000) / 1000 }

// PushError is a failure after the container was checkpointed. It says
// whether the container was restored on this host again.
type PushError struct {
	Container   string
	Err         error
	LeftRunning bool  // --leave-running: the container never stopped
	NotStopped  bool  // the checkpoint failed and the process ran on
	RolledBack  bool  // restored from the kept checkpoint
	RollbackErr error // why restoring it failed
}

func (e *PushError) Error() string {
	switch {
	case e.LeftRunning:
		return fmt.Sprintf("%v; container %q kept running (--leave-running)", e.Err, e.Container)
	case e.NotStopped:
		return fmt.Sprintf("%v; container %q was not stopped and is still running", e.Err, e.Container)
	case e.RolledBack:
		return fmt.Sprintf("%v; container %q was restored from its checkpoint and is running again on this host", e.Err, e.Container)
	default:
		return fmt.Sprintf("%v; restoring container %q on this host also failed (%v): it is still checkpointed, run `podman container restore --keep %s` to resume it", e.Err, e.Container, e.RollbackErr, e.Container)
	}
}

func (e *PushError) Unwrap() error { return e.Err }

// Push checkpoints a running container, converts the checkpoint into an OCI
// image and copies it to o.Dest. It returns the destination as shown to
// users and the manifest digest. Any failure after the checkpoint restores
// the container on this host from the kept checkpoint.
func Push(ctx context.Context, c *podman.Client, o PushOptions) (*PushResult, error) {
	res := &PushResult{Seconds: map[string]float64{}, Bytes: map[string]int64{}}
	began := time.Now()
	logw := o.Log
	if logw == nil {
		logw = io.Discard
	}
	destRef, err := transfer.ParseReference(o.Dest)
	if err != nil {
		return nil, err
	}
	if _, _, err := ckpt.MediaType(o.Compression); err != nil {
		return nil, err
	}
	ctr, err := c.InspectContainer(ctx, o.Container)
	if errors.Is(err, podman.ErrNotFound) {
		return nil, fmt.Errorf("%w %q on %s: check `podman ps -a` on that host", ErrNoContainer, o.Container, c.URI)
	}
	if err != nil {
		return nil, err
	}
	if !ctr.State.Running {
		return nil, fmt.Errorf("%w: %q is %s; only a running container can be migrated", ErrNotRunning, ctr.Name, ctr.State.Status)
	}
	if err := transfer.Preflight(ctx, destRef, o.Transfer); err != nil {
		return nil, fmt.Errorf("%w; container %q was not touched", err, ctr.Name)
	}
	info, err := c.Info(ctx)
	if err != nil {
		return nil, err
	}
	var baseDigest string
	if img, err := c.InspectImage(ctx, ctr.Image); err == nil {
		baseDigest = img.Digest
	}

	if err := checkStagingRoom(ctx, c, ctr, transfer.StagingDir(o.TmpDir)); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(transfer.StagingDir(o.TmpDir), "podman-migrate-push-")
	if err != nil {
		return nil, fmt.Errorf("creating a staging directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	// The base image goes first: it costs no downtime before the
	// checkpoint.
	base := map[string]string{}
	if v := c.CRIUVersion(ctx); v != "" {
		base[ckpt.AnnCriuVersion] = v
	}
	if kinds := bindKinds(c, ctr); kinds != "" {
		base[ckpt.AnnBindKinds] = kinds
	}
	res.Container, res.ID = ctr.Name, ctr.ID
	if o.IncludeBase {
		start := time.Now()
		ref, err := includeBase(ctx, c, ctr, destRef, tmp, o, logw)
		if err != nil {
			return nil, fmt.Errorf("including the base image: %w; container %q was not touched", err, ctr.Name)
		}
		base[ckpt.AnnBaseIncluded] = ref
		res.BaseImage = ref
		res.Seconds["base"] = since(start)
	}

	copts := podman.CheckpointOptions{
		LeaveRunning: o.LeaveRunning, TCPEstablished: o.TCPEstablished,
		FileLocks: o.FileLocks, IgnoreRootfs: o.IgnoreRootfs,
	}
	start := time.Now()
	archive, answered, err := awaitCheckpoint(ctx, c, ctr, copts, o, logw)
	if !answered {
		return nil, err
	}
	if err == nil && ctx.Err() != nil {
		archive.Close()
		err = fmt.Errorf("checkpointing container %q: %w", ctr.Name, ctx.Err())
	}
	if err != nil {
		return nil, rollback(ctx, c, ctr, copts, o.LeaveRunning, err, logw)
	}
	fmt.Fprintf(logw, "Checkpoint taken in %s; building the image\n", time.Since(start).Round(time.Millisecond))
	res.Seconds["checkpoint"] = since(start)
	start = time.Now()
	counted := progress.NewReader(archive, logw, "Reading the checkpoint from podman")

	created := time.Now().UTC()
	staged, err := layout.NewReference(tmp, "checkpoint")
	if err != nil {
		return nil, rollback(ctx, c, ctr, copts, o.LeaveRunning, err, logw)
	}
	dest, err := staged.NewImageDestination(ctx, nil)
	if err != nil {
		return nil, rollback(ctx, c, ctr, copts, o.LeaveRunning, err, logw)
	}
	var streamer *transfer.Streamer // nil: nothing streamed
	if !o.NoStream && transfer.IsRegistry(destRef) && o.Transfer.Encrypt == nil {
		// Encrypted layers differ from the plain ones built here.
		if streamer, err = transfer.NewStreamer(ctx, dest, tmp, destRef, o.Transfer, streamed, logw); err != nil {
			dest.Close()
			return nil, rollback(ctx, c, ctr, copts, o.LeaveRunning, err, logw)
		}
		dest = streamer
	}
	var rewrite map[string]func([]byte) ([]byte, error)
	if !o.NoCRIOAnnotations {
		rewrite = crioRewrites()
	}
	built, err := build(ctx, counted, dest, ckpt.BuildOptions{
		Rewrite:     rewrite,
		Compression: o.Compression,
		Level:       o.CompressionLevel,
		Arch:        info.Host.Arch,
		Created:     created,
		Annotate: func(cfg *dump.Config) (map[string]string, error) {
			a := annotations(cfg, ctr, info, baseDigest, created, o)
			for k, v := range base {
				a[k] = v
			}
			return a, nil
		},
	})
	if cerr := archive.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("reading the checkpoint from podman: %w", cerr)
	}
	if err != nil {
		return nil, rollback(ctx, c, ctr, copts, o.LeaveRunning, fmt.Errorf("converting the checkpoint: %w", err), logw)
	}
	if len(built.Cleared) > 0 {
		fmt.Fprintf(logw, "Removed source-host paths from config.dump: %v\n", built.Cleared)
	}
	counted.Close()
	res.Seconds["build"] = since(start)
	res.Bytes["archive"] = counted.N()
	res.Bytes["image"] = built.Manifest.Config.Size
	for _, l := range built.Layers {
		res.Bytes["image"] += l.Desc.Size
	}
	fmt.Fprintf(logw, "Built %d layers (%s) from %s of checkpoint in %s\n", len(built.Layers), units.BytesSize(float64(res.Bytes["image"])), units.BytesSize(float64(counted.N())), time.Since(start).Round(time.Millisecond))
	start = time.Now()
	fmt.Fprintf(logw, "Copying the image to %s\n", transfer.Display(destRef))
	topts := o.Transfer
	topts.Sent = &transfer.Blobs{}
	d, err := transfer.Copy(ctx, "pushing", destRef, staged, topts)
	if err != nil {
		return nil, rollback(ctx, c, ctr, copts, o.LeaveRunning, err, logw)
	}
	res.Seconds["upload"] = since(start)
	res.Bytes["sent"] = 0
	for _, l := range built.Layers {
		pl := PushedLayer{Role: string(l.Role), Volume: l.Volume, Digest: l.Desc.Digest.String(), Size: l.Desc.Size}
		pl.Sent = streamer.Uploaded(l.Desc.Digest) || topts.Sent.Has(l.Desc.Digest)
		if pl.Sent {
			res.Bytes["sent"] += l.Desc.Size
		}
		res.Layers = append(res.Layers, pl)
	}
	res.Seconds["total"] = since(began)
	res.Reference, res.Digest = transfer.Display(destRef), d.String()
	return res, nil
}

// bindKinds records whether each bind mount's source is a directory or a
// file, looked up in the podman service's mount namespace when it runs on
// this machine ("" otherwise, or without bind mounts).
func bindKinds(c *podman.Client, ctr *podman.Container) string {
	pid, err := c.ServicePID()
	if err != nil {
		return ""
	}
	kinds := map[string]string{}
	for _, m := range ctr.Mounts {
		if m.Type != "bind" {
			continue
		}
		fi, err := os.Stat(filepath.Join("/proc", strconv.Itoa(pid), "root", m.Source))
		if err != nil {
			continue
		}
		kinds[m.Destination] = "file"
		if fi.IsDir() {
			kinds[m.Destination] = "dir"
		}
	}
	if len(kinds) == 0 {
		return ""
	}
	b, _ := json.Marshal(kinds)
	return string(b)
}

// ErrStagingTooSmall is wrapped when the staging file system cannot hold
// the checkpoint: found before the checkpoint, it costs no downtime.
var ErrStagingTooSmall = errors.New("the staging directory is too small for the checkpoint")

// checkStagingRoom refuses a staging file system with less free space
// than the container's memory: CRIU's page images are about that large and
// random memory does not compress.
func checkStagingRoom(ctx context.Context, c *podman.Client, ctr *podman.Container, dir string) error {
	mem, err := c.MemoryUsage(ctx, ctr.ID)
	if err != nil {
		return nil // no figure, no refusal: the push itself will tell
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return fmt.Errorf("checking the staging directory %s: %w", dir, err)
	}
	free := st.Bavail * uint64(st.Bsize)
	if free < mem {
		return fmt.Errorf("%w: %s has %s free, container %q uses %s of memory; container %q was not touched (hint: point --tmpdir or $TMPDIR at a file system with at least %s free)",
			ErrStagingTooSmall, dir, units.BytesSize(float64(free)), ctr.Name, units.BytesSize(float64(mem)), ctr.Name, units.BytesSize(float64(mem)))
	}
	return nil
}

// ErrIncludeBase is wrapped when --include-base cannot apply to DEST.
var ErrIncludeBase = errors.New("--include-base needs a registry destination")

// includeBase copies the container's base image from podman into DEST's
// repository, tagged base-IMAGEID, and returns its digest reference. The
// copy keeps the image config, so the image ID podman restores by is the
// same on the target.
func includeBase(ctx context.Context, c *podman.Client, ctr *podman.Container, dest types.ImageReference, tmp string, o PushOptions, logw io.Writer) (string, error) {
	if !transfer.IsRegistry(dest) {
		return "", fmt.Errorf("%w, not %s", ErrIncludeBase, transfer.Display(dest))
	}
	to, err := transfer.SiblingTag(dest, "base-"+podman.ShortID(ctr.Image))
	if err != nil {
		return "", err
	}
	fmt.Fprintf(logw, "Copying base image %s (%s) to %s\n", ctr.ImageName, podman.ShortID(ctr.Image), transfer.Display(to))
	file := filepath.Join(tmp, "base.tar")
	if err := saveImage(ctx, c, ctr.Image, file); err != nil {
		return "", err
	}
	defer os.Remove(file)
	from, err := archive.NewReference(file, "")
	if err != nil {
		return "", err
	}
	// The base image holds no secrets of the container, and the target's
	// podman pulls it as it is: never encrypted.
	plain := o.Transfer
	plain.Encrypt, plain.EncryptLayers = nil, nil
	d, err := transfer.Copy(ctx, "pushing", to, from, plain)
	if err != nil {
		return "", err
	}
	return transfer.WithDigest(to, d), nil
}

func saveImage(ctx context.Context, c *podman.Client, id, file string) (retErr error) {
	rc, err := c.SaveImage(ctx, id)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if err := f.Close(); err != nil && retErr == nil {
			retErr = err
		}
	}()
	if _, err := io.Copy(f, rc); err != nil {
		return fmt.Errorf("saving image %s from podman: %w", podman.ShortID(id), err)
	}
	return nil
}

// build writes the checkpoint image into dest (the staging layout, or a
// Streamer around it) and closes dest.
func build(ctx context.Context, archive io.Reader, dest types.ImageDestination, o ckpt.BuildOptions) (b *ckpt.Built, retErr error) {
	defer func() {
		if err := dest.Close(); err != nil && retErr == nil {
			retErr = err
		}
	}()
	return ckpt.Build(ctx, archive, dest, o)
}

// streamed says which layers are uploaded while built: the CRIU images,
// which differ at every checkpoint and are most of the bytes. The others
// are not: an unchanged volume or root-filesystem diff makes the same blob
// as last time, which Copy then finds in the registry and skips; streamed,
// it would be sent before its digest were known.
func streamed(info types.BlobInfo) bool {
	return ckpt.Role(info.Annotations[ckpt.AnnLayerRole]) == ckpt.RoleCRIU
}

// Resume restores a pushed container on its host from the checkpoint push
// kept: the way back when the restore elsewhere failed.
func Resume(ctx context.Context, c *podman.Client, container string, o PushOptions) error {
	return c.RestoreKept(ctx, container, podman.CheckpointOptions{
		TCPEstablished: o.TCPEstablished, FileLocks: o.FileLocks, IgnoreRootfs: o.IgnoreRootfs,
	})
}

// rollback restores the source container from its kept checkpoint after a
// failure, even if ctx was cancelled (an interrupted push).
func rollback(ctx context.Context, c *podman.Client, ctr *podman.Container, copts podman.CheckpointOptions, leftRunning bool, cause error, logw io.Writer) error {
	perr := &PushError{Container: ctr.Name, Err: cause, LeftRunning: leftRunning}
	if leftRunning {
		return perr
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	defer cancel()
	now, err := c.InspectContainer(rctx, ctr.ID)
	if err == nil && now.State.Running {
		// The checkpoint itself failed and CRIU left the process running.
		perr.NotStopped = true
		return perr
	}
	fmt.Fprintf(logw, "Push failed; restoring container %s on this host\n", ctr.Name)
	if err == nil {
		err = c.RestoreKept(rctx, ctr.ID, copts)
	}
	if err != nil {
		perr.RollbackErr = err
		return perr
	}
	perr.RolledBack = true
	return perr
}

func annotations(cfg *dump.Config, ctr *podman.Container, info *podman.Info, baseDigest string, created time.Time, o PushOptions) map[string]string {
	runtimeName := ctr.OCIRuntime // what the container really ran with
	if runtimeName == "" {
		runtimeName = info.Host.OCIRuntime.Name
	}
	a := map[string]string{
		ckpt.AnnName:             cfg.Name(),
		ckpt.AnnRawImageName:     cfg.RawImageName(),
		ckpt.AnnRootfsImageID:    cfg.RootfsImageID(),
		ckpt.AnnRootfsImageName:  cfg.RootfsImageName(),
		ckpt.AnnPodmanVersion:    info.Version.Version,
		ckpt.AnnRuntimeName:      runtimeName,
		ckpt.AnnRuntimeVersion:   info.Host.OCIRuntime.Version,
		ckpt.AnnConmonVersion:    info.Host.Conmon.Version,
		ckpt.AnnHostArch:         info.Host.Arch,
		ckpt.AnnHostKernel:       info.Host.Kernel,
		ckpt.AnnCgroupVersion:    info.Host.CgroupsVersion,
		ckpt.AnnDistributionVer:  info.Host.Distribution.Version,
		ckpt.AnnDistributionName: info.Host.Distribution.Distribution,
		ckpt.AnnBaseName:         cfg.RootfsImageName(),
		ckpt.AnnFormat:           ckpt.FormatVersion,
		ckpt.AnnToolVersion:      o.ToolVersion,
		ckpt.AnnSourceID:         ctr.ID,
		ckpt.AnnCreated:          created.Format(time.RFC3339),
	}
	opts := ckpt.Options{TCPEstablished: o.TCPEstablished, FileLocks: o.FileLocks, LeaveRunning: o.LeaveRunning}
	for k, v := range opts.ToAnnotations() {
		a[k] = v
	}
	if baseDigest != "" {
		a[ckpt.AnnBaseDigest] = baseDigest
	}
	if !o.NoCRIOAnnotations {
		a[ckpt.AnnCRIOName] = cfg.Name()
	}
	for k, v := range a {
		if v == "" {
			delete(a, k)
		}
	}
	return a
}

// crioRewrites are the edits of the archive that CRI-O needs to restore
// the image as it is (measured with CRI-O 1.36): spec.dump must carry the
// container's CRI annotations as JSON, and config.dump must name the base
// image by ID (rootfsImageRef), which CRI-O finds under any name it pulled
// it by; by name it looks only for the source host's name. podman ignores
// both.
func crioRewrites() map[string]func([]byte) ([]byte, error) {
	return map[string]func([]byte) ([]byte, error){
		ckpt.SpecDump:   crioSpecDump,
		ckpt.ConfigDump: crioConfigDump,
	}
}

// crioSpecDump adds an empty set of CRI annotations to spec.dump, unless it
// has a valid one: the container had no kubelet to give it any.
func crioSpecDump(b []byte) ([]byte, error) {
	var spec map[string]json.RawMessage
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ckpt.ErrBadArchive, ckpt.SpecDump, err)
	}
	ann := map[string]string{}
	if raw := spec["annotations"]; len(raw) > 0 {
		if err := json.Unmarshal(raw, &ann); err != nil {
			return nil, fmt.Errorf("%w: %s annotations: %w", ckpt.ErrBadArchive, ckpt.SpecDump, err)
		}
		if ann == nil {
			ann = map[string]string{}
		}
	}
	if v, ok := ann[ckpt.SpecAnnCRIOAnnotations]; ok && json.Valid([]byte(v)) {
		return b, nil
	}
	ann[ckpt.SpecAnnCRIOAnnotations] = "{}"
	raw, err := json.Marshal(ann)
	if err != nil {
		return nil, err
	}
	spec["annotations"] = raw
	return json.Marshal(spec)
}

// crioConfigDump records the base image's ID as rootfsImageRef, which
// CRI-O prefers to rootfsImageName.
func crioConfigDump(b []byte) ([]byte, error) {
	cfg, err := dump.ReadConfig(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ckpt.ErrBadArchive, err)
	}
	id := cfg.RootfsImageID()
	if cfg.String("rootfsImageRef") != "" || !imageID.MatchString(id) {
		return b, nil
	}
	raw, err := json.Marshal(id)
	if err != nil {
		return nil, err
	}
	cfg.SetRaw("rootfsImageRef", raw)
	return cfg.Bytes()
}

// imageID is a containers/storage image ID, the form CRI-O parses
// rootfsImageRef in.
var imageID = regexp.MustCompile(`^[0-9a-f]{64}$`)
