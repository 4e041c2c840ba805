#!/usr/bin/env bash
# What `make bench` needs beyond the lab: Podman 4.3 (a baseline, with runc and
# netavark; Debian 12), the newest Podman Debian offers (install-podman.sh: sid's,
# unpacked into a prefix of its own) and matplotlib in the project's .venv (the plot).
# Idempotent. Not needed by `make test`.
set -euo pipefail
# shellcheck source=scripts/lab/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lab/common.sh"

[[ $EUID -eq 0 ]] || die "bench install-deps.sh must run as root"
missing=()
for pkg in podman netavark aardvark-dns runc; do
	[[ $(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true) == installed ]] || missing+=("$pkg")
done
if ((${#missing[@]})); then
	log "bench: installing ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
fi
bash "$REPO_ROOT/scripts/lab/install-podman.sh"
"$REPO_ROOT/.venv/bin/python" -c 'import matplotlib' 2>/dev/null || "$REPO_ROOT/.venv/bin/python" -m pip install -q "matplotlib>=3.7"
