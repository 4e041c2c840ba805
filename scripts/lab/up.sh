#!/usr/bin/env bash
# Starts the provider lab: provider-a and provider-b (a dockerd each, in its own
# network namespace with a public address on the host bridge vmlab0), a BIND9
# server for vi.test. on 127.0.0.1:5300, a PowerDNS server for the same zone
# on 127.0.0.1:5301 with its HTTP API on 127.0.0.1:8081, and the test images on both
# providers; provider-b also serves its API over TLS on 10.231.0.12:2376 with
# certificates generated once under /run/vimigrate-lab/tls; then writes
# .lab/lab.json. Idempotent: whatever already runs is
# kept, so a second run only checks and rewrites lab.json.
set -euo pipefail
# shellcheck source=scripts/lab/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

T0=$(date +%s.%N)
[[ $EUID -eq 0 ]] || die "up.sh must run as root"

bash "$LAB_SCRIPTS_DIR/install-deps.sh"
mkdir -p "$LAB_RUN" "$LAB_DATA" "$LAB_LOG" "$LAB_DIR" "$DNS_DIR" "$PDNS_DIR"

# --- network -----------------------------------------------------------------

# setup_host_bridge and setup_provider_net live in common.sh
# (provider-nocriu.sh uses them too).

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
	# - skip-in-flight: connections still in a listening socket's accept queue
	#   (a server under load) would make every dump fail; they are dropped.
	for line in "log-file $LAB_LOG/criu-runc.log" "tcp-close" "skip-in-flight"; do
		grep -qxF "$line" "$conf" || printf '%s\n' "$line" >>"$conf"
	done
}

# --- vimigrate-runtime ---------------------------------------------------------

# Builds the runtime wrapper from this checkout (release) and installs it where
# the providers' daemon.json points. dockerd runs it afresh for every container
# operation, so a new build takes effect without a restart. `install` replaces
# the file (a new inode), never rewriting a binary that is being executed.
ensure_runtime() {
	command -v cargo >/dev/null || die "runtime: cargo is missing: install a Rust toolchain >= 1.85 (rustup)"
	(cd "$REPO_ROOT" && cargo build --quiet --release -p vimigrate-runtime) ||
		die "runtime: cargo build -p vimigrate-runtime failed"
	local built="$REPO_ROOT/target/release/vimigrate-runtime"
	if ! cmp -s "$built" "$RUNTIME_BIN"; then
		install -D -m 0755 "$built" "$RUNTIME_BIN"
		log "runtime: installed $RUNTIME_BIN"
	fi
	[[ -x $RUNC_BIN ]] || die "runtime: no runc at $RUNC_BIN"
}

# --- TLS ----------------------------------------------------------------------

# True when every TLS file exists, the certificates chain to their CA, the
# server certificate names every TLS provider's address, and none expires
# within a day: then nothing is regenerated.
tls_ok() {
	local f p
	for f in "$TLS_CA" "$TLS_CA_KEY" "$TLS_SERVER_CERT" "$TLS_SERVER_KEY" "$TLS_CLIENT_CERT" \
		"$TLS_CLIENT_KEY" "$TLS_WRONG_CA" "$TLS_WRONG_CA_KEY" "$TLS_WRONG_CLIENT_CERT" "$TLS_WRONG_CLIENT_KEY"; do
		[[ -s $f ]] || return 1
	done
	openssl verify -CAfile "$TLS_CA" "$TLS_SERVER_CERT" "$TLS_CLIENT_CERT" >/dev/null 2>&1 || return 1
	openssl verify -CAfile "$TLS_WRONG_CA" "$TLS_WRONG_CLIENT_CERT" >/dev/null 2>&1 || return 1
	for f in "$TLS_CA" "$TLS_SERVER_CERT" "$TLS_CLIENT_CERT" "$TLS_WRONG_CA" "$TLS_WRONG_CLIENT_CERT"; do
		openssl x509 -noout -checkend 86400 -in "$f" >/dev/null 2>&1 || return 1
	done
	for p in "${!P_TLS[@]}"; do
		openssl x509 -noout -checkip "${P_ADDR[$p]}" -in "$TLS_SERVER_CERT" 2>/dev/null | grep -q 'does match' || return 1
	done
}

# Writes a fresh P-256 key (PKCS#8 PEM) to $1; keys are never printed.
tls_key() {
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

# A self-signed CA: tls_ca DIR BASENAME CN (writes BASENAME.pem, BASENAME-key.pem).
tls_ca() {
	local dir=$1 name=$2 cn=$3
	tls_key "$dir/$name-key.pem"
	openssl req -x509 -new -key "$dir/$name-key.pem" -subj "/CN=$cn" -days 825 \
		-config "$dir/openssl.cnf" -extensions v3_ca -out "$dir/$name.pem" 2>/dev/null
}

# A leaf certificate signed by a CA: tls_leaf DIR CA_BASENAME CERT KEY CN SECTION.
tls_leaf() {
	local dir=$1 ca=$2 cert=$3 key=$4 cn=$5 ext=$6
	tls_key "$dir/$key"
	openssl req -new -key "$dir/$key" -subj "/CN=$cn" -config "$dir/openssl.cnf" -out "$dir/req.csr" 2>/dev/null
	openssl x509 -req -in "$dir/req.csr" -CA "$dir/$ca.pem" -CAkey "$dir/$ca-key.pem" \
		-set_serial "0x$(openssl rand -hex 16)" -days 825 \
		-extfile "$dir/openssl.cnf" -extensions "$ext" -out "$dir/$cert" 2>/dev/null
	rm -f "$dir/req.csr"
}

# Generates the lab's TLS material once: a lab CA, the TLS providers' server
# certificate, a client certificate, and an unrelated "wrong" CA with a client
# certificate of its own for negative tests. Sets TLS_REGENERATED when it had
# to, so that running TLS providers are restarted onto the new certificates.
TLS_REGENERATED=
ensure_tls() {
	tls_ok && return 0
	local tmp="$TLS_DIR.new" sans="" p
	for p in "${!P_TLS[@]}"; do sans+="IP:${P_ADDR[$p]},"; done
	log "tls: generating the lab CA and certificates in $TLS_DIR"
	rm -rf "$tmp"
	(
		# Keys are private from the moment they exist.
		umask 077
		mkdir -p "$tmp"
		# v3 extensions matter: rustls (webpki) rejects v1 leaf certificates and
		# CA certificates used as leaves; dockerd wants clientAuth on clients.
		cat >"$tmp/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = ${sans}DNS:$TLS_SERVER_DNS
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
		tls_ca "$tmp" ca "vimigrate lab CA"
		tls_leaf "$tmp" ca server-cert.pem server-key.pem "$TLS_SERVER_DNS" server
		tls_leaf "$tmp" ca cert.pem key.pem vimigrate-lab-client client
		tls_ca "$tmp" wrong-ca "vimigrate lab wrong CA (unrelated)"
		tls_leaf "$tmp" wrong-ca wrong-cert.pem wrong-key.pem vimigrate-lab-client client
		rm -f "$tmp/openssl.cnf"
	) || die "tls: openssl failed to generate the lab certificates"
	chmod 755 "$tmp"
	chmod 644 "$tmp"/*.pem
	chmod 600 "$tmp"/*key.pem
	rm -rf "$TLS_DIR"
	mv "$tmp" "$TLS_DIR"
	tls_ok || die "tls: the generated certificates do not verify"
	TLS_REGENERATED=1
}

# --- providers ---------------------------------------------------------------

# start_dockerd and wait_dockerd live in common.sh; a daemon running with
# other flags than these (e.g. provider-b from before it served TLS) is
# restarted there.

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

# --- PowerDNS --------------------------------------------------------------------

# The API key is made once and kept across restarts (only --purge drops it), so
# a client holding the key file keeps working. umask: never readable by others.
ensure_pdns_key() {
	if [[ ! -s $PDNS_API_KEY_FILE ]]; then
		(umask 077 && openssl rand -hex 32 >"$PDNS_API_KEY_FILE.tmp")
		mv "$PDNS_API_KEY_FILE.tmp" "$PDNS_API_KEY_FILE"
	fi
	chmod 600 "$PDNS_API_KEY_FILE"
}

# write_pdns_conf FILE DATABASE: the server's settings (pdnsutil reads the same
# ones, pointed at the database being built).
write_pdns_conf() {
	local file=$1 db=$2 key
	key=$(<"$PDNS_API_KEY_FILE")
	# The config carries the API key: 0600 from the start.
	(
		umask 077
		cat >"$file.tmp" <<EOF
# vimigrate lab PowerDNS: generated by scripts/lab/up.sh, rewritten on each start.
launch=gsqlite3
gsqlite3-database=$db
local-address=127.0.0.1:$PDNS_PORT
# Pidfile and control socket here, not in /run/pdns (the package's).
socket-dir=$PDNS_DIR
# up.sh backgrounds the server itself and logs its output; no fork, no
# guardian process, so the pidfile names the server itself.
daemon=no
guardian=no
disable-syslog=yes
loglevel=4
disable-axfr=yes
# No security-status query to secpoll.powerdns.com: the lab stays on loopback.
security-poll-suffix=
# Used when a record comes without a TTL, and in the SOA of the lab zone:
# short, like named's, so clients see changes within seconds.
default-ttl=$DNS_TTL
default-soa-content=ns1.@ hostmaster.@ 1 $DNS_TTL $DNS_TTL 60 $DNS_TTL
# No caches: an answer always reflects the database, also right after a change.
cache-ttl=0
query-cache-ttl=0
negquery-cache-ttl=0
api=yes
api-key=$key
webserver=yes
webserver-address=127.0.0.1
webserver-port=$PDNS_API_PORT
webserver-allow-from=127.0.0.1
EOF
	)
	mv "$file.tmp" "$file"
}

# A fresh database and zone on every start, like named's zone file: tests begin
# from a known state. Built aside and moved in, so a failed init leaves nothing
# half-made for the server to load.
init_pdns_db() {
	local tmp="$PDNS_DB.new"
	[[ -r $PDNS_SCHEMA ]] || die "pdns: no schema at $PDNS_SCHEMA (pdns-backend-sqlite3 missing?)"
	rm -f "$tmp"
	sqlite3 "$tmp" <"$PDNS_SCHEMA" || die "pdns: loading $PDNS_SCHEMA failed"
	# --config-name=init reads pdns-init.conf: the same settings on the new database.
	write_pdns_conf "$PDNS_DIR/pdns-init.conf" "$tmp"
	# Quiet unless it fails (it chats "Creating empty zone" on stderr).
	pdnsutil_init() {
		local out
		out=$(pdnsutil --config-dir="$PDNS_DIR" --config-name=init "$@" 2>&1) || { printf '%s\n' "$out" >&2; return 1; }
	}
	pdnsutil_init create-zone "$DNS_ZONE" "ns1.$DNS_ZONE" || die "pdns: create-zone failed"
	pdnsutil_init add-record "$DNS_ZONE" ns1 A "$DNS_TTL" 127.0.0.1 || die "pdns: add-record failed"
	# Each API change bumps the SOA serial by one, so a change is visible.
	pdnsutil_init set-meta "$DNS_ZONE" SOA-EDIT-API INCREASE || die "pdns: set-meta failed"
	rm -f "$PDNS_DIR/pdns-init.conf"
	mv "$tmp" "$PDNS_DB"
}

pdns_dig_soa() {
	dig +short +time=1 +tries=1 @127.0.0.1 -p "$PDNS_PORT" SOA "$DNS_ZONE" 2>/dev/null
}

# curl against the API with the lab key; the key goes in as a header read from
# stdin, so it never shows in the process list. Prints the body, then the HTTP
# status on a line of its own.
pdns_api() {
	local method=$1 path=$2
	shift 2
	printf 'X-API-Key: %s\n' "$(<"$PDNS_API_KEY_FILE")" |
		curl -s --noproxy '*' --max-time 5 -H @- -X "$method" -w '\n%{http_code}' "$@" "$PDNS_API_URL$path"
}

start_pdns() {
	local pid port deadline
	pid=$(live_pid "$PDNS_PIDFILE" pdns_server)
	if [[ -n $pid ]]; then
		log "pdns: pdns_server already running (pid $pid)"
		return
	fi
	# Something else on a port would silently take the lab's queries: refuse.
	for port in "u:$PDNS_PORT" "t:$PDNS_PORT" "t:$PDNS_API_PORT"; do
		if ss -Hln"${port%%:*}" "sport = :${port#*:}" | grep -q .; then
			die "pdns: port ${port#*:} is already in use: $(ss -Hlnp"${port%%:*}" "sport = :${port#*:}" | head -1)"
		fi
	done
	ensure_pdns_key
	write_pdns_conf "$PDNS_CONF" "$PDNS_DB"
	init_pdns_db
	log "pdns: starting pdns_server on 127.0.0.1:$PDNS_PORT (API $PDNS_API_URL)"
	# Root like named (the lab dir is root-owned); setsid so it outlives this
	# shell's session. It writes $PDNS_PIDFILE itself.
	setsid pdns_server --config-dir="$PDNS_DIR" >>"$LAB_LOG/pdns.log" 2>&1 </dev/null &
	deadline=$((SECONDS + 20))
	until [[ -n $(pdns_dig_soa) && -n $(live_pid "$PDNS_PIDFILE" pdns_server) ]]; do
		((SECONDS < deadline)) || die "pdns: pdns_server does not answer (log: $LAB_LOG/pdns.log)"
		sleep 0.1
	done
}

# The body of an rrset PATCH for lab-check: REPLACE with $HOST_ADDR or DELETE.
pdns_check_rrset() {
	jq -nc --arg name "lab-check.$DNS_ZONE" --argjson ttl "$DNS_TTL" --arg ct "$1" --arg ip "$HOST_ADDR" \
		'{rrsets: [{name: $name, type: "A", ttl: $ttl, changetype: $ct,
		  records: (if $ct == "REPLACE" then [{content: $ip, disabled: false}] else [] end)}]}'
}

# A real API change read back over DNS, then removed again; and a wrong key
# must be refused.
check_pdns() {
	local name="lab-check.$DNS_ZONE" zone_url="/api/v1/servers/$PDNS_SERVER_ID/zones/$DNS_ZONE" out got code
	out=$(pdns_api PATCH "$zone_url" -H 'Content-Type: application/json' \
		--data-binary "$(pdns_check_rrset REPLACE)") || true
	[[ ${out##*$'\n'} == 204 ]] || die "pdns: API PATCH with the key failed: $out"
	got=$(dig +short @127.0.0.1 -p "$PDNS_PORT" "$name" A)
	[[ $got == "$HOST_ADDR" ]] || die "pdns: $name resolved to '$got', expected $HOST_ADDR"
	out=$(pdns_api PATCH "$zone_url" -H 'Content-Type: application/json' \
		--data-binary "$(pdns_check_rrset DELETE)") || true
	[[ ${out##*$'\n'} == 204 ]] || die "pdns: API PATCH delete failed: $out"
	code=$(curl -s --noproxy '*' --max-time 5 -o /dev/null -w '%{http_code}' -H 'X-API-Key: wrong' \
		"$PDNS_API_URL/api/v1/servers/$PDNS_SERVER_ID") || true
	[[ $code == 401 ]] || die "pdns: a wrong API key got HTTP $code, expected 401"
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
		if [[ -n ${P_TLS[$p]:-} ]]; then
			# Paths only: the keys stay in their 0600 files.
			providers=$(jq -c --arg p "$p" --arg host "tcp://${P_ADDR[$p]}:$TLS_PORT" \
				--arg ca "$TLS_CA" --arg cert "$TLS_CLIENT_CERT" --arg key "$TLS_CLIENT_KEY" \
				--arg wrong_ca "$TLS_WRONG_CA" --arg wrong_cert "$TLS_WRONG_CLIENT_CERT" \
				--arg wrong_key "$TLS_WRONG_CLIENT_KEY" \
				'.[$p].tls = {docker_host: $host, ca: $ca, cert: $cert, key: $key, wrong_ca: $wrong_ca,
				  wrong_cert: $wrong_cert, wrong_key: $wrong_key}' <<<"$providers")
		fi
	done
	criu_v=$(criu_version "$CRIU_WRAPPER")
	jq -n --argjson seconds "$seconds" --arg host "$HOST_ADDR" \
		--argjson providers "$providers" \
		--argjson port "$DNS_PORT" --arg zone "$DNS_ZONE" --argjson ttl "$DNS_TTL" \
		--arg key "$TSIG_KEY_NAME" --arg keyfile "$TSIG_KEY_FILE" \
		--argjson named "$(live_pid "$NAMED_PIDFILE" named)" \
		--argjson pdns_port "$PDNS_PORT" --arg pdns_url "$PDNS_API_URL" --arg pdns_id "$PDNS_SERVER_ID" \
		--arg pdns_keyfile "$PDNS_API_KEY_FILE" \
		--argjson pdns "$(live_pid "$PDNS_PIDFILE" pdns_server)" \
		--arg counter "$IMAGE_COUNTER" --arg redis "$IMAGE_REDIS" --arg web "$IMAGE_WEB" \
		--arg criu "$CRIU_WRAPPER" --arg criu_v "$criu_v" \
		'{version: 1, setup_seconds: $seconds, host_address: $host,
		  providers: $providers,
		  dns: {server: "127.0.0.1", port: $port, zone: $zone, ttl: $ttl,
		        tsig_key_name: $key, tsig_algorithm: "hmac-sha256",
		        tsig_key_file: $keyfile, pid: $named,
		        powerdns: {server: "127.0.0.1", port: $pdns_port, zone: $zone,
		                   api_url: $pdns_url, server_id: $pdns_id,
		                   api_key_file: $pdns_keyfile, pid: $pdns}},
		  images: {counter: $counter, redis: $redis, web: $web},
		  criu: {path: $criu, version: $criu_v}}' >"$LAB_JSON.tmp"
	mv "$LAB_JSON.tmp" "$LAB_JSON"
}

# --- main --------------------------------------------------------------------

setup_host_bridge
for p in "${PROVIDERS[@]}"; do setup_provider_net "$p"; done
ensure_runc_conf
ensure_runtime
ensure_tls
if [[ -n $TLS_REGENERATED ]]; then
	# dockerd reads its certificates at start only.
	for p in "${!P_TLS[@]}"; do
		if [[ -n $(live_pid "$(p_pidfile "$p")" dockerd) ]]; then
			log "$p: new TLS certificates; restarting dockerd"
			stop_dockerd_only "$p"
		fi
	done
fi
# Start both daemons, named and pdns_server before waiting on any: they boot in parallel.
for p in "${PROVIDERS[@]}"; do start_dockerd "$p"; done
start_named
start_pdns
for p in "${PROVIDERS[@]}"; do wait_dockerd "$p"; done
check_dns
check_pdns
ensure_images

elapsed=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
write_lab_json "$elapsed"
echo "lab-up: ready in $elapsed s ($LAB_JSON)"
