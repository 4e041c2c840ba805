#!/usr/bin/env bash
# The main job on the embedded default (Cloudify local mode): start the lab (two providers and a
# DNS server), build the plugin, install the example blueprint (a web server and its Redis) on
# provider-a and show it answering at provider-a's public address.
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
web_a=$(python3 -c 'import json; print(json.load(open(".lab/lab.json"))["providers"]["provider-a"]["public_address"])')

say "3. the virtual infrastructure: cfy init + install on provider-a"
if cfy node-instances -b "$BLUEPRINT_ID" >/dev/null 2>&1; then
    echo "(a previous demo is installed: uninstalling it first)"
    cfy executions start uninstall -b "$BLUEPRINT_ID"
fi
cfy init blueprints/webapp.yaml -b "$BLUEPRINT_ID" -i blueprints/inputs/lab.yaml
cfy executions start install -b "$BLUEPRINT_ID"

say "4. where it runs (runtime properties of the web container)"
cfy node-instances -b "$BLUEPRINT_ID" web | python3 -c '
import json, sys
for instance in json.load(sys.stdin):
    p = instance["runtime_properties"]
    print("web runs on", p["provider"], "as", p["container_id"][:12], "addresses", p["addresses"],
          "public", p["public_endpoints"])'

say "5. the application answers at provider-a's public address"
for _ in 1 2 3; do
    curl -fsS --max-time 5 --retry 10 --retry-connrefused --retry-delay 1 "http://$web_a:8080/"
done

say "done"
echo "The web server and its database run on provider-a; the visit count lives in Redis."
echo "Live migration to provider-b (cfy executions start migrate) lands with the engine and plugin issues."
echo "Clean up: CFY_WORKDIR=$CFY_WORKDIR .venv/bin/cfy executions start uninstall -b $BLUEPRINT_ID; make lab-down"
