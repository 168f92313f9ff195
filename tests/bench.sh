#!/usr/bin/env bash
# bench.sh: migrate one container holding MIB MiB of memory (half random,
# half compressible) from host A to isolated host B through the local
# registry, and print the figures. A benchmark: it never fails on a time,
# only when the migration itself fails.
#   make bench            (MIB=256 by default; MIB=512 make bench)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
state=${BENCH_STATE:-/tmp/podman-migrate-bench}
bin=$repo/bin/podman-migrate
mib=${MIB:-256}
name=bench-mem

bash "$repo/tests/hosts.sh" up "$state" >&2
cleanup() {
	podman --url "$HOST_A_URL" rm -f "$name" >/dev/null 2>&1 || true
	bash "$repo/tests/hosts.sh" down "$state" >&2
}
# shellcheck source=/dev/null
source "$state/env"
trap cleanup EXIT
A=(podman --url "$HOST_A_URL")
B=(podman --url "$HOST_B_URL")
"${A[@]}" rm -f "$name" >/dev/null 2>&1 || true

status() { "$@" exec "$name" cat /workload/status 2>/dev/null || true; }
field() { sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p"; }

# -sum-every 0: no checksum work in the container while it is measured.
"${A[@]}" run -d --name "$name" "$TEST_IMAGE" /bin/workload -mem "$mib" -sum-every 0 >/dev/null
for _ in $(seq 600); do
	c=$(status "${A[@]}" | field counter)
	[[ -n $c && $c -ge 3 ]] && break
	sleep 0.2
done
boot=$(status "${A[@]}" | field boot)

# measure LABEL CMD...: runs CMD under GNU time, keeps its stdout in $out
# and its wall seconds and peak RSS (KiB) in $secs and $rss.
measure() {
	local label=$1 tf
	shift
	tf=$(mktemp)
	if ! out=$(/usr/bin/time -f '%e %M' -o "$tf" "$@" 2>"$state/$label.log"); then
		cat "$state/$label.log" >&2
		echo "bench: $label failed" >&2
		exit 1
	fi
	read -r secs rss <"$tf"
	rm -f "$tf"
}

ref=$REGISTRY/bench/$name:v1
measure push "$bin" --url "$HOST_A_URL" push --tls-verify=false "$name" "$ref"
push_s=$secs push_rss=$rss pushed=$out
measure pull "$bin" --url "$HOST_B_URL" pull --tls-verify=false "$pushed"
pull_s=$secs pull_rss=$rss

after=$(status "${B[@]}" | field boot)
[[ $after == "$boot" ]] || { echo "bench: the process on B is not the one from A" >&2; exit 1; }
stored=$(du -sb "$state/registry-data" | cut -f1)

printf '\npodman-migrate benchmark: one container, %d MiB of memory (half random, half compressible), A -> isolated B via local registry\n' "$mib"
# Where the time went, from podman-migrate's own log lines.
ckpt_s=$(sed -n 's/^Checkpoint taken in \([^;]*\);.*/\1/p' "$state/push.log")
fetch_s=$(sed -n 's/^Fetched in \([^;]*\);.*/\1/p' "$state/pull.log")
verify_s=$(sed -n 's/^Verified in //p' "$state/pull.log")
restore_s=$(sed -n 's/^Restored in //p' "$state/pull.log")
mb() { awk -v b="$1" -v d="$2" 'BEGIN { printf "%.1f", b / d }'; }
printf '  %-34s %10s\n' "push seconds (checkpoint+upload)" "$push_s" \
	"  of which podman checkpoint" "$ckpt_s" \
	"pull seconds (fetch+verify+restore)" "$pull_s" \
	"  of which fetch" "$fetch_s" \
	"  of which verify" "$verify_s" \
	"  of which podman restore" "$restore_s" \
	"total seconds" "$(awk -v a="$push_s" -v b="$pull_s" 'BEGIN { printf "%.2f", a + b }')" \
	"bytes stored in the registry" "$stored" \
	"MiB stored in the registry" "$(mb "$stored" 1048576)" \
	"push peak RSS (MiB)" "$(mb "$push_rss" 1024)" \
	"pull peak RSS (MiB)" "$(mb "$pull_rss" 1024)"
