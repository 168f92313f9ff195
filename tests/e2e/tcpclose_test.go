//go:build e2e

package e2e

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	podmanapi "github.com/podman-migrate/podman-migrate/bindings"
)

// holdConnection opens a connection to port on this machine's address,
// sends one request and reads the answer, and keeps the connection open
// (the server holds it, HTTP keep-alive) until the test ends or the
// caller closes it.
func holdConnection(t *testing.T, port int) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(hostAddr(t), strconv.Itoa(port)), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "GET / HTTP/1.1\r\nHost: e2e\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Read(make([]byte, 512)); err != nil {
		t.Fatal(err)
	}
	return conn
}

// outsideConnections lists the established TCP connections of ctr's
// network namespace on url whose ends are not both on its loopback, read
// inside the container.
func outsideConnections(t *testing.T, url, ctr string) []string {
	t.Helper()
	var out []string
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		text := podman(t, url, "exec", ctr, "/bin/workload", "-cat", table)
		conns, err := podmanapi.ParseTCPTable(strings.NewReader(text + "\n"))
		if err != nil {
			t.Fatalf("%s of %s: %v: %s", table, ctr, err, text)
		}
		for _, c := range conns {
			if !c.Loopback() {
				out = append(out, c.String())
			}
		}
	}
	return out
}

// TestPodTCPClose: a pod holding a connection from outside (a client kept
// alive through its published port) is refused by push, and pushed with
// --tcp-close, the connection open. Its image records the choice, so a
// plain pull on B (podman 4.3.1, which has no tcpClose) restores it
// closed, through a CRIU configuration with tcp-close named by the
// runtime spec: both members continue and talk, B's port answers, and
// no connection from outside is left in the restored pod.
func TestPodTCPClose(t *testing.T) {
	const pod = "e2e-pod-tcpclose"
	portA, portB := freePort(t), freePort(t)
	srv, cli := startTalkingPod(t, hosts.HostAURL, pod, portA)
	holdConnection(t, portA)
	if conns := outsideConnections(t, hosts.HostAURL, pod+"-srv"); len(conns) == 0 {
		t.Fatal("the pod on A holds no connection from outside: nothing to close")
	}
	ref := hosts.Registry + "/e2e/pod-tcpclose:v1"
	r := migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", pod, ref)
	if r.code != 5 || !strings.Contains(r.stderr, "push with --tcp-close") {
		t.Fatalf("push without --tcp-close: exit %d: %s", r.code, r.stderr)
	}
	r = migrate(t, "--url", hosts.HostAURL, "push", "--tls-verify=false", "--tcp-close", pod, ref)
	if r.code != 0 || !strings.Contains(r.stderr, "a connection to a peer outside the pod: it is closed on restore (--tcp-close)") {
		t.Fatalf("push --tcp-close: exit %d: %s", r.code, r.stderr)
	}
	r = migrate(t, "--url", hosts.HostBURL, "pull", "--tls-verify=false", "--publish", fmt.Sprintf("%d:8080", portB), ref)
	t.Cleanup(func() { podmanTry(t, hosts.HostBURL, "pod", "rm", "-f", "-t", "0", pod) })
	if r.code != 0 || strings.Count(r.stderr, "The checkpoint's TCP connections are restored closed: podman before 5.7.0 has no tcpClose") != 2 {
		t.Fatalf("pull: exit %d: %s", r.code, r.stderr)
	}
	checkTalkingPod(t, hosts.HostBURL, pod, portB, srv, cli)
	if conns := outsideConnections(t, hosts.HostBURL, pod+"-srv"); len(conns) != 0 {
		t.Fatalf("the pod on B still holds connections from outside: %s", conns)
	}
}

// TestMoveTCPClose: move --tcp-close of one container serving a client
// kept alive, A (podman 4.3.1) to C (podman 5.4.2, runc), without a
// registry: the process continues on C with the connection closed.
func TestMoveTCPClose(t *testing.T) {
	const name = "e2e-move-tcpclose"
	port := freePort(t)
	podman(t, hosts.HostAURL, "run", "-d", "--name", name, "-p", fmt.Sprintf("%d:8080", port), hosts.TestImage,
		"/bin/workload", "-mem", "16", "-sum-every", "5", "-serve", ":8080")
	t.Cleanup(func() { podmanTry(t, hosts.HostAURL, "rm", "-f", "-t", "0", name) })
	waitStatus(t, hosts.HostAURL, name, func(s status) bool { return s.Counter >= 5 })
	holdConnection(t, port)
	if conns := outsideConnections(t, hosts.HostAURL, name); len(conns) == 0 {
		t.Fatal("the container on A holds no connection from outside: nothing to close")
	}
	before := waitStatus(t, hosts.HostAURL, name, func(status) bool { return true })
	t.Cleanup(func() { podmanTry(t, hosts.HostCURL, "rm", "-f", "-t", "0", name) })
	r := moveCmd(t, nil, "--url", hosts.HostAURL, "--to", hosts.HostCURL, "--tcp-close", name)
	if r.code != 0 || !strings.Contains(r.stdout, name+"\tmoved") || !strings.Contains(r.stderr, "restored closed") {
		t.Fatalf("move --tcp-close: exit %d: %s", r.code, r.stderr)
	}
	checkContinued(t, hosts.HostCURL, name, before)
	if conns := outsideConnections(t, hosts.HostCURL, name); len(conns) != 0 {
		t.Fatalf("the container on C still holds connections from outside: %s", conns)
	}
}
