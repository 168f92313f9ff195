package migrate

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/internal/fault"
)

// groupUnits splits the containers to move into what moves as one: a
// container alone, or a group (its names joined by spaces, which no
// podman name holds): containers named together where one joins
// another's namespaces. A container joining one not named stays alone,
// and its move refuses it, naming the other.
func groupUnits(ctx context.Context, from podman.Source, names []string) ([]string, error) {
	if len(names) < 2 {
		return names, nil
	}
	if _, ok := from.(podman.PodSource); !ok {
		return names, nil
	}
	byID := map[string]string{}
	peers := map[string]map[string]string{}
	for _, n := range names {
		ctr, err := from.InspectContainer(ctx, n)
		if errors.Is(err, podman.ErrNotFound) {
			continue // its own move says so
		}
		if err != nil {
			return nil, err
		}
		byID[ctr.ID] = n
		peers[n] = ctr.Peers()
	}
	// Union of the names each joins: a unit is named by its first name.
	unit := map[string]string{}
	var find func(n string) string
	find = func(n string) string {
		if u, ok := unit[n]; ok && u != n {
			unit[n] = find(u)
			return unit[n]
		}
		return n
	}
	for _, n := range names {
		for _, id := range peers[n] {
			if other, ok := byID[id]; ok {
				a, b := find(n), find(other)
				if slices.Index(names, b) < slices.Index(names, a) {
					a, b = b, a
				}
				unit[b] = a
			}
		}
	}
	var units []string
	members := map[string][]string{}
	for _, n := range names {
		r := find(n)
		if members[r] == nil {
			units = append(units, r)
		}
		if !slices.Contains(members[r], n) {
			members[r] = append(members[r], n)
		}
	}
	for i, u := range units {
		units[i] = strings.Join(members[u], " ")
	}
	return units, nil
}

// moveGroup moves a group as its push and the pull of its index do,
// through the --via registry or a staging layout here. The members stay
// frozen on the source until they run on the target, and are then
// killed; if the target fails, they are thawed and run on.
func moveGroup(ctx context.Context, from podman.PodSource, to podman.Target, names []string, o MoveOptions) MoveResult {
	label := strings.Join(names, ", ")
	m := &moving{from: from, to: to, o: o, r: &MoveResult{Container: label},
		log: &prefixWriter{w: logOrDiscard(o.Log), prefix: names[0] + ": "}}
	m.push = o.Push
	m.push.Container, m.push.LeaveRunning, m.push.Log = names[0], false, m.log
	m.push.Transfer.Report = nil
	pt, ok := to.(podman.PodTarget)
	if !ok {
		m.r.Err = fault.OnSide(fault.Target, fmt.Errorf("%q is a group, and the target cannot take one", label))
		return *m.r
	}
	dest, cleanup, err := m.indexDest("group")
	if err != nil {
		m.r.Err = err
		return *m.r
	}
	defer cleanup()
	var held *podPushing
	m.r.Err = runOp(ctx, "move group", []phase{
		{"push", func(ctx context.Context) error {
			po := m.push
			po.Dest = dest
			pp, err := pushGroup(ctx, from, po, names)
			if err != nil {
				return fault.OnSide(fault.Source, fmt.Errorf("pushing: %w", err))
			}
			held, m.r.PodPushed = pp, pp.res
			if o.Via != "" {
				m.r.Ref, m.r.Digest = pp.res.Reference, pp.res.Digest
			}
			return nil
		}},
		{"pull", func(ctx context.Context) error {
			res, err := m.pullIndex(ctx, pt, dest, "group")
			if err != nil {
				return err
			}
			var ids []string
			for _, mem := range res.Members {
				ids = append(ids, mem.ID)
			}
			m.r.ID = strings.Join(ids, ",")
			return nil
		}},
		{"stop", func(ctx context.Context) error {
			return fault.OnSide(fault.Source, held.release(ctx, true))
		}},
	}, func(err error) error {
		if held == nil || m.r.PodPulled != nil {
			return err // the push thawed them itself, or they run on the target
		}
		fmt.Fprintf(m.log, "Restore on the target failed; thawing group %s on the source host\n", label)
		me := &MoveError{Container: label, Err: err, Group: true}
		me.ResumeErr = held.release(ctx, false)
		me.Resumed = me.ResumeErr == nil
		return me
	})
	return *m.r
}
