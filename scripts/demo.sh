#!/usr/bin/env bash
# The main job on the embedded default (Cloudify local mode): start the lab (two providers and a
# DNS server), build the plugin, install the example blueprint (a web server and its Redis) on
# provider-a with its public name web.vi.test, show it answering, migrate it live to provider-b and
# back (the name follows), showing the visit count continue. Whatever an earlier demo left on the
# lab, from this checkout or another, is removed first (scripts/lab/sweep-deployment.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

BLUEPRINT_ID=vimigrate-demo
export CFY_WORKDIR=$PWD/.lab/cfy   # the demo's local Cloudify profile lives with the lab
mkdir -p "$CFY_WORKDIR"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "1. the lab: provider-a, provider-b and the DNS server"
bash scripts/lab/up.sh
bash scripts/lab/status.sh

say "2. the engine and the plugin, built into .venv with the Cloudify CLI"
bash scripts/python-env.sh
export PATH=$PWD/.venv/bin:$PATH

say "3. the virtual infrastructure: cfy init + install on provider-a"
if cfy node-instances -b "$BLUEPRINT_ID" >/dev/null 2>&1; then
    echo "(a previous demo is installed: uninstalling it first)"
    cfy executions start uninstall -b "$BLUEPRINT_ID" ||
        echo "(its uninstall failed, see above: what it left goes by its labels next)"
fi
# The lab is host-wide, this Cloudify profile is this checkout's: a demo installed from another
# checkout (or whose profile is gone) still holds the names this one needs, so whatever an
# earlier demo left on any lab provider goes first, whichever checkout made it.
bash scripts/lab/sweep-deployment.sh "$BLUEPRINT_ID"
cfy init blueprints/webapp.yaml -b "$BLUEPRINT_ID" -i blueprints/inputs/lab.yaml
cfy executions start install -b "$BLUEPRINT_ID"

where() {
    cfy node-instances -b "$BLUEPRINT_ID" web | python3 -c '
import json, sys
for instance in json.load(sys.stdin):
    p = instance["runtime_properties"]
    print("   web runs on", p["provider"], "as", p["container_id"][:12], "published at", ", ".join(p["public_endpoints"]))'
}
# The zone's server and the public name, as the lab describes them (.lab/lab.json).
dns_server=$(jq -r .dns.server .lab/lab.json)
dns_port=$(jq -r .dns.port .lab/lab.json)
web_name=web.$(jq -r '.dns.zone | rtrimstr(".")' .lab/lab.json)
visit() { # expected provider-name: clients resolve the public name at the zone's server
    local expected address
    expected=$(jq -r --arg p "$1" '.providers[$p].public_address' .lab/lab.json)
    address=$(dig +short @"$dns_server" -p "$dns_port" "$web_name" A)
    printf '   %s -> %s (%s)  GET http://%s:8080/ -> ' "$web_name" "$address" "$1" "$web_name"
    [[ $address == "$expected" ]] || { echo "DNS answers $address, not $expected" >&2; exit 1; }
    curl -fsS --max-time 5 --retry 10 --retry-connrefused --retry-delay 1 \
        --resolve "$web_name:8080:$address" "http://$web_name:8080/"
}

say "4. the application answers at provider-a's public address"
where
for _ in 1 2 3; do visit provider-a; done

say "5. the plan of a migration to provider-b (dry run: nothing changes)"
cfy executions start migrate -b "$BLUEPRINT_ID" -p target_provider=provider_b -p dry_run=true

say "6. live migration to provider-b: Redis first, then the web server"
cfy executions start migrate -b "$BLUEPRINT_ID" -p target_provider=provider_b
where
say "7. the application answers at provider-b, its visit count continued"
for _ in 1 2; do visit provider-b; done

say "8. and back to provider-a"
cfy executions start migrate -b "$BLUEPRINT_ID" -p target_provider=provider_a
where
for _ in 1 2; do visit provider-a; done

say "9. a partial move: only the web server goes to provider-b; it reaches Redis through provider-a's public address"
cfy executions start migrate -b "$BLUEPRINT_ID" -p target_provider=provider_b -p node_ids=web
where
for _ in 1 2; do visit provider-b; done

say "10. Redis follows: the link between them is internal again"
cfy executions start migrate -b "$BLUEPRINT_ID" -p target_provider=provider_b -p node_ids=redis
for _ in 1 2; do visit provider-b; done

say "done"
echo "The web server and its database moved provider-a -> provider-b -> provider-a while running,"
echo "then one at a time to provider-b; the visit count (in Redis's memory) continued throughout."
echo "Clean up: CFY_WORKDIR=$CFY_WORKDIR .venv/bin/cfy executions start uninstall -b $BLUEPRINT_ID; make lab-down"
