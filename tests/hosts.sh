#!/usr/bin/env bash
# hosts.sh: start and stop the test "hosts" of podman-migrate on this machine.
#
#   tests/hosts.sh up STATE_DIR       start registry, hosts A, B and C
#   tests/hosts.sh down STATE_DIR     stop them and remove their data (logs stay)
#   tests/hosts.sh status STATE_DIR   exit 0 and print STATE_DIR/env if all are up
#
# Needs root and a host prepared by contrib/setup-host.sh. HOSTS_TIMEOUT
# (seconds, default 60) bounds each wait; HOSTS_LOG_LEVEL (default info) is
# the services' --log-level. Logs: STATE_DIR/registry.log, a/service.log,
# b/service.log, c/service.log (kept by `down`).
#
# After `up`, STATE_DIR/env (shell) and STATE_DIR/env.json (flat JSON) hold:
#   REGISTRY      127.0.0.1:PORT, a docker-registry over plain HTTP (tls-verify=false)
#   HOST_A_URL    unix://STATE_DIR/a/podman.sock, podman service on this machine's
#                 own storage (/var/lib/containers/storage)
#   HOST_B_URL    unix://STATE_DIR/b/run/podman.sock, podman service in its own
#                 mount namespace: private storage, /run/containers, /run/libpod,
#                 /run/runc, /run/netns, /dev/shm, /var/tmp, /etc/containers (a copy
#                 of A's whose storage.conf moves the graph root to
#                 /var/lib/containers/storage-hostb and the run root to
#                 /run/containers/storage-hostb; A's graph root is hidden) and
#                 /etc/containers/networks
#   HOST_B_PID    `nsenter -t $HOST_B_PID -m podman ...` runs podman as host B
#   HOST_C_URL    unix://STATE_DIR/c/run/podman.sock, podman 5 from the Debian trixie
#                 root file system setup-host.sh builds (/var/lib/podman-migrate/hostc),
#                 run after pivot_root in its own mount namespace, with its own
#                 storage (STATE_DIR/c/storage) and /etc/containers (STATE_DIR/c/etc:
#                 the root file system's, plus this script's containers.conf: runc by
#                 default (crun has CRIU too), cgroupfs, ulimits 1024, and a default
#                 network podman5 on 10.90.0.0/16)
#   HOST_C_PID    `nsenter -t $HOST_C_PID -m podman ...` runs C's own podman
#   TEST_IMAGE    localhost/podman-migrate-test:latest, same image ID on A, B and C
#   TEST_IMAGE_ID, HOST_A_PID, REGISTRY_PID, HOST_A_DATA (a directory that
#   exists for host A only, as a bind-mount source), STATE_DIR
#
# All hosts share this machine's network namespace (A and B the podman0
# bridge and 10.88.0.0/16, C its podman5 bridge): the registry on 127.0.0.1
# is reachable from all.
set -euo pipefail

SCRIPT=$(readlink -f "${BASH_SOURCE[0]}")
readonly SCRIPT
readonly SERVICE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
readonly TEST_IMAGE=localhost/podman-migrate-test:latest
readonly BASE_DIR=/var/lib/podman-migrate
readonly BASE_IMAGE_TAR=$BASE_DIR/testbase-image.tar
readonly TIMEOUT=${HOSTS_TIMEOUT:-60}
readonly LOG_LEVEL=${HOSTS_LOG_LEVEL:-info}
# Paths that host B gets its own copy of (tmpfs or a bind of STATE_DIR/b/NAME).
readonly B_PRIVATE=(/etc/containers /var/lib/containers/storage /var/lib/containers/storage-hostb /var/lib/containers/cache
	/etc/containers/networks /run/containers /run/libpod /run/runc /run/netns
	/dev/shm /var/tmp)
# Host B's run root: not A's /run/containers/storage (see b_init).
readonly B_RUNROOT=/run/containers/storage-hostb
# Host B's graph root: not A's path either, so its volume directory
# (GRAPHROOT/volumes) differs from A's as it does between real hosts.
readonly B_GRAPHROOT=/var/lib/containers/storage-hostb
readonly C_ROOT=$BASE_DIR/hostc
# Written last by setup-host.sh: C's root file system is complete.
readonly C_STAMP=$C_ROOT/.podman-migrate-stamp
# Host C's socket as its service sees it (its /run/podman is STATE_DIR/c/run).
readonly C_SOCK_ARG=unix:///run/podman/podman.sock
PROBE=$(dirname "$SCRIPT")/../contrib/criu-probe.sh
PROBE=$(readlink -f "$PROBE")
readonly PROBE
export PATH="$SERVICE_PATH${PATH:+:$PATH}"

log() { printf 'hosts: %s\n' "$*" >&2; }
warn() { printf 'hosts: WARNING: %s\n' "$*" >&2; }
die() {
	printf 'hosts: ERROR: %s\n' "$*" >&2
	exit 1
}
usage() {
	sed -n '2,11p' "$SCRIPT" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

# tail_log FILE: the end of a log file, for error messages.
tail_log() {
	[[ -s $1 ]] || return 0
	printf '\n--- last lines of %s ---\n' "$1"
	tail -n 15 "$1"
	printf -- '---'
}

# abs_state DIR: the absolute path of a state directory, refusing places
# that host B's mounts would hide from it.
abs_state() {
	local d p
	[[ -n ${1:-} ]] || usage
	d=$(realpath -m -- "$1")
	[[ $d != / ]] || die "STATE_DIR must not be /"
	for p in "${B_PRIVATE[@]}"; do
		if [[ $d == "$p" || $d == "$p"/* ]]; then
			die "STATE_DIR $d is under $p, which host B gets a private copy of"
		fi
	done
	printf '%s\n' "$d"
}

# cmdline PID: the command line of a process, NULs as spaces.
cmdline() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" || true; }

# live_pid FILE PATTERN: the PID recorded in FILE if that process still
# runs and its command line contains PATTERN (guards against PID reuse).
live_pid() {
	local pid
	[[ -s $1 ]] || return 1
	pid=$(<"$1")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[[ $(cmdline "$pid") == *"$2"* ]] || return 1
	printf '%s\n' "$pid"
}

# spawn PIDFILE LOGFILE CMD...: run CMD detached in a session of its own; its
# exact PID goes to PIDFILE (sh records itself, then execs CMD).
spawn() {
	local pidfile=$1 logfile=$2 i
	shift 2
	rm -f "$pidfile"
	# shellcheck disable=SC2016 # expanded by that sh
	setsid sh -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 9>&- &
	for ((i = 0; i < 100; i++)); do
		[[ -s $pidfile ]] && return 0
		sleep 0.05
	done
	die "could not start $1 (no PID recorded)"
}

ping_sock() {
	[[ $(curl -sf --max-time 2 --unix-socket "$1" http://d/_ping 2>/dev/null) == OK ]]
}

# wait_ready WHAT PID LOG CHECK...: wait until CHECK succeeds while PID lives.
wait_ready() {
	local what=$1 pid=$2 logfile=$3 deadline=$((SECONDS + TIMEOUT))
	shift 3
	until "$@"; do
		if [[ ! -d /proc/$pid ]]; then
			die "$what exited during start-up (log: $logfile)$(tail_log "$logfile")"
		fi
		if ((SECONDS >= deadline)); then
			die "$what not ready after ${TIMEOUT}s (log: $logfile)$(tail_log "$logfile")"
		fi
		sleep 0.1
	done
}

# stop_pids PID NAME [PID NAME]...: SIGTERM to all at once (podman takes
# 1-2 s to shut down), then SIGKILL to whatever is left after 10 s.
stop_pids() {
	local -A name=()
	local pid i
	local -a left
	while (($# >= 2)); do
		name[$1]=$2
		kill -TERM "$1" 2>/dev/null || true
		shift 2
	done
	for ((i = 0; i < 200; i++)); do
		left=()
		for pid in "${!name[@]}"; do [[ -d /proc/$pid ]] && left+=("$pid"); done
		((${#left[@]} > 0)) || break
		if ((i == 100)); then
			warn "still running 10 s after SIGTERM, killing: ${left[*]}"
			kill -KILL "${left[@]}" 2>/dev/null || true
		fi
		sleep 0.1
	done
	for pid in "${!name[@]}"; do
		if [[ -d /proc/$pid ]]; then
			warn "${name[$pid]} (pid $pid) still there after SIGKILL"
		else
			log "stopped ${name[$pid]} (pid $pid)"
		fi
	done
}

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null ||
		echo $((20000 + RANDOM % 30000))
}

# b_podman STATE ARGS...: podman as host B (its mount namespace, local CLI).
b_podman() {
	local state=$1 pid
	shift
	pid=$(<"$state/b/pid")
	nsenter -t "$pid" -m -- env PATH="$SERVICE_PATH" podman "$@"
}

# ---------------------------------------------------------------------- up

start_registry() {
	local state=$1 port attempt pid
	mkdir -p "$state/registry-data"
	for attempt in 1 2 3 4 5; do
		port=$(free_port)
		cat >"$state/registry.yml" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $state/registry-data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
EOF
		spawn "$state/registry.pid" "$state/registry.log" docker-registry serve "$state/registry.yml"
		pid=$(<"$state/registry.pid")
		local deadline=$((SECONDS + TIMEOUT))
		while [[ -d /proc/$pid ]] && ((SECONDS < deadline)); do
			if curl -sf --max-time 2 "http://127.0.0.1:$port/v2/" >/dev/null; then
				REGISTRY_PORT=$port
				log "registry: 127.0.0.1:$port (pid $pid, data $state/registry-data)"
				return 0
			fi
			sleep 0.1
		done
		if [[ -d /proc/$pid ]]; then
			die "registry not answering on 127.0.0.1:$port after ${TIMEOUT}s (log: $state/registry.log)$(tail_log "$state/registry.log")"
		fi
		if grep -q 'address already in use' "$state/registry.log"; then
			warn "port $port taken (attempt $attempt), trying another"
			continue
		fi
		die "registry exited during start-up (log: $state/registry.log)$(tail_log "$state/registry.log")"
	done
	die "no free port for the registry (log: $state/registry.log)"
}

start_host_a() {
	local state=$1 pid sock=$1/a/podman.sock
	rm -f "$sock"
	spawn "$state/a/pid" "$state/a/service.log" \
		env PATH="$SERVICE_PATH" podman --log-level="$LOG_LEVEL" system service --time=0 "unix://$sock"
	pid=$(<"$state/a/pid")
	wait_ready "host A podman service" "$pid" "$state/a/service.log" ping_sock "$sock"
	log "host A: unix://$sock (pid $pid, storage /var/lib/containers/storage)"
	probe_criu "host A" "$pid"
}

# Runs inside host B's new mount namespace (via unshare), then becomes
# host B's podman service, keeping the PID that `up` recorded.
b_init() {
	local state=$1 d
	mount --make-rprivate /
	for d in etc storage empty cache networks vartmp; do
		[[ -d $state/b/$d ]] || die "missing $state/b/$d"
	done
	# B is configured apart from A, as a second host may be: its own
	# /etc/containers (a copy of A's) whose storage.conf puts the run root
	# elsewhere. Sharing A's default run root would hide the cross-host bug
	# of podman 4.3.1 that HOST-NOTES describes: podman clears config.dump's
	# pid file paths only when they lie under its own run root.
	cp -a /etc/containers/. "$state/b/etc/"
	cat >"$state/b/etc/storage.conf" <<-EOF
		[storage]
		driver = "overlay"
		graphroot = "$B_GRAPHROOT"
		runroot = "$B_RUNROOT"
	EOF
	mount --bind "$state/b/etc" /etc/containers
	mount --bind "$state/b/storage" "$B_GRAPHROOT"
	# A's graph root stays hidden from B: an empty directory in its place.
	mount --bind "$state/b/empty" /var/lib/containers/storage
	mount --bind "$state/b/cache" /var/lib/containers/cache
	mount --bind "$state/b/networks" /etc/containers/networks
	mount -t tmpfs -o mode=0700 tmpfs /run/containers
	mount -t tmpfs -o mode=0700 tmpfs /run/libpod
	mount -t tmpfs -o mode=0700 tmpfs /run/runc
	mount -t tmpfs -o mode=0755 tmpfs /run/netns
	mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
	mount --bind "$state/b/vartmp" /var/tmp
	log "host B: mount namespace $(readlink /proc/self/ns/mnt) ready, starting podman"
	exec env PATH="$SERVICE_PATH" podman --log-level="$LOG_LEVEL" system service --time=0 \
		"unix://$state/b/run/podman.sock"
}

# check_isolation STATE: every private path must be another file in B than
# in A, and nothing of host A's runroot may show through.
check_isolation() {
	local state=$1 p a b out ids=()
	[[ $(readlink "/proc/$(<"$state/b/pid")/ns/mnt") != "$(readlink /proc/self/ns/mnt)" ]] ||
		die "host B runs in host A's mount namespace"
	for p in "${B_PRIVATE[@]}"; do
		a=$(stat -c '%d:%i' "$p")
		b=$(nsenter -t "$(<"$state/b/pid")" -m -- stat -c '%d:%i' "$p")
		[[ $a != "$b" ]] || die "isolation check: $p is the same directory on host A and host B ($a)"
	done
	if [[ -d /run/containers/storage/overlay-containers ]]; then
		mapfile -t ids < <(find /run/containers/storage/overlay-containers -mindepth 1 -maxdepth 1 -type d -printf '%f\n')
	fi
	if ((${#ids[@]} > 0)); then
		# shellcheck disable=SC2016 # expanded by that sh
		out=$(nsenter -t "$(<"$state/b/pid")" -m -- sh -c \
			'for id; do [ -e "/run/containers/storage/overlay-containers/$id" ] && echo "$id"; done; true' sh "${ids[@]}")
		[[ -z $out ]] || die "isolation check: host B sees host A's runroot entries: $out"
	fi
	[[ $(b_podman "$state" info --format '{{.Store.RunRoot}}') == "$B_RUNROOT" ]] ||
		die "isolation check: host B's run root is not $B_RUNROOT"
	[[ $(b_podman "$state" info --format '{{.Store.GraphRoot}}') == "$B_GRAPHROOT" ]] ||
		die "isolation check: host B's graph root is not $B_GRAPHROOT"
	nsenter -t "$(<"$state/b/pid")" -m -- test ! -e "$(a_data "$state")" ||
		die "isolation check: host B sees host A's data directory $(a_data "$state")"
	log "isolation check OK: ${#B_PRIVATE[@]} paths differ between A and B (${B_PRIVATE[*]}); B sees none of A's ${#ids[@]} runroot container dirs"
}

start_host_b() {
	local state=$1 pid sock=$1/b/run/podman.sock p
	# Mount points must exist in the shared tree before B mounts over them.
	for p in "${B_PRIVATE[@]}"; do mkdir -p "$p"; done
	rm -f "$sock"
	spawn "$state/b/pid" "$state/b/service.log" \
		unshare --mount --propagation private -- "$SCRIPT" _b-init "$state"
	pid=$(<"$state/b/pid")
	wait_ready "host B podman service" "$pid" "$state/b/service.log" ping_sock "$sock"
	readlink "/proc/$pid/ns/mnt" >"$state/b/mntns"
	log "host B: unix://$sock (pid $pid, $(<"$state/b/mntns"), storage $state/b/storage)"
	check_isolation "$state"

	local want got
	want=$(podman image inspect --format '{{.Id}}' "$TEST_IMAGE") ||
		die "$TEST_IMAGE missing on host A: run contrib/setup-host.sh"
	log "host B: loading $BASE_IMAGE_TAR"
	b_podman "$state" load -q -i "$BASE_IMAGE_TAR" >>"$state/b/service.log" 2>&1 ||
		die "podman load on host B failed (log: $state/b/service.log)$(tail_log "$state/b/service.log")"
	got=$(b_podman "$state" images --format '{{.Repository}}:{{.Tag}} {{.ID}}' --noheading --no-trunc |
		awk -v img="$TEST_IMAGE" '$1 == img { print $2 }')
	got=${got#sha256:}
	[[ -n $got ]] || die "host B does not list $TEST_IMAGE after podman load"
	[[ $got == "$want" ]] ||
		die "$TEST_IMAGE has ID $got on host B but $want on host A: run contrib/setup-host.sh (it re-saves $BASE_IMAGE_TAR)"
	TEST_IMAGE_ID=$want
	log "host B: $TEST_IMAGE loaded, same ID as on A (${want:0:12})"

	probe_criu "host B" "$pid"
}

# probe_criu WHAT PID: a real dump and restore of a throwaway process with
# the criu that host's runtime runs (its mount namespace and PATH), each
# step bounded (contrib/criu-probe.sh); a host that cannot checkpoint stops
# `up` here, in seconds, rather than hanging a test.
probe_criu() {
	local what=$1 pid=$2 out rc=0 err
	err=$(mktemp)
	# Only stdio: a descriptor opened outside that host's mount namespace
	# (the lock, bash's saved ones) fails the dump ("Can't lookup mount").
	out=$(
		for fd in /proc/"$BASHPID"/fd/*; do
			fd=${fd##*/}
			((fd > 2)) && eval "exec $fd>&-"
		done
		exec nsenter -t "$pid" -m -- /usr/bin/env -i PATH="$SERVICE_PATH" PROBE_TIMEOUT="${PROBE_TIMEOUT:-20}" \
			/bin/sh -s criu <"$PROBE" 2>"$err"
	) || rc=$?
	if [[ $rc -ne 0 ]]; then
		cat "$err" >&2
		rm -f "$err"
		die "$what cannot checkpoint: ${out:-criu probe exited $rc} (run contrib/setup-host.sh)"
	fi
	rm -f "$err"
	log "$what: $out ($(nsenter -t "$pid" -m -- env PATH="$SERVICE_PATH" sh -c 'command -v criu'))"
}

# Runs inside host C's new mount namespace (via unshare): a trixie root file
# system entered with pivot_root (under chroot, criu check fails with "mnt: No
# parent found for mountpoint"), then C's own podman 5 service.
c_init() {
	local state=$1 r=$C_ROOT
	mount --make-rprivate /
	mount --bind "$r" "$r"
	mount -t proc proc "$r/proc"
	mount --rbind /sys "$r/sys"
	# crun here refuses cgroup v1 with the v2 hierarchy beside it ("cgroups
	# in hybrid mode not supported"): C does not see the latter.
	if mountpoint -q "$r/sys/fs/cgroup/unified"; then umount -l "$r/sys/fs/cgroup/unified"; fi
	mount --rbind /dev "$r/dev"
	mount -t tmpfs -o mode=0755 tmpfs "$r/run"
	mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$r/dev/shm"
	mount -t tmpfs -o mode=1777 tmpfs "$r/tmp"
	mkdir -p "$r/run/podman" "$r/var/lib/containers/storage"
	mount --bind "$state/c/run" "$r/run/podman"
	mount --bind "$state/c/etc" "$r/etc/containers"
	mount --bind "$state/c/storage" "$r/var/lib/containers/storage"
	mount --bind "$state/c/vartmp" "$r/var/tmp"
	cd "$r"
	mkdir -p .oldroot
	pivot_root . .oldroot
	log "host C: mount namespace $(readlink /proc/self/ns/mnt) ready, starting podman 5"
	# shellcheck disable=SC2016 # expanded by that sh
	# /usr/local/sbin first: setup-host.sh puts the criu wrapper there (CRIU
	# >= 4.2 in a private prefix), ahead of trixie's /usr/sbin/criu (4.1).
	exec /usr/bin/env -i PATH="$SERVICE_PATH" HOME=/root LOG_LEVEL="$LOG_LEVEL" \
		/bin/sh -c 'umount -l /.oldroot && exec podman --log-level="$LOG_LEVEL" system service --time=0 "$0"' "$C_SOCK_ARG"
}

# c_config STATE: host C's /etc/containers for this run: the root file
# system's, plus the settings host A has (runc, ulimits the machine allows),
# cgroupfs (no systemd inside), file events (no journald), and a default
# network apart from A's podman0 on 10.88.0.0/16 (they share the machine's
# network namespace).
c_config() {
	local etc=$1/c/etc
	cp -a "$C_ROOT/etc/containers/." "$etc/"
	cat >"$etc/containers.conf" <<-EOF
		[containers]
		default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

		[engine]
		runtime = "runc"
		cgroup_manager = "cgroupfs"
		events_logger = "file"

		[network]
		network_backend = "netavark"
	EOF
	rm -rf "$etc/networks"
	mkdir -p "$etc/networks"
	# podman 5 wants an id and a creation time in a network file.
	cat >"$etc/networks/podman.json" <<-EOF
		{"name": "podman", "id": "0e5f3cdb9d1a65293ac07278de554f6ccc3ceb61674ad4cc1794255b509097ca",
		 "driver": "bridge", "network_interface": "podman5", "created": "2026-01-01T00:00:00Z",
		 "subnets": [{"subnet": "10.90.0.0/16", "gateway": "10.90.0.1"}],
		 "ipv6_enabled": false, "internal": false, "dns_enabled": false,
		 "ipam_options": {"driver": "host-local"}}
	EOF
}

start_host_c() {
	local state=$1 pid sock=$1/c/run/podman.sock want got t0=$SECONDS
	rm -f "$sock"
	c_config "$state"
	spawn "$state/c/pid" "$state/c/service.log" \
		unshare --mount --propagation private -- "$SCRIPT" _c-init "$state"
	pid=$(<"$state/c/pid")
	wait_ready "host C podman service" "$pid" "$state/c/service.log" ping_sock "$sock"
	readlink "/proc/$pid/ns/mnt" >"$state/c/mntns"
	want=$(podman image inspect --format '{{.Id}}' "$TEST_IMAGE")
	podman --url "unix://$sock" load -q -i "$BASE_IMAGE_TAR" >>"$state/c/service.log" 2>&1 ||
		die "podman load on host C failed (log: $state/c/service.log)$(tail_log "$state/c/service.log")"
	got=$(podman --url "unix://$sock" image inspect --format '{{.Id}}' "$TEST_IMAGE" 2>/dev/null) || true
	[[ $got == "$want" ]] || die "$TEST_IMAGE has ID '$got' on host C but $want on host A"
	probe_criu "host C" "$pid"
	log "host C: unix://$sock (pid $pid, podman $(podman --url "unix://$sock" version --format '{{.Server.Version}}'), $TEST_IMAGE loaded, same ID as on A; up in $((SECONDS - t0))s)"
}

# a_data STATE: host A's bind-mount source. It lives in A's /var/tmp, which
# host B has its own copy of, so the path does not exist on B, as on a real
# second host.
a_data() {
	printf '/var/tmp/podman-migrate-a-data-%s\n' "$(printf '%s' "$1" | sha256sum | cut -c1-12)"
}

json_str() {
	local s=$1
	s=${s//\\/\\\\}
	s=${s//\"/\\\"}
	printf '"%s"' "$s"
}

write_env() {
	local state=$1 k sep=""
	local -a keys=(REGISTRY HOST_A_URL HOST_B_URL HOST_B_PID HOST_C_URL HOST_C_PID TEST_IMAGE TEST_IMAGE_ID
		HOST_A_PID REGISTRY_PID HOST_A_DATA STATE_DIR)
	local -A v=(
		[REGISTRY]="127.0.0.1:$REGISTRY_PORT"
		[HOST_A_URL]="unix://$state/a/podman.sock"
		[HOST_B_URL]="unix://$state/b/run/podman.sock"
		[HOST_B_PID]="$(<"$state/b/pid")"
		[HOST_C_URL]="unix://$state/c/run/podman.sock"
		[HOST_C_PID]="$(<"$state/c/pid")"
		[TEST_IMAGE]="$TEST_IMAGE"
		[TEST_IMAGE_ID]="$TEST_IMAGE_ID"
		[HOST_A_PID]="$(<"$state/a/pid")"
		[REGISTRY_PID]="$(<"$state/registry.pid")"
		[HOST_A_DATA]="$(a_data "$state")"
		[STATE_DIR]="$state"
	)
	{
		for k in "${keys[@]}"; do printf '%s=%q\n' "$k" "${v[$k]}"; done
	} >"$state/env.tmp"
	{
		printf '{'
		for k in "${keys[@]}"; do
			printf '%s\n  %s: %s' "$sep" "$(json_str "$k")" "$(json_str "${v[$k]}")"
			sep=","
		done
		printf '\n}\n'
	} >"$state/env.json.tmp"
	mv -f "$state/env.json.tmp" "$state/env.json"
	mv -f "$state/env.tmp" "$state/env"
}

# is_up STATE: all three services alive and answering.
is_up() {
	local state=$1 port
	[[ -s $state/env ]] || return 1
	live_pid "$state/registry.pid" "$state/registry.yml" >/dev/null || return 1
	live_pid "$state/a/pid" "unix://$state/a/podman.sock" >/dev/null || return 1
	live_pid "$state/b/pid" "unix://$state/b/run/podman.sock" >/dev/null || return 1
	live_pid "$state/c/pid" "$C_SOCK_ARG" >/dev/null || return 1
	ping_sock "$state/c/run/podman.sock" || return 1
	port=$(sed -n 's/^REGISTRY=127\.0\.0\.1://p' "$state/env")
	curl -sf --max-time 2 "http://127.0.0.1:$port/v2/" >/dev/null || return 1
	ping_sock "$state/a/podman.sock" && ping_sock "$state/b/run/podman.sock"
}

preflight() {
	local c
	[[ $(id -u) -eq 0 ]] || die "must run as root"
	for c in podman docker-registry curl unshare nsenter findmnt setsid criu; do
		command -v "$c" >/dev/null || die "$c not found: run contrib/setup-host.sh"
	done
	[[ -f $BASE_IMAGE_TAR ]] || die "$BASE_IMAGE_TAR missing: run contrib/setup-host.sh"
	[[ -f $C_STAMP && -x $C_ROOT/usr/bin/podman ]] ||
		die "host C's root file system is not built ($C_STAMP missing): run contrib/setup-host.sh"
}

UP_STATE=""
up_failed() {
	local rc=$?
	[[ -n $UP_STATE ]] || exit "$rc"
	trap - EXIT
	printf 'hosts: up failed; cleaning up what it started (logs: %s/registry.log, %s/a/service.log, %s/b/service.log, %s/c/service.log)\n' \
		"$UP_STATE" "$UP_STATE" "$UP_STATE" "$UP_STATE" >&2
	do_down "$UP_STATE" || true
	exit 1
}

do_up() {
	local state=$1 t0=$SECONDS
	preflight
	mkdir -p "$state"
	if is_up "$state"; then
		log "already up in $state"
		return 0
	fi
	do_down "$state" quiet
	mkdir -p "$state"/{a,b/run,b/etc,b/storage,b/empty,b/cache,b/networks,b/vartmp,c/run,c/etc,c/storage,c/vartmp,registry-data} "$(a_data "$state")"
	chmod 700 "$state/c/storage"
	chmod 1777 "$state/c/vartmp"
	chmod 700 "$state/b/storage" "$state/b/empty" "$state/b/cache" "$state/b/networks"
	chmod 1777 "$state/b/vartmp"
	: >"$state/registry.log"
	: >"$state/a/service.log"
	: >"$state/b/service.log"
	: >"$state/c/service.log"
	UP_STATE=$state
	trap up_failed EXIT
	trap 'exit 1' INT TERM HUP
	start_registry "$state"
	start_host_a "$state"
	start_host_b "$state"
	start_host_c "$state"
	write_env "$state"
	UP_STATE=""
	trap - EXIT INT TERM HUP
	log "up in $((SECONDS - t0))s; environment in $state/env and $state/env.json:"
	sed 's/^/  /' "$state/env" >&2
}

# -------------------------------------------------------------------- down

# ppid_closure PID...: the PIDs given plus all their descendants.
ppid_closure() {
	cat /proc/[0-9]*/stat 2>/dev/null | awk -v seeds="$*" '
		BEGIN { n = split(seeds, s, " "); for (i = 1; i <= n; i++) in_[s[i]] = 1 }
		{ r = $0; sub(/^.*\) /, "", r); split(r, a, " "); parent[$1] = a[2] }
		END {
			do {
				ch = 0
				for (p in parent) if (!(p in in_) && (parent[p] in in_)) { in_[p] = 1; ch = 1 }
			} while (ch)
			for (p in in_) print p
		}'
}

# b_owns_pid STATE PID: the process's root is an overlay whose upper layer
# is in host B's storage.
b_owns_pid() {
	local layer
	layer=$(awk '$5 == "/" && / - overlay / && match($0, /upperdir=[^,]*\/diff/) {
		s = substr($0, RSTART, RLENGTH); sub(/\/diff$/, "", s); sub(/.*\//, "", s); print s; exit
	}' "/proc/$2/mountinfo" 2>/dev/null) || return 1
	[[ $layer =~ ^[0-9a-f]+$ && -d $1/b/storage/overlay/$layer ]]
}

# kill_b_leftovers STATE: whatever still runs of host B: processes in its
# mount namespace (conmon, podman) and their descendants (containers), and
# processes in the cgroups of B's containers.
kill_b_leftovers() {
	local state=$1 ns="" p pids=() ids=() id f
	[[ -s $state/b/mntns ]] && ns=$(<"$state/b/mntns")
	if [[ -n $ns ]]; then
		if [[ $ns == "$(readlink /proc/1/ns/mnt)" || $ns == "$(readlink /proc/self/ns/mnt)" ]]; then
			warn "recorded host B namespace $ns is the machine's own: not killing by namespace"
		else
			for p in /proc/[0-9]*; do
				[[ $(readlink "$p/ns/mnt" 2>/dev/null) == "$ns" ]] && pids+=("${p#/proc/}")
			done
		fi
	fi
	if [[ -f $state/b/storage/overlay-containers/containers.json ]]; then
		mapfile -t ids < <(grep -o '"id":"[0-9a-f]\{64\}"' "$state/b/storage/overlay-containers/containers.json" |
			cut -d'"' -f4)
	fi
	# Both hosts share the machine's cgroup tree, and a container restored
	# with its ID keeps its cgroup path: take a process from such a cgroup
	# only if its root file system is a layer in B's storage.
	for id in "${ids[@]}"; do
		while IFS= read -r f; do
			while IFS= read -r p; do
				b_owns_pid "$state" "$p" && pids+=("$p")
			done <"$f"
		done < <(find /sys/fs/cgroup -maxdepth 5 -type f -name cgroup.procs -path "*$id*" 2>/dev/null)
	done
	((${#pids[@]} > 0)) || return 0
	mapfile -t pids < <(ppid_closure "${pids[@]}")
	log "killing ${#pids[@]} leftover host B processes: ${pids[*]}"
	kill -KILL "${pids[@]}" 2>/dev/null || true
	for ((p = 0; p < 50; p++)); do
		local alive=0
		for f in "${pids[@]}"; do [[ -d /proc/$f ]] && alive=1; done
		((alive)) || break
		sleep 0.1
	done
	# Empty cgroups that B's podman would have removed.
	for id in "${ids[@]}"; do
		find /sys/fs/cgroup -maxdepth 5 -depth -type d -name "*$id*" -exec rmdir {} + 2>/dev/null || true
	done
}

# kill_ns_leftovers MNTNS_FILE WHAT: kill what still runs in a host's mount
# namespace (conmon and, below it, the containers) once its service is gone.
kill_ns_leftovers() {
	local ns="" p pids=()
	[[ -s $1 ]] && ns=$(<"$1")
	[[ -n $ns && $ns != "$(readlink /proc/1/ns/mnt)" && $ns != "$(readlink /proc/self/ns/mnt)" ]] || return 0
	for p in /proc/[0-9]*; do
		[[ $(readlink "$p/ns/mnt" 2>/dev/null) == "$ns" ]] && pids+=("${p#/proc/}")
	done
	((${#pids[@]} > 0)) || return 0
	mapfile -t pids < <(ppid_closure "${pids[@]}")
	log "killing ${#pids[@]} leftover $2 processes: ${pids[*]}"
	kill -KILL "${pids[@]}" 2>/dev/null || true
	sleep 0.5
}

# kill_orphan_conmons: podman 4.3.1 leaves the conmon of every exec session
# waiting --exit-delay (300 s) after the session ended, even once its
# container is removed; hundreds pile up during a test run. Those whose
# container no longer exists in host A's storage go.
kill_orphan_conmons() {
	local p args id pids=()
	for p in /proc/[0-9]*; do
		[[ $(cat "$p/comm" 2>/dev/null) == conmon ]] || continue
		args=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
		[[ $args == *" --exit-delay "* && $args =~ -c\ ([0-9a-f]{64}) ]] || continue
		id=${BASH_REMATCH[1]}
		[[ -d /var/lib/containers/storage/overlay-containers/$id ]] || pids+=("${p#/proc/}")
	done
	((${#pids[@]} > 0)) || return 0
	log "killing ${#pids[@]} exec-session conmons of removed containers"
	kill -KILL "${pids[@]}" 2>/dev/null || true
}

# prune_cgroup_copies: on this machine's hybrid cgroup hierarchy, CRIU
# dumps every cgroup below a task's cgroup in the unified (v2) hierarchy,
# and restores them below the new container's. Containers runc 1.1.5
# leaves in podman's /libpod_parent there carry its whole subtree along,
# so every restore copies the copies: measured, 835 000 empty directories
# after a day of runs, which CRIU then walked for minutes per dump (host
# C's checkpoint check timed out). The copies hold no process; they go.
prune_cgroup_copies() {
	local root=/sys/fs/cgroup/unified/libpod_parent d n=0
	[[ -d $root ]] || return 0
	while IFS= read -r -d '' d; do
		rmdir "$d" 2>/dev/null && n=$((n + 1))
	done < <(find "$root" -mindepth 2 -depth -type d -print0 2>/dev/null)
	((n == 0)) || log "removed $n empty cgroups that CRIU's restores copied under $root"
}

do_down() {
	local state=$1 quiet=${2:-} pid m
	if [[ ! -d $state ]]; then
		[[ -n $quiet ]] || log "nothing in $state"
		return 0
	fi
	rm -f "$state/env" "$state/env.json"
	# The e2e tier's link to B (links_test.go), after an interrupted run.
	ip netns del pme2e-b 2>/dev/null || true

	# Host B: remove its containers through its own podman (tears down their
	# networks properly), then stop all services, then kill whatever is left
	# in B's namespace.
	local stop=()
	if pid=$(live_pid "$state/b/pid" "$state/b/run/podman.sock"); then
		if ping_sock "$state/b/run/podman.sock"; then
			timeout 60 nsenter -t "$pid" -m -- env PATH="$SERVICE_PATH" podman rm -af -t 0 \
				>>"$state/b/service.log" 2>&1 || warn "podman rm -af on host B failed (log: $state/b/service.log)"
		fi
		stop+=("$pid" "host B podman service")
	elif pid=$(live_pid "$state/b/pid" "_b-init $state"); then
		stop+=("$pid" "host B start-up")
	fi
	if pid=$(live_pid "$state/c/pid" "$C_SOCK_ARG"); then
		if ping_sock "$state/c/run/podman.sock"; then
			timeout 60 podman --url "unix://$state/c/run/podman.sock" rm -af -t 0 \
				>>"$state/c/service.log" 2>&1 || warn "podman rm -af on host C failed (log: $state/c/service.log)"
		fi
		stop+=("$pid" "host C podman service")
	elif pid=$(live_pid "$state/c/pid" "_c-init $state"); then
		stop+=("$pid" "host C start-up")
	fi
	if pid=$(live_pid "$state/a/pid" "unix://$state/a/podman.sock"); then
		# A is this machine's own storage: only the containers the tests,
		# benches and check name go, so that an interrupted run leaves
		# none to collide with the next.
		if ping_sock "$state/a/podman.sock"; then
			local left
			left=$(timeout 30 podman --url "unix://$state/a/podman.sock" ps -a --format '{{.Names}}' 2>/dev/null |
				grep -E '^(e2e|bench|podman-migrate-check)-' || true)
			if [[ -n $left ]]; then
				# shellcheck disable=SC2086 # one name per word
				timeout 60 podman --url "unix://$state/a/podman.sock" rm -f -t 0 $left >>"$state/a/service.log" 2>&1 ||
					warn "removing the tests' containers on host A failed (log: $state/a/service.log)"
			fi
		fi
		stop+=("$pid" "host A podman service")
	fi
	if pid=$(live_pid "$state/registry.pid" "$state/registry.yml"); then
		stop+=("$pid" "registry")
	fi
	((${#stop[@]} == 0)) || stop_pids "${stop[@]}"
	kill_b_leftovers "$state"
	kill_ns_leftovers "$state/c/mntns" "host C"
	kill_orphan_conmons
	prune_cgroup_copies

	# Nothing of B's should be mounted here (its mounts lived in its own
	# namespace), but never rm -rf through a mount.
	while IFS= read -r m; do
		[[ -n $m ]] || continue
		warn "unmounting leftover $m"
		umount -R "$m" 2>/dev/null || umount -l "$m" || true
	done < <(findmnt -rn -o TARGET | awk -v s="$state/" 'index($0, s) == 1' | sort -r)
	if findmnt -rn -o TARGET | awk -v s="$state/" 'index($0, s) == 1 { found = 1 } END { exit !found }'; then
		die "mounts remain under $state; not removing its data"
	fi

	rm -rf --one-file-system -- "$state/c/run" "$state/c/etc" "$state/c/storage" "$state/c/vartmp" "$state/b/etc" "$state/b/storage" "$state/b/empty" "$state/b/cache" "$state/b/networks" "$state/b/vartmp" \
		"$state/b/run" "$state/registry-data" "$(a_data "$state")"
	rm -f -- "$state/a/podman.sock" "$state/a/pid" "$state/b/pid" "$state/b/mntns" "$state/c/pid" "$state/c/mntns" \
		"$state/registry.pid" "$state/registry.yml" "$state/env.tmp" "$state/env.json.tmp"
	[[ -n $quiet ]] || log "down: $state cleaned (logs kept)"
}

# -------------------------------------------------------------------- main

cmd=${1:-}
case $cmd in
up | down | status)
	[[ $# -eq 2 ]] || usage
	state=$(abs_state "$2")
	if [[ $cmd != up && ! -d $state ]]; then
		log "nothing in $state"
		[[ $cmd == down ]]
		exit
	fi
	mkdir -p "$state"
	# One up/down at a time per STATE_DIR; services get the lock fd closed.
	exec 9>"$state/.lock"
	flock 9
	case $cmd in
	up) do_up "$state" ;;
	down) do_down "$state" ;;
	status)
		if is_up "$state"; then cat "$state/env"; else
			log "not up in $state"
			exit 1
		fi
		;;
	esac
	;;
_b-init)
	[[ $# -eq 2 ]] || usage
	b_init "$2"
	;;
_c-init)
	[[ $# -eq 2 ]] || usage
	c_init "$2"
	;;
*) usage ;;
esac
