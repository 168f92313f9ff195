#!/usr/bin/env bash
# bench-link.sh: downtime of one migrated container across a network link,
# four ways side by side, for each size in BENCH_SIZES (MiB the workload
# holds, half random; default "256 1024"), each path on a fresh container.
#
# BENCH_LINK=1gbit|10gbit|none (or any tc rate, e.g. 500mbit) shapes the
# link. The bench makes two network namespaces, pmbench-a (the client's
# side: host A's podman is reached through its unix socket) and pmbench-b
# (host B's side), joined by a veth pair shaped with tc tbf in both
# directions ("none": unshaped). In pmbench-b run a second podman service
# of host B, on tcp://10.250.77.2:8585 (B's own storage and mount
# namespace), and a registry on 10.250.77.2:5000. The addresses exist only
# inside those namespaces; everything goes on exit.
#
#   floor-raw   podman's API export on A (uncompressed), config.dump's host
#               paths removed in place, then the import sent across the link
#               to B's tcp:// service
#   floor-zstd  the same export and edit, zstd -3 (podman's default level),
#               the compressed archive sent to the same import
#   move        podman-migrate move --to tcp://… (the client on A's side):
#               A's export streamed into B's restore in one pass
#   push+pull   push on A's side to the registry behind the link, pull on
#               B's side (the client in pmbench-b, on B's unix socket)
#
# Downtime is the wall time of the commands (GNU time); "of which frozen"
# leaves out what move and push did before the checkpoint (connecting,
# inspecting: the container still runs). Bytes crossed are
# the veth's counters, both directions. Peak RSS is the clients' (GNU
# time's %M). A benchmark: it fails only when a migration fails (the
# process on B must be the one checkpointed), never on a time.
# BENCH_PUSH_FLAGS adds flags to push (e.g. "--compression-level 1").
#   BENCH_LINK=1gbit make bench      BENCH_LINK=10gbit BENCH_SIZES=256 make bench
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
state=${BENCH_STATE:-/tmp/podman-migrate-bench}
bin=$repo/bin/podman-migrate
sizes=${BENCH_SIZES:-256 1024}
link=${BENCH_LINK:-1gbit}
read -r -a push_flags <<<"${BENCH_PUSH_FLAGS:-}"
readonly NS_A=pmbench-a NS_B=pmbench-b VETH_A=pmbench0 VETH_B=pmbench1
readonly IP_A=10.250.77.1 IP_B=10.250.77.2 B_PORT=8585 REG_PORT=5000
readonly SERVICE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# shellcheck source=tests/bench-lib.sh
source "$repo/tests/bench-lib.sh"
for size in $sizes; do
	[[ $size =~ ^[1-9][0-9]*$ ]] || die "BENCH_SIZES: $size is not a number of MiB"
done
[[ $link == none || $link =~ ^[0-9]+(k|m|g)bit$ ]] || die "BENCH_LINK: $link is not none or a rate such as 1gbit"
[[ -x $bin ]] || die "$bin is missing: make build"
for c in /usr/bin/time ip tc zstd curl python3; do
	command -v "$c" >/dev/null || die "$c is missing: make setup-host"
done

pids=()
teardown() {
	local p
	for p in "${pids[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do
		timeout 20 tail --pid="$p" -f /dev/null 2>/dev/null || kill -9 "$p" 2>/dev/null || true
	done
	ip netns del "$NS_A" 2>/dev/null || true
	ip netns del "$NS_B" 2>/dev/null || true
	bash "$repo/tests/hosts.sh" down "$state" >&2 || true
}
trap teardown EXIT
trap 'exit 130' INT TERM

# Leftovers of an interrupted run.
ip netns del "$NS_A" 2>/dev/null || true
ip netns del "$NS_B" 2>/dev/null || true
bash "$repo/tests/hosts.sh" up "$state" >&2
# shellcheck source=/dev/null
source "$state/env"
A=(podman --url "$HOST_A_URL")
B=(podman --url "$HOST_B_URL")
sockA=${HOST_A_URL#unix://}
api=libpod
inA=(ip netns exec "$NS_A")
inB=(ip netns exec "$NS_B")

# --- the link
ip netns add "$NS_A"
ip netns add "$NS_B"
ip link add "$VETH_A" netns "$NS_A" type veth peer name "$VETH_B" netns "$NS_B"
"${inA[@]}" ip addr add "$IP_A/30" dev "$VETH_A"
"${inB[@]}" ip addr add "$IP_B/30" dev "$VETH_B"
for ns in "$NS_A" "$NS_B"; do
	ip -n "$ns" link set lo up
done
"${inA[@]}" ip link set "$VETH_A" up
"${inB[@]}" ip link set "$VETH_B" up
if [[ $link != none ]]; then
	# tbf: a bucket of 10 ms at the rate, packets queue at most 50 ms.
	bits=$(awk -v r="$link" 'BEGIN { n = r + 0; u = substr(r, length(n "") + 1, 1); m = (u == "k") ? 1e3 : (u == "m") ? 1e6 : 1e9; printf "%.0f", n * m }')
	burst=$((bits / 8 / 100))
	((burst >= 65536)) || burst=65536
	"${inA[@]}" tc qdisc add dev "$VETH_A" root tbf rate "$link" burst "$burst" latency 50ms
	"${inB[@]}" tc qdisc add dev "$VETH_B" root tbf rate "$link" burst "$burst" latency 50ms
fi
crossed() {
	local t r
	t=$("${inA[@]}" cat "/sys/class/net/$VETH_A/statistics/tx_bytes")
	r=$("${inA[@]}" cat "/sys/class/net/$VETH_A/statistics/rx_bytes")
	printf '%d' $((t + r))
}

# --- B's side: its podman on tcp://, and a registry
spawn() {
	local log=$1
	shift
	setsid "$@" </dev/null >>"$log" 2>&1 &
	pids+=($!)
}
spawn "$state/b-tcp.log" nsenter --net="/run/netns/$NS_B" -t "$HOST_B_PID" -m -- \
	env PATH="$SERVICE_PATH" podman system service --time=0 "tcp://$IP_B:$B_PORT"
mkdir -p "$state/link-registry"
cat >"$state/link-registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $state/link-registry
  delete:
    enabled: true
http:
  addr: $IP_B:$REG_PORT
EOF
spawn "$state/link-registry.log" "${inB[@]}" docker-registry serve "$state/link-registry.yml"
for _ in $(seq 150); do
	"${inA[@]}" curl -sf --max-time 2 "http://$IP_B:$B_PORT/_ping" >/dev/null 2>&1 &&
		"${inA[@]}" curl -sf --max-time 2 "http://$IP_B:$REG_PORT/v2/" >/dev/null 2>&1 && break
	sleep 0.2
done
"${inA[@]}" curl -sf --max-time 2 "http://$IP_B:$B_PORT/_ping" >/dev/null || die "B's tcp service does not answer (log: $state/b-tcp.log)"
"${inA[@]}" curl -sf --max-time 2 "http://$IP_B:$REG_PORT/v2/" >/dev/null || die "the registry behind the link does not answer (log: $state/link-registry.log)"
B_URL=tcp://$IP_B:$B_PORT
REG=$IP_B:$REG_PORT

# same_process NAME BOOT: the process on B is the checkpointed one.
same_process() {
	local got=
	for _ in $(seq 100); do
		got=$(boot_of "${B[@]}" exec "$1")
		[[ -n $got ]] && break
		sleep 0.1
	done
	[[ $got == "$2" ]] || die "$1 on B is not the checkpointed process (boot ${got:-none}, want $2)"
}
done_with() {
	"${A[@]}" rm -f -t 0 "$1" >/dev/null 2>&1 || true
	"${B[@]}" rm -f -t 0 "$1" >/dev/null 2>&1 || true
}
mb() { awk -v b="$1" 'BEGIN { printf "%.0f", b / 1e6 }'; }
# seconds FILE PATH...: podman-migrate's --format json numbers at PATH
# (a.b.c), "-" where absent, space-separated.
seconds() {
	python3 - "$@" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
if "containers" in d:  # move: one container
    d = d["containers"][0]
out = []
for p in sys.argv[2:]:
    v = d
    for k in p.split("."):
        v = v.get(k) if isinstance(v, dict) else None
    out.append("%.2f" % v if isinstance(v, (int, float)) else "-")
print(" ".join(out))
EOF
}

write_neutralise

shaping="tbf both ways"
[[ $link == none ]] && shaping=unshaped
printf '\nmachine: %s cores, %s MiB RAM, kernel %s; link: %s (%s), veth between namespaces %s and %s\n' \
	"$(nproc)" "$(awk '/^MemTotal/ { printf "%.0f", $2 / 1024 }' /proc/meminfo)" "$(uname -r)" "$link" "$shaping" "$NS_A" "$NS_B"
echo "note: both \"hosts\" share this machine's cores: CPU one spends (compressing) the other's restore lacks"
printf 'software: podman %s, %s, podman-migrate %s\n' "$("${A[@]}" version --format '{{.Server.Version}}')" \
	"$(criu --version 2>/dev/null | sed -n 's/^Version: /CRIU /p')" "$("$bin" version 2>/dev/null | sed -n 's/^ *Version: *//p')"

# floor LABEL COMPRESS NAME: export on A, neutralise, (compress,) import
# across the link.
floor() {
	local label=$1 compress=$2 name=$3 body=$state/floor.tar
	measure "$label-export" curl -sS --fail-with-body --unix-socket "$sockA" -X POST -o "$state/floor.tar" \
		"http://d/v4.0.0/$api/containers/$name/checkpoint?export=true&keep=true"
	archive[$label]=$(stat -c %s "$state/floor.tar")
	measure "$label-neutralise" python3 "$state/neutralise.py" "$state/floor.tar"
	secs[$label-compress]=0
	if [[ $compress == zstd ]]; then
		measure "$label-compress" zstd -q -3 -T0 -f "$state/floor.tar" -o "$state/floor.tar.zst"
		body=$state/floor.tar.zst
	fi
	local c0
	c0=$(crossed)
	measure "$label-import" "${inA[@]}" curl -sS --fail-with-body -X POST -H 'Content-Type: application/x-tar' -H 'Expect:' \
		-T "$body" "http://$IP_B:$B_PORT/v4.0.0/$api/containers/import/restore?import=true"
	bytes[$label]=$(($(crossed) - c0))
	secs[$label]=$(sum "${secs[$label-export]}" "${secs[$label-neutralise]}" "${secs[$label-compress]}" "${secs[$label-import]}")
	rm -f "$state/floor.tar" "$state/floor.tar.zst"
}

declare -A archive bytes
declare -a summary
# Warm-up, not measured: the first checkpoint and import after the hosts
# start pay for cold caches (CRIU, podman, runc loaded from disk), which
# would fall on whichever path ran first.
start bench-warm 8
boot=$(boot_of "${A[@]}" exec bench-warm)
floor warm raw bench-warm
same_process bench-warm "$boot"
done_with bench-warm
for size in $sizes; do
	# --- floor-raw and floor-zstd
	for f in raw zstd; do
		name=bench-floor-$f-$size
		start "$name" "$size"
		boot=$(boot_of "${A[@]}" exec "$name")
		floor "fl$f" "$f" "$name"
		same_process "$name" "$boot"
		done_with "$name"
	done

	# --- move, direct
	name=bench-move-$size
	start "$name" "$size"
	boot=$(boot_of "${A[@]}" exec "$name")
	c0=$(crossed)
	measure mv "${inA[@]}" "$bin" --url "$HOST_A_URL" move --format json --to "$B_URL" "$name"
	bytes[mv]=$(($(crossed) - c0))
	same_process "$name" "$boot"
	# One pass: no image is built, uploaded or fetched; the archive's
	# head is read and the restore planned, then the rest streams.
	read -r mv_ck mv_head mv_plan mv_restore mv_frozen < <(seconds "$state/mv.out" \
		push.seconds.checkpoint push.seconds.head pull.seconds.plan pull.seconds.restore downtime)
	done_with "$name"

	# --- push on A's side to the registry behind the link, pull on B's side
	name=bench-pp-$size
	start "$name" "$size"
	boot=$(boot_of "${A[@]}" exec "$name")
	c0=$(crossed)
	measure pp-push "${inA[@]}" "$bin" --url "$HOST_A_URL" push --format json --tls-verify=false "${push_flags[@]}" "$name" "$REG/bench/pp:$size"
	ref=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["reference"] + "@" + d["digest"])' "$state/pp-push.out")
	measure pp-pull "${inB[@]}" "$bin" --url "$HOST_B_URL" pull --format json --tls-verify=false "$ref"
	bytes[pp]=$(($(crossed) - c0))
	same_process "$name" "$boot"
	read -r pp_ck pp_build pp_up < <(seconds "$state/pp-push.out" seconds.checkpoint seconds.build seconds.upload)
	read -r pp_plan pp_fetch pp_verify pp_restore < <(seconds "$state/pp-pull.out" seconds.plan seconds.fetch seconds.verify seconds.restore)
	pp_fv="in restore" # a streamed pull fetches and verifies while podman reads
	[[ $pp_fetch == - ]] || pp_fv=$(sum "$pp_fetch" "${pp_verify/-/0}")
	pp_total=$(sum "${secs[pp-push]}" "${secs[pp-pull]}")
	# Frozen from push's checkpoint to the end of pull.
	pp_frozen=$(sum "$pp_ck" "$pp_build" "$pp_up" "${secs[pp-pull]}")
	done_with "$name"

	printf '\n%s MiB held by the workload (%s MiB random), link %s\n' "$size" $((size / 2)) "$link"
	row() { printf '  %-40s %11s %11s %11s %11s\n' "$@"; }
	row "" floor-raw floor-zstd move push+pull
	row "downtime, seconds" "${secs[flraw]}" "${secs[flzstd]}" "${secs[mv]}" "$pp_total"
	row "  of which frozen" "${secs[flraw]}" "${secs[flzstd]}" "$mv_frozen" "$pp_frozen"
	row "  export | checkpoint" "${secs[flraw-export]}" "${secs[flzstd-export]}" "$mv_ck" "$pp_ck"
	row "  neutralise, compress | build" "$(sum "${secs[flraw-neutralise]}")" "$(sum "${secs[flzstd-neutralise]}" "${secs[flzstd-compress]}")" - "$pp_build"
	row "  - | move: head, plan" - - "$(sum "$mv_head" "$mv_plan")" -
	row "  - | upload" - - - "$pp_up"
	row "  - | pull: metadata, plan" - - - "$pp_plan"
	row "  - | fetch, verify" - - - "$pp_fv"
	row "  import | restore" "${secs[flraw-import]}" "${secs[flzstd-import]}" "$mv_restore" "$pp_restore"
	row "crossed the link, MB" "$(mb "${bytes[flraw]}")" "$(mb "${bytes[flzstd]}")" "$(mb "${bytes[mv]}")" "$(mb "${bytes[pp]}")"
	row "podman's export, MB" "$(mb "${archive[flraw]}")" "$(mb "${archive[flzstd]}")" - -
	row "client peak RSS, MiB" "$(kib2mib "${rss[flraw-import]}")" "$(kib2mib "${rss[flzstd-compress]:-0}")" "$(kib2mib "${rss[mv]}")" \
		"$(kib2mib "${rss[pp-push]}")/$(kib2mib "${rss[pp-pull]}")"
	row "ratio to floor-raw" 1.00 "$(ratio "${secs[flzstd]}" "${secs[flraw]}")" "$(ratio "${secs[mv]}" "${secs[flraw]}")" "$(ratio "$pp_total" "${secs[flraw]}")"
	row "ratio to floor-zstd" "$(ratio "${secs[flraw]}" "${secs[flzstd]}")" 1.00 "$(ratio "${secs[mv]}" "${secs[flzstd]}")" "$(ratio "$pp_total" "${secs[flzstd]}")"
	summary+=("$(printf '  %6s MiB %8s %10s %10s %8s %10s %12s %12s %13s' "$size" "$link" "${secs[flraw]}" "${secs[flzstd]}" "${secs[mv]}" "$pp_total" \
		"$(ratio "${secs[mv]}" "${secs[flraw]}")" "$(ratio "$pp_total" "${secs[flraw]}")" "$(ratio "$mv_frozen" "${secs[flraw]}")")")
done

printf '\nsummary, downtime in seconds\n  %10s %8s %10s %10s %8s %10s %12s %12s %13s\n' memory link floor-raw floor-zstd move push+pull move/raw pp/raw frozen-mv/raw
printf '%s\n' "${summary[@]}"
