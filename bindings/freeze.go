package podman

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// FreezeContainer freezes (frozen) or thaws a running container's
// processes through its cgroup's freezer, behind podman's back: podman
// still counts it running, so it can be checkpointed, and runc hands CRIU
// the cgroup, which CRIU dumps frozen as it is. podman's own pause would
// not do: podman 4 refuses to checkpoint a paused container. Measured on
// podman 4.3.1, runc 1.1.5, CRIU 4.2.1, cgroup v1: a frozen member of a
// pod checkpoints with --export, and restores running. So the members of a
// pod can all be stopped before the first is dumped.
//
// It needs the service on this machine (ErrRemote otherwise) and waits,
// within ctx, until the freezer reports the whole cgroup frozen.
func (c *Client) FreezeContainer(ctx context.Context, ctr *Container, frozen bool) error {
	root, err := c.ServiceRoot()
	if err != nil {
		return err
	}
	if ctr.State.CgroupPath == "" {
		return fmt.Errorf("container %s: podman reports no cgroup", ctr.Name)
	}
	f, err := freezerOf(filepath.Join(root, "sys", "fs", "cgroup"), ctr.State.CgroupPath)
	if err != nil && !frozen {
		return nil // the cgroup went with its processes (a dump ends them)
	}
	if err != nil {
		return fmt.Errorf("container %s: %w", ctr.Name, err)
	}
	if err := os.WriteFile(f.file, []byte(f.value(frozen)), 0); err != nil {
		if errors.Is(err, os.ErrNotExist) && !frozen {
			return nil // the cgroup went with its processes
		}
		return fmt.Errorf("container %s: writing %s: %w", ctr.Name, f.file, err)
	}
	for {
		done, err := f.settled(frozen)
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("container %s: waiting for its cgroup to freeze: %w", ctr.Name, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// freezer is a cgroup's freezer: cgroup v2's cgroup.freeze, or v1's
// freezer.state.
type freezer struct {
	file string
	v2   bool
}

func freezerOf(root, cgroup string) (*freezer, error) {
	if f := filepath.Join(root, cgroup, "cgroup.freeze"); exists(f) {
		return &freezer{file: f, v2: true}, nil
	}
	if f := filepath.Join(root, "freezer", cgroup, "freezer.state"); exists(f) {
		return &freezer{file: f}, nil
	}
	return nil, fmt.Errorf("no freezer for cgroup %s under %s", cgroup, root)
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func (f *freezer) value(frozen bool) string {
	switch {
	case f.v2 && frozen:
		return "1"
	case f.v2:
		return "0"
	case frozen:
		return "FROZEN"
	}
	return "THAWED"
}

// settled says whether the freezer reached the state asked for (v1 goes
// through FREEZING; v2 reports "frozen 1" in cgroup.events).
func (f *freezer) settled(frozen bool) (bool, error) {
	if f.v2 {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(f.file), "cgroup.events"))
		if errors.Is(err, os.ErrNotExist) && !frozen {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		want := "frozen 0"
		if frozen {
			want = "frozen 1"
		}
		for _, l := range strings.Split(string(b), "\n") {
			if l == want {
				return true, nil
			}
		}
		return false, nil
	}
	b, err := os.ReadFile(f.file)
	if errors.Is(err, os.ErrNotExist) && !frozen {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(b)) == f.value(frozen), nil
}
