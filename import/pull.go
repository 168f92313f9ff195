package restore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/containers/image/v5/oci/layout"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// ErrConflict is wrapped when the target host already has a container or
// volume the restore would create.
var ErrConflict = errors.New("already exists on the target host")

// errRestoreDone closes the archive pipe once podman has answered.
var errRestoreDone = errors.New("restore request finished")

// ErrBaseImage is wrapped when the target host has the checkpoint's base
// image name, but as a different image: CRIU's view of the file system
// would not match it.
var ErrBaseImage = errors.New("base image differs on the target host")

// PullOptions are the settings of one pull.
type PullOptions struct {
	Source          string
	Name            string // new container name; "" keeps the checkpointed name
	IgnoreStaticIP  bool
	IgnoreStaticMAC bool
	Publish         []string
	Pod             string
	Transfer        transfer.Options
	TmpDir          string // "" means $TMPDIR or /var/tmp
	Log             io.Writer
}

// Pull fetches a checkpoint image, verifies it, and restores it as a new
// container, returning the container's ID. If podman fails to restore it,
// whatever the attempt created is removed again.
func Pull(ctx context.Context, c *podman.Client, o PullOptions) (string, error) {
	logw := o.Log
	if logw == nil {
		logw = io.Discard
	}
	srcRef, err := transfer.ParseReference(o.Source)
	if err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(transfer.StagingDir(o.TmpDir), "podman-migrate-pull-")
	if err != nil {
		return "", fmt.Errorf("creating a staging directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	local, err := layout.NewReference(tmp, "checkpoint")
	if err != nil {
		return "", err
	}
	fmt.Fprintf(logw, "Fetching %s\n", transfer.Display(srcRef))
	start := time.Now()
	if _, err := transfer.Copy(ctx, "pulling", local, srcRef, o.Transfer); err != nil {
		return "", err
	}
	fmt.Fprintf(logw, "Fetched in %s; verifying\n", time.Since(start).Round(time.Millisecond))

	src, err := local.NewImageSource(ctx, nil)
	if err != nil {
		return "", err
	}
	defer src.Close()
	start = time.Now()
	img, err := Open(ctx, src)
	if err != nil {
		return "", fmt.Errorf("checking %s: %w", transfer.Display(srcRef), err)
	}
	fmt.Fprintf(logw, "Verified in %s\n", time.Since(start).Round(time.Millisecond))
	if len(img.Cleared) > 0 {
		fmt.Fprintf(logw, "Removed source-host paths from config.dump: %v\n", img.Cleared)
	}

	name := o.Name
	if name == "" {
		name = img.Config.Name()
	}
	if err := preflight(ctx, c, name, img.Volumes); err != nil {
		return "", err
	}
	if err := checkBaseImage(ctx, c, img, logw); err != nil {
		return "", err
	}

	fmt.Fprintf(logw, "Restoring container %s\n", name)
	start = time.Now()
	pr, pw := io.Pipe()
	werr := make(chan error, 1)
	go func() {
		err := img.WriteArchive(ctx, pw)
		pw.CloseWithError(err)
		werr <- err
	}()
	id, err := c.RestoreImport(ctx, pr, podman.RestoreOptions{
		Name:            o.Name,
		IgnoreStaticIP:  o.IgnoreStaticIP,
		IgnoreStaticMAC: o.IgnoreStaticMAC,
		Publish:         o.Publish,
		Pod:             o.Pod,
		// CRIU restores established connections and file locks only when
		// told to, as it was at the dump.
		TCPEstablished: img.Manifest.Annotations[ckpt.AnnTCPEstablished] == "true",
		FileLocks:      img.Manifest.Annotations[ckpt.AnnFileLocks] == "true",
	})
	// Unblock the writer if podman stopped reading, and let it finish
	// before the staging directory goes.
	pr.CloseWithError(errRestoreDone)
	if wErr := <-werr; err != nil && wErr != nil && !errors.Is(wErr, errRestoreDone) {
		err = fmt.Errorf("streaming the checkpoint to podman: %w (podman: %w)", wErr, err)
	}
	if err != nil {
		if cerr := cleanup(ctx, c, name, img.Volumes, logw); cerr != nil {
			return "", fmt.Errorf("%w; removing what the failed restore left also failed: %w", err, cerr)
		}
		return "", err
	}
	fmt.Fprintf(logw, "Restored in %s\n", time.Since(start).Round(time.Millisecond))
	return id, nil
}

// preflight refuses a restore that would collide with what the target host
// already has, so a failure never removes anything that was there before.
func preflight(ctx context.Context, c *podman.Client, name string, volumes []string) error {
	exists, err := c.ContainerExists(ctx, name)
	if err != nil {
		return err
	}
	if exists {
		return fmt.Errorf("container %q %w: choose another name with --name", name, ErrConflict)
	}
	for _, v := range volumes {
		exists, err := c.VolumeExists(ctx, v)
		if err != nil {
			return err
		}
		if exists {
			return fmt.Errorf("volume %q %w: remove it or restore elsewhere", v, ErrConflict)
		}
	}
	return nil
}

// checkBaseImage makes sure the restore will find the image the container
// was created from. podman looks it up by ID and, failing that, pulls it by
// name; a same-named but different image would only fail deep inside
// podman with a puzzling message.
func checkBaseImage(ctx context.Context, c *podman.Client, img *Image, logw io.Writer) error {
	id, name := img.Config.RootfsImageID(), img.Config.RootfsImageName()
	if id == "" {
		return nil
	}
	if _, err := c.InspectImage(ctx, id); err == nil {
		return nil
	} else if !errors.Is(err, podman.ErrNotFound) {
		return err
	}
	if name == "" {
		return fmt.Errorf("%w: image %s is not on this host and the checkpoint names none to pull", ErrBaseImage, podman.ShortID(id))
	}
	have, err := c.InspectImage(ctx, name)
	if errors.Is(err, podman.ErrNotFound) {
		fmt.Fprintf(logw, "Base image %s is not on this host; podman will pull it\n", name)
		return nil
	}
	if err != nil {
		return err
	}
	hint := name
	if d := img.Manifest.Annotations[ckpt.AnnBaseDigest]; d != "" {
		hint = fmt.Sprintf("%s (digest %s)", name, d)
	}
	return fmt.Errorf("%w: %s here is image %s, the checkpoint was made from image %s; make the source's %s available on this host (podman pull, or podman save/load)",
		ErrBaseImage, name, podman.ShortID(have.ID), podman.ShortID(id), hint)
}

// cleanup removes what a failed restore left: podman 4.3.1 can leave the
// new container in state Created, and restored volumes behind.
func cleanup(ctx context.Context, c *podman.Client, name string, volumes []string, logw io.Writer) error {
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
	return errors.Join(errs...)
}
