#!/usr/bin/env bash
# Installs CRIU >= 4.2 as /usr/local/sbin/criu without touching the system libc.
#
# Debian 12's criu (3.17) fails `criu check` on this kernel and 4.1 cannot dump
# inet sockets on Linux >= 6.16 (see shared/docs/platform.md), so CRIU comes
# from Debian sid/forky:
#   route 2 (preferred, seconds): a private apt state that only knows the newer
#     suites downloads criu and its dependency closure (including that suite's
#     libc), unpacks it into $CRIU_PREFIX, and a wrapper runs the binary through
#     the prefix's own dynamic loader with --library-path. Not LD_LIBRARY_PATH:
#     it would leak into the processes criu spawns and restores.
#   route 1 (fallback): build the sid source package against bookworm's
#     build dependencies and install the binary itself.
# Set VIMIGRATE_CRIU_ROUTE=source to force route 1.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $EUID -eq 0 ]] || die "install-criu.sh must run as root"

APT_DIR="$LAB_DATA/criu-apt"

criu_ok() {
	local v
	[[ -x $CRIU_WRAPPER ]] || return 1
	v=$(criu_version "$CRIU_WRAPPER")
	[[ -n $v ]] && version_ge "$v" "$CRIU_MIN_VERSION" || return 1
	"$CRIU_WRAPPER" check 2>&1 | grep -q 'Looks good'
}

route_binary() {
	log "criu: route 2, unpacking Debian sid's criu and its dependencies into $CRIU_PREFIX"
	private_apt_opts "$APT_DIR" deb "sid forky"
	rm -f "$APT_DIR"/cache/archives/*.deb
	# With an empty dpkg status, apt resolves the whole closure (libc included),
	# which is exactly what the private prefix needs.
	apt-get "${APT_OPTS[@]}" -y -qq install --download-only criu >/dev/null
	local debs=("$APT_DIR"/cache/archives/*.deb)
	[[ -e ${debs[0]} ]] || die "criu: apt downloaded nothing"
	local stage="$CRIU_PREFIX.new"
	rm -rf "$stage"
	mkdir -p "$stage"
	for deb in "${debs[@]}"; do dpkg-deb -x "$deb" "$stage"; done
	local loader="$stage/usr/lib/$MULTIARCH/ld-linux-x86-64.so.2"
	[[ -e $loader && -x $stage/usr/sbin/criu ]] || die "criu: unpacked tree lacks loader or binary"
	rm -rf "$CRIU_PREFIX.old"
	[[ ! -e $CRIU_PREFIX ]] || mv "$CRIU_PREFIX" "$CRIU_PREFIX.old"
	mv "$stage" "$CRIU_PREFIX"
	rm -rf "$CRIU_PREFIX.old"
	local libpath="$CRIU_PREFIX/usr/lib/$MULTIARCH:$CRIU_PREFIX/lib/$MULTIARCH"
	mkdir -p "$(dirname "$CRIU_WRAPPER")"
	cat >"$CRIU_WRAPPER.tmp" <<EOF
#!/bin/sh
# vimigrate lab: CRIU from Debian sid, unpacked in $CRIU_PREFIX and run through
# that tree's own loader so the system libc stays bookworm's.
exec $CRIU_PREFIX/usr/lib/$MULTIARCH/ld-linux-x86-64.so.2 --library-path $libpath --argv0 criu $CRIU_PREFIX/usr/sbin/criu "\$@"
EOF
	chmod 755 "$CRIU_WRAPPER.tmp"
	mv "$CRIU_WRAPPER.tmp" "$CRIU_WRAPPER"
}

route_source() {
	log "criu: route 1, building Debian sid's criu source package"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq --no-install-recommends dpkg-dev build-essential \
		libprotobuf-c-dev libprotobuf-dev protobuf-c-compiler protobuf-compiler python3-protobuf \
		libnl-3-dev libnet1-dev libcap-dev pkg-config libbsd-dev libgnutls28-dev \
		libnftables-dev uuid-dev >/dev/null
	private_apt_opts "$APT_DIR" deb-src "sid forky"
	local build="$APT_DIR/build"
	rm -rf "$build"
	mkdir -p "$build"
	# The mirror seen here serves the .dsc and the upstream tarball but 404s
	# on criu_*.debian.tar.xz; Debian's packaging is not needed to build the
	# binary, so fall back to the upstream tarball alone (apt checked its hash).
	(cd "$build" && apt-get "${APT_OPTS[@]}" -qq source --download-only criu >/dev/null) ||
		log "criu: source package incomplete, building the upstream tarball without Debian's patches"
	local dsc orig src
	dsc=$(find "$build" -maxdepth 1 -name 'criu_*.dsc' | head -n1)
	orig=$(find "$build" -maxdepth 1 -name 'criu_*.orig.tar.*' | head -n1)
	if [[ -n $dsc ]] && compgen -G "$build/criu_*.debian.tar.*" >/dev/null; then
		(cd "$build" && dpkg-source -x "$dsc" >/dev/null)
	elif [[ -n $orig ]]; then
		tar -C "$build" -xf "$orig"
	else
		die "criu: could not download the criu source"
	fi
	src=$(find "$build" -mindepth 1 -maxdepth 1 -type d -name 'criu-*' | head -n1)
	[[ -n $src ]] || die "criu: source package not unpacked"
	make -C "$src" -j"$(nproc)" criu >"$build/make.log" 2>&1 ||
		{ tail -n 30 "$build/make.log" >&2; die "criu: build failed (log: $build/make.log)"; }
	install -D -m 755 "$src/criu/criu" "$CRIU_WRAPPER"
}

if criu_ok; then
	exit 0
fi

if [[ ${VIMIGRATE_CRIU_ROUTE:-} != source ]]; then
	if ! (route_binary); then
		log "criu: route 2 failed, falling back to a source build"
		route_source
	fi
else
	route_source
fi

criu_ok || die "criu: $CRIU_WRAPPER is not a working CRIU >= $CRIU_MIN_VERSION ($("$CRIU_WRAPPER" check 2>&1 | tail -n1))"
log "criu: $(criu_version "$CRIU_WRAPPER") installed at $CRIU_WRAPPER (criu check: Looks good)"
