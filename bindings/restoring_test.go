package podman

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRestoringID(t *testing.T) {
	proc := t.TempDir()
	for pid, argv := range map[string][]string{
		"10": {"/usr/bin/conmon", "--api-version", "1", "-c", "aaa", "-u", "aaa", "-n", "web", "--exit-dir", "/x"},
		"11": {"/usr/bin/conmon", "--api-version", "1", "-c", "bbb", "-u", "bbb", "-n", "web2", "--restore", "/ckpt"},
		"12": {"/usr/bin/conmon", "--api-version", "1", "--cid=ccc", "-u", "ccc", "--name=web", "--restore", "/ckpt"},
		"13": {"/usr/bin/runc", "restore", "-n", "web", "ddd"},
	} {
		if err := os.MkdirAll(filepath.Join(proc, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(proc, pid, "cmdline"), []byte(strings.Join(argv, "\x00")+"\x00"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if id, err := restoringID(proc, "web"); err != nil || id != "ccc" {
		t.Errorf("restoringID(web) = %q, %v; want the conmon that restores web (ccc), not the one that runs it (aaa)", id, err)
	}
	if id, err := restoringID(proc, "db"); err == nil {
		t.Errorf("restoringID(db) = %q, want an error", id)
	}
}
