//! A group of containers (a whole virtual infrastructure, or the part of it that moves) migrated
//! under one freeze.
//!
//! Moving the containers of a VI one after another stops the service for the sum of their
//! downtimes, and between two moves every request that needs both a moved and a waiting
//! container fails. A group moves them together:
//!
//! 1. every member's preflight (one lock each, recording the whole group; CRIU proved once per
//!    pair of hosts), then the group's own decision of its new addresses where the destination
//!    remaps a network (`addresses.rs`): every member learns its peers' new addresses before
//!    anything stops;
//! 2. every member prepared in parallel while the service runs: image, destination container
//!    (started and waiting, on the direct path), first copy of the writable layer, pre-copy;
//! 3. the gate (`gate.rs`): every freeze started together, streamed and restored in parallel;
//!    released together once every member runs on the destination.
//!
//! Any failure undoes the whole group: before the gate nothing stopped; from the gate on every
//! member resumes on its source from its own dump. Post-copy is refused for a group: a member
//! whose pages stop coming after its restore cannot be rolled back, so its peers could not be
//! either, and the group would end split.

pub(crate) mod addresses;
pub(crate) mod gate;
pub(crate) mod heal;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Instant;

use futures_util::future::join_all;
use serde::Serialize;

use crate::error::{Error, InputError};
use crate::migration::error::Rollback;
use crate::migration::host::Host;
use crate::migration::lock::MigrationLock;
use crate::migration::memory::MemoryMode;
use crate::migration::options::MigrationOptions;
use crate::migration::path::either::AnyPath;
use crate::migration::path::{not_prepared, Ctx};
use crate::migration::preflight::{find_source, preflight, CriuProof};
use crate::migration::report::{MigrationReport, MigrationStats, Phase, ProgressEvent};
use crate::migration::sequence::{ms, Migration};
use crate::migration::source::SourceContainer;
use crate::migration::{MigrationPlan, DESTINATION_PATIENCE};
use crate::network::map::AddressMode;
use crate::network::NetworkSpec;
use crate::provider::labels::MIGRATION_NETWORK_LABEL;
use crate::provider::Provider;
use vimigrate_protocol::TcpMode;

use self::gate::Settled;

/// One container of a group: where it runs, and its own options (container, peer files, port
/// map, ...); the destination is the group's.
#[derive(Debug, Clone)]
pub struct GroupMember<'a> {
    /// The provider it runs on.
    pub source: &'a Provider,
    /// Its migration's options.
    pub options: MigrationOptions,
}

/// The figures of a group's migration as a whole; each member's own are in its report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GroupStats {
    /// How many containers moved.
    pub members: usize,
    /// Every member's preflight, in parallel.
    pub preflight_ms: u64,
    /// From the preflight's end to the gate: every member prepared, while the service ran.
    pub prepare_ms: u64,
    /// Between the first and the last member's freeze call, as the broker made them.
    pub freeze_spread_ms: f64,
    /// Between the first and the last member's dump start, as the source hosts' clocks say
    /// (`None` unless every member took the direct path, whose runtimes report it).
    pub dump_spread_ms: Option<u64>,
    /// The group's interruption: from the first freeze to the last member restored.
    pub downtime_ms: u64,
    /// The longest of the members' own downtimes (each from its freeze to its restore).
    pub longest_member_downtime_ms: u64,
    /// Releasing every member after the last restore.
    pub cleanup_ms: u64,
    /// From the call to its return.
    pub total_ms: u64,
}

/// A group that moved: every member runs on the destination.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupReport {
    /// The destination provider.
    pub destination: String,
    /// Each member's report, in the order the members were given.
    pub members: Vec<MigrationReport>,
    /// The group's figures.
    pub stats: GroupStats,
    /// Every member's changed addresses, old -> new: what peers outside the group need.
    pub address_changes: BTreeMap<String, String>,
}

/// What one member's part in a failed group came to.
#[derive(Debug)]
pub struct MemberOutcome {
    /// The member's container.
    pub container: String,
    /// The provider it ran on before the migration.
    pub source: String,
    /// Its own failure, when it failed (phase: cause), beside the group's first.
    pub failure: Option<String>,
    /// Where it runs now.
    pub rollback: Rollback,
}

/// A group that did not move: the first failure, and where each member runs now (the whole
/// group on its sources unless a rollback says otherwise).
#[derive(Debug, thiserror::Error)]
pub struct GroupError {
    /// The phase of the first failure.
    pub phase: Phase,
    /// The member that failed first (or `group` for a failure of the group's own steps).
    pub container: String,
    /// The destination provider.
    pub destination: String,
    /// Why.
    #[source]
    pub cause: Error,
    /// Every member, in the order given.
    pub members: Vec<MemberOutcome>,
}

impl GroupError {
    /// The group's state after its rollback: the worst of its members' (`failed` before `lost`,
    /// `held`, `resumed`, `undone`, `nothing_to_undo`).
    pub fn rollback_state(&self) -> &'static str {
        const ORDER: [&str; 6] = ["failed", "lost", "held", "resumed", "undone", "nothing_to_undo"];
        ORDER
            .into_iter()
            .find(|state| self.members.iter().any(|m| m.rollback.state() == *state))
            .unwrap_or("nothing_to_undo")
    }
}

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.members.iter().map(|m| format!("`{}`", m.container)).collect();
        write!(
            f,
            "group migration of {} to {} failed in phase {} of `{}`: {}; the whole group was undone:",
            names.join(", "),
            self.destination,
            self.phase,
            self.container,
            self.cause.report()
        )?;
        for member in &self.members {
            write!(f, " {}: {}", member.container, member.rollback)?;
            if let Some(failure) = &member.failure {
                write!(f, " (it failed too: {failure})")?;
            }
            f.write_str(";")?;
        }
        Ok(())
    }
}

/// What [`migrate_group`] would do, from the same preflights, changing nothing.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupPlan {
    /// The destination provider.
    pub destination: String,
    /// Each member's plan, in the order given.
    pub members: Vec<MigrationPlan>,
    /// The group's own steps in words: its addresses, its gate.
    pub gate: Vec<String>,
}

/// One member after its preflight.
struct Prepared<'a> {
    src: &'a Provider,
    source: SourceContainer,
    options: MigrationOptions,
    plan: MigrationPlan,
}

/// The group's checks of its input, before any provider is asked.
fn check_members(members: &[GroupMember<'_>]) -> Result<(), InputError> {
    if members.is_empty() {
        return Err(InputError::new("members", "at least one container", "none"));
    }
    let mut seen = BTreeSet::new();
    for (i, member) in members.iter().enumerate() {
        member.options.validate().map_err(|e| InputError { field: format!("members[{i}].{}", e.field), ..e })?;
        let name = &member.options.container;
        if !seen.insert((member.source.name().to_string(), name.clone())) {
            return Err(InputError::new(
                format!("members[{i}].container"),
                "a container not already in the group",
                name,
            ));
        }
        if member.options.memory == MemoryMode::PostCopy {
            return Err(InputError::new(
                format!("members[{i}].memory"),
                "stop-and-copy, pre-copy or auto in a group (post-copy cannot be rolled back once a member \
                 restored, so neither could its peers)",
                "post-copy",
            ));
        }
    }
    Ok(())
}

/// Every member's options as the group runs them: CRIU is proved once per source provider (by
/// its first member), not once per container.
fn member_options(members: &[GroupMember<'_>]) -> Vec<MigrationOptions> {
    let mut proved = BTreeSet::new();
    members
        .iter()
        .map(|m| {
            let first = proved.insert(m.source.name().to_string());
            MigrationOptions { check_criu: m.options.check_criu && first, ..m.options.clone() }
        })
        .collect()
}

/// Every member's preflight at once; each takes its lock (recording the group) first, and
/// releases it when its own preflight fails.
async fn preflight_all<'a>(
    dst: &Provider,
    members: &[GroupMember<'a>],
    proof: CriuProof,
) -> Vec<Result<(Prepared<'a>, Option<MigrationLock>), Error>> {
    let names: Vec<String> = members.iter().map(|m| m.options.container.clone()).collect();
    let options = member_options(members);
    join_all(members.iter().zip(options).map(|(member, options)| {
        let names = &names;
        async move {
            let src = member.source;
            let (source, checked) = find_source(src, dst, &options).await?;
            let lock = match proof {
                CriuProof::Run => {
                    Some(src.lock_migration(&source.name, &source.image, &checked.checkpoint, dst.name(), names).await?)
                }
                CriuProof::Skip => None,
            };
            match preflight(src, dst, &options, &checked, &source, proof).await {
                Ok(plan) => Ok((Prepared { src, source, options, plan }, lock)),
                Err(e) => {
                    if let Some(lock) = lock {
                        lock.release().await;
                    }
                    Err(e)
                }
            }
        }
    }))
    .await
}

/// The group's networks and new addresses (see `addresses.rs`): every network a member's plan
/// makes on the destination is made now, once for the whole group (its members would otherwise
/// race to make it), labelled with the group's first checkpoint so that a rollback or heal
/// removes it; on each one the destination remaps, each member gets its host part. The
/// networks made here go to `made`, the plan in words to `lines`; returns the group's map of
/// old address -> new. `create`: whether missing networks may be made (`false` for a dry run,
/// which then only describes).
async fn decide_addresses(
    dst: &Provider,
    members: &mut [Prepared<'_>],
    create: bool,
    lines: &mut Vec<String>,
    made: &mut Vec<String>,
) -> Result<BTreeMap<String, String>, Error> {
    let group_label = members.first().map(|m| m.plan.checkpoint.clone()).unwrap_or_default();
    let mut subnets: BTreeMap<String, Option<(String, Option<String>)>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for member in members.iter() {
        for decision in &member.plan.networks {
            if !seen.insert(decision.name.clone()) {
                continue;
            }
            let existing = dst.inspect_network(&decision.name).await?;
            let info = match (existing, &decision.create) {
                (Some(info), _) => Some(info),
                (None, Some(spec)) if create => {
                    let mut spec: NetworkSpec = spec.clone();
                    spec.labels.insert(MIGRATION_NETWORK_LABEL.to_string(), group_label.clone());
                    // Recorded before it exists: a failure right after must still remove it.
                    made.push(spec.name.clone());
                    Some(make_network(dst, spec, decision.mode).await?)
                }
                (None, _) => None,
            };
            if decision.mode == AddressMode::Remap {
                let subnet = info.and_then(|i| Some((i.subnets.first()?.clone(), i.gateways.first().cloned())));
                subnets.insert(decision.name.clone(), subnet);
            }
        }
    }
    let mut group_map = BTreeMap::new();
    for member in members.iter_mut() {
        // Whether every address of this member that changes is decided (or, in a dry run, will
        // be): then its sockets can follow.
        let mut decided = true;
        let mut remapped = false;
        for decision in member.plan.networks.iter().filter(|d| d.mode == AddressMode::Remap) {
            remapped = true;
            let endpoint = member.source.networks.iter().find(|e| e.network == decision.name);
            let (Some(old), Some(old_subnet)) = (endpoint.and_then(|e| e.ipv4.clone()), &decision.source_subnet) else {
                decided = false;
                continue;
            };
            let Some((new_subnet, gateway)) = subnets.get(&decision.name).cloned().flatten() else {
                decided &= !create;
                lines.push(format!(
                    "  {} on `{}`: {old} keeps its host part in the subnet the destination picks",
                    member.source.name, decision.name
                ));
                continue;
            };
            let new = addresses::same_host_part(&old, old_subnet, &new_subnet, gateway.as_deref()).map_err(|why| {
                InputError::new(
                    format!("{}.networks.{}", member.source.name, decision.name),
                    format!("an address whose host part fits the destination's subnet {new_subnet}"),
                    why,
                )
            })?;
            lines.push(format!(
                "  {} on `{}`: {old} -> {new} (same host part in {new_subnet})",
                member.source.name, decision.name
            ));
            member.plan.assigned_addresses.insert(decision.name.clone(), new.clone());
            group_map.insert(old, new);
        }
        if remapped && decided && member.plan.sockets_can_follow {
            member.plan.rewrite_sockets = true;
            member.plan.tcp = Some(TcpMode::Established);
            member.plan.tcp_reason = "the group decides its new addresses before the freeze: both ends of every \
                connection between members are rewritten and survive; connections to outside the group close"
                .into();
        }
    }
    for member in members.iter_mut() {
        member.plan.address_map = addresses::with_group_map(&member.plan.address_map, &group_map);
    }
    Ok(group_map)
}

/// Makes network `spec` on `dst`. One whose addresses the group decides (`Remap`) must have a
/// subnet Docker counts as the user's (it refuses fixed addresses on another): Docker picks a
/// free one as for any network, and the network is made again with it, declared.
async fn make_network(
    dst: &Provider,
    mut spec: NetworkSpec,
    mode: AddressMode,
) -> Result<crate::network::NetworkInfo, Error> {
    let picked = dst.ensure_network(&spec).await?;
    if mode != AddressMode::Remap || spec.subnet.is_some() {
        return Ok(picked);
    }
    let Some(subnet) = picked.subnets.first().cloned() else { return Ok(picked) };
    dst.remove_network(&spec.name, true).await?;
    spec.subnet = Some(subnet);
    spec.gateway = picked.gateways.first().cloned();
    dst.ensure_network(&spec).await
}

/// Docker's path carries the TCP option in the hosts' own CRIU file, one for every container of
/// a host: its members must agree on it (a member whose addresses are remapped closes its
/// connections while one that keeps them wants them restored). The direct path's options are
/// per container.
fn check_host_wide_options(members: &[Prepared<'_>]) -> Result<(), Error> {
    let docker = members.iter().filter(|m| matches!(m.plan.path, crate::migration::PlannedPath::Docker { .. }));
    let mut wanted: BTreeMap<&str, (&str, Option<&'static str>)> = BTreeMap::new();
    for member in docker {
        let option = member.plan.criu_tcp_option();
        for host in [member.src.name(), member.plan.destination.as_str()] {
            match wanted.insert(host, (&member.source.name, option)) {
                Some((other, theirs)) if theirs != option => {
                    return Err(crate::error::ProviderError::Unsuitable {
                        provider: host.to_string(),
                        requirement: "one TCP option for every member moving through Docker's checkpoint API",
                        detail: format!(
                            "`{other}` needs {} and `{}` needs {} on {host}, whose CRIU file holds one for all; \
                             give the group the direct path (vimigrate-runtime on both hosts) or move them apart",
                            theirs.unwrap_or("the host's"),
                            member.source.name,
                            option.unwrap_or("the host's")
                        ),
                    }
                    .into());
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// The gate in words, for the plan.
fn gate_lines(members: &[Prepared<'_>]) -> Vec<String> {
    let names: Vec<&str> = members.iter().map(|m| m.source.name.as_str()).collect();
    vec![
        format!("group of {}: {}", names.len(), names.join(", ")),
        "  prepared in parallel while the service runs: images, destination containers, first layer copies".into(),
        format!("  gate: {} freezes started together, streamed and restored in parallel", names.len()),
        "  released together once every member runs on the destination; any failure resumes every member on \
         its source from its own dump"
            .into(),
    ]
}

/// Migrates `members` to `dst` under one freeze (see the module documentation). `progress` is
/// called with the member's container and each of its events. On failure the error says where
/// every member runs: the whole group on its sources, unless a rollback says otherwise.
pub async fn migrate_group(
    dst: &Provider,
    members: &[GroupMember<'_>],
    progress: &(dyn Fn(&str, &ProgressEvent) + Send + Sync),
) -> Result<GroupReport, GroupError> {
    let started = Instant::now();
    let untouched = |members: &[GroupMember<'_>], phase, container: &str, cause| GroupError {
        phase,
        container: container.to_string(),
        destination: dst.name().to_string(),
        cause,
        members: members
            .iter()
            .map(|m| MemberOutcome {
                container: m.options.container.clone(),
                source: m.source.name().to_string(),
                failure: None,
                rollback: Rollback::NothingToUndo,
            })
            .collect(),
    };
    check_members(members).map_err(|e| untouched(members, Phase::Preflight, "group", e.into()))?;
    for member in members {
        progress(&member.options.container, &ProgressEvent::Phase { phase: Phase::Preflight });
    }
    let mut prepared = Vec::new();
    let mut locks = Vec::new();
    let mut refused = None;
    for (member, result) in members.iter().zip(preflight_all(dst, members, CriuProof::Run).await) {
        match result {
            Ok((p, lock)) => {
                prepared.push(p);
                locks.extend(lock);
            }
            Err(e) => {
                refused.get_or_insert((member.options.container.clone(), e));
            }
        }
    }
    let release = |locks: Vec<MigrationLock>| join_all(locks.into_iter().map(MigrationLock::release));
    if let Some((container, cause)) = refused {
        release(locks).await;
        return Err(untouched(members, Phase::Preflight, &container, cause));
    }
    let preflight_ms = ms(started);

    let mut made = Vec::new();
    let mut lines = Vec::new();
    let group_map = match decide_addresses(dst, &mut prepared, true, &mut lines, &mut made).await {
        Ok(map) => map,
        Err(cause) => {
            remove_networks(dst, &made).await;
            release(locks).await;
            let mut error = untouched(members, Phase::Prepare, "group", cause);
            for member in &mut error.members {
                member.rollback = Rollback::Undone;
            }
            return Err(error);
        }
    };
    if let Err(cause) = check_host_wide_options(&prepared) {
        remove_networks(dst, &made).await;
        release(locks).await;
        let mut error = untouched(members, Phase::Preflight, "group", cause);
        for member in &mut error.members {
            member.rollback = if made.is_empty() { Rollback::NothingToUndo } else { Rollback::Undone };
        }
        return Err(error);
    }
    for line in &lines {
        tracing::info!(line = %line, "group addresses");
    }
    tracing::info!(members = prepared.len(), addresses = group_map.len(), preflight_ms, "group prepared");

    let reporters: Vec<_> = prepared
        .iter()
        .map(|p| {
            let name = p.source.name.clone();
            move |event: &ProgressEvent| progress(&name, event)
        })
        .collect();
    let migrations: Vec<_> = prepared
        .iter()
        .zip(&reporters)
        .map(|(p, report)| {
            let ctx = Ctx {
                src: p.src,
                dst,
                source: &p.source,
                plan: &p.plan,
                options: &p.options,
                progress: report,
                patience: DESTINATION_PATIENCE,
            };
            let stats = MigrationStats { preflight_ms, ..MigrationStats::default() };
            Migration::new(ctx, AnyPath::for_plan(&p.plan.path), stats, started)
        })
        .collect();
    let result = gate::drive(migrations).await;
    release(locks).await;
    match result {
        Ok((reports, times)) => {
            let longest = reports.iter().map(|r| r.stats.downtime_ms).max().unwrap_or(0);
            let dumps: Vec<u64> = reports.iter().map(|r| r.stats.dump_started_unix_ms).collect();
            let dump_spread_ms = (!dumps.contains(&0))
                .then(|| dumps.iter().max().copied().unwrap_or(0) - dumps.iter().min().copied().unwrap_or(0));
            let address_changes = reports.iter().flat_map(|r| r.address_changes.clone()).collect();
            let stats = GroupStats {
                members: reports.len(),
                preflight_ms,
                prepare_ms: times.prepare_ms,
                freeze_spread_ms: times.freeze_spread_ms,
                dump_spread_ms,
                downtime_ms: times.downtime_ms,
                longest_member_downtime_ms: longest,
                cleanup_ms: times.cleanup_ms,
                total_ms: ms(started),
            };
            tracing::info!(downtime_ms = stats.downtime_ms, spread_ms = stats.freeze_spread_ms, "group moved");
            Ok(GroupReport { destination: dst.name().to_string(), members: reports, stats, address_changes })
        }
        Err(settled) => {
            remove_networks(dst, &made).await;
            Err(group_failure(dst, &prepared, settled))
        }
    }
}

/// The group's error from how each member ended: the cause is the failure earliest in the
/// phase order (the first listed among equals); the other failures are noted on their members.
fn group_failure(dst: &Provider, prepared: &[Prepared<'_>], settled: Vec<Settled>) -> GroupError {
    let first = settled
        .iter()
        .enumerate()
        .filter_map(|(i, s)| match s {
            Settled::Failed(e) => Some((e.phase, i)),
            Settled::Abandoned(_) => None,
        })
        .min();
    let (mut phase, mut container) = (Phase::Preflight, "group".to_string());
    let mut cause = None;
    let mut members = Vec::new();
    for (i, (member, outcome)) in prepared.iter().zip(settled).enumerate() {
        let (failure, rollback) = match outcome {
            Settled::Abandoned(rollback) => (None, rollback),
            Settled::Failed(e) if first.is_some_and(|(_, at)| at == i) => {
                (phase, container) = (e.phase, e.container);
                cause = Some(e.cause);
                (None, e.rollback)
            }
            Settled::Failed(e) => (Some(format!("{}: {}", e.phase, e.cause.report())), e.rollback),
        };
        members.push(MemberOutcome {
            container: member.source.name.clone(),
            source: member.src.name().to_string(),
            failure,
            rollback,
        });
    }
    GroupError {
        phase,
        container,
        destination: dst.name().to_string(),
        cause: cause.unwrap_or_else(|| not_prepared("a member's failure")),
        members,
    }
}

/// Removes the networks the group made on the destination, once its members' containers there
/// are gone; what stays in use stays (heal removes it later).
async fn remove_networks(dst: &Provider, made: &[String]) {
    for network in made {
        if let Err(e) = dst.remove_unused_network(network).await {
            tracing::warn!(error = %e.report(), network = %network, "network left on the destination; heal removes it");
        }
    }
}

/// What [`migrate_group`] would do with these members, from the same preflights, changing
/// nothing: no lock, no CRIU proof, no network made.
pub async fn plan_group(dst: &Provider, members: &[GroupMember<'_>]) -> Result<GroupPlan, Error> {
    check_members(members)?;
    let mut prepared = Vec::new();
    for result in preflight_all(dst, members, CriuProof::Skip).await {
        prepared.push(result?.0);
    }
    let mut lines = Vec::new();
    decide_addresses(dst, &mut prepared, false, &mut lines, &mut Vec::new()).await?;
    check_host_wide_options(&prepared)?;
    let mut gate = gate_lines(&prepared);
    if !lines.is_empty() {
        gate.push("  new addresses, decided before the freeze:".into());
        gate.extend(lines);
    }
    Ok(GroupPlan { destination: dst.name().to_string(), members: prepared.into_iter().map(|p| p.plan).collect(), gate })
}
