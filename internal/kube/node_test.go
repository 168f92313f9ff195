package kube

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/podman-migrate/podman-migrate/internal/fault"
)

// fakeCrictl writes a crictl that answers `version` and `info -o json`
// with the given files (as CRI-O 1.36.3's crictl printed them, in
// testdata), after checking the global flags it is given.
func fakeCrictl(t *testing.T, version, info, extra string) string {
	t.Helper()
	abs := func(f string) string {
		p, err := filepath.Abs(f)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	script := `#!/bin/sh
[ "$1" = --timeout ] || { echo "no --timeout" >&2; exit 9; }
shift 2
[ "$1" = --runtime-endpoint ] && shift 2
` + extra + `
case "$1" in
version) cat '` + abs(version) + `' ;;
info) [ "$2 $3" = "-o json" ] || exit 8; cat '` + abs(info) + `' ;;
*) exit 7 ;;
esac
`
	p := filepath.Join(t.TempDir(), "crictl")
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckNode(t *testing.T) {
	containerd := filepath.Join(t.TempDir(), "version")
	if err := os.WriteFile(containerd, []byte("Version:  0.1.0\nRuntimeName:  containerd\nRuntimeVersion:  v2.1.4\nRuntimeApiVersion:  v1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, version, info string
		ok, criu            bool
		problem             string
	}{
		{"CRI-O, CRIU on", "testdata/crictl-version-crio-1.36.3.txt", "testdata/crictl-info-crio-1.36.3-criu-on.json", true, true, ""},
		{"CRI-O, CRIU off", "testdata/crictl-version-crio-1.36.3.txt", "testdata/crictl-info-crio-1.36.3-criu-off.json", false, false, "enable_criu_support = true under [crio.runtime]"},
		{"containerd", containerd, "testdata/crictl-info-crio-1.36.3-criu-on.json", false, false, "containerd 2.4 removes restore through CreateContainer"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rep, err := CheckNode(context.Background(), NodeOptions{Crictl: fakeCrictl(t, tt.version, tt.info, ""), Endpoint: "unix:///run/crio/crio.sock"})
			if err != nil {
				t.Fatal(err)
			}
			if rep.OK != tt.ok || rep.CheckpointRestore != tt.criu || (tt.problem != "") != (len(rep.Problems) == 1) ||
				tt.problem != "" && !strings.Contains(rep.Problems[0], tt.problem) {
				t.Fatalf("report %+v, want ok %t, checkpoint/restore %t, problem %q", rep, tt.ok, tt.criu, tt.problem)
			}
			text := rep.Text()
			if last := text[strings.LastIndex(strings.TrimSuffix(text, "\n"), "\n")+1:]; strings.HasPrefix(last, "ok:") != tt.ok {
				t.Errorf("text ends %q", last)
			}
		})
	}
	if rep, _ := CheckNode(context.Background(), NodeOptions{Crictl: fakeCrictl(t, "testdata/crictl-version-crio-1.36.3.txt", "testdata/crictl-info-crio-1.36.3-criu-on.json", "")}); rep == nil ||
		rep.Runtime != "cri-o" || rep.RuntimeVersion != "1.36.3" || !strings.HasPrefix(rep.DefaultRuntime, "runc (") {
		t.Errorf("without an endpoint: %+v", rep)
	}
}

func TestCheckNodeFailures(t *testing.T) {
	for _, tt := range []struct {
		name, crictl, want string
	}{
		{"no crictl", filepath.Join(t.TempDir(), "crictl"), "install crictl"},
		{"crictl fails", fakeCrictl(t, "", "", `echo "connect: no such file or directory" >&2; exit 1`), "connect: no such file or directory"},
		{"crictl hangs", fakeCrictl(t, "", "", "exec sleep 30"), "did not answer within 200ms"},
		{"not JSON", fakeCrictl(t, "testdata/crictl-version-crio-1.36.3.txt", "testdata/crictl-version-crio-1.36.3.txt", ""), "reading `crictl info`"},
		{"no runtime", fakeCrictl(t, "testdata/crictl-info-crio-1.36.3-criu-on.json", "", ""), "named no runtime"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := CheckNode(context.Background(), NodeOptions{Crictl: tt.crictl, Timeout: 100 * time.Millisecond})
			if !errors.Is(err, ErrCrictl) || !strings.Contains(err.Error()+" "+fault.HintOf(err), tt.want) {
				t.Fatalf("err = %v, want ErrCrictl saying %q", err, tt.want)
			}
		})
	}
}
