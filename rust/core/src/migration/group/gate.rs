//! The group's phase sequence over its members' migrations (each one `sequence.rs`'s): every
//! member prepared at once while the service runs, then one gate: every freeze started in the
//! same instant, every member frozen before any moves on, then streamed and restored in
//! parallel, and released together only once every one of them runs on the destination. A failure of any member, in any phase, undoes
//! every member: before the gate none of them stopped; from the gate on, each one's source
//! resumes from its own dump, even a member already restored on the destination (its copy there
//! goes first, as in any rollback). So the group runs on one side, whole.

use std::time::Instant;

use futures_util::future::join_all;

use crate::migration::error::{MigrationError, Rollback};
use crate::migration::host::Host;
use crate::migration::path::{CheckpointPath, StepError};
use crate::migration::report::MigrationReport;
use crate::migration::sequence::Migration;

/// When the gate's events happened, as the broker saw them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GateTimes {
    /// From the drive's start to the gate (every member prepared).
    pub prepare_ms: u64,
    /// Between the first and the last member's freeze call, in milliseconds (fractional: the
    /// calls go out within microseconds of each other).
    pub freeze_spread_ms: f64,
    /// From the first freeze call to the last member seen restored: the group's interruption.
    pub downtime_ms: u64,
    /// The releases after the last restore (checkpoints, helpers, sources).
    pub cleanup_ms: u64,
}

/// How one member ended after the group failed.
#[derive(Debug)]
pub(crate) enum Settled {
    /// Its own step failed (the error carries its rollback).
    Failed(MigrationError),
    /// A peer failed; this member was undone, as its rollback says.
    Abandoned(Rollback),
}

/// Drives `members` through the gate (see the module documentation); on success their reports
/// in the members' order, else how each member ended.
pub(crate) async fn drive<H: Host, P: CheckpointPath<H>>(
    mut members: Vec<Migration<'_, H, P>>,
) -> Result<(Vec<MigrationReport>, GateTimes), Vec<Settled>> {
    let started = Instant::now();
    let prepared = join_all(members.iter_mut().map(|m| m.prepare())).await;
    if prepared.iter().any(Result::is_err) {
        return Err(undo_all(members, prepared).await);
    }
    let armed = arm_all(&mut members).await;
    if armed.iter().any(Result::is_err) {
        return Err(undo_all(members, armed).await);
    }
    let gate = Instant::now();
    let prepare_ms = super::super::sequence::ms(started);
    tracing::info!(members = members.len(), prepare_ms, "group gate: freezing every member");
    // Every member frozen before any moves on: no member's copy goes on from a state its peers
    // have not reached (the direct path streams within the freeze; its restores run meanwhile).
    let frozen = join_all(members.iter_mut().map(|m| m.freeze())).await;
    if frozen.iter().any(Result::is_err) {
        return Err(undo_all(members, frozen).await);
    }
    let restored = join_all(members.iter_mut().map(|m| m.restore())).await;
    if restored.iter().any(Result::is_err) {
        return Err(undo_all(members, restored).await);
    }
    let times = gate_times(&members, gate, prepare_ms);
    let cleanup = Instant::now();
    let (wide, narrow): (Vec<_>, Vec<_>) = members.iter_mut().partition(|m| m.arms_host_wide());
    let wide_in_reverse = async {
        for member in wide.into_iter().rev() {
            member.clean_up().await;
        }
    };
    futures_util::future::join(join_all(narrow.into_iter().map(|m| m.clean_up())), wide_in_reverse).await;
    let times = GateTimes { cleanup_ms: super::super::sequence::ms(cleanup), ..times };
    Ok((members.into_iter().map(Migration::report).collect(), times))
}

/// Every member's arm: together, but those that change something host-wide (Docker's path:
/// the hosts' CRIU options) one after another in the members' order, each recording what the
/// previous one set, so that undoing them in the reverse order puts back what was found.
async fn arm_all<H: Host, P: CheckpointPath<H>>(members: &mut [Migration<'_, H, P>]) -> Vec<Result<(), StepError>> {
    let (wide, narrow): (Vec<_>, Vec<_>) = members.iter_mut().enumerate().partition(|(_, m)| m.arms_host_wide());
    let in_order = async {
        let mut done = Vec::new();
        for (i, member) in wide {
            done.push((i, member.arm().await));
        }
        done
    };
    let together = join_all(narrow.into_iter().map(|(i, m)| async move { (i, m.arm().await) }));
    let (mut done, together) = futures_util::future::join(in_order, together).await;
    done.extend(together);
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, result)| result).collect()
}

/// Undoes one member (see [`undo_all`]).
async fn undo<H: Host, P: CheckpointPath<H>>(member: Migration<'_, H, P>, result: Result<(), StepError>) -> Settled {
    match result {
        Err(StepError { phase, cause }) => Settled::Failed(member.fail(phase, cause).await),
        Ok(()) => Settled::Abandoned(member.abandon().await),
    }
}

/// The gate's figures once every member restored.
fn gate_times<H: Host, P: CheckpointPath<H>>(
    members: &[Migration<'_, H, P>],
    gate: Instant,
    prepare_ms: u64,
) -> GateTimes {
    let frozen: Vec<Instant> = members.iter().map(|m| m.frozen_at().unwrap_or(gate)).collect();
    let first = frozen.iter().min().copied().unwrap_or(gate);
    let last = frozen.iter().max().copied().unwrap_or(gate);
    let restored = members
        .iter()
        .zip(&frozen)
        .map(|(m, at)| *at + std::time::Duration::from_millis(m.stats().downtime_ms))
        .max()
        .unwrap_or(first);
    GateTimes {
        prepare_ms,
        freeze_spread_ms: last.duration_since(first).as_secs_f64() * 1000.0,
        downtime_ms: u64::try_from(restored.duration_since(first).as_millis()).unwrap_or(u64::MAX),
        cleanup_ms: 0,
    }
}

/// Undoes every member after `results` (one per member, in order) held a failure: each failed
/// member rolls back as its own failure says, every other one is abandoned. All at once (each
/// member's rollback removes its own destination before its own source resumes), except those
/// whose arm changed something host-wide: they go in the reverse order of their arms.
async fn undo_all<'a, H: Host, P: CheckpointPath<H>>(
    members: Vec<Migration<'a, H, P>>,
    results: Vec<Result<(), StepError>>,
) -> Vec<Settled> {
    let (wide, narrow): (Vec<_>, Vec<_>) =
        members.into_iter().zip(results).enumerate().partition(|(_, (m, _))| m.arms_host_wide());
    let in_reverse = async {
        let mut done = Vec::new();
        for (i, (member, result)) in wide.into_iter().rev() {
            done.push((i, undo(member, result).await));
        }
        done
    };
    let together = join_all(narrow.into_iter().map(|(i, (m, r))| async move { (i, undo(m, r).await) }));
    let (mut done, together) = futures_util::future::join(in_reverse, together).await;
    done.extend(together);
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, settled)| settled).collect()
}
