package podman

import (
	"os"
	"path/filepath"
	"testing"
)

// TestFreezer: both cgroup versions' freezers are found and read, on a
// directory shaped like each (the real ones are exercised end to end).
func TestFreezer(t *testing.T) {
	root := t.TempDir()
	cg := "/libpod_parent/pod/libpod-ctr"
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := freezerOf(root, cg); err == nil {
		t.Fatal("found a freezer where there is none")
	}
	v1 := filepath.Join(root, "freezer", cg, "freezer.state")
	write(v1, "FREEZING\n")
	f, err := freezerOf(root, cg)
	if err != nil || f.v2 || f.value(true) != "FROZEN" {
		t.Fatalf("v1: %+v, %v", f, err)
	}
	if done, err := f.settled(true); done || err != nil {
		t.Fatalf("FREEZING counted as frozen (%v)", err)
	}
	write(v1, "FROZEN\n")
	if done, err := f.settled(true); !done || err != nil {
		t.Fatalf("FROZEN not counted as frozen (%v)", err)
	}
	v2 := filepath.Join(root, cg, "cgroup.freeze")
	write(v2, "0\n")
	write(filepath.Join(root, cg, "cgroup.events"), "populated 1\nfrozen 0\n")
	f, err = freezerOf(root, cg)
	if err != nil || !f.v2 || f.value(true) != "1" {
		t.Fatalf("v2 not preferred: %+v, %v", f, err)
	}
	if done, _ := f.settled(true); done {
		t.Fatal("frozen 0 counted as frozen")
	}
	if done, _ := f.settled(false); !done {
		t.Fatal("frozen 0 not counted as thawed")
	}
	write(filepath.Join(root, cg, "cgroup.events"), "populated 1\nfrozen 1\n")
	if done, _ := f.settled(true); !done {
		t.Fatal("frozen 1 not counted as frozen")
	}
	os.RemoveAll(filepath.Join(root, cg))
	if done, err := f.settled(false); !done || err != nil {
		t.Fatalf("a removed cgroup is not thawed (%v)", err)
	}
}
