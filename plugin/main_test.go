package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// runCLI runs the whole command tree in-process, as the binary would.
func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCLIErrors(t *testing.T) {
	noSocket := "unix://" + filepath.Join(t.TempDir(), "absent.sock")
	tests := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"push without args", []string{"push"}, ExitUsage, "requires at least 2 arg(s)"},
		{"pull with two args", []string{"pull", "a", "b"}, ExitUsage, "accepts 1 arg(s)"},
		{"unknown flag", []string{"push", "--no-such-flag", "a", "b"}, ExitUsage, "unknown flag"},
		{"unknown command", []string{"teleport"}, ExitFailure, "unknown command"},
		{"push, podman unreachable", []string{"--url", noSocket, "push", "web", "127.0.0.1:5000/x:y"}, ExitPodman, "(hint: start the service"},
		{"pull, podman unreachable", []string{"pull", "--url", noSocket, "127.0.0.1:5000/x:y"}, ExitPodman, "podman: connecting to"},
		{"pull, malformed mount map", []string{"pull", "--url", noSocket, "--mount-map", "relative=/x", "127.0.0.1:5000/x:y"}, ExitPodman, "podman: connecting to"},
		{"inspect without args", []string{"inspect"}, ExitUsage, "accepts 1 arg(s)"},
		{"inspect, bad format", []string{"inspect", "--format", "yaml", "oci:/nonexistent:x"}, ExitUsage, "want text or json"},
		{"version, podman unreachable", []string{"version", "--url", noSocket}, ExitPodman, "podman: connecting to"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit code %d, want %d; stderr: %s", code, tt.code, stderr)
			}
			if !strings.Contains(stderr, tt.contains) {
				t.Errorf("stderr %q does not contain %q", stderr, tt.contains)
			}
			if tt.code != ExitOK && stdout != "" && !strings.HasPrefix(tt.args[0], "version") {
				t.Errorf("stdout not empty on failure: %q", stdout)
			}
			if lines := strings.Split(strings.TrimSpace(stderr), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "Error: ") {
				t.Errorf("want exactly one line starting with Error:, got %q", stderr)
			}
		})
	}
}

func TestHelpDocumentsExitCodes(t *testing.T) {
	code, stdout, _ := runCLI(t, "--help")
	if code != ExitOK || !strings.Contains(stdout, "Exit codes:") {
		t.Fatalf("help: code %d, %q", code, stdout)
	}
	for _, flag := range []string{"--leave-running", "--tls-verify", "--authfile", "--compression-format", "--tcp-established", "--file-locks", "--ignore-rootfs"} {
		_, out, _ := runCLI(t, "push", "--help")
		if !strings.Contains(out, flag) {
			t.Errorf("push --help lacks %s", flag)
		}
	}
	for _, flag := range []string{"--name", "--tls-verify", "--authfile", "--ignore-static-ip", "--ignore-static-mac", "--publish", "--pod", "--mount-map", "--volume-map", "--network-map", "--dry-run"} {
		_, out, _ := runCLI(t, "pull", "--help")
		if !strings.Contains(out, flag) {
			t.Errorf("pull --help lacks %s", flag)
		}
	}
}
