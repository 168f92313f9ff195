package export

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/containers/image/v5/oci/archive"
	"github.com/containers/image/v5/types"
	units "github.com/docker/go-units"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/dump"
	"github.com/podman-migrate/podman-migrate/internal/fault"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// ErrNoContainer is wrapped when the container to push does not exist.
var ErrNoContainer = fault.New(fault.Input, "no such container")

// ErrNotRunning is wrapped when the container to push is not running.
var ErrNotRunning = fault.New(fault.Input, "container is not running")

// PushOptions are the settings of one push.
type PushOptions struct {
	Container      string
	Dest           string
	LeaveRunning   bool
	TCPEstablished bool
	// TCPClose: connections are to be closed on restore (recorded in the
	// image for pull); a pod's push then lets connections to peers
	// outside it through.
	TCPClose     bool
	FileLocks    bool
	IgnoreRootfs bool
	// Group are the other containers pushed with this one (a group's
	// push): it may join their network namespace. Joined says it does.
	Group  []string
	Joined bool
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
	// (see ckpt.ToCRIO); by default the image restores in CRI-O too.
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
	// FrozeAt is when the checkpoint was asked for: the container's
	// downtime begins.
	FrozeAt time.Time `json:"-"`
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

// bindKinds records whether each bind mount's source is a directory or a
// file, looked up in the podman service's mount namespace when it runs on
// this machine ("" otherwise, or without bind mounts).
func bindKinds(c podman.Host, ctr *podman.Container) string {
	root, err := c.ServiceRoot()
	if err != nil {
		return ""
	}
	kinds := ckpt.BindKinds{}
	for _, m := range ctr.Mounts {
		if m.Type != "bind" {
			continue
		}
		fi, err := os.Stat(filepath.Join(root, m.Source))
		if err != nil {
			continue
		}
		kinds[m.Destination] = ckpt.BindFile
		if fi.IsDir() {
			kinds[m.Destination] = ckpt.BindDir
		}
	}
	return kinds.Annotation()
}

// ErrStagingTooSmall is wrapped when the staging file system cannot hold
// the checkpoint: found before the checkpoint, it costs no downtime.
var ErrStagingTooSmall = fault.New(fault.Input, "the staging directory is too small for the checkpoint")

// CheckStagingRoom refuses, before any downtime, a staging directory
// with less room than the containers' memory: their CRIU images are at
// least that large. No figure for a container (no statistics) counts as
// none.
func CheckStagingRoom(ctx context.Context, c podman.Inspector, dir string, ctrs ...*podman.Container) error {
	var mem uint64
	var names []string
	for _, ctr := range ctrs {
		m, err := c.MemoryUsage(ctx, ctr.ID)
		if err != nil {
			continue // no figure, no refusal: the push itself will tell
		}
		mem += m
		names = append(names, strconv.Quote(ctr.Name))
	}
	if len(names) == 0 {
		return nil
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return fmt.Errorf("checking the staging directory %s: %w", dir, err)
	}
	free := st.Bavail * uint64(st.Bsize)
	if free < mem {
		untouched := "container " + names[0] + " was"
		if len(names) > 1 {
			untouched = "containers " + strings.Join(names, ", ") + " were"
		}
		return fault.Hinted(fmt.Errorf("%w: %s has %s free, and the memory of %s is %s; %s not touched",
			ErrStagingTooSmall, dir, units.BytesSize(float64(free)), strings.Join(names, ", "), units.BytesSize(float64(mem)), untouched),
			fmt.Sprintf("point --tmpdir or $TMPDIR at a file system with at least %s free", units.BytesSize(float64(mem))))
	}
	return nil
}

// ErrIncludeBase is wrapped when --include-base cannot apply to DEST.
var ErrIncludeBase = fault.New(fault.Input, "--include-base needs a registry destination")

// IncludeBase copies the container's base image from podman into DEST's
// repository, tagged base-IMAGEID, and returns its digest reference. The
// copy keeps the image config, so the image ID podman restores by is the
// same on the target.
func IncludeBase(ctx context.Context, c podman.Checkpointer, ctr *podman.Container, dest types.ImageReference, tmp string, o PushOptions, logw io.Writer) (string, error) {
	if !transfer.IsRegistry(dest) {
		return "", fmt.Errorf("%w, not %s", ErrIncludeBase, transfer.Display(dest))
	}
	to, err := transfer.SiblingTag(dest, "base-"+ckpt.ShortID(ctr.Image))
	if err != nil {
		return "", err
	}
	fmt.Fprintf(logw, "Copying base image %s (%s) to %s\n", ctr.ImageName, ckpt.ShortID(ctr.Image), transfer.Display(to))
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

func saveImage(ctx context.Context, c podman.Checkpointer, id, file string) (retErr error) {
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
		return fmt.Errorf("saving image %s from podman: %w", ckpt.ShortID(id), err)
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

// Streamed says which layers are uploaded while built: the CRIU images,
// which differ at every checkpoint and are most of the bytes. The others
// are not: an unchanged volume or root-filesystem diff makes the same blob
// as last time, which Copy then finds in the registry and skips; streamed,
// it would be sent before its digest were known.
func Streamed(info types.BlobInfo) bool {
	return ckpt.Role(info.Annotations[ckpt.AnnLayerRole]) == ckpt.RoleCRIU
}

// annotations is the provenance push records of the container, its host
// and the checkpoint's options.
func annotations(cfg *dump.Config, ctr *podman.Container, info *podman.Info, baseDigest string, created time.Time, o PushOptions) map[string]string {
	runtimeName := ctr.OCIRuntime // what the container really ran with
	if runtimeName == "" {
		runtimeName = info.Host.OCIRuntime.Name
	}
	p := ckpt.Provenance{
		Name:                cfg.Name(),
		RawImageName:        cfg.RawImageName(),
		RootfsImageID:       cfg.RootfsImageID(),
		RootfsImageName:     cfg.RootfsImageName(),
		PodmanVersion:       info.Version.Version,
		RuntimeName:         runtimeName,
		RuntimeVersion:      info.Host.OCIRuntime.Version,
		ConmonVersion:       info.Host.Conmon.Version,
		HostArch:            info.Host.Arch,
		HostKernel:          info.Host.Kernel,
		CgroupVersion:       info.Host.CgroupsVersion,
		DistributionName:    info.Host.Distribution.Distribution,
		DistributionVersion: info.Host.Distribution.Version,
		BaseName:            cfg.RootfsImageName(),
		BaseDigest:          baseDigest,
		Format:              ckpt.FormatVersion,
		ToolVersion:         o.ToolVersion,
		SourceID:            ctr.ID,
		Created:             created.Format(time.RFC3339),
		Options:             &ckpt.Options{TCPEstablished: o.TCPEstablished, FileLocks: o.FileLocks, LeaveRunning: o.LeaveRunning, TCPClose: o.TCPClose},
	}
	if !o.NoCRIOAnnotations {
		p.CRIOName = cfg.Name()
	}
	return p.ToAnnotations()
}
