#!/usr/bin/env bash
# Removes what a deployment of the vimigrate plugin left on the lab's providers,
# whichever checkout made it: the lab is host-wide, but a Cloudify profile in
# local mode lives in its checkout, so a deployment another checkout installed
# is one no uninstall here knows of, and its container names stay taken.
#   sweep-deployment.sh DEPLOYMENT_ID
# On every provider .lab/lab.json lists: the containers labelled
# io.vimigrate.deployment=DEPLOYMENT_ID and io.vimigrate.managed=true; the
# vimigrate helper and lock containers serving one of those names (a migration
# that died); then the networks vimigrate made for the deployment (labelled
# with it, or named DEPLOYMENT_ID-*) once nothing uses them. Only objects
# vimigrate created (io.vimigrate.managed=true) are ever touched. Says what it
# removed. Idempotent.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $# -eq 1 && -n ${1:-} ]] || die "usage: sweep-deployment.sh DEPLOYMENT_ID"
DEPLOYMENT=$1
MANAGED=io.vimigrate.managed=true
# The field separator of the listings below: no name or label value holds one,
# and unlike a tab, read keeps an empty field between two of them.
T=$'\x1f'
[[ -s $LAB_JSON ]] || die "no $LAB_JSON: start the lab first (make lab-up)"

# name<TAB>docker_host of every provider the running lab lists (not the
# description: lab.json says what runs).
mapfile -t providers < <(jq -r '.providers[] | [.name, .docker_host] | @tsv' "$LAB_JSON")
((${#providers[@]})) || die "$LAB_JSON lists no provider"

on() { # provider-docker-host docker-arguments...
	local host=$1
	shift
	"$DOCKER_CLI" -H "$host" "$@"
}

for entry in "${providers[@]}"; do
	IFS=$'\t' read -r p host <<<"$entry"
	on "$host" version >/dev/null 2>&1 || die "$p does not answer at $host: run make lab-up"
done

removed=0
# The deployment's containers, everywhere first: a helper or lock on one
# provider serves a container that may run on the other.
declare -A names=()
for entry in "${providers[@]}"; do
	IFS=$'\t' read -r p host <<<"$entry"
	while IFS=$T read -r id name; do
		[[ -n $id ]] || continue
		names[$name]=1
		on "$host" rm -f "$id" >/dev/null </dev/null || die "$p: could not remove container $name ($id)"
		log "sweep: removed container $name (${id:0:12}) of deployment $DEPLOYMENT from $p"
		removed=$((removed + 1))
	done < <(on "$host" ps -a --filter "label=io.vimigrate.deployment=$DEPLOYMENT" --filter "label=$MANAGED" \
		--format "{{.ID}}$T{{.Names}}")
done

for entry in "${providers[@]}"; do
	IFS=$'\t' read -r p host <<<"$entry"
	while IFS=$T read -r id name serves locks; do
		[[ -n $id ]] || continue
		# A helper names the container it serves; a lock, the container it locks:
		# one removed above, or one named after the deployment (the plugin's
		# default names) that an interrupted sweep already removed.
		served=${serves:-$locks}
		[[ -n $served && (-n ${names[$served]:-} || $served == "$DEPLOYMENT"-*) ]] || continue
		on "$host" rm -f "$id" >/dev/null </dev/null || die "$p: could not remove helper container $name ($id)"
		log "sweep: removed helper container $name (for $served) from $p"
		removed=$((removed + 1))
	done < <(on "$host" ps -a --filter label=io.vimigrate.helper=true --filter "label=$MANAGED" \
		--format "{{.ID}}$T{{.Names}}$T{{.Label \"io.vimigrate.helper.for\"}}$T{{.Label \"io.vimigrate.lock\"}}")
done

for entry in "${providers[@]}"; do
	IFS=$'\t' read -r p host <<<"$entry"
	while IFS=$T read -r id name owner; do
		[[ -n $id ]] || continue
		[[ $owner == "$DEPLOYMENT" || $name == "$DEPLOYMENT"-* ]] || continue
		used=$(on "$host" network inspect -f '{{len .Containers}}' "$id" 2>/dev/null </dev/null || echo gone)
		if [[ $used == gone ]]; then
			continue
		elif [[ $used != 0 ]]; then
			log "sweep: kept network $name on $p: $used containers still use it"
			continue
		fi
		on "$host" network rm "$id" >/dev/null </dev/null || die "$p: could not remove network $name ($id)"
		log "sweep: removed network $name of deployment $DEPLOYMENT from $p"
		removed=$((removed + 1))
	done < <(on "$host" network ls --filter "label=$MANAGED" \
		--format "{{.ID}}$T{{.Name}}$T{{.Label \"io.vimigrate.deployment\"}}")
done

if ((removed)); then
	log "sweep: removed $removed objects deployment $DEPLOYMENT had left on the lab"
else
	log "sweep: nothing of deployment $DEPLOYMENT on the lab's providers"
fi
