#!/usr/bin/env bash
# Shows the provider lab: each provider's dockerd (pid, versions, experimental,
# TLS listener, running containers), the DNS servers (named, PowerDNS and its
# API), the images and CRIU.
# Exits non-zero when any part is down.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

failed=0
bad() {
	echo "  DOWN: $*"
	failed=1
}

for p in "${PROVIDERS[@]}"; do
	echo "$p (netns ${P_NETNS[$p]}, public ${P_ADDR[$p]}, $(p_sock "$p"))"
	pid=$(live_pid "$(p_pidfile "$p")" dockerd)
	if [[ -z $pid ]]; then
		bad "dockerd not running"
		continue
	fi
	if ! p_ping "$p"; then
		bad "dockerd pid $pid does not answer /_ping"
		continue
	fi
	pdocker "$p" version -f "  dockerd pid $pid: server {{.Server.Version}}, API {{.Server.APIVersion}}, experimental {{.Server.Experimental}}"
	p_versions "$p" | jq -r '"  stack: Docker \(.engine) (API \(.api)), containerd \(.containerd), runc \(.runc), CRIU \(.criu), kernel \(.kernel), cgroup v\(.cgroup_version), images in \(.image_store) (\(.suite))"'
	if [[ -n ${P_TLS[$p]:-} ]]; then
		# The TLS listener, with the lab's client certificate (curl checks the
		# server certificate against the lab CA and the address).
		tls_url="https://${P_ADDR[$p]}:$TLS_PORT/_ping"
		tls_ping=$(curl -s --max-time 2 --cacert "$TLS_CA" --cert "$TLS_CLIENT_CERT" --key "$TLS_CLIENT_KEY" \
			"$tls_url" 2>/dev/null || true)
		if [[ $tls_ping == OK ]]; then
			echo "  TLS: tcp://${P_ADDR[$p]}:$TLS_PORT answers (client certificate from $TLS_DIR)"
		else
			bad "$p does not answer /_ping over TLS at tcp://${P_ADDR[$p]}:$TLS_PORT"
		fi
	fi
	images=$(pdocker "$p" images --format '{{.Repository}}:{{.Tag}}' | grep -c '^vimigrate-lab/' || true)
	echo "  lab images: $images of 3"
	((images == 3)) || bad "$p lacks some lab images"
	echo "  running containers:"
	pdocker "$p" ps --format '{{.Names}}  {{.Image}}  {{.Status}}  {{.Ports}}' | sed 's/^/    /'
done

# dns_server_answers LABEL PIDFILE PROCESS PORT: the server runs and answers the zone's SOA.
# Returns 1 (after saying so) when it does not.
dns_server_answers() {
	local label=$1 pidfile=$2 process=$3 port=$4 pid soa
	pid=$(live_pid "$pidfile" "$process")
	if [[ -z $pid ]]; then
		bad "$process not running"
		return 1
	fi
	soa=$(dig +short +time=1 +tries=1 @"$DNS_ADDR" -p "$port" SOA "$DNS_ZONE" || true)
	if [[ -n $soa ]]; then
		echo "  $label pid $pid: SOA $soa"
	else
		bad "$process pid $pid does not answer SOA $DNS_ZONE"
	fi
}

echo "dns ($DNS_ADDR:$DNS_PORT, zone $DNS_ZONE)"
dns_server_answers named "$NAMED_PIDFILE" named "$DNS_PORT" || true

echo "powerdns ($DNS_ADDR:$PDNS_PORT, zone $DNS_ZONE, API $PDNS_API_URL)"
if dns_server_answers pdns_server "$PDNS_PIDFILE" pdns_server "$PDNS_PORT"; then
	# The key goes in as a header read from stdin: not on the command line.
	api=$(printf 'X-API-Key: %s\n' "$(cat "$PDNS_API_KEY_FILE" 2>/dev/null)" |
		curl -s --noproxy '*' --max-time 2 -H @- "$PDNS_API_URL/api/v1/servers/$PDNS_SERVER_ID" 2>/dev/null |
		jq -r 'select(.daemon_type == "authoritative") | .version' 2>/dev/null || true)
	if [[ -n $api ]]; then
		echo "  API: $PDNS_API_URL answers with the key ($PDNS_API_KEY_FILE), version $api"
	else
		bad "the PowerDNS API at $PDNS_API_URL does not answer GET /api/v1/servers/$PDNS_SERVER_ID with the key"
	fi
fi

# The guests run on demand (make test-guest): one that is not running is not a failure.
for g in $(jq -r '(.guests // [])[].name' "$LAB_DESCRIPTION"); do
	facts=$(p_facts_json "$g")
	if [[ -f $facts ]] && kill -0 "$(jq -r .pid "$facts")" 2>/dev/null; then
		jq -r '"\(.name) (qemu guest, \(.docker_host), -cpu \(.cpu))\n  stack: Docker \(.engine) (API \(.api_version)), containerd \(.containerd), runc \(.runc), CRIU \(.criu), kernel \(.kernel), cgroup v\(.cgroup_version); booted in \(.boot_seconds) s"' "$facts"
	else
		echo "$g (qemu guest): not running (make test-guest starts it)"
	fi
done

echo "criu ($CRIU_WRAPPER)"
v=$(criu_version "$CRIU_WRAPPER" || true)
if [[ -n $v ]] && version_ge "$v" "$CRIU_MIN_VERSION"; then
	echo "  version $v"
else
	bad "no CRIU >= $CRIU_MIN_VERSION at $CRIU_WRAPPER"
fi

if [[ -f $LAB_JSON ]]; then
	echo "lab.json: $LAB_JSON"
else
	bad "no $LAB_JSON"
fi
exit "$failed"
