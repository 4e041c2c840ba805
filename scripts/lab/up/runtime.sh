# shellcheck shell=bash
# Part of up.sh (sourced after common.sh, never run): vimigrate-runtime, built
# from this checkout and installed host-wide for the providers with P_RUNTIME.

# Builds the runtime wrapper from this checkout (release) and installs it where
# the providers' daemon.json points. dockerd runs it afresh for every container
# operation, so a new build takes effect without a restart. `install` replaces
# the file (a new inode), never rewriting a binary that is being executed.
ensure_runtime() {
	command -v cargo >/dev/null || die "runtime: cargo is missing: install a Rust toolchain >= 1.85 (rustup)"
	(cd "$REPO_ROOT" && cargo build --quiet --release -p vimigrate-runtime) ||
		die "runtime: cargo build -p vimigrate-runtime failed"
	local built="$REPO_ROOT/target/release/vimigrate-runtime"
	if ! cmp -s "$built" "$RUNTIME_BIN"; then
		install -D -m 0755 "$built" "$RUNTIME_BIN"
		log "runtime: installed $RUNTIME_BIN"
	fi
	[[ -x $RUNC_BIN ]] || die "runtime: no runc at $RUNC_BIN"
}
