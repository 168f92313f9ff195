package podman

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResolveConnection(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "containers.conf")
	os.WriteFile(conf, []byte("[engine.service_destinations.conf-one]\nuri = \"ssh://root@h1:22/run/podman/podman.sock\"\nidentity = \"/k1\"\n"), 0o644)
	os.MkdirAll(filepath.Join(dir, "containers"), 0o755)
	os.WriteFile(filepath.Join(dir, "containers", "podman-connections.json"),
		[]byte(`{"Connection":{"Connections":{"json-one":{"URI":"unix:///run/x.sock"},"conf-one":{"URI":"unix:///json-wins"}}}}`), 0o644)
	t.Setenv("CONTAINERS_CONF", conf)
	t.Setenv("XDG_CONFIG_HOME", dir)
	for name, want := range map[string]Destination{
		"json-one": {Name: "json-one", URI: "unix:///run/x.sock"},
		"conf-one": {Name: "conf-one", URI: "unix:///json-wins"}, // podman 5's file first
	} {
		got, err := ResolveConnection(name)
		if err != nil || got != want {
			t.Errorf("%s: %+v %v, want %+v", name, got, err, want)
		}
	}
	_, err := ResolveConnection("nosuch")
	if !errors.Is(err, ErrNoConnection) || !strings.Contains(err.Error(), "conf-one, json-one") {
		t.Errorf("unknown name: %v", err)
	}
}

func TestRequireRootful(t *testing.T) {
	for _, rootless := range []bool{false, true} {
		sock := filepath.Join(t.TempDir(), "s.sock")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		body := `{"host":{"security":{"rootless":false}}}`
		if rootless {
			body = `{"host":{"security":{"rootless":true}}}`
		}
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Libpod-API-Version", "4.3.1")
			if strings.HasSuffix(r.URL.Path, "/_ping") {
				w.Write([]byte("OK"))
				return
			}
			w.Write([]byte(body))
		})}
		go srv.Serve(ln)
		c, err := Connect(context.Background(), "unix://"+sock)
		if err != nil {
			t.Fatal(err)
		}
		err = c.RequireRootful(context.Background())
		if rootless != errors.Is(err, ErrRootless) {
			t.Errorf("rootless=%t: err %v", rootless, err)
		}
		srv.Close()
	}
}
