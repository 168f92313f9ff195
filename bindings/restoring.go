package podman

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// RestoringID returns the ID of the container podman is restoring under
// name, read from its conmon's command line ("-n NAME … -c ID …
// --restore …"). While a restore holds the container's lock, podman's
// inspect waits for it, so a stuck restore cannot be inspected. ErrRemote
// when the service is not on this machine.
func (c *Client) RestoringID(name string) (string, error) {
	if _, err := c.peer(); err != nil {
		return "", ErrRemote
	}
	return restoringID("/proc", name)
}

func restoringID(proc, name string) (string, error) {
	entries, err := os.ReadDir(proc)
	if err != nil {
		return "", err
	}
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(proc, e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if filepath.Base(args[0]) != "conmon" || !slices.Contains(args, "--restore") {
			continue
		}
		if flagValue(args, "-n", "--name") == name {
			if id := flagValue(args, "-c", "--cid"); id != "" {
				return id, nil
			}
		}
	}
	return "", fmt.Errorf("no conmon restoring container %q", name)
}

// flagValue is the value of the first of names in args ("-n X", "--name=X").
func flagValue(args []string, names ...string) string {
	for i, a := range args {
		for _, n := range names {
			if a == n && i+1 < len(args) {
				return args[i+1]
			}
			if v, ok := strings.CutPrefix(a, n+"="); ok {
				return v
			}
		}
	}
	return ""
}
