# shellcheck shell=bash
# Part of up.sh (sourced after common.sh, never run): the providers' dockerd,
# started in parallel and then waited for.

# start_dockerd and wait_dockerd live in common.sh (provider-nocriu.sh uses
# them too); a daemon running with other flags than these (e.g. provider-b
# from before it served TLS) is restarted there.

# Starts every provider's dockerd without waiting: they boot in parallel (and
# with named and pdns_server, which up.sh starts before wait_providers).
start_providers() {
	local p
	for p in "${PROVIDERS[@]}"; do start_dockerd "$p"; done
}

wait_providers() {
	local p
	for p in "${PROVIDERS[@]}"; do wait_dockerd "$p"; done
}
