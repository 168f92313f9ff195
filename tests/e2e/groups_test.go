//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// startGroup starts on A a server (NAME-srv) and a client (NAME-cli) that
// joins its network namespace (--network container:NAME-srv) and reads it
// over that namespace's localhost every tick. It returns both statuses
// once the client has read the server a few times. The containers are
// removed from A and B when the test ends, the client first: podman
// removes no container another joins.
func startGroup(t *testing.T, name string) (srv status, cli peerStatus) {
	t.Helper()
	for _, url := range []string{hosts.HostAURL, hosts.HostBURL} {
		t.Cleanup(func() {
			podmanTry(t, url, "rm", "-f", "-t", "0", name+"-cli")
			podmanTry(t, url, "rm", "-f", "-t", "0", name+"-srv")
		})
	}
	podman(t, hosts.HostAURL, "run", "-d", "--name", name+"-srv", hosts.TestImage, "/bin/workload", "-mem", "16", "-sum-every", "5", "-serve", ":8080")
	podman(t, hosts.HostAURL, "run", "-d", "--name", name+"-cli", "--network", "container:"+name+"-srv", hosts.TestImage, "/bin/workload", "-mem", "16", "-sum-every", "5", "-peer", "http://localhost:8080/")
	srv = waitStatus(t, hosts.HostAURL, name+"-srv", func(s status) bool { return s.Counter >= 5 })
	waitStatus(t, hosts.HostAURL, name+"-cli", func(status) bool { return readPeerStatus(t, hosts.HostAURL, name+"-cli").PeerReads >= 3 })
	cli = readPeerStatus(t, hosts.HostAURL, name+"-cli")
	if cli.PeerBoot != srv.Boot {
		t.Fatalf("the client read boot %q, the server's is %q", cli.PeerBoot, srv.Boot)
	}
	return srv, cli
}

// checkGroup asserts the group on url carries on from before: both
// processes continued, and the client, joined again to the server's
// network namespace there, still reads the same server.
func checkGroup(t *testing.T, url, name string, srv status, cli peerStatus) {
	t.Helper()
	checkTalking(t, url, name, srv, cli)
	srvID := podman(t, url, "inspect", "--format", "{{.Id}}", name+"-srv")
	if mode := podman(t, url, "inspect", "--format", "{{.HostConfig.NetworkMode}}", name+"-cli"); mode != "container:"+srvID {
		t.Fatalf("%s on %s: network mode %q, want container:%s", name+"-cli", url, mode, srvID)
	}
}

// checkStopped asserts the group's members on A were stopped by the move
// or push (killed while frozen after their dump).
func checkStopped(t *testing.T, name string) {
	t.Helper()
	for _, m := range []string{name + "-srv", name + "-cli"} {
		if state := podman(t, hosts.HostAURL, "inspect", "--format", "{{.State.Status}}", m); state != "exited" {
			t.Errorf("member %s on A: %s, want exited", m, state)
		}
	}
}

// TestGroupPushPull pushes a container and one joined to its network
// namespace as one group (named in the wrong order on purpose), and
// pulls it on B: both continue, and the client reads the server there.
func TestGroupPushPull(t *testing.T) {
	const name = "e2e-group"
	srv, cli := startGroup(t, name)
	ref := hosts.Registry + "/e2e/group:v1"
	r := migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", "--format", "json", name+"-cli", name+"-srv", ref)
	if r.code != 0 {
		t.Fatalf("push failed: %s", r.stderr)
	}
	var pushed struct {
		Digest  string
		Members []struct{ Container string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &pushed); err != nil || len(pushed.Members) != 2 ||
		pushed.Members[0].Container != name+"-srv" || pushed.Members[1].Container != name+"-cli" {
		t.Fatalf("push reported %s (%v)", r.stdout, err)
	}
	checkStopped(t, name)

	r = migrate(t, "inspect", "--tls-verify=false", ref)
	if r.code != 0 || !strings.Contains(r.stdout, "Group:       2 containers joined to the namespaces of "+name+"-srv") ||
		!strings.Contains(r.stdout, "Joins:       the network namespace of "+name+"-srv") {
		t.Fatalf("inspect of the group's index: exit %d: %s", r.code, r.stdout)
	}

	r = migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", ref+"@"+pushed.Digest)
	if r.code != 0 {
		t.Fatalf("pull failed: %s", r.stderr)
	}
	if ids := strings.Fields(r.stdout); len(ids) != 2 {
		t.Fatalf("pull printed %q, want the two containers' IDs", r.stdout)
	}
	checkGroup(t, hosts.HostBURL, name, srv, cli)
}

// TestGroupMove moves a group directly: first onto a B that already has
// a container of the client's name, which fails with the members thawed
// and running on A and nothing new on B; then, the name free, for real.
func TestGroupMove(t *testing.T) {
	const name = "e2e-group-move"
	srv, cli := startGroup(t, name)
	podman(t, hosts.HostBURL, "create", "--name", name+"-cli", hosts.TestImage, "true")
	unchanged := unchangedOnB(t)
	r := moveCmd(t, nil, "--url", hosts.HostAURL, "--to", hosts.HostBURL, name+"-srv", name+"-cli")
	if r.code == 0 || !strings.Contains(r.stderr, "runs on there") {
		t.Fatalf("move onto a taken name: exit %d: %s", r.code, r.stderr)
	}
	unchanged()
	checkGroup(t, hosts.HostAURL, name, srv, cli)

	podman(t, hosts.HostBURL, "rm", name+"-cli")
	srv = readStatus(t, hosts.HostAURL, name+"-srv")
	cli = readPeerStatus(t, hosts.HostAURL, name+"-cli")
	r = moveCmd(t, nil, "--url", hosts.HostAURL, "--to", hosts.HostBURL, name+"-srv", name+"-cli")
	if r.code != 0 {
		t.Fatalf("move failed: %s", r.stderr)
	}
	checkStopped(t, name)
	checkGroup(t, hosts.HostBURL, name, srv, cli)
}

// TestGroupJoinsIPCPIDUTS moves, without a registry, a server and a
// container that joins its IPC, PID and UTS namespaces (but has a network
// of its own), A to B: both continue, and on B the joiner is in the
// restored server's namespaces, as its mode says. Named alone, the joiner
// is refused, naming the server.
func TestGroupJoinsIPCPIDUTS(t *testing.T) {
	const name = "e2e-group-ns"
	srvName, cliName := name+"-srv", name+"-cli"
	for _, url := range []string{hosts.HostAURL, hosts.HostBURL} {
		t.Cleanup(func() {
			podmanTry(t, url, "rm", "-f", "-t", "0", cliName)
			podmanTry(t, url, "rm", "-f", "-t", "0", srvName)
		})
	}
	podman(t, hosts.HostAURL, "run", "-d", "--name", srvName, hosts.TestImage, "/bin/workload", "-mem", "16", "-sum-every", "5")
	joins := "container:" + srvName
	podman(t, hosts.HostAURL, "run", "-d", "--name", cliName, "--ipc", joins, "--pid", joins, "--uts", joins, hosts.TestImage, "/bin/workload", "-mem", "16", "-sum-every", "5")
	srv := waitStatus(t, hosts.HostAURL, srvName, func(s status) bool { return s.Counter >= 5 })
	cli := waitStatus(t, hosts.HostAURL, cliName, func(s status) bool { return s.Counter >= 5 })

	r := migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", cliName, hosts.Registry+"/e2e/group-ns:v1")
	if r.code != 5 || !strings.Contains(r.stderr, `"`+cliName+`" needs "`+srvName+`"`) {
		t.Fatalf("push of the joiner alone: exit %d: %s", r.code, r.stderr)
	}

	r = moveCmd(t, nil, "--url", hosts.HostAURL, "--to", hosts.HostBURL, cliName, srvName)
	if r.code != 0 || !strings.Contains(r.stdout, "\tmoved") {
		t.Fatalf("move: exit %d: %s", r.code, r.stderr)
	}
	checkContinued(t, hosts.HostBURL, srvName, srv)
	checkContinued(t, hosts.HostBURL, cliName, cli)
	srvID := podman(t, hosts.HostBURL, "inspect", "--format", "{{.Id}}", srvName)
	pid := func(ctr string) string {
		return podman(t, hosts.HostBURL, "inspect", "--format", "{{.State.Pid}}", ctr)
	}
	for _, ns := range []struct{ mode, proc string }{{"IpcMode", "ipc"}, {"PidMode", "pid"}, {"UTSMode", "uts"}} {
		if mode := podman(t, hosts.HostBURL, "inspect", "--format", "{{.HostConfig."+ns.mode+"}}", cliName); mode != "container:"+srvID {
			t.Errorf("%s on B: %s %q, want container:%s", cliName, ns.mode, mode, srvID)
		}
		if a, b := readlinkNS(t, pid(srvName), ns.proc), readlinkNS(t, pid(cliName), ns.proc); a != b {
			t.Errorf("%s namespace on B: server %s, joiner %s", ns.proc, a, b)
		}
	}
	if a, b := readlinkNS(t, pid(srvName), "net"), readlinkNS(t, pid(cliName), "net"); a == b {
		t.Errorf("the joiner shares the server's network namespace %s on B; it had its own", a)
	}
	for _, m := range []string{srvName, cliName} {
		if state := podman(t, hosts.HostAURL, "inspect", "--format", "{{.State.Status}}", m); state != "exited" {
			t.Errorf("member %s on A: %s, want exited", m, state)
		}
	}
}

func readlinkNS(t *testing.T, pid, ns string) string {
	t.Helper()
	l, err := os.Readlink("/proc/" + pid + "/ns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	return l
}
