package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/export"
)

func TestSecondInterrupt(t *testing.T) {
	sigs := make(chan os.Signal, 2)
	ctx, stop := watchInterrupts(context.Background(), sigs)
	defer stop()
	again := secondInterrupt(ctx)
	if again == nil {
		t.Fatal("no second-interrupt channel in the context")
	}
	sigs <- os.Interrupt
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the first interrupt did not cancel the context")
	}
	select {
	case <-again:
		t.Fatal("the first interrupt counted as the second")
	default:
	}
	sigs <- os.Interrupt
	select {
	case <-again:
	case <-time.After(10 * time.Second):
		t.Fatal("the second interrupt was not seen")
	}
	if secondInterrupt(context.Background()) != nil {
		t.Error("a context without interrupts has a second-interrupt channel")
	}
}

func TestCRIUStuckExitsThree(t *testing.T) {
	err := fmt.Errorf("pushing %q: %w", "web", &export.PushError{Container: "web", NotStopped: true,
		Err: &podman.Error{Op: "checkpointing container \"web\"", Err: fmt.Errorf("%w: no answer in 10m0s", podman.ErrCRIUStuck)}})
	if code := exitCode(err); code != ExitPodman {
		t.Errorf("exit code %d, want %d", code, ExitPodman)
	}
	if hint := hintFor(err); hint != podman.StuckHint {
		t.Errorf("hint %q, want StuckHint", hint)
	}
}

func TestTimeoutFlagsInHelp(t *testing.T) {
	for cmd, flags := range map[string][]string{
		"push": {"--checkpoint-timeout duration", "(default 10m0s)"},
		"move": {"--checkpoint-timeout duration", "--restore-timeout duration"},
		"pull": {"--restore-timeout duration", "(default 10m0s)"},
	} {
		_, out, _ := runCLI(t, cmd, "--help")
		for _, f := range flags {
			if !strings.Contains(out, f) {
				t.Errorf("%s --help lacks %q", cmd, f)
			}
		}
	}
}
