# shellcheck shell=bash
# Variables here are used by the scripts that source this file.
# shellcheck disable=SC2034
# Settings and helpers shared by the provider lab scripts (sourced, never run).
#
# The lab is two Docker "providers", each a dockerd in its own network
# namespace with its own public address on the host bridge vmlab0, plus a BIND9
# server for the zone vi.test. Every path and address is defined here so that
# up.sh, down.sh and status.sh can never disagree about what the lab owns.

LAB_SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$LAB_SCRIPTS_DIR/../.." && pwd)

# Repo-relative state (git-ignored): lab.json and image tars.
LAB_DIR="$REPO_ROOT/.lab"
LAB_JSON="$LAB_DIR/lab.json"
IMAGES_DIR="$LAB_DIR/images"

# Host-wide state. /run is lost at reboot (pids, sockets, exec-roots); the
# data-roots under /var/lib survive down/up so built images persist.
LAB_RUN=/run/vimigrate-lab
LAB_DATA=/var/lib/vimigrate-lab
LAB_LOG=/var/log/vimigrate-lab
# DNS state is host-wide like the providers: one lab per machine, whichever checkout
# started it, so a second checkout finds the running named instead of racing it.
DNS_DIR="$LAB_RUN/dns"

HOST_BRIDGE=vmlab0
HOST_ADDR=10.231.0.1
PUBLIC_PREFIX_LEN=24

PROVIDERS=(provider-a provider-b)
declare -A P_NETNS=([provider-a]=vmlab-a [provider-b]=vmlab-b)
declare -A P_ADDR=([provider-a]=10.231.0.11 [provider-b]=10.231.0.12)
declare -A P_BIP=([provider-a]=172.31.1.1/24 [provider-b]=172.31.2.1/24)
declare -A P_SUBNET=([provider-a]=172.31.1.0/24 [provider-b]=172.31.2.0/24)
declare -A P_POOL=([provider-a]=172.29.0.0/16 [provider-b]=172.30.0.0/16)
# Host end of each provider's veth (max 15 chars); the namespace end is eth0.
declare -A P_VETH=([provider-a]=veth-vmlab-a [provider-b]=veth-vmlab-b)

DNS_PORT=5300
DNS_ZONE=vi.test.
DNS_TTL=5
TSIG_KEY_NAME=vimigrate-lab
TSIG_KEY_FILE="$DNS_DIR/tsig.key"
NAMED_PIDFILE="$DNS_DIR/named.pid"

CRIU_PREFIX=/opt/vimigrate-criu
CRIU_WRAPPER=/usr/local/sbin/criu
CRIU_MIN_VERSION=4.2

IMAGE_COUNTER=vimigrate-lab/counter:latest
IMAGE_REDIS=vimigrate-lab/redis:latest
IMAGE_WEB=vimigrate-lab/web:latest
IMAGE_HASH_LABEL=org.vimigrate.lab.rootfs-sha256

# Debian's 20.10 client; /usr/local/bin/docker may be a newer client whose
# default API version these 20.10 daemons (max 1.41) refuse.
DOCKER_CLI=/usr/bin/docker
export DOCKER_API_VERSION=1.41

# dockerd's PATH: runc looks up `criu` there, and it must find the >= 4.2
# wrapper in /usr/local/sbin before any distro criu.
LAB_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

log() { printf '%s\n' "lab: $*" >&2; }
die() { printf '%s\n' "lab: error: $*" >&2; exit 1; }

p_run_dir() { echo "$LAB_RUN/$1"; }
p_exec_root() { echo "$LAB_RUN/$1/exec"; }
p_sock() { echo "$LAB_RUN/$1/docker.sock"; }
p_pidfile() { echo "$LAB_RUN/$1/dockerd.pid"; }
p_data_root() { echo "$LAB_DATA/$1/docker"; }
p_log() { echo "$LAB_LOG/$1-dockerd.log"; }
# dockerd's managed containerd writes its pid here (inside the exec-root).
p_containerd_pidfile() { echo "$LAB_RUN/$1/exec/containerd/containerd.pid"; }

# The docker CLI bound to one provider.
pdocker() {
	local p=$1
	shift
	"$DOCKER_CLI" -H "unix://$(p_sock "$p")" "$@"
}

# Pid from a pidfile, empty when the file is missing, the process is gone or
# (pids get reused, and /run survives reboots here) its name is not $2.
live_pid() {
	local f=$1 comm=${2:-} pid
	[[ -s $f ]] || return 0
	pid=$(<"$f")
	[[ $pid =~ ^[0-9]+$ ]] || return 0
	kill -0 "$pid" 2>/dev/null || return 0
	# A zombie still answers kill -0 until init reaps it (lazily, here).
	[[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 0
	if [[ -z $comm || $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]]; then echo "$pid"; fi
}

# Sends signal $1 to the given pids, waits up to $2 seconds for them to exit.
# Returns non-zero if some are still alive.
signal_wait() {
	local sig=$1 timeout=$2 pid deadline
	shift 2
	(($#)) || return 0
	kill "-$sig" "$@" 2>/dev/null || true
	deadline=$((SECONDS + timeout))
	while :; do
		local alive=()
		for pid in "$@"; do
			if kill -0 "$pid" 2>/dev/null && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; then
				alive+=("$pid")
			fi
		done
		((${#alive[@]})) || return 0
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

# Stops a process gracefully (SIGTERM), then SIGKILL after $1 seconds.
stop_pids() {
	local timeout=$1
	shift
	signal_wait TERM "$timeout" "$@" || signal_wait KILL 5 "$@" || true
}

# Pids of the processes whose network namespace is the lab netns $1: the
# provider's dockerd, containerd, shims and docker-proxies (never a host
# process, so these are exactly the lab's own).
pids_in_netns() {
	local id d
	id=$(netns_id "$1")
	[[ -n $id ]] || return 0
	for d in /proc/[0-9]*; do
		[[ $(readlink "$d/ns/net" 2>/dev/null) == "$id" ]] && echo "${d#/proc/}"
	done
	return 0
}

# Pids of processes in the cgroup of any container known to provider $1's
# data-root (container processes live in their own netns, so pids_in_netns
# does not see them).
pids_in_containers() {
	local dir ids=() f
	dir="$(p_data_root "$1")/containers"
	[[ -d $dir ]] || return 0
	mapfile -t ids < <(find "$dir" -mindepth 1 -maxdepth 1 -type d -printf '%f\n')
	((${#ids[@]})) || return 0
	local re
	re="/docker/($(IFS='|'; echo "${ids[*]}"))\$"
	for f in /proc/[0-9]*/cgroup; do
		grep -Eq "$re" "$f" 2>/dev/null && { f=${f#/proc/}; echo "${f%/cgroup}"; }
	done
	return 0
}

# Mount points at or below $1 as listed in /proc/mounts, deepest first
# (dockerd also bind-mounts its data-root onto itself).
mounts_under() {
	awk -v dir="$1" -v pre="$1/" '$2 == dir || index($2, pre) == 1 {print $2}' /proc/mounts | sort -r
}

# Socket files a containerd 1.6 shim of provider $1 uses for container $2:
# /run/containerd/s/sha256(<containerd address>/<namespace>/<id>), outside
# the exec-root, and left behind when a shim is killed.
shim_socket() {
	local hash
	hash=$(printf '%s' "$(p_exec_root "$1")/containerd/containerd.sock/moby/$2" | sha256sum | cut -d' ' -f1)
	echo "/run/containerd/s/$hash"
}

# Unmounts everything below $1 (what a killed dockerd leaves behind:
# overlays, shm, netns bind mounts).
unmount_under() {
	local m
	while read -r m; do
		[[ -n $m ]] || continue
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "cannot unmount $m"
	done < <(mounts_under "$1")
}

# Stops everything a provider's dockerd started, then the daemon itself, and
# unmounts what it leaves. Safe when the provider is not running.
stop_provider() {
	local p=$1 ids=() known=() dockerd containerd id
	if [[ -d "$(p_data_root "$p")/containers" ]]; then
		mapfile -t known < <(find "$(p_data_root "$p")/containers" -mindepth 1 -maxdepth 1 -type d -printf '%f\n')
	fi
	if p_ping "$p"; then
		# Containers first, with SIGKILL: their PID 1 ignores SIGTERM (see
		# platform.md), and killing through the daemon also reaps the shims.
		mapfile -t ids < <(pdocker "$p" ps -aq 2>/dev/null)
		if ((${#ids[@]})); then
			timeout 60 "$DOCKER_CLI" -H "unix://$(p_sock "$p")" rm -f "${ids[@]}" >/dev/null 2>&1 ||
				log "$p: could not remove every container"
		fi
		pdocker "$p" network prune -f >/dev/null 2>&1 || true
	fi
	dockerd=$(live_pid "$(p_pidfile "$p")" dockerd)
	containerd=$(live_pid "$(p_containerd_pidfile "$p")" containerd)
	[[ -z $dockerd ]] || stop_pids 20 "$dockerd"
	[[ -z $containerd ]] || stop_pids 10 "$containerd"
	# Whatever survived a killed daemon: container processes, shims, proxies.
	local rest=()
	mapfile -t rest < <(pids_in_containers "$p"; pids_in_netns "${P_NETNS[$p]}")
	if ((${#rest[@]})); then
		log "$p: killing leftover processes ${rest[*]}"
		signal_wait KILL 5 "${rest[@]}" || log "$p: some processes would not die: ${rest[*]}"
	fi
	for id in "${known[@]}"; do
		[[ ! -S $(shim_socket "$p" "$id") ]] || rm -f "$(shim_socket "$p" "$id")"
	done
	unmount_under "$LAB_RUN/$p"
	unmount_under "$(p_data_root "$p")"
	# Only remove the run dir when nothing is mounted below it any more.
	if [[ -z $(mounts_under "$LAB_RUN/$p") ]]; then
		rm -rf "${LAB_RUN:?}/$p"
	fi
}

# True when the provider's daemon answers /_ping on its socket.
p_ping() {
	local sock
	sock=$(p_sock "$1")
	[[ -S $sock ]] || return 1
	[[ $(curl -s --max-time 2 --unix-socket "$sock" http://docker/_ping 2>/dev/null) == OK ]]
}

# "net:[inode]" of a named netns, empty when it does not exist.
netns_id() {
	local f="/run/netns/$1"
	[[ -e $f ]] || return 0
	echo "net:[$(stat -L -c %i "$f")]"
}

# Version of the criu found at $1 (e.g. 4.2.1), empty if it does not run.
criu_version() {
	"$1" --version 2>/dev/null | sed -n 's/^Version: *//p' | head -n1
}

# True when version $1 >= version $2.
version_ge() {
	[[ $(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1) == "$2" ]]
}
