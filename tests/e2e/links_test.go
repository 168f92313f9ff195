//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net"
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

// serviceEnvPath is the PATH host B's podman service runs with.
const serviceEnvPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// The network namespace B's tcp:// service and sshd run in, joined to
// this one (the client's and host A's) by a veth pair; hosts.sh down
// removes it after an interrupted run.
const (
	linkNS    = "pme2e-b"
	linkVethA = "pme2e0"
	linkVethB = "pme2e1"
	linkIPA   = "10.250.78.1"
	linkIPB   = "10.250.78.2"
)

// linkToB makes B a host of its own on the network: a namespace behind a
// veth pair, with linkIPB inside; everything the client sends to a
// service there crosses the veth. It goes when the test ends.
func linkToB(t *testing.T) {
	t.Helper()
	_ = exec.Command("ip", "netns", "del", linkNS).Run() // an interrupted run's
	for _, args := range [][]string{
		{"netns", "add", linkNS},
		{"link", "add", linkVethA, "type", "veth", "peer", "name", linkVethB, "netns", linkNS},
		{"addr", "add", linkIPA + "/30", "dev", linkVethA},
		{"link", "set", linkVethA, "up"},
		{"-n", linkNS, "addr", "add", linkIPB + "/30", "dev", linkVethB},
		{"-n", linkNS, "link", "set", linkVethB, "up"},
		{"-n", linkNS, "link", "set", "lo", "up"},
	} {
		if r := runCmd(t, "ip", args...); r.code != 0 {
			t.Fatalf("ip %s: %s", strings.Join(args, " "), r.stderr)
		}
		if args[0] == "netns" {
			t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", linkNS).Run() })
		}
	}
}

// onBDaemon runs a daemon in host B's mount namespace, and in the network
// namespace netns ("": B's own), until the test ends (or the test binary
// dies), its output in log.
func onBDaemon(t *testing.T, netns, log string, args ...string) {
	t.Helper()
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	enter := []string{"-t", hosts.HostBPID, "-m"}
	if netns != "" {
		enter = append([]string{"--net=/run/netns/" + netns}, enter...)
	}
	cmd := exec.Command("nsenter", append(append(enter, "--"), args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			_ = cmd.Wait()
			f.Close()
			if t.Failed() {
				if b, err := os.ReadFile(log); err == nil {
					t.Logf("%s:\n%s", filepath.Base(log), tail(string(b), 3000))
				}
			}
		})
	})
}

// waitListening waits until addr accepts connections.
func waitListening(t *testing.T, addr, what string) {
	t.Helper()
	for i := 0; i < 150; i++ {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s never listened on %s", what, addr)
}

// TestMoveOverTCPAndSSH: move reaches host B the other two ways podman
// does, across a network: B's podman, in B's own mount namespace and in a
// network namespace behind a veth pair, also listens on tcp:// (no TLS,
// as podman's), and an sshd in those namespaces forwards to B's socket
// (ssh://, key only, the host key learnt on first use into the client's
// known_hosts). Each move leaves the process carrying on on B. A move whose
// connection to B's podman is closed mid-stream restores the source.
func TestMoveOverTCPAndSSH(t *testing.T) {
	dir := t.TempDir()
	linkToB(t)
	tcpAddr := net.JoinHostPort(linkIPB, "8585")
	onBDaemon(t, linkNS, filepath.Join(dir, "tcp-service.log"), "env", serviceEnvPath, "podman", "system", "service", "--time=0", "tcp://"+tcpAddr)
	waitListening(t, tcpAddr, "host B's podman service")
	t.Run("tcp", func(t *testing.T) {
		addr := tcpAddr
		src := "e2e-move-tcp"
		before := startWorkload(t, src)
		rmB(t, src)
		r := moveCmd(t, nil, "--url", hosts.HostAURL, "--to", "tcp://"+addr, "--format", "json", src)
		var moved struct {
			Containers []struct {
				Pull struct {
					Compress string
					Bytes    map[string]int64
				}
			}
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &moved) != nil || len(moved.Containers) != 1 {
			t.Fatalf("move over tcp:// failed: %s", r.stderr)
		}
		// Across a network the archive goes as a zstd stream, compressed
		// where that pays, and podman 4.3.1 restores it.
		if p := moved.Containers[0].Pull; !strings.HasPrefix(p.Compress, "auto: zstd for ") || p.Bytes["sent"] == 0 {
			t.Errorf("move over tcp:// sent %d bytes as %q, want auto's zstd stream", p.Bytes["sent"], p.Compress)
		}
		checkContinued(t, hosts.HostBURL, src, before)
	})

	t.Run("tcp, the target's socket closed mid-stream", func(t *testing.T) {
		// A proxy in front of B's service hangs up on the restore
		// import after 64 KiB of the archive; every other call passes.
		proxy := newFaultProxy(t, tcpAddr)
		proxy.set(func(r *http.Request) string {
			if strings.HasSuffix(r.URL.Path, "/restore") && r.URL.Query().Get("import") == "true" {
				return faultCut
			}
			return noFault
		})
		src := "e2e-move-cut"
		before := startWorkload(t, src)
		rmB(t, src)
		r := moveCmd(t, nil, "--url", hosts.HostAURL, "--to", "tcp://"+proxy.addr, src)
		if r.code == 0 || !strings.Contains(r.stdout, src+"\tfailed") || !strings.Contains(r.stderr, "running again on the source host") {
			t.Fatalf("move through a cut connection: exit %d, stdout %q, stderr %q; want a failure that says the source runs again", r.code, r.stdout, r.stderr)
		}
		if proxy.count(faultCut) == 0 {
			t.Fatalf("the restore import was never cut: %v", proxy.exchanges())
		}
		checkContinued(t, hosts.HostAURL, src, before)
		if hasContainer(t, hosts.HostBURL, src) {
			t.Errorf("B kept a container %s after the failed move", src)
		}
	})

	t.Run("ssh", func(t *testing.T) {
		sshd, err := exec.LookPath("sshd")
		if err != nil {
			if _, err = os.Stat("/usr/sbin/sshd"); err != nil {
				t.Fatalf("sshd is not installed (make setup-host installs openssh-server): %v", err)
			}
			sshd = "/usr/sbin/sshd"
		}
		for _, k := range []string{"host", "client"} {
			if r := runCmd(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)); r.code != 0 {
				t.Fatalf("ssh-keygen: %s", r.stderr)
			}
		}
		pub, err := os.ReadFile(filepath.Join(dir, "client.pub"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
			t.Fatal(err)
		}
		addr := net.JoinHostPort(linkIPB, "2222")
		host, port, _ := net.SplitHostPort(addr)
		cfg := fmt.Sprintf(`ListenAddress %s:%s
HostKey %s
AuthorizedKeysFile %s
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AllowStreamLocalForwarding yes
PidFile %s
`, host, port, filepath.Join(dir, "host"), filepath.Join(dir, "authorized_keys"), filepath.Join(dir, "sshd.pid"))
		if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		// sshd wants its privilege-separation directory.
		onB(t, "mkdir -p /run/sshd")
		onBDaemon(t, linkNS, filepath.Join(dir, "sshd.log"), sshd, "-D", "-e", "-f", filepath.Join(dir, "sshd_config"))
		waitListening(t, addr, "sshd on host B")
		sock := strings.TrimPrefix(hosts.HostBURL, "unix://")
		to := fmt.Sprintf("ssh://root@%s%s", addr, sock)
		home := filepath.Join(dir, "home")
		if err := os.Mkdir(home, 0o700); err != nil {
			t.Fatal(err)
		}
		src := "e2e-move-ssh"
		before := startWorkload(t, src)
		rmB(t, src)
		r := moveCmd(t, []string{"HOME=" + home}, "--url", hosts.HostAURL, "--to", to, "--to-identity", filepath.Join(dir, "client"), src)
		if r.code != 0 || !strings.Contains(r.stdout, src+"\tmoved") {
			t.Fatalf("move over ssh:// failed: %s", r.stderr)
		}
		checkContinued(t, hosts.HostBURL, src, before)
		if b, err := os.ReadFile(filepath.Join(home, ".ssh", "known_hosts")); err != nil || !strings.Contains(string(b), "ssh-ed25519") {
			t.Errorf("B's host key was not recorded in the client's known_hosts: %q, %v", b, err)
		}
	})
}
