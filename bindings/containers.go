package podman

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Container is what podman-migrate needs of a container's inspect data.
type Container struct {
	ID         string `json:"Id"`
	Name       string `json:"Name"`
	Image      string `json:"Image"`     // image ID
	ImageName  string `json:"ImageName"` // image name as resolved
	OCIRuntime string `json:"OCIRuntime"`
	Pod        string `json:"Pod"` // the pod's ID, "" for none
	IsInfra    bool   `json:"IsInfra"`
	// Dependencies are the containers this one needs (whose namespaces
	// it joins, --requires), by ID: a pod's infra container for a member.
	Dependencies []string `json:"Dependencies"`
	// StaticDir is the container's directory in podman's storage
	// (userdata), where a checkpoint is kept.
	StaticDir  string `json:"StaticDir"`
	HostConfig struct {
		// "container:ID" when it joins another's namespace.
		NetworkMode string `json:"NetworkMode"`
		IpcMode     string `json:"IpcMode"`
		PidMode     string `json:"PidMode"`
		UTSMode     string `json:"UTSMode"`
	} `json:"HostConfig"`
	State struct {
		Status     string `json:"Status"`
		Running    bool   `json:"Running"`
		CgroupPath string `json:"CgroupPath"`
		Pid        int    `json:"Pid"`
	} `json:"State"`
	Mounts []struct {
		Type        string `json:"Type"`
		Source      string `json:"Source"`
		Destination string `json:"Destination"`
	} `json:"Mounts"`
}

// InspectContainer returns a container's inspect data; the error wraps
// ErrNotFound when there is no such container.
func (c *Client) InspectContainer(ctx context.Context, nameOrID string) (*Container, error) {
	var ctr Container
	op := fmt.Sprintf("inspecting container %q", nameOrID)
	if err := c.doJSON(ctx, op, http.MethodGet, "/containers/%s/json", nil, &ctr, nameOrID); err != nil {
		return nil, err
	}
	return &ctr, nil
}

// ContainerExists reports whether a container of that name or ID exists.
func (c *Client) ContainerExists(ctx context.Context, nameOrID string) (bool, error) {
	_, err := c.InspectContainer(ctx, nameOrID)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// CheckpointOptions are the checkpoint flags podman-migrate passes on.
type CheckpointOptions struct {
	LeaveRunning   bool
	TCPEstablished bool
	FileLocks      bool
	IgnoreRootfs   bool
	// Joined says the container joins another's namespaces: podman
	// dumps it, then refuses the export, so Checkpoint assembles the
	// archive from what podman kept (LeaveRunning only; the service on
	// this machine). TmpDir holds its root-filesystem diff meanwhile.
	Joined bool
	TmpDir string
}

// Checkpoint checkpoints a container with export and keep, and returns the
// exported archive as a stream (an uncompressed tar). Keep leaves the
// checkpoint in the container's storage so RestoreKept can roll back.
func (c *Client) Checkpoint(ctx context.Context, nameOrID string, o CheckpointOptions) (io.ReadCloser, error) {
	q := url.Values{}
	q.Set("export", "true")
	q.Set("keep", "true")
	q.Set("leaveRunning", strconv.FormatBool(o.LeaveRunning))
	q.Set("tcpEstablished", strconv.FormatBool(o.TCPEstablished))
	q.Set("fileLocks", strconv.FormatBool(o.FileLocks))
	q.Set("ignoreRootFS", strconv.FormatBool(o.IgnoreRootfs))
	op := fmt.Sprintf("checkpointing container %q", nameOrID)
	if o.Joined && !o.LeaveRunning {
		return nil, &Error{Op: op, Err: errors.New("a container joined to another's namespace is checkpointed only with leave-running")}
	}
	resp, err := c.do(ctx, op, http.MethodPost, "/containers/%s/checkpoint", nil, q, nil, nameOrID)
	if err != nil {
		if o.Joined && strings.Contains(err.Error(), joinedRefusal) {
			return c.keptArchive(ctx, nameOrID, o)
		}
		return nil, err
	}
	return resp.Body, nil
}

// JoinedNamespace is the ID of the container whose namespace mode
// ("container:ID", as HostConfig's NetworkMode and the like say) names,
// "" when it is the container's own.
func JoinedNamespace(mode string) string {
	if id, ok := strings.CutPrefix(mode, "container:"); ok {
		return id
	}
	return ""
}

// Peers are the containers whose namespaces c joins (--network, --ipc,
// --pid, --uts container:X): each one's ID by namespace ("net", "ipc",
// "pid", "uts", as config.dump's *NsCtr keys name them).
func (c *Container) Peers() map[string]string {
	out := map[string]string{}
	hc := c.HostConfig
	for ns, mode := range map[string]string{"net": hc.NetworkMode, "ipc": hc.IpcMode, "pid": hc.PidMode, "uts": hc.UTSMode} {
		if id := JoinedNamespace(mode); id != "" {
			out[ns] = id
		}
	}
	return out
}

// KillContainer sends a container's processes SIGKILL. Sent while its
// cgroup is frozen, it ends them before they run again.
func (c *Client) KillContainer(ctx context.Context, nameOrID string) error {
	q := url.Values{"signal": {"KILL"}}
	return c.doJSON(ctx, fmt.Sprintf("killing container %q", nameOrID), http.MethodPost, "/containers/%s/kill", q, nil, nameOrID)
}

// RestoreKept restores a container on this host from the checkpoint a
// previous Checkpoint kept in its storage: the rollback after a failed push.
func (c *Client) RestoreKept(ctx context.Context, nameOrID string, o CheckpointOptions) error {
	q := url.Values{}
	q.Set("keep", "true")
	q.Set("tcpEstablished", strconv.FormatBool(o.TCPEstablished))
	q.Set("fileLocks", strconv.FormatBool(o.FileLocks))
	q.Set("ignoreRootFS", strconv.FormatBool(o.IgnoreRootfs))
	op := fmt.Sprintf("restoring container %q from its kept checkpoint", nameOrID)
	return c.doJSON(ctx, op, http.MethodPost, "/containers/%s/restore", q, nil, nameOrID)
}

// RestoreOptions are the restore flags for an imported checkpoint.
type RestoreOptions struct {
	Name            string
	TCPEstablished  bool
	FileLocks       bool
	IgnoreStaticIP  bool
	IgnoreStaticMAC bool
	IgnoreRootfs    bool
	Publish         []string
	Pod             string
	// TCPClose restores connections closed (podman 5.7's tcpClose; sent
	// only when set, so older servers are not asked for it).
	TCPClose bool
}

// RestoreImport restores a new container from a checkpoint archive streamed
// as the request body, and returns the new container's ID.
func (c *Client) RestoreImport(ctx context.Context, archive io.Reader, o RestoreOptions) (string, error) {
	q := url.Values{}
	q.Set("import", "true")
	if o.Name != "" {
		q.Set("name", o.Name)
	}
	if o.Pod != "" {
		q.Set("pod", o.Pod)
	}
	q.Set("tcpEstablished", strconv.FormatBool(o.TCPEstablished))
	q.Set("fileLocks", strconv.FormatBool(o.FileLocks))
	q.Set("ignoreStaticIP", strconv.FormatBool(o.IgnoreStaticIP))
	q.Set("ignoreStaticMAC", strconv.FormatBool(o.IgnoreStaticMAC))
	q.Set("ignoreRootFS", strconv.FormatBool(o.IgnoreRootfs))
	if o.TCPClose {
		q.Set("tcpClose", "true")
	}
	if len(o.Publish) > 0 {
		// The server splits this one value on white space.
		q.Set("publishPorts", strings.Join(o.Publish, " "))
	}
	h := http.Header{}
	// Without it podman 4.3.1 answered "archive/tar: invalid tar header".
	h.Set("Content-Type", "application/x-tar")
	resp, err := c.doOnce(ctx, "restoring the imported checkpoint", http.MethodPost, "/containers/import/restore", archive, q, h)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var report struct {
		ID  string          `json:"Id"`
		Err json.RawMessage `json:"Err"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&report); err != nil {
		return "", &Error{Op: "restoring the imported checkpoint", Err: fmt.Errorf("decoding answer: %w", err)}
	}
	if report.ID == "" {
		return "", &Error{Op: "restoring the imported checkpoint", Err: errors.New("podman reported no container ID")}
	}
	return report.ID, nil
}

// RemoveContainer force-removes a container (and its anonymous volumes).
func (c *Client) RemoveContainer(ctx context.Context, nameOrID string) error {
	q := url.Values{}
	q.Set("force", "true")
	q.Set("v", "true")
	op := fmt.Sprintf("removing container %q", nameOrID)
	return c.doJSON(ctx, op, http.MethodDelete, "/containers/%s", q, nil, nameOrID)
}

// VolumeExists reports whether a named volume exists.
func (c *Client) VolumeExists(ctx context.Context, name string) (bool, error) {
	err := c.doJSON(ctx, fmt.Sprintf("inspecting volume %q", name), http.MethodGet, "/volumes/%s/json", nil, nil, name)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// RemoveVolume force-removes a named volume.
func (c *Client) RemoveVolume(ctx context.Context, name string) error {
	q := url.Values{}
	q.Set("force", "true")
	return c.doJSON(ctx, fmt.Sprintf("removing volume %q", name), http.MethodDelete, "/volumes/%s", q, nil, name)
}

// MemoryUsage returns the memory a running container uses now, in bytes:
// about what CRIU will write for it.
func (c *Client) MemoryUsage(ctx context.Context, nameOrID string) (uint64, error) {
	q := url.Values{}
	q.Set("containers", nameOrID)
	q.Set("stream", "false")
	var report struct {
		Error any `json:"Error"`
		Stats []struct {
			MemUsage uint64 `json:"MemUsage"`
		} `json:"Stats"`
	}
	op := fmt.Sprintf("reading the memory use of container %q", nameOrID)
	if err := c.doJSON(ctx, op, http.MethodGet, "/containers/stats", q, &report); err != nil {
		return 0, err
	}
	if len(report.Stats) == 0 {
		return 0, &Error{Op: op, Err: errors.New("podman reported no statistics")}
	}
	return report.Stats[0].MemUsage, nil
}
