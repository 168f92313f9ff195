//go:build e2e

package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemdUnitsVerify runs systemd-analyze verify on every unit we
// ship, with the install paths pointed at what this test built.
func TestSystemdUnitsVerify(t *testing.T) {
	units, err := filepath.Glob(filepath.Join(repo, "contrib", "systemd", "*.service"))
	if err != nil || len(units) < 4 {
		t.Fatalf("units: %v %v", units, err)
	}
	dir := t.TempDir()
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(b), "/usr/local/bin/podman-migrate", bin)
		s = strings.ReplaceAll(s, "/usr/local/libexec/podman-migrate/podman-migrate-drain", filepath.Join(repo, "contrib", "podman-migrate-drain"))
		name := filepath.Base(u)
		if strings.Contains(name, "@.") {
			name = strings.Replace(name, "@.", "@web.", 1) // verify needs an instance
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		r := runCmd(t, "systemd-analyze", "verify", filepath.Join(dir, name))
		if r.code != 0 || strings.TrimSpace(r.stderr+r.stdout) != "" {
			t.Errorf("systemd-analyze verify %s: exit %d: %s%s", name, r.code, r.stdout, r.stderr)
		}
	}
}

// TestDrainAndRestore drains the labelled containers of host A, restores
// one on host B from the registry, and the other back on A from its kept
// checkpoint, as the drain and restore units do.
func TestDrainAndRestore(t *testing.T) {
	label := "io.podman-migrate.e2e-drain=" + filepath.Base(t.TempDir())
	stay, away, unlabelled := "e2e-drain-stay", "e2e-drain-away", "e2e-drain-not"
	bStay := startWorkload(t, stay, "--label", label)
	bAway := startWorkload(t, away, "--label", label)
	bNot := startWorkload(t, unlabelled)
	state := filepath.Join(t.TempDir(), "drained")
	script := filepath.Join(repo, "contrib", "podman-migrate-drain")
	env := []string{
		"LABEL=" + label, "STATE=" + state, "DEST_PREFIX=" + hosts.Registry + "/e2e/drain",
		"PODMAN_MIGRATE=" + bin, "PUSH_FLAGS=--tls-verify=false", "PULL_FLAGS=--tls-verify=false",
	}
	r := runCmdEnv(t, append(env, "PODMAN_URL="+hosts.HostAURL), "bash", script, "drain")
	t.Logf("drain: exit %d\n%s", r.code, r.stderr)
	if r.code != 0 {
		t.Fatal("drain failed")
	}
	b, _ := os.ReadFile(state)
	if lines := strings.Split(strings.TrimSpace(string(b)), "\n"); len(lines) != 2 || strings.Contains(string(b), unlabelled) {
		t.Fatalf("state %q: want the two labelled containers", b)
	}
	for _, c := range []string{stay, away} {
		if s := podman(t, hosts.HostAURL, "inspect", "--format", "{{.State.Status}}", c); s == "running" {
			t.Fatalf("%s still running after drain", c)
		}
	}
	checkContinued(t, hosts.HostAURL, unlabelled, bNot)

	// "away" is taken over by B: its source is gone from A.
	podman(t, hosts.HostAURL, "rm", "-f", away)
	rmB(t, away)
	r = runCmdEnv(t, append(env, "PODMAN_URL="+hosts.HostBURL), "bash", "-c",
		`grep e2e-drain-away "$STATE" > "$STATE.b" && STATE="$STATE.b" bash "$0" restore`, script)
	t.Logf("restore on B: exit %d\n%s", r.code, r.stderr)
	if r.code != 0 {
		t.Fatal("restore on B failed")
	}
	checkContinued(t, hosts.HostBURL, away, bAway)

	// "stay" comes back on A from its kept checkpoint.
	r = runCmdEnv(t, append(env, "PODMAN_URL="+hosts.HostAURL, "STATE="+state), "bash", "-c",
		`grep e2e-drain-stay "$STATE" > "$STATE.a" && STATE="$STATE.a" bash "$0" restore`, script)
	t.Logf("restore on A: exit %d\n%s", r.code, r.stderr)
	if r.code != 0 || !strings.Contains(r.stderr, "resuming "+stay+" from its kept checkpoint") {
		t.Fatal("restore on A failed")
	}
	checkContinued(t, hosts.HostAURL, stay, bStay)
}

// TestInstallUninstall: make install puts the binary, man pages, drain
// script and units in place; make uninstall takes them away again.
func TestInstallUninstall(t *testing.T) {
	dest := t.TempDir()
	files := []string{
		"usr/local/bin/podman-migrate",
		"usr/local/share/man/man1/podman-migrate-pull.1",
		"usr/local/share/man/man1/podman-migrate-move.1",
		"usr/local/libexec/podman-migrate/podman-migrate-drain",
		"usr/local/lib/systemd/system/podman-migrate-drain.service",
		"usr/local/lib/systemd/system/podman-migrate-push@.service",
	}
	if r := runCmd(t, "make", "-C", repo, "install", "DESTDIR="+dest); r.code != 0 {
		t.Fatalf("make install: %s%s", r.stdout, r.stderr)
	}
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(dest, f)); err != nil {
			t.Errorf("not installed: %s", f)
		}
	}
	if r := runCmd(t, "make", "-C", repo, "uninstall", "DESTDIR="+dest); r.code != 0 {
		t.Fatalf("make uninstall: %s%s", r.stdout, r.stderr)
	}
	var left []string
	filepath.Walk(dest, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			left = append(left, p)
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("left after uninstall: %v", left)
	}
}
