#!/usr/bin/env bash
# Starts (up) or stops (down) provider-nocriu: a third lab dockerd, like
# provider-a and provider-b (own netns, public address on the host bridge,
# data-root, exec-root and socket, as lab-description.json lists it), whose
# PATH holds no criu. runc looks criu up in the PATH it inherits from dockerd,
# so every checkpoint fails: the destination tests use it to prove that
# preflight catches an unusable CRIU before anything changes.
#   up [--no-experimental]  start it (without --experimental: a destination
#                           that refuses checkpoint/restore for that reason);
#                           a daemon running with the other mode is restarted.
#   down                    stop it, remove its containers, netns and veth.
# Idempotent. Needs the lab's host bridge (up creates it if missing). Writes
# its connection facts to .lab/provider-nocriu.json (not to lab.json, whose
# readers expect every provider listed there to run).
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

P=provider-nocriu
[[ $EUID -eq 0 ]] || die "provider-nocriu.sh must run as root"

usage() { die "usage: provider-nocriu.sh up [--no-experimental] | down"; }

# Refuses to start when a criu is reachable through the daemon's PATH: the
# provider would silently be a working one.
check_no_criu() {
	local found
	if found=$(PATH=$(p_path "$P") command -v criu); then
		die "$P: criu found in its PATH ($found); PATH=$(p_path "$P") must not contain any criu"
	fi
}

write_facts() {
	local pid experimental=true
	pid=$(live_pid "$(p_pidfile "$P")" dockerd)
	[[ ${P_EXPERIMENTAL[$P]:-1} != 0 ]] || experimental=false
	mkdir -p "$LAB_DIR"
	jq --argjson pid "$pid" --argjson experimental "$experimental" \
		'. + {pid: $pid, experimental: $experimental}' <<<"$(p_facts "$P")" >"$(p_facts_json "$P").tmp"
	mv "$(p_facts_json "$P").tmp" "$(p_facts_json "$P")"
}

cmd_up() {
	case ${1:-} in
	--no-experimental) P_EXPERIMENTAL[$P]=0 ;;
	"") ;;
	*) usage ;;
	esac
	check_no_criu
	mkdir -p "$LAB_RUN" "$LAB_DATA" "$LAB_LOG"
	setup_host_bridge
	setup_provider_net "$P"
	# start_dockerd restarts a daemon whose flags differ (e.g. the other
	# experimental mode) and keeps one that already matches.
	start_dockerd "$P"
	wait_dockerd "$P"
	write_facts
	echo "$P: ready at unix://$(p_sock "$P") ($(p_facts_json "$P"))"
}

cmd_down() {
	# Removes its containers (the CRIU probe's, a failed test's) with it.
	stop_provider "$P"
	remove_provider_net "$P"
	rm -f "$(p_facts_json "$P")"
	echo "$P: stopped"
}

case ${1:-} in
up)
	shift
	cmd_up "$@"
	;;
down)
	(($# == 1)) || usage
	cmd_down
	;;
*) usage ;;
esac
