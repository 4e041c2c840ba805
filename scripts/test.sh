#!/usr/bin/env bash
# Every test: cargo (unit and lab), pytest (unit, lab, and the real `cfy` in local mode), then
# the guest provider's (scripts/test-guest.sh: a qemu guest with its own kernel).
# Sets up what it needs first (engine build, lab), so it runs on a fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0

bash scripts/python-env.sh
bash scripts/lab/up.sh

echo "== cargo tests (unit, and lab tests against the real providers)"
cargo test --workspace --exclude vimigrate-python --features vimigrate-core/lab-tests

echo "== pytest (unit, lab and cfy tests)"
.venv/bin/python -m pytest tests --ignore=tests/guest -v -p no:cacheprovider

# Last: the guest boots in about a minute and a half of emulation.
bash scripts/test-guest.sh

echo "test: all tests passed in ${SECONDS} s"
