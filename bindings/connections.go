package podman

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/containers/common/pkg/config"

	"github.com/podman-migrate/podman-migrate/internal/fault"
)

// ErrNoConnection is wrapped when a named connection is not configured: a
// usage error (exit 2), as a mistyped flag is.
var ErrNoConnection = fault.New(fault.Usage, "no such connection")

// Destination is a podman service to talk to: a URI and, for ssh, the
// identity file.
type Destination struct {
	Name     string
	URI      string
	Identity string
}

// ResolveConnection finds a named connection where podman keeps them:
// podman-connections.json (podman 5) and the [engine.service_destinations]
// table of containers.conf (podman 4 and 5).
func ResolveConnection(name string) (Destination, error) {
	known := map[string]Destination{}
	for _, file := range connectionFiles() {
		conns, err := readConnectionsJSON(file)
		if err != nil {
			return Destination{}, err
		}
		for n, d := range conns {
			if _, ok := known[n]; !ok {
				known[n] = d
			}
		}
	}
	if cfg, err := config.Default(); err == nil {
		for n, d := range cfg.Engine.ServiceDestinations {
			if _, ok := known[n]; !ok {
				known[n] = Destination{Name: n, URI: d.URI, Identity: d.Identity}
			}
		}
	} else {
		return Destination{}, fmt.Errorf("reading containers.conf: %w", err)
	}
	if d, ok := known[name]; ok {
		return d, nil
	}
	names := make([]string, 0, len(known))
	for n := range known {
		names = append(names, n)
	}
	sort.Strings(names)
	have := "none is configured"
	if len(names) > 0 {
		have = "configured: " + strings.Join(names, ", ")
	}
	return Destination{}, fmt.Errorf("%w %q (%s; add one with `podman system connection add`)", ErrNoConnection, name, have)
}

// connectionFiles lists podman 5's connection files, the user's first.
func connectionFiles() []string {
	var files []string
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		files = append(files, filepath.Join(d, "containers", "podman-connections.json"))
	} else if home, err := os.UserHomeDir(); err == nil {
		files = append(files, filepath.Join(home, ".config", "containers", "podman-connections.json"))
	}
	return append(files, "/etc/containers/podman-connections.json")
}

// readConnectionsJSON reads podman-connections.json; a missing file has
// no connections.
func readConnectionsJSON(file string) (map[string]Destination, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var doc struct {
		Connection struct {
			Connections map[string]struct {
				URI      string `json:"URI"`
				Identity string `json:"Identity"`
			} `json:"Connections"`
		} `json:"Connection"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	out := map[string]Destination{}
	for n, c := range doc.Connection.Connections {
		out[n] = Destination{Name: n, URI: c.URI, Identity: c.Identity}
	}
	return out, nil
}
