package restore

import (
	"context"
	"errors"
	"fmt"
	"time"

	podman "github.com/podman-migrate/podman-migrate/bindings"
)

// EndGrace bounds the wait for podman's answer once CRIU was ended (tests
// shorten it).
var EndGrace = time.Minute

// findBound bounds the inspect that finds the stuck container's ID: while
// the restore holds the container, podman's inspect waits for it.
var findBound = 10 * time.Second

// ErrLeftOnHost is wrapped when a stuck restore on another machine still
// holds the container: removing it would wait for the restore.
var ErrLeftOnHost = errors.New("the restore still holds the container")

type restoreAnswer struct {
	id  string
	err error
}

// awaitRestore runs call (podman's restore) within timeout (0: no bound).
// When it runs out, the restore's CRIU is ended if the service is on this
// machine, podman's answer is awaited a little, and the error wraps
// podman.ErrCRIUStuck; the caller's cleanup then removes the half-made
// container.
func awaitRestore(ctx context.Context, c podman.Target, name string, timeout time.Duration, call func(context.Context) (string, error)) (string, error) {
	rctx := context.WithoutCancel(ctx)
	if timeout <= 0 {
		return call(rctx)
	}
	rctx, hangUp := context.WithCancel(rctx)
	answer := make(chan restoreAnswer, 1)
	go func() {
		id, err := call(rctx)
		answer <- restoreAnswer{id, err}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case a := <-answer:
		hangUp()
		return a.id, a.err
	case <-t.C:
	}
	defer hangUp()
	stuck := func(format string, args ...any) error {
		return podman.StuckError(fmt.Sprintf("restoring container %q", name), timeout, fmt.Sprintf(format, args...))
	}
	id, err := stuckID(ctx, c, name)
	var pids []int
	if err == nil {
		pids, err = c.EndStuckCRIU(id, "restore")
	}
	if errors.Is(err, podman.ErrRemote) {
		if id == "" {
			// Its conmon knows the ID; inspect would wait for the restore.
			id = fmt.Sprintf(`$(pgrep -a conmon | sed -n 's/.* -c \([0-9a-f]*\) .* -n %s .*--restore.*/\1/p')`, name)
		}
		return "", fmt.Errorf("%w (%w)", stuck("the podman service is on another machine: end CRIU there with `%s`, then remove the half-made container with `podman rm -f %s`",
			podman.EndStuckCRIUCommand(id, "restore"), name), ErrLeftOnHost)
	}
	ended := podman.DescribeEnded("restore", pids, err)
	if id == "" {
		ended = fmt.Sprintf("could not find the container's ID to end its CRIU (%v)", err)
	}
	grace := time.NewTimer(EndGrace)
	defer grace.Stop()
	select {
	case a := <-answer:
		if a.err == nil {
			return a.id, nil // it finished as it was ended
		}
		return "", stuck("%s; podman then answered: %v", ended, a.err)
	case <-grace.C:
		return "", stuck("%s, and podman had not answered %s later", ended, EndGrace)
	}
}

// stuckID finds the ID of the container a restore creates under name:
// by inspect, or, as that waits while the restore holds the container,
// from its conmon on this machine.
func stuckID(ctx context.Context, c podman.Target, name string) (string, error) {
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), findBound)
	defer cancel()
	ctr, err := c.InspectContainer(ictx, name)
	if err == nil {
		return ctr.ID, nil
	}
	id, perr := c.RestoringID(name)
	if perr != nil {
		if errors.Is(perr, podman.ErrRemote) {
			return "", perr
		}
		return "", fmt.Errorf("inspecting %q: %w; %w", name, err, perr)
	}
	return id, nil
}
