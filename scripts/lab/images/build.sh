#!/usr/bin/env bash
# Builds the root filesystems of the lab's test images as reproducible tars:
#   .lab/images/<name>.tar      the rootfs (sorted, fixed mtimes and owners)
#   .lab/images/<name>.changes  the `docker import --change` lines (CMD, ENV, EXPOSE)
#   .lab/images/<name>.sha256   hash of tar + changes: equal hashes mean the image
#                               on a provider is current and need not be re-imported
# No registry is reachable, so images are assembled from host binaries (Debian's
# busybox-static and redis, and the labapp built by cargo) plus the libraries
# `ldd` lists for them.
#
# Usage: build.sh [counter|redis|web ...]   (default: all three)
set -euo pipefail
# shellcheck source=SCRIPTDIR/../common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../common.sh"

BUSYBOX=/bin/busybox
# Debian ships the one redis binary as redis-check-rdb (redis-tools); it acts
# as the server when its argv[0] is redis-server.
REDIS_BIN=/usr/bin/redis-check-rdb
LABAPP_BIN="$REPO_ROOT/target/release/vimigrate-labapp"

# Copies binary $2 into rootfs $1 at path $3, with every shared library
# `ldd` names (resolved through symlinks, kept at the path ldd printed).
add_binary() {
	local root=$1 src=$2 dest=$3 lib
	install -D -m 755 "$src" "$root$dest"
	while read -r lib; do
		[[ -e $root$lib ]] || install -D -m 755 "$(readlink -f "$lib")" "$root$lib"
	done < <(ldd "$src" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
}

# The skeleton every image shares: busybox with its applet links (so
# `docker exec ... sh` works), users, name service config, /tmp.
base_rootfs() {
	local root=$1 applet
	# mktemp made the root 0700; it becomes the container's /.
	chmod 755 "$root"
	mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,data,proc,sys,dev}
	chmod 1777 "$root/tmp"
	install -m 755 "$BUSYBOX" "$root/bin/busybox"
	while read -r applet; do
		[[ $applet == bin/busybox || -e $root/$applet ]] && continue
		mkdir -p "$root/$(dirname "$applet")"
		ln -s /bin/busybox "$root/$applet"
	done < <("$BUSYBOX" --list-full)
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
	printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
	: >"$root/etc/hosts"
	: >"$root/etc/resolv.conf"
	echo lab >"$root/etc/hostname"
}

build_counter() {
	local root=$1
	base_rootfs "$root"
	cat <<'EOF'
ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin
CMD ["sh", "-c", "i=0; while :; do echo $i; i=$((i+1)); sleep 1; done"]
EOF
}

build_redis() {
	local root=$1
	[[ -x $REDIS_BIN ]] || die "$REDIS_BIN missing (install-deps.sh installs redis-tools)"
	base_rootfs "$root"
	add_binary "$root" "$REDIS_BIN" /usr/bin/redis-server
	# The client too, so tests can `docker exec ... redis-cli`.
	add_binary "$root" /usr/bin/redis-cli /usr/bin/redis-cli
	cat <<'EOF'
ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin
WORKDIR /data
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no", "--bind", "0.0.0.0"]
EOF
}

build_web() {
	local root=$1
	base_rootfs "$root"
	mkdir -p "$root/etc/web"
	add_binary "$root" "$LABAPP_BIN" /usr/local/bin/vimigrate-labapp
	# RES_OPTIONS: Docker 20.10's embedded DNS never answers a name it cannot
	# resolve (e.g. the redis container is gone), so glibc's default 2 x 5 s
	# timeouts would turn a quick 503 into a 10 s hang.
	cat <<'EOF'
ENV PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ENV WEB_PORT=8080
ENV REDIS_ADDR=redis:6379
ENV WEB_CONFIG=/etc/web/web.conf
ENV RES_OPTIONS="timeout:1 attempts:1"
EXPOSE 8080
CMD ["/usr/local/bin/vimigrate-labapp"]
EOF
}

# True when <name>.tar is newer than every input it is made from, so a
# second lab-up skips the rebuild (and the sha256 stays the same anyway).
up_to_date() {
	local name=$1 tar="$IMAGES_DIR/$1.tar"
	shift
	[[ -s $tar && -s $IMAGES_DIR/$name.changes && -s $IMAGES_DIR/$name.sha256 ]] || return 1
	[[ -z $(find "$@" -newer "$tar" 2>/dev/null) ]]
}

build_one() {
	local name=$1 root changes inputs=("${BASH_SOURCE[0]}" "$BUSYBOX")
	case $name in
	redis) inputs+=("$REDIS_BIN" /usr/bin/redis-cli) ;;
	web)
		(cd "$REPO_ROOT" && cargo build --quiet --release -p vimigrate-labapp) >&2 ||
			die "cargo build of vimigrate-labapp failed"
		inputs+=("$LABAPP_BIN")
		;;
	esac
	up_to_date "$name" "${inputs[@]}" && return 0
	root=$(mktemp -d "$IMAGES_DIR/.$name.XXXXXX")
	changes="$IMAGES_DIR/$name.changes"
	"build_$name" "$root" >"$changes.tmp"
	# Reproducible tar: same inputs, same bytes, same hash.
	tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
		--format=gnu -C "$root" -cf "$IMAGES_DIR/$name.tar.tmp" .
	rm -rf "$root"
	mv "$changes.tmp" "$changes"
	mv "$IMAGES_DIR/$name.tar.tmp" "$IMAGES_DIR/$name.tar"
	cat "$IMAGES_DIR/$name.tar" "$changes" | sha256sum | cut -d' ' -f1 >"$IMAGES_DIR/$name.sha256"
}

mkdir -p "$IMAGES_DIR"
names=("$@")
((${#names[@]})) || names=(counter redis web)
for name in "${names[@]}"; do
	case $name in
	counter | redis | web) build_one "$name" ;;
	*) die "unknown image $name" ;;
	esac
done
