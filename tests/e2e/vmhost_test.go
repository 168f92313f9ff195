//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// VM hosts: CRIU that copes with hardware breakpoints that never fire and
// with inet sockets on kernels >= 6.16, `check`, and bounded checkpoints.

// TestCheck: `podman-migrate check` passes on hosts A (podman 4.3.1), B
// (isolated) and C (podman 5), through each one's socket, says what it
// found, and leaves no container behind. The JSON runs are TestMain's
// (checkHosts), made before the first test; the text runs are here.
func TestCheck(t *testing.T) {
	if len(hostChecks) != 3 {
		t.Fatalf("TestMain checked %d hosts, want 3", len(hostChecks))
	}
	for _, h := range hostChecks {
		t.Run(h.name, func(t *testing.T) {
			var rep map[string]any
			if err := json.Unmarshal([]byte(h.report), &rep); err != nil {
				t.Fatalf("check --format json printed %q: %v", h.report, err)
			}
			if rep["ok"] != true {
				t.Fatalf("check reported not ok: %s", h.report)
			}
			for _, want := range []string{"checkpoint", "restore", "4.2"} {
				if !strings.Contains(strings.ToLower(h.report), want) {
					t.Errorf("check's report does not mention %q: %s", want, h.report)
				}
			}
			if h.before == nil || !slices.Equal(h.after, h.before) {
				t.Fatalf("check left containers behind (or they could not be listed): %v -> %v", h.before, h.after)
			}
			if text := migrate(t, "--url", h.url, "check", "--image", hosts.TestImage); text.code != 0 || text.stdout == "" {
				t.Fatalf("check (text) failed: exit %d: %s", text.code, text.stderr)
			}
		})
	}
}

// startServer runs, on url, the workload beside busybox httpd serving a
// page that holds token, and waits until both work.
func startServer(t *testing.T, url, name, token string) status {
	t.Helper()
	script := "mkdir -p /www && echo " + token + " > /www/index.html && httpd -p 8080 -h /www && exec /bin/workload -mem 32 -sum-every 5"
	podman(t, url, "run", "-d", "--name", name, hosts.TestImage, "sh", "-c", script)
	t.Cleanup(func() { podmanTry(t, url, "rm", "-f", name) })
	st := waitStatus(t, url, name, func(s status) bool { return s.Counter >= 5 })
	if got := fetchPage(t, url, name); got != token {
		t.Fatalf("server on %s answered %q before the move, want %q", url, got, token)
	}
	return st
}

// fetchPage asks the container's own server for its page over TCP.
func fetchPage(t *testing.T, url, name string) string {
	t.Helper()
	var r result
	for i := 0; i < 50; i++ {
		r = podmanTry(t, url, "exec", name, "wget", "-q", "-O", "-", "http://127.0.0.1:8080/index.html")
		if r.code == 0 {
			return strings.TrimSpace(r.stdout)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no answer from the server in %s on %s: %s", name, url, r.stderr)
	return ""
}

// TestTCPServerMigrates: a container holding a listening TCP socket (CRIU
// 4.1 cannot dump one on kernels >= 6.16) moves A to B and A to C and back,
// its process continuing and the server answering on the target.
func TestTCPServerMigrates(t *testing.T) {
	for _, tc := range []struct{ name, from, to string }{
		{"A to B", hosts.HostAURL, hosts.HostBURL},
		{"A to C", hosts.HostAURL, hosts.HostCURL},
		{"C to A", hosts.HostCURL, hosts.HostAURL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tag := strings.ReplaceAll(strings.ToLower(tc.name), " ", "-")
			src, dst := "e2e-tcp-"+tag, "e2e-tcp-"+tag+"-dst"
			token := "served-" + tag + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
			before := startServer(t, tc.from, src, token)
			pushPull(t, tc.from, tc.to, src, dst, hosts.Registry+"/e2e/tcp:"+tag)
			checkContinued(t, tc.to, dst, before)
			if got := fetchPage(t, tc.to, dst); got != token {
				t.Fatalf("server answered %q after the move, want %q", got, token)
			}
		})
	}
}

// TestCheckpointHangEndsInTime: on host B, a criu that never answers the
// runtime's checkpoint (as CRIU < 4.2 does on VM guests): push ends within
// its --checkpoint-timeout with exit 3 and names `podman-migrate check`,
// the container runs on with the same process, and nothing of the stuck
// CRIU is left.
func TestCheckpointHangEndsInTime(t *testing.T) {
	const marker = "3599.25" // the stuck criu's sleep, to find leftovers
	real, err := os.ReadFile("/usr/local/sbin/criu")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(string(real), "\n", 2)
	// Only criu started by the runtime's checkpoint hangs: podman's own
	// version probe and every restore still work.
	hang := lines[0] + "\n" +
		"if tr '\\0' ' ' </proc/$PPID/cmdline | grep -q ' checkpoint '; then exec sleep " + marker + "; fi\n" + lines[1]
	wrapper := filepath.Join(stateDir, "criu-hang")
	if err := os.WriteFile(wrapper, []byte(hang), 0o755); err != nil {
		t.Fatal(err)
	}
	name := "e2e-hang"
	before := startWorkloadOn(t, hosts.HostBURL, name, 16)
	nsB := []string{"-t", hosts.HostBPID, "-m", "--"}
	if r := runCmd(t, "nsenter", append(nsB, "mount", "--bind", wrapper, "/usr/local/sbin/criu")...); r.code != 0 {
		t.Fatalf("mounting the hanging criu in host B: %s", r.stderr)
	}
	t.Cleanup(func() { runCmd(t, "nsenter", append(nsB, "umount", "/usr/local/sbin/criu")...) })

	start := time.Now()
	r := migrate(t, "--url", hosts.HostBURL, "push", "--tls-verify=false", "--checkpoint-timeout", "20s", name, hosts.Registry+"/e2e/hang:v1")
	took := time.Since(start)
	t.Logf("push returned after %v", took.Round(time.Second))
	if r.code != 3 {
		t.Fatalf("push with a stuck CRIU: exit %d, want 3 (podman failed)", r.code)
	}
	if !strings.Contains(r.stderr, "podman-migrate check") || !strings.Contains(r.stderr, "CRIU") {
		t.Errorf("the error does not name CRIU and `podman-migrate check`: %s", r.stderr)
	}
	// The bound is the flag plus a grace for ending CRIU and rolling back,
	// not a timing measurement.
	if took > 3*time.Minute {
		t.Errorf("push took %v with --checkpoint-timeout 20s", took)
	}
	if out, _ := exec.Command("pgrep", "-f", "sleep "+marker).Output(); len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("the stuck criu is still there: pids %s", out)
	}
	runCmd(t, "nsenter", append(nsB, "umount", "/usr/local/sbin/criu")...)
	checkContinued(t, hosts.HostBURL, name, before)
	tagMissing(t, hosts.Registry+"/e2e/hang:v1")
}
