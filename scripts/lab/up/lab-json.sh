# shellcheck shell=bash
# Part of up.sh (sourced after common.sh, never run): .lab/lab.json, the
# description's facts plus what exists only at run time (sockets, pids, the
# paths of the key files; never a key).

# The keys of lab.json keep their meaning once written (tests/framework/lab.py
# and rust/core/tests read them); new facts come as new keys.
write_lab_json() {
	local seconds=$1 started='{}' extra='{}' p criu_v
	for p in "${PROVIDERS[@]}"; do
		started=$(jq -c --arg p "$p" --argjson facts "$(p_facts "$p")" \
			--argjson pid "$(live_pid "$(p_pidfile "$p")" dockerd)" --argjson versions "$(p_versions "$p")" \
			'. + {($p): ($facts + {pid: $pid, versions: $versions})}' <<<"$started")
		if [[ -n ${P_TLS[$p]:-} ]]; then
			# Paths only: the keys stay in their 0600 files.
			started=$(jq -c --arg p "$p" --arg host "tcp://${P_ADDR[$p]}:$TLS_PORT" \
				--arg ca "$TLS_CA" --arg cert "$TLS_CLIENT_CERT" --arg key "$TLS_CLIENT_KEY" \
				--arg wrong_ca "$TLS_WRONG_CA" --arg wrong_cert "$TLS_WRONG_CLIENT_CERT" \
				--arg wrong_key "$TLS_WRONG_CLIENT_KEY" \
				'.[$p].tls = {docker_host: $host, ca: $ca, cert: $cert, key: $key, wrong_ca: $wrong_ca,
				  wrong_cert: $wrong_cert, wrong_key: $wrong_key}' <<<"$started")
		fi
	done
	# Not under `providers`, whose readers expect every provider there to run:
	# these run only while a test has started them with their script.
	for p in "${EXTRA_PROVIDERS[@]}"; do
		extra=$(jq -c --arg p "$p" --argjson facts "$(p_facts "$p")" \
			--arg file "$(p_facts_json "$p")" --arg script "$LAB_SCRIPTS_DIR/$p.sh" \
			'. + {($p): ($facts + {facts_file: $file, script: $script})}' <<<"$extra")
	done
	criu_v=$(criu_version "$CRIU_WRAPPER")
	jq -n --argjson seconds "$seconds" --arg host "$HOST_ADDR" --arg description "$LAB_DESCRIPTION" \
		--arg bridge "$HOST_BRIDGE" --argjson prefix "$PUBLIC_PREFIX_LEN" --arg unused "$HOST_UNUSED_ADDR" \
		--argjson providers "$started" --argjson extra "$extra" \
		--arg dns_addr "$DNS_ADDR" --argjson port "$DNS_PORT" --arg zone "$DNS_ZONE" --argjson ttl "$DNS_TTL" \
		--arg key "$TSIG_KEY_NAME" --arg algorithm "$TSIG_ALGORITHM" --arg keyfile "$TSIG_KEY_FILE" \
		--argjson named "$(live_pid "$NAMED_PIDFILE" named)" \
		--argjson pdns_port "$PDNS_PORT" --arg pdns_url "$PDNS_API_URL" --arg pdns_id "$PDNS_SERVER_ID" \
		--arg pdns_keyfile "$PDNS_API_KEY_FILE" \
		--argjson pdns "$(live_pid "$PDNS_PIDFILE" pdns_server)" \
		--arg counter "$IMAGE_COUNTER" --arg redis "$IMAGE_REDIS" --arg web "$IMAGE_WEB" \
		--arg criu "$CRIU_WRAPPER" --arg criu_v "$criu_v" \
		'{version: 1, setup_seconds: $seconds, host_address: $host, description: $description,
		  host_bridge: {name: $bridge, address: $host, prefix_len: $prefix, unused_address: $unused},
		  providers: $providers,
		  on_demand_providers: $extra,
		  dns: {server: $dns_addr, port: $port, zone: $zone, ttl: $ttl,
		        tsig_key_name: $key, tsig_algorithm: $algorithm,
		        tsig_key_file: $keyfile, pid: $named,
		        powerdns: {server: $dns_addr, port: $pdns_port, zone: $zone,
		                   api_url: $pdns_url, server_id: $pdns_id,
		                   api_key_file: $pdns_keyfile, pid: $pdns}},
		  images: {counter: $counter, redis: $redis, web: $web},
		  criu: {path: $criu, version: $criu_v}}' >"$LAB_JSON.tmp"
	mv "$LAB_JSON.tmp" "$LAB_JSON"
}
