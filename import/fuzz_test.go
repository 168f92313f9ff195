package restore

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	podman "github.com/podman-migrate/podman-migrate/bindings"
	"github.com/podman-migrate/podman-migrate/internal/ckpt"
	"github.com/podman-migrate/podman-migrate/internal/dump"
)

// fuzzTarget is a target host whose podman has no volumes and one network,
// "podman" (10.88.0.0/16), served once for all inputs.
func fuzzTarget(f *testing.F) *target {
	sock := filepath.Join(f.TempDir(), "podman.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		f.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Libpod-API-Version", "4.3.1")
		switch {
		case strings.HasSuffix(r.URL.Path, "/_ping"):
			_, _ = w.Write([]byte("OK"))
		case strings.HasSuffix(r.URL.Path, "/info"):
			_, _ = w.Write([]byte(`{"store":{"volumePath":"/var/lib/containers/storage/volumes"}}`))
		case strings.HasSuffix(r.URL.Path, "/networks/podman/json"):
			_, _ = w.Write([]byte(`{"name":"podman","subnets":[{"subnet":"10.88.0.0/16"}]}`))
		default:
			http.Error(w, `{"message":"no such object"}`, http.StatusNotFound)
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	f.Cleanup(func() { srv.Close() })
	c, err := podman.ConnectTo(context.Background(), podman.Destination{URI: "unix://" + sock})
	if err != nil {
		f.Fatal(err)
	}
	return &target{c: c}
}

// FuzzRelocate plans the rewriting of a pulled config.dump, spec.dump and
// network.status, as pull does once ckpt has checked they are JSON, with
// and without maps, and judges their privileges: no input may panic, and
// the rewritten dumps must read again.
// Seeds: testdata/fuzz/FuzzRelocate (podman 4.3.1's dumps, privileged and
// not).
func FuzzRelocate(f *testing.F) {
	tgt := fuzzTarget(f)
	optsList := []PullOptions{
		{},
		{Name: "other", MountMap: []string{"/srv=/mnt/srv", "/=/r"}, VolumeMap: []string{"fixvol=newvol"}, NetworkMap: []string{"podman=podman2"}},
	}
	f.Fuzz(func(t *testing.T, configDump, specDump, networkStatus []byte) {
		_ = privilegeProblems(configDump, specDump)
		cfg, err := dump.ReadConfig(bytes.NewReader(configDump))
		if err != nil || !json.Valid(specDump) || (len(networkStatus) > 0 && !json.Valid(networkStatus)) {
			return // ckpt refuses these before planning
		}
		if len(networkStatus) == 0 {
			networkStatus = nil
		}
		meta := &ckpt.Metadata{ConfigDump: configDump, SpecDump: specDump, NetworkStatus: networkStatus, Config: cfg}
		meta.Manifest.Annotations = map[string]string{ckpt.AnnFormat: "1", ckpt.AnnBindKinds: `{"/srv2":"dir"}`}
		for _, o := range optsList {
			p := &Plan{}
			if err := p.relocate(context.Background(), tgt, meta, o); err != nil {
				continue
			}
			for name, b := range p.relocated.edits.Replace {
				if !json.Valid(b) {
					t.Fatalf("rewritten %s is not JSON: %q", name, b)
				}
			}
			if _, err := dump.ReadConfig(bytes.NewReader(p.relocated.edits.Replace[ckpt.ConfigDump])); err != nil {
				t.Fatalf("rewritten config.dump does not read again: %v", err)
			}
		}
	})
}
