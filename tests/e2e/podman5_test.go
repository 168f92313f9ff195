//go:build e2e

package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// Host C runs podman 5.4.2 (Debian trixie) in its own mount namespace:
// these tests migrate between it and host A's podman 4.3.1 both ways.

func rmOn(t *testing.T, url, name string) {
	t.Cleanup(func() { podmanTry(t, url, "rm", "-f", name) })
}

// podmanC runs host C's own podman 5 client inside C's mount namespace and
// root: host A's 4.3.1 remote client cannot read podman 5's push stream,
// and has no --runtime.
func podmanC(t *testing.T, args ...string) string {
	t.Helper()
	r := runCmd(t, "nsenter", append([]string{"-t", hosts.HostCPID, "-m", "-r", "--", "env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "podman"}, args...)...)
	if r.code != 0 {
		t.Fatalf("podman (C) %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

func serverVersion(t *testing.T, url string) string {
	t.Helper()
	return podman(t, url, "version", "--format", "{{.Server.Version}}")
}

// TestPodman5BothWays: A (4.3.1) -> C (5.x) and C -> A through the
// registry: running, counter continued, memory intact, rootfs change
// carried.
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
			ref := hosts.Registry + "/e2e/p5:" + strings.ReplaceAll(strings.ToLower(tc.name), " ", "-")
			r := migrate(t, "--url", tc.from, "push", "--tls-verify=false", src, ref)
			if r.code != 0 {
				t.Fatalf("push failed: %s", r.stderr)
			}
			rmOn(t, tc.to, dst)
			// The two hosts' default networks differ (10.88/16, 10.90/16):
			// the plan drops the recorded address.
			r = migrate(t, "--url", tc.to, "pull", "--tls-verify=false", "--name", dst, strings.TrimSpace(r.stdout))
			if r.code != 0 {
				t.Fatalf("pull failed: %s", r.stderr)
			}
			checkContinued(t, tc.to, dst, before)
			if got := podman(t, tc.to, "exec", dst, "cat", "/etc/migrated-marker"); got != "carried-over" {
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
		// ask for it.
		podman(t, hosts.HostCURL, "container", "restore", "--ignore-static-ip", "--ignore-static-mac", ref)
		checkContinued(t, hosts.HostCURL, src, before)
	})
}

// TestPodman5Crun: crun (built with CRIU on trixie) as host C's runtime: a
// container under crun is checkpointed and pushed by podman-migrate and
// restored under crun; a service whose default is runc is refused.
func TestPodman5Crun(t *testing.T) {
	src, dst := "e2e-p5-crun", "e2e-p5-crun-dst"
	rmOn(t, hosts.HostCURL, dst)
	podmanC(t, "--runtime", "crun", "run", "-d", "--name", src, hosts.TestImage, "/bin/workload", "-mem", "32", "-sum-every", "5")
	rmOn(t, hosts.HostCURL, src)
	before := waitStatus(t, hosts.HostCURL, src, func(s status) bool { return s.Counter >= 5 })
	ref := hosts.Registry + "/e2e/p5-crun:v1"
	r := migrate(t, "--url", hosts.HostCURL, "push", "--leave-running", "--tls-verify=false", src, ref)
	if r.code != 0 {
		t.Fatalf("push failed: %s", r.stderr)
	}
	if got := inspectRaw(t, ref).Annotations["io.podman.annotations.checkpoint.runtime.name"]; got != "crun" {
		t.Fatalf("runtime.name annotation %q, want crun (what the container ran with)", got)
	}
	// podman restores with its default runtime (runc on C), and crun's
	// CRIU images do not restore under runc: pull refuses up front.
	unchanged := func() func() {
		before := podman(t, hosts.HostCURL, "ps", "-a", "--format", "{{.Names}}")
		return func() {
			if after := podman(t, hosts.HostCURL, "ps", "-a", "--format", "{{.Names}}"); after != before {
				t.Fatalf("containers on C changed: %q -> %q", before, after)
			}
		}
	}()
	pulled := strings.TrimSpace(r.stdout)
	r = migrate(t, "--url", hosts.HostCURL, "pull", "--tls-verify=false", "--name", dst, pulled)
	if r.code != 5 || !strings.Contains(r.stderr, "taken under crun") || !strings.Contains(r.stderr, "default runtime runc") {
		t.Fatalf("exit %d; want 5 and the runtime mismatch", r.code)
	}
	unchanged()
	// Under crun, podman 5 restores our image as it is.
	podman(t, hosts.HostCURL, "rm", "-f", src)
	t.Cleanup(func() { podmanTry(t, hosts.HostCURL, "rmi", "-f", ref) })
	podmanC(t, "pull", "--tls-verify=false", ref)
	podmanC(t, "--runtime", "crun", "container", "restore", "--ignore-static-ip", "--ignore-static-mac", ref)
	checkContinued(t, hosts.HostCURL, src, before)
	if rt := podman(t, hosts.HostCURL, "inspect", "--format", "{{.OCIRuntime}}", src); rt != "crun" {
		t.Fatalf("restored under %s, want crun", rt)
	}
}

// TestPodman5Version: version reports podman 5's server and API versions.
func TestPodman5Version(t *testing.T) {
	want := serverVersion(t, hosts.HostCURL)
	r := migrate(t, "--url", hosts.HostCURL, "version", "--format", "json")
	var v struct{ Server map[string]string }
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &v) != nil || v.Server["podman"] != want || !strings.HasPrefix(v.Server["apiVersion"], "5.") {
		t.Fatalf("version on C: %q, want podman %s", r.stdout, want)
	}
}
