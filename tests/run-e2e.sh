#!/usr/bin/env bash
# run-e2e.sh: run the end-to-end tier, and whatever happens to it (a
# failure, go test's -timeout, Ctrl-C, SIGTERM from CI), stop every service
# it started and unmount what it mounted, so the next run starts clean.
#
#   tests/run-e2e.sh [GO TEST FLAGS...]     e.g. -run TestMove
#
# E2E_STATE (default /tmp/podman-migrate-e2e) holds the hosts' state and
# logs; E2E_TIMEOUT (default 25m) is go test's -timeout: the suite stops its
# hosts shortly before it. The full log goes to /tmp/podman-migrate-e2e.log.
set -uo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=${E2E_STATE:-/tmp/podman-migrate-e2e}
timeout=${E2E_TIMEOUT:-25m}
log=/tmp/podman-migrate-e2e.log
tags="remote exclude_graphdriver_btrfs btrfs_noversion exclude_graphdriver_devicemapper containers_image_openpgp e2e"

cleanup() {
	local d m
	trap - EXIT INT TERM HUP
	[[ -d $state ]] || return 0
	for d in "$state"/crio-*; do
		[[ -d $d ]] && timeout 120 bash "$repo/tests/crio.sh" down "$d" >/dev/null 2>&1
	done
	timeout 180 bash "$repo/tests/hosts.sh" down "$state" 2>&1 | grep -v '^hosts: nothing' >&2
	# What a killed test left mounted (tmpfs for staging tests).
	while IFS= read -r m; do
		umount -l "$m" 2>/dev/null
	done < <(findmnt -rn -o TARGET | awk -v s="$state/" -v t="${TMPDIR:-/tmp}/Test" 'index($0, s) == 1 || index($0, t) == 1' | sort -r)
	return 0
}
trap cleanup EXIT
trap 'echo "run-e2e: interrupted; stopping the test hosts" >&2; exit 130' INT TERM HUP

# A previous run killed hard (SIGKILL) leaves its hosts up: stop them first.
cleanup
trap cleanup EXIT
trap 'echo "run-e2e: interrupted; stopping the test hosts" >&2; exit 130' INT TERM HUP

cd "$repo" || exit 1
E2E_STATE=$state go test -tags "$tags" -count=1 -timeout "$timeout" -v "$@" ./tests/e2e/ 2>&1 |
	tee "$log" | grep --line-buffered -E '^(=== RUN|--- |    |PASS|FAIL|ok|SKIP|e2e: )'
exit "${PIPESTATUS[0]}"
