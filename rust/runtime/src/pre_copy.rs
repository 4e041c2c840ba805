//! Pre-copy's rounds: CRIU pre-dumps a running container (`runc checkpoint --pre-dump`, soft-dirty
//! tracking) into `pre-N/` of its images directory, round after round, each round carrying only
//! what was dirtied since the one before, and each streams to the destination's receiver while
//! the service runs. The dump that freezes ([`crate::dump`]) then names the last round as its
//! parent and carries only the pages dirtied since.
//!
//! Why from a probe container's `create`: Docker's checkpoint call is the only one Docker makes
//! to the runtime about a running container, and containerd pauses the task (cgroup freezer)
//! for its whole length; rounds inside it would freeze the service for all of them. So the
//! broker creates a probe under this runtime with a [`PreCopyDirective`]; its `create` runs the
//! rounds against the other container (same runc root: both run under this runtime), records
//! them in that container's state directory ([`PRE_COPY_FILE`]), and the probe starts as usual.
//!
//! The rounds stop, as P.Haul's iterations do, at [`PreCopy::max_rounds`], once a round carried
//! less than [`PreCopy::enough_bytes`], or when it did not shrink below
//! [`PreCopy::shrink_percent`] % of the round before (the service dirties as fast as the link
//! moves). A round that fails after the first ends them (the chain so far stays good); a first
//! round that fails fails the pre-copy, and the broker gives up before anything froze.

use std::path::Path;
use std::process::Stdio;
use std::time::Instant;

use vimigrate_protocol::{
    Directive, PreCopy, PreCopyDirective, PreCopyRounds, RuntimeState, RuntimeStatus, PRE_COPY_FILE,
};

use crate::dump::{checked_images_dir, target_of_send};
use crate::error::RuntimeError;
use crate::fs::state_files::{self, write_private, StateDir};
use crate::runc::args::Invocation;
use crate::runc::spec::Spec;
use crate::transfer::send::Sender;
use crate::{criu_log_tail, ms, runc_command, runc_path, CRIU_LOG};

/// Runs the rounds for the probe whose state is `probe`, and records the outcome both in the
/// pre-dumped container's state ([`PRE_COPY_FILE`]) and in the probe's status.
pub fn on_probe_create(inv: &Invocation, probe: &StateDir, directive: &Directive, pre: &PreCopyDirective) {
    let target = target_state(inv, &pre.container);
    let outcome = match &target {
        Ok((state, dir)) => run_rounds(inv, state, dir, directive, pre),
        Err(e) => Err(RuntimeError::Directive(format!("container: {}", e.report()))),
    };
    let rounds = match &outcome {
        Ok(rounds) => rounds.clone(),
        Err(e) => {
            PreCopyRounds { migration: directive.migration.clone(), error: Some(e.failure()), ..Default::default() }
        }
    };
    if let Ok((state, _)) = &target {
        let bytes = serde_json::to_vec_pretty(&rounds).unwrap_or_default();
        if let Err(e) = write_private(&state.path().join(PRE_COPY_FILE), &bytes) {
            eprintln!("vimigrate-runtime: write {PRE_COPY_FILE}: {e}");
        }
    }
    probe.write_status(&RuntimeStatus {
        migration: directive.migration.clone(),
        state: if rounds.error.is_none() { RuntimeState::Dumped } else { RuntimeState::Failed },
        error: rounds.error.clone(),
        ..Default::default()
    });
    if let Err(e) = &outcome {
        crate::runc::log::log_error(inv.global_value("--log"), &e.report());
    }
}

/// The pre-dumped container's state directory and its Docker directory.
fn target_state(inv: &Invocation, id: &str) -> Result<(StateDir, std::path::PathBuf), RuntimeError> {
    let bundle = Spec::bundle_from_state(crate::runc_root(inv)?, id)?;
    let spec = Spec::load(&bundle)?;
    let dir = spec.container_dir(id).ok_or_else(|| {
        RuntimeError::Directive(format!("container `{id}` has no Docker directory this runtime knows"))
    })?;
    Ok((StateDir::of(&dir), dir))
}

/// Why the rounds stop after one that carried `bytes` of pages, `previous` the round before.
fn stop_after(round: u32, bytes: u64, previous: Option<u64>, bounds: &PreCopy) -> Option<&'static str> {
    if bytes < bounds.enough_bytes {
        Some("enough: the last round carried little")
    } else if previous.is_some_and(|p| bytes.saturating_mul(100) >= p.saturating_mul(u64::from(bounds.shrink_percent)))
    {
        Some("not shrinking: the service dirties memory as fast as the rounds move it")
    } else if round >= bounds.max_rounds {
        Some("max_rounds")
    } else {
        None
    }
}

fn run_rounds(
    inv: &Invocation,
    state: &StateDir,
    container_dir: &Path,
    directive: &Directive,
    pre: &PreCopyDirective,
) -> Result<PreCopyRounds, RuntimeError> {
    let images_dir = checked_images_dir(directive, container_dir)?;
    state_files::create_private_dir(&images_dir)
        .map_err(RuntimeError::io("pre-copy", format!("create {}", images_dir.display())))?;
    let work = state.private_subdir("precopy-work")?;
    let target = target_of_send(directive, &pre.send, pre.compression)?;
    let mut sender = Sender::connect(&target)?;
    let runc = runc_path(inv);
    let started = Instant::now();
    let mut rounds = PreCopyRounds { migration: directive.migration.clone(), ..Default::default() };
    let mut previous = None;
    for round in 1..=pre.bounds.max_rounds.max(1) {
        let name = format!("pre-{round}");
        let dir = images_dir.join(&name);
        let round_work = work.join(&name);
        for d in [&dir, &round_work] {
            state_files::create_private_dir(d)
                .map_err(RuntimeError::io("pre-copy", format!("create {}", d.display())))?;
        }
        state.write_criu_conf(Some(&directive.criu), Some(&round_work.join(CRIU_LOG)), &[])?;
        let mut command = runc_command(inv, &runc);
        command.arg("checkpoint").arg("--pre-dump").arg("--image-path").arg(&dir).arg("--work-path").arg(&round_work);
        if let Some(parent) = &rounds.last {
            // Relative to this round's directory, as CRIU writes the link.
            command.arg("--parent-path").arg(format!("../{parent}"));
        }
        command.arg(&pre.container).stdin(Stdio::null()).stdout(Stdio::null());
        let exit = command.status().map_err(RuntimeError::io("pre-copy", format!("run {}", runc.display())))?;
        if !exit.success() {
            let e = RuntimeError::Runc {
                step: "pre-copy",
                command: "checkpoint --pre-dump",
                status: exit.to_string(),
                log: criu_log_tail(&round_work, CRIU_LOG),
            };
            let _ = std::fs::remove_dir_all(&dir);
            if rounds.last.is_none() {
                return Err(e);
            }
            rounds.stopped = format!("round {round} failed: {}", e.report());
            break;
        }
        let pages = sender.send_predump(&dir, &name)?;
        rounds.rounds = round;
        rounds.last = Some(name);
        rounds.round_bytes.push(pages);
        if let Some(why) = stop_after(round, pages, previous, &pre.bounds) {
            rounds.stopped = why.to_string();
            break;
        }
        previous = Some(pages);
    }
    let report = sender.finish_part()?;
    rounds.image_bytes = report.image_bytes;
    rounds.wire_bytes = report.wire_bytes;
    rounds.ms = ms(started);
    Ok(rounds)
}

/// Pre-copy's record for the dump of `migration`, when its rounds went.
pub(crate) fn rounds_for(state: &StateDir, migration: &str) -> Option<PreCopyRounds> {
    let bytes = std::fs::read(state.path().join(PRE_COPY_FILE)).ok()?;
    let rounds: PreCopyRounds = serde_json::from_slice(&bytes).ok()?;
    (rounds.migration == migration && rounds.last.is_some()).then_some(rounds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_stop_when_little_is_left_when_they_stop_shrinking_or_at_the_bound() {
        let bounds = PreCopy { max_rounds: 4, enough_bytes: 1000, shrink_percent: 80 };
        assert_eq!(stop_after(1, 10_000, None, &bounds), None);
        assert!(stop_after(2, 999, Some(10_000), &bounds).unwrap().starts_with("enough"));
        assert!(stop_after(2, 8_000, Some(10_000), &bounds).unwrap().starts_with("not shrinking"));
        assert_eq!(stop_after(2, 7_999, Some(10_000), &bounds), None);
        assert_eq!(stop_after(4, 5_000, Some(7_000), &bounds), Some("max_rounds"));
    }
}
