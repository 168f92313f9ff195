package podman

import (
	"net"
	"os"
	"strings"
	"testing"
)

// Tables in the kernel's format, by hand: a listener, loopback and
// outside connections, one in TIME_WAIT; tcp6 with a v4-mapped address.
const tcpTable = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 81234 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D2F4 01 00000000:00000000 00:00000000 00000000     0        0 81240 1 0000000000000000 20 4 30 10 -1
   2: 0500580A:1F90 0100580A:A3C2 01 00000000:00000000 00:00000000 00000000     0        0 81250 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:D2F6 0100007F:1F90 06 00000000:00000000 03:00001770 00000000     0        0 0 3 0000000000000000
`

const tcp6Table = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000001000000:C350 01 00000000:00000000 00:00000000 00000000     0        0 91234 1 0000000000000000 20 4 30 10 -1
   1: 0000000000000000FFFF00000500580A:1F90 0000000000000000FFFF00000100580A:C351 01 00000000:00000000 00:00000000 00000000     0        0 91235 1 0000000000000000 20 4 30 10 -1
`

func TestParseTCPTable(t *testing.T) {
	got, err := ParseTCPTable(strings.NewReader(tcpTable))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].String() != "127.0.0.1:8080 <-> 127.0.0.1:54004" || !got[0].Loopback() ||
		got[1].String() != "10.88.0.5:8080 <-> 10.88.0.1:41922" || got[1].Loopback() {
		t.Fatalf("tcp: %v", got)
	}
	got, err = ParseTCPTable(strings.NewReader(tcp6Table))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].String() != "[::1]:8080 <-> [::1]:50000" || !got[0].Loopback() ||
		got[1].String() != "10.88.0.5:8080 <-> 10.88.0.1:50001" || got[1].Loopback() {
		t.Fatalf("tcp6: %v", got)
	}
	if _, err := ParseTCPTable(strings.NewReader("header\n 0: zz:1F90 0100007F:D2F4 01\n")); err == nil {
		t.Fatal("a bad address was read")
	}
}

// TestParseTCPTableOfTheKernel reads this process's own table, as the
// kernel writes it, and finds a loopback connection it made.
func TestParseTCPTableOfTheKernel(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp4", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f, err := os.Open("/proc/self/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	conns, err := ParseTCPTable(f)
	if err != nil {
		t.Fatal(err)
	}
	want := c.LocalAddr().String() + " <-> " + c.RemoteAddr().String()
	for _, got := range conns {
		if got.String() == want && got.Loopback() {
			return
		}
	}
	t.Fatalf("the kernel's table has no %s: %v", want, conns)
}
