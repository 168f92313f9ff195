package podman

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
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
	// remote: the service is taken as another machine's, so podman info
	// decides; local: this test serves as its own user, and the socket's
	// peer decides without asking podman info, whatever it would say.
	for _, tc := range []struct {
		remote, infoRootless, wantRootless bool
	}{
		{true, false, false},
		{true, true, true},
		{false, os.Geteuid() == 0, os.Geteuid() != 0},
	} {
		sock := filepath.Join(t.TempDir(), "s.sock")
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		body := fmt.Sprintf(`{"host":{"security":{"rootless":%t}}}`, tc.infoRootless)
		var infos atomic.Int32
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Libpod-API-Version", "4.3.1")
			if strings.HasSuffix(r.URL.Path, "/_ping") {
				w.Write([]byte("OK"))
				return
			}
			infos.Add(1)
			w.Write([]byte(body))
		})}
		go srv.Serve(ln)
		c, err := ConnectTo(context.Background(), Destination{URI: "unix://" + sock})
		if err != nil {
			t.Fatal(err)
		}
		if tc.remote {
			c.URI = "ssh://root@elsewhere" + sock // the connection stays on sock
		}
		err = c.RequireRootful(context.Background())
		if tc.wantRootless != errors.Is(err, ErrRootless) {
			t.Errorf("%+v: err %v", tc, err)
		}
		if asked := infos.Load() > 0; asked != tc.remote {
			t.Errorf("%+v: podman info asked: %t", tc, asked)
		}
		srv.Close()
	}
}
