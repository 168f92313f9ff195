package dump

import (
	"bytes"
	"encoding/json"
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
	if c.IsNeutral() {
		t.Fatal("fixture is already neutral")
	}
	cleared := c.Neutralize()
	sort.Strings(cleared)
	want := []string{"ShmDir", "conmonPidFile", "logPath", "mounts[shm]", "pid_file", "secretsPath", "staticDir"}
	if diff := cmp.Diff(want, cleared); diff != "" {
		t.Fatalf("cleared (-want +got):\n%s", diff)
	}
	if !c.IsNeutral() {
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
	// Everything else passes through untouched, unknown fields included.
	if diff := cmp.Diff([]any{"/srv/keep"}, got["mounts"]); diff != "" {
		t.Errorf("mounts (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]any{"x": 1.5, "y": []any{1.0, 2.0}}, got["unknownFuture"]); diff != "" {
		t.Errorf("unknown field changed (-want +got):\n%s", diff)
	}
	if c.Name() != "web" || c.Runtime() != "runc" || c.RootfsImageName() != "localhost/podman-migrate-test:latest" {
		t.Errorf("accessors: name %q runtime %q image %q", c.Name(), c.Runtime(), c.RootfsImageName())
	}
	if diff := cmp.Diff([]string{"data"}, c.NamedVolumes()); diff != "" {
		t.Errorf("volumes (-want +got):\n%s", diff)
	}
	// A second pass finds nothing more to clear.
	if again := c.Neutralize(); len(again) != 0 {
		t.Errorf("second Neutralize cleared %v", again)
	}
}

func TestNeutralizeDropsEmptyMounts(t *testing.T) {
	c, err := ReadConfig(strings.NewReader(`{"ShmDir":"/x/userdata/shm","mounts":["/x/userdata/shm"]}`))
	if err != nil {
		t.Fatal(err)
	}
	c.Neutralize()
	b, _ := c.Bytes()
	if string(b) != "{}" {
		t.Fatalf("got %s, want {}", b)
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
