package restore

import (
	"strings"
	"testing"
)

func TestCRIUReasons(t *testing.T) {
	// The error lines of restore.logs seen on the test hosts (CRIU 4.1, a
	// file of another size on the target), in CRIU's line format.
	const log = `(00.000813) Version: 4.1 (gitid 0)
(00.001920) Error (criu/util.c:1533): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted
(00.051432)      1: Error (criu/files-reg.c:2175): File etc/app.conf has bad size 26 (expect 5)
(00.051905)      1: Error (criu/files.c:1221): Unable to open fd=3 id=0x5
(00.052613) Error (criu/cr-restore.c:2320): Restoring FAILED.
(00.053635) Error (criu/cgroup.c:1998): cg: cgroupd: recv req error: No such file or directory
`
	for _, tt := range []struct{ name, log, want string }{
		{"reasons, without noise or stamps", log,
			"Error (criu/files-reg.c:2175): File etc/app.conf has bad size 26 (expect 5) | Error (criu/files.c:1221): Unable to open fd=3 id=0x5"},
		{"only noise: kept", "(00.052613) Error (criu/cr-restore.c:2320): Restoring FAILED.\n",
			"Error (criu/cr-restore.c:2320): Restoring FAILED."},
		{"the last three", strings.Repeat("(00.1) Error (a.c:1): one\n", 2) + "(00.2) Error (a.c:2): two\n(00.3) Error (a.c:3): three\n",
			"Error (a.c:1): one | Error (a.c:2): two | Error (a.c:3): three"},
		{"no errors", "(00.000813) Version: 4.1 (gitid 0)\n", ""},
	} {
		if got := criuReasons(strings.NewReader(tt.log)); got != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", tt.name, got, tt.want)
		}
	}
}
