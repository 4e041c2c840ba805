#!/usr/bin/env bash
# A provider that is a machine of its own: a qemu guest booting its own kernel
# (a Debian suite's, e.g. trixie's 6.12) with that suite's dockerd, containerd,
# runc and CRIU, on a tap attached to the lab's host bridge. It serves the
# Docker API on tcp://<address>:$TLS_PORT with --tlsverify (the lab CA's
# client certificate), which is the only way anything talks to it: the engine
# reaches providers through their API alone, and the guest has no ssh.
#
#   up [NAME]          build the guest's image if its inputs changed, boot it,
#                      wait for its API, import the lab's test images, write
#                      .lab/<NAME>.json. A guest already running and answering
#                      is kept.
#   down [NAME]        stop qemu, remove the tap, the disk overlay, the facts.
#   status [NAME]      print the facts of a running guest, or DOWN.
#   build [--force] [NAME]
#                      only (re)build the image of NAME's suite (--force: even
#                      when the cached one is current).
# NAME is a "guests" entry of lab-description.json (default provider-guest).
#
# Why qemu TCG and not KVM: /dev/kvm on these machines is PVM, which runs only
# kernels built for it; a stock Debian kernel stops with a KVM emulation
# failure. TCG runs it, slowly: about a minute to boot, seconds per `docker
# run`; the README's compatibility section has the measured times.
#
# The image: mmdebstrap of the suite (debs cached in $LAB_DATA/guest/debs/),
# configured by guest_customize below, as an ext4 base image plus the kernel
# and initrd in $LAB_DATA/guest/<suite>/<key>/. <key> hashes the build inputs
# (the build functions' text, the package list and the values they bake in),
# so the image is rebuilt exactly when one of them changes. Every boot runs on
# a fresh qcow2 overlay of it: no state survives a down/up.
#
# Per-boot inputs come through a read-only 9p share ($LAB_RUN/guest/<NAME>/
# share): the TLS server certificate for the guest's address (signed by the
# lab CA, kept in $LAB_RUN/guest/<NAME>/tls) and the host's current
# vimigrate-runtime. A new runtime build therefore takes effect at the next
# boot, without an image rebuild. The guest reports readiness (dockerd
# answering, CRIU's version and `criu check`) on a virtio-serial port; its
# console goes to serial.log next to the share.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh disable=SC1091 # (SC1091: for shellcheck without -x)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $EUID -eq 0 ]] || die "guest.sh must run as root"

usage() { die "usage: guest.sh up|down|status [NAME] | build [--force] [NAME]"; }

GUEST_DATA="$LAB_DATA/guest"
DEFAULT_GUEST=provider-guest
# Seconds from qemu's start to the readiness beacon, then to the API's /_ping.
READY_TIMEOUT=240
API_TIMEOUT=60
# The base image's size (sparse): the rootfs is about 0.7 GB, the rest holds
# images and containers (written to the per-boot overlay).
IMAGE_SIZE=8G
# The name of the virtio-serial port the guest writes its beacon to, and the
# 9p mount tag of the share.
READY_PORT=vimigrate.ready
SHARE_TAG=vimigrate
# Where the guest keeps what the share delivers.
GUEST_TLS_DIR=/etc/vimigrate/tls
GUEST_SHARE_MOUNT=/mnt/vimigrate-share

# What the image holds besides the suite's essential packages: its kernel
# (and the initrd the kernel is booted with), systemd, the engine with its CLI
# (trixie splits docker-cli off docker.io), CRIU, and tools the units use.
GUEST_PACKAGES=(
	linux-image-amd64 systemd-sysv udev kmod initramfs-tools e2fsprogs iproute2 procps mount
	docker.io docker-cli containerd runc tini criu busybox-static ca-certificates
)

# --- the description ---------------------------------------------------------

# Fills G_* from the "guests" entry named $1.
G_NAME='' G_ADDR='' G_TAP='' G_SUITE='' G_CPU='' G_MEM='' G_CGROUP=''
load_guest() {
	local line
	line=$(jq -r --arg n "$1" '
		(.guests // []) | map(select(.name == $n))
		| if length != 1 then error("no guest named \($n) in `guests`") else .[0] end
		| [.name, .address, .tap, .suite, .cpu, (.memory_mib | tostring), (.cgroup_version | tostring)] | @tsv' \
		"$LAB_DESCRIPTION" 2>&1) || die "$LAB_DESCRIPTION: ${line#jq: error (at *): }"
	IFS=$'\t' read -r G_NAME G_ADDR G_TAP G_SUITE G_CPU G_MEM G_CGROUP <<<"$line"
	G_RUN="$LAB_RUN/guest/$G_NAME"
}
G_RUN=''

g_pidfile() { echo "$G_RUN/qemu.pid"; }
g_pid() { live_pid "$(g_pidfile)" qemu-system-x86; }
g_host() { echo "tcp://$G_ADDR:$TLS_PORT"; }

# The host's docker CLI and curl, bound to the guest's TLS API with the lab's
# client certificate.
gdocker() {
	"$DOCKER_CLI" -H "$(g_host)" --tlsverify --tlscacert "$TLS_CA" \
		--tlscert "$TLS_CLIENT_CERT" --tlskey "$TLS_CLIENT_KEY" "$@"
}
gapi() {
	curl -sf --max-time "${GAPI_TIMEOUT:-10}" --cacert "$TLS_CA" --cert "$TLS_CLIENT_CERT" \
		--key "$TLS_CLIENT_KEY" "https://$G_ADDR:$TLS_PORT$1"
}
g_ping() { [[ $(GAPI_TIMEOUT=3 gapi /_ping 2>/dev/null) == OK ]]; }

# --- the image ---------------------------------------------------------------

# Writes the guest's configuration into rootfs $1: mmdebstrap's customize
# hook runs it (`guest.sh _customize ROOT`), inside the build.
guest_customize() {
	local root=$1
	local GUEST_DOCKERD="/usr/sbin/dockerd --experimental -H unix:///run/docker.sock -H tcp://0.0.0.0:$TLS_PORT"
	GUEST_DOCKERD+=" --tlsverify --tlscacert $GUEST_TLS_DIR/ca.pem --tlscert $GUEST_TLS_DIR/server-cert.pem"
	GUEST_DOCKERD+=" --tlskey $GUEST_TLS_DIR/server-key.pem --dns 127.0.0.1"
	[[ -d $root/etc/systemd ]] || die "customize: $root is not the guest's rootfs"
	echo vimigrate-guest >"$root/etc/hostname"
	printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
	# The share holds this boot's inputs; nofail: without it the inputs unit
	# fails, and with it dockerd, which the beacon then reports.
	cat >"$root/etc/fstab" <<EOF
/dev/vda / ext4 rw,errors=remount-ro 0 1
$SHARE_TAG $GUEST_SHARE_MOUNT 9p ro,trans=virtio,version=9p2000.L,msize=262144,nofail 0 0
EOF
	mkdir -p "$root$GUEST_SHARE_MOUNT" "$root/etc/modules-load.d" "$root/usr/local/sbin"
	printf '9pnet_virtio\n9p\n' >"$root/etc/modules-load.d/vimigrate-share.conf"

	# The address: vimigrate.ip=ADDR/LEN and vimigrate.gw=GW on the kernel
	# command line (one image for every guest of the suite).
	cat >"$root/usr/local/sbin/vimigrate-guest-net" <<'EOF'
#!/bin/sh
# Gives eth0 the address the kernel command line names (vimigrate.ip=, .gw=).
set -eu
ip= gw=
for arg in $(cat /proc/cmdline); do
	case $arg in
	vimigrate.ip=*) ip=${arg#*=} ;;
	vimigrate.gw=*) gw=${arg#*=} ;;
	esac
done
[ -n "$ip" ] || { echo "vimigrate-guest-net: no vimigrate.ip= on the kernel command line" >&2; exit 1; }
ip link set lo up
ip addr replace "$ip" dev eth0
ip link set eth0 up
[ -z "$gw" ] || ip route replace default via "$gw"
EOF
	cat >"$root/etc/systemd/system/vimigrate-guest-net.service" <<'EOF'
[Unit]
Description=vimigrate guest: eth0's address from the kernel command line
BindsTo=sys-subsystem-net-devices-eth0.device
After=sys-subsystem-net-devices-eth0.device
Wants=network.target
Before=network.target docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/vimigrate-guest-net

[Install]
WantedBy=multi-user.target
EOF

	# This boot's inputs from the share, copied into place before dockerd.
	cat >"$root/usr/local/sbin/vimigrate-guest-inputs" <<EOF
#!/bin/sh
# Installs this boot's TLS certificates and vimigrate-runtime from the share.
set -eu
s=$GUEST_SHARE_MOUNT
install -d -m 0755 $GUEST_TLS_DIR "$(dirname "$RUNTIME_BIN")"
install -m 0644 "\$s/ca.pem" "\$s/server-cert.pem" $GUEST_TLS_DIR/
install -m 0600 "\$s/server-key.pem" $GUEST_TLS_DIR/
install -m 0755 "\$s/vimigrate-runtime" $RUNTIME_BIN
EOF
	cat >"$root/etc/systemd/system/vimigrate-guest-inputs.service" <<EOF
[Unit]
Description=vimigrate guest: TLS certificates and vimigrate-runtime from the host's share
RequiresMountsFor=$GUEST_SHARE_MOUNT
Before=docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/vimigrate-guest-inputs

[Install]
WantedBy=multi-user.target
EOF

	# dockerd: the TLS API on every address, the unix socket for the guest's
	# own CLI (the beacon), checkpoint/restore. Debian's docker.service
	# Requires=docker.socket, which a drop-in cannot undo: that socket unit
	# still binds /run/docker.sock first, and dockerd replaces the socket file
	# with its own. --dns 127.0.0.1 as on the lab's other providers: no
	# container's query is sent anywhere.
	mkdir -p "$root/etc/systemd/system/docker.service.d"
	cat >"$root/etc/systemd/system/docker.service.d/vimigrate.conf" <<EOF
[Unit]
Requires=vimigrate-guest-inputs.service vimigrate-guest-net.service
After=vimigrate-guest-inputs.service vimigrate-guest-net.service

[Service]
ExecStart=
ExecStart=$GUEST_DOCKERD --containerd=/run/containerd/containerd.sock
EOF
	# The vimigrate runtime, as p_daemon_json registers it on the providers.
	mkdir -p "$root/etc/docker"
	printf '{"runtimes": {"vimigrate": {"path": "%s", "runtimeArgs": ["--vimigrate-runc=%s"]}}}\n' \
		"$RUNTIME_BIN" "$RUNC_BIN" >"$root/etc/docker/daemon.json"
	# The lab's CRIU (sid's 4.2.1 in its own prefix, with its loader: it runs
	# on any libc) first on every PATH, before trixie's 4.1.1: measured, 4.1.1
	# on kernel 6.12 fails to restore a dump of the host's 6.18 in its vDSO
	# handling ("vdso: ELF header magic mismatch"), and a destination's CRIU
	# older than the source's is what the preflight refuses.
	mkdir -p "$root$(dirname "$CRIU_PREFIX")" "$root$(dirname "$CRIU_WRAPPER")"
	cp -a "$CRIU_PREFIX" "$root$CRIU_PREFIX"
	install -m 0755 "$CRIU_WRAPPER" "$root$CRIU_WRAPPER"
	# runc's CRIU options, the lines up/criu-conf.sh gives the host's.
	mkdir -p "$root/etc/criu" "$root$LAB_LOG"
	printf '%s\n' '# vimigrate lab: options for runc-driven CRIU runs' \
		"log-file $LAB_LOG/criu-runc.log" tcp-close skip-in-flight >"$root/etc/criu/runc.conf"

	# The beacon: once `docker info` answers, one line on the virtio-serial
	# port (and the console) the host waits for. The CRIU facts ride along:
	# criu_check is last since its value has spaces ("Looks good.").
	cat >"$root/usr/local/sbin/vimigrate-guest-ready" <<EOF
#!/bin/sh
# Tells the host (virtio-serial port $READY_PORT) that dockerd answers.
port=/dev/virtio-ports/$READY_PORT
EOF
	cat >>"$root/usr/local/sbin/vimigrate-guest-ready" <<'EOF'
say() { echo "$*" >"$port"; echo "$*" >/dev/console; }
up_s() { cut -d' ' -f1 /proc/uptime; }
i=0
until docker info >/dev/null 2>&1; do
	i=$((i + 1))
	if [ "$i" -ge 200 ] || systemctl -q is-failed docker.service vimigrate-guest-net.service \
		vimigrate-guest-inputs.service; then
		say "VIMIGRATE-FAILED uptime=$(up_s) docker=$(systemctl is-active docker.service)"
		journalctl -b --no-pager -n 80 -u vimigrate-guest-net -u vimigrate-guest-inputs \
			-u containerd -u docker >/dev/console 2>&1
		exit 1
	fi
	sleep 1
done
docker=$(docker version -f '{{.Server.Version}}' 2>/dev/null)
criu=$(criu --version 2>/dev/null | sed -n 's/^Version: *//p')
if criu check --feature mem_dirty_track >/dev/null 2>&1; then dirty=yes; else dirty=no; fi
check=$(criu check 2>&1 | tail -n 1)
say "VIMIGRATE-READY uptime=$(up_s) docker=$docker criu=${criu:-none} dirty_track=$dirty criu_check=$check"
EOF
	cat >"$root/etc/systemd/system/vimigrate-guest-ready.service" <<'EOF'
[Unit]
Description=vimigrate guest: tell the host that dockerd answers
Wants=docker.service
After=docker.service

[Service]
Type=oneshot
RemainAfterExit=yes
TimeoutStartSec=infinity
ExecStart=/usr/local/sbin/vimigrate-guest-ready

[Install]
WantedBy=multi-user.target
EOF
	# A cgroup v1 guest boots without systemd, this script under tini as PID
	# 1 (see cgroup_args): systemd mounts v1 hierarchies its own way
	# (cpu,cpuacct together, its controller set), and CRIU restores a
	# container's cgroup mounts only into the same layout as it dumped.
	cat >"$root/usr/local/sbin/vimigrate-guest-init" <<EOF
#!/bin/sh
# The cgroup v1 guest's init (under tini): the mounts systemd would make, the
# cgroup hierarchies vimigrate.cgroups= names (the lab host's own layout),
# eth0, this boot's inputs, containerd and dockerd, the readiness beacon.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
exec >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm /dev/mqueue
mount -t devpts -o gid=5,mode=620,ptmxmode=000 devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t mqueue mqueue /dev/mqueue
mount -o remount,rw /
mount -t tmpfs -o mode=755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mkdir -p /run/lock $LAB_LOG
arg() { for a in \$(cat /proc/cmdline); do case \$a in "\$1"=*) echo "\${a#*=}" ;; esac; done; }
hostname "\$(arg systemd.hostname)"
mount -t tmpfs -o mode=755 tmpfs /sys/fs/cgroup
for dir in \$(arg vimigrate.cgroups | tr ':' ' '); do
	mkdir -p "/sys/fs/cgroup/\$dir"
	case \$dir in
	unified) mount -t cgroup2 cgroup2 "/sys/fs/cgroup/\$dir" ;;
	systemd) mount -t cgroup -o none,name=systemd cgroup "/sys/fs/cgroup/\$dir" ;;
	*) mount -t cgroup -o "\$dir" cgroup "/sys/fs/cgroup/\$dir" ;;
	esac || echo "vimigrate-guest-init: cannot mount cgroup \$dir"
done
for m in 9pnet_virtio 9p overlay br_netfilter veth bridge; do modprobe "\$m" 2>/dev/null; done
/usr/local/sbin/vimigrate-guest-net
mkdir -p $GUEST_SHARE_MOUNT
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=262144 $SHARE_TAG $GUEST_SHARE_MOUNT
/usr/local/sbin/vimigrate-guest-inputs
containerd >$LAB_LOG/containerd.log 2>&1 &
$GUEST_DOCKERD --containerd=/run/containerd/containerd.sock >$LAB_LOG/dockerd.log 2>&1 &
/usr/local/sbin/vimigrate-guest-ready || tail -n 40 $LAB_LOG/dockerd.log
while :; do sleep 3600; done
EOF
	chmod 755 "$root"/usr/local/sbin/vimigrate-guest-{net,inputs,ready,init}
	chroot "$root" systemctl enable -q vimigrate-guest-net.service vimigrate-guest-inputs.service \
		vimigrate-guest-ready.service docker.service
	# Nothing periodic in a throwaway guest.
	chroot "$root" systemctl disable -q e2scrub_all.timer e2scrub_reap.service 2>/dev/null || true
	# The debs are in the cache outside (sync-out ran first); not in the image.
	rm -f "$root"/var/cache/apt/archives/*.deb
}

# The build inputs' hash: every function that shapes the image, the package
# list and the values baked in. A change of any of them rebuilds the image.
image_key() {
	{
		declare -f build_image guest_customize
		printf '%s\n' "$1" "${GUEST_PACKAGES[@]}" "$IMAGE_SIZE" "$RUNTIME_BIN" "$RUNC_BIN" "$LAB_LOG" \
			"$(criu_version "$CRIU_WRAPPER")" "$CRIU_PREFIX" \
			"$TLS_PORT" "$READY_PORT" "$SHARE_TAG" "$GUEST_TLS_DIR" "$GUEST_SHARE_MOUNT"
	} | sha256sum | cut -c1-16
}

image_dir() { echo "$GUEST_DATA/$1/$(image_key "$1")"; }

image_ok() {
	local dir=$1
	[[ -s $dir/base.raw && -s $dir/vmlinuz && -s $dir/initrd.img && -s $dir/build.json ]]
}

# Builds suite $1's image into image_dir (a staging dir first, renamed when
# complete). Sets BUILD_SECONDS.
BUILD_SECONDS=0
build_image() {
	local suite=$1 dir stage debs mirror start=$SECONDS blog kernel
	dir=$(image_dir "$suite")
	debs="$GUEST_DATA/debs/$suite"
	stage="$GUEST_DATA/$suite/build.new"
	blog="$LAB_LOG/guest-build-$suite.log"
	mirror=$(debian_mirror)
	unmount_under "$stage"
	rm -rf "$stage"
	mkdir -p "$stage/rootfs" "$debs" "$LAB_LOG"
	log "guest: building the $suite image ($(basename "$dir")) from $mirror; log: $blog"
	# Root mode (we are root), no recommends. The debs live on in $debs: the
	# setup hook puts them where apt looks, the first customize hook takes
	# the new ones back out (essential/unlink is skipped so that the
	# essential set's debs are still there to be taken).
	# shellcheck disable=SC2016 # $1 is mmdebstrap's, expanded by its hook shell
	if ! mmdebstrap --mode=root --variant=apt --components=main \
		--aptopt='Acquire::Check-Valid-Until "false"' --aptopt='APT::Install-Recommends "false"' \
		--include="$(IFS=,; echo "${GUEST_PACKAGES[*]}")" \
		--skip=essential/unlink \
		--setup-hook='mkdir -p "$1/var/cache/apt/archives"' \
		--setup-hook="sync-in $debs /var/cache/apt/archives/" \
		--customize-hook="sync-out /var/cache/apt/archives $debs" \
		--customize-hook="bash $LAB_SCRIPTS_DIR/guest.sh _customize \"\$1\"" \
		"$suite" "$stage/rootfs" "$mirror" >"$blog" 2>&1; then
		tail -n 30 "$blog" >&2
		unmount_under "$stage"
		die "guest: mmdebstrap of $suite failed (log: $blog)"
	fi
	rm -f "$debs/lock"
	rm -rf "$debs/partial"
	kernel=$(basename "$(readlink "$stage/rootfs/vmlinuz")")
	cp -L "$stage/rootfs/vmlinuz" "$stage/vmlinuz"
	cp -L "$stage/rootfs/initrd.img" "$stage/initrd.img"
	# What the image holds, for the facts and for whoever debugs it.
	dpkg-query --admindir="$stage/rootfs/var/lib/dpkg" -W -f '${Package} ${Version}\n' >"$stage/packages"
	mkfs.ext4 -q -F -L vimigrate-root -d "$stage/rootfs" "$stage/base.raw" "$IMAGE_SIZE" ||
		die "guest: mkfs.ext4 of the $suite image failed"
	rm -rf "$stage/rootfs"
	BUILD_SECONDS=$((SECONDS - start))
	jq -n --arg suite "$suite" --arg key "$(basename "$dir")" --argjson seconds "$BUILD_SECONDS" \
		--arg kernel "$kernel" \
		'{suite: $suite, key: $key, kernel: $kernel, build_seconds: $seconds, built_at: (now | todate)}' >"$stage/build.json"
	rm -rf "$dir"
	mv "$stage" "$dir"
	log "guest: $suite image built in ${BUILD_SECONDS}s ($(du -sh --apparent-size "$dir/base.raw" | cut -f1) sparse, $(du -sh "$dir/base.raw" | cut -f1) used)"
	prune_images "$suite"
}

# Removes suite $1's images of other keys, unless a running guest boots from
# one (its overlay's backing file).
prune_images() {
	local suite=$1 keep d f used=()
	keep=$(image_dir "$suite")
	for f in "$LAB_RUN"/guest/*/backing; do
		[[ -s $f ]] && used+=("$(<"$f")")
	done
	for d in "$GUEST_DATA/$suite"/*/; do
		d=${d%/}
		[[ $d != "$keep" && -f $d/build.json ]] || continue
		[[ " ${used[*]} " != *" $d "* ]] || continue
		rm -rf "$d"
		log "guest: removed the outdated image $d"
	done
}

# Builds suite $1's image unless the current one is cached (or $2 is
# "force"). One build per suite at a time.
ensure_image() {
	local suite=$1 force=${2:-} dir
	dir=$(image_dir "$suite")
	mkdir -p "$GUEST_DATA/$suite"
	exec 8>"$GUEST_DATA/$suite/.build.lock"
	flock 8
	BUILD_SECONDS=0
	if [[ -n $force ]] || ! image_ok "$dir"; then
		build_image "$suite"
	else
		log "guest: $suite image $(basename "$dir") is cached"
	fi
	exec 8>&-
}

# --- per-boot inputs ---------------------------------------------------------

# True when the guest's server certificate exists, chains to the current lab
# CA, names the guest's address and lasts another day.
guest_cert_ok() {
	local dir="$G_RUN/tls"
	[[ -s $dir/server-cert.pem && -s $dir/server-key.pem ]] || return 1
	openssl verify -CAfile "$TLS_CA" "$dir/server-cert.pem" >/dev/null 2>&1 || return 1
	openssl x509 -noout -checkend 86400 -in "$dir/server-cert.pem" >/dev/null 2>&1 || return 1
	openssl x509 -noout -checkip "$G_ADDR" -in "$dir/server-cert.pem" 2>/dev/null | grep -q 'does match'
}

# A server certificate for the guest (SAN: its address and name), signed by
# the lab CA, with the v3 extensions rustls insists on (as up/tls.sh makes
# the providers'). The key is 0600 from the start.
ensure_guest_cert() {
	local dir="$G_RUN/tls"
	[[ -s $TLS_CA && -s $TLS_CA_KEY && -s $TLS_CLIENT_CERT && -s $TLS_CLIENT_KEY ]] ||
		die "guest: the lab's TLS material is missing in $TLS_DIR (make lab-up makes it)"
	guest_cert_ok && return 0
	log "$G_NAME: generating its server certificate (IP:$G_ADDR, DNS:$G_NAME)"
	(
		umask 077
		rm -rf "$dir.new"
		mkdir -p "$dir.new"
		cat >"$dir.new/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = IP:$G_ADDR,DNS:$G_NAME
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
		openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir.new/server-key.pem" 2>/dev/null
		openssl req -new -key "$dir.new/server-key.pem" -subj "/CN=$G_NAME" -config "$dir.new/openssl.cnf" \
			-out "$dir.new/server.csr" 2>/dev/null
		openssl x509 -req -in "$dir.new/server.csr" -CA "$TLS_CA" -CAkey "$TLS_CA_KEY" \
			-set_serial "0x$(openssl rand -hex 16)" -days 365 \
			-extfile "$dir.new/openssl.cnf" -extensions server -out "$dir.new/server-cert.pem" 2>/dev/null
		rm -f "$dir.new/server.csr" "$dir.new/openssl.cnf"
	) || die "$G_NAME: openssl failed to make its server certificate"
	chmod 644 "$dir.new/server-cert.pem"
	chmod 600 "$dir.new/server-key.pem"
	rm -rf "$dir"
	mv "$dir.new" "$dir"
	guest_cert_ok || die "$G_NAME: its new server certificate does not verify against $TLS_CA"
}

# The share for this boot: the CA, the guest's server certificate and key,
# and the host's vimigrate-runtime (read-only to the guest).
fill_share() {
	local share="$G_RUN/share"
	[[ -x $RUNTIME_BIN ]] || die "guest: no $RUNTIME_BIN on the host (make lab-up builds and installs it)"
	rm -rf "$share"
	mkdir -m 0700 "$share"
	install -m 0644 "$TLS_CA" "$share/ca.pem"
	install -m 0644 "$G_RUN/tls/server-cert.pem" "$share/server-cert.pem"
	install -m 0600 "$G_RUN/tls/server-key.pem" "$share/server-key.pem"
	install -m 0755 "$RUNTIME_BIN" "$share/vimigrate-runtime"
}

# --- network -------------------------------------------------------------------

# The guest's tap on the host bridge (and the bridge itself, when the lab has
# not made it yet).
setup_tap() {
	setup_host_bridge
	ip link show "$G_TAP" >/dev/null 2>&1 || ip tuntap add dev "$G_TAP" mode tap
	ip link set "$G_TAP" master "$HOST_BRIDGE" up
}

remove_tap() { ip link del "$G_TAP" 2>/dev/null || true; }

# The kernel arguments of the guest's cgroup version. CRIU restores the mount
# tree it dumped, and a container's tree holds the cgroup hierarchies, so a
# container dumped on the lab host (cgroup v1) restores only where the same
# hierarchies are mounted: measured, a v2 guest fails ("mnt: No mapping for
# ... mountpoint"), and so does a v1 guest booted by systemd (it co-mounts
# cpu,cpuacct and mounts more controllers). A v1 guest therefore boots
# vimigrate-guest-init under tini, which mounts exactly the host's
# hierarchies (vimigrate.cgroups=, read from this host's /proc/mounts); a v2
# guest boots systemd.
cgroup_args() {
	if [[ $G_CGROUP == 1 ]]; then
		local dirs
		dirs=$(awk '$2 ~ "^/sys/fs/cgroup/[^/]+$" && ($3 == "cgroup" || $3 == "cgroup2") {
			sub("^/sys/fs/cgroup/", "", $2); print $2 }' /proc/mounts | paste -sd:)
		echo " vimigrate.cgroups=$dirs init=/usr/bin/docker-init -- /usr/local/sbin/vimigrate-guest-init"
	fi
}

# 52:54:00 (qemu's prefix) and the address's last three octets.
guest_mac() {
	local b c d
	IFS=. read -r _ b c d <<<"$G_ADDR"
	printf '52:54:00:%02x:%02x:%02x\n' "$b" "$c" "$d"
}

# --- boot ----------------------------------------------------------------------

# The beacon line the guest wrote, empty while there is none.
beacon() { grep -aE '^VIMIGRATE-(READY|FAILED) ' "$G_RUN/ready.log" 2>/dev/null | tail -n 1 || true; }

boot_failed() {
	log "$G_NAME: last lines of $G_RUN/serial.log:"
	tail -n 40 "$G_RUN/serial.log" >&2 2>/dev/null || true
	die "$G_NAME: $*"
}

# Boots the guest from suite image $1 on a fresh overlay and waits for its
# API; sets BOOT_SECONDS.
BOOT_SECONDS=0
boot_guest() {
	local dir=$1 start line deadline pid
	mkdir -p "$G_RUN"
	rm -f "$G_RUN/disk.qcow2" "$G_RUN/ready.log" "$G_RUN/qmp.sock" "$(g_pidfile)" "$G_RUN/boot.json"
	[[ ! -f $G_RUN/serial.log ]] || mv -f "$G_RUN/serial.log" "$G_RUN/serial.prev.log"
	qemu-img create -q -f qcow2 -b "$dir/base.raw" -F raw "$G_RUN/disk.qcow2"
	echo "$dir" >"$G_RUN/backing"
	fill_share
	setup_tap
	log "$G_NAME: booting Debian $G_SUITE ($(basename "$dir")) at $G_ADDR on $G_TAP (qemu TCG, -cpu $G_CPU, ${G_MEM} MiB)"
	start=$(date +%s.%N)
	env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin qemu-system-x86_64 \
		-name "vimigrate-$G_NAME" -machine q35 -accel tcg,tb-size=256 -cpu "$G_CPU" -smp 1 -m "$G_MEM" \
		-kernel "$dir/vmlinuz" -initrd "$dir/initrd.img" \
		-append "root=/dev/vda rw console=ttyS0 net.ifnames=0 systemd.hostname=$G_NAME vimigrate.ip=$G_ADDR/$PUBLIC_PREFIX_LEN vimigrate.gw=$HOST_ADDR$(cgroup_args)" \
		-drive "file=$G_RUN/disk.qcow2,if=virtio,format=qcow2,cache=unsafe,discard=unmap" \
		-netdev "tap,id=n0,ifname=$G_TAP,script=no,downscript=no" \
		-device "virtio-net-pci,netdev=n0,mac=$(guest_mac)" \
		-fsdev "local,id=fs0,path=$G_RUN/share,security_model=none,readonly=on" \
		-device "virtio-9p-pci,fsdev=fs0,mount_tag=$SHARE_TAG" \
		-device virtio-serial-pci -chardev "file,id=ready,path=$G_RUN/ready.log" \
		-device "virtserialport,chardev=ready,name=$READY_PORT" \
		-serial "file:$G_RUN/serial.log" -display none -monitor none \
		-qmp "unix:$G_RUN/qmp.sock,server=on,wait=off" \
		-no-reboot -daemonize -pidfile "$(g_pidfile)" ||
		die "$G_NAME: qemu did not start"
	pid=$(g_pid)
	[[ -n $pid ]] || boot_failed "qemu exited at once"
	# Waits without the lab lock: a boot takes a minute.
	deadline=$((SECONDS + READY_TIMEOUT))
	until [[ -n $(beacon) ]]; do
		[[ -n $(g_pid) ]] || boot_failed "qemu exited during the boot"
		((SECONDS < deadline)) || boot_failed "no readiness beacon within ${READY_TIMEOUT}s"
		sleep 1
	done
	line=$(beacon)
	[[ $line == VIMIGRATE-READY* ]] || boot_failed "the guest reports: $line"
	deadline=$((SECONDS + API_TIMEOUT))
	until g_ping; do
		((SECONDS < deadline)) || boot_failed "$(g_host) does not answer /_ping within ${API_TIMEOUT}s of the beacon"
		sleep 1
	done
	BOOT_SECONDS=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN {printf "%.1f", e - s}')
	log "$G_NAME: API ready at $(g_host) after ${BOOT_SECONDS}s (${line#VIMIGRATE-READY })"
}

# --- images and facts ------------------------------------------------------------

# Imports .lab/images/<name>.tar as $2 through the guest's API unless the
# image there carries the same content hash (as up/images.sh does on the
# providers, with the same label).
guest_image() {
	local name=$1 ref=$2 want have old changes=() line
	want=$(<"$IMAGES_DIR/$name.sha256")
	have=$(gdocker image inspect -f "{{index .Config.Labels \"$IMAGE_HASH_LABEL\"}}" "$ref" 2>/dev/null || true)
	[[ $have != "$want" ]] || return 0
	old=$(gdocker image inspect -f '{{.Id}}' "$ref" 2>/dev/null || true)
	while IFS= read -r line; do
		[[ -n $line ]] && changes+=(--change "$line")
	done <"$IMAGES_DIR/$name.changes"
	changes+=(--change "LABEL $IMAGE_HASH_LABEL=$want")
	gdocker import "${changes[@]}" "$IMAGES_DIR/$name.tar" "$ref" >/dev/null ||
		die "$G_NAME: docker import of $ref failed"
	log "$G_NAME: imported $ref"
	[[ -z $old ]] || gdocker rmi "$old" >/dev/null 2>&1 || true
}

guest_images() {
	local name
	for name in counter redis web; do
		if [[ ! -s $IMAGES_DIR/$name.tar || ! -s $IMAGES_DIR/$name.sha256 ]]; then
			bash "$LAB_SCRIPTS_DIR/images/build.sh"
			break
		fi
	done
	guest_image counter "$IMAGE_COUNTER"
	guest_image redis "$IMAGE_REDIS"
	guest_image web "$IMAGE_WEB"
}

# .lab/<NAME>.json: how to reach the guest, and what it runs (from its API
# and its beacon); boot.json keeps what only the boot measured.
write_facts() {
	local info version line pid facts
	info=$(gapi /info) || die "$G_NAME: GET /info failed"
	version=$(gapi /version) || die "$G_NAME: GET /version failed"
	line=$(beacon)
	pid=$(g_pid)
	facts=$(jq -n --arg name "$G_NAME" --arg host "$(g_host)" --arg addr "$G_ADDR" \
		--arg ca "$TLS_CA" --arg cert "$TLS_CLIENT_CERT" --arg key "$TLS_CLIENT_KEY" \
		--argjson pid "$pid" --arg cpu "$G_CPU" --argjson mem "$G_MEM" --arg suite "$G_SUITE" \
		--arg tap "$G_TAP" --arg run "$G_RUN" --arg beacon "$line" \
		--argjson info "$info" --argjson version "$version" --slurpfile boot "$G_RUN/boot.json" '
		def comp($n): [$version.Components[]? | select(.Name == $n) | .Version][0];
		def field($k): ($beacon | capture("(^| )\($k)=(?<v>[^ ]*)").v) // null;
		{name: $name, docker_host: $host, public_address: $addr,
		 tls: {ca: $ca, cert: $cert, key: $key},
		 pid: $pid, accel: "tcg", cpu: $cpu, memory_mib: $mem, suite: $suite, tap: $tap,
		 kernel: $info.KernelVersion, os: $info.OperatingSystem, cgroup_version: $info.CgroupVersion,
		 experimental: $info.ExperimentalBuild, runtimes: ($info.Runtimes | keys),
		 engine: $version.Version, api_version: $version.ApiVersion,
		 containerd: comp("containerd"), runc: comp("runc"),
		 criu: field("criu"), criu_check: (($beacon | capture(" criu_check=(?<v>.*)$").v) // null),
		 dirty_track: (field("dirty_track") == "yes"),
		 serial_log: "\($run)/serial.log"} + $boot[0]') || die "$G_NAME: cannot assemble its facts"
	mkdir -p "$LAB_DIR"
	echo "$facts" >"$(p_facts_json "$G_NAME").tmp"
	mv "$(p_facts_json "$G_NAME").tmp" "$(p_facts_json "$G_NAME")"
}

# --- commands ----------------------------------------------------------------------

cmd_up() {
	local dir pid tool
	for tool in qemu-system-x86_64 qemu-img mmdebstrap mkfs.ext4; do
		command -v "$tool" >/dev/null || die "guest: $tool is missing: run bash scripts/lab/install-deps.sh"
	done
	python3 "$LAB_SCRIPTS_DIR/describe.py" check
	mkdir -p "$LAB_RUN" "$LAB_DATA" "$LAB_LOG"
	ensure_guest_cert
	pid=$(g_pid)
	if [[ -n $pid ]]; then
		if [[ -z $(beacon) ]]; then
			# Another `up` is booting it: wait for that boot's beacon.
			log "$G_NAME: qemu (pid $pid) is booting; waiting"
			local deadline=$((SECONDS + READY_TIMEOUT))
			until [[ -n $(beacon) || -z $(g_pid) ]] || ((SECONDS >= deadline)); do sleep 1; done
		fi
		if g_ping; then
			log "$G_NAME: already running (pid $pid) and answering at $(g_host)"
			[[ $(<"$G_RUN/backing") == "$(image_dir "$G_SUITE")" ]] ||
				log "$G_NAME: it runs an older image; guest.sh down && guest.sh up boots the current one"
			guest_images
			write_facts
			echo "$G_NAME: ready at $(g_host) ($(p_facts_json "$G_NAME"))"
			return
		fi
		log "$G_NAME: qemu (pid $pid) runs but $(g_host) does not answer; restarting it"
		cmd_down >/dev/null
	fi
	ensure_image "$G_SUITE"
	dir=$(image_dir "$G_SUITE")
	boot_guest "$dir"
	jq -n --argjson boot "$BOOT_SECONDS" --argjson build "$BUILD_SECONDS" --arg key "$(basename "$dir")" \
		--slurpfile image "$dir/build.json" \
		'{boot_seconds: $boot, build_seconds: $build, image_key: $key, image_built_at: $image[0].built_at,
		  booted_at: (now | todate)}' >"$G_RUN/boot.json"
	guest_images
	write_facts
	echo "$G_NAME: ready at $(g_host) ($(p_facts_json "$G_NAME"))"
}

cmd_down() {
	local pid
	pid=$(g_pid)
	if [[ -n $pid ]]; then
		# The guest's disk is a throwaway overlay: no shutdown to wait for.
		stop_pids 10 "$pid"
		log "$G_NAME: qemu (pid $pid) stopped"
	fi
	remove_tap
	rm -rf "$G_RUN/share"
	rm -f "$G_RUN/disk.qcow2" "$G_RUN/qmp.sock" "$G_RUN/ready.log" "$(g_pidfile)" "$G_RUN/boot.json" \
		"$G_RUN/backing" "$(p_facts_json "$G_NAME")"
	echo "$G_NAME: stopped"
}

cmd_status() {
	local pid
	pid=$(g_pid)
	if [[ -n $pid ]] && g_ping && [[ -s $(p_facts_json "$G_NAME") ]]; then
		jq . "$(p_facts_json "$G_NAME")"
	elif [[ -n $pid ]]; then
		echo "$G_NAME: STARTING or not answering (qemu pid $pid; console: $G_RUN/serial.log)"
		return 1
	else
		echo "$G_NAME: DOWN"
		return 1
	fi
}

cmd=${1:-}
(($#)) && shift
case $cmd in
up | down | status)
	(($# <= 1)) || usage
	load_guest "${1:-$DEFAULT_GUEST}"
	"cmd_$cmd"
	;;
build)
	force=
	if [[ ${1:-} == --force ]]; then
		force=1
		shift
	fi
	(($# <= 1)) || usage
	load_guest "${1:-$DEFAULT_GUEST}"
	ensure_image "$G_SUITE" "$force"
	echo "$G_NAME: $G_SUITE image $(image_dir "$G_SUITE") (build ${BUILD_SECONDS}s)"
	;;
_customize)
	# mmdebstrap's customize hook (build_image), not for direct use.
	(($# == 1)) || usage
	guest_customize "$1"
	;;
*) usage ;;
esac
