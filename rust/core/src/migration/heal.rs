//! After a migration that did not finish (its broker died, a provider was unreachable during the
//! rollback, a post-copy lost the container): finds where a container really runs, makes it run
//! on exactly one provider, and removes what the migration left (the other copy, checkpoints,
//! helpers, the lock, the networks it created elsewhere for the container and that nothing uses).
//!
//! The rules, in order:
//! - a destination whose runtime may still restore (a start still waiting for the transfer) is
//!   told to give up, and heal waits until it did or restored: its outcome decides;
//! - running on exactly one provider: that one is kept, every other copy goes with its
//!   checkpoints (they hold process memory, and are older than what runs);
//! - running nowhere: the copy holding the migration's checkpoint (the source's dump) is restored
//!   from it, the others go. A post-copy's dumps do not count: their images hold no memory;
//! - running nowhere with no checkpoint to resume from (a post-copy broke inside its window):
//!   the process state is lost. Heal refuses, unless asked to restart from the image
//!   ([`HealOptions::restart_from_image`]): one copy is then started afresh (see
//!   `restart_candidate` for which), the others go;
//! - running on several: nothing is touched, and the error says where (which copy's data to keep
//!   is the operator's decision).

use std::time::{Duration, Instant};

use bollard::query_parameters::{
    ContainerArchiveInfoOptionsBuilder, ListContainersOptionsBuilder, StartContainerOptions,
};
use serde::{Deserialize, Serialize};

use crate::error::{is_not_found, Error, ProviderError};
use crate::migration::host::kill_and_wait;
use crate::migration::lock::{lock_name, LOCK_LABEL};
use crate::migration::path::direct::DOCKER_CHECKPOINT_SUFFIX;
use crate::migration::path::direct_transfer::{local_restore_directive, place_directive, MOUNT};
use crate::provider::helper::{HELPER_FOR_LABEL, HELPER_LABEL};
use crate::provider::Provider;
use crate::transfer::tar::writer::{private_files_tar, symlink_tar};
use vimigrate_protocol::{
    lazy_dump_mark, CriuOptions, RuntimeState, RuntimeStatus, ABORT_FILE, DIRECTIVE_FILE, PAGES_STATUS_FILE,
    RESTORED_MARK, RUNTIME_NAME, STATE_DIR, STATUS_FILE,
};

/// How long heal waits for a destination's waiting start to end after withdrawing it.
const SETTLE: Duration = Duration::from_secs(60);
/// How long heal waits for a killed start to stop (see [`use_up_restored_mark`]).
const STOP: Duration = Duration::from_secs(10);
/// What a withdrawn directive's link points to: nothing, ever.
const WITHDRAWN_DIRECTIVE: &str = "directive.json.withdrawn-by-heal";
/// Go's `os.ModeDir` and `os.ModeSymlink`, as Docker's archive endpoint reports a file's mode.
const GO_MODE_DIR: u32 = 1 << 31;
const GO_MODE_SYMLINK: u32 = 1 << 27;

/// What the caller lets heal do beyond keeping or resuming a copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HealOptions {
    /// When the container runs nowhere and no copy holds a checkpoint it can resume from (a
    /// post-copy that broke inside its window leaves only dumps without memory): start one copy
    /// afresh from its image. Its process state is lost; its writable layer and volumes stay as
    /// they are. Never done while a copy runs or a checkpoint can resume it.
    pub restart_from_image: bool,
}

/// What heal found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HealReport {
    /// The container.
    pub container: String,
    /// The provider it runs on now.
    pub runs_on: Option<String>,
    /// Whether heal restored it from a checkpoint (it ran nowhere).
    pub resumed: bool,
    /// Whether heal started it afresh from its image (it ran nowhere and its process state was
    /// lost; see [`HealOptions::restart_from_image`]).
    pub restarted_from_image: bool,
    /// What heal removed, one line each (`provider-b: container web (stopped copy)`).
    pub removed: Vec<String>,
    /// The group it moved with, when its migration was a group's (its lock recorded it): heal
    /// settled them all, on one provider.
    pub group: Vec<String>,
    /// Members of that group that ran elsewhere after their own settling and were live-migrated
    /// to the group's provider.
    pub regrouped: Vec<String>,
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
    /// Learnt only when no copy runs (it costs a helper per copy); empty otherwise.
    holdings: Holdings,
}

impl Copy {
    fn runs(&self) -> bool {
        matches!(self.state.as_str(), "running" | "restarting")
    }
}

/// What a copy that does not run holds, for the decision when none runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Holdings {
    /// Checkpoints whose images hold the process's memory, oldest first: what it can resume
    /// from.
    resumable: Vec<String>,
    /// Post-copy checkpoints: their images hold no memory (it stayed in the source's frozen
    /// processes, or was being fetched by the destination), so no restore is tried from them
    /// (CRIU spins on the missing pages).
    lazy: Vec<String>,
    /// Whether the last restore of this copy's runtime was a post-copy's: the destination that
    /// ran the service until the pages stopped coming.
    post_copy_destination: bool,
    /// Whether its provider holds the container's migration lock: the source of a migration
    /// whose broker died.
    holds_lock: bool,
    /// Whether it runs under vimigrate-runtime (whose state directory heal reads and writes).
    vimigrate_runtime: bool,
}

/// What heal does about the copies it found (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
enum HealDecision {
    /// Exactly one copy runs (or restarts): it is kept, the others go.
    Keep(usize),
    /// None runs: a copy is restored from its newest resumable checkpoint, trying these in
    /// order (the lock's holder first).
    Resume(Vec<usize>),
    /// None runs, no checkpoint holds the process state, and the caller allowed a fresh start:
    /// this copy starts from its image.
    RestartFromImage(usize),
    /// None runs, no checkpoint holds the process state, and the caller did not allow a fresh
    /// start: nothing is touched.
    StateLost,
    /// There is no copy at all.
    NoCopy,
    /// Several run: nothing is touched; these are their indexes.
    RunsOnSeveral(Vec<usize>),
}

/// The decision for `copies` (every copy of the container on every provider, the destination's
/// waiting start already settled, their holdings learnt when none runs).
fn decide(copies: &[Copy], options: HealOptions) -> HealDecision {
    let running: Vec<usize> = (0..copies.len()).filter(|&i| copies[i].runs()).collect();
    match running.as_slice() {
        [one] => return HealDecision::Keep(*one),
        [] => {}
        _ => return HealDecision::RunsOnSeveral(running),
    }
    if copies.is_empty() {
        return HealDecision::NoCopy;
    }
    let mut resumable: Vec<usize> = (0..copies.len()).filter(|&i| !copies[i].holdings.resumable.is_empty()).collect();
    // The source of an unfinished migration holds the lock; its dump is the freeze's.
    resumable.sort_by_key(|&i| !copies[i].holdings.holds_lock);
    if !resumable.is_empty() {
        // Resuming keeps the process state: it wins over any fresh start.
        HealDecision::Resume(resumable)
    } else if options.restart_from_image {
        HealDecision::RestartFromImage(restart_candidate(copies))
    } else {
        HealDecision::StateLost
    }
}

/// The copy a restart from the image starts, when none runs and none can resume (`copies` is
/// not empty).
///
/// First the destination a post-copy restored (its runtime's last restore was a post-copy's):
/// the service ran there from the restore until the pages stopped coming, so its writable layer
/// and volumes hold what it wrote last (the source's are as of the freeze); its networks were
/// set up there by the migration (created if missing, labelled so that heal removes them from
/// the other providers), its published ports bound, and the migration's own error names it as
/// the container to start afresh. DNS does not change the choice: the engine never switches
/// records (sequence.rs has no DNS step); the `migrate` workflow switches them only after a
/// move that succeeded, so after a lost one they still name the source, and the `heal`
/// workflow points every record at wherever heal left the container, whichever copy that is.
///
/// Then, without a post-copy destination (it was removed, or the migration was not a
/// post-copy): the source, known by the migration lock its provider holds or by its post-copy
/// dump; then the first in the providers' order (the command line gives the source first).
fn restart_candidate(copies: &[Copy]) -> usize {
    (0..copies.len())
        .min_by_key(|&i| {
            let h = &copies[i].holdings;
            (!h.post_copy_destination, !h.holds_lock, h.lazy.is_empty(), i)
        })
        .unwrap_or(0)
}

/// Makes container `name` run on exactly one of `providers` (see the module documentation),
/// never restarting it from its image: [`heal_with`] with the default [`HealOptions`].
pub async fn heal(providers: &[Provider], name: &str) -> Result<HealReport, Error> {
    heal_with(providers, name, HealOptions::default()).await
}

/// Makes container `name` run on exactly one of `providers` (see the module documentation),
/// as `options` allow. When its lock says it moved with a group, the whole group is settled
/// (see `group/heal.rs`): each member on exactly one provider, and all on the same one.
pub async fn heal_with(providers: &[Provider], name: &str, options: HealOptions) -> Result<HealReport, Error> {
    crate::provider::spec::is_valid_docker_name(name)
        .then_some(())
        .ok_or_else(|| crate::error::InputError::new("container", "a container name", name))?;
    match crate::migration::group::heal::group_of(providers, name).await? {
        Some(group) => crate::migration::group::heal::heal_group(providers, name, &group, options).await,
        None => heal_one(providers, name, options).await,
    }
}

/// [`heal_with`] for one container, whatever group it moved with.
pub(crate) async fn heal_one(providers: &[Provider], name: &str, options: HealOptions) -> Result<HealReport, Error> {
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
    if !copies.iter().any(Copy::runs) {
        for copy in &mut copies {
            copy.holdings = holdings_of(&providers[copy.provider], copy, name).await?;
        }
    }
    let keep = match decide(&copies, options) {
        HealDecision::Keep(index) => copies[index].clone(),
        HealDecision::Resume(order) => {
            let resumed = resume_from_checkpoint(providers, &copies, &order, name).await?;
            report.resumed = true;
            resumed
        }
        HealDecision::RestartFromImage(index) => {
            let restarted = restart_from_image(&providers[copies[index].provider], &copies[index], name).await?;
            report.restarted_from_image = true;
            restarted
        }
        HealDecision::StateLost => return Err(state_lost(providers, &copies, name)),
        HealDecision::NoCopy => {
            return Err(ProviderError::Missing {
                provider: providers.iter().map(Provider::name).collect::<Vec<_>>().join(", "),
                what: "a copy to heal",
                detail: format!("`{name}` runs nowhere and no provider holds a copy of it"),
            }
            .into())
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
                holdings: Holdings::default(),
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

/// What `copy` holds (see [`Holdings`]).
async fn holdings_of(provider: &Provider, copy: &Copy, name: &str) -> Result<Holdings, Error> {
    let holds_lock = provider.inspect_container_raw(&lock_name(name)).await.ok().flatten().is_some();
    // Docker's own record of a direct-path checkpoint holds no images: never resumed from.
    let dumps: Vec<String> = provider
        .list_checkpoints(&copy.id)
        .await?
        .into_iter()
        .filter(|c| !c.ends_with(DOCKER_CHECKPOINT_SUFFIX))
        .collect();
    let inspect = provider.inspect_container_raw(&copy.id).await?;
    let runtime = inspect.as_ref().and_then(|i| i.host_config.as_ref()).and_then(|h| h.runtime.clone());
    let vimigrate_runtime = runtime.as_deref() == Some(RUNTIME_NAME);
    let holdings = Holdings { holds_lock, vimigrate_runtime, ..Holdings::default() };
    // Only vimigrate-runtime dumps post-copy, and marks it in its state directory.
    if !vimigrate_runtime || copy.image.is_empty() {
        return Ok(Holdings { resumable: dumps, ..holdings });
    }
    let helper = dir_helper(provider, &copy.id, &copy.image, name).await?;
    let learnt = async {
        let last_restore = reported_migration(provider, &helper, STATUS_FILE).await?;
        let paged = reported_migration(provider, &helper, PAGES_STATUS_FILE).await?;
        let (mut resumable, mut lazy) = (Vec::new(), Vec::new());
        for dump in dumps {
            let marked = state_entry(provider, &helper, &lazy_dump_mark(&dump)).await? != StateEntry::Absent;
            // A post-copy destination received images without memory, and no mark says so.
            if marked || paged.as_deref() == Some(dump.as_str()) {
                lazy.push(dump);
            } else {
                resumable.push(dump);
            }
        }
        let post_copy_destination = paged.is_some() && paged == last_restore;
        Ok::<_, Error>(Holdings { resumable, lazy, post_copy_destination, ..holdings })
    }
    .await;
    let _ = provider.force_remove(&helper).await;
    learnt
}

/// The migration a report of the runtime (`file` in the state directory) is about; `None`
/// without one, or for one that does not parse (it then says nothing).
async fn reported_migration(provider: &Provider, helper: &str, file: &str) -> Result<Option<String>, Error> {
    #[derive(Deserialize)]
    struct Reported {
        migration: String,
    }
    let Some(bytes) = provider.read_file(helper, &format!("{MOUNT}/{STATE_DIR}/{file}")).await? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice::<Reported>(&bytes).ok().map(|r| r.migration))
}

/// What sits at a path of a container's state directory, as Docker's archive endpoint sees it
/// (a link is not followed).
#[derive(Debug, Clone, PartialEq, Eq)]
enum StateEntry {
    Absent,
    Dir,
    Link(String),
    File,
}

/// What is at `file` of the state directory that `helper` mounts.
async fn state_entry(provider: &Provider, helper: &str, file: &str) -> Result<StateEntry, Error> {
    let path = format!("{MOUNT}/{STATE_DIR}/{file}");
    let options = ContainerArchiveInfoOptionsBuilder::new().path(&path).build();
    match provider.docker().get_container_archive_info(helper, Some(options)).await {
        Ok(stat) if stat.file_mode & GO_MODE_SYMLINK != 0 => Ok(StateEntry::Link(stat.link_target)),
        Ok(stat) if stat.file_mode & GO_MODE_DIR != 0 => Ok(StateEntry::Dir),
        Ok(_) => Ok(StateEntry::File),
        Err(e) if is_not_found(&e) => Ok(StateEntry::Absent),
        Err(e) => Err(provider.api_error(format!("look at `{path}` in helper container {helper}"))(e)),
    }
}

/// Restores a copy from its newest resumable checkpoint, trying the copies of `order` in turn.
async fn resume_from_checkpoint(
    providers: &[Provider],
    copies: &[Copy],
    order: &[usize],
    name: &str,
) -> Result<Copy, Error> {
    for copy in order.iter().map(|&i| &copies[i]) {
        let Some(checkpoint) = copy.holdings.resumable.last() else {
            continue;
        };
        let provider = &providers[copy.provider];
        let restored = if copy.holdings.vimigrate_runtime {
            restore_locally(provider, &copy.id, &copy.image, checkpoint, name).await
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
            provider.start_from_checkpoint(&copy.id, checkpoint).await?;
        }
        let running = provider.inspect_deployed(&copy.id).await?.is_some_and(|c| c.running);
        if running {
            return Ok(Copy { state: "running".into(), ..copy.clone() });
        }
    }
    Err(ProviderError::Failed {
        provider: order.iter().map(|&i| providers[copies[i].provider].name()).collect::<Vec<_>>().join(", "),
        step: format!("resume `{name}` from its checkpoint"),
        detail: "it runs nowhere and no restore from its checkpoints left it running".into(),
    }
    .into())
}

/// The refusal when none runs and no checkpoint holds the process state: what each copy holds.
fn state_lost(providers: &[Provider], copies: &[Copy], name: &str) -> Error {
    let found: Vec<String> = copies
        .iter()
        .map(|c| {
            let held = match c.holdings.lazy.as_slice() {
                [] => "no checkpoint".to_string(),
                lazy => format!("only post-copy dumps, which hold no memory ({})", lazy.join(", ")),
            };
            format!("{}: {} copy, {held}", providers[c.provider].name(), c.state)
        })
        .collect();
    ProviderError::StateLost {
        provider: copies.iter().map(|c| providers[c.provider].name()).collect::<Vec<_>>().join(", "),
        step: format!("resume `{name}` from a checkpoint"),
        container: name.to_string(),
        detail: format!("it runs nowhere; {}", found.join("; ")),
    }
    .into()
}

/// Starts `copy` afresh from its image: a plain start, no checkpoint.
async fn restart_from_image(provider: &Provider, copy: &Copy, name: &str) -> Result<Copy, Error> {
    if copy.holdings.vimigrate_runtime {
        clear_restore_leftovers(provider, copy, name).await?;
    }
    let id = &copy.id;
    provider
        .docker()
        .start_container(id, None::<StartContainerOptions>)
        .await
        .map_err(provider.api_error(format!("start container {id} afresh from its image")))?;
    if !provider.inspect_deployed(id).await?.is_some_and(|c| c.running) {
        return Err(ProviderError::Failed {
            provider: provider.name().to_string(),
            step: format!("start `{name}` afresh from its image"),
            detail: format!("container {id} stopped right after its start"),
        }
        .into());
    }
    Ok(Copy { state: "running".into(), ..copy.clone() })
}

/// Under vimigrate-runtime a plain `docker start` turns into something else when an earlier
/// migration left a trace in the container's state directory (the runtime's `restore.rs`): a
/// directive makes `create` restore (or fail, for a dump directive), and a restore's mark makes
/// `start` return without running the process. Neither may survive into a fresh start.
async fn clear_restore_leftovers(provider: &Provider, copy: &Copy, name: &str) -> Result<(), Error> {
    let helper = dir_helper(provider, &copy.id, &copy.image, name).await?;
    let result = async {
        match state_entry(provider, &helper, DIRECTIVE_FILE).await? {
            StateEntry::Absent => {}
            StateEntry::Link(target) if is_withdrawn(&target) => {}
            _ => withdraw_directive(provider, &helper, &copy.id).await?,
        }
        // A directory is a mark the runtime cannot remove, so it never skips a start for it.
        if matches!(state_entry(provider, &helper, RESTORED_MARK).await?, StateEntry::File | StateEntry::Link(_)) {
            use_up_restored_mark(provider, &helper, &copy.id).await?;
        }
        Ok(())
    }
    .await;
    let _ = provider.force_remove(&helper).await;
    result
}

/// Puts a link to nothing in the place of the directive of container `id`. The archive endpoint
/// cannot delete a file; the runtime reads its directive following links, so a dangling one is
/// no directive, and the next directive placed replaces the link.
async fn withdraw_directive(provider: &Provider, helper: &str, id: &str) -> Result<(), Error> {
    let tar = symlink_tar(&format!("{STATE_DIR}/{DIRECTIVE_FILE}"), WITHDRAWN_DIRECTIVE);
    provider.put_archive(helper, MOUNT, tar).await?;
    match state_entry(provider, helper, DIRECTIVE_FILE).await? {
        StateEntry::Link(target) if is_withdrawn(&target) => Ok(()),
        other => Err(ProviderError::Failed {
            provider: provider.name().to_string(),
            step: format!("withdraw the directive left for container {id}"),
            detail: format!("after the withdrawal the directive's place holds {other:?}"),
        }
        .into()),
    }
}

/// Whether a link's target is a withdrawn directive's (Docker reports it resolved in the
/// helper's filesystem: `/vimigrate-c/vimigrate/directive.json.withdrawn-by-heal`).
fn is_withdrawn(target: &str) -> bool {
    std::path::Path::new(target).file_name().is_some_and(|f| f == WITHDRAWN_DIRECTIVE)
}

/// Only the runtime removes a restore's mark, on the `start` it answers: one start of container
/// `id` uses it up (its process stays in runc's init, never run), and a kill ends that start.
async fn use_up_restored_mark(provider: &Provider, helper: &str, id: &str) -> Result<(), Error> {
    let step = || format!("use up the restore mark left for container {id}");
    provider.docker().start_container(id, None::<StartContainerOptions>).await.map_err(provider.api_error(step()))?;
    // A start that ran the process after all ends here too: its state is lost either way.
    if !kill_and_wait(provider, id, STOP).await? {
        return Err(ProviderError::Failed {
            provider: provider.name().to_string(),
            step: step(),
            detail: format!("the start that used it up still runs {} s after a kill", STOP.as_secs()),
        }
        .into());
    }
    match state_entry(provider, helper, RESTORED_MARK).await? {
        StateEntry::Absent => Ok(()),
        other => Err(ProviderError::Failed {
            provider: provider.name().to_string(),
            step: step(),
            detail: format!("after a start the mark's place still holds {other:?}"),
        }
        .into()),
    }
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

    const RESTART: HealOptions = HealOptions { restart_from_image: true };

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
                holdings: Holdings::default(),
            })
            .collect()
    }

    fn holding(mut copies: Vec<Copy>, index: usize, holdings: Holdings) -> Vec<Copy> {
        copies[index].holdings = holdings;
        copies
    }

    fn resumable(name: &str) -> Holdings {
        Holdings { resumable: vec![name.into()], vimigrate_runtime: true, ..Holdings::default() }
    }

    fn lazy(name: &str) -> Holdings {
        Holdings { lazy: vec![name.into()], vimigrate_runtime: true, ..Holdings::default() }
    }

    fn post_copy_destination() -> Holdings {
        Holdings { post_copy_destination: true, vimigrate_runtime: true, ..Holdings::default() }
    }

    #[test]
    fn heal_keeps_the_one_running_copy_and_refuses_two() {
        let table: [(&[&str], HealDecision); 4] = [
            (&["running", "created"], HealDecision::Keep(0)),
            (&["exited", "running"], HealDecision::Keep(1)),
            (&["restarting", "exited"], HealDecision::Keep(0)),
            (&["running", "exited", "running"], HealDecision::RunsOnSeveral(vec![0, 2])),
        ];
        for (states, expected) in table {
            assert_eq!(decide(&copies(states), HealOptions::default()), expected, "{states:?}");
            assert_eq!(decide(&copies(states), RESTART), expected, "{states:?}: a running copy is never restarted");
        }
    }

    #[test]
    fn a_running_copy_wins_over_every_checkpoint_and_any_restart() {
        let found = holding(copies(&["exited", "running"]), 0, resumable("vimigrate-1"));
        assert_eq!(decide(&found, RESTART), HealDecision::Keep(1));
    }

    #[test]
    fn none_running_resumes_from_a_checkpoint_the_lock_s_holder_first() {
        let found = holding(copies(&["exited", "created"]), 0, resumable("vimigrate-1"));
        assert_eq!(decide(&found, HealOptions::default()), HealDecision::Resume(vec![0]));
        let both = holding(found, 1, Holdings { holds_lock: true, ..resumable("vimigrate-2") });
        assert_eq!(decide(&both, HealOptions::default()), HealDecision::Resume(vec![1, 0]));
    }

    #[test]
    fn a_resumable_checkpoint_wins_over_a_restart_from_the_image() {
        // The post-copy destination would be the one restarted; the other's dump keeps the state.
        let found = holding(copies(&["exited", "exited"]), 0, post_copy_destination());
        let found = holding(found, 1, Holdings { lazy: vec!["vimigrate-2".into()], ..resumable("vimigrate-1") });
        assert_eq!(decide(&found, RESTART), HealDecision::Resume(vec![1]));
    }

    #[test]
    fn only_a_lazy_dump_is_lost_state_refused_unless_a_restart_is_asked_for() {
        let found = holding(copies(&["exited"]), 0, lazy("vimigrate-1"));
        assert_eq!(decide(&found, HealOptions::default()), HealDecision::StateLost);
        assert_eq!(decide(&found, RESTART), HealDecision::RestartFromImage(0));
        let bare = copies(&["exited", "created"]);
        assert_eq!(decide(&bare, HealOptions::default()), HealDecision::StateLost);
    }

    #[test]
    fn a_restart_starts_the_post_copy_destination_else_the_source() {
        // After a lost post-copy with keep_source: the source (provider 0) holds the lazy dump.
        let lost = holding(copies(&["exited", "exited"]), 0, lazy("vimigrate-1"));
        let lost = holding(lost, 1, post_copy_destination());
        assert_eq!(decide(&lost, RESTART), HealDecision::RestartFromImage(1));
        // The destination gone: the source, by its lazy dump or by the lock, before the order.
        let source_only = holding(copies(&["exited", "exited"]), 1, lazy("vimigrate-1"));
        assert_eq!(decide(&source_only, RESTART), HealDecision::RestartFromImage(1));
        let locked = holding(copies(&["exited", "exited"]), 1, Holdings { holds_lock: true, ..Holdings::default() });
        assert_eq!(decide(&locked, RESTART), HealDecision::RestartFromImage(1));
        assert_eq!(decide(&copies(&["exited", "exited"]), RESTART), HealDecision::RestartFromImage(0));
    }

    #[test]
    fn no_copy_at_all_is_neither_resumed_nor_restarted() {
        assert_eq!(decide(&[], HealOptions::default()), HealDecision::NoCopy);
        assert_eq!(decide(&[], RESTART), HealDecision::NoCopy);
    }

    #[test]
    fn a_withdrawn_directive_is_known_by_its_link_however_docker_reports_it() {
        assert!(is_withdrawn("/vimigrate-c/vimigrate/directive.json.withdrawn-by-heal"));
        assert!(is_withdrawn(WITHDRAWN_DIRECTIVE));
        assert!(!is_withdrawn("/vimigrate-c/vimigrate/directive.json.rejected"));
    }

    #[test]
    fn the_refusal_names_the_option_and_what_each_copy_holds() {
        let message = ProviderError::StateLost {
            provider: "provider-b".into(),
            step: "resume `web` from a checkpoint".into(),
            container: "web".into(),
            detail: "it runs nowhere; provider-b: exited copy, no checkpoint".into(),
        }
        .to_string();
        for needed in
            ["process state of `web` is lost", "`restart_from_image`", "--restart-from-image", "no checkpoint"]
        {
            assert!(message.contains(needed), "{needed}: {message}");
        }
    }
}
