package podman

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/podman-migrate/podman-migrate/internal/fault"
)

// ErrCRIUStuck is wrapped when a checkpoint or restore did not finish in
// time. On VM guests whose hardware breakpoints never fire, CRIU < 4.2
// waits for one forever in every dump. A podman failure, with StuckHint.
var ErrCRIUStuck = fault.Hinted(fault.New(fault.Podman, "CRIU did not finish in time"), StuckHint)

// StuckHint is what fixes the usual cause of ErrCRIUStuck.
const StuckHint = "run `podman-migrate check` on that host; on VM guests CRIU < 4.2 hangs in every dump (hardware breakpoints never fire): install CRIU >= 4.2, or export CRIU_FAULT=130 in a criu wrapper earlier on the service's PATH (podman does not pass its own environment to the runtime)"

// EndStuckCRIU kills what the OCI runtime started for a container's
// checkpoint or restore (op: "checkpoint" or "restore"): the children of the
// runtime process whose command line names op and the container's ID.
// That is CRIU (whose command line CRIU itself rewrites, so it is found by
// parentage, not by name). A process that CRIU left seized resumes once
// CRIU is gone, and the runtime then fails the request. It returns the
// PIDs killed; ErrRemote when the service is not on this machine.
func (c *Client) EndStuckCRIU(ctrID, op string) ([]int, error) {
	if _, err := c.peer(); err != nil {
		return nil, ErrRemote
	}
	return endRuntimeChildren("/proc", ctrID, op)
}

// endRuntimeChildren kills the descendants of every process under proc
// whose argv has op and ctrID as words.
func endRuntimeChildren(proc, ctrID, op string) ([]int, error) {
	if ctrID == "" {
		return nil, fmt.Errorf("no container ID")
	}
	entries, err := os.ReadDir(proc)
	if err != nil {
		return nil, err
	}
	parent := map[int]int{}
	var runtimes []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, ok := ppid(proc, pid); ok {
			parent[pid] = pp
		}
		raw, err := os.ReadFile(filepath.Join(proc, e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		if isRuntimeOp(args, ctrID, op) {
			runtimes = append(runtimes, pid)
		}
	}
	var killed []int
	for pid := range parent {
		for p, seen := parent[pid], 0; p > 1 && seen < 64; p, seen = parent[p], seen+1 {
			if slices.Contains(runtimes, p) {
				if syscall.Kill(pid, syscall.SIGKILL) == nil {
					killed = append(killed, pid)
				}
				break
			}
		}
	}
	return killed, nil
}

// isRuntimeOp: argv of "runc [flags] checkpoint [flags] ID" (crun alike;
// conmon starts a restore with the ID elsewhere on the line).
func isRuntimeOp(args []string, ctrID, op string) bool {
	if len(args) < 3 {
		return false
	}
	switch filepath.Base(args[0]) {
	case "runc", "crun", "runsc", "youki":
	default:
		return false
	}
	return slices.Contains(args[1:], op) && slices.Contains(args[1:], ctrID)
}

func ppid(proc string, pid int) (int, bool) {
	b, err := os.ReadFile(filepath.Join(proc, strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0, false
	}
	pp, err := strconv.Atoi(f[1])
	return pp, err == nil
}

// StuckError is the failure of a checkpoint or restore (op says which, as
// Error.Op does) that had no answer within timeout; detail says what was
// done about it.
func StuckError(op string, timeout time.Duration, detail string) error {
	return &Error{Op: op, Err: fmt.Errorf(
		"%w: no answer in %s (likely CRIU < 4.2 on a VM guest, where its hardware breakpoint never fires); %s",
		ErrCRIUStuck, timeout, detail)}
}

// DescribeEnded says what EndStuckCRIU did (its answer pids, err) for the
// CRIU of a what ("checkpoint" or "restore").
func DescribeEnded(what string, pids []int, err error) string {
	switch {
	case err != nil:
		return fmt.Sprintf("ending CRIU failed (%v)", err)
	case len(pids) == 0:
		return "found no CRIU of this " + what + " to end"
	}
	return fmt.Sprintf("ended the runtime's CRIU (PID %s)", strings.Trim(fmt.Sprint(pids), "[]"))
}

// EndStuckCRIUCommand is the command that ends a stuck CRIU of a container
// on the service's own host, for when that host is not this machine.
func EndStuckCRIUCommand(ctrID, op string) string {
	return fmt.Sprintf("pkill -KILL -P \"$(pgrep -d, -f '(runc|crun) .*%s .*%s')\"", op, ctrID)
}
