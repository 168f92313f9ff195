//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Host C runs podman 5.4.2 (Debian trixie) in its own mount namespace:
// these tests migrate between it and host A's podman 4.3.1 both ways.

func rmOn(t *testing.T, url, name string) {
	t.Cleanup(func() { podmanTry(t, url, "rm", "-f", name) })
}

// cEnv is the environment C's own podman runs with: C's root, not this
// machine's PATH.
var cEnv = []string{"env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "PODMAN_IGNORE_CGROUPSV1_WARNING=1"}

// podmanCTry runs host C's own podman 5 client inside C's mount namespace:
// host A's 4.3.1 remote client cannot read podman 5's push stream and has
// no --runtime.
func podmanCTry(t *testing.T, args ...string) result {
	t.Helper()
	return runCmd(t, "nsenter", slices.Concat([]string{"-t", hosts.HostCPID, "-m", "--"}, cEnv, []string{"podman"}, args)...)
}

func podmanC(t *testing.T, args ...string) string {
	t.Helper()
	r := podmanCTry(t, args...)
	if r.code != 0 {
		t.Fatalf("podman (C) %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

func serverVersion(t *testing.T, url string) string {
	t.Helper()
	return podman(t, url, "version", "--format", "{{.Server.Version}}")
}

// unchangedOn records a host's containers; the function it returns fails
// the test if they changed since (a refused pull must create nothing).
func unchangedOn(t *testing.T, url string) func() {
	t.Helper()
	before := containerNames(t, url)
	return func() {
		t.Helper()
		if after := containerNames(t, url); !slices.Equal(before, after) {
			t.Fatalf("containers on %s changed: %v -> %v", url, before, after)
		}
	}
}

// crunService starts a second podman 5 service on host C's storage whose
// default runtime is crun, and returns its URL. podman restores an imported
// checkpoint with the service's default runtime, whatever the container
// ran with, so a crun checkpoint needs such a service.
func crunService(t *testing.T) string {
	t.Helper()
	dir := filepath.Dir(strings.TrimPrefix(hosts.HostCURL, "unix://")) // C's /run/podman
	logf, err := os.Create(filepath.Join(dir, "..", "crun-service.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// nsenter -m alone does not fork: the PID is podman's.
	cmd := exec.Command("nsenter", slices.Concat([]string{"-t", hosts.HostCPID, "-m", "--"}, cEnv,
		[]string{"podman", "--runtime", "crun", "system", "service", "--time=0", "unix:///run/podman/crun.sock"})...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	url := "unix://" + filepath.Join(dir, "crun.sock")
	for i := 0; i < 300; i++ {
		if r := podmanTry(t, url, "info", "--format", "{{.Host.OCIRuntime.Name}}"); r.code == 0 {
			if got := strings.TrimSpace(r.stdout); got != "crun" {
				t.Fatalf("second service on C defaults to %q, want crun", got)
			}
			return url
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("crun service on C did not answer (log %s)", logf.Name())
	return ""
}

// TestPodman5BothWays: A (4.3.1) -> C (5.x) and C -> A through the
// registry: running, counter continued, memory intact, rootfs change
// carried, the archive sent to each podman zstd-compressed.
func TestPodman5BothWays(t *testing.T) {
	if v := serverVersion(t, hosts.HostCURL); !strings.HasPrefix(v, "5.") {
		t.Fatalf("host C runs podman %s, want 5.x", v)
	}
	for _, tc := range []struct{ name, from, to string }{
		{"A to C", hosts.HostAURL, hosts.HostCURL},
		{"C to A", hosts.HostCURL, hosts.HostAURL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "e2e-p5-" + strings.ReplaceAll(strings.ToLower(tc.name), " ", "-")
			dst := src + "-dst"
			startWorkloadOn(t, tc.from, src, 32)
			podman(t, tc.from, "exec", src, "sh", "-c", "echo carried-over > /etc/migrated-marker")
			before := readStatus(t, tc.from, src)
			// The two hosts' default networks differ (10.88/16, 10.90/16):
			// the plan drops the recorded address. The archive goes to
			// podman zstd-compressed, which both versions take.
			pushPull(t, tc.from, tc.to, src, dst, hosts.Registry+"/e2e/p5:"+strings.ReplaceAll(strings.ToLower(tc.name), " ", "-"), "--compress", "zstd")
			checkContinued(t, tc.to, dst, before)
			if got := podman(t, tc.to, "exec", dst, "cat", "/etc/migrated-marker"); got != "carried-over" {
				t.Fatalf("root file-system change lost: %q", got)
			}
		})
	}
}

// TestPodman5DirectMove: move without a registry streams podman 5's export
// into podman 4.3.1's restore and the other way round, in one pass: the
// head of either version's archive is what planning needs.
func TestPodman5DirectMove(t *testing.T) {
	for _, tc := range []struct{ name, from, to string }{
		{"A to C", hosts.HostAURL, hosts.HostCURL},
		{"C to A", hosts.HostCURL, hosts.HostAURL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := "e2e-p5-move-" + strings.ReplaceAll(strings.ToLower(tc.name), " ", "-")
			startWorkloadOn(t, tc.from, src, 32)
			podman(t, tc.from, "exec", src, "sh", "-c", "echo carried-over > /etc/migrated-marker")
			before := readStatus(t, tc.from, src)
			rmOn(t, tc.to, src)
			r := moveCmd(t, nil, "--url", tc.from, "--to", tc.to, src)
			if r.code != 0 || !strings.Contains(r.stdout, src+"\tmoved") {
				t.Fatalf("direct move failed: %s", r.stderr)
			}
			checkContinued(t, tc.to, src, before)
			if got := podman(t, tc.to, "exec", src, "cat", "/etc/migrated-marker"); got != "carried-over" {
				t.Fatalf("root file-system change lost: %q", got)
			}
		})
	}
}

// TestPodman5Interop: podman 5's own --create-image checkpoint restores
// through podman-migrate on A, and podman 5 restores what podman-migrate
// pushed from A.
func TestPodman5Interop(t *testing.T) {
	t.Run("podman 5's image into podman-migrate on A", func(t *testing.T) {
		src, dst := "e2e-p5-native", "e2e-p5-native-dst"
		startWorkloadOn(t, hosts.HostCURL, src, 32)
		before := readStatus(t, hosts.HostCURL, src)
		ref := hosts.Registry + "/e2e/p5-native:v1"
		podman(t, hosts.HostCURL, "container", "checkpoint", "--leave-running", "--create-image", ref, src)
		t.Cleanup(func() { podmanTry(t, hosts.HostCURL, "rmi", "-f", ref) })
		podmanC(t, "push", "--tls-verify=false", ref)
		rmOn(t, hosts.HostAURL, dst)
		r := migrate(t, "--url", hosts.HostAURL, "pull", "--tls-verify=false", "--name", dst, ref)
		if r.code != 0 {
			t.Fatalf("pull of podman 5's checkpoint failed: %s", r.stderr)
		}
		checkContinued(t, hosts.HostAURL, dst, before)
	})
	t.Run("ours into plain podman 5", func(t *testing.T) {
		src := "e2e-p5-ours"
		before := startWorkloadOn(t, hosts.HostAURL, src, 32)
		ref := hosts.Registry + "/e2e/p5-ours:v1"
		if r := migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", src, ref); r.code != 0 {
			t.Fatalf("push failed: %s", r.stderr)
		}
		podman(t, hosts.HostAURL, "rm", "-f", src)
		rmOn(t, hosts.HostCURL, src)
		t.Cleanup(func() { podmanTry(t, hosts.HostCURL, "rmi", "-f", ref) })
		podman(t, hosts.HostCURL, "pull", "--tls-verify=false", ref)
		// A's address is outside C's default network: podman 5 must not
		// ask for it. The runtime.name annotation (runc) matches C's
		// default, which podman's restore insists on.
		podman(t, hosts.HostCURL, "container", "restore", "--ignore-static-ip", "--ignore-static-mac", ref)
		checkContinued(t, hosts.HostCURL, src, before)
	})
}

// TestPodman5Crun: crun (built with CRIU on trixie) on host C. podman
// restores with its service's default runtime, and refuses (5.x) or fails
// (4.x) on CRIU images of the other runtime, so pull's plan refuses a
// checkpoint from another runtime than the target's default; a service
// whose default is crun takes a crun checkpoint.
func TestPodman5Crun(t *testing.T) {
	crun := crunService(t)
	src := "e2e-p5-crun"
	before := startWorkloadOn(t, crun, src, 16)
	if rt := podman(t, hosts.HostCURL, "inspect", "--format", "{{.OCIRuntime}}", src); rt != "crun" {
		t.Fatalf("workload runs under %s, want crun", rt)
	}
	ref := hosts.Registry + "/e2e/p5-crun:v1"
	r := migrate(t, "--url", crun, "push", "--leave-running", "--tls-verify=false", src, ref)
	if r.code != 0 {
		t.Fatalf("push failed: %s", r.stderr)
	}
	pinned := strings.TrimSpace(r.stdout)
	if got := inspectRaw(t, ref).Annotations["io.podman.annotations.checkpoint.runtime.name"]; got != "crun" {
		t.Fatalf("runtime.name annotation %q, want crun", got)
	}
	restoredUnderCrun := func(t *testing.T, name string) {
		t.Helper()
		checkContinued(t, hosts.HostCURL, name, before)
		if rt := podman(t, hosts.HostCURL, "inspect", "--format", "{{.OCIRuntime}}", name); rt != "crun" {
			t.Fatalf("%s restored under %s, want crun", name, rt)
		}
	}

	t.Run("C crun to C crun under another name", func(t *testing.T) {
		dst := src + "-dst"
		rmOn(t, hosts.HostCURL, dst)
		if r := migrate(t, "--url", crun, "pull", "--tls-verify=false", "--name", dst, pinned); r.code != 0 {
			t.Fatalf("pull failed: %s", r.stderr)
		}
		restoredUnderCrun(t, dst)
	})
	t.Run("ours into podman 5's own restore under crun", func(t *testing.T) {
		dst := src + "-native"
		rmOn(t, hosts.HostCURL, dst)
		podmanC(t, "pull", "-q", "--tls-verify=false", ref)
		t.Cleanup(func() { podmanCTry(t, "rmi", "-f", ref) })
		podmanC(t, "--runtime", "crun", "container", "restore", "--name", dst, "--ignore-static-ip", "--ignore-static-mac", ref)
		restoredUnderCrun(t, dst)
	})
	t.Run("C crun to A runc is refused", func(t *testing.T) {
		unchanged := unchangedOn(t, hosts.HostAURL)
		r := migrate(t, "--url", hosts.HostAURL, "pull", "--tls-verify=false", "--name", src+"-a", pinned)
		want := "Problem: the checkpoint was taken under crun, and this host's podman restores with its default runtime runc: restore it on a host whose default runtime is crun (containers.conf [engine] runtime)\n"
		if r.code != 5 || !strings.Contains(r.stderr, want) {
			t.Fatalf("exit %d; want 5 and %q", r.code, want)
		}
		unchanged()
	})
	t.Run("A runc to C crun is refused", func(t *testing.T) {
		aref := hosts.Registry + "/e2e/p5-runc:v1"
		pushCopy(t, "e2e-p5-runc", aref)
		unchanged := unchangedOn(t, hosts.HostCURL)
		r := migrate(t, "--url", crun, "pull", "--tls-verify=false", "--name", "e2e-p5-runc-dst", aref)
		want := "Problem: the checkpoint was taken under runc, and this host's podman restores with its default runtime crun: restore it on a host whose default runtime is runc (containers.conf [engine] runtime)\n"
		if r.code != 5 || !strings.Contains(r.stderr, want) {
			t.Fatalf("exit %d; want 5 and %q", r.code, want)
		}
		// Why: podman 5 refuses the same itself.
		podmanC(t, "pull", "-q", "--tls-verify=false", aref)
		t.Cleanup(func() { podmanCTry(t, "rmi", "-f", aref) })
		nr := podmanCTry(t, "--runtime", "crun", "container", "restore", "--name", "e2e-p5-runc-native", aref)
		if nr.code == 0 || !strings.Contains(nr.stderr, `requires runtime: "runc"`) {
			podmanCTry(t, "rm", "-f", "e2e-p5-runc-native")
			t.Fatalf("podman 5 restoring a runc checkpoint under crun: exit %d, %s; the plan's refusal may be too strict now", nr.code, nr.stderr)
		}
		unchanged()
	})
}

// TestPodman5Version: version reports podman 5's server and API versions,
// and the CRIU that C's runtime runs (the first criu on its service's PATH,
// inside C's root).
func TestPodman5Version(t *testing.T) {
	want := serverVersion(t, hosts.HostCURL)
	cv := runCmd(t, "nsenter", slices.Concat([]string{"-t", hosts.HostCPID, "-m", "--"}, cEnv, []string{"criu", "--version"})...)
	r := migrate(t, "--url", hosts.HostCURL, "version", "--format", "json")
	var v struct{ Server map[string]string }
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &v) != nil {
		t.Fatalf("version --format json on C: exit %d, %q", r.code, r.stdout)
	}
	if v.Server["podman"] != want || v.Server["apiVersion"] != want || v.Server["ociRuntime"] != "runc" ||
		v.Server["criu"] == "" || !strings.Contains(cv.stdout, "Version: "+v.Server["criu"]+"\n") {
		t.Fatalf("version on C: %v; want podman and API %s, runc, and C's own criu (%q)", v.Server, want, cv.stdout)
	}
	r = migrate(t, "--url", hosts.HostCURL, "version")
	for _, line := range []string{"  Podman:      " + want + "\n", "  API version: " + want + "\n"} {
		if r.code != 0 || !strings.Contains(r.stdout, line) {
			t.Fatalf("version on C: exit %d, %q lacks %q", r.code, r.stdout, line)
		}
	}
}
