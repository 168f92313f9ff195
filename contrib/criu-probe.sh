#!/bin/sh
# criu-probe.sh: prove that a criu binary can checkpoint and restore on this
# host, in seconds, with a bound on each step.
#
#   contrib/criu-probe.sh [CRIU]    CRIU defaults to the first criu on PATH
#
# It starts a throwaway `sleep`, dumps it with `CRIU dump --shell-job` and
# restores it detached, each under PROBE_TIMEOUT seconds (default 20), then
# kills the restored process and removes its files. `criu check` says
# "Looks good." on hosts where every dump hangs, so only a real dump tells.
#
# Exit codes and the one line printed on stdout:
#   0  ok: CRIU VERSION dumped and restored a process
#   3  hang: the dump did not end within the timeout (CRIU waits forever for a
#      hardware breakpoint the host never fires: a VM guest); fix: CRIU >= 4.2,
#      or CRIU_FAULT=130 exported inside a criu wrapper
#   4  failed: the dump or the restore failed; the end of CRIU's log follows
#      on stderr
#   2  usage, or no criu
# POSIX sh: it also runs inside host roots that have no bash.
set -u

criu=${1:-criu}
t=${PROBE_TIMEOUT:-20}

if ! command -v "$criu" >/dev/null 2>&1; then
	echo "failed: no criu at '$criu'"
	exit 2
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/criu-probe.XXXXXX") || exit 2
pid=""
# shellcheck disable=SC2317 # run by trap
cleanup() {
	[ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
	if [ -s "$dir/restored.pid" ]; then
		kill -KILL "$(cat "$dir/restored.pid")" 2>/dev/null
	fi
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

version=$("$criu" --version 2>/dev/null | sed -n 's/^Version: *//p' | head -n 1)
# A child in a session of its own, with nothing open that CRIU must carry
# (a caller's flock on fd 9 would fail the dump: "file locks are held").
setsid sleep 1000 </dev/null >/dev/null 2>&1 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
pid=$!
sleep 0.2

tail_log() {
	echo "--- end of $1 ---" >&2
	grep -E 'Error|Warn' "$1" 2>/dev/null | tail -n 6 >&2
	tail -n 2 "$1" >&2 2>/dev/null
}

timeout -k 5 "$t" "$criu" dump -t "$pid" -D "$dir" --shell-job -o dump.log -v4 >/dev/null 2>&1
rc=$?
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
	echo "hang: criu ${version:-?} dump did not finish in ${t}s (hardware breakpoints do not fire on this host); use CRIU >= 4.2, or export CRIU_FAULT=130 in a criu wrapper"
	tail_log "$dir/dump.log"
	# A killed dump can leave the process stopped under ptrace until CRIU
	# exits; it is killed by cleanup either way.
	exit 3
fi
if [ "$rc" -ne 0 ]; then
	echo "failed: criu ${version:-?} dump exited $rc"
	tail_log "$dir/dump.log"
	exit 4
fi
# CRIU restores the process under its old PID: cleanup kills it either way.
timeout -k 5 "$t" "$criu" restore -D "$dir" --shell-job -d --pidfile "$dir/restored.pid" -o restore.log >/dev/null 2>&1
rc=$?
if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
	echo "hang: criu ${version:-?} restore did not finish in ${t}s"
	tail_log "$dir/restore.log"
	exit 3
fi
if [ "$rc" -ne 0 ] || [ ! -s "$dir/restored.pid" ] || ! kill -0 "$(cat "$dir/restored.pid")" 2>/dev/null; then
	echo "failed: criu ${version:-?} restore exited $rc, no restored process"
	tail_log "$dir/restore.log"
	exit 4
fi
echo "ok: criu ${version:-?} dumped and restored a process"
exit 0
