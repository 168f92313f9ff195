package restore

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
	"github.com/podman-migrate/podman-migrate/internal/dump"
)

// fakePodman serves the few libpod endpoints planning asks, over a unix
// socket: volumes and networks that exist are given.
func fakePodman(t *testing.T, volumes []string, networks map[string]string) *podman.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "podman.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Libpod-API-Version", "4.3.1")
		p := strings.TrimPrefix(r.URL.Path, "/v4.0.0/libpod")
		parts := strings.Split(strings.Trim(p, "/"), "/")
		switch {
		case strings.HasSuffix(r.URL.Path, "/_ping"):
			w.Write([]byte("OK"))
		case len(parts) == 1 && parts[0] == "info":
			w.Write([]byte(`{"store":{"volumePath":"/elsewhere/volumes"}}`))
		case len(parts) == 3 && parts[0] == "volumes":
			for _, v := range volumes {
				if v == parts[1] {
					w.Write([]byte(`{}`))
					return
				}
			}
			http.Error(w, `{"message":"no such volume"}`, http.StatusNotFound)
		case len(parts) == 3 && parts[0] == "networks":
			if sn, ok := networks[parts[1]]; ok {
				json.NewEncoder(w).Encode(map[string]any{"name": parts[1], "subnets": []map[string]string{{"subnet": sn}}})
				return
			}
			http.Error(w, `{"message":"no such network"}`, http.StatusNotFound)
		default:
			http.Error(w, `{"message":"not found"}`, http.StatusNotFound)
		}
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	c, err := podman.ConnectTo(context.Background(), podman.Destination{URI: "unix://" + sock})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func fixtureMeta(t *testing.T, ann map[string]string) *ckpt.Metadata {
	t.Helper()
	m := ckpttest.Members(t, ckpttest.Tar(t, ckpttest.Archive(t)))
	cfg, err := dump.ReadConfig(bytes.NewReader(m[ckpt.ConfigDump]))
	if err != nil {
		t.Fatal(err)
	}
	meta := &ckpt.Metadata{ConfigDump: m[ckpt.ConfigDump], SpecDump: m[ckpt.SpecDump], NetworkStatus: m[ckpt.NetworkStatus], Config: cfg}
	meta.Manifest.Annotations = ann
	return meta
}

type mountOut struct {
	Destination string   `json:"destination"`
	Source      string   `json:"source"`
	Options     []string `json:"options"`
}

func sources(t *testing.T, specJSON []byte) map[string]string {
	t.Helper()
	var s struct {
		Mounts []mountOut `json:"mounts"`
	}
	if err := json.Unmarshal(specJSON, &s); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, m := range s.Mounts {
		out[m.Destination] = m.Source
	}
	return out
}

func relocateFixture(t *testing.T, meta *ckpt.Metadata, root string, c *podman.Client, o PullOptions) *Plan {
	t.Helper()
	tg := &target{c: c, root: root}
	p := &Plan{}
	if err := p.relocate(context.Background(), tg, meta, o); err != nil {
		t.Fatalf("relocate: %v", err)
	}
	return p
}

func TestRelocateRewritesBothDumps(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"data/srv", "data/srvx"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c := fakePodman(t, nil, map[string]string{"podman": "10.88.0.0/16"})
	meta := fixtureMeta(t, map[string]string{ckpt.AnnBindKinds: `{"/srv2":"dir"}`})
	// /srvx must not catch /srv; the longer /srv mapping wins over /.
	p := relocateFixture(t, meta, root, c, PullOptions{MountMap: []string{"/srvx=/nowhere", "/srv=/data/srv", "/=/data/root"}})
	if len(p.Blockers) != 0 {
		t.Fatalf("blockers: %v", p.Blockers)
	}
	r := p.relocated
	spec := sources(t, r.edits.Replace[ckpt.SpecDump])
	if spec["/srv2"] != "/data/srv" {
		t.Errorf("bind mount source %q, want /data/srv", spec["/srv2"])
	}
	if spec["/data"] != "/elsewhere/volumes/fixvol/_data" {
		t.Errorf("named volume source %q, want the target's volume path", spec["/data"])
	}
	if !strings.Contains(spec["/etc/hosts"], "/userdata/") {
		t.Errorf("podman's own /etc/hosts was relocated: %q", spec["/etc/hosts"])
	}
	var cfg struct {
		Spec struct {
			Mounts []mountOut `json:"mounts"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(r.edits.Replace[ckpt.ConfigDump], &cfg); err != nil {
		t.Fatal(err)
	}
	for _, m := range cfg.Spec.Mounts {
		if m.Destination == "/srv2" && (m.Source != "/data/srv" || strings.Join(m.Options, ",") != "rw,rprivate,rbind") {
			t.Errorf("config.dump's mount not rewritten alike: %+v", m)
		}
	}
	// Unknown fields survive: everything but the edited ones is as before.
	var before, after map[string]json.RawMessage
	json.Unmarshal(meta.SpecDump, &before)
	json.Unmarshal(r.edits.Replace[ckpt.SpecDump], &after)
	for k, v := range before {
		var a, b bytes.Buffer
		json.Compact(&a, v)
		json.Compact(&b, after[k])
		if k != "mounts" && !bytes.Equal(a.Bytes(), b.Bytes()) {
			t.Errorf("spec.dump field %s changed", k)
		}
	}
	if len(p.Warnings) == 0 || !strings.Contains(strings.Join(p.Warnings, "\n"), "/srvx=/nowhere matches no bind mount") {
		t.Errorf("unused mapping not reported: %v", p.Warnings)
	}

	// Idempotent: relocating the relocated dumps again changes nothing.
	meta2 := fixtureMeta(t, meta.Manifest.Annotations)
	meta2.ConfigDump, meta2.SpecDump = r.edits.Replace[ckpt.ConfigDump], r.edits.Replace[ckpt.SpecDump]
	p2 := relocateFixture(t, meta2, root, c, PullOptions{MountMap: []string{"/srv=/data/srv"}})
	if !bytes.Equal(p2.relocated.edits.Replace[ckpt.SpecDump], r.edits.Replace[ckpt.SpecDump]) ||
		!bytes.Equal(p2.relocated.edits.Replace[ckpt.ConfigDump], r.edits.Replace[ckpt.ConfigDump]) {
		t.Error("a second relocation changed the dumps again")
	}
}

// TestPlanJoin: a group member joins the restored peer by its new ID
// (config.dump) and its process's namespace (spec.dump).
func TestPlanJoin(t *testing.T) {
	c := fakePodman(t, []string{"fixvol"}, map[string]string{"podman": "10.88.0.0/16"})
	meta := fixtureMeta(t, nil)
	p := relocateFixture(t, meta, t.TempDir(), c, PullOptions{})
	if err := p.Join("net", "peer-id", 4242); err != nil {
		t.Fatal(err)
	}
	ed := p.relocated.edits.Replace
	cfg, err := dump.ReadConfig(bytes.NewReader(ed[ckpt.ConfigDump]))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Joined(); got["net"] != "peer-id" || len(got) != 1 {
		t.Errorf("config.dump joins %v, want net of peer-id only", got)
	}
	var spec struct {
		Linux struct {
			Namespaces []struct{ Type, Path string } `json:"namespaces"`
		} `json:"linux"`
	}
	if err := json.Unmarshal(ed[ckpt.SpecDump], &spec); err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{}
	for _, ns := range spec.Linux.Namespaces {
		paths[ns.Type] = ns.Path
	}
	if paths["network"] != "/proc/4242/ns/net" || paths["pid"] != "" {
		t.Errorf("spec.dump namespaces %v", paths)
	}
	for _, bad := range []struct {
		ns  string
		pid int
	}{{"mnt", 4242}, {"net", 0}} {
		if err := p.Join(bad.ns, "peer-id", bad.pid); err == nil {
			t.Errorf("Join(%q, pid %d) accepted", bad.ns, bad.pid)
		}
	}
}

func TestRelocateBlockers(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "file"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := fakePodman(t, []string{"fixvol"}, nil)
	meta := fixtureMeta(t, map[string]string{ckpt.AnnBindKinds: `{"/srv2":"dir"}`})
	p := relocateFixture(t, meta, root, c, PullOptions{})
	all := strings.Join(p.Blockers, "\n")
	for _, want := range []string{"/srv (mounted at /srv2) does not exist", "--mount-map /srv=", `volume "fixvol" already exists`, "--volume-map fixvol=", `network "podman" does not exist`, "--network-map podman="} {
		if !strings.Contains(all, want) {
			t.Errorf("blockers lack %q:\n%s", want, all)
		}
	}
	// A file where the checkpoint had a directory.
	p = relocateFixture(t, meta, root, c, PullOptions{MountMap: []string{"/srv=/file"}, VolumeMap: []string{"fixvol=fresh"}})
	if all := strings.Join(p.Blockers, "\n"); !strings.Contains(all, "is a file here, the checkpoint had a directory") {
		t.Errorf("wrong kind not blocked:\n%s", all)
	}
	if got := p.relocated.edits.Rename["volumes/fixvol.tar"]; got != "volumes/fresh.tar" {
		t.Errorf("volume member renamed to %q", got)
	}
	if spec := sources(t, p.relocated.edits.Replace[ckpt.SpecDump]); spec["/data"] != "/elsewhere/volumes/fresh/_data" {
		t.Errorf("renamed volume's source %q", spec["/data"])
	}
}

func TestRelocateNetworkDropsAddressOutsideSubnet(t *testing.T) {
	c := fakePodman(t, nil, map[string]string{"prod": "10.89.20.0/24"})
	meta := fixtureMeta(t, nil)
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "srv"), 0o755)
	p := relocateFixture(t, meta, root, c, PullOptions{NetworkMap: []string{"podman=prod"}})
	if len(p.Blockers) != 0 || !p.relocated.dropIP || len(p.Networks) != 1 || p.Networks[0].New != "prod" || !strings.Contains(p.Networks[0].Note, "outside prod's subnets") {
		t.Fatalf("plan: %+v blockers %v", p.Networks, p.Blockers)
	}
	var status map[string]json.RawMessage
	json.Unmarshal(p.relocated.edits.Replace[ckpt.NetworkStatus], &status)
	if _, ok := status["prod"]; !ok || len(status) != 1 {
		t.Errorf("network.status not renamed: %v", status)
	}
}

func TestMapParsing(t *testing.T) {
	for _, bad := range [][]string{{"a"}, {"a=b", "a=c"}, {"a=c", "b=c"}, {"-a=b"}, {"a=b/c"}} {
		if _, err := parseNameMaps("--volume-map", bad); err == nil {
			t.Errorf("--volume-map %v accepted", bad)
		}
	}
}
