#!/usr/bin/env bash
# End-to-end check of a running lab (after up.sh): published ports answer at
# each provider's public address from the host and from the other provider,
# the web image counts visits in Redis, DNS takes a TSIG-signed update, and a
# Docker checkpoint (CRIU through runc) works. Talks only to the lab's own
# addresses. Leaves no container behind; exits non-zero on the first failure.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

NAME=vmlab-selftest
# Host ports of its own: not the demo's (16379, 8080), whose VI stays up after
# `make demo`, nor the cfy tests' (18080, 18099).
REDIS_PORT=26379
WEB_PORT=28080
cleanup() {
	local p
	for p in "${PROVIDERS[@]}"; do
		mapfile -t ids < <(pdocker "$p" ps -aq --filter "label=$NAME" 2>/dev/null)
		((${#ids[@]} == 0)) || pdocker "$p" rm -f "${ids[@]}" >/dev/null 2>&1 || true
		pdocker "$p" network rm "$NAME" >/dev/null 2>&1 || true
	done
	rm -rf "${CKPT_DIR:-}"
}
trap cleanup EXIT
ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }

# RESP PING over bash's /dev/tcp, optionally from inside netns $3.
redis_ping() {
	local addr=$1 port=$2 ns=${3:-}
	local cmd="exec 3<>/dev/tcp/$addr/$port && printf 'PING\r\n' >&3 && timeout 2 head -c 7 <&3"
	if [[ -n $ns ]]; then
		nsenter --net="/run/netns/$ns" timeout 5 bash -c "$cmd"
	else
		timeout 5 bash -c "$cmd"
	fi
}

bash "$LAB_SCRIPTS_DIR/status.sh" >/dev/null || fail "status.sh reports the lab down"

for p in "${PROVIDERS[@]}"; do
	pdocker "$p" run -d --label "$NAME" --name "$NAME-redis" -p "$REDIS_PORT:6379" "$IMAGE_REDIS" >/dev/null
done
for p in "${PROVIDERS[@]}"; do
	addr=${P_ADDR[$p]}
	for _ in $(seq 50); do redis_ping "$addr" "$REDIS_PORT" >/dev/null 2>&1 && break; sleep 0.1; done
	[[ $(redis_ping "$addr" "$REDIS_PORT") == +PONG* ]] || fail "PING $addr:$REDIS_PORT from the host"
	ok "$p redis answers at $addr:$REDIS_PORT from the host"
	for q in "${PROVIDERS[@]}"; do
		[[ $q != "$p" ]] || continue
		[[ $(redis_ping "$addr" "$REDIS_PORT" "${P_NETNS[$q]}") == +PONG* ]] || fail "PING $addr:$REDIS_PORT from $q"
		ok "$p redis answers at $addr:$REDIS_PORT from $q"
	done
done

p=${PROVIDERS[0]}
addr=${P_ADDR[$p]}
pdocker "$p" network create --label "$NAME" "$NAME" >/dev/null
pdocker "$p" run -d --label "$NAME" --name "$NAME-r" --network "$NAME" --network-alias redis "$IMAGE_REDIS" >/dev/null
pdocker "$p" run -d --label "$NAME" --name "$NAME-web" --hostname selftest-web --network "$NAME" -p "$WEB_PORT:8080" "$IMAGE_WEB" >/dev/null
for _ in $(seq 50); do curl -sf --max-time 2 "http://$addr:$WEB_PORT/healthz" >/dev/null && break; sleep 0.1; done
v1=$(curl -sf --max-time 5 "http://$addr:$WEB_PORT/") || fail "GET / on the web container"
v2=$(curl -sf --max-time 5 "http://$addr:$WEB_PORT/") || fail "GET / on the web container"
[[ $v1 == "visits=1 host=selftest-web" && $v2 == "visits=2 host=selftest-web" ]] ||
	fail "visits did not count up: '$v1' then '$v2'"
ok "web counts visits in redis ($v1, $v2)"

name="selftest.$DNS_ZONE"
nsupdate -k "$TSIG_KEY_FILE" <<EOF || fail "nsupdate"
server $DNS_ADDR $DNS_PORT
zone $DNS_ZONE
update add $name $DNS_TTL A ${P_ADDR[$p]}
send
EOF
[[ $(dig +short @"$DNS_ADDR" -p "$DNS_PORT" "$name" A) == "${P_ADDR[$p]}" ]] || fail "dig $name"
nsupdate -k "$TSIG_KEY_FILE" <<EOF
server $DNS_ADDR $DNS_PORT
zone $DNS_ZONE
update delete $name A
send
EOF
ok "TSIG update of $name and read-back"

CKPT_DIR=$(mktemp -d /tmp/vmlab-selftest.XXXXXX)
pdocker "$p" run -d --label "$NAME" --name "$NAME-counter" "$IMAGE_COUNTER" >/dev/null
sleep 2
pdocker "$p" checkpoint create --checkpoint-dir "$CKPT_DIR" "$NAME-counter" ck1 >/dev/null ||
	fail "docker checkpoint create (CRIU log: $LAB_LOG/criu-runc.log)"
[[ -s $CKPT_DIR/ck1/inventory.img ]] || fail "checkpoint has no CRIU images"
ok "docker checkpoint create through CRIU $(criu_version "$CRIU_WRAPPER")"
echo "selftest: all passed"
