# shellcheck shell=bash
# Part of up.sh (sourced after common.sh, never run): the lab's TLS material,
# generated once under $TLS_DIR for the providers with P_TLS.

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

# dockerd reads its certificates at start only: after ensure_tls made new ones,
# the running TLS providers are stopped here so that start_providers starts
# them onto the new files.
restart_tls_providers() {
	local p
	[[ -n $TLS_REGENERATED ]] || return 0
	for p in "${!P_TLS[@]}"; do
		if [[ -n $(live_pid "$(p_pidfile "$p")" dockerd) ]]; then
			log "$p: new TLS certificates; restarting dockerd"
			stop_dockerd_only "$p"
		fi
	done
}
