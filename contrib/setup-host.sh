#!/usr/bin/env bash
# setup-host.sh: prepare a Debian 12 (bookworm) machine, as root, to run and
# test podman-migrate. Idempotent: a second run checks and changes nothing.
#
#   contrib/setup-host.sh           install / repair what is missing
#   contrib/setup-host.sh --check   verify only; non-zero exit lists what is missing
#
# What it sets up (see shared HOST-NOTES for why):
#   - podman 4.3.1, runc, conmon, netavark, docker-registry, skopeo, buildah,
#     busybox-static from bookworm, installed --no-install-recommends (runc
#     recommends bookworm's CRIU 3.17, which fails on kernels >= 6.13);
#   - CRIU >= 4.2 from the newest Debian suite that has it (forky, else
#     sid), unpacked with that suite's own glibc into /opt/podman-migrate/criu
#     and run through /usr/local/sbin/criu; nothing from those suites is
#     installed into the system. CRIU 4.1 hangs in every dump on VM guests
#     whose hardware breakpoints never fire, and cannot dump inet sockets on
#     kernels >= 6.16; 4.2 copes with both. Where no suite has 4.2, trixie's
#     4.1.x is used with CRIU_FAULT=130 set in the wrapper (podman passes the
#     runtime no environment of its own, so it cannot be set on the service).
#     PODMAN_MIGRATE_CRIU_SUITE=SUITE forces one suite. The same prefix and
#     wrapper go into host C's root, whose podman 5 runs them;
#   - a probe (contrib/criu-probe.sh): a throwaway process dumped and restored
#     through exactly the criu the runtime runs, on this host and inside host
#     C's root, each step under a timeout; set-up fails if it does not work;
#   - /etc/containers/containers.conf: runc as runtime, low default ulimits,
#     netavark as network backend (fresh storage, as host B's, would
#     otherwise probe bookworm's CNI example config);
#   - host C's root file system: Debian trixie (podman 5, runc, crun with
#     CRIU) made with debootstrap in /var/lib/podman-migrate/hostc,
#     for tests/hosts.sh to run as a third, podman 5 host; its stamp file
#     (the recipe and the packages' versions) makes a re-run skip it;
#   - the test image localhost/podman-migrate-test:latest (busybox plus the
#     tests/workload program as /bin/workload, the default command; it keeps
#     its status in /workload/status, a directory it creates), also kept as
#     /var/lib/podman-migrate/testbase.tar (rootfs) and testbase-image.tar
#     (podman save: `podman load` gives the same image ID).
#
# Everything it does is logged to stderr.
set -euo pipefail

readonly PREFIX=/opt/podman-migrate/criu
readonly WRAPPER=/usr/local/sbin/criu
readonly STATE=/var/lib/podman-migrate
readonly TEST_IMAGE=localhost/podman-migrate-test:latest
readonly CONTAINERS_CONF=/etc/containers/containers.conf
readonly SERVICE_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
readonly CRIU_MIN_VERSION=4.1
# CRIU 4.2 copes with hardware breakpoints that never fire (VM guests: 4.1
# hangs in every dump there) and dumps inet sockets on kernels >= 6.16.
readonly CRIU_WANT_VERSION=4.2
# Where to look for it, newest first; trixie (4.1.x) is the fallback.
readonly CRIU_SUITES=(forky sid trixie)
readonly KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
# Bump when the way the test image is built changes, to force a rebuild.
readonly TESTBASE_RECIPE=2

# Packages from bookworm. golang-github-containers-common ships
# registries.conf, policy.json and /usr/share/containers/containers.conf;
# catatonit serves `podman run --init`; curl and iproute2 are used by
# tests/hosts.sh; GNU time measures peak memory in tests/bench.sh; zstd
# compresses tests/bench-link.sh's zstd floor; the end-to-end tests run an
# sshd of their own for ssh:// (openssh-server's own service never starts:
# apt_install forbids it).
readonly APT_PACKAGES=(
	podman runc conmon golang-github-containers-common netavark aardvark-dns
	catatonit docker-registry busybox-static skopeo buildah uidmap
	slirp4netns iptables curl iproute2 util-linux ca-certificates time
	go-md2man systemd shellcheck debootstrap zstd openssh-client openssh-server
)
# Packages unpacked into $PREFIX: criu and the libraries it needs, with the
# suite's own glibc (ld.so --list is checked after unpacking). CRIU >= 4.2
# from the newest suite links libnet9 where trixie's 4.1 links libnet1.
readonly NEWEST_PACKAGES=(
	criu libcompel1 libc6 libgcc-s1 libgnutls30t64 libnftables1 libnl-3-200
	libprotobuf-c1 libnet9 libbsd0 libuuid1 libmd0 libnettle8t64
	libhogweed6t64 libgmp10 libidn2-0 libunistring5 libtasn1-6 libp11-kit0
	libffi8 libmnl0 libnftnl11 libjansson4 libxtables12 libedit2 libtinfo6
	libbrotli1 libzstd1 zlib1g
)
readonly TRIXIE_PACKAGES=(
	criu libcompel1 libc6 libgcc-s1 libgnutls30t64 libnftables1 libnl-3-200
	libprotobuf-c1 libnet1 libbsd0 libuuid1 libmd0 libnettle8t64
	libhogweed6t64 libgmp10 libidn2-0 libunistring5 libtasn1-6 libp11-kit0
	libffi8 libmnl0 libnftnl11 libjansson4 libxtables12 libedit2 libtinfo6
	libbrotli1 libzstd1 zlib1g
)

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly REPO_ROOT
export PATH="$SERVICE_PATH:/usr/local/go/bin${PATH:+:$PATH}"
export DEBIAN_FRONTEND=noninteractive

# Nothing here is a result: all output, apt's and podman's too, goes to stderr.
exec 1>&2

CHECK_ONLY=0
MISSING=()
CLEANUP=()
APT_UPDATED=0

log() { printf 'setup-host: %s\n' "$*" >&2; }
warn() { printf 'setup-host: WARNING: %s\n' "$*" >&2; }
die() {
	printf 'setup-host: ERROR: %s\n' "$*" >&2
	exit 1
}
missing() {
	MISSING+=("$*")
	log "missing: $*"
}
run() {
	log "+ $*"
	"$@"
}
cleanup() {
	local p
	for p in "${CLEANUP[@]}"; do
		rm -rf -- "$p"
	done
}
trap cleanup EXIT

usage() {
	sed -n '2,6p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
"") ;;
--check) CHECK_ONLY=1 ;;
-h | --help)
	usage
	exit 0
	;;
*)
	usage >&2
	exit 2
	;;
esac
[[ $(id -u) -eq 0 ]] || die "must run as root"

multiarch() {
	case "$(dpkg --print-architecture)" in
	amd64) echo x86_64-linux-gnu ld-linux-x86-64.so.2 ;;
	arm64) echo aarch64-linux-gnu ld-linux-aarch64.so.1 ;;
	*) die "unsupported architecture $(dpkg --print-architecture)" ;;
	esac
}
ARCH_INFO=$(multiarch)
read -r TRIPLET LDSO <<<"$ARCH_INFO"
readonly TRIPLET LDSO

apt_update_once() {
	if [[ $APT_UPDATED -eq 0 ]]; then
		run apt-get update -q
		APT_UPDATED=1
	fi
}

# apt_install PKG...: install without recommends, never starting services
# (docker-registry's init script would otherwise start a registry on :5000).
apt_install() {
	apt_update_once
	local policy=/usr/sbin/policy-rc.d
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		CLEANUP+=("$policy")
	fi
	run apt-get install -y -q --no-install-recommends "$@"
	if [[ ${#CLEANUP[@]} -gt 0 && ${CLEANUP[-1]} == "$policy" ]]; then
		rm -f "$policy"
		unset 'CLEANUP[-1]'
	fi
}

pkg_installed() {
	[[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) == installed ]]
}

# ---------------------------------------------------------------- packages
ensure_packages() {
	local p todo=()
	for p in "${APT_PACKAGES[@]}"; do
		pkg_installed "$p" || todo+=("$p")
	done
	if [[ ${#todo[@]} -eq 0 ]]; then
		log "bookworm packages: all installed"
		return
	fi
	if [[ $CHECK_ONLY -eq 1 ]]; then
		missing "packages: ${todo[*]}"
		return
	fi
	log "installing bookworm packages: ${todo[*]}"
	apt_install "${todo[@]}"
}

# Bookworm's criu 3.17 (pulled in by runc's Recommends) cannot dump on this
# kernel; if it is installed, divert its binary away so that no PATH order
# can pick it instead of the wrapper.
ensure_no_bookworm_criu() {
	if ! pkg_installed criu; then
		return
	fi
	if dpkg-divert --list /usr/sbin/criu | grep -q .; then
		log "bookworm criu: installed, /usr/sbin/criu already diverted"
		return
	fi
	if [[ $CHECK_ONLY -eq 1 ]]; then
		missing "bookworm's criu package is installed at /usr/sbin/criu (would be diverted to /usr/sbin/criu.bookworm)"
		return
	fi
	run dpkg-divert --local --rename --divert /usr/sbin/criu.bookworm --add /usr/sbin/criu
}

# -------------------------------------------------------------------- CRIU
# wrapper_text PREFIX FAULT: the criu wrapper for a CRIU unpacked in PREFIX.
# FAULT non-empty exports CRIU_FAULT=130 (no hardware breakpoints): podman
# runs the runtime's checkpoint with only PATH and XDG_RUNTIME_DIR in its
# environment, so the variable must be set here, where runc execs criu.
wrapper_text() {
	local prefix=$1 fault=$2
	cat <<EOF
#!/bin/sh
# Installed by podman-migrate contrib/setup-host.sh: CRIU from Debian's
# $(cat "$prefix/.podman-migrate-suite" 2>/dev/null || echo newest) suite, unpacked into $prefix and run with that
# suite's own glibc (bookworm's is too old for it). Only criu itself sees
# those libraries: the programs it starts (iptables, ip, ...) run with the
# host's.
EOF
	if [[ -n $fault ]]; then
		cat <<EOF
# CRIU < $CRIU_WANT_VERSION hangs forever in every dump on hosts whose hardware
# breakpoints never fire (VM guests); 130 makes it trace syscalls instead.
export CRIU_FAULT=130
EOF
	fi
	printf 'exec %s --library-path %s %s "$@"\n' \
		"$prefix/usr/lib/$TRIPLET/$LDSO" "$(prefix_libs "$prefix")" "$prefix/usr/sbin/criu"
}

prefix_libs() { printf '%s/usr/lib/%s:%s/lib/%s\n' "$1" "$TRIPLET" "$1" "$TRIPLET"; }

criu_version() { # prints e.g. 4.2.1, or nothing
	"${1:-$WRAPPER}" --version 2>/dev/null | sed -n 's/^Version: *//p' | head -n1
}

# prefix_version PREFIX: the version of the CRIU unpacked there, or nothing.
prefix_version() {
	local p=$1
	[[ -x $p/usr/sbin/criu && -x $p/usr/lib/$TRIPLET/$LDSO ]] || return 0
	"$p/usr/lib/$TRIPLET/$LDSO" --library-path "$(prefix_libs "$p")" "$p/usr/sbin/criu" --version 2>/dev/null |
		sed -n 's/^Version: *//p' | head -n1
}

# The Debian mirror, taken from the system's own apt sources at run time.
debian_mirror() {
	local uri=""
	if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
		# deb822: first stanza of Types: deb whose suites are not -security.
		uri=$(awk '
			function flush() {
				if (types ~ /(^| )deb( |$)/ && suites !~ /-security/ && uris != "" && out == "") {
					split(uris, u, " "); out = u[1]
				}
				types = suites = uris = ""
			}
			/^[[:space:]]*$/ { flush(); next }
			/^[[:space:]]*#/ { next }
			tolower($1) == "types:"  { $1 = ""; types = $0 }
			tolower($1) == "suites:" { $1 = ""; suites = $0 }
			tolower($1) == "uris:"   { $1 = ""; uris = $0 }
			END { flush(); print out }
		' /etc/apt/sources.list.d/debian.sources)
	fi
	if [[ -z $uri ]]; then
		local f
		for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
			[[ -r $f ]] || continue
			uri=$(awk '
				$1 == "deb" {
					i = 2
					if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ }
					if ($(i+1) !~ /(-security|\/updates)$/ && $i ~ /debian\/?$/) { print $i; exit }
				}' "$f")
			[[ -n $uri ]] && break
		done
	fi
	[[ -n $uri ]] || die "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list"
	printf '%s\n' "${uri%/}"
}

# suite_apt_config WORK MIRROR SUITE: an apt.conf for a private state: its
# own source list (SUITE main only), lists, cache and an empty dpkg status,
# so that the system's apt state and package selection are never touched.
# apt.conf.d is still read (proxy settings), minus the hooks that would act
# on the system.
suite_apt_config() {
	local work=$1 mirror=$2 suite=$3
	mkdir -p "$work"/{lists/partial,cache/archives/partial,sources.list.d,preferences.d}
	# apt downloads as _apt: let it reach its partial directories.
	chmod 755 "$work"
	if getent passwd _apt >/dev/null; then
		chown _apt "$work/lists/partial" "$work/cache/archives/partial"
	fi
	: >"$work/status"
	printf 'deb [signed-by=%s] %s %s main\n' "$KEYRING" "$mirror" "$suite" >"$work/sources.list"
	cat >"$work/apt.conf" <<EOF
Dir::State::Lists "$work/lists";
Dir::State::status "$work/status";
Dir::State::extended_states "$work/extended_states";
Dir::Cache "$work/cache";
Dir::Etc::SourceList "$work/sources.list";
Dir::Etc::SourceParts "$work/sources.list.d";
Dir::Etc::Preferences "$work/preferences";
Dir::Etc::PreferencesParts "$work/preferences.d";
#clear APT::Architectures;
APT::Architectures:: "$(dpkg --print-architecture)";
Acquire::Languages "none";
Acquire::IndexTargets::deb::DEP-11::DefaultEnabled "false";
#clear APT::Update::Pre-Invoke;
#clear APT::Update::Post-Invoke;
#clear APT::Update::Post-Invoke-Success;
#clear DPkg::Pre-Invoke;
#clear DPkg::Post-Invoke;
EOF
}

# suite_update WORK SUITE: fetch the suite's index; fails if none came.
suite_update() {
	local work=$1 suite=$2
	# apt-get update exits 0 on some fetch errors: check the index is there.
	apt-get -q -c "$work/apt.conf" update >&2 &&
		compgen -G "$work/lists/*_dists_${suite}_main_binary-*_Packages*" >/dev/null
}

# suite_criu_version WORK: the criu version the fetched index offers.
suite_criu_version() {
	apt-cache -c "$1/apt.conf" show criu 2>/dev/null | sed -n 's/^Version: *//p' | sort -V | tail -n1
}

# fetch_suite SUITE: sets SUITE_WORK to a private apt state holding SUITE's
# index (removed when the script ends); fails when no verified index came.
fetch_suite() {
	local suite=$1 mirror work
	mirror=$(debian_mirror)
	work=$(mktemp -d "/var/tmp/podman-migrate-$suite.XXXXXX")
	CLEANUP+=("$work")
	suite_apt_config "$work" "$mirror" "$suite"
	log "fetching Debian $suite's index from $mirror"
	if ! suite_update "$work" "$suite"; then
		# Newer suites' signing keys come with updates of bookworm's
		# debian-archive-keyring; an older one may be what failed.
		warn "$suite index not verified with $KEYRING; updating bookworm's debian-archive-keyring and retrying"
		apt_update_once
		run apt-get install -y -q --no-install-recommends debian-archive-keyring
		suite_update "$work" "$suite" || return 1
	fi
	SUITE_WORK=$work
}

# unpack_criu WORK SUITE DEST PACKAGE...: download the packages from the
# suite fetched into WORK and unpack them into a new prefix DEST, checking
# that every library criu needs resolves inside it.
unpack_criu() {
	local work=$1 suite=$2 dest=$3 stage deb
	shift 3
	mkdir -p "$work/debs" "$(dirname "$dest")"
	if getent passwd _apt >/dev/null; then chown _apt "$work/debs"; fi
	(cd "$work/debs" && apt-get -q -c "$work/apt.conf" download "$@") >&2 ||
		die "apt-get download of criu and its libraries from $suite failed"
	stage=$(mktemp -d "$(dirname "$dest")/.criu-new.XXXXXX")
	CLEANUP+=("$stage")
	for deb in "$work"/debs/*.deb; do
		dpkg -x "$deb" "$stage"
		dpkg-deb -f "$deb" Package Version | paste -sd' ' >>"$stage/.podman-migrate-packages"
	done
	printf '%s\n' "$suite" >"$stage/.podman-migrate-suite"
	chmod 755 "$stage"

	# Every library must resolve inside the prefix: ld.so would otherwise
	# silently fall back to bookworm's libraries from /etc/ld.so.cache.
	local libs ldso="$stage/usr/lib/$TRIPLET/$LDSO" slibs
	slibs=$(prefix_libs "$stage")
	libs=$("$ldso" --library-path "$slibs" --list "$stage/usr/sbin/criu") || die "ld.so --list criu ($suite) failed: $libs"
	if grep -E 'not found|=> /' <<<"$libs" | grep -v -F "=> $stage/" | grep -q .; then
		die "$suite's criu needs libraries not in its package list (add their packages):
$(grep -E 'not found|=> /' <<<"$libs" | grep -v -F "=> $stage/")"
	fi
	"$ldso" --library-path "$slibs" "$stage/usr/sbin/criu" --version >&2 || die "unpacked $suite criu does not run"
	if [[ -e $dest ]]; then
		rm -rf -- "$dest.old"
		mv -- "$dest" "$dest.old"
		CLEANUP+=("$dest.old")
	fi
	mv -- "$stage" "$dest"
	log "unpacked $(wc -l <"$dest/.podman-migrate-packages") $suite packages into $dest"
}

# install_criu: the newest CRIU that copes with this host, into $PREFIX.
# First choice: CRIU >= 4.2 from the newest suite that has it (it detects
# broken hardware breakpoints itself and dumps inet sockets on kernels >=
# 6.16). Fallback: trixie's 4.1.x, whose wrapper then sets CRIU_FAULT=130.
# PODMAN_MIGRATE_CRIU_SUITE names the one suite to use instead.
install_criu() {
	local suite v
	local -a pkgs suites=("${CRIU_SUITES[@]}")
	[[ -n ${PODMAN_MIGRATE_CRIU_SUITE:-} ]] && suites=("$PODMAN_MIGRATE_CRIU_SUITE")
	for suite in "${suites[@]}"; do
		if ! fetch_suite "$suite"; then
			warn "no verified index of $suite; trying the next suite"
			continue
		fi
		v=$(suite_criu_version "$SUITE_WORK")
		if [[ -z $v ]]; then
			warn "$suite has no criu; trying the next suite"
			continue
		fi
		if dpkg --compare-versions "$v" ge "$CRIU_WANT_VERSION"; then
			pkgs=("${NEWEST_PACKAGES[@]}")
		elif [[ $suite == trixie ]]; then
			pkgs=("${TRIXIE_PACKAGES[@]}")
		else
			log "$suite has criu $v (< $CRIU_WANT_VERSION); trying the next suite"
			continue
		fi
		dpkg --compare-versions "$v" ge "$CRIU_MIN_VERSION" || die "$suite has criu $v, need >= $CRIU_MIN_VERSION"
		log "CRIU: $suite has criu $v; fetching it into $PREFIX"
		unpack_criu "$SUITE_WORK" "$suite" "$PREFIX" "${pkgs[@]}"
		return 0
	done
	die "no Debian suite of ${suites[*]} on $(debian_mirror) gave a criu >= $CRIU_MIN_VERSION"
}

# criu_choice VERSION: why the wrapper is what it is, for the log.
criu_choice() {
	if dpkg --compare-versions "$1" ge "$CRIU_WANT_VERSION"; then
		echo "CRIU $1 (>= $CRIU_WANT_VERSION: it detects hardware breakpoints that never fire, as on VM guests, and dumps inet sockets on kernels >= 6.16)"
	else
		echo "CRIU $1 with CRIU_FAULT=130 in its wrapper (no suite had >= $CRIU_WANT_VERSION; without the setting every dump hangs where breakpoints never fire); containers holding inet sockets cannot be checkpointed with it on kernels >= 6.16"
	fi
}

# install_wrapper FILE TEXT: write FILE atomically unless it holds TEXT.
install_wrapper() {
	local file=$1 want=$2
	[[ -f $file && "$(cat "$file")" == "$want" ]] && return 0
	log "writing $file"
	mkdir -p "$(dirname "$file")"
	printf '%s\n' "$want" >"$file.tmp"
	chmod 755 "$file.tmp"
	mv -f "$file.tmp" "$file"
}

# criu_current: the CRIU in $PREFIX is the one to keep: >= CRIU_WANT_VERSION,
# or a fallback already chosen because no suite had that, or the suite that
# PODMAN_MIGRATE_CRIU_SUITE asks for.
criu_current() {
	local v=$1 suite
	[[ -n $v ]] && dpkg --compare-versions "$v" ge "$CRIU_MIN_VERSION" || return 1
	suite=$(cat "$PREFIX/.podman-migrate-suite" 2>/dev/null || true)
	if [[ -n ${PODMAN_MIGRATE_CRIU_SUITE:-} ]]; then
		[[ $suite == "$PODMAN_MIGRATE_CRIU_SUITE" ]]
		return
	fi
	dpkg --compare-versions "$v" ge "$CRIU_WANT_VERSION" || [[ -f $PREFIX/.podman-migrate-fallback ]]
}

ensure_criu() {
	local want v fault=""
	v=$(prefix_version "$PREFIX")
	if ! criu_current "$v"; then
		if [[ $CHECK_ONLY -eq 1 ]]; then
			missing "CRIU >= $CRIU_WANT_VERSION (or a $CRIU_MIN_VERSION fallback) in $PREFIX"
			return 0
		fi
		install_criu
		v=$(prefix_version "$PREFIX")
		# A fallback chosen because no suite had CRIU_WANT_VERSION is not
		# looked for again on every run.
		if [[ -z ${PODMAN_MIGRATE_CRIU_SUITE:-} ]] && dpkg --compare-versions "$v" lt "$CRIU_WANT_VERSION"; then
			: >"$PREFIX/.podman-migrate-fallback"
		fi
	fi
	dpkg --compare-versions "$v" ge "$CRIU_WANT_VERSION" || fault=1
	want=$(wrapper_text "$PREFIX" "$fault")
	if [[ $CHECK_ONLY -eq 1 ]]; then
		[[ -f $WRAPPER && "$(cat "$WRAPPER")" == "$want" ]] || missing "criu wrapper $WRAPPER"
	else
		install_wrapper "$WRAPPER" "$want"
	fi

	# What the podman service (and runc under it) will run.
	local found
	found=$(PATH=$SERVICE_PATH command -v criu || true)
	if [[ $found != "$WRAPPER" ]]; then
		if [[ $CHECK_ONLY -eq 1 ]]; then
			missing "criu on the service PATH is '$found', not $WRAPPER"
			return 0
		fi
		die "criu on PATH $SERVICE_PATH is '$found', not $WRAPPER"
	fi
	v=$(criu_version "$WRAPPER")
	[[ -n $v ]] || die "$WRAPPER --version printed no version"
	log "chose $(criu_choice "$v"), at $WRAPPER"
}

# probe_criu WHERE CMD...: a real dump and restore through the criu the
# runtime runs (contrib/criu-probe.sh, each step under a timeout); CMD runs
# the probe where that host's runtime would. Set-up fails when it does not
# work, naming the host and the cause.
probe_criu() {
	local where=$1 out rc=0 err
	shift
	err=$(mktemp)
	CLEANUP+=("$err")
	out=$("$@" 2>"$err") || rc=$?
	if [[ $rc -eq 0 ]]; then
		log "criu probe ($where): $out"
		return 0
	fi
	if [[ $CHECK_ONLY -eq 1 ]]; then
		missing "criu probe ($where): ${out:-exit $rc}"
		return 0
	fi
	cat "$err" >&2
	die "criu probe ($where) failed: ${out:-exit $rc}"
}

# ---------------------------------------------------------- containers.conf
# toml_set SECTION KEY VALUE: filter stdin to stdout with KEY = VALUE set in
# [SECTION] (replacing a one- or multi-line value), adding the section if
# needed; everything else is kept as it is.
toml_set() {
	awk -v sec="$1" -v key="$2" -v val="$3" '
		function emit() { print key " = " val; done = 1 }
		skip { if ($0 ~ /\]/) skip = 0; next }
		/^[[:space:]]*\[[^\[]/ {
			if (insec && !done) emit()
			h = $0; sub(/#.*/, "", h); gsub(/[[:space:]]/, "", h)
			insec = (h == "[" sec "]")
			print; next
		}
		insec && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
			if (!done) emit()
			rest = $0; sub(/^[^=]*=/, "", rest); sub(/#.*/, "", rest)
			if (rest ~ /^[[:space:]]*\[/ && rest !~ /\]/) skip = 1
			next
		}
		{ print }
		END {
			if (!done) {
				if (!insec) { if (NR > 0) print ""; print "[" sec "]" }
				emit()
			}
		}'
}

ensure_containers_conf() {
	local cur="" want
	[[ -f $CONTAINERS_CONF ]] && cur=$(cat "$CONTAINERS_CONF")
	want=$(printf '%s\n' "$cur" |
		toml_set containers default_ulimits '["nofile=1024:1024", "nproc=1024:1024"]' |
		toml_set engine runtime '"runc"' |
		toml_set network network_backend '"netavark"')
	if [[ -z $cur ]]; then
		want="# podman-migrate: this machine lacks CAP_SYS_RESOURCE (runc cannot raise
# rlimits) and bookworm's crun has no CRIU support.
$(printf '%s\n' "$want" | sed '/./,$!d')"
	fi
	if [[ $cur == "$want" ]]; then
		log "$CONTAINERS_CONF: up to date"
		return
	fi
	if [[ $CHECK_ONLY -eq 1 ]]; then
		missing "$CONTAINERS_CONF: [containers] default_ulimits, [engine] runtime = \"runc\", [network] network_backend = \"netavark\""
		return
	fi
	mkdir -p "$(dirname "$CONTAINERS_CONF")"
	# Keep the administrator's file, once; not one this script wrote.
	if [[ -f $CONTAINERS_CONF && ! -e $CONTAINERS_CONF.podman-migrate.orig && $cur != "# podman-migrate:"* ]]; then
		run cp -p "$CONTAINERS_CONF" "$CONTAINERS_CONF.podman-migrate.orig"
	fi
	log "writing $CONTAINERS_CONF"
	printf '%s\n' "$want" >"$CONTAINERS_CONF.tmp"
	mv -f "$CONTAINERS_CONF.tmp" "$CONTAINERS_CONF"
}

# registries.conf and policy.json as the package ships them: only restored
# when deleted, never edited.
ensure_containers_files() {
	local f owner todo=()
	for f in /etc/containers/registries.conf /etc/containers/policy.json; do
		[[ -e $f ]] && continue
		owner=$(dpkg -S "$f" 2>/dev/null | cut -d: -f1 | head -n1) || true
		if [[ $CHECK_ONLY -eq 1 || -z $owner ]]; then
			missing "$f"
			continue
		fi
		todo+=("$owner")
	done
	if [[ ${#todo[@]} -gt 0 ]]; then
		log "restoring deleted configuration files of ${todo[*]}"
		apt_update_once
		run apt-get install -y -q --reinstall --no-install-recommends \
			-o Dpkg::Options::=--force-confmiss "${todo[@]}"
	fi
}

# --------------------------------------------------------------- test image
testbase_hash() {
	{
		echo "recipe $TESTBASE_RECIPE"
		sha256sum /bin/busybox
		(cd "$REPO_ROOT" && find tests/workload -type f -name '*.go' -print0 | sort -z | xargs -0 sha256sum)
	} | sha256sum | cut -d' ' -f1
}

image_id() {
	podman image inspect --format '{{.Id}}' "$TEST_IMAGE" 2>/dev/null || true
}

build_testbase() {
	local work root a
	work=$(mktemp -d "$STATE/.testbase.XXXXXX")
	CLEANUP+=("$work")
	root=$work/rootfs
	mkdir -p "$root"/{bin,sbin,etc,tmp,root,proc,sys,dev,run,var/tmp}
	chmod 1777 "$root/tmp" "$root/var/tmp"
	chmod 700 "$root/root"
	cp /bin/busybox "$root/bin/busybox"
	for a in $(/bin/busybox --list); do
		[[ $a == busybox || -e $root/bin/$a ]] || ln -s busybox "$root/bin/$a"
	done
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
	command -v go >/dev/null || die "go not found (looked in PATH and /usr/local/go/bin)"
	log "building tests/workload (static)"
	(cd "$REPO_ROOT" && export CGO_ENABLED=0 && run go build -buildvcs=false -trimpath -o "$root/bin/workload" ./tests/workload) ||
		die "go build ./tests/workload failed"
	tar --numeric-owner --owner=0 --group=0 -C "$root" -cf "$work/testbase.tar" .
	local old
	old=$(image_id)
	run podman import --quiet --change 'CMD ["/bin/workload"]' "$work/testbase.tar" "$TEST_IMAGE" >/dev/null
	rm -f "$work/testbase-image.tar"
	run podman save --quiet -o "$work/testbase-image.tar" "$TEST_IMAGE"
	image_id >"$work/testbase.id"
	# The previous build, unless a container still uses it.
	if [[ -n $old && $old != "$(cat "$work/testbase.id")" ]]; then
		podman rmi "$old" >/dev/null 2>&1 || true
	fi
	testbase_hash >"$work/testbase.hash"
	mv -f "$work/testbase.tar" "$STATE/testbase.tar"
	mv -f "$work/testbase-image.tar" "$STATE/testbase-image.tar"
	mv -f "$work/testbase.id" "$STATE/testbase.id"
	mv -f "$work/testbase.hash" "$STATE/testbase.hash" # last: marks the set complete
	log "test image $TEST_IMAGE: $(cat "$STATE/testbase.id")"
}

ensure_testbase() {
	if ! command -v podman >/dev/null || [[ ! -x /bin/busybox ]]; then
		[[ $CHECK_ONLY -eq 1 ]] && missing "test image $TEST_IMAGE (needs podman and busybox-static)"
		return
	fi
	mkdir -p "$STATE"
	local want have="" id
	want=$(testbase_hash)
	[[ -f $STATE/testbase.hash ]] && have=$(cat "$STATE/testbase.hash")
	if [[ $want != "$have" || ! -f $STATE/testbase.tar || ! -f $STATE/testbase-image.tar || ! -f $STATE/testbase.id ]]; then
		if [[ $CHECK_ONLY -eq 1 ]]; then
			missing "test image $TEST_IMAGE is missing or older than tests/workload / busybox"
			return
		fi
		build_testbase
		return
	fi
	id=$(image_id)
	if [[ $id == "$(cat "$STATE/testbase.id")" ]]; then
		log "test image $TEST_IMAGE: up to date (${id:0:12})"
		return
	fi
	if [[ $CHECK_ONLY -eq 1 ]]; then
		missing "test image $TEST_IMAGE in podman storage (saved copy in $STATE/testbase-image.tar)"
		return
	fi
	log "test image $TEST_IMAGE not in storage (or another ID): loading the saved copy"
	run podman load --quiet -i "$STATE/testbase-image.tar" >/dev/null
	id=$(image_id)
	[[ $id == "$(cat "$STATE/testbase.id")" ]] || {
		warn "loaded image has ID '$id', expected $(cat "$STATE/testbase.id"): rebuilding"
		build_testbase
	}
}

# ------------------------------------------------------------------ host C
# Host C's packages: podman 5 with both OCI runtimes; CRIU runs ip and
# iptables-restore while dumping, so those come too (HOST-NOTES). Its
# containers.conf and networks are tests/hosts.sh's, written per run.
readonly HOSTC_ROOT=$STATE/hostc
readonly HOSTC_PACKAGES=(podman conmon runc crun criu libcriu2 netavark aardvark-dns
	catatonit busybox-static iproute2 iptables nftables ca-certificates)
readonly HOSTC_RECIPE="3 ${HOSTC_PACKAGES[*]}"
# Written last: its presence means the root file system is complete.
readonly HOSTC_STAMP=.podman-migrate-stamp

# hostc_stamp DIR: the stamp for the root file system in DIR: the recipe,
# then each package's installed version.
hostc_stamp() {
	printf 'recipe %s\n' "$HOSTC_RECIPE"
	# shellcheck disable=SC2016 # dpkg-query's format, not the shell's
	chroot "$1" dpkg-query -W -f='${Package} ${Version}\n' "${HOSTC_PACKAGES[@]}"
}

# umount_under DIR: unmount whatever an interrupted run left mounted there,
# so that rm --one-file-system can remove it.
umount_under() {
	local m
	while IFS= read -r m; do
		umount -l "$m" || true
	done < <(findmnt -rn -o TARGET | awk -v d="$1" '$0 == d || index($0, d "/") == 1' | sort -r)
}

ensure_host_c() {
	local mirror tmp want t0=$SECONDS
	if [[ -f $HOSTC_ROOT/$HOSTC_STAMP ]] && want=$(hostc_stamp "$HOSTC_ROOT" 2>/dev/null) &&
		[[ $(<"$HOSTC_ROOT/$HOSTC_STAMP") == "$want" ]]; then
		log "host C: trixie root file system ready in $HOSTC_ROOT ($(hostc_versions "$HOSTC_ROOT"))"
		return
	fi
	if [[ $CHECK_ONLY -eq 1 ]]; then
		missing "host C root file system ($HOSTC_ROOT, no stamp or another recipe or package set)"
		return
	fi
	mirror=$(debian_mirror)
	tmp=$HOSTC_ROOT.new
	umount_under "$tmp"
	rm -rf --one-file-system "$tmp"
	log "host C: debootstrap trixie from $mirror into $tmp"
	run debootstrap --variant=minbase --keyring="$KEYRING" trixie "$tmp" "$mirror" >/dev/null
	cp /etc/resolv.conf "$tmp/etc/resolv.conf"
	# shellcheck disable=SC2064 # $tmp is fixed now
	trap "umount_under '$tmp'; cleanup" EXIT
	mount -t proc proc "$tmp/proc"
	log "host C: installing ${HOSTC_PACKAGES[*]} (log: $STATE/hostc-apt.log)"
	if ! chroot "$tmp" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		"${HOSTC_PACKAGES[@]}" >"$STATE/hostc-apt.log" 2>&1; then
		die "installing host C's packages failed (log: $STATE/hostc-apt.log)"
	fi
	chroot "$tmp" apt-get clean
	umount_under "$tmp"
	trap cleanup EXIT
	[[ -x $tmp/usr/bin/podman ]] || die "host C: no podman in $tmp after installing"
	hostc_stamp "$tmp" >"$tmp/$HOSTC_STAMP.tmp"
	mv "$tmp/$HOSTC_STAMP.tmp" "$tmp/$HOSTC_STAMP"
	if [[ -e $HOSTC_ROOT ]]; then
		umount_under "$HOSTC_ROOT"
		rm -rf --one-file-system "$HOSTC_ROOT"
	fi
	mv "$tmp" "$HOSTC_ROOT"
	log "host C: ready in $((SECONDS - t0))s ($(hostc_versions "$HOSTC_ROOT"))"
}

# ensure_hostc_criu: host C's podman 5 runs the same CRIU as A and B: the
# prefix copied into its root and the same wrapper at its
# /usr/local/sbin/criu, ahead of trixie's /usr/sbin/criu (4.1) on the
# service's PATH (tests/hosts.sh). The probe runs there when hosts.sh
# starts host C, inside its pivoted root.
ensure_hostc_criu() {
	local dest=$HOSTC_ROOT$PREFIX want tmp
	[[ -d $HOSTC_ROOT && -f $PREFIX/.podman-migrate-packages ]] || return 0
	want=$(cat "$WRAPPER")
	if cmp -s "$PREFIX/.podman-migrate-packages" "$dest/.podman-migrate-packages" &&
		[[ -f $HOSTC_ROOT$WRAPPER && "$(cat "$HOSTC_ROOT$WRAPPER")" == "$want" ]]; then
		log "host C: criu $(criu_version "$WRAPPER") in its root"
		return 0
	fi
	if [[ $CHECK_ONLY -eq 1 ]]; then
		missing "host C: $PREFIX and $WRAPPER inside $HOSTC_ROOT"
		return 0
	fi
	log "host C: copying $PREFIX and $WRAPPER into its root"
	mkdir -p "$(dirname "$dest")"
	tmp=$(mktemp -d "$(dirname "$dest")/.criu-new.XXXXXX")
	CLEANUP+=("$tmp")
	cp -a "$PREFIX/." "$tmp/"
	rm -rf -- "$dest"
	mv -- "$tmp" "$dest"
	install_wrapper "$HOSTC_ROOT$WRAPPER" "$want"
}

hostc_versions() {
	awk '$1 ~ /^(podman|crun|runc|criu)$/ { v = v sep $1 " " $2; sep = ", " } END { print v }' "$1/$HOSTC_STAMP"
}

# --------------------------------------------------------------------- main
ensure_packages
ensure_no_bookworm_criu
ensure_criu
ensure_containers_files
ensure_containers_conf
ensure_testbase
ensure_host_c
ensure_hostc_criu
if [[ ${#MISSING[@]} -eq 0 ]]; then
	probe_criu "host A: $WRAPPER as the podman service runs it" \
		env -i PATH="$SERVICE_PATH" sh "$REPO_ROOT/contrib/criu-probe.sh" criu
fi

if [[ ${#MISSING[@]} -gt 0 ]]; then
	printf 'setup-host: NOT READY; missing:\n' >&2
	printf '  - %s\n' "${MISSING[@]}" >&2
	printf 'setup-host: run %s as root to fix\n' "${BASH_SOURCE[0]}" >&2
	exit 1
fi

log "ready: podman $(podman version --format '{{.Client.Version}}' 2>/dev/null)," \
	"runc $(runc --version | sed -n 's/^runc version //p')," \
	"criu $(criu_version "$WRAPPER")" \
	"(criu on service PATH: $(PATH=$SERVICE_PATH command -v criu))"
