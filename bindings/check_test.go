package podman

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestEndRuntimeChildren: in a fake /proc, the child of "runc checkpoint
// ID" is killed, and the child of a runtime busy with another container
// or another operation is not. The children are real sleeps, since the
// function sends real signals; the runtimes' PIDs are fake and never
// signalled.
func TestEndRuntimeChildren(t *testing.T) {
	spawn := func() *exec.Cmd {
		cmd := exec.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	stuck, other, restore := spawn(), spawn(), spawn()
	proc := t.TempDir()
	entry := func(pid, ppid int, argv ...string) {
		dir := filepath.Join(proc, strconv.Itoa(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		cmdline := []byte{}
		for _, a := range argv {
			cmdline = append(append(cmdline, a...), 0)
		}
		comm := "zombie"
		if len(argv) > 0 {
			comm = filepath.Base(argv[0])
		}
		stat := fmt.Sprintf("%d (%s) S %d 1 1 0 -1", pid, comm, ppid)
		if err := os.WriteFile(filepath.Join(dir, "cmdline"), cmdline, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const ctr, otherCtr = "0123456789abcdef", "fedcba9876543210"
	// Fake runtime PIDs above any pid_max (4194304).
	entry(5000001, 1, "/usr/bin/runc", "--root", "/run/runc", "checkpoint", "--image-path", "/x", ctr)
	entry(5000002, 1, "runc", "checkpoint", otherCtr)
	entry(5000003, 1, "crun", "restore", ctr)
	entry(stuck.Process.Pid, 5000001, "criu", "swrk", "3")
	entry(other.Process.Pid, 5000002, "criu", "swrk", "3")
	entry(restore.Process.Pid, 5000003, "criu", "swrk", "3")
	entry(5000004, 5000001) // no cmdline: a zombie
	os.WriteFile(filepath.Join(proc, "self"), nil, 0o644)

	killed, err := endRuntimeChildren(proc, ctr, "checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(killed)
	// 5000004 is a child too, but signalling a PID that does not exist fails.
	if diff := cmp.Diff([]int{stuck.Process.Pid}, killed); diff != "" {
		t.Errorf("killed (-want +got):\n%s", diff)
	}
	done := make(chan error, 1)
	go func() { done <- stuck.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Errorf("the stuck child ended with %v, want SIGKILL", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("the stuck child was not killed")
	}
	for _, c := range []*exec.Cmd{other, restore} {
		if err := c.Process.Signal(syscall.Signal(0)); err != nil {
			t.Errorf("PID %d (another container's or operation's CRIU) was signalled: %v", c.Process.Pid, err)
		}
	}
	if _, err := endRuntimeChildren(proc, "", "checkpoint"); err == nil {
		t.Error("an empty container ID was accepted")
	}
}

func TestParseCRIUCheck(t *testing.T) {
	out := `Warn  (criu/cr-check.c:1230): Dirty tracking is OFF. Memory snapshot will not work.
Error (criu/cr-check.c:1457): Feature time namespaces is not supported
Looks good but some kernel features are missing
which, depending on your process tree, may cause
dump or restore failure.
`
	want := []string{"error: Feature time namespaces is not supported", "warn: Dirty tracking is OFF. Memory snapshot will not work.", "Looks good but some kernel features are missing"}
	if diff := cmp.Diff(want, parseCRIUCheck(out)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if got := parseCRIUCheck("Looks good.\n"); !slices.Equal(got, []string{"Looks good."}) {
		t.Errorf("got %q", got)
	}
	for out, want := range map[string]string{
		"Warn  (criu/cr-check.c:1600): Hardware breakpoints don't seem to work\nLooks good but some kernel features are missing\n": "broken",
		"Looks good.\n": "ok",
		"Error (criu/cr-check.c:1700): unknown feature breakpoints\n": "unknown",
	} {
		if got := parseBreakpoints(out); got != want {
			t.Errorf("parseBreakpoints(%q) = %q, want %q", out, got, want)
		}
	}
	if v := parseCRIUVersion("Version: 4.1.1\nGitID: v4.1.1\n"); v != "4.1.1" {
		t.Errorf("version %q", v)
	}
}

func TestIsFaultWrapper(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"wrapper": "#!/bin/sh\nexport CRIU_FAULT=130\nexec /usr/local/lib/criu/criu \"$@\"\n",
		"plain":   "#!/bin/sh\nexec /usr/local/lib/criu/criu \"$@\"\n",
		"binary":  "\x7fELF CRIU_FAULT=130",
	} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o755)
		if got := isFaultWrapper(p); got != (name == "wrapper") {
			t.Errorf("%s: %v", name, got)
		}
	}
}

func TestDemuxStdout(t *testing.T) {
	var b bytes.Buffer
	frame := func(stream byte, s string) {
		hdr := make([]byte, 8)
		hdr[0] = stream
		binary.BigEndian.PutUint32(hdr[4:], uint32(len(s)))
		b.Write(append(hdr, s...))
	}
	frame(1, "one ")
	frame(2, "noise")
	frame(1, "two")
	got, err := demuxStdout(&b)
	if err != nil || string(got) != "one two" {
		t.Errorf("got %q, %v", got, err)
	}
}
