#!/usr/bin/env bash
# Starts the provider lab: provider-a and provider-b (a dockerd each, in its own
# network namespace with a public address on the host bridge vmlab0), a BIND9
# server for vi.test. on 127.0.0.1:5300, and the test images on both
# providers; then writes .lab/lab.json. Idempotent: whatever already runs is
# kept, so a second run only checks and rewrites lab.json.
set -euo pipefail
# shellcheck source=scripts/lab/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

T0=$(date +%s.%N)
[[ $EUID -eq 0 ]] || die "up.sh must run as root"

bash "$LAB_SCRIPTS_DIR/install-deps.sh"
mkdir -p "$LAB_RUN" "$LAB_DATA" "$LAB_LOG" "$LAB_DIR" "$DNS_DIR"

# --- network -----------------------------------------------------------------

# True when /run/netns/$1 is a live namespace, not a file left by a reboot
# (/run is not a tmpfs on these machines).
netns_mounted() {
	awk -v m="/run/netns/$1" '$2 == m {found=1} END {exit !found}' /proc/mounts
}

setup_host_bridge() {
	ip link show "$HOST_BRIDGE" >/dev/null 2>&1 || ip link add "$HOST_BRIDGE" type bridge
	ip -4 addr show dev "$HOST_BRIDGE" | grep -q "inet $HOST_ADDR/" ||
		ip addr add "$HOST_ADDR/$PUBLIC_PREFIX_LEN" dev "$HOST_BRIDGE"
	ip link set "$HOST_BRIDGE" up
	# br_netfilter is loaded on the host, so frames bridged between the
	# providers go through the host's FORWARD chain: make sure a DROP policy
	# there (e.g. from a host dockerd) cannot cut provider-to-provider traffic.
	iptables -C FORWARD -i "$HOST_BRIDGE" -o "$HOST_BRIDGE" -j ACCEPT 2>/dev/null ||
		iptables -I FORWARD -i "$HOST_BRIDGE" -o "$HOST_BRIDGE" -j ACCEPT
}

setup_provider_net() {
	local p=$1 ns=${P_NETNS[$1]} veth=${P_VETH[$1]} addr=${P_ADDR[$1]}
	if ! netns_mounted "$ns"; then
		rm -f "/run/netns/$ns"
		ip netns add "$ns"
	fi
	if ! ip link show "$veth" >/dev/null 2>&1; then
		ip link add "$veth" type veth peer name eth0 netns "$ns"
	fi
	ip link set "$veth" master "$HOST_BRIDGE" up
	ip -n "$ns" link set lo up
	ip -n "$ns" -4 addr show dev eth0 | grep -q "inet $addr/" ||
		ip -n "$ns" addr add "$addr/$PUBLIC_PREFIX_LEN" dev eth0
	ip -n "$ns" link set eth0 up
	# The host does not forward (ip_forward=0), so this route only gives
	# containers a gateway that ends at the host: nothing leaves the machine.
	ip -n "$ns" route replace default via "$HOST_ADDR"
}

# --- CRIU config for runc ----------------------------------------------------

ensure_runc_conf() {
	# CRIU reads this file whenever runc drives it: the only way to give
	# Docker-driven dumps options. Lines are added when missing, never removed,
	# so options added by hand survive.
	# - log-file: runc deletes CRIU's restore log when a restore fails; a fixed
	#   log file keeps the last dump/restore log.
	# - tcp-close: a container with an established TCP connection (Redis with
	#   its web client) cannot be dumped otherwise; its connections come back
	#   closed and the peer reconnects. (Keeping them needs tcp-established and
	#   the same address on the destination: the network work decides that.)
	local conf=/etc/criu/runc.conf line
	mkdir -p /etc/criu
	[[ -e $conf ]] || printf '# vimigrate lab: options for runc-driven CRIU runs\n' >"$conf"
	for line in "log-file $LAB_LOG/criu-runc.log" "tcp-close"; do
		grep -qxF "$line" "$conf" || printf '%s\n' "$line" >>"$conf"
	done
}

# --- providers ---------------------------------------------------------------

declare -A STARTED=()

start_dockerd() {
	local p=$1 pid
	pid=$(live_pid "$(p_pidfile "$p")" dockerd)
	if [[ -n $pid ]] && p_ping "$p"; then
		log "$p: dockerd already running (pid $pid)"
		return
	fi
	if [[ -n $pid ]]; then
		# Alive but not answering: it may still be starting; wait_dockerd decides.
		STARTED[$p]=$pid
		return
	fi
	# A dockerd that died may have left its containerd, shims and mounts.
	stop_provider "$p"
	mkdir -p "$(p_run_dir "$p")" "$(p_exec_root "$p")" "$(p_data_root "$p")"
	# An empty config of its own, so /etc/docker/daemon.json (if any) never
	# leaks into the lab.
	echo '{}' >"$(p_run_dir "$p")/daemon.json"
	log "$p: starting dockerd in netns ${P_NETNS[$p]}"
	# nsenter, not `ip netns exec`: the latter remounts /sys and hides the
	# cgroup mounts dockerd needs. setsid detaches it from this script's
	# session (a Ctrl-C on `make` must not kill the lab); env -i keeps the
	# caller's DOCKER_* and proxy variables out. --dns 127.0.0.1: no container
	# query may leave the machine; on the default bridge it is refused at once.
	# (On user-defined networks Docker 20.10's embedded DNS never answers a
	# name it cannot forward: the client times out, see the web image.)
	nsenter --net="/run/netns/${P_NETNS[$p]}" -- \
		env -i PATH="$LAB_PATH" HOME=/root setsid dockerd \
		--experimental \
		--config-file "$(p_run_dir "$p")/daemon.json" \
		--data-root "$(p_data_root "$p")" \
		--exec-root "$(p_exec_root "$p")" \
		--pidfile "$(p_pidfile "$p")" \
		-H "unix://$(p_sock "$p")" \
		--bip "${P_BIP[$p]}" \
		--default-address-pool "base=${P_POOL[$p]},size=24" \
		--dns 127.0.0.1 \
		>>"$(p_log "$p")" 2>&1 </dev/null &
	STARTED[$p]=$!
}

wait_dockerd() {
	local p=$1 deadline=$((SECONDS + 60))
	[[ -n ${STARTED[$p]:-} ]] || return 0
	until p_ping "$p"; do
		if ! kill -0 "${STARTED[$p]}" 2>/dev/null && [[ -z $(live_pid "$(p_pidfile "$p")" dockerd) ]]; then
			tail -n 20 "$(p_log "$p")" >&2
			die "$p: dockerd exited (log: $(p_log "$p"))"
		fi
		((SECONDS < deadline)) || die "$p: dockerd does not answer on $(p_sock "$p") (log: $(p_log "$p"))"
		sleep 0.2
	done
	log "$p: dockerd ready (pid $(live_pid "$(p_pidfile "$p")" dockerd))"
}

# --- DNS -----------------------------------------------------------------------

write_named_conf() {
	mkdir -p "$DNS_DIR/work" "$DNS_DIR/zones"
	if [[ ! -s $TSIG_KEY_FILE ]]; then
		# umask so the secret is never readable by others, not even briefly.
		(umask 077 && tsig-keygen -a hmac-sha256 "$TSIG_KEY_NAME" >"$TSIG_KEY_FILE.tmp")
		mv "$TSIG_KEY_FILE.tmp" "$TSIG_KEY_FILE"
	fi
	chmod 600 "$TSIG_KEY_FILE"
	cat >"$DNS_DIR/named.conf" <<EOF
// vimigrate lab DNS: generated by scripts/lab/up.sh, rewritten on each start.
options {
	directory "$DNS_DIR/work";
	pid-file "$NAMED_PIDFILE";
	session-keyfile "$DNS_DIR/work/session.key";
	managed-keys-directory "$DNS_DIR/work";
	listen-on port $DNS_PORT { 127.0.0.1; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify no;
	allow-query { 127.0.0.1; };
	allow-transfer { none; };
};
// No rndc channel: the lab stops named by its pid.
controls { };
include "$TSIG_KEY_FILE";
zone "$DNS_ZONE" {
	type primary;
	file "$DNS_DIR/zones/vi.test.zone";
	allow-update { key "$TSIG_KEY_NAME"; };
};
logging {
	channel lab { file "$LAB_LOG/named.log" versions 2 size 5m; print-time yes; severity info; };
	category default { lab; };
	category lame-servers { null; };
};
EOF
	# A fresh zone (and no journal) on every start: tests begin from a
	# known state, and a stale record from an earlier run cannot linger.
	cat >"$DNS_DIR/zones/vi.test.zone" <<EOF
\$TTL $DNS_TTL
$DNS_ZONE IN SOA ns.$DNS_ZONE hostmaster.$DNS_ZONE ( 1 $DNS_TTL $DNS_TTL 60 $DNS_TTL )
$DNS_ZONE IN NS ns.$DNS_ZONE
ns.$DNS_ZONE IN A 127.0.0.1
EOF
	rm -f "$DNS_DIR/zones/vi.test.zone.jnl"
}

dig_soa() {
	dig +short +time=1 +tries=1 @127.0.0.1 -p "$DNS_PORT" SOA "$DNS_ZONE" 2>/dev/null
}

start_named() {
	local pid deadline
	pid=$(live_pid "$NAMED_PIDFILE" named)
	if [[ -n $pid ]]; then
		log "dns: named already running (pid $pid)"
		return
	fi
	# Another named (a lab started from another checkout before DNS state was host-wide, or
	# anything else) on the port would silently share it: refuse instead.
	if ss -Hlnu "sport = :$DNS_PORT" | grep -q .; then
		die "dns: UDP port $DNS_PORT is already in use: $(ss -Hlnup "sport = :$DNS_PORT" | head -1)"
	fi
	write_named_conf
	named-checkconf "$DNS_DIR/named.conf" || die "dns: named.conf rejected"
	named-checkzone -q "$DNS_ZONE" "$DNS_DIR/zones/vi.test.zone" || die "dns: zone rejected"
	log "dns: starting named on 127.0.0.1:$DNS_PORT"
	# named daemonizes itself and writes its pidfile. Run as root (no -u): the
	# config and key live in the root-owned lab directory.
	setsid named -c "$DNS_DIR/named.conf" -4 >>"$LAB_LOG/named.stderr" 2>&1 </dev/null
	deadline=$((SECONDS + 20))
	until [[ -n $(dig_soa) ]]; do
		((SECONDS < deadline)) || die "dns: named does not answer (logs: $LAB_LOG/named.log, $LAB_LOG/named.stderr)"
		sleep 0.2
	done
}

# A real dynamic update with the TSIG key, read back, then removed again.
check_dns() {
	local name="lab-check.$DNS_ZONE" got
	nsupdate -k "$TSIG_KEY_FILE" <<EOF || die "dns: nsupdate with the TSIG key failed"
server 127.0.0.1 $DNS_PORT
zone $DNS_ZONE
update delete $name A
update add $name $DNS_TTL A $HOST_ADDR
send
EOF
	got=$(dig +short @127.0.0.1 -p "$DNS_PORT" "$name" A)
	[[ $got == "$HOST_ADDR" ]] || die "dns: $name resolved to '$got', expected $HOST_ADDR"
	nsupdate -k "$TSIG_KEY_FILE" <<EOF || die "dns: nsupdate delete failed"
server 127.0.0.1 $DNS_PORT
zone $DNS_ZONE
update delete $name A
send
EOF
}

# --- images ------------------------------------------------------------------

# Imports .lab/images/<name>.tar as $2 on provider $1 unless the image there
# already carries the same content hash.
ensure_image() {
	local p=$1 name=$2 ref=$3 want have old changes=()
	want=$(<"$IMAGES_DIR/$name.sha256")
	have=$(pdocker "$p" image inspect -f "{{index .Config.Labels \"$IMAGE_HASH_LABEL\"}}" "$ref" 2>/dev/null || true)
	[[ $have != "$want" ]] || return 0
	old=$(pdocker "$p" image inspect -f '{{.Id}}' "$ref" 2>/dev/null || true)
	while IFS= read -r line; do
		[[ -n $line ]] && changes+=(--change "$line")
	done <"$IMAGES_DIR/$name.changes"
	changes+=(--change "LABEL $IMAGE_HASH_LABEL=$want")
	pdocker "$p" import "${changes[@]}" "$IMAGES_DIR/$name.tar" "$ref" >/dev/null ||
		die "$p: docker import of $ref failed"
	log "$p: imported $ref"
	# The replaced image is now untagged; drop it unless a container uses it.
	[[ -z $old ]] || pdocker "$p" rmi "$old" >/dev/null 2>&1 || true
}

ensure_images() {
	bash "$LAB_SCRIPTS_DIR/images/build.sh"
	local p pids=()
	# Both providers import in parallel: each has its own daemon and disk.
	for p in "${PROVIDERS[@]}"; do
		(
			ensure_image "$p" counter "$IMAGE_COUNTER"
			ensure_image "$p" redis "$IMAGE_REDIS"
			ensure_image "$p" web "$IMAGE_WEB"
		) &
		pids+=($!)
	done
	for pid in "${pids[@]}"; do wait "$pid" || die "image import failed"; done
}

# --- lab.json ------------------------------------------------------------------

write_lab_json() {
	local seconds=$1 providers='{}' p criu_v
	for p in "${PROVIDERS[@]}"; do
		providers=$(jq -c --arg p "$p" \
			--arg host "unix://$(p_sock "$p")" --arg addr "${P_ADDR[$p]}" \
			--arg ns "${P_NETNS[$p]}" --arg root "$(p_data_root "$p")" \
			--arg subnet "${P_SUBNET[$p]}" \
			--argjson pid "$(live_pid "$(p_pidfile "$p")" dockerd)" \
			'. + {($p): {name: $p, docker_host: $host, public_address: $addr,
			  netns: $ns, data_root: $root, bridge_subnet: $subnet, pid: $pid}}' \
			<<<"$providers")
	done
	criu_v=$(criu_version "$CRIU_WRAPPER")
	jq -n --argjson seconds "$seconds" --arg host "$HOST_ADDR" \
		--argjson providers "$providers" \
		--argjson port "$DNS_PORT" --arg zone "$DNS_ZONE" --argjson ttl "$DNS_TTL" \
		--arg key "$TSIG_KEY_NAME" --arg keyfile "$TSIG_KEY_FILE" \
		--argjson named "$(live_pid "$NAMED_PIDFILE" named)" \
		--arg counter "$IMAGE_COUNTER" --arg redis "$IMAGE_REDIS" --arg web "$IMAGE_WEB" \
		--arg criu "$CRIU_WRAPPER" --arg criu_v "$criu_v" \
		'{version: 1, setup_seconds: $seconds, host_address: $host,
		  providers: $providers,
		  dns: {server: "127.0.0.1", port: $port, zone: $zone, ttl: $ttl,
		        tsig_key_name: $key, tsig_algorithm: "hmac-sha256",
		        tsig_key_file: $keyfile, pid: $named},
		  images: {counter: $counter, redis: $redis, web: $web},
		  criu: {path: $criu, version: $criu_v}}' >"$LAB_JSON.tmp"
	mv "$LAB_JSON.tmp" "$LAB_JSON"
}

# --- main --------------------------------------------------------------------

setup_host_bridge
for p in "${PROVIDERS[@]}"; do setup_provider_net "$p"; done
ensure_runc_conf
# Start both daemons and named before waiting on any: they boot in parallel.
for p in "${PROVIDERS[@]}"; do start_dockerd "$p"; done
start_named
for p in "${PROVIDERS[@]}"; do wait_dockerd "$p"; done
check_dns
ensure_images

elapsed=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
write_lab_json "$elapsed"
echo "lab-up: ready in $elapsed s ($LAB_JSON)"
