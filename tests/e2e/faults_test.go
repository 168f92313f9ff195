//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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

// tagDigest is the manifest digest the tag ref names ("" if none).
func tagDigest(t *testing.T, ref string) string {
	t.Helper()
	r := runCmd(t, "skopeo", "inspect", "--format", "{{.Digest}}", "--tls-verify=false", "docker://"+ref)
	if r.code != 0 {
		return ""
	}
	return strings.TrimSpace(r.stdout)
}

// mountTmpfs mounts a tmpfs of size (as mount(8) takes it) for one test.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size+",mode=0755", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", dir).Run() })
	return dir
}

// stagingEmpty fails the test if podman-migrate left anything in dir.
func stagingEmpty(t *testing.T, dir string) {
	t.Helper()
	if left, _ := os.ReadDir(dir); len(left) > 0 {
		t.Fatalf("staging left behind in %s: %v", dir, left)
	}
}

// TestPushFaults: whatever fails after the checkpoint, the source runs on,
// the same process, and no tag names a partial image.
func TestPushFaults(t *testing.T) {
	regAddr, kill := startRegistry(t)
	p := newFaultProxy(t, regAddr)
	p.kill = kill

	// Every push goes to the same tag: a failed one must leave it naming
	// the image this first one pushed.
	ref, tag := p.addr+"/e2e/fault:v1", regAddr+"/e2e/fault:v1"
	var good string
	// The proof that a tag never names a partial image: copy.Image stores
	// the manifest only after every blob was accepted.
	t.Run("no fault: blobs first, the manifest last", func(t *testing.T) {
		src := "e2e-fault-none"
		startWorkload(t, src)
		p.set(nil)
		r := migrate(t, "--url", hosts.HostAURL, "push", "--leave-running", "--tls-verify=false", src, ref)
		if r.code != 0 {
			t.Fatalf("push through the proxy: exit %d", r.code)
		}
		p.manifestLast(t)
		_, good, _ = strings.Cut(strings.TrimSpace(r.stdout), "@")
		if got := tagDigest(t, tag); got != good {
			t.Fatalf("%s is %q, push printed %q", tag, got, good)
		}
	})
	for _, tc := range []struct {
		name, fault string
		pick        func(*http.Request) bool
		says        string // in the error
		tries       int    // requests that got the fault; 0: some
		retried     bool
	}{
		// 1 + --retry 2 manifest uploads.
		{"HTTP 500 on the manifest PUT", fault500, isManifestPut, "uploading manifest v1 to " + p.addr + "/e2e/fault: received unexpected HTTP status: 500 Internal Server Error", 3, true},
		{"connection cut mid-blob", faultCut, isBlobUpload, "writing blob: Patch", 0, true},
		{"authentication refused after the checkpoint", fault401, isBlobUpload, "writing blob: uploading layer chunked: unauthorized: injected: authentication required", 0, false},
		// Last: the registry stays dead; the proxy answers 502 for it.
		{"registry killed mid-upload", faultKill, isBlobUpload, "502 Bad Gateway", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "e2e-fault-" + tc.fault
			before := startWorkload(t, src)
			p.set(func(r *http.Request) string {
				if tc.pick(r) {
					return tc.fault
				}
				return noFault
			})
			r := migrate(t, append([]string{"--url", hosts.HostAURL, "push", "--tls-verify=false"}, append(fast, src, ref)...)...)
			if r.code != 4 || !strings.Contains(r.stderr, "Error: pushing \""+src+"\" to \""+ref+"\": registry: pushing "+ref+": ") ||
				!strings.Contains(r.stderr, tc.says) || !strings.Contains(r.stderr, "was restored from its checkpoint and is running again on this host") {
				t.Fatalf("exit %d; want 4, the registry's failure (%q), and the container running again", r.code, tc.says)
			}
			if !strings.Contains(r.stderr, "Checkpoint taken") {
				t.Fatal("the fault was not after the checkpoint")
			}
			if retried := strings.Contains(r.stderr, "Transient failure, retrying"); retried != tc.retried {
				t.Fatalf("retried: %t, want %t", retried, tc.retried)
			}
			if n := p.count(tc.fault); n == 0 || tc.tries > 0 && n != tc.tries {
				t.Fatalf("the fault struck %d times, want %d", n, tc.tries)
			}
			if tc.fault == fault401 {
				// The preflight went through the proxy and passed: the
				// refusal came only after the checkpoint.
				var tags bool
				for _, e := range p.exchanges() {
					tags = tags || strings.HasSuffix(e.path, "/tags/list") && e.status != http.StatusUnauthorized
				}
				if !tags {
					t.Fatalf("no preflight tag list went through: %v", p.exchanges())
				}
			}
			checkContinued(t, hosts.HostAURL, src, before)
			p.noManifestStored(t)
			if got := tagDigest(t, tag); tc.fault != faultKill && got != good { // past the proxy
				t.Fatalf("%s is %q after the failed push, want the old %q", tag, got, good)
			}
		})
	}
}

// TestPushStagingFull: a staging file system too small is refused before
// the checkpoint (exit 5); one that fills up during it is rolled back.
func TestPushStagingFull(t *testing.T) {
	small := mountTmpfs(t, "2m")
	src := "e2e-staging-full"
	before := startWorkloadMem(t, src, 64)
	r := migrate(t, "--url", hosts.HostAURL, "push", "--tmpdir", small, "--tls-verify=false", src, hosts.Registry+"/e2e/full:v1")
	if r.code != 5 || !strings.Contains(r.stderr, "the staging directory is too small for the checkpoint: "+small+" has 2MiB free") ||
		!strings.Contains(r.stderr, "container \""+src+"\" was not touched") || !strings.Contains(r.stderr, "with at least") {
		t.Fatalf("exit %d; want 5, refused before the checkpoint, saying how much it needs", r.code)
	}
	if strings.Contains(r.stderr, "Checkpointing") {
		t.Fatal("checkpointed although the staging directory was known too small")
	}
	checkContinued(t, hosts.HostAURL, src, before)
	stagingEmpty(t, small)

	// Room enough at the check, then the disk fills while the image is built.
	big := mountTmpfs(t, "256m")
	code, log := signalAt(t, []string{"--url", hosts.HostAURL, "push", "--tmpdir", big, "--tls-verify=false", src, hosts.Registry + "/e2e/full:v2"},
		"Checkpointing", func(*exec.Cmd) {
			exec.Command("dd", "if=/dev/zero", "of="+filepath.Join(big, "filler"), "bs=1M", "count=256").Run()
		})
	if code != 1 || !strings.Contains(log, "no space left on device") || !strings.Contains(log, "running again on this host") ||
		!strings.Contains(log, "hint: the staging directory ran out of space") {
		t.Fatalf("exit %d; want 1, ENOSPC and the container running again:\n%s", code, log)
	}
	checkContinued(t, hosts.HostAURL, src, before)
	os.Remove(filepath.Join(big, "filler"))
	stagingEmpty(t, big)
	tagMissing(t, hosts.Registry+"/e2e/full:v2")
}

// signalAt runs podman-migrate, calls act once a stderr line starts with
// at, and returns the exit code and stderr. It asserts the failure
// contract as migrate does.
func signalAt(t *testing.T, args []string, at string, act func(*exec.Cmd)) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.Command(bin, args...)
	bound(ctx, cmd)
	var stdout strings.Builder
	cmd.Stdout = &stdout
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
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	}
	lines := strings.Split(strings.TrimSpace(log.String()), "\n")
	if code != 0 && (stdout.Len() > 0 || strings.Count(log.String(), "Error: ") != 1 || !strings.HasPrefix(lines[len(lines)-1], "Error: ")) {
		t.Errorf("failure output breaks the contract: stdout %q", stdout.String())
	}
	return code, log.String()
}

// TestPushSignalsAtEachPhase: SIGTERM or SIGINT during the checkpoint,
// while the image is built, and during the upload: exit 130, the source
// running on, the staging directory (0700 while it lived) gone, no tag.
func TestPushSignalsAtEachPhase(t *testing.T) {
	regAddr, _ := startRegistry(t)
	p := newFaultProxy(t, regAddr)
	for _, phase := range []struct {
		name, at string
		flags    []string
	}{
		{"checkpoint", "Checkpointing container", nil},
		// The CRIU layer streams to the slowed registry while it is built.
		{"build", "Checkpoint taken", nil},
		// Unstreamed, every layer goes after the build.
		{"upload", "Copying the image", []string{"--stream-layers=false"}},
	} {
		for _, sig := range []struct {
			name string
			sig  syscall.Signal
		}{{"sigterm", syscall.SIGTERM}, {"sigint", syscall.SIGINT}} {
			t.Run(phase.name+"/"+sig.name, func(t *testing.T) {
				p.set(func(r *http.Request) string {
					if isBlobUpload(r) {
						return faultSlow // the upload outlasts the signal
					}
					return noFault
				})
				src := "e2e-signal-" + phase.name + "-" + sig.name
				before := startWorkload(t, src)
				tmp := t.TempDir()
				tag := "/e2e/signal:" + phase.name + "-" + sig.name
				args := append([]string{"--url", hosts.HostAURL, "push", "--tmpdir", tmp, "--tls-verify=false"}, phase.flags...)
				code, log := signalAt(t, append(args, src, p.addr+tag),
					phase.at, func(c *exec.Cmd) {
						staged, _ := filepath.Glob(filepath.Join(tmp, "podman-migrate-push-*"))
						if len(staged) != 1 {
							t.Errorf("staging directories: %v, want one", staged)
						} else if fi, err := os.Stat(staged[0]); err != nil {
							t.Error(err)
						} else if fi.Mode().Perm() != 0o700 {
							t.Errorf("staging directory %s has mode %v, want 0700", staged[0], fi.Mode().Perm())
						}
						c.Process.Signal(sig.sig)
					})
				if code != 130 || !strings.Contains(log, "Error: interrupted: pushing \""+src+"\"") ||
					!strings.Contains(log, "was restored from its checkpoint and is running again on this host") {
					t.Fatalf("exit %d, want 130, interrupted, and the container running again", code)
				}
				checkContinued(t, hosts.HostAURL, src, before)
				stagingEmpty(t, tmp)
				p.noManifestStored(t)
				tagMissing(t, regAddr+tag)
			})
		}
	}
}

// hostBState is what a failed pull must leave as it was on host B.
type hostBState struct {
	containers, volumes, networks, podmanTmp []string
}

func readHostB(t *testing.T) hostBState {
	t.Helper()
	list := func(args ...string) []string {
		names := strings.Fields(podman(t, hosts.HostBURL, args...))
		slices.Sort(names)
		return names
	}
	return hostBState{
		containers: list("ps", "-a", "--format", "{{.Names}}"),
		volumes:    list("volume", "ls", "--format", "{{.Name}}"),
		networks:   list("network", "ls", "--format", "{{.Name}}"),
		// Where podman unpacks an imported checkpoint.
		podmanTmp: strings.Fields(onB(t, "ls -d /tmp/checkpoint* /var/tmp/checkpoint* /tmp/restore* /var/tmp/restore* 2>/dev/null; true")),
	}
}

// nothingLeftOnB records host B; the function it returns fails the test
// unless B's containers, volumes, networks and podman's temporary
// directories are as they were, and the staging directory tmp is empty.
func nothingLeftOnB(t *testing.T, tmp string) func() {
	t.Helper()
	before := readHostB(t)
	return func() {
		t.Helper()
		if after := readHostB(t); !slices.Equal(before.containers, after.containers) || !slices.Equal(before.volumes, after.volumes) ||
			!slices.Equal(before.networks, after.networks) || !slices.Equal(before.podmanTmp, after.podmanTmp) {
			t.Fatalf("host B changed: %+v -> %+v", before, after)
		}
		stagingEmpty(t, tmp)
	}
}

// waitContainer polls the podman service at url (a unix socket) until a
// container called name exists; false after 30 s. It asks the socket
// itself: the podman CLI is too slow to catch a restore in progress.
func waitContainer(t *testing.T, url, name string) bool {
	t.Helper()
	sock := strings.TrimPrefix(url, "unix://")
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	defer c.CloseIdleConnections()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		resp, err := c.Get("http://d/v4.0.0/libpod/containers/" + name + "/exists")
		if err != nil {
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusNoContent {
			return true
		}
	}
	return false
}

// largestLayer is the digest of the biggest layer of the image at ref:
// the CRIU images.
func largestLayer(t *testing.T, ref string) string {
	t.Helper()
	var m struct {
		Layers []struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		} `json:"layers"`
	}
	out := runCmd(t, "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+ref)
	if err := json.Unmarshal([]byte(out.stdout), &m); err != nil || len(m.Layers) == 0 {
		t.Fatalf("manifest of %s: %v %s", ref, err, out.stdout)
	}
	big := m.Layers[0]
	for _, l := range m.Layers {
		if l.Size > big.Size {
			big = l
		}
	}
	return big.Digest
}

// TestPullFaults: a dropped network, a tampered blob and a signal during
// the fetch or the restore leave nothing on B: no container, no volume
// (the checkpoint has one), no network, no temporary file.
func TestPullFaults(t *testing.T) {
	regAddr, _ := startRegistry(t)
	p := newFaultProxy(t, regAddr)
	src, dst, vol := "e2e-pullfault-src", "e2e-pullfault-dst", "e2e-pullfault-vol"
	t.Cleanup(func() { podmanTry(t, hosts.HostAURL, "volume", "rm", "-f", vol) })
	ref := p.addr + "/e2e/pullfault:v1"
	before := pushCopy(t, src, ref, "-v", vol+":/data")
	rmB(t, dst)
	t.Cleanup(func() { podmanTry(t, hosts.HostBURL, "volume", "rm", "-f", vol) })
	criu := largestLayer(t, ref)
	on := func(fault string) func(*http.Request) string {
		return func(r *http.Request) string {
			if isBlobGet(r, criu) {
				return fault
			}
			return noFault
		}
	}
	pullArgs := func(tmp string, extra ...string) []string {
		return append([]string{"--url", hosts.HostBURL, "pull", "--tmpdir", tmp, "--tls-verify=false", "--name", dst}, append(extra, ref)...)
	}

	t.Run("network dropped mid-blob for good", func(t *testing.T) {
		p.set(on(faultDrop))
		tmp := t.TempDir()
		unchanged := nothingLeftOnB(t, tmp)
		r := migrate(t, pullArgs(tmp, fast...)...)
		if r.code != 4 || !strings.Contains(r.stderr, "Error: pulling \""+ref+"\": registry: pulling ") ||
			!strings.Contains(r.stderr, "unexpected EOF") || !strings.Contains(r.stderr, "Transient failure, retrying") {
			t.Fatalf("exit %d, want 4, the dropped blob, retried", r.code)
		}
		if p.count(faultDrop) < 3 {
			t.Fatalf("the blob was fetched %d times, want the first try and 2 retries", p.count(faultDrop))
		}
		unchanged()
	})
	t.Run("tampered in transit", func(t *testing.T) {
		p.set(on(faultFlip))
		tmp := t.TempDir()
		unchanged := nothingLeftOnB(t, tmp)
		r := migrate(t, pullArgs(tmp, fast...)...)
		if r.code != 5 || !strings.Contains(r.stderr, "content does not match its digest") || !strings.Contains(r.stderr, criu) ||
			strings.Contains(r.stderr, "Transient failure") || p.count(faultFlip) != 1 {
			t.Fatalf("exit %d, %d fetches; want 5, a digest mismatch naming %s, not retried", r.code, p.count(faultFlip), criu)
		}
		unchanged()
	})
	t.Run("SIGTERM during the fetch", func(t *testing.T) {
		p.set(on(faultSlow))
		tmp := t.TempDir()
		unchanged := nothingLeftOnB(t, tmp)
		code, log := signalAt(t, pullArgs(tmp), "Fetching", func(c *exec.Cmd) {
			time.Sleep(time.Second) // into the slowed blob
			c.Process.Signal(syscall.SIGTERM)
		})
		if code != 130 || !strings.Contains(log, "Error: interrupted: pulling \""+ref+"\"") || p.count(faultSlow) == 0 {
			t.Fatalf("exit %d, want 130 and an interrupted error", code)
		}
		unchanged()
	})
	t.Run("SIGTERM while the archive streams to podman", func(t *testing.T) {
		p.set(nil)
		tmp := t.TempDir()
		unchanged := nothingLeftOnB(t, tmp)
		code, log := signalAt(t, pullArgs(tmp), "Restoring container", func(c *exec.Cmd) { c.Process.Signal(syscall.SIGTERM) })
		if code != 130 || !strings.Contains(log, "Error: interrupted: pulling \""+ref+"\": streaming the checkpoint to podman: ") {
			t.Fatalf("exit %d, want 130 and an interrupted stream", code)
		}
		unchanged()
	})
	t.Run("SIGTERM while podman restores", func(t *testing.T) {
		p.set(nil)
		tmp := t.TempDir()
		unchanged := nothingLeftOnB(t, tmp)
		code, log := signalAt(t, pullArgs(tmp), "Restoring container", func(c *exec.Cmd) {
			// podman creates the container once it has the whole archive,
			// then CRIU restores into it.
			if !waitContainer(t, hosts.HostBURL, dst) {
				t.Error("podman never created the container")
			}
			c.Process.Signal(syscall.SIGTERM)
		})
		if code == 0 {
			podmanTry(t, hosts.HostBURL, "rm", "-f", dst)
			podmanTry(t, hosts.HostBURL, "volume", "rm", "-f", vol)
			t.Skip("podman-migrate finished before the signal arrived")
		}
		if code != 130 || !strings.Contains(log, "Error: interrupted: pulling \""+ref+"\": restoring: context canceled; podman had restored container ") ||
			!strings.Contains(log, "Removing container "+dst+", left behind by the failed restore") ||
			!strings.Contains(log, "Removing volume "+vol+", left behind by the failed restore") {
			t.Fatalf("exit %d, want 130, the restored container removed again", code)
		}
		unchanged()
	})
	// Last: this one restores the container on B.
	t.Run("network dropped mid-blob once: resumed", func(t *testing.T) {
		var dropped bool
		p.set(func(r *http.Request) string {
			if isBlobGet(r, criu) && !dropped {
				dropped = true
				return faultDrop
			}
			return noFault
		})
		r := migrate(t, pullArgs(t.TempDir())...)
		t.Cleanup(func() {
			podmanTry(t, hosts.HostBURL, "rm", "-f", dst)
			podmanTry(t, hosts.HostBURL, "volume", "rm", "-f", vol)
		})
		if r.code != 0 || !strings.Contains(r.stderr, "failed (unexpected EOF), reconnecting after") || p.count(faultDrop) != 1 {
			t.Fatalf("exit %d, %d drops; want one drop, resumed", r.code, p.count(faultDrop))
		}
		checkContinued(t, hosts.HostBURL, dst, before)
	})
}

// TestCRIURefusalIsExplained: a file the process holds open has another
// size on the target, CRIU refuses the restore, and the error carries
// CRIU's own reason, read before cleanup removed the container's log.
// Nothing is left on B, not the restored volume either.
func TestCRIURefusalIsExplained(t *testing.T) {
	dirA, err := os.MkdirTemp("/var/tmp", "pm-e2e-criu-a-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dirA) })
	conf := filepath.Join(dirA, "app.conf")
	writeFile(t, conf, []byte("aaaa\n"))
	src, vol := "e2e-criu-refusal", "e2e-criu-refusal-vol"
	podman(t, hosts.HostAURL, "run", "-d", "--name", src, "-v", conf+":/etc/app.conf", "-v", vol+":/data", hosts.TestImage,
		"sh", "-c", "exec 3</etc/app.conf; while sleep 1; do :; done")
	t.Cleanup(func() {
		podmanTry(t, hosts.HostAURL, "rm", "-f", src)
		podmanTry(t, hosts.HostAURL, "volume", "rm", "-f", vol)
		podmanTry(t, hosts.HostBURL, "volume", "rm", "-f", vol)
	})
	layout := "oci:" + filepath.Join(stateDir, "criu-refusal") + ":x"
	if r := migrate(t, "--url", hosts.HostAURL, "push", "--leave-running", src, layout); r.code != 0 {
		t.Fatalf("push failed: %s", r.stderr)
	}
	dirB := onB(t, "mktemp -d /var/tmp/pm-e2e-criu-b-XXXXXX")
	onB(t, "echo a-longer-file-than-before > "+dirB+"/app.conf")
	tmp := t.TempDir()
	unchanged := nothingLeftOnB(t, tmp)
	r := migrate(t, "--url", hosts.HostBURL, "pull", "--tmpdir", tmp, "--mount-map", conf+"="+dirB+"/app.conf", layout)
	if r.code != 3 || !strings.Contains(r.stderr, "runc: criu failed") ||
		!strings.Contains(r.stderr, "CRIU's restore log says: Error (criu/files-reg.c:") || !strings.Contains(r.stderr, "File etc/app.conf has bad size 26 (expect 5)") ||
		!strings.Contains(r.stderr, "Removing volume "+vol+", left behind by the failed restore") {
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
