package restore

import (
	"os"
	"strings"
	"testing"

	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
)

// fixtureDumps returns the real podman 4.3.1 config.dump and spec.dump of
// an ordinary container.
func fixtureDumps(t *testing.T) (cfg, spec []byte) {
	t.Helper()
	m := ckpttest.Members(t, ckpttest.Tar(t, ckpttest.Archive(t)))
	return m[ckpt.ConfigDump], m[ckpt.SpecDump]
}

func obj(m map[string]any, keys ...string) map[string]any {
	for _, k := range keys {
		m = m[k].(map[string]any)
	}
	return m
}

func TestPrivilegeProblems(t *testing.T) {
	cfg, spec := fixtureDumps(t)
	privCfg, err := os.ReadFile("testdata/privileged/config.dump")
	if err != nil {
		t.Fatal(err)
	}
	privSpec, err := os.ReadFile("testdata/privileged/spec.dump")
	if err != nil {
		t.Fatal(err)
	}
	specWith := func(fn func(m map[string]any)) []byte { return ckpttest.EditJSON(t, spec, fn) }
	tests := []struct {
		name      string
		cfg, spec []byte
		want      []string // one problem each, in order; nil: none
	}{
		{"ordinary container (fixture)", cfg, spec, nil},
		{"podman --privileged, as measured", privCfg, privSpec, []string{
			"privileged mode (--privileged)",
			"host devices /dev/autofs, /dev/btrfs-control, /dev/cpu/0/cpuid, /dev/cpu/1/cpuid, /dev/cpu_dma_latency, /dev/fuse and 89 more",
			"all of the host's devices",
			"device access beyond its device nodes: a *:* rwm",
			"capabilities beyond podman's defaults: CAP_AUDIT_CONTROL, ",
			"no seccomp filter",
			"no masked kernel paths",
		}},
		{"privileged in config.dump only", ckpttest.EditJSON(t, cfg, func(m map[string]any) { m["privileged"] = true }), spec, []string{"privileged mode (--privileged)"}},
		{"--device /dev/fuse, as measured", ckpttest.EditJSON(t, cfg, func(m map[string]any) {
			m["device_host_src"] = []any{map[string]any{"path": "/dev/fuse", "type": "", "major": 0, "minor": 0}}
		}), specWith(func(m map[string]any) {
			l := obj(m, "linux")
			l["devices"] = []any{map[string]any{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 8576}}
			r := obj(l, "resources")
			r["devices"] = append(r["devices"].([]any), map[string]any{"allow": true, "type": "c", "major": 10, "minor": 229, "access": "rwm"})
		}), []string{"host devices /dev/fuse"}},
		{"default device nodes listed", cfg, specWith(func(m map[string]any) {
			obj(m, "linux")["devices"] = []any{
				map[string]any{"path": "/dev/null", "type": "c", "major": 1, "minor": 3},
				map[string]any{"path": "/dev/ptmx", "type": "c", "major": 5, "minor": 2},
			}
		}), nil},
		{"a disk disguised as /dev/null", cfg, specWith(func(m map[string]any) {
			obj(m, "linux")["devices"] = []any{map[string]any{"path": "/dev/null", "type": "b", "major": 8, "minor": 0}}
		}), []string{"host devices /dev/null"}},
		{"device cgroup rule alone", cfg, specWith(func(m map[string]any) {
			r := obj(m, "linux", "resources")
			r["devices"] = append(r["devices"].([]any), map[string]any{"allow": true, "type": "b", "major": 8, "minor": 0, "access": "rw"})
		}), []string{"device access beyond its device nodes: b 8:0 rw"}},
		{"mknod-only rule", cfg, specWith(func(m map[string]any) {
			r := obj(m, "linux", "resources")
			r["devices"] = append(r["devices"].([]any), map[string]any{"allow": true, "type": "c", "access": "m"})
		}), nil},
		{"--cap-add SYS_ADMIN, as measured", cfg, specWith(func(m map[string]any) {
			c := obj(m, "process", "capabilities")
			for _, set := range []string{"bounding", "effective", "permitted"} {
				c[set] = append(c[set].([]any), "CAP_SYS_ADMIN")
			}
		}), []string{"capabilities beyond podman's defaults: CAP_SYS_ADMIN"}},
		{"--network host", ckpttest.EditJSON(t, cfg, func(m map[string]any) { m["networkMode"] = "host"; m["createNetNS"] = false }), specWith(func(m map[string]any) {
			l := obj(m, "linux")
			var kept []any
			for _, ns := range l["namespaces"].([]any) {
				if ns.(map[string]any)["type"] != "network" {
					kept = append(kept, ns)
				}
			}
			l["namespaces"] = kept
		}), []string{"the host's network namespace (--network host)"}},
		{"--pid host", cfg, specWith(func(m map[string]any) {
			l := obj(m, "linux")
			l["namespaces"] = l["namespaces"].([]any)[1:]
		}), []string{"the host's pid namespace (--pid host)"}},
		{"pid namespace joined by path", cfg, specWith(func(m map[string]any) {
			obj(m, "linux")["namespaces"].([]any)[0].(map[string]any)["path"] = "/proc/1/ns/pid"
		}), []string{"the existing pid namespace at /proc/1/ns/pid"}},
		{"network path podman replaces", cfg, spec, nil},
		{"network path kept without createNetNS", ckpttest.EditJSON(t, cfg, func(m map[string]any) { m["createNetNS"] = false; m["networkMode"] = "ns:/proc/1/ns/net" }), specWith(func(m map[string]any) {
			obj(m, "linux")["namespaces"].([]any)[1].(map[string]any)["path"] = "/proc/1/ns/net"
		}), []string{"the existing network namespace at /proc/1/ns/net"}},
		{"pod member: podman swaps the shared namespace", ckpttest.EditJSON(t, cfg, func(m map[string]any) { m["pod"] = "p"; m["ipcNsCtr"] = "infra" }), specWith(func(m map[string]any) {
			obj(m, "linux")["namespaces"].([]any)[2].(map[string]any)["path"] = "/proc/4242/ns/ipc"
		}), nil},
		{"org.criu.config", cfg, specWith(func(m map[string]any) {
			obj(m, "annotations")["org.criu.config"] = "/tmp/evil.conf"
		}), []string{`annotations that change what the runtime or CRIU do: org.criu.config="/tmp/evil.conf"`}},
		{"crun and CRI-O annotations, podman's own pass", cfg, specWith(func(m map[string]any) {
			a := obj(m, "annotations")
			a["run.oci.keep_original_groups"] = "1"
			a["io.kubernetes.cri-o.Devices"] = "/dev/kvm"
			a["io.kubernetes.cri-o.SandboxID"] = "abc" // podman's, for pods
		}), []string{`annotations that change what the runtime or CRIU do: io.kubernetes.cri-o.Devices="/dev/kvm", run.oci.keep_original_groups="1"`}},
		{"OCI hook", cfg, specWith(func(m map[string]any) {
			m["hooks"] = map[string]any{"prestart": []any{map[string]any{"path": "/bin/sh", "args": []any{"sh", "-c", "id > /tmp/owned"}}}}
		}), []string{"OCI hooks that run on this host outside the container: /bin/sh"}},
		{"no seccomp", cfg, specWith(func(m map[string]any) { delete(obj(m, "linux"), "seccomp") }), []string{"no seccomp filter (--security-opt seccomp=unconfined)"}},
		{"spec.dump podman could not read either", cfg, []byte(`{"linux":{"namespaces":"all"}}`), []string{"a spec.dump that cannot be read ("}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := privilegeProblems(tt.cfg, tt.spec)
			for _, g := range got {
				t.Log(g)
			}
			if tt.want == nil {
				if len(got) != 0 {
					t.Fatalf("problems %q, want none", got)
				}
				return
			}
			if len(got) < len(tt.want) {
				t.Fatalf("problems %q, want %q", got, tt.want)
			}
			for i, w := range tt.want {
				if !strings.HasPrefix(got[i], w) {
					t.Errorf("problem %d = %q, want it to start %q", i, got[i], w)
				}
			}
			if len(got) != len(tt.want) {
				t.Errorf("problems %q, want %d", got, len(tt.want))
			}
		})
	}
}

func TestPrivilegesInPlan(t *testing.T) {
	meta := fixtureMeta(t, nil)
	meta.SpecDump = ckpttest.EditJSON(t, meta.SpecDump, func(m map[string]any) {
		c := obj(m, "process", "capabilities")
		c["bounding"] = append(c["bounding"].([]any), "CAP_SYS_ADMIN")
	})
	p := &Plan{}
	p.privileges(meta, false)
	if len(p.Blockers) != 1 || !strings.Contains(p.Blockers[0], "CAP_SYS_ADMIN") || !strings.Contains(p.Blockers[0], "--allow-privileged") {
		t.Fatalf("blockers %q, want one naming CAP_SYS_ADMIN and --allow-privileged", p.Blockers)
	}
	p = &Plan{}
	p.privileges(meta, true)
	if len(p.Blockers) != 0 || len(p.Warnings) != 1 || !strings.Contains(p.Warnings[0], "allowed by --allow-privileged") {
		t.Fatalf("with --allow-privileged: blockers %q, warnings %q", p.Blockers, p.Warnings)
	}
}
