//go:build e2e

package e2e

import (
	"bufio"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fast keeps retries of injected persistent faults short.
var fast = []string{"--retry", "2", "--retry-delay", "100ms"}

// tagMissing asserts no tag points at the image: the manifest goes last.
func tagMissing(t *testing.T, ref string) {
	t.Helper()
	if r := runCmd(t, "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+ref); r.code == 0 {
		t.Fatalf("%s exists after a failed push: %s", ref, r.stdout)
	}
}

// TestPushFaults: whatever fails after the checkpoint, the source runs on,
// the same process, and no tag names a partial image.
func TestPushFaults(t *testing.T) {
	regAddr, kill := startRegistry(t)
	p := newFaultProxy(t, regAddr)
	p.kill = kill
	for _, tc := range []struct {
		name, fault string
		pick        func(*http.Request) bool
		wantRetries bool
	}{
		{"HTTP 500 on the manifest PUT", "500", isManifestPut, true},
		{"connection cut mid-blob", "cut", isBlobUpload, true},
		{"authentication refused after the checkpoint", "401", isBlobUpload, false},
		{"registry killed mid-upload", "kill", isBlobUpload, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "e2e-fault-" + strings.ReplaceAll(tc.fault, "0", "x")
			before := startWorkload(t, src)
			p.set(func(r *http.Request) string {
				if tc.pick(r) {
					return tc.fault
				}
				return ""
			})
			ref := p.addr + "/e2e/fault:" + tc.fault
			r := migrate(t, append([]string{"--url", hosts.HostAURL, "push", "--tls-verify=false"}, append(fast, src, ref)...)...)
			if r.code != 4 || !strings.Contains(r.stderr, "registry:") || !strings.Contains(r.stderr, "running again on this host") {
				t.Fatalf("exit %d; want 4, the registry's failure, and the container running again", r.code)
			}
			if !strings.Contains(r.stderr, "Checkpointing") {
				t.Fatal("the fault was not after the checkpoint")
			}
			if retried := strings.Contains(r.stderr, "Transient failure, retrying"); retried != tc.wantRetries {
				t.Fatalf("retried: %t, want %t", retried, tc.wantRetries)
			}
			if p.count(tc.fault) == 0 {
				t.Fatal("the fault was never injected")
			}
			checkContinued(t, hosts.HostAURL, src, before)
			if tc.fault != "kill" {
				p.set(nil)
				tagMissing(t, ref)
			}
		})
	}
}

// TestPushStagingFull: a staging file system too small is refused before
// the checkpoint; one that fills up during it is rolled back.
func TestPushStagingFull(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })

	src := "e2e-staging-full"
	before := startWorkloadMem(t, src, 64)
	r := migrate(t, "--url", hosts.HostAURL, "push", "--tmpdir", dir, "--tls-verify=false", src, hosts.Registry+"/e2e/full:v1")
	if r.code != 1 || !strings.Contains(r.stderr, "too small") || !strings.Contains(r.stderr, "not touched") || strings.Contains(r.stderr, "Checkpointing") {
		t.Fatalf("exit %d; want 1, refused before the checkpoint", r.code)
	}
	checkContinued(t, hosts.HostAURL, src, before)

	// Room enough at the check, then the disk fills while the image is built.
	big := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256m,mode=0700", "tmpfs", big).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", big).Run() })
	code, log := signalAt(t, []string{"--url", hosts.HostAURL, "push", "--tmpdir", big, "--tls-verify=false", src, hosts.Registry + "/e2e/full:v2"},
		"Checkpointing", func(*exec.Cmd) {
			exec.Command("dd", "if=/dev/zero", "of="+filepath.Join(big, "filler"), "bs=1M", "count=256").Run()
		})
	if code != 1 || !strings.Contains(log, "no space left on device") || !strings.Contains(log, "running again on this host") {
		t.Fatalf("exit %d; want 1, ENOSPC and the container running again:\n%s", code, log)
	}
	checkContinued(t, hosts.HostAURL, src, before)
	left, _ := filepath.Glob(filepath.Join(big, "podman-migrate-*"))
	if len(left) > 0 {
		t.Fatalf("staging left behind: %v", left)
	}
}

// signalAt runs podman-migrate, calls act once a stderr line starts with
// at, and returns the exit code and stderr.
func signalAt(t *testing.T, args []string, at string, act func(*exec.Cmd)) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	sc := bufio.NewScanner(stderr)
	done := false
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if !done && strings.HasPrefix(sc.Text(), at) {
			done = true
			act(cmd)
		}
	}
	err = cmd.Wait()
	t.Logf("podman-migrate %s:\n%s", strings.Join(args, " "), log.String())
	if !done {
		t.Fatalf("never saw %q", at)
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), log.String()
	}
	return 0, log.String()
}

// TestPushSignalsAtEachPhase: SIGTERM or SIGINT during the checkpoint,
// while the image is built, and during the upload: exit 130, the source
// running on.
func TestPushSignalsAtEachPhase(t *testing.T) {
	regAddr, _ := startRegistry(t)
	p := newFaultProxy(t, regAddr)
	p.set(func(r *http.Request) string {
		if isBlobUpload(r) {
			return "slow"
		}
		return ""
	})
	for _, tc := range []struct {
		phase, at string
		sig       syscall.Signal
	}{
		{"checkpoint", "Checkpointing container", syscall.SIGTERM},
		{"build", "Checkpoint taken", syscall.SIGINT},
		{"upload", "Copying the image", syscall.SIGTERM},
	} {
		t.Run(tc.phase, func(t *testing.T) {
			src := "e2e-signal-" + tc.phase
			before := startWorkloadMem(t, src, 128)
			tmp := t.TempDir()
			code, log := signalAt(t, []string{"--url", hosts.HostAURL, "push", "--tmpdir", tmp, "--tls-verify=false", src, p.addr + "/e2e/signal:" + tc.phase},
				tc.at, func(c *exec.Cmd) { c.Process.Signal(tc.sig) })
			if code != 130 || !strings.Contains(log, "Error: interrupted:") {
				t.Fatalf("exit %d, want 130 and an interrupted error", code)
			}
			if !strings.Contains(log, "running again") && !strings.Contains(log, "still running") {
				t.Fatal("the error does not say the container runs")
			}
			checkContinued(t, hosts.HostAURL, src, before)
			if left, _ := os.ReadDir(tmp); len(left) > 0 {
				t.Fatalf("staging left behind: %v", left)
			}
		})
	}
}

// TestPullFaults: a dropped network, CRIU's refusal and a signal leave
// nothing on B, not even a staging file.
func TestPullFaults(t *testing.T) {
	regAddr, _ := startRegistry(t)
	p := newFaultProxy(t, regAddr)
	src := "e2e-pullfault-src"
	ref := p.addr + "/e2e/pullfault:v1"
	pushCopy(t, src, ref)
	rmB(t, "e2e-pullfault-dst")

	nothingLeft := func(t *testing.T, tmp string, unchanged func()) {
		t.Helper()
		unchanged()
		if left, _ := os.ReadDir(tmp); len(left) > 0 {
			t.Fatalf("staging left behind: %v", left)
		}
	}
	t.Run("network drop mid-blob", func(t *testing.T) {
		p.set(func(r *http.Request) string {
			if isBlobGet(r) {
				return "cut"
			}
			return ""
		})
		defer p.set(nil)
		tmp, unchanged := t.TempDir(), unchangedOnB(t)
		r := migrate(t, append([]string{"--url", hosts.HostBURL, "pull", "--tmpdir", tmp, "--tls-verify=false", "--name", "e2e-pullfault-dst"}, append(fast, ref)...)...)
		if r.code != 4 || !strings.Contains(r.stderr, "registry:") || p.count("cut") == 0 {
			t.Fatalf("exit %d, want 4 with the registry's failure", r.code)
		}
		nothingLeft(t, tmp, unchanged)
	})
	t.Run("SIGTERM during the fetch", func(t *testing.T) {
		p.set(func(r *http.Request) string {
			if isBlobGet(r) {
				return "slow"
			}
			return ""
		})
		defer p.set(nil)
		tmp, unchanged := t.TempDir(), unchangedOnB(t)
		code, _ := signalAt(t, []string{"--url", hosts.HostBURL, "pull", "--tmpdir", tmp, "--tls-verify=false", "--name", "e2e-pullfault-dst", ref},
			"Fetching", func(c *exec.Cmd) {
				time.Sleep(time.Second) // into the slowed blob
				c.Process.Signal(syscall.SIGTERM)
			})
		if code != 130 {
			t.Fatalf("exit %d, want 130", code)
		}
		nothingLeft(t, tmp, unchanged)
	})
	t.Run("SIGTERM during the restore", func(t *testing.T) {
		tmp, unchanged := t.TempDir(), unchangedOnB(t)
		code, _ := signalAt(t, []string{"--url", hosts.HostBURL, "pull", "--tmpdir", tmp, "--tls-verify=false", "--name", "e2e-pullfault-dst", ref},
			"Restoring container", func(c *exec.Cmd) { c.Process.Signal(syscall.SIGTERM) })
		if code == 0 {
			// The restore won the race: that is a success, not a leak.
			podman(t, hosts.HostBURL, "rm", "-f", "e2e-pullfault-dst")
			t.Skip("the restore finished before the signal arrived")
		}
		if code != 130 {
			t.Fatalf("exit %d, want 130", code)
		}
		nothingLeft(t, tmp, unchanged)
	})
}

// TestCRIURefusalIsExplained: a file the process holds open has another
// size on the target, CRIU refuses the restore, and the error carries
// CRIU's own reason. Nothing is left on B.
func TestCRIURefusalIsExplained(t *testing.T) {
	dirA, err := os.MkdirTemp("/var/tmp", "pm-e2e-criu-a-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dirA) })
	conf := filepath.Join(dirA, "app.conf")
	writeFile(t, conf, []byte("aaaa\n"))
	src := "e2e-criu-refusal"
	podman(t, hosts.HostAURL, "run", "-d", "--name", src, "-v", conf+":/etc/app.conf", hosts.TestImage,
		"sh", "-c", "exec 3</etc/app.conf; while sleep 1; do :; done")
	t.Cleanup(func() { podmanTry(t, hosts.HostAURL, "rm", "-f", src) })
	layout := "oci:" + filepath.Join(stateDir, "criu-refusal") + ":x"
	if r := migrate(t, "--url", hosts.HostAURL, "push", "--leave-running", src, layout); r.code != 0 {
		t.Fatalf("push failed: %s", r.stderr)
	}
	dirB := onB(t, "mktemp -d /var/tmp/pm-e2e-criu-b-XXXXXX")
	onB(t, "echo a-longer-file-than-before > "+dirB+"/app.conf")
	unchanged := unchangedOnB(t)
	r := migrate(t, "--url", hosts.HostBURL, "pull", "--mount-map", conf+"="+dirB+"/app.conf", layout)
	if r.code != 3 || !strings.Contains(r.stderr, "CRIU's restore log says") || !strings.Contains(r.stderr, "Error (") {
		t.Fatalf("exit %d; want 3 with CRIU's reason", r.code)
	}
	unchanged()
}

// TestConcurrentMigrations: two containers through the same registry at
// once, both arriving.
func TestConcurrentMigrations(t *testing.T) {
	names := []string{"e2e-conc-1", "e2e-conc-2"}
	before := map[string]status{}
	for _, n := range names {
		before[n] = startWorkload(t, n)
		rmB(t, n)
	}
	var wg sync.WaitGroup
	results := make([]result, len(names))
	for i, n := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ref := hosts.Registry + "/e2e/concurrent:" + n
			r := runCmd(t, bin, "--url", hosts.HostAURL, "push", "--tls-verify=false", n, ref)
			if r.code == 0 {
				r = runCmd(t, bin, "--url", hosts.HostBURL, "pull", "--tls-verify=false", strings.TrimSpace(r.stdout))
			}
			results[i] = r
		}()
	}
	wg.Wait()
	for i, n := range names {
		if results[i].code != 0 {
			t.Fatalf("%s: exit %d: %s", n, results[i].code, results[i].stderr)
		}
		checkContinued(t, hosts.HostBURL, n, before[n])
	}
}
