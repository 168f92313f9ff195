package main

import (
	"errors"
	"os"
	"syscall"

	"github.com/podman-migrate/podman-migrate/internal/fault"
)

// Exit codes, documented in the README and in --help.
const (
	ExitOK       = 0
	ExitFailure  = 1
	ExitUsage    = 2
	ExitPodman   = 3
	ExitRegistry = 4
	ExitInput    = 5
	// ExitInterrupted follows the shell's 128+SIGINT.
	ExitInterrupted = 130
)

// exitCode is the code of err's kind: the packages decide the kind where
// the error is born (fault.KindOf picks the highest one err holds).
func exitCode(err error) int {
	switch fault.KindOf(err) {
	case fault.Usage:
		return ExitUsage
	case fault.Podman:
		return ExitPodman
	case fault.Registry:
		return ExitRegistry
	case fault.Input:
		return ExitInput
	case fault.Interrupted:
		return ExitInterrupted
	}
	return ExitFailure
}

// hintFor is the fix printed after the message: the one err carries, else
// one for the standard library's errors that say the fault is this
// machine's (those are not ours to give a hint where they are born).
func hintFor(err error) string {
	if h := fault.HintOf(err); h != "" {
		return h
	}
	switch {
	case errors.Is(err, syscall.ENOSPC):
		return "the staging directory ran out of space; point --tmpdir (or TMPDIR) at a larger file system"
	case errors.Is(err, os.ErrPermission):
		return "podman-migrate needs access to the podman socket and, for checkpoints, a rootful podman"
	}
	return ""
}

// Kind makes a command line podman-migrate cannot run a usage error (exit 2).
func (usageError) Kind() fault.Kind { return fault.Usage }
