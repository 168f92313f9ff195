#!/usr/bin/env bash
# crio.sh: start and stop a CRI-O of its own on this machine, for the CRI-O
# tier of the end-to-end tests.
#
#   tests/crio.sh up STATE_DIR [REGISTRY...]   start CRI-O; REGISTRY (host:port) is
#                                              reached over plain HTTP
#   tests/crio.sh down STATE_DIR               stop it and remove its storage (logs stay)
#
# Needs root and the binaries contrib/setup-crio.sh builds
# (/var/lib/podman-migrate/crio/bin). CRI-O runs in its own mount namespace
# (private propagation: its overlay and namespace mounts stay there), with
# runc, cgroupfs, CRIU support, and storage, run root, sockets and state
# all under STATE_DIR. No global signature_policy: CRI-O refuses every
# restore from a checkpoint image when one is set. Registries come from
# --registries-conf and --registries-conf-dir (CRI-O ignores
# CONTAINERS_REGISTRIES_CONF). Pods get a network namespace with loopback
# only (CNI's loopback plugin, Debian's containernetworking-plugins), or the
# host network.
#
# CRIO_ENABLE_CRIU=false starts it with checkpoint/restore off.
# CRIO_CRIU_CONF=LINES gives its runc an /etc/criu/runc.conf of LINES.
#
# After `up`, STATE_DIR/env (shell) holds CRIO_SOCK (unix://...), CRICTL
# (the crictl binary), CRICTL_CONFIG (a crictl.yaml for that socket),
# CRIO_PID. Log: STATE_DIR/crio.log.
set -euo pipefail

SCRIPT=$(readlink -f "${BASH_SOURCE[0]}")
readonly SCRIPT
readonly BIN=/var/lib/podman-migrate/crio/bin
readonly CNI_PLUGINS=/usr/lib/cni
readonly PAUSE_IMAGE=localhost/podman-migrate-pause:latest
readonly TIMEOUT=${CRIO_TIMEOUT:-60}
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

log() { printf 'crio: %s\n' "$*" >&2; }
die() {
	printf 'crio: ERROR: %s\n' "$*" >&2
	exit 1
}
usage() {
	sed -n '2,8p' "$SCRIPT" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

abs_state() {
	[[ -n ${1:-} ]] || usage
	local d
	d=$(realpath -m -- "$1")
	[[ $d != / ]] || die "STATE_DIR must not be /"
	printf '%s\n' "$d"
}

# live_pid FILE: the PID in FILE if that process is still our crio.
live_pid() {
	local pid
	[[ -s $1 ]] || return 1
	pid=$(<"$1")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$BIN/crio " || return 1
	printf '%s\n' "$pid"
}

write_config() {
	local s=$1 r
	shift
	mkdir -p "$s"/{root,runroot,run,exits,attach,ns,logs,hooks,cni,registries.conf.d,runc}
	cat >"$s/crio.conf" <<EOF
[crio]
root = "$s/root"
runroot = "$s/runroot"
storage_driver = "overlay"
log_dir = "$s/logs"
version_file = "$s/run/version"
version_file_persist = "$s/version"
clean_shutdown_file = "$s/clean.shutdown"

[crio.api]
listen = "$s/crio.sock"

[crio.runtime]
default_runtime = "runc"
cgroup_manager = "cgroupfs"
conmon_cgroup = "pod"
enable_criu_support = ${CRIO_ENABLE_CRIU:-true}
drop_infra_ctr = true
# runc cannot raise rlimits here (no CAP_SYS_RESOURCE): see HOST-NOTES.
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
pinns_path = "$BIN/pinns"
namespaces_dir = "$s/ns"
container_exits_dir = "$s/exits"
container_attach_socket_dir = "$s/attach"
hooks_dir = ["$s/hooks"]

[crio.runtime.runtimes.runc]
runtime_path = "$(command -v runc)"
runtime_type = "oci"
runtime_root = "$s/runc"
monitor_path = "$(command -v conmon)"
monitor_cgroup = "pod"

[crio.image]
pause_image = "$PAUSE_IMAGE"
short_name_mode = "disabled"

[crio.network]
network_dir = "$s/cni"
plugin_dirs = ["$CNI_PLUGINS"]

[crio.nri]
enable_nri = false
EOF
	# A pod network of loopback only: the pod gets a network namespace
	# of its own, which a checkpoint of a podman container on a bridge
	# needs (CRIU restores into an external network namespace), and
	# nothing leaves the machine.
	cat >"$s/cni/10-loopback.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "podman-migrate-lo", "plugins": [{"type": "loopback"}]}
EOF
	: >"$s/registries.conf"
	for r in "$@"; do
		printf '[[registry]]\nlocation = "%s"\ninsecure = true\n\n' "$r" >>"$s/registries.conf"
	done
	cat >"$s/crictl.yaml" <<EOF
runtime-endpoint: unix://$s/crio.sock
image-endpoint: unix://$s/crio.sock
timeout: 120
EOF
}

# pause_image STATE: CRI-O wants its pause image present even when it
# runs no infra container; nothing can be pulled from the internet, so a
# one-file image is made here and copied into CRI-O's storage. It shares
# nothing with the test image, whose presence would hide a base image CRI-O
# failed to pull.
pause_image() {
	local s=$1 d layer cfg man ls cs ms
	d=$(mktemp -d "$s/pause.XXXXXX")
	mkdir -p "$d/root" "$d/oci/blobs/sha256"
	printf '#!/bin/sh\nexec sleep infinity\n' >"$d/root/pause"
	chmod 0755 "$d/root/pause"
	tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$d/layer.tar" -C "$d/root" pause
	layer=$(sha256sum "$d/layer.tar" | cut -d' ' -f1)
	ls=$(stat -c %s "$d/layer.tar")
	mv "$d/layer.tar" "$d/oci/blobs/sha256/$layer"
	printf '{"architecture":"%s","os":"linux","config":{"Entrypoint":["/pause"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
		"$(go_arch)" "$layer" >"$d/config.json"
	cfg=$(sha256sum "$d/config.json" | cut -d' ' -f1)
	cs=$(stat -c %s "$d/config.json")
	mv "$d/config.json" "$d/oci/blobs/sha256/$cfg"
	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
		"$cfg" "$cs" "$layer" "$ls" >"$d/manifest.json"
	man=$(sha256sum "$d/manifest.json" | cut -d' ' -f1)
	ms=$(stat -c %s "$d/manifest.json")
	mv "$d/manifest.json" "$d/oci/blobs/sha256/$man"
	printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' \
		"$man" "$ms" >"$d/oci/index.json"
	printf '{"imageLayoutVersion":"1.0.0"}' >"$d/oci/oci-layout"
	skopeo copy --quiet "oci:$d/oci:latest" "containers-storage:[overlay@$s/root+$s/runroot]$PAUSE_IMAGE" >&2 ||
		die "copying the pause image into CRI-O's storage failed"
	rm -rf "$d"
}

go_arch() {
	case $(uname -m) in
	x86_64) echo amd64 ;;
	aarch64) echo arm64 ;;
	*) uname -m ;;
	esac
}

up() {
	local s pid deadline
	s=$(abs_state "${1:-}")
	shift
	[[ $(id -u) -eq 0 ]] || die "needs root"
	[[ -x $BIN/crio && -x $BIN/crictl && -x $BIN/pinns && -x $CNI_PLUGINS/loopback ]] ||
		die "no CRI-O in $BIN or no CNI loopback plugin in $CNI_PLUGINS: run contrib/setup-crio.sh"
	if pid=$(live_pid "$s/crio.pid"); then
		die "CRI-O already runs for $s (pid $pid)"
	fi
	write_config "$s" "$@"
	pause_image "$s"
	rm -f "$s/crio.sock" "$s/crio.pid"
	# Its own mount namespace: CRI-O's overlay and namespace mounts stay
	# out of the host's (and host B's) view.
	# shellcheck disable=SC2016 # expanded by that sh
	# CRIO_CRIU_CONF: the node's /etc/criu/runc.conf (the CRIU configuration
	# file runc hands CRIU), on a tmpfs in that namespace only; the
	# directory is made, empty, on the host to mount it on.
	if [[ -n ${CRIO_CRIU_CONF:-} ]]; then
		mkdir -p /etc/criu
	fi
	# shellcheck disable=SC2016 # $$, $0 and the variables are the inner shell's
	setsid unshare --mount --propagation private sh -c 'echo $$ >"$0"
		if [ -n "${CRIO_CRIU_CONF:-}" ]; then
			mount -t tmpfs -o mode=0755 tmpfs /etc/criu && printf "%s\n" "$CRIO_CRIU_CONF" >/etc/criu/runc.conf || exit 1
		fi
		exec "$@"' "$s/crio.pid" \
		"$BIN/crio" --config "$s/crio.conf" --config-dir "$s/crio.conf.d" \
		--registries-conf "$s/registries.conf" --registries-conf-dir "$s/registries.conf.d" \
		--log-level "${CRIO_LOG_LEVEL:-info}" \
		</dev/null >>"$s/crio.log" 2>&1 &
	deadline=$((SECONDS + TIMEOUT))
	until [[ -S $s/crio.sock ]] && "$BIN/crictl" --config "$s/crictl.yaml" version >/dev/null 2>&1; do
		if ((SECONDS >= deadline)); then
			tail -n 20 "$s/crio.log" >&2 || true
			die "CRI-O not ready after ${TIMEOUT}s (log: $s/crio.log)"
		fi
		if [[ -s $s/crio.pid ]] && [[ ! -d /proc/$(<"$s/crio.pid") ]]; then
			tail -n 20 "$s/crio.log" >&2 || true
			die "CRI-O exited during start-up (log: $s/crio.log)"
		fi
		sleep 0.2
	done
	cat >"$s/env" <<EOF
CRIO_SOCK=unix://$s/crio.sock
CRICTL=$BIN/crictl
CRICTL_CONFIG=$s/crictl.yaml
CRIO_PID=$(<"$s/crio.pid")
STATE_DIR=$s
EOF
	log "CRI-O $("$BIN/crio" --version 2>/dev/null | head -n 1 | awk '{print $3}') up: $s/crio.sock"
}

down() {
	local s pid i
	s=$(abs_state "${1:-}")
	if pid=$(live_pid "$s/crio.pid"); then
		# Pods first, so conmon and the containers go too.
		"$BIN/crictl" --config "$s/crictl.yaml" rmp -fa >/dev/null 2>&1 || true
		kill "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			[[ -d /proc/$pid ]] || break
			sleep 0.1
		done
		[[ ! -d /proc/$pid ]] || kill -9 "$pid" 2>/dev/null || true
	fi
	# The mounts lived in CRI-O's namespace and went with it; whatever a
	# crash left behind is unmounted before the data goes.
	if [[ -d $s ]]; then
		grep -F " $s/" /proc/self/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
		rm -rf --one-file-system "$s/root" "$s/runroot" "$s/run" "$s/ns" "$s/runc" "$s/exits" "$s/attach"
		rm -f "$s/crio.sock" "$s/crio.pid" "$s/env"
	fi
	log "down: $s"
}

case ${1:-} in
up)
	shift
	up "$@"
	;;
down)
	shift
	down "$@"
	;;
*) usage ;;
esac
