#!/usr/bin/env bash
# Builds the Rust engine into the project's virtualenv (.venv) with `pip install .` (maturin),
# next to the Cloudify CLI 7.0.5, the test tools and the linters (ruff, mypy). Idempotent; cargo's target/ keeps the
# build incremental, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv

need_cargo() {
    if ! command -v cargo >/dev/null; then
        echo "python-env: cargo is missing: install a Rust toolchain >= 1.85 (rustup)" >&2
        exit 1
    fi
}

# Debian's python3 ships venv and headers as separate packages.
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "python-env: installing python3-venv"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-dev >/dev/null
fi

need_cargo
if [[ ! -x $VENV/bin/python ]]; then
    "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
# The CLI, test and lint tools first, as pinned in pyproject.toml (the `test` and `lint` extras,
# the build backend), so that they are there even while the engine does not build; then the
# engine itself.
mapfile -t tools < <("$VENV/bin/python" -c '
import tomllib
with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)
extras = project["project"]["optional-dependencies"]
print("\n".join(extras["test"] + extras["lint"] + project["build-system"]["requires"]))')
"$VENV/bin/python" -m pip install -q "${tools[@]}"
"$VENV/bin/python" -m pip install -q .
"$VENV/bin/python" -c 'import vimigrate; c = vimigrate.self_check(); print("python-env: vimigrate", c["engine_version"], "ready, runtime", c["runtime_ready"])'
