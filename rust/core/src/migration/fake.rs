//! In-memory hosts and a scripted checkpoint path, for the orchestration's unit tests: what the
//! phase sequence, the rollback and the cleanup do, in milliseconds, without root or Docker.
//! Fakes are for these tests only; every end-to-end test runs against real daemons.
//!
//! Every call a fake host answers is written to a journal shared by both hosts
//! (`provider-a remove_container src-1`), so that tests assert on what happened and in which
//! order, not only on the end state.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{Error, ProviderError};
use crate::migration::clone::CloneChanges;
use crate::migration::host::{BytesProgress, Host};
use crate::migration::options::MigrationOptions;
use crate::migration::path::{CheckpointPath, Ctx, StepError};
use crate::migration::report::{MigrationStats, Phase};
use crate::migration::side::Side;
use crate::migration::source::SourceContainer;
use crate::migration::undo::Undo;
use crate::network::map::NetworkDecision;

/// Calls in the order the hosts and the path saw them.
pub(crate) type Journal = Arc<Mutex<Vec<String>>>;

/// A container on a fake host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FakeContainer {
    pub running: bool,
    pub checkpoints: Vec<String>,
    pub addresses: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
struct HostState {
    containers: BTreeMap<String, FakeContainer>,
    networks: BTreeSet<String>,
    criu_conf: Option<Vec<u8>>,
    unreachable: bool,
    /// Operation -> how many more calls of it fail (`u32::MAX`: all).
    failing: HashMap<&'static str, u32>,
    created: u32,
}

/// One provider, in memory.
#[derive(Debug, Clone)]
pub(crate) struct FakeHost {
    name: String,
    state: Arc<Mutex<HostState>>,
    journal: Journal,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FakeHost {
    pub(crate) fn new(name: &str, journal: &Journal) -> Self {
        FakeHost { name: name.into(), state: Arc::default(), journal: journal.clone() }
    }

    /// Adds a container.
    pub(crate) fn with(self, id: &str, container: FakeContainer) -> Self {
        lock(&self.state).containers.insert(id.into(), container);
        self
    }

    /// Adds a network.
    pub(crate) fn with_network(self, name: &str) -> Self {
        lock(&self.state).networks.insert(name.into());
        self
    }

    pub(crate) fn container(&self, id: &str) -> Option<FakeContainer> {
        lock(&self.state).containers.get(id).cloned()
    }

    pub(crate) fn containers(&self) -> Vec<String> {
        lock(&self.state).containers.keys().cloned().collect()
    }

    pub(crate) fn networks(&self) -> BTreeSet<String> {
        lock(&self.state).networks.clone()
    }

    pub(crate) fn criu_conf(&self) -> Option<Vec<u8>> {
        lock(&self.state).criu_conf.clone()
    }

    pub(crate) fn set_criu_conf(&self, content: &[u8]) {
        lock(&self.state).criu_conf = Some(content.to_vec());
    }

    /// From now on every call fails as a daemon that does not answer would.
    pub(crate) fn go_unreachable(&self) {
        lock(&self.state).unreachable = true;
    }

    /// The next `times` calls of `operation` fail.
    pub(crate) fn fail(&self, operation: &'static str, times: u32) {
        lock(&self.state).failing.insert(operation, times);
    }

    /// Journals a call and answers it: the host's state, or the failure it was set up for.
    fn call(&self, operation: &'static str, arg: &str) -> Result<MutexGuard<'_, HostState>, Error> {
        lock(&self.journal).push(format!("{} {operation} {arg}", self.name));
        let mut state = lock(&self.state);
        if state.unreachable {
            return Err(ProviderError::Api {
                provider: self.name.clone(),
                step: format!("{operation} {arg}"),
                source: bollard::errors::Error::RequestTimeoutError,
            }
            .into());
        }
        if let Some(left) = state.failing.get_mut(operation).filter(|left| **left > 0) {
            *left = left.saturating_sub(1);
            return Err(ProviderError::Failed {
                provider: self.name.clone(),
                step: format!("{operation} {arg}"),
                detail: "injected".into(),
            }
            .into());
        }
        Ok(state)
    }

    fn container_mut<'s>(
        &self,
        state: &'s mut MutexGuard<'_, HostState>,
        id: &str,
    ) -> Result<&'s mut FakeContainer, Error> {
        state.containers.get_mut(id).ok_or_else(|| {
            ProviderError::Missing { provider: self.name.clone(), what: "a container", detail: id.into() }.into()
        })
    }
}

impl Host for FakeHost {
    fn name(&self) -> &str {
        &self.name
    }

    async fn ensure_image_from(&self, _src: &Self, image: &str, progress: BytesProgress<'_>) -> Result<u64, Error> {
        drop(self.call("ensure_image", image)?);
        progress(0);
        Ok(0)
    }

    async fn network_exists(&self, name: &str) -> Result<bool, Error> {
        Ok(self.call("network_exists", name)?.networks.contains(name))
    }

    async fn create_destination(
        &self,
        source: &SourceContainer,
        decisions: &[NetworkDecision],
        _changes: &CloneChanges,
    ) -> Result<String, Error> {
        let mut state = self.call("create_destination", &source.name)?;
        for spec in decisions.iter().filter_map(|d| d.create.as_ref()) {
            state.networks.insert(spec.name.clone());
        }
        state.created += 1;
        let id = format!("dst-{}", state.created);
        let addresses = source.networks.iter().map(|n| (n.network.clone(), "10.9.0.9".to_string())).collect();
        state.containers.insert(id.clone(), FakeContainer { addresses, ..FakeContainer::default() });
        Ok(id)
    }

    async fn is_running(&self, container: &str) -> Result<bool, Error> {
        Ok(self.call("is_running", container)?.containers.get(container).is_some_and(|c| c.running))
    }

    async fn addresses(&self, container: &str) -> Result<Option<BTreeMap<String, String>>, Error> {
        Ok(self.call("addresses", container)?.containers.get(container).map(|c| c.addresses.clone()))
    }

    async fn remove_container(&self, container: &str) -> Result<bool, Error> {
        Ok(self.call("remove_container", container)?.containers.remove(container).is_some())
    }

    async fn kill_container(&self, container: &str) -> Result<bool, Error> {
        let mut state = self.call("kill_container", container)?;
        Ok(state.containers.get_mut(container).is_some_and(|c| std::mem::replace(&mut c.running, false)))
    }

    async fn checkpoints(&self, container: &str) -> Result<Vec<String>, Error> {
        let state = self.call("checkpoints", container)?;
        Ok(state.containers.get(container).map(|c| c.checkpoints.clone()).unwrap_or_default())
    }

    async fn delete_checkpoint(&self, container: &str, name: &str) -> Result<bool, Error> {
        let mut state = self.call("delete_checkpoint", &format!("{container} {name}"))?;
        let Some(found) = state.containers.get_mut(container) else { return Ok(false) };
        let before = found.checkpoints.len();
        found.checkpoints.retain(|c| c != name);
        Ok(found.checkpoints.len() != before)
    }

    async fn remove_unused_network(&self, name: &str) -> Result<bool, Error> {
        Ok(self.call("remove_unused_network", name)?.networks.remove(name))
    }

    async fn restore_criu_options(&self, _image: &str, previous: Option<Vec<u8>>) -> Result<(), Error> {
        self.call("restore_criu_options", "")?.criu_conf = previous;
        Ok(())
    }
}

/// A step of the fake path that a test makes fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Step {
    Prepare,
    Precopy,
    Arm,
    /// The dump fails: the source's processes still run, no checkpoint.
    FreezeBeforeDump,
    /// Docker fails after a complete dump: the source is stopped and holds the checkpoint.
    FreezeAfterDump,
    /// The dump stops the source and its checkpoint is lost (Docker deletes its checkpoint
    /// directory when its call fails).
    FreezeLosesCheckpoint,
    Transfer,
    Verify,
    Restore,
    /// The restore succeeds, then the container stops at once.
    RestoredThenStopped,
    /// The restore fails and the destination stops answering.
    RestoreThenUnreachable,
    /// Resuming the source fails.
    ResumeSource,
}

/// The two flavours of the real paths, as far as the orchestration can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavour {
    /// Docker's path: the hosts' CRIU option set in `arm`, the destination started by the
    /// restore phase.
    Docker,
    /// The direct path: the destination started in `arm`, restored within the transfer.
    Direct,
}

/// A checkpoint path that does to the fake hosts what a real one would do to real ones.
#[derive(Debug)]
pub(crate) struct FakePath {
    flavour: Flavour,
    failing: BTreeSet<Step>,
    journal: Journal,
}

impl FakePath {
    pub(crate) fn new(flavour: Flavour, journal: &Journal) -> Self {
        FakePath { flavour, failing: BTreeSet::new(), journal: journal.clone() }
    }

    pub(crate) fn failing(mut self, step: Step) -> Self {
        self.failing.insert(step);
        self
    }

    fn note(&self, what: &str) {
        lock(&self.journal).push(format!("path {what}"));
    }

    fn step(&self, step: Step) -> Result<(), Error> {
        self.note(&format!("{step:?}"));
        if self.failing.contains(&step) {
            return Err(ProviderError::Failed {
                provider: "fake".into(),
                step: format!("{step:?}"),
                detail: "injected".into(),
            }
            .into());
        }
        Ok(())
    }
}

fn destination(undo: &Undo) -> String {
    undo.destination_id.clone().unwrap_or_default()
}

impl CheckpointPath<FakeHost> for FakePath {
    fn method(&self) -> &'static str {
        match self.flavour {
            Flavour::Docker => "docker",
            Flavour::Direct => "direct",
        }
    }

    async fn prepare(&mut self, ctx: &Ctx<'_, FakeHost>, undo: &mut Undo) -> Result<(), Error> {
        for (side, host) in [(Side::Source, ctx.src), (Side::Destination, ctx.dst)] {
            let helper = format!("helper-{side}");
            lock(&host.state).containers.insert(helper.clone(), FakeContainer::default());
            undo.helpers.push((side, helper));
        }
        self.step(Step::Prepare)
    }

    async fn precopy(
        &mut self,
        _ctx: &Ctx<'_, FakeHost>,
        _undo: &Undo,
        stats: &mut MigrationStats,
    ) -> Result<(), Error> {
        stats.precopy_bytes = 1;
        self.step(Step::Precopy)
    }

    async fn arm(&mut self, ctx: &Ctx<'_, FakeHost>, undo: &mut Undo) -> Result<(), Error> {
        match self.flavour {
            Flavour::Direct => undo.destination_started = true,
            Flavour::Docker => {
                for (side, host) in [(Side::Source, ctx.src), (Side::Destination, ctx.dst)] {
                    let previous = host.criu_conf();
                    host.set_criu_conf(format!("tcp-close # {side}").as_bytes());
                    undo.criu_options.push((side, previous));
                }
            }
        }
        self.step(Step::Arm)
    }

    fn arms_host_wide(&self) -> bool {
        self.flavour == Flavour::Docker
    }

    async fn freeze(&mut self, ctx: &Ctx<'_, FakeHost>) -> Result<(), Error> {
        if self.failing.contains(&Step::FreezeBeforeDump) {
            return self.step(Step::FreezeBeforeDump);
        }
        let mut state = lock(&ctx.src.state);
        let source = state.containers.get_mut(&ctx.source.id).expect("the source exists");
        source.running = false;
        if self.failing.contains(&Step::FreezeLosesCheckpoint) {
            drop(state);
            return self.step(Step::FreezeLosesCheckpoint);
        }
        source.checkpoints.push(ctx.plan.checkpoint.clone());
        if self.flavour == Flavour::Direct {
            source.checkpoints.push(format!("{}.docker", ctx.plan.checkpoint));
        }
        drop(state);
        self.step(Step::FreezeAfterDump)
    }

    async fn transfer(
        &mut self,
        ctx: &Ctx<'_, FakeHost>,
        undo: &Undo,
        _stats: &mut MigrationStats,
    ) -> Result<(), StepError> {
        self.step(Step::Transfer).map_err(|cause| StepError { phase: Phase::Transfer, cause })?;
        if self.flavour == Flavour::Direct {
            self.restore_destination(ctx, undo).map_err(|cause| StepError { phase: Phase::Restore, cause })?;
        }
        Ok(())
    }

    fn verifies(&self, options: &MigrationOptions) -> bool {
        self.flavour == Flavour::Docker && options.verify
    }

    async fn verify(&mut self, _ctx: &Ctx<'_, FakeHost>) -> Result<(), Error> {
        self.step(Step::Verify)
    }

    async fn restore(&mut self, ctx: &Ctx<'_, FakeHost>, undo: &Undo) -> Result<(), Error> {
        match self.flavour {
            Flavour::Docker => self.restore_destination(ctx, undo),
            Flavour::Direct => Ok(()),
        }
    }

    async fn finish(&mut self, _ctx: &Ctx<'_, FakeHost>, stats: &mut MigrationStats) -> Vec<(String, usize)> {
        stats.dump_ms = 7;
        vec![("/etc/peer.conf".into(), 1)]
    }

    async fn withdraw(&mut self, _ctx: &Ctx<'_, FakeHost>) {
        self.note("withdraw");
    }

    async fn restore_source(&self, ctx: &Ctx<'_, FakeHost>, name: &str) -> Result<(), Error> {
        self.step(Step::ResumeSource)?;
        let mut state = ctx.src.call("restore_source", name)?;
        ctx.src.container_mut(&mut state, &ctx.source.id)?.running = true;
        Ok(())
    }

    fn source_records(&self, name: &str) -> Vec<String> {
        match self.flavour {
            Flavour::Docker => Vec::new(),
            Flavour::Direct => vec![format!("{name}.docker")],
        }
    }
}

impl FakePath {
    /// The destination restores (or fails to, as scripted).
    fn restore_destination(&self, ctx: &Ctx<'_, FakeHost>, undo: &Undo) -> Result<(), Error> {
        if self.failing.contains(&Step::RestoreThenUnreachable) {
            ctx.dst.go_unreachable();
            return self.step(Step::RestoreThenUnreachable);
        }
        self.step(Step::Restore)?;
        let stops = self.failing.contains(&Step::RestoredThenStopped);
        let mut state = lock(&ctx.dst.state);
        ctx.dst.container_mut(&mut state, &destination(undo))?.running = !stops;
        Ok(())
    }
}
