#!/usr/bin/env bash
# Starts the provider lab as lab-description.json describes it (every name,
# address and port is there): provider-a and provider-b (a dockerd each, in its
# own network namespace with a public address on the host bridge), a BIND9
# server for the zone on loopback, a PowerDNS server for the same zone with its
# HTTP API, and the test images on both providers; provider-b also serves its
# API over TLS with certificates generated once under /run/vimigrate-lab/tls;
# then writes .lab/lab.json. Idempotent: whatever already runs is kept, so a
# second run only checks and rewrites lab.json. Each part lives in
# up/<part>.sh; this file only runs them in order.
set -euo pipefail
# shellcheck source=SCRIPTDIR/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# shellcheck source=SCRIPTDIR/up/network.sh
source "$LAB_SCRIPTS_DIR/up/network.sh"
# shellcheck source=SCRIPTDIR/up/criu-conf.sh
source "$LAB_SCRIPTS_DIR/up/criu-conf.sh"
# shellcheck source=SCRIPTDIR/up/runtime.sh
source "$LAB_SCRIPTS_DIR/up/runtime.sh"
# shellcheck source=SCRIPTDIR/up/tls.sh
source "$LAB_SCRIPTS_DIR/up/tls.sh"
# shellcheck source=SCRIPTDIR/up/providers.sh
source "$LAB_SCRIPTS_DIR/up/providers.sh"
# shellcheck source=SCRIPTDIR/up/dns-bind.sh
source "$LAB_SCRIPTS_DIR/up/dns-bind.sh"
# shellcheck source=SCRIPTDIR/up/dns-pdns.sh
source "$LAB_SCRIPTS_DIR/up/dns-pdns.sh"
# shellcheck source=SCRIPTDIR/up/images.sh
source "$LAB_SCRIPTS_DIR/up/images.sh"
# shellcheck source=SCRIPTDIR/up/lab-json.sh
source "$LAB_SCRIPTS_DIR/up/lab-json.sh"

T0=$(date +%s.%N)
[[ $EUID -eq 0 ]] || die "up.sh must run as root"

bash "$LAB_SCRIPTS_DIR/install-deps.sh"
# Before anything changes: a description whose addresses overlap or leave their
# subnet would otherwise fail late, half set up, far from the wrong field.
python3 "$LAB_SCRIPTS_DIR/describe.py" check
mkdir -p "$LAB_RUN" "$LAB_DATA" "$LAB_LOG" "$LAB_DIR" "$DNS_DIR" "$PDNS_DIR"

setup_network
ensure_runc_conf
ensure_pipe_size
ensure_runtime
ensure_tls
restart_tls_providers
# Both daemons, named and pdns_server start before up.sh waits on any: they
# boot in parallel.
start_providers
start_named
start_pdns
wait_providers
check_dns
check_pdns
ensure_images

elapsed=$(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
write_lab_json "$elapsed"
echo "lab-up: ready in $elapsed s ($LAB_JSON)"
