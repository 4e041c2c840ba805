#!/usr/bin/env bash
# Installs the Docker engines of today's Debian suites next to the system's
# own 20.10, for the lab providers whose description names an `engine_suite`:
# trixie (Debian 13: docker.io 26.1, containerd 1.7, runc 1.1) and sid
# (docker.io 28.5, containerd 2.1, runc 1.3). The system's packages are never
# touched: a private apt state per suite (common.sh: private_apt_opts) downloads
# the packages and their closure, which are unpacked into
# $ENGINES_PREFIX/<suite>; the provider's dockerd runs with that tree's bin/
# first on its PATH (common.sh: p_path).
#
# dockerd, containerd, its shims and docker-proxy need glibc 2.34 and run on
# bookworm's 2.36 as they are. runc needs 2.38: its ELF interpreter and
# runpath are rewritten (patchelf) to the prefix's own loader and libraries.
# Not a loader wrapper as for CRIU: runc re-executes /proc/self/exe for
# `runc init`, which must be runc itself. Idempotent: a suite whose tree
# answers `--version` for every binary is kept.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $EUID -eq 0 ]] || die "install-engines.sh must run as root"

ENGINE_PACKAGES=(docker.io docker-cli containerd runc tini)
# What bin/ offers on the daemon's PATH, and where the package puts it.
ENGINE_BINARIES=(
	usr/sbin/dockerd usr/bin/docker usr/bin/containerd usr/bin/containerd-shim-runc-v2
	usr/sbin/runc usr/sbin/docker-proxy usr/bin/docker-init usr/bin/ctr
)

# True when suite $1's tree is installed and each binary runs.
engine_ok() {
	local root="$ENGINES_PREFIX/$1" b
	[[ -f $root/versions ]] || return 1
	for b in dockerd docker containerd runc docker-proxy; do
		"$root/bin/$b" --version >/dev/null 2>&1 || return 1
	done
}

install_engine() {
	local suite=$1
	local apt_dir="$LAB_DATA/engines-apt/$suite" stage root="$ENGINES_PREFIX/$suite" b
	log "engines: unpacking Debian $suite's ${ENGINE_PACKAGES[*]} into $root"
	stage="$root.new"
	unpack_closure engines "$apt_dir" "$suite" "$stage" "${ENGINE_PACKAGES[@]}"
	mkdir -p "$stage/bin"
	for b in "${ENGINE_BINARIES[@]}"; do
		[[ -x $stage/$b ]] || die "engines: $suite's packages lack $b"
		ln -s "../$b" "$stage/bin/$(basename "$b")"
	done
	local libpath="$root/usr/lib/$MULTIARCH:$root/lib/$MULTIARCH"
	patchelf --set-interpreter "$root/usr/lib/$MULTIARCH/ld-linux-x86-64.so.2" \
		--set-rpath "$libpath" "$stage/usr/sbin/runc"
	replace_tree "$stage" "$root"
	engine_ok "$suite" || die "engines: $suite's binaries do not run from $root"
	log "engines: $suite: $("$root/bin/dockerd" --version)"
}

command -v patchelf >/dev/null || die "engines: patchelf is missing: run bash scripts/lab/install-deps.sh"
for suite in $(printf '%s\n' "${P_SUITE[@]}" | sort -u); do
	engine_ok "$suite" || install_engine "$suite"
done
