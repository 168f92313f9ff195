//go:build e2e

package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// moveCmd runs podman-migrate move; its summary lines are results on
// stdout even when a container failed, so the failure contract of
// migrate() does not apply.
func moveCmd(t *testing.T, env []string, args ...string) result {
	t.Helper()
	r := runCmdEnv(t, env, bin, append([]string{"move"}, args...)...)
	t.Logf("podman-migrate move %s -> exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

// TestMove moves containers A -> B in one command: through a registry,
// without one (two at once), and back when B refuses.
func TestMove(t *testing.T) {
	t.Run("through a registry", func(t *testing.T) {
		src := "e2e-move-reg"
		before := startWorkload(t, src)
		rmB(t, src)
		via := hosts.Registry + "/e2e/move"
		r := moveCmd(t, nil, "--url", hosts.HostAURL, "--to", hosts.HostBURL, "--via", via, "--tls-verify=false", src)
		if r.code != 0 {
			t.Fatalf("move failed: %s", r.stderr)
		}
		f := strings.Split(strings.TrimSpace(r.stdout), "\t")
		if len(f) != 6 || f[0] != src || f[1] != "moved" || !strings.HasPrefix(f[4], via+":"+src+"@sha256:") {
			t.Fatalf("summary %q", r.stdout)
		}
		if got := podman(t, hosts.HostBURL, "inspect", "--format", "{{.Id}}", src); got != f[3] {
			t.Fatalf("summary names ID %s, B has %s", f[3], got)
		}
		checkContinued(t, hosts.HostBURL, src, before)
		// The image stays in the registry.
		inspectRaw(t, via+":"+src)
	})

	t.Run("without a registry, two at once", func(t *testing.T) {
		a, b := "e2e-move-direct1", "e2e-move-direct2"
		beforeA, beforeB := startWorkload(t, a), startWorkload(t, b)
		rmB(t, a)
		rmB(t, b)
		r := moveCmd(t, nil, "--url", hosts.HostAURL, "--to", hosts.HostBURL, "--parallel", "2", a, b)
		if r.code != 0 {
			t.Fatalf("move failed: %s", r.stderr)
		}
		if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 2 || !strings.Contains(r.stdout, a+"\tmoved") || !strings.Contains(r.stdout, b+"\tmoved") {
			t.Fatalf("want one summary line per container: %q", r.stdout)
		}
		checkContinued(t, hosts.HostBURL, a, beforeA)
		checkContinued(t, hosts.HostBURL, b, beforeB)
	})

	t.Run("json", func(t *testing.T) {
		src := "e2e-move-json"
		before := startWorkload(t, src)
		rmB(t, src)
		r := moveCmd(t, nil, "--url", hosts.HostAURL, "--to", hosts.HostBURL, "--format", "json", src)
		var doc struct {
			Containers []struct {
				Container, Name, ID string
				Push                struct{ Seconds map[string]float64 }
				Pull                struct{ Seconds map[string]float64 }
			}
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &doc) != nil || len(doc.Containers) != 1 {
			t.Fatalf("move --format json: exit %d, %q", r.code, r.stdout)
		}
		c := doc.Containers[0]
		if c.Container != src || c.Name != src || c.ID == "" || c.Push.Seconds["checkpoint"] <= 0 || c.Pull.Seconds["restore"] <= 0 {
			t.Fatalf("move document: %+v", c)
		}
		checkContinued(t, hosts.HostBURL, src, before)
	})

	t.Run("target refuses: the source runs again", func(t *testing.T) {
		src := "e2e-move-refused"
		// HOST_A_DATA exists on A only: B's plan blocks the restore.
		before := startWorkload(t, src, "-v", hosts.HostAData+":/data")
		unchanged := unchangedOnB(t)
		r := moveCmd(t, nil, "--url", hosts.HostAURL, "--to", hosts.HostBURL, src)
		if r.code != 5 || !strings.Contains(r.stderr, "does not exist on this host") || !strings.Contains(r.stderr, "running again on the source host") {
			t.Fatalf("exit %d; want 5, B's reason, and the source running again", r.code)
		}
		if !strings.Contains(r.stdout, src+"\tfailed\t") {
			t.Fatalf("summary %q", r.stdout)
		}
		unchanged()
		checkContinued(t, hosts.HostAURL, src, before)
	})
}

// TestConnections: --connection and $CONTAINER_CONNECTION read podman's
// own connection lists; an unreachable ssh host is a clear error.
func TestConnections(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "containers.conf")
	if err := os.WriteFile(conf, []byte("[engine.service_destinations.host-b]\nuri = \""+hosts.HostBURL+"\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	xdg := filepath.Join(dir, "xdg")
	if err := os.MkdirAll(filepath.Join(xdg, "containers"), 0o755); err != nil {
		t.Fatal(err)
	}
	js := `{"Connection":{"Default":"host-a","Connections":{"host-a":{"URI":"` + hosts.HostAURL + `"}}}}`
	if err := os.WriteFile(filepath.Join(xdg, "containers", "podman-connections.json"), []byte(js), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{"CONTAINERS_CONF=" + conf, "XDG_CONFIG_HOME=" + xdg}

	r := migrateEnv(t, env, "--connection", "host-b", "version")
	if r.code != 0 || !strings.Contains(r.stdout, "Server ("+hosts.HostBURL+")") {
		t.Fatalf("--connection host-b (containers.conf): exit %d, %q", r.code, r.stdout)
	}
	r = migrateEnv(t, append(env, "CONTAINER_CONNECTION=host-a"), "version")
	if r.code != 0 || !strings.Contains(r.stdout, "Server ("+hosts.HostAURL+")") {
		t.Fatalf("CONTAINER_CONNECTION=host-a (podman-connections.json): exit %d, %q", r.code, r.stdout)
	}
	// move between two named connections.
	src := "e2e-move-conn"
	before := startWorkload(t, src)
	rmB(t, src)
	m := moveCmd(t, env, "--from", "host-a", "--to", "host-b", src)
	if m.code != 0 {
		t.Fatalf("move by connection names failed: %s", m.stderr)
	}
	checkContinued(t, hosts.HostBURL, src, before)

	// version prints its client part before it connects, as podman
	// version does, so the failure contract's empty stdout does not hold.
	r = runCmdEnv(t, env, bin, "--connection", "nosuch", "version")
	if r.code != 2 || !strings.Contains(r.stderr, `no such connection "nosuch"`) || !strings.Contains(r.stderr, "host-a") || !strings.Contains(r.stderr, "host-b") {
		t.Fatalf("unknown connection: exit %d, %q", r.code, r.stderr)
	}
	r = migrate(t, "--url", "ssh://root@127.0.0.1:1/run/podman/podman.sock", "--identity", filepath.Join(dir, "no-key"), "pull", "oci:/nonexistent:x")
	if r.code != 3 || !strings.Contains(r.stderr, "podman: connecting to ssh://root@127.0.0.1:1") {
		t.Fatalf("unreachable ssh host: exit %d, %q", r.code, r.stderr)
	}
}

// TestOutputForPrograms: --format json on push, pull, move and version
// prints one document with the figures; --quiet prints only the result.
func TestOutputForPrograms(t *testing.T) {
	src, dst := "e2e-json-src", "e2e-json-dst"
	before := startWorkload(t, src)
	dest := "oci:" + filepath.Join(stateDir, "json-layout") + ":json"
	r := migrate(t, "--url", hosts.HostAURL, "push", "--leave-running", "--format", "json", src, dest)
	var pushed struct {
		Reference, Digest, Container, ID string
		Seconds                          map[string]float64
		Bytes                            map[string]int64
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &pushed) != nil {
		t.Fatalf("push --format json: exit %d, %q", r.code, r.stdout)
	}
	if pushed.Reference != dest || !strings.HasPrefix(pushed.Digest, "sha256:") || pushed.Container != src ||
		pushed.Bytes["archive"] <= 0 || pushed.Bytes["image"] <= 0 || pushed.Seconds["total"] <= 0 || pushed.Seconds["checkpoint"] <= 0 {
		t.Fatalf("push document: %+v", pushed)
	}
	rmB(t, dst)
	r = migrate(t, "--url", hosts.HostBURL, "pull", "--format", "json", "--name", dst, "--ignore-static-ip", "--ignore-static-mac", dest)
	var pulled struct {
		ID, Name, Digest string
		Seconds          map[string]float64
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &pulled) != nil {
		t.Fatalf("pull --format json: exit %d, %q", r.code, r.stdout)
	}
	if pulled.Name != dst || pulled.Digest != pushed.Digest || pulled.Seconds["restore"] <= 0 || pulled.Seconds["verify"] < 0 {
		t.Fatalf("pull document: %+v", pulled)
	}
	if got := podman(t, hosts.HostBURL, "inspect", "--format", "{{.Id}}", dst); got != pulled.ID {
		t.Fatalf("pull said %s, B has %s", pulled.ID, got)
	}
	checkContinued(t, hosts.HostBURL, dst, before)

	r = migrate(t, "--url", hosts.HostAURL, "version", "--format", "json")
	var v struct {
		Client map[string]string
		Server map[string]string
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &v) != nil || v.Client["version"] != "e2e" || v.Server["podman"] == "" || v.Server["criu"] == "" {
		t.Fatalf("version --format json: %q", r.stdout)
	}

	// --quiet: only the result.
	qsrc := "e2e-quiet-src"
	startWorkload(t, qsrc)
	r = migrate(t, "--quiet", "--url", hosts.HostAURL, "push", "--leave-running", qsrc, "oci:"+filepath.Join(stateDir, "quiet-layout")+":q")
	if r.code != 0 || r.stderr != "" || !strings.Contains(r.stdout, "@sha256:") {
		t.Fatalf("--quiet push: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	r = migrate(t, "--log-level", "loud", "version")
	if r.code != 2 {
		t.Fatalf("--log-level loud: exit %d", r.code)
	}
}
