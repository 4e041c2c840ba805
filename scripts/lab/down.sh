#!/usr/bin/env bash
# Stops what up.sh started, by the pids it recorded: each provider's containers,
# dockerd and its containerd (and any shim, proxy or mount they left), also
# provider-nocriu if a test left it running, the qemu guests, named, pdns_server;
# then removes the veths, the vmlab0 bridge and the namespaces. Images persist
# in the data-roots unless --purge is given. Idempotent.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $EUID -eq 0 ]] || die "down.sh must run as root"
purge=
case ${1:-} in
--purge) purge=1 ;;
"") ;;
*) die "usage: down.sh [--purge]" ;;
esac

# The qemu guests first: their taps hang on the bridge removed below.
for g in $(jq -r '(.guests // [])[].name' "$LAB_DESCRIPTION"); do
	bash "$LAB_SCRIPTS_DIR/guest.sh" down "$g"
done

# ALL_PROVIDERS: also provider-nocriu, which tests start on demand.
for p in "${ALL_PROVIDERS[@]}"; do
	stop_provider "$p"
	rm -f "$(p_facts_json "$p")"
done

pid=$(live_pid "$NAMED_PIDFILE" named)
[[ -z $pid ]] || stop_pids 10 "$pid"
rm -f "$NAMED_PIDFILE"
pid=$(live_pid "$PDNS_PIDFILE" pdns_server)
[[ -z $pid ]] || stop_pids 10 "$pid"
rm -f "$PDNS_PIDFILE"

for p in "${ALL_PROVIDERS[@]}"; do remove_provider_net "$p"; done
ip link del "$HOST_BRIDGE" 2>/dev/null || true
if command -v iptables >/dev/null; then
	while iptables -D FORWARD -i "$HOST_BRIDGE" -o "$HOST_BRIDGE" -j ACCEPT 2>/dev/null; do :; done
fi
rmdir "$LAB_RUN" 2>/dev/null || true
# `ip netns add` bind-mounts /run/netns on itself, the lab's shims made
# /run/containerd/s: undo these once nothing else uses them.
if [[ -d /run/netns && -z $(ls -A /run/netns) ]]; then
	umount /run/netns 2>/dev/null || true
	rmdir /run/netns 2>/dev/null || true
fi
rmdir /run/containerd/s /run/containerd 2>/dev/null || true
# dockerd's hard-coded plugin discovery directory.
rmdir /run/docker/plugins /run/docker 2>/dev/null || true
rm -f "$LAB_JSON"

if [[ -n $purge ]]; then
	for p in "${ALL_PROVIDERS[@]}"; do
		if [[ -n $(mounts_under "$LAB_DATA/$p") ]]; then
			log "$p: still mounted below $LAB_DATA/$p, keeping it"
		else
			rm -rf "${LAB_DATA:?}/$p"
		fi
	done
	rm -rf "$IMAGES_DIR" "$DNS_DIR" "$PDNS_DIR" "$TLS_DIR"
	log "purged data-roots, image tars, the DNS state (TSIG key, PowerDNS database and API key) and the TLS certificates"
fi
echo "lab-down: stopped"
