//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	podmanapi "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
)

// TestPodGroundwork is what moving a pod stands on, on real podman 4.3.1:
// a pod made from a spec keeps its settings (as pull will make it from a
// pod's record), and the members of a running pod, all frozen before the
// first is dumped, checkpoint with export one after another and restore
// from their kept checkpoints, their processes continuing.
func TestPodGroundwork(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := podmanapi.ConnectTo(ctx, podmanapi.Destination{URI: hosts.HostAURL})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()

	const name = "e2e-pod-ground"
	id, err := c.CreatePod(ctx, podmanapi.PodSpec{
		Name: name, Hostname: "groundwork", Labels: map[string]string{"app": "e2e"},
		SharedNamespaces: []string{"ipc", "net", "uts"},
		PortMappings:     []podmanapi.PortMapping{{ContainerPort: 8080, HostPort: port, Protocol: "tcp"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer ccancel()
		if err := c.RemovePod(cctx, id); err != nil {
			t.Errorf("removing the pod: %v", err)
		}
	})
	if err := c.StartPod(ctx, id); err != nil {
		t.Fatal(err)
	}
	pod, err := c.InspectPod(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(pod.SharedNamespaces) // podman lists them in its own order
	if pod.ID != id || pod.Hostname != "groundwork" || pod.Labels["app"] != "e2e" || pod.InfraContainerID == "" ||
		!slices.Equal(pod.SharedNamespaces, []string{"ipc", "net", "uts"}) || pod.InfraConfig == nil ||
		len(pod.InfraConfig.PortBindings["8080/tcp"]) != 1 || pod.InfraConfig.PortBindings["8080/tcp"][0].HostPort != strconv.Itoa(int(port)) {
		t.Fatalf("pod as inspected: %+v (infra %+v)", pod, pod.InfraConfig)
	}

	members := []string{"e2e-pod-ground-a", "e2e-pod-ground-b"}
	before := map[string]status{}
	var ctrs []*podmanapi.Container
	for _, m := range members {
		before[m] = startWorkloadOn(t, hosts.HostAURL, m, 16, "--pod", name)
		ctr, err := c.InspectContainer(ctx, m)
		if err != nil {
			t.Fatal(err)
		}
		if ctr.Pod != id || ctr.State.CgroupPath == "" {
			t.Fatalf("member %s: pod %q, cgroup %q", m, ctr.Pod, ctr.State.CgroupPath)
		}
		ctrs = append(ctrs, ctr)
	}
	// Cleanups run last first: thaw before the members are removed, as a
	// frozen member (cgroup v1) ignores SIGKILL.
	t.Cleanup(func() {
		cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
		defer ccancel()
		for _, ctr := range ctrs {
			if err := c.FreezeContainer(cctx, ctr, false); err != nil {
				t.Errorf("thawing %s: %v", ctr.Name, err)
			}
		}
	})
	for _, ctr := range ctrs {
		if err := c.FreezeContainer(ctx, ctr, true); err != nil {
			t.Fatal(err)
		}
	}
	for _, ctr := range ctrs {
		archive, err := c.Checkpoint(ctx, ctr.ID, podmanapi.CheckpointOptions{})
		if err != nil {
			t.Fatalf("checkpointing frozen member %s: %v", ctr.Name, err)
		}
		n, err := io.Copy(io.Discard, archive)
		archive.Close()
		if err != nil || n == 0 {
			t.Fatalf("member %s's export: %d bytes, %v", ctr.Name, n, err)
		}
		if err := c.FreezeContainer(ctx, ctr, false); err != nil {
			t.Fatalf("thawing member %s after its dump: %v", ctr.Name, err)
		}
	}
	for _, ctr := range ctrs {
		now, err := c.InspectContainer(ctx, ctr.ID)
		if err != nil || now.State.Running {
			t.Fatalf("member %s after its checkpoint: running %t, %v", ctr.Name, now != nil && now.State.Running, err)
		}
	}
	for _, ctr := range ctrs {
		if err := c.RestoreKept(ctx, ctr.ID, podmanapi.CheckpointOptions{}); err != nil {
			t.Fatalf("restoring member %s: %v", ctr.Name, err)
		}
	}
	for _, m := range members {
		checkContinued(t, hosts.HostAURL, m, before[m])
	}
}

// freePort is a TCP port free on this machine when asked.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// peerStatus is the workload's status with what it read of its peer.
type peerStatus struct {
	status
	PeerBoot    string `json:"peer_boot"`
	PeerCounter uint64 `json:"peer_counter"`
	PeerReads   uint64 `json:"peer_reads"`
}

func readPeerStatus(t *testing.T, url, ctr string) peerStatus {
	t.Helper()
	var st peerStatus
	readStatusInto(t, url, ctr, &st)
	return st
}

// startTalkingPod starts, on the host at url, a pod publishing port
// 8080 on hostPort: a server member (NAME-srv) that serves its status
// there, and a client member (NAME-cli) that reads it every tick over the
// pod's localhost. It returns both members' statuses once the client has
// read the server a few times.
func startTalkingPod(t *testing.T, url, pod string, hostPort int) (srv status, cli peerStatus) {
	t.Helper()
	podman(t, url, "pod", "create", "--name", pod, "--label", "app=e2e", "--hostname", pod+"-host", "-p", fmt.Sprintf("%d:8080", hostPort))
	t.Cleanup(func() { podmanTry(t, url, "pod", "rm", "-f", "-t", "0", pod) })
	run := func(name string, args ...string) {
		podman(t, url, append([]string{"run", "-d", "--name", name, "--pod", pod, hosts.TestImage, "/bin/workload", "-mem", "16", "-sum-every", "5"}, args...)...)
		t.Cleanup(func() { podmanTry(t, url, "rm", "-f", "-t", "0", name) })
	}
	run(pod+"-srv", "-serve", ":8080")
	run(pod+"-cli", "-peer", "http://localhost:8080/")
	srv = waitStatus(t, url, pod+"-srv", func(s status) bool { return s.Counter >= 5 })
	waitStatus(t, url, pod+"-cli", func(status) bool { return readPeerStatus(t, url, pod+"-cli").PeerReads >= 3 })
	cli = readPeerStatus(t, url, pod+"-cli")
	if cli.PeerBoot != srv.Boot {
		t.Fatalf("the client read boot %q, the server's is %q", cli.PeerBoot, srv.Boot)
	}
	return srv, cli
}

// checkTalking asserts NAME-srv and NAME-cli on url carry on from before:
// both processes continued, and the client still reads the same server.
func checkTalking(t *testing.T, url, name string, srv status, cli peerStatus) {
	t.Helper()
	checkContinued(t, url, name+"-srv", srv)
	checkContinued(t, url, name+"-cli", cli.status)
	waitStatus(t, url, name+"-cli", func(status) bool {
		now := readPeerStatus(t, url, name+"-cli")
		return now.PeerReads > cli.PeerReads+2 && now.PeerBoot == srv.Boot && now.PeerCounter > cli.PeerCounter
	})
}

// checkTalkingPod asserts the talking pod's members on url carry on from
// before: both processes continued, the client still reads the same
// server, and port (published there) answers with the server's state.
func checkTalkingPod(t *testing.T, url, pod string, port int, srv status, cli peerStatus) {
	t.Helper()
	checkTalking(t, url, pod, srv, cli)
	if served, err := getStatus(t, port); err != nil || served.Boot != srv.Boot || served.Counter <= srv.Counter {
		t.Fatalf("port %d on %s: %+v, %v; the server's boot is %q", port, url, served, err, srv.Boot)
	}
}

// getStatus reads the workload's status from its published port.
func getStatus(t *testing.T, port int) (status, error) {
	t.Helper()
	// No connection stays: one to the pod from outside would stop its push.
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var st status
	resp, err := c.Get(fmt.Sprintf("http://%s/", net.JoinHostPort(hostAddr(t), strconv.Itoa(port))))
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

// hostAddr is this machine's first non-loopback address: netavark's
// port forwarding does not answer on 127.0.0.1 here.
func hostAddr(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ip, ok := a.(*net.IPNet); ok && ip.IP.To4() != nil && !ip.IP.IsLoopback() {
			return ip.IP.String()
		}
	}
	t.Fatal("no non-loopback IPv4 address")
	return ""
}

// TestPodPushPull moves a pod whose members talk over the pod's localhost
// from host A to host B through the registry: push freezes both members
// and publishes one index, pull makes the pod anew on B (its port
// remapped by --publish) and restores both into it. Both processes
// continue, the client still reads the same server, and B's port answers
// with the server's state.
func TestPodPushPull(t *testing.T) {
	const pod = "e2e-pod-move"
	portA, portB := freePort(t), freePort(t)
	srv, cli := startTalkingPod(t, hosts.HostAURL, pod, portA)
	ref := hosts.Registry + "/e2e/pod-move:v1"

	r := migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", "--format", "json", pod, ref)
	if r.code != 0 {
		t.Fatalf("push failed: %s", r.stderr)
	}
	var pushed struct {
		Reference, Digest, Pod string
		Members                []struct{ Container, Digest string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &pushed); err != nil {
		t.Fatalf("push --format json: %v: %s", err, r.stdout)
	}
	if pushed.Pod != pod || len(pushed.Members) != 2 || pushed.Members[0].Container != pod+"-cli" || pushed.Members[1].Container != pod+"-srv" {
		t.Fatalf("push reported %+v", pushed)
	}
	for _, m := range []string{pod + "-cli", pod + "-srv"} {
		if state := podman(t, hosts.HostAURL, "inspect", "--format", "{{.State.Status}}", m); state != "exited" {
			t.Errorf("member %s on A after the push: %s, want exited (checkpointed)", m, state)
		}
	}

	// The index holds the pod's record.
	raw := runCmd(t, "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+ref)
	var ix struct {
		MediaType   string
		Annotations map[string]string
		Manifests   []struct{ Digest string }
	}
	if raw.code != 0 || json.Unmarshal([]byte(raw.stdout), &ix) != nil || ix.MediaType != "application/vnd.oci.image.index.v1+json" ||
		!strings.Contains(ix.Annotations[ckpt.AnnPod], `"name":"`+pod+`"`) || len(ix.Manifests) != 2 || ix.Manifests[0].Digest != pushed.Members[0].Digest {
		t.Fatalf("skopeo inspect --raw: exit %d: %s%s", raw.code, raw.stdout, raw.stderr)
	}

	// inspect shows the pod, and each member as a container.
	r = migrate(t, "inspect", "--tls-verify=false", "--format", "json", ref)
	var desc struct {
		Format  string
		Pod     struct{ Name string }
		Members []struct{ Container struct{ Name string } }
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &desc) != nil || desc.Pod.Name != pod || len(desc.Members) != 2 || desc.Members[1].Container.Name != pod+"-srv" {
		t.Fatalf("inspect of the pod's index: exit %d: %s", r.code, r.stdout)
	}

	// kube needs a base image the node can pull by digest; this pod's is
	// only on the hosts (pushed without --include-base), so kube says so.
	if r = migrate(t, "kube", "--tls-verify=false", ref); r.code != 5 || !strings.Contains(r.stderr, "cannot be pulled by digest") || !strings.Contains(r.stderr, "--base-image") {
		t.Fatalf("kube of a pod's index whose base image is on no registry: exit %d: %s", r.code, r.stderr)
	}

	r = migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--publish", fmt.Sprintf("%d:8080", portB), ref+"@"+pushed.Digest)
	t.Cleanup(func() { podmanTry(t, hosts.HostBURL, "pod", "rm", "-f", "-t", "0", pod) })
	if r.code != 0 {
		t.Fatalf("pull failed: %s", r.stderr)
	}
	podID := strings.TrimSpace(r.stdout)
	var got struct {
		ID, Name, Hostname string
		Labels             map[string]string
		SharedNamespaces   []string
		Containers         []struct{ Name string }
	}
	out := podman(t, hosts.HostBURL, "pod", "inspect", pod)
	if strings.HasPrefix(out, "[") { // podman 5 prints a list
		out = strings.TrimSuffix(strings.TrimPrefix(out, "["), "]")
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("pod inspect: %v: %s", err, out)
	}
	slices.Sort(got.SharedNamespaces)
	if !strings.HasPrefix(got.ID, podID) || got.Hostname != pod+"-host" || got.Labels["app"] != "e2e" ||
		!slices.Equal(got.SharedNamespaces, []string{"ipc", "net", "uts"}) || len(got.Containers) != 3 {
		t.Fatalf("pod on B: %+v (pull printed %q)", got, podID)
	}

	checkTalkingPod(t, hosts.HostBURL, pod, portB, srv, cli)
}

// TestPodPullFailsWhole pulls a pod whose second member's CRIU layer was
// damaged in an OCI layout: the first member is restored, the second
// fails its digest while it streams, and the pod, with the restored
// member, is gone from B again. The source pod is restored on A.
func TestPodPullFailsWhole(t *testing.T) {
	const pod = "e2e-pod-fail"
	srv, cli := startTalkingPod(t, hosts.HostAURL, pod, freePort(t))
	dir := filepath.Join(t.TempDir(), "layout")
	r := migrate(t, "--url", hosts.HostAURL, "push", pod, "oci:"+dir+":v1")
	if r.code != 0 {
		t.Fatalf("push failed: %s", r.stderr)
	}
	damageMember(t, dir, 1)
	unchanged := unchangedOnB(t)
	r = migrate(t, "--url", hosts.HostBURL, "pull", "--publish", fmt.Sprintf("%d:8080", freePort(t)), "oci:"+dir+":v1")
	if r.code == 0 || !strings.Contains(r.stderr, pod+"-srv") || !strings.Contains(r.stderr, "was removed again") {
		t.Fatalf("pull of a damaged member: exit %d: %s", r.code, r.stderr)
	}
	unchanged()
	if out := podmanTry(t, hosts.HostBURL, "pod", "exists", pod); out.code == 0 {
		t.Fatalf("pod %s left on B", pod)
	}
	for _, m := range []string{pod + "-cli", pod + "-srv"} {
		podman(t, hosts.HostAURL, "container", "restore", "--keep", "--tcp-established", m)
	}
	checkContinued(t, hosts.HostAURL, pod+"-srv", srv)
	checkContinued(t, hosts.HostAURL, pod+"-cli", cli.status)
}

// damageMember flips bytes in the middle of the largest layer of the
// index's member i in an OCI layout.
func damageMember(t *testing.T, dir string, i int) {
	t.Helper()
	blob := func(d string) string { return filepath.Join(dir, "blobs", strings.Replace(d, ":", "/", 1)) }
	readJSON := func(path string, v any) {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	type desc struct {
		Digest string
		Size   int64
	}
	var top struct{ Manifests []desc }
	readJSON(filepath.Join(dir, "index.json"), &top)
	var ix struct{ Manifests []desc }
	readJSON(blob(top.Manifests[0].Digest), &ix)
	var m struct{ Layers []desc }
	readJSON(blob(ix.Manifests[i].Digest), &m)
	big := slices.MaxFunc(m.Layers, func(a, b desc) int { return int(a.Size - b.Size) })
	f, err := os.OpenFile(blob(big.Digest), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("damaged!"), big.Size/2); err != nil {
		t.Fatal(err)
	}
}

// TestPodMove moves a talking pod from A to B directly; then a pod one of
// whose members cannot be restored on B (a file it holds open is missing
// where --mount-map relocates its bind mount): the move fails, B keeps
// nothing, and both members run on A again, continuing.
func TestPodMove(t *testing.T) {
	t.Run("direct", func(t *testing.T) {
		const pod = "e2e-pod-mv"
		portB := freePort(t)
		srv, cli := startTalkingPod(t, hosts.HostAURL, pod, freePort(t))
		t.Cleanup(func() { podmanTry(t, hosts.HostBURL, "pod", "rm", "-f", "-t", "0", pod) })
		r := moveCmd(t, nil, "--from", hosts.HostAURL, "--to", hosts.HostBURL, "--publish", fmt.Sprintf("%d:8080", portB), pod)
		if r.code != 0 || !strings.HasPrefix(r.stdout, pod+"\tmoved\t"+pod+"\t") {
			t.Fatalf("move: exit %d: %s%s", r.code, r.stdout, r.stderr)
		}
		checkTalkingPod(t, hosts.HostBURL, pod, portB, srv, cli)
	})

	t.Run("a member fails on the target", func(t *testing.T) {
		const pod = "e2e-pod-mvfail"
		dirA, dirB := t.TempDir(), t.TempDir()
		if err := os.WriteFile(filepath.Join(dirA, "held"), []byte("held open\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		podman(t, hosts.HostAURL, "pod", "create", "--name", pod)
		t.Cleanup(func() { podmanTry(t, hosts.HostAURL, "pod", "rm", "-f", "-t", "0", pod) })
		before := map[string]status{}
		for _, m := range []struct{ name, cmd string }{
			{pod + "-a", "exec /bin/workload -mem 8 -sum-every 5"},
			{pod + "-b", "exec 3</data/held; exec /bin/workload -mem 8 -sum-every 5"},
		} {
			podman(t, hosts.HostAURL, "run", "-d", "--name", m.name, "--pod", pod, "-v", dirA+":/data", hosts.TestImage, "sh", "-c", m.cmd)
			t.Cleanup(func() { podmanTry(t, hosts.HostAURL, "rm", "-f", "-t", "0", m.name) })
			before[m.name] = waitStatus(t, hosts.HostAURL, m.name, func(s status) bool { return s.Counter >= 5 })
		}
		unchanged := unchangedOnB(t)
		r := moveCmd(t, nil, "--from", hosts.HostAURL, "--to", hosts.HostBURL, "--mount-map", dirA+"="+dirB, pod)
		if r.code == 0 || !strings.HasPrefix(r.stdout, pod+"\tfailed\t") || !strings.Contains(r.stderr, `member "`+pod+`-b"`) ||
			!strings.Contains(r.stderr, "Can't open file data/held") || !strings.Contains(r.stderr, "runs again on the source host") {
			t.Fatalf("move of a pod whose member cannot restore: exit %d: %s", r.code, r.stderr)
		}
		unchanged()
		if podmanTry(t, hosts.HostBURL, "pod", "exists", pod).code == 0 {
			t.Fatalf("pod %s left on B", pod)
		}
		for name, st := range before {
			checkContinued(t, hosts.HostAURL, name, st)
		}
	})
}

// TestPodPodman5BothWays moves a talking pod from A (podman 4.3.1) to C
// (podman 5) and back through the registry: both members continue each
// time, and still talk.
func TestPodPodman5BothWays(t *testing.T) {
	if v := serverVersion(t, hosts.HostCURL); !strings.HasPrefix(v, "5.") {
		t.Fatalf("host C runs podman %s, want 5.x", v)
	}
	const pod = "e2e-pod-p5"
	srv, cli := startTalkingPod(t, hosts.HostAURL, pod, freePort(t))
	for i, hop := range []struct{ name, from, to string }{
		{"A to C", hosts.HostAURL, hosts.HostCURL},
		{"C to A", hosts.HostCURL, hosts.HostAURL},
	} {
		ref := fmt.Sprintf("%s/e2e/pod-p5:%d", hosts.Registry, i)
		r := migrate(t, "--url", hop.from, "push", "--tls-verify=false", pod, ref)
		if r.code != 0 {
			t.Fatalf("%s: push failed: %s", hop.name, r.stderr)
		}
		// The pushed pod keeps its infra container (and port): it goes
		// before the pod is made again on that host.
		podman(t, hop.from, "pod", "rm", "-f", "-t", "0", pod)
		port := freePort(t)
		r = migrate(t, "--url", hop.to, "pull", "--tls-verify=false", "--publish", fmt.Sprintf("%d:8080", port), strings.TrimSpace(r.stdout))
		t.Cleanup(func() { podmanTry(t, hop.to, "pod", "rm", "-f", "-t", "0", pod) })
		if r.code != 0 {
			t.Fatalf("%s: pull failed: %s", hop.name, r.stderr)
		}
		checkTalkingPod(t, hop.to, pod, port, srv, cli)
		srv, cli = readStatus(t, hop.to, pod+"-srv"), readPeerStatus(t, hop.to, pod+"-cli")
	}
}

// TestPodOutsideConnection: a pod whose server holds a connection from
// outside the pod (a client on this machine, through the published port)
// is not pushed: the error names the connection, and both members run
// on, continuing. Once the client hangs up, the push goes through.
func TestPodOutsideConnection(t *testing.T) {
	const pod = "e2e-pod-outside"
	port := freePort(t)
	srv, cli := startTalkingPod(t, hosts.HostAURL, pod, port)
	conn := holdConnection(t, port)
	ref := hosts.Registry + "/e2e/pod-outside:v1"
	r := migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", pod, ref)
	if r.code != 5 || !strings.Contains(r.stderr, "the network namespace of members "+pod+"-cli, "+pod+"-srv holds 10.") || !strings.Contains(r.stderr, "outside the pod") {
		t.Fatalf("push with an outside connection: exit %d: %s", r.code, r.stderr)
	}
	checkContinued(t, hosts.HostAURL, pod+"-srv", srv)
	checkContinued(t, hosts.HostAURL, pod+"-cli", cli.status)
	conn.Close()
	// The server notices the hang-up within a tick or two.
	deadline := time.Now().Add(30 * time.Second)
	for {
		r = migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", pod, ref)
		if r.code == 0 || time.Now().After(deadline) || !strings.Contains(r.stderr, "outside the pod") {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if r.code != 0 {
		t.Fatalf("push once the client hung up: exit %d: %s", r.code, r.stderr)
	}
}

// TestPodMemberPlainPodman: a member's image of a pod's index restores
// with podman's own `container restore --pod` into a pod made by hand:
// podman 5.4.2 (C) by the pod's name, podman 4.3.1 (B) only by the ID of
// a started pod (by name it finds no pod). Both continue the process.
func TestPodMemberPlainPodman(t *testing.T) {
	const pod = "e2e-pod-plain"
	srv, _ := startTalkingPod(t, hosts.HostAURL, pod, freePort(t))
	r := migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", "--format", "json", pod, hosts.Registry+"/e2e/pod-plain:v1")
	if r.code != 0 {
		t.Fatalf("push failed: %s", r.stderr)
	}
	var pushed struct {
		Members []struct{ Container, Reference string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &pushed); err != nil || len(pushed.Members) != 2 || pushed.Members[1].Container != pod+"-srv" {
		t.Fatalf("push --format json: %v: %s", err, r.stdout)
	}
	member := pushed.Members[1].Reference

	t.Run("podman 5 by the pod's name", func(t *testing.T) {
		podmanC(t, "pod", "create", "--name", pod+"-c")
		t.Cleanup(func() { podmanCTry(t, "pod", "rm", "-f", "-t", "0", pod+"-c") })
		podmanC(t, "pull", "-q", "--tls-verify=false", member)
		if r := podmanCTry(t, "container", "restore", member); r.code == 0 || !strings.Contains(r.stderr, "without --pod") {
			t.Fatalf("podman 5 restored a member outside a pod: exit %d: %s", r.code, r.stderr)
		}
		podmanC(t, "container", "restore", "--pod", pod+"-c", member)
		checkContinued(t, hosts.HostCURL, pod+"-srv", srv)
	})
	t.Run("podman 4.3.1 by a started pod's ID", func(t *testing.T) {
		id := podman(t, hosts.HostBURL, "pod", "create", "--name", pod+"-b")
		t.Cleanup(func() { podmanTry(t, hosts.HostBURL, "pod", "rm", "-f", "-t", "0", pod+"-b") })
		podman(t, hosts.HostBURL, "pod", "start", id)
		podman(t, hosts.HostBURL, "pull", "-q", "--tls-verify=false", member)
		if r := podmanTry(t, hosts.HostBURL, "container", "restore", "--pod", pod+"-b", member); r.code == 0 || !strings.Contains(r.stderr, "not found") {
			t.Fatalf("podman 4.3.1 restore --pod NAME: exit %d: %s", r.code, r.stderr)
		}
		podman(t, hosts.HostBURL, "container", "restore", "--pod", id, member)
		checkContinued(t, hosts.HostBURL, pod+"-srv", srv)
	})
}

// TestDependentContainerRefused: a container that joins another's network
// namespace (--network container:X) is refused by push and move before
// any downtime, naming the other; both run on.
func TestDependentContainerRefused(t *testing.T) {
	a, b := "e2e-dep-a", "e2e-dep-b"
	beforeA := startWorkload(t, a)
	beforeB := startWorkload(t, b, "--network", "container:"+a)
	unchanged := unchangedOnB(t)
	r := migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", b, hosts.Registry+"/e2e/dep:v1")
	if r.code != 5 || !strings.Contains(r.stderr, `"`+b+`" needs "`+a+`"`) {
		t.Fatalf("push of a dependent container: exit %d: %s", r.code, r.stderr)
	}
	r = moveCmd(t, nil, "--from", hosts.HostAURL, "--to", hosts.HostBURL, b)
	if r.code != 5 || !strings.Contains(r.stderr, `"`+b+`" needs "`+a+`"`) {
		t.Fatalf("move of a dependent container: exit %d: %s", r.code, r.stderr)
	}
	unchanged()
	checkContinued(t, hosts.HostAURL, a, beforeA)
	checkContinued(t, hosts.HostAURL, b, beforeB)
}

// TestPodCopy: push --leave-running copies a pod: on A both members run on
// and still talk; pulled on B, the copy carries on from the checkpoint.
func TestPodCopy(t *testing.T) {
	const pod = "e2e-pod-copy"
	portA, portB := freePort(t), freePort(t)
	srv, cli := startTalkingPod(t, hosts.HostAURL, pod, portA)
	r := migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", "--leave-running", pod, hosts.Registry+"/e2e/pod-copy:v1")
	if r.code != 0 {
		t.Fatalf("push --leave-running: %s", r.stderr)
	}
	checkTalkingPod(t, hosts.HostAURL, pod, portA, srv, cli)
	r = migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--publish", fmt.Sprintf("%d:8080", portB), strings.TrimSpace(r.stdout))
	t.Cleanup(func() { podmanTry(t, hosts.HostBURL, "pod", "rm", "-f", "-t", "0", pod) })
	if r.code != 0 {
		t.Fatalf("pull: %s", r.stderr)
	}
	checkTalkingPod(t, hosts.HostBURL, pod, portB, srv, cli)
}
