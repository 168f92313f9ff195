package podman

import (
	"context"
	"io"
)

// The small interfaces push, pull and move talk to podman through: *Client
// implements them all, and internal/podmantest.Fake does too, so the
// orchestration is tested without a podman service.

// Inspector reads what the service knows, changing nothing.
type Inspector interface {
	Info(ctx context.Context) (*Info, error)
	InspectContainer(ctx context.Context, nameOrID string) (*Container, error)
	ContainerExists(ctx context.Context, nameOrID string) (bool, error)
	InspectImage(ctx context.Context, nameOrID string) (*Image, error)
	InspectNetwork(ctx context.Context, name string) (*Network, error)
	VolumeExists(ctx context.Context, name string) (bool, error)
	MemoryUsage(ctx context.Context, nameOrID string) (uint64, error)
	CRIUVersion(ctx context.Context) string
}

// Checkpointer checkpoints a container into an archive, and restores it in
// place from the checkpoint it kept.
type Checkpointer interface {
	Checkpoint(ctx context.Context, nameOrID string, o CheckpointOptions) (io.ReadCloser, error)
	RestoreKept(ctx context.Context, nameOrID string, o CheckpointOptions) error
	SaveImage(ctx context.Context, nameOrID string) (io.ReadCloser, error)
}

// Restorer restores an archive as a new container, and loads and names
// the base image it needs (fetched by pull itself, with its own transfer
// settings).
type Restorer interface {
	RestoreImport(ctx context.Context, archive io.Reader, o RestoreOptions) (string, error)
	LoadImage(ctx context.Context, archive io.Reader) ([]string, error)
	TagImage(ctx context.Context, nameOrID, repo, tag string) error
}

// Remover removes what a failed restore left.
type Remover interface {
	RemoveContainer(ctx context.Context, nameOrID string) error
	RemoveVolume(ctx context.Context, name string) error
	RemoveImage(ctx context.Context, nameOrID string) error
}

// Host reaches the service's machine itself: its processes and file
// system. Each method fails with ErrRemote when the service is elsewhere.
type Host interface {
	ServicePID() (int, error)
	// ServiceRoot is the service's root directory seen from here: paths
	// as podman and the runtime see them are looked up, or written, below
	// it.
	ServiceRoot() (string, error)
	EndStuckCRIU(ctrID, op string) ([]int, error)
	RestoringID(name string) (string, error)
	// Address is the service's URI, for messages.
	Address() string
}

// Source is the podman a container is checkpointed on.
type Source interface {
	Inspector
	Checkpointer
	Host
}

// Target is the podman a checkpoint is restored on.
type Target interface {
	Inspector
	Restorer
	Remover
	Host
}

// PodSource is the podman a pod is checkpointed on: its members are
// frozen through their cgroups before the first is dumped.
type PodSource interface {
	Source
	InspectPod(ctx context.Context, nameOrID string) (*Pod, error)
	PodExists(ctx context.Context, nameOrID string) (bool, error)
	FreezeContainer(ctx context.Context, ctr *Container, frozen bool) error
	KillContainer(ctx context.Context, nameOrID string) error
	// DumpErrors are the error lines of CRIU's last dump of the
	// container, nil when unknown.
	DumpErrors(ctx context.Context, nameOrID string) []string
	TCPConnections(ctr *Container) ([]TCPConn, string, error)
}

// PodTarget is the podman a pod is made again on.
type PodTarget interface {
	Target
	PodExists(ctx context.Context, nameOrID string) (bool, error)
	CreatePod(ctx context.Context, spec PodSpec) (string, error)
	StartPod(ctx context.Context, nameOrID string) error
	RemovePod(ctx context.Context, nameOrID string) error
}

// Address is the service's URI.
func (c *Client) Address() string { return c.URI }

var (
	_ Source    = (*Client)(nil)
	_ Target    = (*Client)(nil)
	_ PodSource = (*Client)(nil)
	_ PodTarget = (*Client)(nil)
)
