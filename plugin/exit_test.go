package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containers/image/v5/oci/layout"
	"github.com/opencontainers/go-digest"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/export"
	restore "github.com/podman-migrate/podman-migrate/import"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
	"github.com/podman-migrate/podman-migrate/internal/fault"
	"github.com/podman-migrate/podman-migrate/internal/kube"
	"github.com/podman-migrate/podman-migrate/internal/mountmap"
	"github.com/podman-migrate/podman-migrate/internal/tarsafe"
	"github.com/podman-migrate/podman-migrate/internal/transfer"
	"github.com/podman-migrate/podman-migrate/migrate"
)

// The hints as hintFor gave them before the errors carried their own: the
// printed lines must not change.
const (
	serviceHint  = "start the service with `podman system service --time=0` or point --url at its socket"
	registryHint = "check the reference, that the registry is reachable, `podman login` for credentials, and --tls-verify=false for a plain-HTTP registry"
	policyHint   = "the signature policy (policy.json) refused the image: sign it, or trust its registry in the policy"
	digestHint   = "the image was altered in the registry or on the way; push it again"
	tooLargeHint = "if the image is genuine and this large, raise --max-layer-size or --max-layer-entries"
	noSpaceHint  = "the staging directory ran out of space; point --tmpdir (or TMPDIR) at a larger file system"
	noPermHint   = "podman-migrate needs access to the podman socket and, for checkpoints, a rootful podman"
)

// TestExitCodeAndHint runs an error of each kind, from each package, as
// the commands return them (wrapped, joined, nested in PushError), through
// exitCode, hintFor and the printed line.
func TestExitCodeAndHint(t *testing.T) {
	unreached := &podman.Error{Op: "connecting to unix:///run/podman/podman.sock", Err: errors.New("dial unix /run/podman/podman.sock: connect: no such file or directory")}
	answered := &podman.Error{Op: `checkpointing container "web"`, Status: 500, Err: errors.New("criu failed: type NOTIFY errno 0")}
	stuck := podman.StuckError(`checkpointing container "web"`, 10*time.Minute, "its CRIU was ended (PIDs 42)")
	unreachable := &transfer.Error{Op: "pushing", Ref: "registry.example:5000/ckpt/web:v1", Err: errors.New("pinging container registry: connection refused")}
	pushErr := func(err error) error {
		return fmt.Errorf("pushing %q: %w", "web", &export.PushError{Container: "web", NotStopped: true, Err: err})
	}
	someFailed := func(errs ...error) error {
		return fmt.Errorf("%w (%d of %d): %w", migrate.ErrSomeFailed, len(errs), len(errs)+1, errors.Join(errs...))
	}
	_, badRef := transfer.ParseReference("web")
	_, badMap := mountmap.Parse([]string{"relative=/x"})
	_, badKey := transfer.EncryptionConfig([]string{"rot13:/key"})
	_, unsafeEntry := tarsafe.NewChecker(tarsafe.Plain).Check(&tar.Header{Name: "etc/passwd", Typeflag: tar.TypeSymlink, Linkname: "/x"})
	tooLarge := fmt.Errorf("reading layer 1: %w", &tarsafe.LimitError{What: "bytes", Limit: 1 << 30})
	policyRefused, tampered := realTransferErrors(t)

	for _, tc := range []struct {
		name string
		err  error
		code int
		hint string
	}{
		// Unknown.
		{"plain error", errors.New(`unknown command "teleport" for "podman-migrate"`), ExitFailure, ""},
		{"plain, wrapped", fmt.Errorf("moving: %w", errors.New("boom")), ExitFailure, ""},

		// Usage.
		{"usageError", usageError{errors.New("--to is required; see --help")}, ExitUsage, ""},
		{"usageError, wrapped", fmt.Errorf("push: %w", usageError{errors.New("give --url or --connection, not both")}), ExitUsage, ""},
		{"podman.ErrNoConnection", fmt.Errorf("%w %q (configured: a, b)", podman.ErrNoConnection, "hostc"), ExitUsage, ""},
		{"usage beats podman", errors.Join(answered, fmt.Errorf("%w %q", podman.ErrNoConnection, "x")), ExitUsage, ""},

		// Podman.
		{"podman not reached", unreached, ExitPodman, serviceHint},
		{"podman not reached, wrapped", fmt.Errorf("source: %w", unreached), ExitPodman, serviceHint},
		{"podman answered", answered, ExitPodman, ""},
		{"podman answered, in PushError", pushErr(answered), ExitPodman, ""},
		{"podman socket not permitted", &podman.Error{Op: "connecting to unix:///run/podman/podman.sock", Err: &os.PathError{Op: "dial", Path: "/run/podman/podman.sock", Err: syscall.EACCES}}, ExitPodman, noPermHint},
		{"podman rootless", &podman.Error{Op: "checking unix:///x", Err: fmt.Errorf("%w: use the rootful socket", podman.ErrRootless)}, ExitPodman, serviceHint},
		{"CRIU stuck", stuck, ExitPodman, podman.StuckHint},
		{"CRIU stuck, in PushError", pushErr(stuck), ExitPodman, podman.StuckHint},
		{"CRIU stuck, bare", fmt.Errorf("%w: no answer", podman.ErrCRIUStuck), ExitPodman, podman.StuckHint},
		{"CRIU stuck, left on host", fmt.Errorf("%w (%w)", stuck, restore.ErrLeftOnHost), ExitPodman, podman.StuckHint},
		{"ckpt.ErrBadArchive", fmt.Errorf("building the image: %w", fmt.Errorf("%w: no config.dump in it", ckpt.ErrBadArchive)), ExitPodman, ""},
		{"check step with a fix", (&checker{}).fail("server", time.Now(), unreached, "start the service with `podman system service --time=0`, or point --url at its socket"), ExitPodman,
			"start the service with `podman system service --time=0`, or point --url at its socket"},
		{"check step without a fix", (&checker{}).fail("create", time.Now(), unreached, ""), ExitPodman, serviceHint},

		// Registry.
		{"registry unreachable", unreachable, ExitRegistry, registryHint},
		{"registry unreachable, in PushError", pushErr(unreachable), ExitRegistry, registryHint},
		{"registry, no space here", &transfer.Error{Op: "pulling", Ref: "r/x:y", Err: &os.PathError{Op: "write", Path: "/var/tmp/x", Err: syscall.ENOSPC}}, ExitRegistry, noSpaceHint},
		{"registry, no permission here", &transfer.Error{Op: "pushing", Ref: "oci:/x:y", Err: &os.PathError{Op: "open", Path: "/x/index.json", Err: syscall.EACCES}}, ExitRegistry, noPermHint},
		{"registry beats podman", someFailed(fmt.Errorf("a: %w", answered), fmt.Errorf("b: %w", unreachable)), ExitRegistry, registryHint},

		// Input.
		{"export.ErrNoContainer", fmt.Errorf("inspecting %q: %w", "web", export.ErrNoContainer), ExitInput, ""},
		{"export.ErrNotRunning", fmt.Errorf("%w: %q is exited", export.ErrNotRunning, "web"), ExitInput, ""},
		{"export.ErrStagingTooSmall", fmt.Errorf("%w: /var/tmp has 1GiB free", export.ErrStagingTooSmall), ExitInput, ""},
		{"export.ErrIncludeBase", fmt.Errorf("%w, not oci:/x", export.ErrIncludeBase), ExitInput, ""},
		{"restore.ErrConflict", fmt.Errorf("container %q %w", "web", restore.ErrConflict), ExitInput, ""},
		{"restore.ErrBaseImage", fmt.Errorf("%w: busybox", restore.ErrBaseImage), ExitInput, ""},
		{"restore.ErrBlocked", fmt.Errorf("%w: volume data is taken", restore.ErrBlocked), ExitInput, ""},
		{"mountmap.ErrBadMap", badMap, ExitInput, ""},
		{"kube.ErrNotRestorable", fmt.Errorf("%w: no annotation", kube.ErrNotRestorable), ExitInput, ""},
		{"kube.ErrBadName", fmt.Errorf("%w %q", kube.ErrBadName, "Web_1"), ExitInput, ""},
		{"kube.ErrNoCommand", fmt.Errorf("%w: r/base@sha256:ab has none", kube.ErrNoCommand), ExitInput, ""},
		{"kube.ErrBadBasePull", fmt.Errorf("%w %q", kube.ErrBadBasePull, "init"), ExitUsage, ""},
		{"kube.ErrNodeNotReady", fmt.Errorf("%w: CRIU support is off", kube.ErrNodeNotReady), ExitPodman, ""},
		{"kube.ErrCrictl", fmt.Errorf("%w: exit status 1", kube.ErrCrictl), ExitPodman, ""},
		{"ckpt.ErrNotCheckpoint", fmt.Errorf("%w: manifest type %q", ckpt.ErrNotCheckpoint, "x"), ExitInput, ""},
		{"tarsafe.ErrUnsafe", unsafeEntry, ExitInput, ""},
		{"tarsafe.ErrTooLarge", tooLarge, ExitInput, tooLargeHint},
		{"tarsafe.ErrTooLarge, in transfer.Error", &transfer.Error{Op: "reading", Ref: "r/x:y", Err: tooLarge}, ExitInput, tooLargeHint},
		{"transfer.ErrBadReference", badRef, ExitInput, ""},
		{"transfer.ErrKey", badKey, ExitInput, ""},
		{"transfer.ErrKey, bare", fmt.Errorf("%w: x", transfer.ErrKey), ExitInput, ""},
		{"policy refusal, from transfer", policyRefused, ExitInput, policyHint},
		{"policy refusal, in PushError", pushErr(policyRefused), ExitInput, policyHint},
		{"digest mismatch, from transfer", tampered, ExitInput, digestHint},
		{"digest mismatch, bare", fmt.Errorf("%w: sha256:aa", transfer.ErrDigestMismatch), ExitInput, digestHint},
		{"errNoImage", fmt.Errorf("%w: there are no images on %s", errNoImage, "unix:///x"), ExitInput, ""},
		{"check step, no image", (&checker{}).fail("create", time.Now(), fmt.Errorf("%w: none", errNoImage), "pull a busybox image there, or give --image"), ExitInput, "pull a busybox image there, or give --image"},
		{"input beats registry", someFailed(fmt.Errorf("a: %w", unreachable), fmt.Errorf("b: %w", export.ErrNoContainer)), ExitInput, registryHint},
		// The old switch put ErrCRIUStuck and ErrBadArchive before bad
		// input (exit 3); fault.KindOf puts bad input first.
		{"input beats CRIU stuck", someFailed(pushErr(stuck), fmt.Errorf("b: %w", export.ErrNoContainer)), ExitInput, podman.StuckHint},

		// Interrupted.
		{"export.ErrStoppedWaiting", pushErr(fmt.Errorf("%w of container %q (second interrupt)", export.ErrStoppedWaiting, "web")), ExitInterrupted, ""},
		{"interrupt beats all", fault.Wrap(fault.Interrupted, someFailed(stuck, usageError{errors.New("x")})), ExitInterrupted, podman.StuckHint},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err == nil {
				t.Fatal("no error to test")
			}
			if code := exitCode(tc.err); code != tc.code {
				t.Errorf("exit code %d, want %d (kind %v) for %v", code, tc.code, fault.KindOf(tc.err), tc.err)
			}
			if hint := hintFor(tc.err); hint != tc.hint {
				t.Errorf("hint %q, want %q", hint, tc.hint)
			}
			msg := strings.ReplaceAll(tc.err.Error(), "\n", " ")
			want := "Error: " + msg + "\n"
			switch {
			case tc.code == ExitInterrupted:
				want = "Error: interrupted: " + msg + "\n"
			case tc.hint != "":
				want = "Error: " + msg + " (hint: " + tc.hint + ")\n"
			}
			var out bytes.Buffer
			if code := report(&out, tc.err); code != tc.code || out.String() != want {
				t.Errorf("report printed %q and returned %d, want %q and %d", out.String(), code, want, tc.code)
			}
		})
	}
}

// TestInterruptedRun: whatever the command failed with once the context
// was cancelled is an interrupt, printed without a hint.
func TestInterruptedRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	noSocket := "unix://" + filepath.Join(t.TempDir(), "absent.sock")
	var out, errb bytes.Buffer
	code := run(ctx, []string{"version", "--url", noSocket}, &out, &errb)
	if code != ExitInterrupted || !strings.HasPrefix(errb.String(), "Error: interrupted: ") || strings.Contains(errb.String(), "(hint:") {
		t.Errorf("exit %d, stderr %q; want %d and one \"Error: interrupted:\" line without a hint", code, errb.String(), ExitInterrupted)
	}
}

// realTransferErrors makes transfer refuse an image by policy and find a
// tampered blob, so that the kinds are those transfer gives, not the test's.
func realTransferErrors(t *testing.T) (policyRefused, tampered error) {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	layer := ckpttest.Tar(t, ckpttest.Archive(t))
	src := ckpttest.WriteImage(t, dir, []ckpttest.Layer{{Tar: layer}}, map[string]string{ckpt.AnnRuntimeName: "runc"})
	policy := func(rule string) string {
		p := filepath.Join(t.TempDir(), "policy.json")
		if err := os.WriteFile(p, []byte(`{"default":[{"type":"`+rule+`"}]}`), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	s, err := transfer.OpenSource(ctx, src, transfer.Options{SignaturePolicy: policy("reject")})
	if err == nil {
		s.Close()
		t.Fatal("the reject policy let the image through")
	}
	policyRefused = err

	blob := filepath.Join(dir, "blobs", "sha256", digest.FromBytes(layer).Encoded())
	f, err := os.OpenFile(blob, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteAt([]byte("tampered"), int64(len(layer)/2))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	dst, err := layout.NewReference(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, tampered = transfer.Copy(ctx, "pulling", dst, src, transfer.Options{SignaturePolicy: policy("insecureAcceptAnything")}); tampered == nil {
		t.Fatal("the tampered blob was copied")
	}
	return policyRefused, tampered
}
