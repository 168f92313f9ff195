package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/containers/image/v5/types"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/dump"
	"github.com/podman-migrate/podman-migrate/internal/fault"
)

// Source is what a push learns of the container and its host before the
// checkpoint, which costs no downtime.
type Source struct {
	Container  *podman.Container
	Info       *podman.Info
	BaseDigest string // the base image's repo digest, "" when unknown
	// Known are annotations settled before the checkpoint: CRIU's version,
	// the bind mounts' kinds, the --include-base copy.
	Known map[string]string
}

// InspectRunning finds the running container name.
func InspectRunning(ctx context.Context, c podman.Source, name string) (*podman.Container, error) {
	ctr, err := c.InspectContainer(ctx, name)
	if errors.Is(err, podman.ErrNotFound) {
		return nil, fmt.Errorf("%w %q on %s: check `podman ps -a` on that host", ErrNoContainer, name, c.Address())
	}
	if err != nil {
		return nil, err
	}
	if !ctr.State.Running {
		return nil, fmt.Errorf("%w: %q is %s; only a running container can be migrated", ErrNotRunning, ctr.Name, ctr.State.Status)
	}
	if err := checkDependencies(ctx, c, ctr); err != nil {
		return nil, err
	}
	return ctr, nil
}

// ErrDependency is wrapped when the container to push needs another one
// (joins its namespaces, or --requires it) that is not its pod's infra.
var ErrDependency = fault.New(fault.Input, "depends on another container")

// checkDependencies refuses, before any downtime, a container that needs
// another, naming it: podman will not export its checkpoint ("cannot
// export checkpoints of containers with dependencies"), and on another host
// the other would not be there. A pod member's infra container is the
// exception: the pod is moved whole (push POD).
func checkDependencies(ctx context.Context, c podman.Source, ctr *podman.Container) error {
	var names []string
	for _, id := range ctr.Dependencies {
		dep, err := c.InspectContainer(ctx, id)
		if err != nil {
			return fmt.Errorf("inspecting %q's dependency %s: %w", ctr.Name, ckpt.ShortID(id), err)
		}
		if dep.IsInfra && dep.Pod != "" && dep.Pod == ctr.Pod {
			continue
		}
		names = append(names, dep.Name)
	}
	if len(names) == 0 {
		return nil
	}
	return fault.Hinted(fmt.Errorf("%w: %q needs %s (it joins their namespaces, or --requires them)", ErrDependency, ctr.Name, quoteAll(names)),
		"podman cannot export one without the other, and moving such containers together is not supported yet; a pod's members, which share namespaces through the pod's infra container, move together with push POD")
}

func quoteAll(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = strconv.Quote(n)
	}
	return strings.Join(q, ", ")
}

// Describe learns what the image will record of ctr's host. podman's info
// takes most of a second on Debian's 4.3.1 (it asks dpkg which package
// each helper came from): push and move run this while the checkpoint is
// taken.
func Describe(ctx context.Context, c podman.Source, ctr *podman.Container) (*Source, error) {
	info, err := c.Info(ctx)
	if err != nil {
		return nil, err
	}
	s := &Source{Container: ctr, Info: info, Known: map[string]string{}}
	if img, err := c.InspectImage(ctx, ctr.Image); err == nil {
		s.BaseDigest = img.Digest
	}
	if v := c.CRIUVersion(ctx); v != "" {
		s.Known[ckpt.AnnCriuVersion] = v
	}
	if kinds := bindKinds(c, ctr); kinds != "" {
		s.Known[ckpt.AnnBindKinds] = kinds
	}
	return s, nil
}

// Convert reads podman's checkpoint archive and writes it into dest as a
// checkpoint image, annotated with what s and o record, and closes dest.
func Convert(ctx context.Context, archive io.Reader, dest types.ImageDestination, s *Source, o PushOptions, created time.Time) (*ckpt.Built, error) {
	var rewrite map[string]func([]byte) ([]byte, error)
	if !o.NoCRIOAnnotations {
		rewrite = ckpt.ToCRIO()
	}
	return build(ctx, archive, dest, ckpt.BuildOptions{
		Rewrite:     rewrite,
		Compression: o.Compression,
		Level:       o.CompressionLevel,
		Arch:        s.Info.Host.Arch,
		Created:     created,
		Annotate:    Annotator(s, o, created),
	})
}

// Annotator returns the annotations of a checkpoint of s, given its
// neutralised config.dump: what s and o record.
func Annotator(s *Source, o PushOptions, created time.Time) func(cfg *dump.Config) (map[string]string, error) {
	return func(cfg *dump.Config) (map[string]string, error) {
		a := annotations(cfg, s.Container, s.Info, s.BaseDigest, created, o)
		for k, v := range s.Known {
			a[k] = v
		}
		return a, nil
	}
}

// CheckpointOptions are podman's options for o's checkpoint.
func CheckpointOptions(o PushOptions) podman.CheckpointOptions {
	return podman.CheckpointOptions{
		LeaveRunning: o.LeaveRunning, TCPEstablished: o.TCPEstablished,
		FileLocks: o.FileLocks, IgnoreRootfs: o.IgnoreRootfs,
	}
}
