//! Healing a group a dead broker left half-done: each member on exactly one provider, and the
//! whole group on one provider.
//!
//! A broker that dies at the gate can leave a group split: members restored on the destination
//! run there, others were still waiting for their images (heal withdraws those and resumes
//! them on their source from their dumps). Each member is first healed on its own, by the
//! rules of `heal.rs` (nothing lost: the copy that runs is kept, one that runs nowhere resumes
//! from its checkpoint). Members that all run on one provider then are left there (the hosts
//! may have finished the whole move on their own). If they run on different providers, those
//! away from the group's source (the provider that held the members' locks: where the group
//! was, as a rollback would have left it) are live-migrated to it as a group (one freeze,
//! their state kept).
//!
//! The group is known from the members' locks, which record it ([`LockRecord::group`]); a
//! member healed after its lock went (heal removes the locks) is a group of one again.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, ProviderError};
use crate::migration::group::{migrate_group, GroupMember};
use crate::migration::heal::{heal_one, HealOptions, HealReport};
use crate::migration::lock::LockRecord;
use crate::migration::options::MigrationOptions;
use crate::provider::Provider;

/// The group container `name` moved with, from its lock on any of `providers`, and the
/// provider holding that lock (the group's source); `None` for a container alone or unlocked.
pub(crate) async fn group_of(providers: &[Provider], name: &str) -> Result<Option<(Vec<String>, usize)>, Error> {
    for (i, provider) in providers.iter().enumerate() {
        if let Some(LockRecord { group, .. }) = provider.lock_record(name).await? {
            if group.len() > 1 && group.iter().any(|m| m == name) {
                return Ok(Some((group, i)));
            }
        }
    }
    Ok(None)
}

/// Heals every member of `group` (whose locks `source` holds), then brings the group onto one
/// provider; returns `name`'s report.
pub(crate) async fn heal_group(
    providers: &[Provider],
    name: &str,
    (group, source): &(Vec<String>, usize),
    options: HealOptions,
) -> Result<HealReport, Error> {
    let mut reports = Vec::new();
    for member in group {
        let mut report = heal_one(providers, member, options).await?;
        report.group = group.clone();
        reports.push(report);
    }
    let at = |r: &HealReport| r.runs_on.clone().unwrap_or_default();
    let places: BTreeSet<String> = reports.iter().map(at).collect();
    // Together already (wherever the hosts left them): nothing to move.
    let home = match places.into_iter().collect::<Vec<_>>().as_slice() {
        [one] => one.clone(),
        _ => providers[*source].name().to_string(),
    };
    let strays: BTreeMap<String, Vec<String>> =
        reports.iter().filter(|r| at(r) != home).fold(BTreeMap::new(), |mut by, r| {
            by.entry(at(r)).or_default().push(r.container.clone());
            by
        });
    let mut regrouped = BTreeSet::new();
    for (provider, members) in &strays {
        let from = providers.iter().find(|p| p.name() == provider).ok_or_else(|| ProviderError::Missing {
            provider: provider.clone(),
            what: "the provider a member runs on",
            detail: format!("{} run there, which is not among the providers heal was given", members.join(", ")),
        })?;
        tracing::info!(from = %provider, to = %home, members = ?members, "heal: bringing the group together");
        let moving: Vec<GroupMember<'_>> =
            members.iter().map(|m| GroupMember { source: from, options: MigrationOptions::new(m.clone()) }).collect();
        migrate_group(&providers[*source], &moving, &|_, _| {}).await.map_err(|e| ProviderError::Failed {
            provider: home.clone(),
            step: format!("bring {} back to the group's provider {home}", members.join(", ")),
            detail: format!(
                "{e}; each member runs on exactly one provider, but the group is split: run heal again once {home} \
                 takes them"
            ),
        })?;
        regrouped.extend(members.iter().cloned());
    }
    let mut mine = reports.into_iter().find(|r| r.container == name).unwrap_or_default();
    if !regrouped.is_empty() {
        mine.runs_on = Some(home);
    }
    mine.regrouped = regrouped.into_iter().collect();
    Ok(mine)
}
