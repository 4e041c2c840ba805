//! After a migration that did not finish (its broker died, a provider was unreachable during the
//! rollback): finds where a container really runs, makes it run on exactly one provider, and
//! removes what the migration left (the other copy, checkpoints, helpers, the lock, the networks
//! it created elsewhere for the container and that nothing uses).
//!
//! The rules, in order:
//! - a destination whose runtime may still restore (a start still waiting for the transfer) is
//!   told to give up, and heal waits until it did or restored: its outcome decides;
//! - running on exactly one provider: that one is kept, every other copy goes with its
//!   checkpoints (they hold process memory, and are older than what runs);
//! - running nowhere: the copy holding the migration's checkpoint (the source's dump) is restored
//!   from it, the others go;
//! - running on several: nothing is touched, and the error says where (which copy's data to keep
//!   is the operator's decision).

use std::time::{Duration, Instant};

use bollard::query_parameters::{ListContainersOptionsBuilder, StartContainerOptions};
use serde::Serialize;

use crate::error::{Error, ProviderError};
use crate::migration::lock::{lock_name, LOCK_LABEL};
use crate::migration::path::direct::DOCKER_CHECKPOINT_SUFFIX;
use crate::migration::path::direct_transfer::{local_restore_directive, place_directive, MOUNT};
use crate::provider::helper::{HELPER_FOR_LABEL, HELPER_LABEL};
use crate::provider::Provider;
use crate::transfer::tar::writer::private_files_tar;
use vimigrate_protocol::{CriuOptions, RuntimeState, RuntimeStatus, ABORT_FILE, RUNTIME_NAME, STATE_DIR, STATUS_FILE};

/// How long heal waits for a destination's waiting start to end after withdrawing it.
const SETTLE: Duration = Duration::from_secs(60);

/// What heal found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HealReport {
    /// The container.
    pub container: String,
    /// The provider it runs on now.
    pub runs_on: Option<String>,
    /// Whether heal restored it from a checkpoint (it ran nowhere).
    pub resumed: bool,
    /// What heal removed, one line each (`provider-b: container web (stopped copy)`).
    pub removed: Vec<String>,
}

/// One provider's copy of the container.
#[derive(Debug, Clone)]
struct Copy {
    provider: usize,
    id: String,
    state: String,
    image: String,
    /// The networks it is attached to.
    networks: Vec<String>,
}

/// What heal does about the copies it found (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
enum HealDecision {
    /// Exactly one copy runs (or restarts): it is kept, the others go.
    Keep(usize),
    /// None runs: the copy holding the migration's checkpoint is restored from it.
    Resume,
    /// Several run: nothing is touched; these are their indexes.
    RunsOnSeveral(Vec<usize>),
}

/// The decision for `copies` (every copy of the container on every provider, the destination's
/// waiting start already settled).
fn decide(copies: &[Copy]) -> HealDecision {
    let running: Vec<usize> =
        (0..copies.len()).filter(|&i| matches!(copies[i].state.as_str(), "running" | "restarting")).collect();
    match running.as_slice() {
        [one] => HealDecision::Keep(*one),
        [] => HealDecision::Resume,
        _ => HealDecision::RunsOnSeveral(running),
    }
}

/// Makes container `name` run on exactly one of `providers` (see the module documentation).
pub async fn heal(providers: &[Provider], name: &str) -> Result<HealReport, Error> {
    crate::provider::spec::is_valid_docker_name(name)
        .then_some(())
        .ok_or_else(|| crate::error::InputError::new("container", "a container name", name))?;
    let mut report = HealReport { container: name.to_string(), ..Default::default() };

    // A destination still waiting for a transfer would restore later: settle it first.
    for (i, provider) in providers.iter().enumerate() {
        for copy in find(provider, i, name).await? {
            if copy.state == "created" {
                settle_waiting_start(provider, &copy, name).await?;
            }
        }
    }

    let mut copies = Vec::new();
    for (i, provider) in providers.iter().enumerate() {
        copies.extend(find(provider, i, name).await?);
    }
    let keep = match decide(&copies) {
        HealDecision::Keep(index) => copies[index].clone(),
        HealDecision::Resume => {
            let resumed = resume_from_checkpoint(providers, &copies, name).await?;
            report.resumed = true;
            resumed
        }
        HealDecision::RunsOnSeveral(found) => {
            let at: Vec<&str> = found.iter().map(|&i| providers[copies[i].provider].name()).collect();
            return Err(ProviderError::Inconsistent {
                provider: at.join(", "),
                invariant: "the container runs on one provider",
                detail: format!(
                    "`{name}` runs on {}; heal does not choose whose data to keep: stop the copy to drop, then heal again",
                    at.join(" and ")
                ),
            }
            .into());
        }
    };
    report.runs_on = Some(providers[keep.provider].name().to_string());

    for copy in copies.iter().filter(|c| !(c.provider == keep.provider && c.id == keep.id)) {
        let provider = &providers[copy.provider];
        if provider.force_remove(&copy.id).await? {
            report.removed.push(format!(
                "{}: container {name} ({}, with its checkpoints)",
                provider.name(),
                copy.state
            ));
        }
    }
    for provider in providers {
        if provider.break_migration_lock(name).await? {
            report.removed.push(format!("{}: migration lock {}", provider.name(), lock_name(name)));
        }
        for helper in helpers_of(provider, name).await? {
            if provider.force_remove(&helper).await? {
                report.removed.push(format!("{}: helper container {helper}", provider.name()));
            }
        }
    }
    // Networks an unfinished migration created for this container elsewhere, now unused.
    let others = providers.iter().enumerate().filter(|(i, _)| *i != keep.provider).map(|(_, p)| p);
    for provider in others {
        for network in provider.list_networks().await? {
            if network.created_by_migration
                && keep.networks.contains(&network.name)
                && provider.remove_network(&network.name, true).await?
            {
                report.removed.push(format!(
                    "{}: network {} (made by the unfinished migration)",
                    provider.name(),
                    network.name
                ));
            }
        }
    }
    // The kept copy's leftover checkpoints hold memory of an earlier state.
    let kept = &providers[keep.provider];
    for checkpoint in kept.list_checkpoints(&keep.id).await.unwrap_or_default() {
        if kept.delete_checkpoint(&keep.id, &checkpoint).await.unwrap_or(false) {
            report.removed.push(format!("{}: checkpoint {checkpoint} of {name}", kept.name()));
        }
    }
    Ok(report)
}

/// The copies of container `name` on `provider`, from the container list (which, unlike an
/// inspect, does not wait for a start in progress).
async fn find(provider: &Provider, index: usize, name: &str) -> Result<Vec<Copy>, Error> {
    Ok(provider
        .containers_named(name)
        .await?
        .into_iter()
        .filter(|c| c.labels.as_ref().and_then(|l| l.get(LOCK_LABEL)).is_none())
        .filter_map(|c| {
            Some(Copy {
                provider: index,
                id: c.id?,
                state: c.state.map(|s| s.to_string()).unwrap_or_default().to_lowercase(),
                image: c.image_id.or(c.image).unwrap_or_default(),
                networks: c
                    .network_settings
                    .and_then(|n| n.networks)
                    .map(|n| n.into_keys().collect())
                    .unwrap_or_default(),
            })
        })
        .collect())
}

async fn helpers_of(provider: &Provider, name: &str) -> Result<Vec<String>, Error> {
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![format!("{HELPER_LABEL}=true"), format!("{HELPER_FOR_LABEL}={name}")],
    )]);
    let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
    let found = provider
        .docker()
        .list_containers(Some(options))
        .await
        .map_err(provider.api_error(format!("list the helper containers of `{name}`")))?;
    Ok(found.into_iter().filter_map(|c| c.id).collect())
}

/// A helper on `provider` that mounts the directory of container `id`, found without
/// inspecting the container (an inspect waits for a start in progress).
async fn dir_helper(provider: &Provider, id: &str, image: &str, name: &str) -> Result<String, Error> {
    let dir = provider.container_dir_of_id(id).await?;
    let tag: String = id.chars().take(12).collect();
    provider.create_helper(&format!("vimigrate-helper-heal-{tag}"), image, &dir, MOUNT, false, name).await
}

async fn read_status(provider: &Provider, helper: &str) -> Option<RuntimeStatus> {
    let bytes = provider.read_file(helper, &format!("{MOUNT}/{STATE_DIR}/{STATUS_FILE}")).await.ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// A container left `created` may be a direct-path destination whose start still waits for the
/// transfer: its directive is withdrawn and heal waits for the start to end either way.
async fn settle_waiting_start(provider: &Provider, copy: &Copy, name: &str) -> Result<(), Error> {
    if copy.image.is_empty() {
        return Ok(());
    }
    let helper = dir_helper(provider, &copy.id, &copy.image, name).await?;
    let result = async {
        let waiting = read_status(provider, &helper).await.is_some_and(|s| {
            matches!(s.state, RuntimeState::Accepted | RuntimeState::Listening | RuntimeState::Received)
        });
        if !waiting {
            return Ok(());
        }
        let tar = private_files_tar(STATE_DIR, &[(ABORT_FILE, b"")]);
        provider.put_archive(&helper, MOUNT, tar).await?;
        let deadline = Instant::now() + SETTLE;
        while Instant::now() < deadline {
            let state = read_status(provider, &helper).await.map(|s| s.state);
            if matches!(state, Some(RuntimeState::Failed | RuntimeState::Restored)) {
                // The start call returns right after; give Docker a moment to record it.
                tokio::time::sleep(Duration::from_millis(500)).await;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(ProviderError::Failed {
            provider: provider.name().to_string(),
            step: format!("withdraw the waiting start of container {}", copy.id),
            detail: format!("it still waits for a transfer after {} s", SETTLE.as_secs()),
        }
        .into())
    }
    .await;
    let _ = provider.force_remove(&helper).await;
    result
}

/// Restores the copy that holds a checkpoint (the source's dump), newest checkpoint first.
async fn resume_from_checkpoint(providers: &[Provider], copies: &[Copy], name: &str) -> Result<Copy, Error> {
    // The source holds the lock; its copy is the one to resume.
    let mut ordered: Vec<&Copy> = copies.iter().collect();
    let mut has_lock = Vec::new();
    for c in &ordered {
        let locked = providers[c.provider].inspect_container_raw(&lock_name(name)).await.ok().flatten().is_some();
        has_lock.push((c.id.clone(), locked));
    }
    ordered.sort_by_key(|c| !has_lock.iter().any(|(id, locked)| *id == c.id && *locked));
    for copy in ordered {
        let provider = &providers[copy.provider];
        // Docker's own record of a direct-path checkpoint holds no images: skipped.
        let dumps: Vec<String> = provider
            .list_checkpoints(&copy.id)
            .await?
            .into_iter()
            .filter(|c| !c.ends_with(DOCKER_CHECKPOINT_SUFFIX))
            .collect();
        let Some(checkpoint) = dumps.into_iter().next_back() else {
            continue;
        };
        let inspect = provider.inspect_container_raw(&copy.id).await?;
        let runtime = inspect.as_ref().and_then(|i| i.host_config.as_ref()).and_then(|h| h.runtime.clone());
        let restored = if runtime.as_deref() == Some(RUNTIME_NAME) {
            restore_locally(provider, &copy.id, &copy.image, &checkpoint, name).await
        } else {
            Err(ProviderError::Failed {
                provider: provider.name().to_string(),
                step: "restore through vimigrate-runtime".into(),
                detail: "the container runs under another runtime".into(),
            }
            .into())
        };
        if let Err(e) = restored {
            tracing::info!(error = %e.report(), "restoring through Docker's own checkpoint path");
            provider.start_from_checkpoint(&copy.id, &checkpoint).await?;
        }
        let running = provider.inspect_deployed(&copy.id).await?.is_some_and(|c| c.running);
        if running {
            return Ok(Copy { state: "running".into(), ..copy.clone() });
        }
    }
    Err(ProviderError::Missing {
        provider: providers.iter().map(Provider::name).collect::<Vec<_>>().join(", "),
        what: "a copy to resume",
        detail: format!("`{name}` runs nowhere and no copy holds a checkpoint to resume it from"),
    }
    .into())
}

/// The direct path's local restore: a restore directive for the container's runtime, then a
/// plain start.
async fn restore_locally(
    provider: &Provider,
    id: &str,
    image: &str,
    checkpoint: &str,
    name: &str,
) -> Result<(), Error> {
    let helper = dir_helper(provider, id, image, name).await?;
    let result = async {
        let dir = provider.container_dir_of_id(id).await?;
        let criu = CriuOptions { tcp: None, skip_in_flight: true };
        place_directive(provider, &helper, &local_restore_directive(&dir, checkpoint, &criu)).await?;
        provider
            .docker()
            .start_container(id, None::<StartContainerOptions>)
            .await
            .map_err(provider.api_error(format!("restore container {id} from checkpoint {checkpoint}")))
    }
    .await;
    let _ = provider.force_remove(&helper).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copies(states: &[&str]) -> Vec<Copy> {
        states
            .iter()
            .enumerate()
            .map(|(i, state)| Copy {
                provider: i,
                id: format!("c{i}"),
                state: state.to_string(),
                image: "img".into(),
                networks: vec![],
            })
            .collect()
    }

    #[test]
    fn heal_keeps_the_one_running_copy_resumes_when_none_runs_and_refuses_two() {
        let table: [(&[&str], HealDecision); 7] = [
            (&["running", "created"], HealDecision::Keep(0)),
            (&["exited", "running"], HealDecision::Keep(1)),
            (&["restarting", "exited"], HealDecision::Keep(0)),
            (&["exited", "created"], HealDecision::Resume),
            (&["exited"], HealDecision::Resume),
            (&[], HealDecision::Resume),
            (&["running", "exited", "running"], HealDecision::RunsOnSeveral(vec![0, 2])),
        ];
        for (states, expected) in table {
            assert_eq!(decide(&copies(states)), expected, "{states:?}");
        }
    }
}
