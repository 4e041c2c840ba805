#!/usr/bin/env bash
# Every test: cargo (unit and lab), pytest (unit, lab, and the real `cfy` in local mode).
# Sets up what it needs first (engine build, lab), so it runs on a fresh Debian 12 machine.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0

bash scripts/python-env.sh
bash scripts/lab/up.sh

echo "== cargo tests (unit, and lab tests against the real providers)"
cargo test --workspace --exclude vimigrate-python --features vimigrate-core/lab-tests

echo "== pytest (unit, lab and cfy tests)"
.venv/bin/python -m pytest tests -v -p no:cacheprovider

echo "test: all tests passed in ${SECONDS} s"
