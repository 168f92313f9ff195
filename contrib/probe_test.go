// Tests of the host set-up scripts that need neither root nor podman.
package contrib_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakes are criu programs that behave as the three kinds of host do.
var fakes = map[string]string{
	// Every dump waits forever, as CRIU < 4.2 on a VM guest whose
	// hardware breakpoints never fire.
	"hang": `case "$1" in --version) echo "Version: 4.1.1";; dump) exec sleep 1000;; esac`,
	// The dump fails, as CRIU 4.1 on a socket it cannot read.
	"fail": `case "$1" in --version) echo "Version: 4.1.1";; dump) echo "Error (criu/sockets.c:628): sockets: Can't get 1:16 opt" >&2; exit 1;; esac`,
	// Dump kills the task and restore starts one again, as CRIU does.
	"work": `case "$1" in
--version) echo "Version: 4.2.1";;
dump) shift; while [ $# -gt 0 ]; do [ "$1" = -t ] && kill -KILL "$2"; shift; done;;
restore) shift; while [ $# -gt 0 ]; do if [ "$1" = --pidfile ]; then setsid sleep 1000 >/dev/null 2>&1 </dev/null & echo $! > "$2"; fi; shift; done;;
esac`,
	// Restore claims success but no process comes back.
	"norestore": `case "$1" in --version) echo "Version: 4.2.1";; dump) :;; restore) :;; esac`,
}

func TestCRIUProbe(t *testing.T) {
	for _, tc := range []struct {
		fake   string
		code   int
		prefix string
		says   string
	}{
		{"hang", 3, "hang:", "CRIU_FAULT=130"},
		{"fail", 4, "failed:", "dump exited 1"},
		{"work", 0, "ok:", "criu 4.2.1"},
		{"norestore", 4, "failed:", "no restored process"},
	} {
		t.Run(tc.fake, func(t *testing.T) {
			dir := t.TempDir()
			criu := filepath.Join(dir, "criu")
			if err := os.WriteFile(criu, []byte("#!/bin/sh\n"+fakes[tc.fake]+"\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, "sh", "criu-probe.sh", criu)
			cmd.Env = append(os.Environ(), "PROBE_TIMEOUT=2", "TMPDIR="+dir)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			got := strings.TrimSpace(string(out))
			if code != tc.code || !strings.HasPrefix(got, tc.prefix) || !strings.Contains(got, tc.says) {
				t.Fatalf("probe with a criu that %ss: exit %d, %q; want exit %d, %q ... %q (stderr %s)", tc.fake, code, got, tc.code, tc.prefix, tc.says, stderr.String())
			}
			// Nothing left: no temp directory, no process of the fake's.
			if left, _ := filepath.Glob(filepath.Join(dir, "criu-probe.*")); len(left) > 0 {
				t.Errorf("probe left %v", left)
			}
			if pids, _ := exec.Command("pgrep", "-x", "-f", "sleep 1000").Output(); len(pids) > 0 {
				t.Errorf("probe left processes behind: %s", pids)
			}
		})
	}
}
