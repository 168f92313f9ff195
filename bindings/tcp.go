package podman

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// TCPConn is one established TCP connection in a container's network
// namespace.
type TCPConn struct {
	Local, Remote netip.AddrPort
}

func (c TCPConn) String() string { return c.Local.String() + " <-> " + c.Remote.String() }

// Loopback says whether both ends are in the namespace's loopback: only
// such a connection can be restored with both its ends on another host,
// where the namespace's other addresses differ.
func (c TCPConn) Loopback() bool { return c.Local.Addr().IsLoopback() && c.Remote.Addr().IsLoopback() }

// TCPConnections lists the established TCP connections of a running
// container's network namespace (shared by a pod's members), read from
// /proc/PID/net/tcp and tcp6 as the service's machine sees them; it needs
// the service on this machine (ErrRemote otherwise). ns names the
// namespace, so callers can read a shared one once.
func (c *Client) TCPConnections(ctr *Container) (conns []TCPConn, ns string, err error) {
	root, err := c.ServiceRoot()
	if err != nil {
		return nil, "", err
	}
	if ctr.State.Pid <= 0 {
		return nil, "", fmt.Errorf("container %s: podman reports no process", ctr.Name)
	}
	proc := filepath.Join(root, "proc", strconv.Itoa(ctr.State.Pid))
	if ns, err = os.Readlink(filepath.Join(proc, "ns", "net")); err != nil {
		return nil, "", fmt.Errorf("container %s: %w", ctr.Name, err)
	}
	for _, table := range []string{"tcp", "tcp6"} {
		f, err := os.Open(filepath.Join(proc, "net", table))
		if os.IsNotExist(err) {
			continue // no IPv6
		}
		if err != nil {
			return nil, "", fmt.Errorf("container %s: %w", ctr.Name, err)
		}
		found, err := ParseTCPTable(f)
		f.Close()
		if err != nil {
			return nil, "", fmt.Errorf("container %s: reading %s: %w", ctr.Name, table, err)
		}
		conns = append(conns, found...)
	}
	return conns, ns, nil
}

// tcpEstablished is TCP_ESTABLISHED in /proc/net/tcp's st column.
const tcpEstablished = "01"

// ParseTCPTable reads the established connections of a /proc/net/tcp or
// tcp6 table.
func ParseTCPTable(r io.Reader) ([]TCPConn, error) {
	var out []TCPConn
	sc := bufio.NewScanner(r)
	sc.Scan() // the header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			return nil, fmt.Errorf("line %q", sc.Text())
		}
		if f[3] != tcpEstablished {
			continue
		}
		local, err := parseProcAddr(f[1])
		if err != nil {
			return nil, err
		}
		remote, err := parseProcAddr(f[2])
		if err != nil {
			return nil, err
		}
		out = append(out, TCPConn{Local: local, Remote: remote})
	}
	return out, sc.Err()
}

// parseProcAddr reads ADDR:PORT in hex, the address as the kernel keeps
// it: 32-bit words in host (little-endian) order.
func parseProcAddr(s string) (netip.AddrPort, error) {
	h, p, ok := strings.Cut(s, ":")
	port, err := strconv.ParseUint(p, 16, 16)
	if !ok || err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q", s)
	}
	b, err := hex.DecodeString(h)
	if err != nil || (len(b) != 4 && len(b) != 16) {
		return netip.AddrPort{}, fmt.Errorf("address %q", s)
	}
	for i := 0; i < len(b); i += 4 {
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	addr, _ := netip.AddrFromSlice(net.IP(b))
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), nil
}
