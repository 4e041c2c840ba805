#!/usr/bin/env bash
# Installs what the provider lab needs on Debian 12 (root): Docker 20.10,
# networking tools, BIND9, PowerDNS Authoritative (the second DNS server,
# driven over its HTTP API), openssl (the lab's TLS certificates), the binaries baked into the test images, and CRIU
# >= 4.2 (through install-criu.sh). Idempotent: a second run only checks.
set -euo pipefail
# Not common.sh: it reads lab-description.json with jq, which this script
# installs (every other lab script runs after it).
LAB_SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { printf '%s\n' "lab: $*" >&2; }
die() { printf '%s\n' "lab: error: $*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "install-deps.sh must run as root"

# redis-tools carries the real redis-server binary (redis-server's package
# only adds a symlink to it and a system service we do not want).
# pdns-server's own config in /etc/powerdns is never used: up.sh runs
# pdns_server with --config-dir in the lab's state directory.
# sqlite3 initialises the PowerDNS database from Debian's schema.
# patchelf points runc of the newer engines at its own libc (install-engines.sh).
# jq: the lab scripts read lab-description.json and write lab.json with it;
# python3 runs describe.py, which checks the description before up.sh uses it.
# guest.sh (the qemu guest provider, its own Debian 13 kernel): qemu-system-x86
# boots it (TCG), qemu-img (qemu-utils) makes its per-boot qcow2 overlay,
# mmdebstrap builds its rootfs and mkfs.ext4 -d (e2fsprogs) the base image.
# qemu-utils must be Debian 12's: a newer one (a backport) Breaks
# qemu-system-common 7.2, and apt then removes it.
PACKAGES=(
	docker.io iproute2 iptables bind9 bind9-dnsutils busybox-static
	redis-tools curl jq python3 netcat-openbsd util-linux procps openssl
	pdns-server pdns-backend-sqlite3 sqlite3 patchelf
	qemu-system-x86 qemu-utils mmdebstrap e2fsprogs
)

missing=()
for pkg in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
	[[ $status == installed ]] || missing+=("$pkg")
done
# With qemu-system-x86, the qemu-utils of this release (see above), asked for by
# release and downgrading if need be: else apt removes a newer one, and qemu-img.
if [[ " ${missing[*]} " == *" qemu-system-x86 "* ]]; then
	codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
	kept=()
	for pkg in "${missing[@]}"; do [[ $pkg == qemu-utils ]] || kept+=("$pkg"); done
	missing=("${kept[@]}" "qemu-utils/$codename")
fi

if ((${#missing[@]})); then
	log "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# Package scripts must not start dockerd, named or anything else as a
	# system service: the lab runs its own daemons. Respect an existing
	# policy-rc.d, otherwise install a temporary "deny everything" one.
	own_policy=
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 755 /usr/sbin/policy-rc.d
		own_policy=1
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT
	fi
	# Refresh the package lists only when some package has no candidate, and
	# once more if the download fails on stale lists.
	need_update=
	for pkg in "${missing[@]}"; do
		if ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
			need_update=1
		fi
	done
	[[ -z $need_update ]] || apt-get update -qq
	apt_install() { apt-get install -y -qq --no-install-recommends --allow-downgrades "${missing[@]}" >/dev/null; }
	if ! apt_install; then
		log "install failed, refreshing package lists and retrying"
		apt-get update -qq
		apt_install
	fi
	if [[ -n $own_policy ]]; then
		rm -f /usr/sbin/policy-rc.d
		trap - EXIT
	fi
fi

# Belt and braces: if some init system did start the distro services anyway,
# stop them so only the lab's own daemons exist (they would otherwise own
# /var/run/docker.sock or port 53).
if [[ -d /run/systemd/system ]]; then
	for unit in docker.socket docker.service containerd.service named.service pdns.service; do
		systemctl disable --now "$unit" >/dev/null 2>&1 || true
	done
fi
# Debian 12's pdns-server ships no sysvinit script, only pdns.service (handled
# above): without systemd nothing of the package can be running.

bash "$LAB_SCRIPTS_DIR/install-criu.sh"
bash "$LAB_SCRIPTS_DIR/install-engines.sh"
