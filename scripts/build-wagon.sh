#!/usr/bin/env bash
# Builds the plugin as a wagon (the archive a Cloudify Manager installs plugins from) into dist/.
# wagon 1.0 reads the package's name and version from a setup.py and then builds with
# `pip wheel`, which follows pyproject.toml (maturin). The setup.py it needs lives only in a
# staging copy, so the repository keeps a single build definition.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${1:-$root/dist}
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
for item in pyproject.toml Cargo.toml Cargo.lock README.md rust plugin; do
    cp -a "$item" "$stage/"
done
cat >"$stage/setup.py" <<PY
# Staging shim for wagon: it only answers --name and --version; the build is pyproject.toml's.
import sys
answers = {"--name": "vimigrate", "--version": "$version"}
if len(sys.argv) == 2 and sys.argv[1] in answers:
    print(answers[sys.argv[1]])
else:
    sys.exit("build vimigrate with pip (pyproject.toml, maturin)")
PY
mkdir -p "$out"
# The shared target directory keeps the Rust build incremental.
CARGO_TARGET_DIR=$root/target "$root/.venv/bin/wagon" create "$stage" -o "$out" -f
ls -1 "$out"/vimigrate-*.wgn
