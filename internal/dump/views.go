package dump

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Raw returns a top-level field as stored, nil when absent.
func (c *Config) Raw(key string) json.RawMessage { return c.raw[key] }

// SetRaw replaces a top-level field.
func (c *Config) SetRaw(key string, v json.RawMessage) { c.raw[key] = v }

// VolumeMount is a named volume and where the container mounts it.
type VolumeMount struct {
	Name        string
	Destination string
}

// NamedVolumeMounts lists the container's named volumes with their mount
// destinations.
func (c *Config) NamedVolumeMounts() []VolumeMount {
	var vols []struct {
		Name string `json:"volumeName"`
		Dest string `json:"dest"`
	}
	if v, ok := c.raw["namedVolumes"]; ok {
		_ = json.Unmarshal(v, &vols)
	}
	out := make([]VolumeMount, 0, len(vols))
	for _, v := range vols {
		out = append(out, VolumeMount{Name: v.Name, Destination: v.Dest})
	}
	return out
}

// NetworkNames lists the networks the container was attached to
// ("newNetworks" in podman 4 and 5's config.dump), sorted.
func (c *Config) NetworkNames() []string {
	var nets map[string]json.RawMessage
	if v, ok := c.raw["newNetworks"]; ok {
		_ = json.Unmarshal(v, &nets)
	}
	names := make([]string, 0, len(nets))
	for n := range nets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Pod is the ID of the pod the container was in, "" for none.
func (c *Config) Pod() string { return c.String("pod") }

// nsCtrKeys are config.dump's links to containers whose namespaces this
// one joins (podman's ContainerNamespaceConfig).
var nsCtrKeys = []string{"netNsCtr", "ipcNsCtr", "pidNsCtr", "utsNsCtr", "cgroupNsCtr", "userNsCtr", "mountNsCtr"}

// Joined maps each namespace this container joins of another container
// ("net", "ipc", ...) to that container's ID.
func (c *Config) Joined() map[string]string {
	out := map[string]string{}
	for _, k := range nsCtrKeys {
		if id := c.String(k); id != "" {
			out[strings.TrimSuffix(k, "NsCtr")] = id
		}
	}
	return out
}

// SetJoined links namespace ns ("net", ...) to the container id.
func (c *Config) SetJoined(ns, id string) error {
	k := ns + "NsCtr"
	if !slices.Contains(nsCtrKeys, k) {
		return fmt.Errorf("unknown namespace %q", ns)
	}
	b, err := json.Marshal(id)
	if err != nil {
		return err
	}
	c.raw[k] = b
	return nil
}

// NamespaceContainers lists the IDs of the containers whose namespaces this
// one joins, each once, sorted.
func (c *Config) NamespaceContainers() []string {
	seen := map[string]bool{}
	var out []string
	for _, k := range nsCtrKeys {
		if id := c.String(k); id != "" && !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}
