package migrate

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/bindings/podmantest"
	restore "github.com/podman-migrate/podman-migrate/import"
	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
)

// pushedTCPClose pushes the fixture as push --tcp-close does.
func pushedTCPClose(t *testing.T, src *podmantest.Fake) string {
	t.Helper()
	o := pushOpts(t)
	o.TCPEstablished, o.TCPClose = true, true
	if _, err := Push(context.Background(), src, o); err != nil {
		t.Fatal(err)
	}
	return o.Dest
}

func specAnnotations(t *testing.T, spec []byte) map[string]string {
	t.Helper()
	var s struct{ Annotations map[string]string }
	if err := json.Unmarshal(spec, &s); err != nil {
		t.Fatal(err)
	}
	return s.Annotations
}

// TestPullTCPClose: an image pushed with --tcp-close is restored with its
// connections closed by the route the target allows: podman's tcpClose
// (5.7), else a CRIU configuration written in the service's root for the
// restore only and named by spec.dump's org.criu.config, else a blocker.
func TestPullTCPClose(t *testing.T) {
	ref := pushedTCPClose(t, source(t))
	pull := func(dst *podmantest.Fake, tcpClose bool) (*restore.PullResult, error) {
		return Pull(context.Background(), dst, restore.PullOptions{Source: ref, TmpDir: t.TempDir(), TCPClose: tcpClose})
	}

	t.Run("podman 5.7", func(t *testing.T) {
		dst := target()
		dst.InfoValue.Version.Version = "5.7.0"
		if _, err := pull(dst, false); err != nil {
			t.Fatal(err)
		}
		o := dst.RestoredWith[fixture]
		if !o.TCPClose || !o.TCPEstablished {
			t.Fatalf("restore options %+v: want tcpClose and tcpEstablished", o)
		}
		if v, ok := specAnnotations(t, dst.Restored[fixture].Spec)["org.criu.config"]; ok {
			t.Fatalf("spec.dump names a CRIU configuration %q where podman closes the connections", v)
		}
	})

	t.Run("podman 4.3.1 elsewhere", func(t *testing.T) {
		dst := target()
		_, err := pull(dst, false)
		if !errors.Is(err, restore.ErrBlocked) || !strings.Contains(err.Error(), "--tcp-close: podman 4.3.1 on fake://podman has no tcpClose (podman 5.7.0 has)") {
			t.Fatalf("pull: %v", err)
		}
		if dst.Count("RestoreImport") != 0 {
			t.Fatal("restored although blocked")
		}
	})

	t.Run("podman 4.3.1 here, runc", func(t *testing.T) {
		dst := target()
		dst.Local, dst.Root = true, t.TempDir()
		dst.InfoValue.Host.OCIRuntime.Name = "runc"
		for _, d := range []string{"etc/criu", "srv"} { // srv: the fixture's bind mount
			if err := os.MkdirAll(filepath.Join(dst.Root, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		// The host's own configuration, which the restore's replaces.
		if err := os.WriteFile(filepath.Join(dst.Root, "etc/criu/runc.conf"), []byte("log-level 4"), 0o644); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(dst.Root, "run/podman-migrate")
		var during []string
		dst.OnRestore = func(podman.RestoreOptions) {
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
				during = append(during, "/run/podman-migrate/"+e.Name()+": "+string(b))
			}
		}
		if _, err := pull(dst, false); err != nil {
			t.Fatal(err)
		}
		conf := specAnnotations(t, dst.Restored[fixture].Spec)["org.criu.config"]
		if !regexp.MustCompile(`^/run/podman-migrate/tcp-close-[0-9a-f]{16}\.conf$`).MatchString(conf) {
			t.Fatalf("spec.dump's org.criu.config = %q", conf)
		}
		if want := conf + ": log-level 4\ntcp-close\n"; len(during) != 1 || during[0] != want {
			t.Fatalf("during the restore %s held %q, want %q", dir, during, want)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Fatalf("after the restore %s holds %d files", dir, len(ents))
		}
		if o := dst.RestoredWith[fixture]; o.TCPClose {
			t.Fatal("podman 4.3.1 was asked for tcpClose")
		}
	})

	t.Run("podman 5.4.2 here, crun", func(t *testing.T) {
		for _, c := range []struct{ version, blocker string }{
			{"crun version 1.21\ncommit: 10269840\n", "crun 1.21 ignores a CRIU configuration named in the spec (crun 1.26 reads it)"},
			{"crun version 1.26\n", ""},
		} {
			dst := target()
			dst.Local, dst.Root = true, t.TempDir()
			if err := os.MkdirAll(filepath.Join(dst.Root, "srv"), 0o755); err != nil {
				t.Fatal(err)
			}
			dst.InfoValue.Version.Version = "5.4.2"
			dst.InfoValue.Host.OCIRuntime.Name, dst.InfoValue.Host.OCIRuntime.Version = "crun", c.version
			p, err := PlanPull(context.Background(), dst, restore.PullOptions{Source: ref, TmpDir: t.TempDir()})
			if err != nil {
				t.Fatal(err)
			}
			var got string // the fixture was taken under runc: that blocker is another matter
			for _, b := range p.Blockers {
				if strings.HasPrefix(b, "--tcp-close") {
					got += b
				}
			}
			if c.blocker == "" && (got != "" || p.TCPClose != restore.TCPCloseCRIUConfig) || c.blocker != "" && !strings.Contains(got, c.blocker) {
				t.Fatalf("%q: tcpClose %q, blockers %q", c.version, p.TCPClose, got)
			}
		}
	})

	t.Run("podman 4.3.1 here, another runtime", func(t *testing.T) {
		dst := target()
		dst.Local, dst.Root = true, t.TempDir()
		dst.InfoValue.Host.OCIRuntime.Name = "kata"
		if _, err := pull(dst, false); !errors.Is(err, restore.ErrBlocked) || !strings.Contains(err.Error(), "its runtime kata takes no CRIU configuration") {
			t.Fatalf("pull: %v", err)
		}
	})
}

// TestPullTCPCloseFlag: pull --tcp-close closes the connections of an
// image pushed without it; an image taken without tcp-established holds
// none, and nothing changes but a warning.
func TestPullTCPCloseFlag(t *testing.T) {
	src := source(t)
	o := pushOpts(t)
	o.TCPEstablished = true
	if _, err := Push(context.Background(), src, o); err != nil {
		t.Fatal(err)
	}
	dst := target()
	dst.InfoValue.Version.Version = "5.7.1"
	if _, err := Pull(context.Background(), dst, restore.PullOptions{Source: o.Dest, TmpDir: t.TempDir(), TCPClose: true}); err != nil {
		t.Fatal(err)
	}
	if !dst.RestoredWith[fixture].TCPClose {
		t.Fatal("pull --tcp-close did not ask podman to close the connections")
	}

	src = source(t)
	o = pushOpts(t)
	if _, err := Push(context.Background(), src, o); err != nil {
		t.Fatal(err)
	}
	dst = target()
	dst.InfoValue.Version.Version = "5.7.1"
	p, err := PlanPull(context.Background(), dst, restore.PullOptions{Source: o.Dest, TmpDir: t.TempDir(), TCPClose: true})
	if err != nil {
		t.Fatal(err)
	}
	if p.TCPClose != "" || !strings.Contains(strings.Join(p.Warnings, "\n"), "taken without tcp-established, so it holds no TCP connection to close") {
		t.Fatalf("plan: tcpClose %q, warnings %q", p.TCPClose, p.Warnings)
	}
}

// TestPullDropsAnEarlierTCPCloseConfig: a container restored with its
// connections closed keeps the org.criu.config annotation (a running
// container's spec cannot change), so its next checkpoint carries it.
// pull drops exactly that annotation, unasked; any other configuration
// file is still a privilege to allow.
func TestPullDropsAnEarlierTCPCloseConfig(t *testing.T) {
	withConfig := func(conf string) *podmantest.Fake {
		entries := ckpttest.Archive(t)
		for i := range entries {
			if entries[i].Name == "spec.dump" {
				entries[i].Body = ckpttest.EditJSON(t, entries[i].Body, func(m map[string]any) {
					ann, _ := m["annotations"].(map[string]any)
					if ann == nil {
						ann = map[string]any{}
						m["annotations"] = ann
					}
					ann["org.criu.config"] = conf
				})
			}
		}
		return podmantest.NewFake(fixture, baseID, ckpttest.Tar(t, entries))
	}
	o := pushOpts(t)
	if _, err := Push(context.Background(), withConfig("/run/podman-migrate/tcp-close-0123456789abcdef.conf"), o); err != nil {
		t.Fatal(err)
	}
	dst := target()
	if _, err := Pull(context.Background(), dst, restore.PullOptions{Source: o.Dest, TmpDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	if v, ok := specAnnotations(t, dst.Restored[fixture].Spec)["org.criu.config"]; ok {
		t.Fatalf("the earlier restore's org.criu.config %q reached podman", v)
	}

	o = pushOpts(t)
	if _, err := Push(context.Background(), withConfig("/run/podman-migrate/tcp-close-0123456789abcdef.conf.d/../../../etc/x"), o); err != nil {
		t.Fatal(err)
	}
	dst = target()
	if _, err := Pull(context.Background(), dst, restore.PullOptions{Source: o.Dest, TmpDir: t.TempDir()}); !errors.Is(err, restore.ErrBlocked) || !strings.Contains(err.Error(), "org.criu.config") {
		t.Fatalf("another configuration file: %v", err)
	}
}
