#!/usr/bin/env bash
# bench.sh: downtime of one migrated container, three ways, side by side,
# for each size in BENCH_SIZES (MiB of memory the workload holds, half
# random; default "256 1024"):
#
#   podman-migrate  push on A to the local registry, pull on isolated B
#   floor           podman's API export on A, config.dump's host paths
#                   blanked, restore with import on B: no registry, no
#                   compression, nothing verified
#   native          podman container checkpoint --create-image, podman push,
#                   podman pull, podman container restore, on A (podman
#                   4.3.1 cannot restore it on isolated B: HOST-NOTES)
#
# A benchmark: it prints figures and fails only when a migration fails
# (the process on the target must be the one checkpointed), never on a time.
#   make bench        BENCH_SIZES="512" make bench
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
state=${BENCH_STATE:-/tmp/podman-migrate-bench}
bin=$repo/bin/podman-migrate
sizes=${BENCH_SIZES:-256 1024}

bash "$repo/tests/hosts.sh" up "$state" >&2
cleanup() {
	podman --url "$HOST_A_URL" rm -af -t 0 >/dev/null 2>&1 || true
	bash "$repo/tests/hosts.sh" down "$state" >&2
}
# shellcheck source=/dev/null
source "$state/env"
trap cleanup EXIT
A=(podman --url "$HOST_A_URL")
B=(podman --url "$HOST_B_URL")
sockA=${HOST_A_URL#unix://}
sockB=${HOST_B_URL#unix://}
api=http://d/v4.0.0/libpod

field() { sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p"; }
boot_of() { "$@" cat /workload/status 2>/dev/null | field boot || true; }

# start URL NAME MIB: run the workload and wait until it counts.
start() {
	podman --url "$1" run -d --name "$2" "$TEST_IMAGE" /bin/workload -mem "$3" -sum-every 0 >/dev/null
	local c
	for _ in $(seq 900); do
		c=$(podman --url "$1" exec "$2" cat /workload/status 2>/dev/null | field counter || true)
		[[ -n $c && $c -ge 3 ]] && return 0
		sleep 0.2
	done
	echo "bench: $2 never started counting" >&2
	exit 1
}

# measure LABEL CMD...: run CMD under GNU time; its stdout goes to
# $state/LABEL.out; wall seconds and peak RSS (KiB) to secs[LABEL], rss[LABEL].
declare -A secs rss
measure() {
	local label=$1 tf s m
	shift
	tf=$(mktemp)
	if ! /usr/bin/time -f '%e %M' -o "$tf" "$@" >"$state/$label.out" 2>"$state/$label.log"; then
		cat "$state/$label.log" >&2
		echo "bench: $label failed" >&2
		exit 1
	fi
	read -r s m <"$tf"
	rm -f "$tf"
	secs[$label]=$s
	rss[$label]=$m
}

# same_process URL NAME BOOT: the restored process is the checkpointed one.
same_process() {
	local got
	for _ in $(seq 100); do
		got=$(boot_of podman --url "$1" exec "$2")
		[[ -n $got ]] && break
		sleep 0.1
	done
	[[ $got == "$3" ]] || {
		echo "bench: $2 on $1 is not the checkpointed process (boot $got, want $3)" >&2
		exit 1
	}
}

registry_bytes() { du -sb "$state/registry-data" | cut -f1; }
json() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(d[sys.argv[2]].get(sys.argv[3], 0))' "$@"; }
add() { awk -v a="${1:-0}" -v b="${2:-0}" 'BEGIN { printf "%.2f", a + b }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }'; }
maxrss() {
	local m=0 v
	for v in "$@"; do ((v > m)) && m=$v; done
	mib "$m"
}

# neutralise.py IN OUT: blank config.dump's host paths, as podman-migrate
# does (HOST-NOTES: restore on another host fails on them).
cat >"$state/neutralise.py" <<'EOF'
import io, json, sys, tarfile
fields = ["conmonPidFile", "pid_file", "ShmDir", "staticDir", "secretsPath", "logPath"]
with tarfile.open(sys.argv[1], "r|") as src, tarfile.open(sys.argv[2], "w|") as dst:
    for m in src:
        if m.name.lstrip("./") == "config.dump":
            cfg = json.load(src.extractfile(m))
            for f in fields:
                cfg.pop(f, None)
            cfg["mounts"] = [x for x in cfg.get("mounts") or [] if not x.endswith("/userdata/shm")]
            b = json.dumps(cfg).encode()
            m.size = len(b)
            dst.addfile(m, io.BytesIO(b))
        elif m.isfile():
            dst.addfile(m, src.extractfile(m))
        else:
            dst.addfile(m)
EOF

printf '\nmachine: %s cores, kernel %s; podman %s on A and B; one container per run, half its memory random\n' \
	"$(nproc)" "$(uname -r)" "$("${A[@]}" version --format '{{.Server.Version}}')"

for size in $sizes; do
	# --- podman-migrate
	name=bench-pm-$size
	start "$HOST_A_URL" "$name" "$size"
	boot=$(boot_of "${A[@]}" exec "$name")
	before=$(registry_bytes)
	measure pm-push "$bin" --url "$HOST_A_URL" push --format json --tls-verify=false "$name" "$REGISTRY/bench/pm:$size"
	ref=$(python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(d["reference"] + "@" + d["digest"])' "$state/pm-push.out")
	measure pm-pull "$bin" --url "$HOST_B_URL" pull --format json --tls-verify=false "$ref"
	same_process "$HOST_B_URL" "$name" "$boot"
	pm_bytes=$(($(registry_bytes) - before))
	p=$state/pm-push.out q=$state/pm-pull.out
	pm_total=$(add "${secs[pm-push]}" "${secs[pm-pull]}")
	"${A[@]}" rm -f "$name" >/dev/null
	"${B[@]}" rm -f "$name" >/dev/null

	# --- floor
	name=bench-floor-$size
	start "$HOST_A_URL" "$name" "$size"
	boot=$(boot_of "${A[@]}" exec "$name")
	measure fl-export curl -sf --unix-socket "$sockA" -X POST -o "$state/floor.tar" \
		"$api/containers/$name/checkpoint?export=true&keep=true"
	measure fl-neutralise python3 "$state/neutralise.py" "$state/floor.tar" "$state/floor-neutral.tar"
	measure fl-import curl -sf --unix-socket "$sockB" -X POST -H 'Content-Type: application/x-tar' \
		-T "$state/floor-neutral.tar" "$api/containers/import/restore?import=true"
	same_process "$HOST_B_URL" "$name" "$boot"
	fl_total=$(add "$(add "${secs[fl-export]}" "${secs[fl-neutralise]}")" "${secs[fl-import]}")
	rm -f "$state/floor.tar" "$state/floor-neutral.tar"
	"${A[@]}" rm -f "$name" >/dev/null
	"${B[@]}" rm -f "$name" >/dev/null

	# --- native
	name=bench-native-$size
	nref=$REGISTRY/bench/native:$size
	start "$HOST_A_URL" "$name" "$size"
	boot=$(boot_of "${A[@]}" exec "$name")
	before=$(registry_bytes)
	measure nat-checkpoint "${A[@]}" container checkpoint --create-image "$nref" "$name"
	measure nat-push "${A[@]}" push --tls-verify=false "$nref"
	nat_bytes=$(($(registry_bytes) - before))
	"${A[@]}" rm -f "$name" >/dev/null
	"${A[@]}" rmi -f "$nref" >/dev/null
	measure nat-pull "${A[@]}" pull --tls-verify=false "$nref"
	measure nat-restore "${A[@]}" container restore "$nref"
	same_process "$HOST_A_URL" "$name" "$boot"
	nat_total=$(add "$(add "${secs[nat-checkpoint]}" "${secs[nat-push]}")" "$(add "${secs[nat-pull]}" "${secs[nat-restore]}")")
	"${A[@]}" rm -f "$name" >/dev/null
	"${A[@]}" rmi -f "$nref" >/dev/null

	printf '\n%s MiB of memory            %14s %10s %10s\n' "$size" podman-migrate floor native
	row() { printf '  %-30s %14s %10s %10s\n' "$@"; }
	row "total seconds (downtime)" "$pm_total" "$fl_total" "$nat_total"
	row "  checkpoint" "$(json "$p" seconds checkpoint)" "${secs[fl-export]}" "${secs[nat-checkpoint]}"
	row "  convert / compress" "$(json "$p" seconds build)" "${secs[fl-neutralise]}" "-"
	row "  upload" "$(json "$p" seconds upload)" "-" "${secs[nat-push]}"
	row "  download (plan + fetch)" "$(add "$(json "$q" seconds plan)" "$(json "$q" seconds fetch)")" "-" "${secs[nat-pull]}"
	row "  verify" "$(json "$q" seconds verify)" "-" "-"
	row "  podman restore" "$(json "$q" seconds restore)" "${secs[fl-import]}" "${secs[nat-restore]}"
	row "registry MiB" "$(mib $((pm_bytes / 1024)))" "0" "$(mib $((nat_bytes / 1024)))"
	row "client peak RSS MiB" "$(maxrss "${rss[pm-push]}" "${rss[pm-pull]}")" \
		"$(maxrss "${rss[fl-export]}" "${rss[fl-neutralise]}" "${rss[fl-import]}")" \
		"$(maxrss "${rss[nat-checkpoint]}" "${rss[nat-push]}" "${rss[nat-pull]}" "${rss[nat-restore]}")"
	row "ratio to the floor" "$(ratio "$pm_total" "$fl_total")" "1.00" "$(ratio "$nat_total" "$fl_total")"
	row "ratio to native" "$(ratio "$pm_total" "$nat_total")" "$(ratio "$fl_total" "$nat_total")" "1.00"
done
