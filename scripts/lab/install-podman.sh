#!/usr/bin/env bash
# Installs the newest Podman Debian offers (sid's: 5.8 today) next to the
# system's own (bookworm's 4.3, a benchmark baseline), as install-engines.sh
# does for Docker engines: a private apt state (common.sh: private_apt_opts)
# downloads podman, conmon, netavark, aardvark-dns and runc with their whole
# closure, unpacked into $ENGINES_PREFIX/podman-sid; the system's packages are
# never touched. Every dynamically linked binary is pointed (patchelf) at the
# prefix's own loader and libraries, with DT_RPATH rather than RUNPATH so that
# their libraries' own dependencies come from the prefix too (glib's pcre2).
#
# The prefix's containers.conf names its helpers, conmon and runc, iptables as
# netavark's firewall (this machine has no nft) and a network directory of its
# own. scripts/lab/podman.sh runs it per provider (own storage, own netns).
# Idempotent: a tree whose binaries answer --version is kept.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $EUID -eq 0 ]] || die "install-podman.sh must run as root"

SUITE=sid
ROOT="$ENGINES_PREFIX/podman-$SUITE"
PODMAN_PACKAGES=(podman conmon netavark aardvark-dns runc catatonit)
# Dynamically linked programs Podman runs, relative to the prefix.
PODMAN_BINARIES=(
	usr/bin/podman usr/bin/conmon usr/lib/podman/netavark usr/lib/podman/aardvark-dns
	usr/libexec/podman/rootlessport usr/sbin/runc
)

podman_ok() {
	[[ -f $ROOT/versions && -f $ROOT/containers.conf ]] || return 1
	"$ROOT/usr/bin/podman" --version >/dev/null 2>&1 && "$ROOT/usr/bin/conmon" --version >/dev/null 2>&1 &&
		"$ROOT/usr/sbin/runc" --version >/dev/null 2>&1
}

install_podman() {
	local apt_dir="$LAB_DATA/engines-apt/podman-$SUITE" stage="$ROOT.new" b
	log "podman: unpacking Debian $SUITE's ${PODMAN_PACKAGES[*]} into $ROOT"
	unpack_closure podman "$apt_dir" "$SUITE" "$stage" "${PODMAN_PACKAGES[@]}"
	local libpath="$ROOT/usr/lib/$MULTIARCH:$ROOT/lib/$MULTIARCH"
	for b in "${PODMAN_BINARIES[@]}"; do
		[[ -x $stage/$b ]] || die "podman: $SUITE's packages lack $b"
		patchelf --set-interpreter "$ROOT/usr/lib/$MULTIARCH/ld-linux-x86-64.so.2" \
			--force-rpath --set-rpath "$libpath" "$stage/$b"
	done
	cat >"$stage/containers.conf" <<-EOF
		# Written by scripts/lab/install-podman.sh: this prefix's own programs.
		[engine]
		helper_binaries_dir = ["$ROOT/usr/lib/podman", "$ROOT/usr/libexec/podman"]
		conmon_path = ["$ROOT/usr/bin/conmon"]
		runtime = "runc"
		events_logger = "file"
		cgroup_manager = "cgroupfs"
		[engine.runtimes]
		runc = ["$ROOT/usr/sbin/runc"]
		[network]
		network_backend = "netavark"
		firewall_driver = "iptables"
		network_config_dir = "$LAB_DATA/podman-$SUITE/networks"
	EOF
	replace_tree "$stage" "$ROOT"
	podman_ok || die "podman: $SUITE's binaries do not run from $ROOT"
	log "podman: $("$ROOT/usr/bin/podman" --version)"
}

command -v patchelf >/dev/null || die "podman: patchelf is missing: run bash scripts/lab/install-deps.sh"
podman_ok || install_podman
mkdir -p "$LAB_DATA/podman-$SUITE/networks"
