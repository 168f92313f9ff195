//go:build e2e

package e2e

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
)

// The CRI-O tier: a CRI-O of its own (tests/crio.sh, built by
// contrib/setup-crio.sh from the shared third-party source), driven by
// crictl as a kubelet would drive it, with no kubelet.

// crio is one running CRI-O.
type crio struct {
	crictl, config, endpoint string
}

// startCRIO starts CRI-O for one test, or skips the test, saying why, when
// the CRI-O source is not there (a user's own clone). With the source
// present, a CRI-O that was not built fails the test: CI builds it.
func startCRIO(t *testing.T) *crio {
	t.Helper()
	return startCRIOEnv(t)
}

// startCRIOEnv is startCRIO with tests/crio.sh's settings in env
// (NAME=VALUE); each such CRI-O has a state directory of its own.
func startCRIOEnv(t *testing.T, env ...string) *crio {
	t.Helper()
	check := runCmd(t, "bash", filepath.Join(repo, "contrib", "setup-crio.sh"), "--check")
	if reason, ok := strings.CutPrefix(strings.TrimSpace(check.stdout), "SKIP: "); ok {
		fmt.Printf("SKIP %s: %s\n", t.Name(), reason)
		t.Skip(reason)
	}
	if check.code != 0 {
		t.Fatalf("CRI-O is not built (run `make setup-host`): %s", check.stderr)
	}
	dir := filepath.Join(stateDir, "crio-"+strings.ToLower(t.Name()))
	if len(env) > 0 {
		dir += "-" + strings.ToLower(strings.NewReplacer("=", "-", "_", "-").Replace(strings.Join(env, "-")))
	}
	r := runCmdEnv(t, env, "bash", filepath.Join(repo, "tests", "crio.sh"), "up", dir, hosts.Registry)
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "crio.log")); err == nil {
				t.Logf("CRI-O log (last 4000 bytes):\n%s", tail(string(b), 4000))
			}
		}
		runCmd(t, "bash", filepath.Join(repo, "tests", "crio.sh"), "down", dir)
	})
	if r.code != 0 {
		t.Fatalf("starting CRI-O: exit %d: %s", r.code, r.stderr)
	}
	return &crio{crictl: "/var/lib/podman-migrate/crio/bin/crictl", config: filepath.Join(dir, "crictl.yaml"), endpoint: "unix://" + filepath.Join(dir, "crio.sock")}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (c *crio) try(t *testing.T, args ...string) result {
	t.Helper()
	return runCmd(t, c.crictl, append([]string{"--config", c.config}, args...)...)
}

func (c *crio) run(t *testing.T, args ...string) string {
	t.Helper()
	r := c.try(t, args...)
	if r.code != 0 {
		t.Fatalf("crictl %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return strings.TrimSpace(r.stdout)
}

// writeConfig writes v as a crictl config file.
func writeConfig(t *testing.T, dir, name string, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// restorePod does with pod what the kubelet would: a sandbox with its own
// network namespace (no hostNetwork) and no shared PID namespace, each
// image volume pulled through the CRI as the kubelet's getImageVolumes
// does (before any container, mounted or not), then the container created
// from its image, with every volume mounted where the manifest says (an
// emptyDir is a fresh directory) and the kubelet's own /etc/hosts. It
// returns the container's ID.
func (c *crio) restorePod(t *testing.T, pod *corev1.Pod, images map[string]ckpttest.ImageVolume) string {
	t.Helper()
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("manifest has %d containers, want one", len(pod.Spec.Containers))
	}
	return c.restorePodAll(t, pod, images)[0]
}

// restorePodAll is restorePod for a Pod of one or more containers, each
// created and started in the manifest's order, as the kubelet does; it
// returns their IDs.
func (c *crio) restorePodAll(t *testing.T, pod *corev1.Pod, images map[string]ckpttest.ImageVolume) []string {
	t.Helper()
	ids, r := c.tryRestorePod(t, pod, images)
	if r.code != 0 {
		t.Fatalf("crictl create: exit %d: %s", r.code, r.stderr)
	}
	return ids
}

// tryRestorePod is restorePodAll, returning the failed crictl create's
// result instead of failing the test when CRI-O refuses a container.
func (c *crio) tryRestorePod(t *testing.T, pod *corev1.Pod, images map[string]ckpttest.ImageVolume) ([]string, result) {
	t.Helper()
	if pod.Spec.HostNetwork || pod.Spec.ShareProcessNamespace != nil && *pod.Spec.ShareProcessNamespace {
		t.Fatalf("manifest asks for hostNetwork or a shared PID namespace")
	}
	if len(pod.Spec.InitContainers) > 0 || len(pod.Spec.Containers) == 0 {
		t.Fatalf("manifest has %d init containers and %d containers, want none and some", len(pod.Spec.InitContainers), len(pod.Spec.Containers))
	}
	dir := t.TempDir()
	ns := map[string]int{"network": 0, "pid": 1} // POD, CONTAINER: the kubelet's for this pod
	sandbox := map[string]any{
		"metadata":      map[string]any{"name": pod.Name, "namespace": "default", "uid": "e2e-" + pod.Name, "attempt": 0},
		"hostname":      pod.Name,
		"log_directory": dir,
		"linux":         map[string]any{"security_context": map[string]any{"namespace_options": ns}},
	}
	podCfg := writeConfig(t, dir, "pod.json", sandbox)
	podID := c.run(t, "runp", podCfg)
	t.Cleanup(func() { c.try(t, "rmp", "-f", podID) })

	volumes := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		iv, image := images[v.Name]
		switch {
		case v.HostPath != nil:
			volumes[v.Name] = v.HostPath.Path
		case v.EmptyDir != nil:
			volumes[v.Name] = filepath.Join(dir, "emptydir-"+v.Name)
			if err := os.MkdirAll(volumes[v.Name], 0o755); err != nil {
				t.Fatal(err)
			}
		case image:
			c.run(t, "pull", iv.Reference)
		default:
			t.Fatalf("volume %s: neither hostPath, emptyDir nor image", v.Name)
		}
	}
	hostsFile := filepath.Join(dir, "etc-hosts")
	if err := os.WriteFile(hostsFile, []byte("127.0.0.1 localhost "+pod.Name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, ctr := range pod.Spec.Containers {
		c.run(t, "pull", ctr.Image)
		mounts := []map[string]any{}
		hasHosts := false
		for _, m := range ctr.VolumeMounts {
			src, ok := volumes[m.Name]
			if !ok {
				t.Fatalf("container %s mounts volume %s, which is undefined or an image volume", ctr.Name, m.Name)
			}
			hasHosts = hasHosts || m.MountPath == "/etc/hosts"
			mounts = append(mounts, map[string]any{"container_path": m.MountPath, "host_path": src, "readonly": m.ReadOnly})
		}
		if !hasHosts {
			mounts = append(mounts, map[string]any{"container_path": "/etc/hosts", "host_path": hostsFile})
		}
		cfg := map[string]any{
			"metadata": map[string]any{"name": ctr.Name},
			"image":    map[string]any{"image": ctr.Image},
			"command":  ctr.Command,
			"log_path": ctr.Name + ".log",
			"mounts":   mounts,
			"linux":    map[string]any{"security_context": map[string]any{"namespace_options": ns}},
		}
		r := c.try(t, "create", podID, writeConfig(t, dir, ctr.Name+".json", cfg), podCfg)
		if r.code != 0 {
			return ids, r
		}
		id := strings.TrimSpace(r.stdout)
		c.run(t, "start", id)
		ids = append(ids, id)
	}
	return ids, result{}
}

// waitStatus is the harness's waitStatus for a CRI-O container.
func (c *crio) waitStatus(t *testing.T, id string, ok func(status) bool) status {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var st status
	for time.Now().Before(deadline) {
		r := c.try(t, append([]string{"exec", id}, statusCmd...)...)
		if r.code == 0 && json.Unmarshal([]byte(r.stdout), &st) == nil && ok(st) {
			return st
		}
		sleepTick()
	}
	t.Fatalf("container %s never reached the expected state; last status %+v", id, st)
	return st
}

// checkContinued is the harness's checkContinued for a CRI-O container.
func (c *crio) checkContinued(t *testing.T, id string, before status) {
	t.Helper()
	var st struct {
		Status struct {
			State string `json:"state"`
		} `json:"status"`
	}
	if err := json.Unmarshal([]byte(c.run(t, "inspect", id)), &st); err != nil {
		t.Fatal(err)
	}
	if st.Status.State != "CONTAINER_RUNNING" {
		t.Fatalf("container %s is %s, want running", id, st.Status.State)
	}
	continued(t, before, c.waitStatus(t, id, func(s status) bool { return s.SumAt > before.Counter }))
}

// parsePod decodes kube's output strictly into Kubernetes' own types,
// but for the image volumes' sources, which those types predate.
func parsePod(t *testing.T, manifest string) (*corev1.Pod, map[string]ckpttest.ImageVolume) {
	t.Helper()
	rest, images := ckpttest.SplitImageVolumes(t, []byte(manifest))
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(rest, &pod); err != nil {
		t.Fatalf("kube's manifest is not a core/v1 Pod: %v\n%s", err, manifest)
	}
	return &pod, images
}

// TestCRIORestoresOurImage: a podman container on host A, with a bind
// mount, pushed as it is (--include-base for the base image) restores in a
// CRI-O pod made from `kube`'s manifest, with the bind mount relocated;
// the same image still restores with plain podman on host B.
func TestCRIORestoresOurImage(t *testing.T) {
	c := startCRIO(t)
	src := "e2e-crio1"
	startWorkload(t, src, "-v", hosts.HostAData+":/data")
	before := readStatus(t, hosts.HostAURL, src)
	r := migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", "--include-base", src, hosts.Registry+"/e2e/crio1:v1")
	if r.code != 0 {
		t.Fatalf("push failed: %s", r.stderr)
	}
	ref := strings.TrimSpace(r.stdout)

	// kube: the node's copy of the bind source is elsewhere.
	nodeData := filepath.Join(t.TempDir(), "node-data")
	if err := os.Mkdir(nodeData, 0o755); err != nil {
		t.Fatal(err)
	}
	r = migrate(t, "kube", "--tls-verify=false", "--mount-map", hosts.HostAData+"="+nodeData, ref)
	if r.code != 0 {
		t.Fatalf("kube failed: %s", r.stderr)
	}
	pod, images := parsePod(t, r.stdout)
	ctr := pod.Spec.Containers[0]
	if !strings.HasPrefix(ctr.Image, hosts.Registry+"/e2e/crio1@sha256:") || !strings.HasSuffix(ref, ctr.Image[strings.Index(ctr.Image, "@"):]) {
		t.Errorf("container image %s, want the pushed image %s by digest", ctr.Image, ref)
	}
	if len(images) != 1 || !strings.Contains(images["podman-migrate-base"].Reference, "@sha256:") {
		t.Fatalf("image volumes %+v, want podman-migrate-base, the base image by digest", images)
	}
	var dataVol string
	for _, m := range ctr.VolumeMounts {
		if m.MountPath == "/data" {
			dataVol = m.Name
		}
	}
	found := false
	for _, v := range pod.Spec.Volumes {
		if v.Name == dataVol && v.HostPath != nil && v.HostPath.Path == nodeData && v.HostPath.Type != nil && *v.HostPath.Type == corev1.HostPathDirectory {
			found = true
		}
	}
	if !found {
		t.Fatalf("/data is not the hostPath %s (Directory): %s", nodeData, r.stdout)
	}

	id := c.restorePod(t, pod, images)
	c.checkContinued(t, id, before)
	// The process writes where the pod's hostPath is.
	probe := c.run(t, "exec", id, "sh", "-c", "echo from-crio > /data/probe && cat /data/probe")
	if b, err := os.ReadFile(filepath.Join(nodeData, "probe")); err != nil || strings.TrimSpace(string(b)) != "from-crio" || probe != "from-crio" {
		t.Errorf("/data in the pod is not %s: %q, %v", nodeData, b, err)
	}

	// The same image, by plain podman, on host B (its own copy of the bind
	// source).
	onB(t, "mkdir -p "+hosts.HostAData)
	t.Cleanup(func() { runCmd(t, "nsenter", "-t", hosts.HostBPID, "-m", "--", "rm", "-rf", hosts.HostAData) })
	rmB(t, src)
	t.Cleanup(func() { podmanTry(t, hosts.HostBURL, "rmi", "-f", ref) })
	podman(t, hosts.HostBURL, "pull", "--tls-verify=false", ref)
	podman(t, hosts.HostBURL, "container", "restore", ref)
	checkContinued(t, hosts.HostBURL, src, before)
}

// TestCRIOAnnotationsOff: --no-cri-o-annotations leaves them out, and kube
// refuses such an image, saying why.
func TestCRIOAnnotationsOff(t *testing.T) {
	src := "e2e-crio-off"
	startWorkload(t, src)
	ref := hosts.Registry + "/e2e/crio-off:v1"
	r := migrate(t, "--url", hosts.HostAURL, "push", "--leave-running", "--tls-verify=false", "--no-cri-o-annotations", src, ref)
	if r.code != 0 {
		t.Fatalf("push failed: %s", r.stderr)
	}
	raw := runCmd(t, "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+ref)
	if raw.code != 0 || strings.Contains(raw.stdout, "io.kubernetes.cri-o") {
		t.Errorf("manifest (exit %d) has CRI-O annotations: %s", raw.code, raw.stdout)
	}
	r = migrate(t, "kube", "--tls-verify=false", ref)
	if r.code != 5 || !strings.Contains(r.stderr, "CRI-O cannot restore this checkpoint image: its manifest has no io.kubernetes.cri-o.annotations.checkpoint.name annotation") {
		t.Fatalf("kube: exit %d, stderr %q; want 5 naming the missing annotation", r.code, r.stderr)
	}
}

// kubeletMaskedPaths and kubeletReadonlyPaths are what the kubelet asks
// CRI-O for in an ordinary container (k8s.io/kubernetes
// pkg/securitycontext): crictl alone asks for none.
var (
	kubeletMaskedPaths = []string{"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
		"/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"}
	kubeletReadonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// crioCheckpoint runs the workload in a CRI-O pod, set up as the kubelet
// sets one up, from image (a tag or a digest reference, as the kubelet
// pulls by), checkpoints it with `crictl checkpoint --export` and makes a
// checkpoint image of it at ref the way Kubernetes documents it (buildah,
// the checkpoint.name annotation). It returns the bind-mounted data
// directory and the workload's status when checkpointed.
func crioCheckpoint(t *testing.T, c *crio, image, name, ref string) (data string, before status) {
	t.Helper()
	dir := t.TempDir()
	data = filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	hostsFile := filepath.Join(dir, "etc-hosts")
	if err := os.WriteFile(hostsFile, []byte("127.0.0.1 localhost "+name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ns := map[string]int{"network": 0, "pid": 1}
	podCfg := writeConfig(t, dir, "pod.json", map[string]any{
		"metadata":      map[string]any{"name": name + "-pod", "namespace": name + "-ns", "uid": name + "-uid", "attempt": 0},
		"hostname":      name + "-pod",
		"log_directory": dir,
		"linux":         map[string]any{"security_context": map[string]any{"namespace_options": ns}},
	})
	podID := c.run(t, "runp", podCfg)
	t.Cleanup(func() { c.try(t, "rmp", "-f", podID) })
	ctrCfg := writeConfig(t, dir, "ctr.json", map[string]any{
		"metadata": map[string]any{"name": name + "-ctr"},
		"image":    map[string]any{"image": image},
		"command":  []string{"/bin/workload", "-mem", "32", "-sum-every", "5"},
		"labels": map[string]string{"io.kubernetes.pod.name": name + "-pod", "io.kubernetes.pod.namespace": name + "-ns",
			"io.kubernetes.container.name": name + "-ctr", "io.kubernetes.pod.uid": name + "-uid"},
		"log_path": name + "-ctr.log",
		"mounts": []map[string]any{
			{"container_path": "/data", "host_path": data},
			{"container_path": "/etc/hosts", "host_path": hostsFile},
		},
		"linux": map[string]any{"security_context": map[string]any{
			"namespace_options": ns, "masked_paths": kubeletMaskedPaths, "readonly_paths": kubeletReadonlyPaths,
		}},
	})
	id := c.run(t, "create", podID, ctrCfg, podCfg)
	c.run(t, "start", id)
	c.waitStatus(t, id, func(s status) bool { return s.Counter >= 5 })
	before = c.waitStatus(t, id, func(status) bool { return true })
	archive := filepath.Join(dir, "checkpoint.tar")
	c.run(t, "checkpoint", "--export="+archive, id)

	// The image, as https://kubernetes.io/docs/reference/node/kubelet-checkpoint-api/
	// and CRI-O's documentation make it.
	local := "localhost/e2e-" + name + ":v1"
	bctr := strings.TrimSpace(runCmd(t, "buildah", "from", "scratch").stdout)
	t.Cleanup(func() { runCmd(t, "buildah", "rm", bctr); runCmd(t, "buildah", "rmi", "-f", local) })
	for _, args := range [][]string{
		{"add", bctr, archive, "/"},
		{"config", "--annotation=io.kubernetes.cri-o.annotations.checkpoint.name=" + name + "-ctr", bctr},
		{"commit", "-q", bctr, local},
		{"push", "-q", "--tls-verify=false", local, "docker://" + ref},
	} {
		if r := runCmd(t, "buildah", args...); r.code != 0 {
			t.Fatalf("buildah %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	return data, before
}

// TestCRIOCheckpointToPodman: the reverse direction. A checkpoint CRI-O
// made (crioCheckpoint) is described by inspect, which names its pod,
// namespace and container; pull restores it with podman 4.3.1 on isolated
// host B and with podman 5.4.2 on host C, the process carrying on, after
// the plan has named what it asks for.
func TestCRIOCheckpointToPodman(t *testing.T) {
	c := startCRIO(t)
	base := hosts.Registry + "/e2e/crio-base:v1"
	podman(t, hosts.HostAURL, "push", "--tls-verify=false", hosts.TestImage, base)
	c.run(t, "pull", base)
	ref := hosts.Registry + "/e2e/crio-made:v1"
	data, before := crioCheckpoint(t, c, base, "rev", ref)

	r := migrate(t, "inspect", "--format", "json", "--tls-verify=false", ref)
	var d struct {
		Format     string            `json:"format"`
		Kubernetes map[string]string `json:"kubernetes"`
		Container  struct{ Name string }
		Base       struct{ ID, Digest string } `json:"baseImage"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &d) != nil {
		t.Fatalf("inspect: exit %d: %s", r.code, r.stderr)
	}
	if d.Format != "cri-o" || d.Kubernetes["pod"] != "rev-pod" || d.Kubernetes["namespace"] != "rev-ns" || d.Kubernetes["container"] != "rev-ctr" ||
		d.Container.Name != "rev-ctr" || !strings.HasPrefix(d.Base.Digest, "sha256:") {
		t.Errorf("inspect: %s", r.stdout)
	}

	// Host B, podman 4.3.1: the plan names what the container asks for
	// (the kubelet's default: no seccomp filter), and creates nothing.
	bData := filepath.Join(t.TempDir(), "b-data")
	onB(t, "mkdir -p "+bData)
	unchanged := unchangedOnB(t)
	r = migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--mount-map", data+"="+bData, ref)
	if r.code != 5 || !strings.Contains(r.stderr, "no seccomp filter") || strings.Contains(r.stderr, "masked") ||
		!strings.Contains(r.stderr, "a checkpoint CRI-O made, rewritten for podman") {
		t.Fatalf("pull without --allow-privileged: exit %d, stderr %q; want 5 naming only the missing seccomp filter", r.code, r.stderr)
	}
	unchanged()
	rmB(t, "rev-ctr")
	// pull names B's copy of the test image as CRI-O's node had it; only
	// that name goes afterwards.
	t.Cleanup(func() { podmanTry(t, hosts.HostBURL, "untag", base, base) })
	r = migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--allow-privileged", "--mount-map", data+"="+bData, ref)
	if r.code != 0 || !strings.Contains(r.stderr, "Naming base image") {
		t.Fatalf("pull of CRI-O's checkpoint on B failed, or did not name the base image: %s", r.stderr)
	}
	checkContinued(t, hosts.HostBURL, "rev-ctr", before)
	if got := podman(t, hosts.HostBURL, "inspect", "--format", "{{range .Mounts}}{{if eq .Destination \"/data\"}}{{.Source}}{{end}}{{end}}", "rev-ctr"); got != bData {
		t.Errorf("podman inspect on B: /data comes from %q, want %s", got, bData)
	}
	podman(t, hosts.HostBURL, "exec", "rev-ctr", "sh", "-c", "echo on-b > /data/probe")
	if got := onB(t, "cat "+bData+"/probe"); got != "on-b" {
		t.Errorf("/data on B is not %s: probe reads %q", bData, got)
	}

	// Host C, podman 5.4.2.
	cData := "/var/tmp/e2e-crio-rev-data"
	if err := os.MkdirAll(filepath.Join(stateDir, "c", "vartmp", filepath.Base(cData)), 0o755); err != nil {
		t.Fatal(err)
	}
	rmOn(t, hosts.HostCURL, "rev-ctr")
	t.Cleanup(func() { podmanTry(t, hosts.HostCURL, "untag", base, base) })
	r = migrate(t, "--url", hosts.HostCURL, "pull", "--tls-verify=false", "--allow-privileged", "--mount-map", data+"="+cData, ref)
	if r.code != 0 {
		t.Fatalf("pull of CRI-O's checkpoint on C failed: %s", r.stderr)
	}
	checkContinued(t, hosts.HostCURL, "rev-ctr", before)
}

// TestCRIODigestCheckpointToPodman: a kubelet pulls images by digest, so
// CRI-O's checkpoint names its base image REPO@sha256:…, which podman's
// restore would pull with its own settings (HTTPS, here refused by the
// plain-HTTP registry). Host B already holds that image by digest (podman
// pull of it): pull points the restore at B's copy by its ID and tags
// nothing. Host C (podman 5) does not have it: pull fetches it itself, with
// its own --tls-verify=false. On both the process carries on.
func TestCRIODigestCheckpointToPodman(t *testing.T) {
	c := startCRIO(t)
	// A base image no host has: the test image without its true applet.
	variant := baseVariant(t, "no-true")
	tagged := hosts.Registry + "/e2e/crio-dbase:v1"
	podman(t, hosts.HostAURL, "push", "--tls-verify=false", variant, tagged)
	digest := strings.TrimSpace(runCmd(t, "skopeo", "inspect", "--tls-verify=false", "--format", "{{.Digest}}", "docker://"+tagged).stdout)
	if !strings.HasPrefix(digest, "sha256:") {
		t.Fatalf("no digest for %s: %q", tagged, digest)
	}
	id := podman(t, hosts.HostAURL, "image", "inspect", "--format", "{{.Id}}", variant)
	// By digest only: an image CRI-O also has by tag is named by its tag.
	base := hosts.Registry + "/e2e/crio-dbase@" + digest
	c.run(t, "pull", base)
	ref := hosts.Registry + "/e2e/crio-dmade:v1"
	data, before := crioCheckpoint(t, c, base, "dig", ref)

	r := migrate(t, "inspect", "--format", "{{.Base.Name}}", "--tls-verify=false", ref)
	if r.code != 0 || strings.TrimSpace(r.stdout) != base {
		t.Fatalf("inspect: exit %d, base image %q, want %s: %s", r.code, r.stdout, base, r.stderr)
	}

	// B holds the base image by digest.
	t.Cleanup(func() { podmanTry(t, hosts.HostBURL, "rmi", "-f", id) })
	podman(t, hosts.HostBURL, "pull", "--tls-verify=false", base)
	bData := filepath.Join(t.TempDir(), "b-data")
	onB(t, "mkdir -p "+bData)
	rmB(t, "dig-ctr")
	r = migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--allow-privileged", "--mount-map", data+"="+bData, ref)
	if r.code != 0 || !strings.Contains(r.stderr, "is named by digest; restoring from image") || strings.Contains(r.stderr, "Naming base image") ||
		strings.Contains(r.stderr, "Pulling base image") {
		t.Fatalf("pull on B: exit %d; want the restore pointed at B's copy by ID, nothing tagged or pulled: %s", r.code, r.stderr)
	}
	checkContinued(t, hosts.HostBURL, "dig-ctr", before)

	// C has no copy.
	if podmanTry(t, hosts.HostCURL, "image", "exists", id).code == 0 {
		t.Fatalf("host C already has image %s", id)
	}
	t.Cleanup(func() { podmanTry(t, hosts.HostCURL, "rmi", "-f", id) })
	cData := "/var/tmp/e2e-crio-dig-data"
	if err := os.MkdirAll(filepath.Join(stateDir, "c", "vartmp", filepath.Base(cData)), 0o755); err != nil {
		t.Fatal(err)
	}
	rmOn(t, hosts.HostCURL, "dig-ctr")
	r = migrate(t, "--url", hosts.HostCURL, "pull", "--tls-verify=false", "--allow-privileged", "--mount-map", data+"="+cData, ref)
	if r.code != 0 || !strings.Contains(r.stderr, "Pulling base image "+base) {
		t.Fatalf("pull on C: exit %d; want the base image fetched by pull itself: %s", r.code, r.stderr)
	}
	checkContinued(t, hosts.HostCURL, "dig-ctr", before)
}

// baseVariant makes on host A, as another tool would (podman export of a
// container of the test image, that tar edited with Go's archive/tar,
// podman import), one of the base images users bring:
//
//	no-true:    busybox without its true applet, CMD /bin/workload;
//	distroless: the static workload binary alone (no shell, no busybox),
//	            CMD /bin/workload;
//	no-cmd:     the test image's files, with neither CMD nor ENTRYPOINT.
//
// It returns the image's name; the test removes it at the end.
func baseVariant(t *testing.T, kind string) string {
	t.Helper()
	dir := t.TempDir()
	tmp := "e2e-export-" + kind
	podman(t, hosts.HostAURL, "create", "--name", tmp, hosts.TestImage, "/bin/workload")
	exported := filepath.Join(dir, "rootfs.tar")
	podman(t, hosts.HostAURL, "export", "-o", exported, tmp)
	podman(t, hosts.HostAURL, "rm", tmp)
	keep := map[string]func(name string) bool{
		"no-true":    func(name string) bool { return name != "bin/true" },
		"distroless": func(name string) bool { return name == "bin" || name == "bin/workload" },
		"no-cmd":     func(string) bool { return true },
	}[kind]
	if keep == nil {
		t.Fatalf("no base image variant %q", kind)
	}
	edited := filepath.Join(dir, kind+".tar")
	in, err := os.Open(exported)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(edited)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	tr, tw := tar.NewReader(in), tar.NewWriter(out)
	kept := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !keep(strings.Trim(path.Clean(h.Name), "./")) {
			continue
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			t.Fatal(err)
		}
		kept++
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if kind == "distroless" && kept != 2 {
		t.Fatalf("distroless: %d entries kept, want bin and bin/workload", kept)
	}
	image := "localhost/e2e-" + kind + ":v1"
	args := []string{"import", "-q"}
	if kind != "no-cmd" {
		args = append(args, "--change", `CMD ["/bin/workload"]`)
	}
	podman(t, hosts.HostAURL, append(args, edited, image)...)
	t.Cleanup(func() { podmanTry(t, hosts.HostAURL, "rmi", "-f", image) })
	return image
}

// TestCRIOBaseImages: kube's Pod restores in CRI-O whatever the base image
// holds. A base without `true` and a distroless one reach the node through
// the Pod's image volume, which the kubelet pulls without running anything
// in it (CRI-O had neither before); each process carries on. A base image
// without CMD or ENTRYPOINT, which CRI-O 1.36 cannot restore from ("no
// command specified"), is refused before anything is printed, with the fix.
func TestCRIOBaseImages(t *testing.T) {
	c := startCRIO(t)
	for _, kind := range []string{"no-true", "distroless"} {
		t.Run(kind, func(t *testing.T) {
			image := baseVariant(t, kind)
			src := "e2e-crio-" + kind
			before := startWorkloadFrom(t, hosts.HostAURL, src, image, 32)
			r := migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", "--include-base", src, hosts.Registry+"/e2e/crio-"+kind+":v1")
			if r.code != 0 {
				t.Fatalf("push failed: %s", r.stderr)
			}
			r = migrate(t, "kube", "--tls-verify=false", strings.TrimSpace(r.stdout))
			if r.code != 0 {
				t.Fatalf("kube failed: %s", r.stderr)
			}
			pod, images := parsePod(t, r.stdout)
			base := images["podman-migrate-base"].Reference
			if base == "" || !strings.Contains(r.stdout, "enable_criu_support = true") {
				t.Fatalf("no base image volume, or the node settings are not named:\n%s", r.stdout)
			}
			if c.try(t, "inspecti", base).code == 0 {
				t.Fatalf("CRI-O already has %s: the test would not show the image volume brought it", base)
			}
			id := c.restorePod(t, pod, images)
			c.checkContinued(t, id, before)
			if kind == "distroless" && c.try(t, "exec", id, "/bin/sh", "-c", "exit 0").code == 0 {
				t.Errorf("the distroless base image has a shell")
			}
		})
	}
	t.Run("no-cmd", func(t *testing.T) {
		image := baseVariant(t, "no-cmd")
		if cmd := podman(t, hosts.HostAURL, "image", "inspect", "--format", "{{.Config.Cmd}}{{.Config.Entrypoint}}", image); cmd != "[][]" {
			t.Fatalf("%s has a command: %s", image, cmd)
		}
		src := "e2e-crio-no-cmd"
		startWorkloadFrom(t, hosts.HostAURL, src, image, 16)
		r := migrate(t, "--url", hosts.HostAURL, "push", "--leave-running", "--format", "json", "--tls-verify=false", "--include-base", src, hosts.Registry+"/e2e/crio-no-cmd:v1")
		var pushed struct{ Reference, BaseImage string }
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &pushed) != nil || pushed.BaseImage == "" {
			t.Fatalf("push failed, or named no base image copy: %s %s", r.stdout, r.stderr)
		}
		r = migrate(t, "kube", "--tls-verify=false", pushed.Reference)
		if r.code != 5 || r.stdout != "" || !strings.Contains(r.stderr, "CRI-O cannot restore a checkpoint whose base image has no ENTRYPOINT or CMD") ||
			!strings.Contains(r.stderr, "buildah config --cmd") {
			t.Fatalf("kube: exit %d, stdout %q, stderr %q; want 5, nothing printed, the missing CMD and the fix named", r.code, r.stdout, r.stderr)
		}
		// Why: the Pod kube would print, given a command of its own, is
		// still refused by CRI-O, which takes the command from the image.
		pod := &corev1.Pod{Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "no-cmd", Image: pushed.Reference, Command: []string{"/bin/workload"}}},
			Volumes:    []corev1.Volume{{Name: "base"}},
		}}
		pod.Name = "no-cmd"
		_, cr := c.tryRestorePod(t, pod, map[string]ckpttest.ImageVolume{"base": {Reference: pushed.BaseImage}})
		if cr.code == 0 || !strings.Contains(cr.stderr, "no command specified") {
			t.Fatalf("CRI-O restored a checkpoint whose base image has no command (exit %d: %s): kube's refusal is out of date", cr.code, cr.stderr)
		}
	})
}

// TestCRIOCheckNode: kube --check-node asks a node's CRI-O through crictl.
// One with checkpoint/restore on passes; one started with
// enable_criu_support = false fails (exit 3) naming the setting.
func TestCRIOCheckNode(t *testing.T) {
	c := startCRIO(t)
	r := migrate(t, "kube", "--check-node", "--crictl", c.crictl, "--runtime-endpoint", c.endpoint, "--format", "json")
	var rep struct {
		OK                bool   `json:"ok"`
		Runtime           string `json:"runtime"`
		CheckpointRestore bool   `json:"checkpointRestore"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &rep) != nil || !rep.OK || rep.Runtime != "cri-o" || !rep.CheckpointRestore {
		t.Fatalf("check-node: exit %d, %s %s", r.code, r.stdout, r.stderr)
	}
	off := startCRIOEnv(t, "CRIO_ENABLE_CRIU=false")
	r = migrate(t, "kube", "--check-node", "--crictl", off.crictl, "--runtime-endpoint", off.endpoint)
	if r.code != 3 || !strings.Contains(r.stderr, "checkpoint/restore (enable_criu_support): false") || !strings.Contains(r.stderr, "Error: the node cannot restore checkpoints: CRI-O's checkpoint/restore support is off: set enable_criu_support = true under [crio.runtime]") {
		t.Fatalf("check-node of a CRI-O without CRIU support: exit %d, stdout %q, stderr %q; want 3 naming the setting", r.code, r.stdout, r.stderr)
	}
}

// TestCRIORestoresPod: kube of a pod's index makes one Pod with a
// container per member, each its member's checkpoint image; CRI-O restores
// both into one sandbox, and they continue and still talk over its
// localhost. The pod is pushed with --include-base: kube names that copy
// of the base image, which the node pulls. The node's runc.conf says
// tcp-established, as kube's note asks for a pod: a request in flight at
// the checkpoint is a connection in the image.
func TestCRIORestoresPod(t *testing.T) {
	c := startCRIOEnv(t, "CRIO_CRIU_CONF=tcp-established")
	const pod = "e2e-crio-pod"
	srv, cli := startTalkingPod(t, hosts.HostAURL, pod, freePort(t))
	r := migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", "--include-base", "--format", "json", pod, hosts.Registry+"/e2e/crio-pod:v1")
	var pushed struct {
		Reference, Digest string
		Members           []struct{ BaseImage string }
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &pushed) != nil || len(pushed.Members) != 2 {
		t.Fatalf("push of the pod: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	base := pushed.Members[0].BaseImage
	if !strings.HasPrefix(base, hosts.Registry+"/e2e/crio-pod@sha256:") || pushed.Members[1].BaseImage != base {
		t.Fatalf("members' base image copies %+v, want one in the pod's repository", pushed.Members)
	}
	ref := pushed.Reference + "@" + pushed.Digest
	r = migrate(t, "kube", "--tls-verify=false", ref)
	if r.code != 0 {
		t.Fatalf("kube of the pod's index: exit %d: %s", r.code, r.stderr)
	}
	manifest, images := parsePod(t, r.stdout)
	var names []string
	for _, ctr := range manifest.Spec.Containers {
		if !strings.HasPrefix(ctr.Image, hosts.Registry+"/e2e/crio-pod@sha256:") {
			t.Errorf("container %s: image %s, want a member's image by digest", ctr.Name, ctr.Image)
		}
		names = append(names, ctr.Name)
	}
	if strings.Join(names, ",") != pod+"-cli,"+pod+"-srv" && strings.Join(names, ",") != pod+"-srv,"+pod+"-cli" {
		t.Fatalf("containers %v, want the pod's two members\n%s", names, r.stdout)
	}
	if images["podman-migrate-base"].Reference != base || !strings.Contains(r.stdout, "/etc/criu/runc.conf") {
		t.Fatalf("image volumes %+v, want %s; and the note on tcp-established:\n%s", images, base, r.stdout)
	}
	ids := c.restorePodAll(t, manifest, images)
	id := map[string]string{names[0]: ids[0], names[1]: ids[1]}
	c.checkContinued(t, id[pod+"-srv"], srv)
	c.checkContinued(t, id[pod+"-cli"], cli.status)
	deadline := time.Now().Add(90 * time.Second)
	var now peerStatus
	for time.Now().Before(deadline) {
		out := c.try(t, append([]string{"exec", id[pod+"-cli"]}, statusCmd...)...)
		if out.code == 0 && json.Unmarshal([]byte(out.stdout), &now) == nil &&
			now.PeerReads > cli.PeerReads+2 && now.PeerBoot == srv.Boot && now.PeerCounter > cli.PeerCounter {
			return
		}
		sleepTick()
	}
	t.Fatalf("the restored client does not read the restored server: %+v, before %+v", now, cli)
}
