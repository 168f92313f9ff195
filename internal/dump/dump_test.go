package dump

import (
	"bytes"
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/podman-migrate/podman-migrate/internal/ckpttest"
)

func TestNeutralize(t *testing.T) {
	c, err := ReadConfig(bytes.NewReader(ckpttest.ConfigDump()))
	if err != nil {
		t.Fatal(err)
	}
	if neutral(c) {
		t.Fatal("fixture is already neutral")
	}
	cleared := c.Neutralize()
	sort.Strings(cleared)
	want := []string{"ShmDir", "conmonPidFile", "logPath", "mounts[shm]", "pid_file", "secretsPath", "staticDir"}
	if diff := cmp.Diff(want, cleared); diff != "" {
		t.Fatalf("cleared (-want +got):\n%s", diff)
	}
	if !neutral(c) {
		t.Fatal("not neutral after Neutralize")
	}
	b, err := c.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range HostPathFields {
		if _, ok := got[k]; ok {
			t.Errorf("%s still present", k)
		}
	}
	if strings.Contains(string(b), "/userdata") {
		t.Errorf("a userdata path survived: %s", b)
	}
	// The only "mounts" entry was the shm one.
	if _, ok := got["mounts"]; ok {
		t.Errorf("mounts kept: %v", got["mounts"])
	}
	// Everything else passes through untouched.
	var orig map[string]any
	if err := json.Unmarshal(ckpttest.ConfigDump(), &orig); err != nil {
		t.Fatal(err)
	}
	for k, v := range orig {
		if k == "mounts" || slices.Contains(HostPathFields, k) {
			continue
		}
		if diff := cmp.Diff(v, got[k]); diff != "" {
			t.Errorf("field %s changed (-want +got):\n%s", k, diff)
		}
	}
	if c.Name() != "fixture" || c.Runtime() != "runc" || c.RootfsImageName() != "localhost/podman-migrate-test:latest" ||
		c.RawImageName() != "localhost/podman-migrate-test:latest" || c.RootfsImageID() == "" || c.ID() == "" {
		t.Errorf("accessors: name %q runtime %q image %q raw %q id %q", c.Name(), c.Runtime(), c.RootfsImageName(), c.RawImageName(), c.RootfsImageID())
	}
	if diff := cmp.Diff([]VolumeMount{{Name: "fixvol", Destination: "/data"}}, c.NamedVolumeMounts()); diff != "" {
		t.Errorf("volumes (-want +got):\n%s", diff)
	}
	// A second pass finds nothing more to clear.
	if again := c.Neutralize(); len(again) != 0 {
		t.Errorf("second Neutralize cleared %v", again)
	}
}

func TestNeutralizeKeepsOtherMountsAndUnknownFields(t *testing.T) {
	in := `{"ShmDir":"/x/userdata/shm","mounts":["/x/userdata/shm","/srv/keep"],"fromTheFuture":{"x":1.5,"y":[1,2]}}`
	c, err := ReadConfig(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	c.Neutralize()
	b, _ := c.Bytes()
	if want := `{"fromTheFuture":{"x":1.5,"y":[1,2]},"mounts":["/srv/keep"]}`; string(b) != want {
		t.Fatalf("got %s, want %s", b, want)
	}
}

func TestReadConfigRejects(t *testing.T) {
	for name, in := range map[string]string{
		"not json":  "nope",
		"array":     "[1,2]",
		"null":      "null",
		"too large": `{"a":"` + strings.Repeat("x", MaxSize) + `"}`,
	} {
		if _, err := ReadConfig(strings.NewReader(in)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// neutral reports whether none of the host path fields remain: what
// Neutralize removes.
func neutral(c *Config) bool {
	for _, k := range HostPathFields {
		if c.String(k) != "" {
			return false
		}
	}
	return !bytes.Contains(c.raw["mounts"], []byte("/userdata/shm"))
}

func TestNamespaceContainers(t *testing.T) {
	cfg, err := ReadConfig(strings.NewReader(`{"name":"m","pod":"p1","netNsCtr":"infra","ipcNsCtr":"infra","pidNsCtr":"other","utsNsCtr":""}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.NamespaceContainers(); strings.Join(got, ",") != "infra,other" || cfg.Pod() != "p1" {
		t.Fatalf("NamespaceContainers %v, Pod %q", got, cfg.Pod())
	}
}

func TestJoined(t *testing.T) {
	cfg, err := ReadConfig(strings.NewReader(`{"name":"m","netNsCtr":"srv","pidNsCtr":"","x-new":true}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Joined(); len(got) != 1 || got["net"] != "srv" {
		t.Fatalf("Joined %v, want net:srv", got)
	}
	if err := cfg.SetJoined("net", "new-id"); err != nil {
		t.Fatal(err)
	}
	if err := cfg.SetJoined("mnt", "new-id"); err == nil {
		t.Error("SetJoined took a namespace podman does not name")
	}
	b, err := cfg.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ReadConfig(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got := back.Joined(); len(got) != 1 || got["net"] != "new-id" || !bytes.Contains(b, []byte(`"x-new":true`)) {
		t.Errorf("after SetJoined: %s", b)
	}
}
