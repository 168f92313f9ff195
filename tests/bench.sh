#!/usr/bin/env bash
# bench.sh: downtime of one migrated container, three ways, side by side,
# for each size in BENCH_SIZES (MiB of memory the workload holds, half
# random; default "256 1024"), each path on a fresh container:
#
#   podman-migrate  push on A to the local registry, pull on isolated B;
#                   phases from their --format json
#   floor           podman's API export on A (uncompressed), config.dump's
#                   host paths removed in place, restore with import on B:
#                   no registry, no compression, nothing verified
#   native          podman container checkpoint --create-image, podman push,
#                   then (container and local image removed) podman pull and
#                   podman container restore, all on A: podman 4.3.1 cannot
#                   restore it on isolated B (HOST-NOTES)
#
# Downtime is the wall time of the commands (GNU time), push + pull. Peak
# RSS is the clients' (GNU time's %M), not the podman services'.
# A benchmark: it prints figures and fails only when a migration fails
# (the process on the target must be the one checkpointed), never on a time.
#   flock /tmp/pm-e2e.lock make bench      BENCH_SIZES="512" make bench
# BENCH_STATE (default /tmp/podman-migrate-bench) holds the hosts and logs.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
state=${BENCH_STATE:-/tmp/podman-migrate-bench}
bin=$repo/bin/podman-migrate
sizes=${BENCH_SIZES:-256 1024}
read -r -a push_flags <<<"${BENCH_PUSH_FLAGS:-}"

# shellcheck source=tests/bench-lib.sh
source "$repo/tests/bench-lib.sh"
for size in $sizes; do
	[[ $size =~ ^[1-9][0-9]*$ ]] || die "BENCH_SIZES: $size is not a number of MiB"
done
[[ -x $bin ]] || die "$bin is missing: make build"
[[ -x /usr/bin/time ]] || die "GNU time (/usr/bin/time) is missing: apt-get install time"

bash "$repo/tests/hosts.sh" up "$state" >&2
# shellcheck source=/dev/null
source "$state/env"
A=(podman --url "$HOST_A_URL")
B=(podman --url "$HOST_B_URL")
sockA=${HOST_A_URL#unix://}
sockB=${HOST_B_URL#unix://}
api=http://d/v4.0.0/libpod

# clean_a: remove what the bench made on A, which is this machine's own
# storage (B's goes with its host); nothing else.
clean_a() {
	local n i
	for n in $("${A[@]}" ps -a --format '{{.Names}}' 2>/dev/null); do
		[[ $n == bench-* ]] && "${A[@]}" rm -f -t 0 "$n" >/dev/null 2>&1
	done
	for i in $("${A[@]}" images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null); do
		[[ $i == "$REGISTRY"/bench/* ]] && "${A[@]}" rmi -f "$i" >/dev/null 2>&1
	done
	rm -f "$state/floor.tar"
	return 0
}
cleanup() {
	clean_a
	bash "$repo/tests/hosts.sh" down "$state" >&2
}
trap cleanup EXIT
write_neutralise

# same_process URL NAME BOOT: the restored process is the checkpointed one.
same_process() {
	local got=
	for _ in $(seq 100); do
		got=$(boot_of podman --url "$1" exec "$2")
		[[ -n $got ]] && break
		sleep 0.1
	done
	[[ $got == "$3" ]] || die "$2 on $1 is not the checkpointed process (boot ${got:-none}, want $3)"
}

# registry_bytes: what the registry stores, in bytes.
registry_bytes() { find "$state/registry-data" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d", s }'; }
# rsslist LABEL...: each command's peak RSS in MiB, "a/b/c".
rsslist() {
	local out='' l
	for l in "$@"; do out+=${out:+/}$(kib2mib "${rss[$l]}"); done
	printf '%s' "$out"
}

# load_json PREFIX FILE: the seconds and bytes of podman-migrate's
# --format json into js[PREFIX.seconds.KEY], js[PREFIX.bytes.KEY].
declare -A js
load_json() {
	local k v
	while read -r k v; do
		js[$1.$k]=$v
	done < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
for s in ("seconds", "bytes"):
    for k, v in (d.get(s) or {}).items():
        print(s + "." + k, v)
print("ref", d.get("reference", "") + "@" + d.get("digest", ""))
' "$2")
}
# val KEY: js[KEY], or "n/a" (awk reads it as 0 in sums); sec KEY: the
# same in seconds to 1/100, as GNU time gives them.
val() { printf '%s' "${js[$1]:-n/a}"; }
sec() { [[ -n ${js[$1]-} ]] && sum "${js[$1]}" || printf 'n/a'; }
# need KEY...: note the keys podman-migrate's JSON lacks; the bench reports them.
missing=()
need() {
	local k
	for k in "$@"; do
		[[ -n ${js[$k]-} || " ${missing[*]} " == *" $k "* ]] || missing+=("$k")
	done
}

printf '\nmachine: %s cores (%s), %s MiB RAM, kernel %s\n' "$(nproc)" \
	"$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)" \
	"$(awk '/^MemTotal/ { printf "%.0f", $2 / 1024 }' /proc/meminfo)" "$(uname -r)"
printf 'software: podman %s on A and B, %s, %s, podman-migrate %s\n' \
	"$("${A[@]}" version --format '{{.Server.Version}}')" \
	"$(criu --version 2>/dev/null | sed -n 's/^Version: /CRIU /p')" \
	"$(runc --version 2>/dev/null | head -1)" \
	"$("$bin" version 2>/dev/null | sed -n 's/^ *Version: *//p')"
cat <<'EOF'
workload: /bin/workload -mem SIZE -sum-every 0, half its memory random; one fresh container per path
phases: podman-migrate's come from push/pull --format json, "other" is the rest of
  their wall time (start-up, preflight, cleanup); floor: export, neutralise, import;
  native: checkpoint --create-image, push, pull, restore. Downtime = wall time of all.
EOF

declare -a summary
for size in $sizes; do
	# --- podman-migrate: push on A, pull on B
	name=bench-pm-$size
	start "$name" "$size"
	boot=$(boot_of "${A[@]}" exec "$name")
	before=$(registry_bytes)
	measure pm-push "$bin" --url "$HOST_A_URL" push --format json --tls-verify=false "${push_flags[@]}" "$name" "$REGISTRY/bench/pm:$size"
	load_json push "$state/pm-push.out"
	measure pm-pull "$bin" --url "$HOST_B_URL" pull --format json --tls-verify=false "${js[push.ref]}"
	load_json pull "$state/pm-pull.out"
	same_process "$HOST_B_URL" "$name" "$boot"
	pm_reg=$(($(registry_bytes) - before))
	pm_total=$(sum "${secs[pm-push]}" "${secs[pm-pull]}")
	need push.seconds.{checkpoint,build,upload,total} push.bytes.{archive,image} pull.seconds.{plan,restore,total}
	pm_ck=$(sec push.seconds.checkpoint) pm_build=$(sec push.seconds.build) pm_up=$(sec push.seconds.upload)
	# A streamed pull fetches and verifies during the restore: no phases of their own.
	pm_plan=$(sec pull.seconds.plan) pm_fetch=$(sec pull.seconds.fetch) pm_verify=$(sec pull.seconds.verify)
	[[ $pm_fetch != n/a ]] || pm_fetch=- pm_verify=-
	pm_restore=$(sec pull.seconds.restore) pm_archive=$(val push.bytes.archive) pm_image=$(val push.bytes.image)
	pm_other=$(sub "$pm_total" "$(sum "$pm_ck" "$pm_build" "$pm_up" "$pm_plan" "${pm_fetch/-/0}" "${pm_verify/-/0}" "$pm_restore")")
	"${A[@]}" rm -f "$name" >/dev/null
	"${B[@]}" rm -f "$name" >/dev/null

	# --- floor: API export on A, neutralised, API import on B
	name=bench-floor-$size
	start "$name" "$size"
	boot=$(boot_of "${A[@]}" exec "$name")
	measure fl-export curl -sS --fail-with-body --unix-socket "$sockA" -X POST -o "$state/floor.tar" \
		"$api/containers/$name/checkpoint?export=true&keep=true"
	fl_archive=$(stat -c %s "$state/floor.tar")
	measure fl-neutralise python3 "$state/neutralise.py" "$state/floor.tar"
	measure fl-import curl -sS --fail-with-body --unix-socket "$sockB" -X POST -H 'Content-Type: application/x-tar' \
		-H 'Expect:' -T "$state/floor.tar" "$api/containers/import/restore?import=true"
	same_process "$HOST_B_URL" "$name" "$boot"
	fl_total=$(sum "${secs[fl-export]}" "${secs[fl-neutralise]}" "${secs[fl-import]}")
	rm -f "$state/floor.tar"
	"${A[@]}" rm -f "$name" >/dev/null
	"${B[@]}" rm -f "$name" >/dev/null

	# --- native: podman's own checkpoint image, through the registry, on A
	name=bench-native-$size
	nref=$REGISTRY/bench/native:$size
	start "$name" "$size"
	boot=$(boot_of "${A[@]}" exec "$name")
	before=$(registry_bytes)
	measure nat-checkpoint "${A[@]}" container checkpoint --create-image "$nref" "$name"
	nat_archive=$("${A[@]}" image inspect --format '{{.Size}}' "$nref")
	measure nat-push "${A[@]}" push --tls-verify=false "$nref"
	nat_reg=$(($(registry_bytes) - before))
	"${A[@]}" rm -f "$name" >/dev/null
	"${A[@]}" rmi -f "$nref" >/dev/null
	measure nat-pull "${A[@]}" pull --tls-verify=false "$nref"
	measure nat-restore "${A[@]}" container restore "$nref"
	same_process "$HOST_A_URL" "$name" "$boot"
	nat_total=$(sum "${secs[nat-checkpoint]}" "${secs[nat-push]}" "${secs[nat-pull]}" "${secs[nat-restore]}")
	"${A[@]}" rm -f "$name" >/dev/null
	"${A[@]}" rmi -f "$nref" >/dev/null
	clean_a

	printf '\n%s MiB held by the workload (%s MiB random)\n' "$size" $((size / 2))
	row() { printf '  %-38s %15s %12s %14s\n' "$@"; }
	row "" podman-migrate floor native
	row "downtime, seconds" "$pm_total" "$fl_total" "$nat_total"
	row "  checkpoint | export | ckpt+image" "$pm_ck" "${secs[fl-export]}" "${secs[nat-checkpoint]}"
	row "  read export, compress | neutralise" "$pm_build" "${secs[fl-neutralise]}" -
	row "  upload | - | push" "$pm_up" - "${secs[nat-push]}"
	row "  plan (pull's preflight)" "$pm_plan" - -
	row "  download | - | pull" "$pm_fetch" - "${secs[nat-pull]}"
	row "  verify" "$pm_verify" - -
	row "  (download,) restore | import | restore" "$pm_restore" "${secs[fl-import]}" "${secs[nat-restore]}"
	row "  other (start-up, preflight, cleanup)" "$pm_other" - -
	row "push | - | ckpt+push, seconds" "${secs[pm-push]}" - "$(sum "${secs[nat-checkpoint]}" "${secs[nat-push]}")"
	row "pull | - | pull+restore, seconds" "${secs[pm-pull]}" - "$(sum "${secs[nat-pull]}" "${secs[nat-restore]}")"
	row "podman's export | tar | image, MiB" "$(mib "$pm_archive")" "$(mib "$fl_archive")" "$(mib "$nat_archive")"
	row "image as stored (compressed), MiB" "$(mib "$pm_image")" - -
	row "registry growth, MiB" "$(mib "$pm_reg")" 0 "$(mib "$nat_reg")"
	row "client peak RSS MiB, per command" "$(rsslist pm-push pm-pull)" "$(rsslist fl-export fl-neutralise fl-import)" \
		"$(rsslist nat-checkpoint nat-push nat-pull nat-restore)"
	row "ratio to the floor" "$(ratio "$pm_total" "$fl_total")" 1.00 "$(ratio "$nat_total" "$fl_total")"
	row "ratio to native" "$(ratio "$pm_total" "$nat_total")" "$(ratio "$fl_total" "$nat_total")" 1.00
	summary+=("$(printf '  %6s MiB %10s %8s %8s %12s %12s' "$size" "$pm_total" "$fl_total" "$nat_total" \
		"$(ratio "$pm_total" "$fl_total")" "$(ratio "$pm_total" "$nat_total")")")
done

printf '\nsummary, downtime in seconds\n  %10s %10s %8s %8s %12s %12s\n' memory pm floor native pm/floor pm/native
printf '%s\n' "${summary[@]}"
if ((${#missing[@]})); then
	printf '\nnot in podman-migrate'"'"'s --format json (shown n/a): %s\n' "${missing[*]}"
fi
