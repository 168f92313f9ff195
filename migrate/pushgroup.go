package migrate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/export"
	"github.com/podman-migrate/podman-migrate/internal/fault"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
)

// A group is containers that no pod holds but that join one another's
// namespaces (podman run --network, --ipc, --pid, --uts container:X).
// podman will not export the checkpoint of such a container ("cannot
// export checkpoints of containers with dependencies", said after it
// dumped it), and its restore
// in place takes the other's namespace from a path naming the other's old
// process. So a group moves as one index, as a pod does, with these
// differences:
//   - every member is dumped leaving it running, frozen, so that a failure
//     only thaws them; podman's refusal of the joined member's export comes
//     after the dump, and its archive is made from what podman kept;
//   - they stay frozen until the image is out (or, in a move, restored on
//     the target), and are then killed before they thaw: a member never
//     runs on both hosts;
//   - the target restores them in order, each joined member into the
//     namespaces of those it joins there.

// ErrGroup is wrapped when the containers named do not make a group.
var ErrGroup = fault.New(fault.Input, "not a group of containers joined to one another")

// PushGroup checkpoints the containers named as one unit and publishes
// one image index (a pod's, whose record says it is a group). The members
// end stopped on this host, or running with o.LeaveRunning; any failure
// thaws them, and they run on.
func PushGroup(ctx context.Context, c podman.PodSource, o export.PushOptions, names []string) (*PodPushResult, error) {
	pp, err := pushGroup(ctx, c, o, names)
	if err != nil {
		return nil, err
	}
	if err := pp.release(ctx, !o.LeaveRunning); err != nil {
		return nil, err
	}
	pp.res.Seconds["total"] = since(pp.began)
	return pp.res, nil
}

// pushGroup pushes the group and leaves its members frozen, for release.
func pushGroup(ctx context.Context, c podman.PodSource, o export.PushOptions, names []string) (*podPushing, error) {
	pp, err := retryInFlight(ctx, o, func() (*podPushing, error) {
		pp := &podPushing{c: c, o: o, log: logOrDiscard(o.Log), began: time.Now(), group: names,
			res: &PodPushResult{Seconds: map[string]float64{}}}
		return pp, pp.run(ctx, "push group", pp.inspectGroup)
	})
	if err != nil {
		return nil, err
	}
	return pp, nil
}

// exitWait bounds the wait for podman to clean up a killed member: it
// is "stopped" from the kill until conmon's cleanup makes it "exited".
// A variable for the tests.
var exitWait = 30 * time.Second

// waitExited waits until a killed member's process is gone, and for a
// while until podman cleaned it up; only a member still running is an
// error.
func (pp *podPushing) waitExited(ctx context.Context, ctr *podman.Container) error {
	deadline := time.Now().Add(exitWait)
	for {
		c, err := pp.c.InspectContainer(ctx, ctr.ID)
		switch {
		case errors.Is(err, podman.ErrNotFound):
			return nil
		case err != nil:
			return fmt.Errorf("checking that member %q stopped: %w", ctr.Name, err)
		case c.State.Status == "exited", !c.State.Running && time.Now().After(deadline):
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("member %q did not stop: still %s", ctr.Name, c.State.Status)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("checking that member %q stopped: %w", ctr.Name, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// inspectGroup reads every member, refuses a set that does not hold all
// the containers its members join (naming the missing one), and orders
// the members so that each follows the one it joins.
func (pp *podPushing) inspectGroup(ctx context.Context) error {
	if _, err := pp.c.ServicePID(); err != nil {
		return fault.Wrap(fault.Usage, fmt.Errorf("pushing a group freezes its members through their cgroups and reads the checkpoint podman keeps, which needs the podman service on this machine (%s): %w", pp.c.Address(), err))
	}
	var err error
	if pp.dest, err = transfer.ParseReference(pp.o.Dest); err != nil {
		return err
	}
	byID := map[string]*pushing{}
	var all []*pushing
	for _, name := range pp.group {
		mo := pp.o
		mo.Container, mo.NoStream, mo.Group, mo.LeaveRunning = name, true, pp.group, true
		m := &pushing{c: pp.c, o: mo, log: pp.log, began: pp.began, shared: true,
			res: &export.PushResult{Seconds: map[string]float64{}, Bytes: map[string]int64{}}}
		if err := m.inspect(ctx); err != nil {
			return fmt.Errorf("member %q: %w", name, err)
		}
		ctr := m.src.Container
		if ctr.Pod != "" {
			return fmt.Errorf("%w: %q is a member of pod %s; push the pod instead", ErrGroup, ctr.Name, ctr.Pod)
		}
		if byID[ctr.ID] != nil {
			return fault.Wrap(fault.Usage, fmt.Errorf("%q is named twice", name))
		}
		m.o.Joined = len(ctr.Peers()) > 0
		byID[ctr.ID] = m
		all = append(all, m)
	}
	// Each member after those it joins; among equals, by name.
	slices.SortFunc(all, func(a, b *pushing) int { return strings.Compare(a.src.Container.Name, b.src.Container.Name) })
	placed := map[string]bool{}
	joinsPlaced := func(ctr *podman.Container) bool {
		for _, id := range ctr.Peers() {
			if !placed[id] {
				return false
			}
		}
		return true
	}
	for len(pp.members) < len(all) {
		n := len(pp.members)
		for _, m := range all {
			if id := m.src.Container.ID; !placed[id] && joinsPlaced(m.src.Container) {
				placed[id] = true
				pp.members = append(pp.members, m)
			}
		}
		if len(pp.members) == n {
			return fmt.Errorf("%w: the members join one another in a circle", ErrGroup)
		}
	}
	roots := 0
	for i, m := range pp.members {
		m.tag = fmt.Sprintf("member/%d", i)
		if !m.o.Joined {
			roots++
		}
	}
	if roots != 1 {
		return fault.Hinted(fmt.Errorf("%w: %d of them join no other's namespaces; a group is one container and those that join its namespaces, or one another's", ErrGroup, roots),
			"push each on its own")
	}
	pp.res.Pod = pp.members[0].src.Container.Name
	return nil
}

// release ends a group's push: the members, still frozen, are killed
// before they thaw (stop), or only thawed.
func (pp *podPushing) release(ctx context.Context, stop bool) error {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackBound)
	defer cancel()
	var errs []error
	if stop {
		fmt.Fprintf(pp.log, "Stopping the members of %s on this host\n", pp.what())
		// Last first, each thawed once killed (SIGKILL pending, it runs
		// none of its own code again): a member whose PID namespace others
		// join dies after them. Measured on podman 4.3.1 (cgroup v1):
		// killed first, such an owner never exited while the others
		// stayed frozen, and podman's kill timed out.
		for i := len(pp.frozen) - 1; i >= 0; i-- {
			ctr := pp.frozen[i]
			if err := pp.c.KillContainer(rctx, ctr.ID); err != nil {
				errs = append(errs, fmt.Errorf("killing member %q: %w", ctr.Name, err))
				continue
			}
			if err := pp.c.FreezeContainer(rctx, ctr, false); err != nil {
				errs = append(errs, fmt.Errorf("thawing killed member %q: %w", ctr.Name, err))
			}
		}
	}
	killed := pp.frozen
	if err := pp.thaw(rctx); err != nil {
		errs = append(errs, err)
	}
	if stop && len(errs) == 0 {
		for _, ctr := range killed {
			if err := pp.waitExited(rctx, ctr); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		how := "thawing them"
		if stop {
			how = "stopping them (killed while frozen, then thawed)"
		}
		return fmt.Errorf("the image of %s is out, but %s failed: %w; check `podman ps` and stop what still runs", pp.what(), how, err)
	}
	return nil
}
