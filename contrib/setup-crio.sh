#!/usr/bin/env bash
# setup-crio.sh: build CRI-O, its pinns helper and crictl for the CRI-O tier
# of the end-to-end tests (tests/crio.sh, tests/e2e/crio_test.go), as root.
#
#   contrib/setup-crio.sh           build what is missing (idempotent)
#   contrib/setup-crio.sh --check   verify only; non-zero exit says what is missing
#
# CRI-O is packaged neither by Debian nor by the Go module proxy: it is
# built from the source tarball in the shared third-party folder
# ($PODMAN_MIGRATE_SHARED/third_party, else ../shared/third_party next to
# the repository) into
# /var/lib/podman-migrate/crio/bin, outside the repository. The stamp
# records the tarball's SHA-256 and this recipe: a re-run with the same
# source builds nothing. crictl comes from the Go module proxy.
#
# Without the source (a user's own clone) it prints a line starting with
# "SKIP:" and the reason, and exits 0: the CRI-O tier then skips too.
set -euo pipefail

readonly CRIO_VERSION=1.36.3
readonly CRICTL_VERSION=v1.37.0
readonly CACHE=/var/lib/podman-migrate/crio
readonly BIN=$CACHE/bin
readonly STAMP=$CACHE/stamp
# Bump when the build below changes, to force a rebuild.
readonly RECIPE=1
readonly BUILD_TAGS="containers_image_ostree_stub containers_image_openpgp exclude_graphdriver_btrfs btrfs_noversion exclude_graphdriver_devicemapper seccomp libsqlite3"
# The build's, and the CNI plugins tests/crio.sh's pods use (loopback).
readonly APT_PACKAGES=(libseccomp-dev libsqlite3-dev gcc make libc6-dev containernetworking-plugins)

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
export PATH="/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
export DEBIAN_FRONTEND=noninteractive
# The vendored tree and the local Go are all the build needs.
export GOTOOLCHAIN=local GOFLAGS=-mod=vendor

log() { printf 'setup-crio: %s\n' "$*" >&2; }
die() {
	printf 'setup-crio: ERROR: %s\n' "$*" >&2
	exit 1
}

CHECK_ONLY=0
case ${1:-} in
--check) CHECK_ONLY=1 ;;
"") ;;
*)
	sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac

# source_tarball: the CRI-O source, or nothing.
source_tarball() {
	local d
	for d in ${PODMAN_MIGRATE_SHARED:+"$PODMAN_MIGRATE_SHARED"} "$REPO_ROOT/../shared"; do
		if [[ -f $d/third_party/cri-o-$CRIO_VERSION.tar.xz ]]; then
			realpath "$d/third_party/cri-o-$CRIO_VERSION.tar.xz"
			return 0
		fi
	done
}

TARBALL=$(source_tarball)
if [[ -z $TARBALL ]]; then
	echo "SKIP: no CRI-O source (third_party/cri-o-$CRIO_VERSION.tar.xz under \$PODMAN_MIGRATE_SHARED or $(realpath -m "$REPO_ROOT/../shared")): the CRI-O tier will not run"
	exit 0
fi
[[ $(id -u) -eq 0 ]] || die "needs root (apt-get, $CACHE)"

want_stamp() {
	printf 'recipe %s\nsource %s\ngo %s\n' "$RECIPE" "$(sha256sum "$TARBALL" | cut -d' ' -f1)" "$(go env GOVERSION)"
}

crio_current() {
	[[ -x $BIN/crio && -x $BIN/pinns && -s $STAMP ]] && [[ $(<"$STAMP") == "$(want_stamp)" ]]
}

# go install leaves crictl's version "unknown": a file records it.
crictl_current() {
	[[ -x $BIN/crictl && -s $CACHE/crictl.version && $(<"$CACHE/crictl.version") == "$CRICTL_VERSION" ]]
}

if ((CHECK_ONLY)); then
	missing=()
	crio_current || missing+=("CRI-O $CRIO_VERSION in $BIN (built from $TARBALL)")
	crictl_current || missing+=("crictl $CRICTL_VERSION in $BIN")
	if ((${#missing[@]})); then
		printf 'setup-crio: missing: %s\n' "${missing[@]}" >&2
		exit 1
	fi
	log "ready: $("$BIN/crio" --version 2>/dev/null | head -n 1), crictl $CRICTL_VERSION in $BIN"
	exit 0
fi

ensure_packages() {
	local p need=()
	for p in "${APT_PACKAGES[@]}"; do
		dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need+=("$p")
	done
	((${#need[@]})) || return 0
	log "installing ${need[*]}"
	apt-get update -qq >&2
	apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
}

build_crio() {
	local work t0=$SECONDS
	mkdir -p "$CACHE"
	work=$(mktemp -d "$CACHE/build.XXXXXX")
	# shellcheck disable=SC2064 # expand now: the path is fixed
	trap "rm -rf '$work'" EXIT
	log "building CRI-O $CRIO_VERSION from $TARBALL (about 90 s on 2 cores)"
	tar -xJf "$TARBALL" -C "$work" --strip-components=1
	(
		cd "$work"
		go build -tags "$BUILD_TAGS" -ldflags "-s -w" -o bin/crio ./cmd/crio
		make -s -C pinns
	) >&2 || die "building CRI-O failed"
	mkdir -p "$BIN"
	install -m 0755 "$work/bin/crio" "$BIN/crio.new"
	install -m 0755 "$work/bin/pinns" "$BIN/pinns"
	mv "$BIN/crio.new" "$BIN/crio"
	want_stamp >"$STAMP"
	rm -rf "$work"
	trap - EXIT
	log "built CRI-O in $((SECONDS - t0))s"
}

install_crictl() {
	log "installing crictl $CRICTL_VERSION"
	mkdir -p "$BIN"
	GOFLAGS='' GOBIN=$BIN go install "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION" >&2 ||
		die "go install sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION failed"
	echo "$CRICTL_VERSION" >"$CACHE/crictl.version"
}

ensure_packages
crio_current || build_crio
crictl_current || install_crictl
log "ready: CRI-O $CRIO_VERSION, pinns, crictl $CRICTL_VERSION in $BIN"
