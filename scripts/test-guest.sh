#!/usr/bin/env bash
# The guest provider's tests: boots the lab's qemu guest (kept running when it already runs:
# one guest serves every test) and runs tests/guest against it and the lab. scripts/test.sh
# runs it last; `make test-guest` alone.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0
bash scripts/python-env.sh
bash scripts/lab/up.sh
bash scripts/lab/guest.sh up
echo "== pytest (guest provider: its own kernel, CPU and CRIU)"
.venv/bin/python -m pytest tests/guest -v -p no:cacheprovider
echo "test-guest: guest tests passed in ${SECONDS} s"
