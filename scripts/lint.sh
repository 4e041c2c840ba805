#!/usr/bin/env bash
# The lint gate (`make lint`; .ci/run runs it before the tests): Rust formatting, clippy with
# every warning an error on every target (the workspace lints deny missing docs), rustdoc
# without warnings, ruff and mypy on the Python, shellcheck on the scripts. Installs what it
# needs that the machine lacks (shellcheck from Debian's packages, ruff and mypy into .venv), so
# it runs on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0

need() { # command package-hint
	command -v "$1" >/dev/null || {
		echo "lint: $1 is missing: $2" >&2
		exit 1
	}
}

cargo clippy --version >/dev/null 2>&1 || { echo "lint: clippy is missing: rustup component add clippy" >&2; exit 1; }
cargo fmt --version >/dev/null 2>&1 || { echo "lint: rustfmt is missing: rustup component add rustfmt" >&2; exit 1; }
if ! command -v shellcheck >/dev/null; then
	echo "lint: installing shellcheck"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null
fi
need shellcheck "apt-get install shellcheck"
# ruff and mypy live in the project's virtualenv, next to the engine (python-env.sh).
bash scripts/python-env.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings (every crate, every target)"
cargo clippy --workspace --all-targets --features vimigrate-core/lab-tests -- -D warnings
echo "== rustdoc -D warnings"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --exclude vimigrate-python --no-deps --quiet
echo "== ruff"
.venv/bin/ruff check plugin/vimigrate tests scripts
echo "== mypy"
.venv/bin/mypy plugin/vimigrate
echo "== shellcheck"
mapfile -t scripts < <(git ls-files -co --exclude-standard -- '*.sh' '.ci/*')
shellcheck -x "${scripts[@]}"
echo "lint: clean in ${SECONDS} s"
