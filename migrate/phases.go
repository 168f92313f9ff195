// Package migrate is the orchestration of podman-migrate: Push, Pull, Move
// and Resume, each a list of named phases run in order, with one deferred
// rollback per operation, so that a failure at any phase has exactly one
// place that restores the source. It talks to podman through the small
// interfaces of bindings (podman.Source, podman.Target); the checkpoint to
// image conversion is export's, the image to restore is import's.
package migrate

import (
	"context"
	"math"
	"time"
)

// phase is one step of an operation.
type phase struct {
	name string
	run  func(context.Context) error
}

// beforePhase, when set (by tests), runs before each phase and fails it
// with what it returns: every failure point is reachable without podman.
var beforePhase func(op, name string) error

// runPhases runs the phases of op in order and stops at the first error.
func runPhases(ctx context.Context, op string, phases []phase) error {
	for _, p := range phases {
		if beforePhase != nil {
			if err := beforePhase(op, p.name); err != nil {
				return err
			}
		}
		if err := p.run(ctx); err != nil {
			return err
		}
	}
	return nil
}

// runOp runs the phases of op and, when one fails, its one way back:
// undo sees the error and returns what op reports.
func runOp(ctx context.Context, op string, phases []phase, undo func(error) error) (err error) {
	defer func() {
		if err != nil {
			err = undo(err)
		}
	}()
	return runPhases(ctx, op, phases)
}

// since is seconds elapsed, to the millisecond (no float noise in JSON).
func since(t time.Time) float64 { return math.Round(time.Since(t).Seconds()*1000) / 1000 }
