#!/usr/bin/env bash
# shellcheck disable=SC2154,SC2034 # state, A, TEST_IMAGE are the sourcing bench's; secs and rss are read there
# bench-lib.sh: what tests/bench.sh and tests/bench-link.sh share, sourced
# by both. Its functions use A (podman --url host A), TEST_IMAGE and state
# (the bench's directory), which the benches set once the hosts are up.

die() {
	printf 'bench: %s\n' "$*" >&2
	exit 1
}

field() { sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p"; }
boot_of() { "$@" cat /workload/status 2>/dev/null | field boot || true; }

# start NAME MIB: run the workload on A and wait until it counts.
start() {
	"${A[@]}" run -d --name "$1" "$TEST_IMAGE" /bin/workload -mem "$2" -sum-every 0 >/dev/null
	local c
	for _ in $(seq 900); do
		c=$("${A[@]}" exec "$1" cat /workload/status 2>/dev/null | field counter || true)
		[[ -n $c && $c -ge 3 ]] && return 0
		sleep 0.2
	done
	die "$1 never started counting"
}

# measure LABEL CMD...: run CMD under GNU time; its stdout goes to
# $state/LABEL.out, its stderr to $state/LABEL.log; wall seconds and peak
# RSS (KiB) to secs[LABEL], rss[LABEL]. On failure the log and the start of
# the output (curl's: podman's answer) are shown.
declare -A secs rss
measure() {
	local label=$1 tf s m
	shift
	tf=$(mktemp)
	if ! /usr/bin/time -f '%e %M' -o "$tf" "$@" >"$state/$label.out" 2>"$state/$label.log"; then
		cat "$state/$label.log" >&2
		head -c 2000 "$state/$label.out" >&2
		rm -f "$tf"
		die "$label failed: $*"
	fi
	read -r s m <"$tf"
	rm -f "$tf"
	secs[$label]=$s
	rss[$label]=$m
}

sum() { awk 'BEGIN { s = 0; for (i = 1; i < ARGC; i++) s += ARGV[i]; printf "%.2f", s }' "$@"; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1048576 }'; }
kib2mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }

# write_neutralise: $state/neutralise.py ARCHIVE removes config.dump's host
# paths, as podman-migrate does (a restore on another host fails on them),
# in place: the shorter JSON is padded with spaces to its old size, so no
# byte of the CRIU images is copied, which is what a floor should cost.
write_neutralise() {
	cat >"$state/neutralise.py" <<'PY'
import json, sys, tarfile
fields = ["conmonPidFile", "pid_file", "ShmDir", "staticDir", "secretsPath", "logPath"]
path = sys.argv[1]
with tarfile.open(path, "r:") as t:
    m = next((m for m in t if m.name.lstrip("./") == "config.dump"), None)
    if m is None:
        sys.exit("neutralise: no config.dump in " + path)
    cfg = json.load(t.extractfile(m))
if cfg.get("namedVolumes"):
    # B's volume paths are longer than A's: this in-place edit cannot hold them.
    sys.exit("neutralise: named volumes: the floor does not rewrite their sources")
shm = cfg.get("ShmDir") or ""
for f in fields:
    cfg.pop(f, None)
mounts = [x for x in cfg.get("mounts") or [] if x != shm and not x.endswith("/userdata/shm")]
if mounts:
    cfg["mounts"] = mounts
else:
    cfg.pop("mounts", None)
b = json.dumps(cfg, separators=(",", ":")).encode()
if len(b) > m.size:
    sys.exit("neutralise: config.dump grew")
with open(path, "r+b") as f:
    f.seek(m.offset_data)
    f.write(b + b" " * (m.size - len(b)))
PY
}
