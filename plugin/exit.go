package main

import (
	"errors"
	"os"
	"syscall"

	"github.com/containers/image/v5/signature"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/export"
	restore "github.com/podman-migrate/podman-migrate/import"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/kube"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
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

func exitCode(err error) int {
	var usage usageError
	var perr *podman.Error
	var terr *transfer.Error
	switch {
	case errors.As(err, &usage), errors.Is(err, podman.ErrNoConnection):
		return ExitUsage
	case errors.Is(err, ckpt.ErrBadArchive):
		return ExitPodman // podman's own export was not what it should be
	case errors.Is(err, podman.ErrCRIUStuck):
		return ExitPodman // podman never answered: CRIU hung
	case errors.Is(err, export.ErrNoContainer), errors.Is(err, export.ErrNotRunning),
		errors.Is(err, ckpt.ErrNotCheckpoint), errors.Is(err, tarsafe.ErrUnsafe),
		errors.Is(err, transfer.ErrBadReference), errors.Is(err, restore.ErrConflict),
		errors.Is(err, restore.ErrBaseImage), errors.Is(err, restore.ErrBlocked),
		errors.Is(err, restore.ErrBadMap), errors.Is(err, export.ErrIncludeBase), isPolicyRejection(err),
		errors.Is(err, export.ErrStagingTooSmall),
		errors.Is(err, kube.ErrNotRestorable), errors.Is(err, kube.ErrBadMap), errors.Is(err, kube.ErrBadName),
		errors.Is(err, transfer.ErrKey), errors.Is(err, transfer.ErrDigestMismatch),
		errors.Is(err, errNoImage):
		return ExitInput
	case errors.As(err, &terr):
		return ExitRegistry
	case errors.As(err, &perr):
		return ExitPodman
	}
	return ExitFailure
}

func hintFor(err error) string {
	var perr *podman.Error
	var terr *transfer.Error
	// An error that knows its fix (check's steps) says it itself.
	var hinted interface{ Hint() string }
	switch {
	case errors.As(err, &hinted) && hinted.Hint() != "":
		return hinted.Hint()
	case errors.Is(err, podman.ErrCRIUStuck):
		return podman.StuckHint
	case isPolicyRejection(err):
		return "the signature policy (policy.json) refused the image: sign it, or trust its registry in the policy"
	case errors.Is(err, transfer.ErrDigestMismatch):
		return "the image was altered in the registry or on the way; push it again"
	case errors.Is(err, tarsafe.ErrTooLarge):
		return "if the image is genuine and this large, raise --max-layer-size or --max-layer-entries"
	case errors.Is(err, syscall.ENOSPC):
		return "the staging directory ran out of space; point --tmpdir (or TMPDIR) at a larger file system"
	case errors.Is(err, os.ErrPermission):
		return "podman-migrate needs access to the podman socket and, for checkpoints, a rootful podman"
	case errors.As(err, &terr):
		return "check the reference, that the registry is reachable, `podman login` for credentials, and --tls-verify=false for a plain-HTTP registry"
	case errors.As(err, &perr) && perr.Status == 0:
		return "start the service with `podman system service --time=0` or point --url at its socket"
	}
	return ""
}

// isPolicyRejection reports whether policy.json refused the image: the
// content is not trusted, which is bad input rather than a registry fault.
func isPolicyRejection(err error) bool {
	var pre signature.PolicyRequirementError
	return errors.As(err, &pre)
}
