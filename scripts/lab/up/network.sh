# shellcheck shell=bash
# Part of up.sh (sourced after common.sh, never run): the host bridge and the
# network namespace, veth and public address of every provider up.sh starts.

# setup_host_bridge and setup_provider_net live in common.sh
# (provider-nocriu.sh uses them too).
setup_network() {
	local p
	setup_host_bridge
	for p in "${PROVIDERS[@]}"; do setup_provider_net "$p"; done
}
