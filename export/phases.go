package export

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/containers/image/v5/types"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/dump"
	"github.com/podman-migrate/podman-migrate/internal/fault"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
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
// A container of group (names or IDs, a group's push) may join the network
// namespace of another there.
func InspectRunning(ctx context.Context, c podman.Source, name string, group ...string) (*podman.Container, error) {
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
	if err := checkDependencies(ctx, c, ctr, group); err != nil {
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
func checkDependencies(ctx context.Context, c podman.Source, ctr *podman.Container, group []string) error {
	var names []string
	for _, id := range ctr.Dependencies {
		dep, err := c.InspectContainer(ctx, id)
		if err != nil {
			return fmt.Errorf("inspecting %q's dependency %s: %w", ctr.Name, ckpt.ShortID(id), err)
		}
		if dep.IsInfra && dep.Pod != "" && dep.Pod == ctr.Pod {
			continue
		}
		if slices.Contains(group, dep.Name) || slices.Contains(group, dep.ID) {
			if err := joinsGroupNamespaces(ctr, dep); err != nil {
				return err
			}
			continue
		}
		names = append(names, dep.Name)
	}
	if len(names) == 0 {
		return nil
	}
	return fault.Hinted(fmt.Errorf("%w: %q needs %s (it joins their namespaces, or --requires them)", ErrDependency, ctr.Name, quoteAll(names)),
		fmt.Sprintf("push or move them together (`push %s %s DEST`); a pod's members, which share namespaces through the pod's infra container, move together with push POD", ctr.Name, strings.Join(names, " ")))
}

// joinsGroupNamespaces accepts a member of a group that needs dep only
// for namespaces a group can move (ckpt.GroupNamespaces): runc hands
// CRIU a joined network or PID namespace as external, and asks it to
// join the path of a joined IPC or UTS namespace, so each is taken from
// the restored peer at restore. A dependency for anything else
// (--requires, --cgroupns or --userns container:X) is refused.
func joinsGroupNamespaces(ctr, dep *podman.Container) error {
	var joined []string
	for ns, id := range ctr.Peers() {
		if id != dep.ID {
			continue
		}
		if !slices.Contains(ckpt.GroupNamespaces, ns) {
			return fault.Hinted(fmt.Errorf("%w: %q joins the %s namespace of %q, which a group cannot move", ErrDependency, ctr.Name, ns, dep.Name),
				"share it through a pod instead (podman pod create --share ...), whose members move together with push POD")
		}
		joined = append(joined, ns)
	}
	if len(joined) > 0 {
		return nil
	}
	hc := ctr.HostConfig
	return fault.Hinted(fmt.Errorf("%w: %q needs %q (--requires, or a namespace other than network, ipc, pid, uts: network %q, ipc %q, pid %q, uts %q), and only joined namespaces move with a group", ErrDependency, ctr.Name, dep.Name, hc.NetworkMode, hc.IpcMode, hc.PidMode, hc.UTSMode),
		"push them one by one without the dependency, or put them in a pod, whose members move together with push POD")
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
		Joined: o.Joined, TmpDir: transfer.StagingDir(o.TmpDir),
	}
}
