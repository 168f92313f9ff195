//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type manifest struct {
	MediaType string `json:"mediaType"`
	Layers    []struct {
		MediaType   string            `json:"mediaType"`
		Annotations map[string]string `json:"annotations"`
	} `json:"layers"`
	Annotations map[string]string `json:"annotations"`
}

func inspectRaw(t *testing.T, ref string) manifest {
	t.Helper()
	r := runCmd(t, "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+ref)
	if r.code != 0 {
		t.Fatalf("skopeo inspect %s: %s", ref, r.stderr)
	}
	var m manifest
	if err := json.Unmarshal([]byte(r.stdout), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestMigrateThroughRegistry is the main job: push a running container from
// A, pull it on isolated B, and find the process carrying on.
func TestMigrateThroughRegistry(t *testing.T) {
	src, dst := "e2e-basic-src", "e2e-basic-dst"
	startWorkload(t, src)
	podman(t, hosts.HostAURL, "exec", src, "sh", "-c", "echo carried-over > /etc/migrated-marker")
	before := readStatus(t, hosts.HostAURL, src)

	ref := hosts.Registry + "/e2e/basic:v1"
	r := migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", src, ref)
	if r.code != 0 {
		t.Fatalf("push failed: %s", r.stderr)
	}
	out := strings.TrimSpace(r.stdout)
	if !strings.HasPrefix(out, ref+"@sha256:") || strings.Contains(out, "\n") {
		t.Fatalf("push printed %q, want %s@sha256:…", out, ref)
	}
	if state := podman(t, hosts.HostAURL, "inspect", "--format", "{{.State.Status}}", src); state == "running" {
		t.Fatalf("source still running after push without --leave-running")
	}

	m := inspectRaw(t, ref)
	var roles []string
	for _, l := range m.Layers {
		roles = append(roles, l.Annotations["io.podman-migrate.layer.role"])
		if l.MediaType != "application/vnd.oci.image.layer.v1.tar+zstd" {
			t.Errorf("layer media type %s, want zstd", l.MediaType)
		}
	}
	if got := strings.Join(roles, ","); got != "metadata,criu,rootfs" {
		t.Errorf("layer roles %s, want metadata,criu,rootfs", got)
	}
	for k, want := range map[string]string{
		"io.podman.annotations.checkpoint.name":            src,
		"io.podman.annotations.checkpoint.runtime.name":    "runc",
		"io.podman.annotations.checkpoint.rootfsImageName": hosts.TestImage,
		"io.podman.annotations.checkpoint.rawImageName":    hosts.TestImage,
		"org.opencontainers.image.base.name":               hosts.TestImage,
	} {
		if m.Annotations[k] != want {
			t.Errorf("annotation %s = %q, want %q", k, m.Annotations[k], want)
		}
	}
	if !strings.HasPrefix(m.Annotations["org.opencontainers.image.base.digest"], "sha256:") {
		t.Errorf("no base digest annotation: %v", m.Annotations)
	}

	rmB(t, dst)
	r = migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", dst, out)
	if r.code != 0 {
		t.Fatalf("pull failed: %s", r.stderr)
	}
	id := strings.TrimSpace(r.stdout)
	if got := podman(t, hosts.HostBURL, "inspect", "--format", "{{.Id}}", dst); got != id {
		t.Fatalf("pull printed %q, container %s has ID %q", id, dst, got)
	}
	checkContinued(t, hosts.HostBURL, dst, before)
	if got := podman(t, hosts.HostBURL, "exec", dst, "cat", "/etc/migrated-marker"); got != "carried-over" {
		t.Fatalf("root file-system change lost: %q", got)
	}
}

// TestLeaveRunningToOCILayout copies instead of moving, through a local OCI
// layout instead of a registry.
func TestLeaveRunningToOCILayout(t *testing.T) {
	src, dst := "e2e-copy-src", "e2e-copy-dst"
	// A high static address: B's allocator hands out low ones, so the two
	// copies can only share one if --ignore-static-ip were ignored.
	before := startWorkload(t, src, "--ip", "10.88.0.250")
	// Not under /var/tmp: host B has its own.
	dir := filepath.Join(stateDir, "layout")
	r := migrate(t, "--url", hosts.HostAURL, "push", "--leave-running", "--compression-format", "gzip", src, "oci:"+dir+":copy")
	if r.code != 0 {
		t.Fatalf("push failed: %s", r.stderr)
	}
	if !strings.HasPrefix(r.stdout, "oci:"+dir+":copy@sha256:") {
		t.Fatalf("push printed %q", r.stdout)
	}
	// The source never stopped: same process, still counting.
	checkContinued(t, hosts.HostAURL, src, before)

	// Both copies run at once on one network here: B's gets a new address.
	rmB(t, dst)
	r = migrate(t, "--url", hosts.HostBURL, "pull", "--name", dst, "--ignore-static-ip", "--ignore-static-mac",
		"--publish", "127.0.0.1:18099:8080", "oci:"+dir+":copy")
	if r.code != 0 {
		t.Fatalf("pull failed: %s", r.stderr)
	}
	checkContinued(t, hosts.HostBURL, dst, before)
	ipA := podman(t, hosts.HostAURL, "inspect", "--format", "{{.NetworkSettings.IPAddress}}", src)
	ipB := podman(t, hosts.HostBURL, "inspect", "--format", "{{.NetworkSettings.IPAddress}}", dst)
	if ipA == ipB {
		t.Errorf("--ignore-static-ip: both copies have address %s", ipA)
	}
	if ports := podman(t, hosts.HostBURL, "port", dst); !strings.Contains(ports, "127.0.0.1:18099") {
		t.Errorf("--publish not applied: podman port says %q", ports)
	}
}

// TestNamedVolumeTravels: each named volume gets its own layer and arrives
// with its content.
func TestNamedVolumeTravels(t *testing.T) {
	src, dst, vol := "e2e-vol-src", "e2e-vol-dst", "e2e-vol-data"
	t.Cleanup(func() { podmanTry(t, hosts.HostAURL, "volume", "rm", "-f", vol) })
	before := startWorkload(t, src, "-v", vol+":/data")
	podman(t, hosts.HostAURL, "exec", src, "sh", "-c", "echo in-the-volume > /data/hello")
	ref := hosts.Registry + "/e2e/volume:v1"
	if r := migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", src, ref); r.code != 0 {
		t.Fatalf("push failed: %s", r.stderr)
	}
	m := inspectRaw(t, ref)
	last := m.Layers[len(m.Layers)-1].Annotations
	if len(m.Layers) != 4 || last["io.podman-migrate.layer.role"] != "volume" || last["io.podman-migrate.layer.volume"] != vol {
		t.Fatalf("want metadata, criu, rootfs and a volume layer for %s; got %+v", vol, m.Layers)
	}
	rmB(t, dst)
	t.Cleanup(func() { podmanTry(t, hosts.HostBURL, "volume", "rm", "-f", vol) })
	if r := migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", dst, ref); r.code != 0 {
		t.Fatalf("pull failed: %s", r.stderr)
	}
	checkContinued(t, hosts.HostBURL, dst, before)
	if got := podman(t, hosts.HostBURL, "exec", dst, "cat", "/data/hello"); got != "in-the-volume" {
		t.Fatalf("volume content on B: %q", got)
	}
	// The same image again under the same name must be refused, untouched.
	r := migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", dst, ref)
	if r.code != 5 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("second pull: exit %d, stderr %q; want 5, already exists", r.code, r.stderr)
	}
	checkContinued(t, hosts.HostBURL, dst, before)
}

// TestSecondPushSendsOnlyChanges: pushed again, a container sends only
// the layers whose content changed. Its state lives in one named volume
// (the workload's status directory), so that volume and the CRIU images
// change; a second volume and the root filesystem do not, and make the
// same layers as the first push, which the registry is not sent again. The
// second image restores whole on B.
func TestSecondPushSendsOnlyChanges(t *testing.T) {
	src, dst := "e2e-dedup-src", "e2e-dedup-dst"
	state, data := "e2e-dedup-state", "e2e-dedup-data"
	for _, v := range []string{state, data} {
		t.Cleanup(func() { podmanTry(t, hosts.HostAURL, "volume", "rm", "-f", v) })
	}
	before := startWorkload(t, src, "-v", state+":/workload", "-v", data+":/data")
	podman(t, hosts.HostAURL, "exec", src, "sh", "-c", "head -c 8388608 /dev/urandom > /data/blob")
	type layer struct {
		Role, Volume, Digest string
		Size                 int64
		Sent                 bool
	}
	type pushed struct {
		Digest string
		Bytes  map[string]int64
		Layers []layer
	}
	push := func(tag string) (pushed, map[string]layer) {
		r := migrate(t, "--url", hosts.HostAURL, "push", "--leave-running", "--format", "json", "--tls-verify=false", src, hosts.Registry+"/e2e/dedup:"+tag)
		if r.code != 0 {
			t.Fatalf("push %s failed: %s", tag, r.stderr)
		}
		var p pushed
		if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
			t.Fatalf("push --format json: %v in %q", err, r.stdout)
		}
		byName := map[string]layer{}
		for _, l := range p.Layers {
			byName[l.Role+"/"+l.Volume] = l
		}
		for _, k := range []string{"metadata/", "criu/", "rootfs/", "volume/" + state, "volume/" + data} {
			if _, ok := byName[k]; !ok {
				t.Fatalf("push %s: no %s layer in %+v", tag, k, p.Layers)
			}
		}
		return p, byName
	}
	first, l1 := push("v1")
	for _, l := range first.Layers {
		if !l.Sent {
			t.Fatalf("first push: the %s layer was not sent, but the registry cannot have had it", l.Role)
		}
	}
	if l1["volume/"+data].Size < 8<<20 {
		t.Fatalf("the %s layer holds %d bytes, want the 8 MiB written", data, l1["volume/"+data].Size)
	}
	second, l2 := push("v2")
	var sent int64
	for k, l := range l2 {
		changed := l.Digest != l1[k].Digest
		if want := k != "volume/"+data && k != "rootfs/"; changed != want {
			t.Errorf("%s layer: changed %t, want %t (%s, then %s)", k, changed, want, l1[k].Digest, l.Digest)
		}
		if l.Sent != changed {
			t.Errorf("%s layer: sent %t, but changed %t", k, l.Sent, changed)
		}
		if l.Sent {
			sent += l.Size
		}
	}
	if second.Bytes["sent"] != sent || sent >= second.Bytes["image"]-l2["volume/"+data].Size {
		t.Errorf("second push: bytes.sent %d, the sent layers hold %d, the image %d", second.Bytes["sent"], sent, second.Bytes["image"])
	}
	if t.Failed() {
		t.FailNow()
	}

	rmB(t, dst)
	for _, v := range []string{state, data} {
		t.Cleanup(func() { podmanTry(t, hosts.HostBURL, "volume", "rm", "-f", v) })
	}
	if r := migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", dst, hosts.Registry+"/e2e/dedup:v2@"+second.Digest); r.code != 0 {
		t.Fatalf("pull of the second image failed: %s", r.stderr)
	}
	checkContinued(t, hosts.HostBURL, dst, before)
	if got := podman(t, hosts.HostBURL, "exec", dst, "sh", "-c", "wc -c < /data/blob"); got != "8388608" {
		t.Fatalf("volume file on B has %q bytes, want 8388608", got)
	}
}

// TestPodmanRestoresOurImage: plain `podman pull` + `podman container
// restore IMAGE` on B restores what podman-migrate pushed.
func TestPodmanRestoresOurImage(t *testing.T) {
	src := "e2e-interop1"
	startWorkload(t, src)
	before := readStatus(t, hosts.HostAURL, src)
	ref := hosts.Registry + "/e2e/interop1:v1"
	if r := migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", src, ref); r.code != 0 {
		t.Fatalf("push failed: %s", r.stderr)
	}
	podman(t, hosts.HostAURL, "rm", "-f", src)

	rmB(t, src)
	t.Cleanup(func() { podmanTry(t, hosts.HostBURL, "rmi", "-f", ref) })
	podman(t, hosts.HostBURL, "pull", "--tls-verify=false", ref)
	podman(t, hosts.HostBURL, "container", "restore", ref)
	checkContinued(t, hosts.HostBURL, src, before)
}

// TestWePullPodmansImage: podman-migrate pull restores, on isolated B, what
// `podman container checkpoint --create-image` + `podman push` made on A.
func TestWePullPodmansImage(t *testing.T) {
	src, dst := "e2e-interop2", "e2e-interop2-dst"
	startWorkload(t, src)
	before := readStatus(t, hosts.HostAURL, src)
	ref := hosts.Registry + "/e2e/podman-made:v1"
	podman(t, hosts.HostAURL, "container", "checkpoint", "--create-image", ref, src)
	t.Cleanup(func() { podmanTry(t, hosts.HostAURL, "rmi", "-f", ref) })
	podman(t, hosts.HostAURL, "push", "--tls-verify=false", ref)

	rmB(t, dst)
	r := migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", dst, ref)
	if r.code != 0 {
		t.Fatalf("pull of podman's checkpoint image failed: %s", r.stderr)
	}
	if !strings.Contains(r.stderr, "Removed source-host paths from config.dump") {
		t.Errorf("podman's image kept its host paths? stderr: %s", r.stderr)
	}
	checkContinued(t, hosts.HostBURL, dst, before)
}

// TestBadInput: clear errors, non-zero exits, nothing created, nothing lost.
func TestBadInput(t *testing.T) {
	t.Run("push missing container", func(t *testing.T) {
		r := migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", "e2e-no-such-container", hosts.Registry+"/e2e/none:v1")
		if r.code != 5 || !strings.Contains(r.stderr, "no such container") {
			t.Fatalf("exit %d, stderr %q; want 5 and 'no such container'", r.code, r.stderr)
		}
		if rr := runCmd(t, "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+hosts.Registry+"/e2e/none:v1"); rr.code == 0 {
			t.Fatal("an image was pushed for a missing container")
		}
	})

	t.Run("pull image that is not a checkpoint", func(t *testing.T) {
		ref := hosts.Registry + "/e2e/plain:v1"
		podman(t, hosts.HostAURL, "push", "--tls-verify=false", hosts.TestImage, ref)
		unchanged := unchangedOnB(t)
		r := migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", "e2e-plain", ref)
		if r.code != 5 || !strings.Contains(r.stderr, "not a checkpoint image") {
			t.Fatalf("exit %d, stderr %q; want 5 and 'not a checkpoint image'", r.code, r.stderr)
		}
		unchanged()
	})

	t.Run("push to unreachable registry leaves the container alone", func(t *testing.T) {
		src := "e2e-unreachable"
		before := startWorkload(t, src)
		r := migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", src, "127.0.0.1:1/e2e/x:v1")
		if r.code != 4 {
			t.Fatalf("exit %d, want 4 (registry)", r.code)
		}
		if !strings.Contains(r.stderr, "127.0.0.1:1") || !strings.Contains(r.stderr, "not touched") {
			t.Fatalf("error does not name the registry and say the container was left alone: %q", r.stderr)
		}
		if strings.Contains(r.stderr, "Checkpointing") {
			t.Fatalf("checkpointed although the registry was known unreachable: %q", r.stderr)
		}
		checkContinued(t, hosts.HostAURL, src, before)
	})

	t.Run("push refused by the registry rolls back", func(t *testing.T) {
		src := "e2e-readonly"
		before := startWorkload(t, src)
		ro := startReadOnlyRegistry(t)
		r := migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", src, ro+"/e2e/x:v1")
		if r.code != 4 {
			t.Fatalf("exit %d, want 4 (registry)", r.code)
		}
		if !strings.Contains(r.stderr, "Checkpointing") || !strings.Contains(r.stderr, "running again") {
			t.Fatalf("want a checkpoint, a refused upload and a rollback; stderr %q", r.stderr)
		}
		// Restored from its checkpoint: the same process, not a restart.
		checkContinued(t, hosts.HostAURL, src, before)
	})

	t.Run("pull refused by the signature policy", func(t *testing.T) {
		ref := hosts.Registry + "/e2e/policy:v1"
		pushCopy(t, "e2e-policy-src", ref)
		// containers/image prefers $HOME/.config/containers/policy.json.
		home := t.TempDir()
		dir := filepath.Join(home, ".config", "containers")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "policy.json"), []byte(`{"default":[{"type":"reject"}]}`), 0o644); err != nil {
			t.Fatal(err)
		}
		unchanged := unchangedOnB(t)
		r := migrateEnv(t, []string{"HOME=" + home}, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", "e2e-policy-dst", ref)
		if r.code != 5 || !strings.Contains(r.stderr, "rejected by policy") || !strings.Contains(r.stderr, "hint: the signature policy") {
			t.Fatalf("exit %d, stderr %q; want 5 and the policy's rejection", r.code, r.stderr)
		}
		unchanged()
	})

	t.Run("pull of a tampered image", func(t *testing.T) {
		ref := hosts.Registry + "/e2e/tamper:v1"
		pushCopy(t, "e2e-tamper-src", ref)
		// Flip bytes inside the CRIU layer as the registry stores it; the
		// registry serves it as it is.
		var raw struct {
			Layers []struct{ Digest string } `json:"layers"`
		}
		out := runCmd(t, "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+ref)
		if err := json.Unmarshal([]byte(out.stdout), &raw); err != nil || len(raw.Layers) < 2 {
			t.Fatalf("manifest: %v %s", err, out.stdout)
		}
		hex := strings.TrimPrefix(raw.Layers[1].Digest, "sha256:")
		blob := filepath.Join(stateDir, "registry-data", "docker", "registry", "v2", "blobs", "sha256", hex[:2], hex, "data")
		f, err := os.OpenFile(blob, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := f.Stat()
		if _, err := f.WriteAt([]byte("tampered"), fi.Size()/2); err != nil {
			t.Fatal(err)
		}
		f.Close()
		unchanged := unchangedOnB(t)
		r := migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", "e2e-tamper-dst", ref)
		// Bad input (5), not a registry failure: fetching again gives the
		// same bytes. The error names the altered blob.
		if r.code != 5 || !strings.Contains(r.stderr, "content does not match its digest") ||
			!strings.Contains(r.stderr, raw.Layers[1].Digest) || !strings.Contains(r.stderr, "hint: the image was altered") {
			t.Fatalf("exit %d, stderr %q; want 5, a digest mismatch naming %s, and the hint", r.code, r.stderr, raw.Layers[1].Digest)
		}
		unchanged()
	})

	t.Run("pull of missing image", func(t *testing.T) {
		r := migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", hosts.Registry+"/e2e/never-pushed:v1")
		if r.code != 4 || !strings.Contains(r.stderr, "never-pushed") {
			t.Fatalf("exit %d, stderr %q; want 4 naming the image", r.code, r.stderr)
		}
	})
}

// TestFailedRestoreLeavesNothing: a restore that podman refuses on B
// leaves no half-made container. podman's own image records no bind-mount
// kinds, so the plan passes a file where the checkpoint had a directory,
// and runc refuses to mount it.
func TestFailedRestoreLeavesNothing(t *testing.T) {
	if hosts.HostAData == "" {
		t.Fatal("hosts.sh gave no HOST_A_DATA directory")
	}
	src, dst := "e2e-bind-src", "e2e-bind-dst"
	startWorkload(t, src, "-v", hosts.HostAData+":/data")
	ref := hosts.Registry + "/e2e/bind:v1"
	podman(t, hosts.HostAURL, "container", "checkpoint", "--leave-running", "--create-image", ref, src)
	t.Cleanup(func() { podmanTry(t, hosts.HostAURL, "rmi", "-f", ref) })
	podman(t, hosts.HostAURL, "push", "--tls-verify=false", ref)
	// On B the path exists, as a file.
	onB(t, "mkdir -p $(dirname "+hosts.HostAData+") && echo not-a-dir > "+hosts.HostAData)
	t.Cleanup(func() { runCmd(t, "nsenter", "-t", hosts.HostBPID, "-m", "--", "rm", "-f", hosts.HostAData) })
	unchanged := unchangedOnB(t)
	r := migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", dst, ref)
	if r.code != 3 || !strings.Contains(r.stderr, "podman:") {
		t.Fatalf("exit %d, stderr %q; want 3 with podman's error", r.code, r.stderr)
	}
	unchanged()
}

// TestHarnessReproducesCrossHostBug guards the harness's realism: podman's
// own export, imported as it is on B, must still fail on the source host's
// paths (HOST-NOTES). Every migration test above passes on a host where
// the plain podman route fails.
func TestHarnessReproducesCrossHostBug(t *testing.T) {
	src, dst := "e2e-raw-export", "e2e-raw-export-b"
	startWorkload(t, src)
	archive := filepath.Join(stateDir, "raw-export.tar")
	podman(t, hosts.HostAURL, "container", "checkpoint", "--leave-running", "--export", archive, src)
	rmB(t, dst)
	r := podmanTry(t, hosts.HostBURL, "container", "restore", "--import", archive, "--name", dst)
	if r.code == 0 {
		t.Fatal("podman restored a raw export from host A on host B: the harness no longer shows the cross-host bug")
	}
	// conmon's complaint reaches the service's log, not the client.
	log, err := os.ReadFile(filepath.Join(stateDir, "b", "service.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(log), "Failed to write conmon pidfile") {
		t.Fatalf("restore failed (%s), but host B's log does not show the conmon pid file error", strings.TrimSpace(r.stderr))
	}
}

// TestDifferentBaseImageRefused: B has the checkpoint's base image name,
// but as another image. pull stops before podman with a clear error and
// creates nothing.
func TestDifferentBaseImageRefused(t *testing.T) {
	base, src := "localhost/pm-e2e-base:v1", "e2e-base-src"
	podman(t, hosts.HostAURL, "create", "--name", "e2e-base-tmp", hosts.TestImage)
	podman(t, hosts.HostAURL, "commit", "-q", "e2e-base-tmp", base)
	podman(t, hosts.HostAURL, "rm", "e2e-base-tmp")
	t.Cleanup(func() { podmanTry(t, hosts.HostAURL, "rmi", "-f", base) })
	podman(t, hosts.HostBURL, "tag", hosts.TestImage, base) // same name, other image
	t.Cleanup(func() { podmanTry(t, hosts.HostBURL, "rmi", base) })

	podman(t, hosts.HostAURL, "run", "-d", "--name", src, base, "/bin/workload")
	t.Cleanup(func() { podmanTry(t, hosts.HostAURL, "rm", "-f", src) })
	ref := hosts.Registry + "/e2e/base:v1"
	if r := migrate(t, "--url", hosts.HostAURL, "push", "--leave-running", "--tls-verify=false", src, ref); r.code != 0 {
		t.Fatalf("push failed: %s", r.stderr)
	}
	unchanged := unchangedOnB(t)
	r := migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--name", "e2e-base-dst", ref)
	if r.code != 5 || !strings.Contains(r.stderr, "base image differs") || !strings.Contains(r.stderr, base) {
		t.Fatalf("exit %d, stderr %q; want 5 naming %s", r.code, r.stderr, base)
	}
	unchanged()
}

// TestLocalTransports moves a container through an OCI archive file and a
// dir: layout, with the CRIU options that must reach both ends.
func TestLocalTransports(t *testing.T) {
	for _, tr := range []string{"oci-archive", "dir"} {
		t.Run(tr, func(t *testing.T) {
			src, dst := "e2e-"+tr+"-src", "e2e-"+tr+"-dst"
			before := startWorkload(t, src)
			dest := tr + ":" + filepath.Join(stateDir, "transport-"+tr)
			r := migrate(t, "--url", hosts.HostAURL, "push", "--tcp-established", "--file-locks", src, dest)
			if r.code != 0 {
				t.Fatalf("push failed: %s", r.stderr)
			}
			if !strings.HasPrefix(r.stdout, dest+"@sha256:") {
				t.Fatalf("push printed %q, want %s@sha256:…", r.stdout, dest)
			}
			rmB(t, dst)
			if r := migrate(t, "--url", hosts.HostBURL, "pull", "--name", dst, dest); r.code != 0 {
				t.Fatalf("pull failed: %s", r.stderr)
			}
			checkContinued(t, hosts.HostBURL, dst, before)
			// The services' access logs show what each side was asked for.
			wantRequest(t, "a", "/checkpoint?", "fileLocks=true", "tcpEstablished=true")
			wantRequest(t, "b", "/containers/import/restore?", "fileLocks=true", "tcpEstablished=true", "name="+dst)
		})
	}
}

// wantRequest asserts that host's podman service logged a request whose
// line contains path and every one of params.
func wantRequest(t *testing.T, host, path string, params ...string) {
	t.Helper()
	log, err := os.ReadFile(filepath.Join(stateDir, host, "service.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(log), "\n") {
		if !strings.Contains(line, path) {
			continue
		}
		all := true
		for _, p := range params {
			all = all && strings.Contains(line, p)
		}
		if all {
			return
		}
	}
	t.Errorf("host %s's podman was never asked %s with %v", host, path, params)
}
