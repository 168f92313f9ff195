// Package dump reads and edits podman's config.dump (the libpod container
// config). Edits work on the generic JSON so fields this code does not know,
// from other podman versions, pass through untouched.
package dump

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// MaxSize bounds how much of a dump file is read: both are a few KiB in
// practice, and pulled content must not choose our allocations.
const MaxSize = 16 << 20

// HostPathFields are the config.dump fields that hold the source host's
// storage paths. podman 4.3.1 reuses them on restore and fails wherever they
// do not exist (HOST-NOTES: "Failed to write conmon pidfile"); empty, podman
// derives fresh paths for the new container.
var HostPathFields = []string{"conmonPidFile", "pid_file", "ShmDir", "staticDir", "secretsPath", "logPath"}

// Config is a parsed config.dump.
type Config struct {
	raw map[string]json.RawMessage
}

// ReadConfig parses a config.dump of at most MaxSize bytes.
func ReadConfig(r io.Reader) (*Config, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading config.dump: %w", err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("config.dump is larger than %d bytes", MaxSize)
	}
	c := &Config{}
	if err := json.Unmarshal(b, &c.raw); err != nil {
		return nil, fmt.Errorf("parsing config.dump: %w", err)
	}
	if c.raw == nil {
		return nil, fmt.Errorf("parsing config.dump: not a JSON object")
	}
	return c, nil
}

// Bytes returns the config as JSON.
func (c *Config) Bytes() ([]byte, error) {
	return json.Marshal(c.raw)
}

// String returns a top-level string field, or "" if absent or not a string.
func (c *Config) String(key string) string {
	var s string
	if v, ok := c.raw[key]; ok {
		_ = json.Unmarshal(v, &s)
	}
	return s
}

// Name is the container's name.
func (c *Config) Name() string { return c.String("name") }

// ID is the container's ID on the source host.
func (c *Config) ID() string { return c.String("id") }

// RootfsImageID is the ID of the image the container was created from.
func (c *Config) RootfsImageID() string { return c.String("rootfsImageID") }

// RootfsImageName is the name of that image.
func (c *Config) RootfsImageName() string { return c.String("rootfsImageName") }

// RawImageName is the image name as the user gave it.
func (c *Config) RawImageName() string { return c.String("RawImageName") }

// Runtime is the OCI runtime named at creation ("" means the default).
func (c *Config) Runtime() string { return c.String("runtime") }

// Neutralize removes the source host's storage paths (HostPathFields and
// the shm entry of "mounts"), so the restore works on a host that lacks
// them. It reports which fields it cleared.
func (c *Config) Neutralize() []string {
	shm := c.String("ShmDir")
	var cleared []string
	for _, k := range HostPathFields {
		if c.String(k) != "" {
			cleared = append(cleared, k)
		}
		delete(c.raw, k)
	}
	if v, ok := c.raw["mounts"]; ok {
		var mounts []string
		if json.Unmarshal(v, &mounts) == nil {
			kept := mounts[:0]
			for _, m := range mounts {
				if (shm != "" && m == shm) || strings.HasSuffix(m, "/userdata/shm") {
					continue
				}
				kept = append(kept, m)
			}
			if len(kept) != len(mounts) {
				cleared = append(cleared, "mounts[shm]")
			}
			if len(kept) == 0 {
				delete(c.raw, "mounts")
			} else {
				b, _ := json.Marshal(kept)
				c.raw["mounts"] = b
			}
		}
	}
	return cleared
}
