//! `vimigrate-runtime`: the provider-host side of vimigrate's direct migration path.
//!
//! dockerd knows it as an OCI runtime (`"runtimes": {"vimigrate": {"path": ...}}` in
//! daemon.json) and calls it exactly as it calls runc. For every call it is runc: it `exec`s the
//! real runc with the same arguments. It differs only when the broker left a directive in the
//! container's directory (see [`vimigrate_protocol`]):
//!
//! - `checkpoint` with a dump directive: runc dumps into the container's Docker checkpoint
//!   directory while the writable layer's delta, the volumes and the page images stream to the
//!   destination's wrapper over TLS (memory moves while CRIU still dumps); containerd's content
//!   store, which Docker's own path copies the images through twice, is never used.
//! - `create` with a restore directive (what a plain `docker start` calls): receive what the
//!   source streams, check it, and `runc restore` instead of `runc create`; the `start` that
//!   follows is then a no-op. Docker set the container up (network, ports, mounts) before
//!   calling, so the restored container is an ordinary Docker container.
//!
//! It also gives every container it creates its own CRIU configuration file (the
//! `org.criu.config` annotation), so that a migration's CRIU options never touch the
//! host-wide `/etc/criu/runc.conf`.

pub mod cgroup_stubs;
pub mod dump;
pub mod error;
pub mod facts;
pub mod fs;
pub mod lazy_pages;
pub mod lazy_restore;
pub mod net;
pub mod pre_copy;
pub mod restore;
pub mod runc;
pub mod transfer;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use error::RuntimeError;
use runc::args::Invocation;

/// What a handler decided.
#[derive(Debug)]
pub enum Outcome {
    /// Not ours: run runc with the original arguments.
    PassThrough,
    /// Handled; exit with this code.
    Exit(i32),
}

/// Runs one invocation: handles it, or replaces this process with runc.
pub fn run(inv: &Invocation) -> i32 {
    let outcome = match inv.command.as_deref() {
        Some("create") => restore::on_create(inv),
        Some("start") => restore::on_start(inv),
        Some("checkpoint") => dump::on_checkpoint(inv),
        Some("restore") => restore::on_docker_restore(inv),
        _ => Outcome::PassThrough,
    };
    match outcome {
        Outcome::Exit(code) => code,
        Outcome::PassThrough => exec_runc(inv),
    }
}

/// Reports a failed step: in the status the broker reads, and in runc's log, where containerd
/// looks for the reason of a failed call.
pub(crate) fn fail(
    state: &fs::state_files::StateDir,
    log: Option<&str>,
    migration: &str,
    e: &error::RuntimeError,
) -> Outcome {
    use vimigrate_protocol::{RuntimeState, RuntimeStatus};
    state.write_status(&RuntimeStatus {
        migration: migration.to_string(),
        state: RuntimeState::Failed,
        error: Some(e.failure()),
        ..Default::default()
    });
    runc::log::log_error(log, &e.report());
    Outcome::Exit(1)
}

/// The real runc: `--vimigrate-runc`, else the first `runc` on `PATH` that is not this program.
pub fn runc_path(inv: &Invocation) -> PathBuf {
    if let Some(path) = &inv.runc {
        return path.clone();
    }
    let me = std::env::current_exe().ok().and_then(|p| p.canonicalize().ok());
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join("runc"))
        .find(|candidate| candidate.is_file() && candidate.canonicalize().ok() != me)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/runc"))
}

/// runc's state directory (`--root`), which dockerd always passes.
pub(crate) fn runc_root(inv: &Invocation) -> Result<&Path, RuntimeError> {
    inv.global_value("--root").map(Path::new).ok_or_else(|| RuntimeError::Directive("runc was given no --root".into()))
}

/// A runc command with the invocation's global flags.
pub fn runc_command(inv: &Invocation, runc: &Path) -> Command {
    let mut command = Command::new(runc);
    command.arg0("runc").args(&inv.global);
    command
}

fn exec_runc(inv: &Invocation) -> i32 {
    let runc = runc_path(inv);
    let mut command = runc_command(inv, &runc);
    if let Some(c) = &inv.command {
        command.arg(c);
    }
    command.args(&inv.args);
    let err = command.exec();
    runc::log::log_error(inv.global_value("--log"), &format!("cannot run {}: {err}", runc.display()));
    127
}

/// Now, as Unix time in milliseconds.
pub fn unix_ms_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// This process's peak resident memory, KiB.
pub fn peak_rss_kib() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } == 0 {
        usage.ru_maxrss.max(0) as u64
    } else {
        0
    }
}

/// Milliseconds since `t`.
pub fn ms(t: std::time::Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// CRIU's log file in a dump's or restore's work directory.
pub const CRIU_LOG: &str = "criu.log";

/// The last lines of CRIU's log in `work_dir` (`dump.log` or `restore.log`), for an error.
pub fn criu_log_tail(work_dir: &Path, file: &str) -> String {
    let Ok(text) = std::fs::read_to_string(work_dir.join(file)) else {
        return String::new();
    };
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("Error") || l.contains("rror (")).collect();
    let lines: Vec<&str> = if errors.is_empty() {
        text.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect()
    } else {
        errors.into_iter().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect()
    };
    if lines.is_empty() {
        String::new()
    } else {
        format!("; CRIU's log ({}): {}", work_dir.join(file).display(), lines.join(" | "))
    }
}
