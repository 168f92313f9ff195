package main

import (
	"strings"
	"testing"
)

func TestLimitFlags(t *testing.T) {
	for _, tt := range []struct {
		args     []string
		code     int
		contains string
	}{
		{[]string{"inspect", "--max-layer-size", "lots", "oci:/nonexistent:x"}, ExitUsage, `--max-layer-size "lots": want a positive size`},
		{[]string{"inspect", "--max-layer-size", "0", "oci:/nonexistent:x"}, ExitUsage, "want a positive size"},
		{[]string{"inspect", "--max-layer-entries", "-1", "oci:/nonexistent:x"}, ExitUsage, "--max-layer-entries -1: want a positive number"},
		{[]string{"pull", "--max-layer-size", "12 parsecs", "oci:/nonexistent:x"}, ExitUsage, "want a positive size"},
	} {
		code, stdout, stderr := runCLI(t, tt.args...)
		if code != tt.code || !strings.Contains(stderr, tt.contains) || stdout != "" {
			t.Errorf("%v: exit %d, stderr %q, stdout %q; want %d and %q", tt.args, code, stderr, stdout, tt.code, tt.contains)
		}
	}
	for _, cmd := range []string{"pull", "inspect"} {
		_, out, _ := runCLI(t, cmd, "--help")
		for _, want := range []string{"--max-layer-size string", "(default \"64GiB\")", "--max-layer-entries int", "(default 1000000)"} {
			if !strings.Contains(out, want) {
				t.Errorf("%s --help lacks %q", cmd, want)
			}
		}
	}
	if _, out, _ := runCLI(t, "pull", "--help"); !strings.Contains(out, "--allow-privileged") {
		t.Error("pull --help lacks --allow-privileged")
	}
}
