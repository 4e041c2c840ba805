//! How the checkpoint moves: the steps of a migration that differ between Docker's checkpoint API
//! ([`docker::DockerPath`]) and the direct path through `vimigrate-runtime`
//! ([`direct::DirectPath`]). The orchestration (`sequence.rs`) calls them in phase order; the
//! rollback (`rollback.rs`) calls their undo. Everything both paths share (the image, the
//! destination container, the cleanup, the rollback's order) is written once, there.
//!
//! Where the next capabilities go: memory pre-copy is more of [`CheckpointPath::precopy`]
//! (pre-dump rounds while the service runs); post-copy is a [`CheckpointPath::transfer`] that
//! returns once the destination runs with its memory still arriving, and a cleanup that releases
//! the source only when every page arrived; a group of containers drives several migrations
//! through the same phases together, with one freeze for all (see `sequence.rs`).

pub(crate) mod direct;
pub(crate) mod direct_transfer;
pub(crate) mod docker;
pub(crate) mod either;
pub(crate) mod transfer_keys;

use std::future::Future;

use crate::error::{Error, ProviderError};
use crate::migration::host::Host;
use crate::migration::options::MigrationOptions;
use crate::migration::plan::MigrationPlan;
use crate::migration::report::{MigrationStats, Phase, ProgressEvent};
use crate::migration::source::SourceContainer;
use crate::migration::undo::Undo;
use crate::provider::Provider;
use crate::transfer::layer_sync::LayerSync;

/// What every step of one migration works with.
pub(crate) struct Ctx<'a, H> {
    /// The provider the container runs on.
    pub src: &'a H,
    /// The provider it moves to.
    pub dst: &'a H,
    /// The container, as the preflight read it.
    pub source: &'a SourceContainer,
    /// What the preflight decided.
    pub plan: &'a MigrationPlan,
    /// The caller's options.
    pub options: &'a MigrationOptions,
    /// The caller's progress callback.
    pub progress: &'a (dyn Fn(&ProgressEvent) + Send + Sync),
    /// How long a rollback waits for a destination that was started to answer, so that it can
    /// be made sure not to run the container before the source resumes.
    pub patience: std::time::Duration,
}

impl<H> Ctx<'_, H> {
    /// Reports the running total of bytes moved in `phase`.
    pub(crate) fn bytes(&self, phase: Phase, bytes: u64) {
        (self.progress)(&ProgressEvent::Bytes { phase, bytes });
    }
}

/// A step's failure, with the phase it belongs to.
#[derive(Debug)]
pub(crate) struct StepError {
    /// The phase that failed.
    pub phase: Phase,
    /// Why.
    pub cause: Error,
}

/// Puts a step's error in its phase.
pub(crate) trait InPhase<T> {
    /// This result, its error in `phase`.
    fn in_phase(self, phase: Phase) -> Result<T, StepError>;
}

impl<T> InPhase<T> for Result<T, Error> {
    fn in_phase(self, phase: Phase) -> Result<T, StepError> {
        self.map_err(|cause| StepError { phase, cause })
    }
}

/// One way of moving the checkpoint, as the phases of a migration call it. Each step records
/// what it changes in the undo log before it changes it.
pub(crate) trait CheckpointPath<H: Host>: Send {
    /// `direct` or `docker`, for the report.
    fn method(&self) -> &'static str;

    /// Phase prepare, once the destination container exists (its id is in `undo`): what this
    /// path needs on both hosts (helpers, transfer keys).
    fn prepare(&mut self, ctx: &Ctx<'_, H>, undo: &mut Undo) -> impl Future<Output = Result<(), Error>> + Send;

    /// Phase precopy: what moves while the service still runs (the writable layer's first
    /// pass).
    fn precopy(
        &mut self,
        ctx: &Ctx<'_, H>,
        undo: &Undo,
        stats: &mut MigrationStats,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// The last of the preparation, right before the freeze (its failures are the prepare
    /// phase's): Docker's path sets the hosts' CRIU TCP option, the direct path starts the
    /// destination, which waits for the images, and arms the source.
    fn arm(&mut self, ctx: &Ctx<'_, H>, undo: &mut Undo) -> impl Future<Output = Result<(), Error>> + Send;

    /// Whether [`CheckpointPath::arm`] changes something host-wide, which the cleanup or the
    /// rollback puts back (Docker's path: the hosts' CRIU options).
    fn arms_host_wide(&self) -> bool {
        false
    }

    /// Phase checkpoint, the freeze: the source's processes are dumped and stop.
    fn freeze(&mut self, ctx: &Ctx<'_, H>) -> impl Future<Output = Result<(), Error>> + Send;

    /// Phase transfer: what must move after the freeze. A failure may belong to a later phase
    /// (the direct path restores within this step).
    fn transfer(
        &mut self,
        ctx: &Ctx<'_, H>,
        undo: &Undo,
        stats: &mut MigrationStats,
    ) -> impl Future<Output = Result<(), StepError>> + Send;

    /// Whether phase verify runs: what arrived is read back and compared with what was sent.
    fn verifies(&self, options: &MigrationOptions) -> bool;

    /// Phase verify.
    fn verify(&mut self, ctx: &Ctx<'_, H>) -> impl Future<Output = Result<(), Error>> + Send;

    /// Phase restore: the destination restores the checkpoint (the orchestration then checks
    /// that it runs).
    fn restore(&mut self, ctx: &Ctx<'_, H>, undo: &Undo) -> impl Future<Output = Result<(), Error>> + Send;

    /// After the restore: the figures this path measured; returns the peer files rewritten,
    /// with the addresses replaced in each.
    fn finish(
        &mut self,
        ctx: &Ctx<'_, H>,
        stats: &mut MigrationStats,
    ) -> impl Future<Output = Vec<(String, usize)>> + Send;

    /// After the restore, post-copy only: waits until every page reached the destination and
    /// the source is released. A failure here comes after the destination ran: the source's
    /// copy is gone (see [`crate::migration::memory`]) unless [`CheckpointPath::source_runs_on`].
    fn release_source(
        &mut self,
        _ctx: &Ctx<'_, H>,
        _stats: &mut MigrationStats,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        async { Ok(()) }
    }

    /// After [`CheckpointPath::release_source`] failed: whether the source's runtime reported
    /// its processes whole and running on (CRIU ended without ending them), so that the source,
    /// not the destination's half of the memory, is the copy to keep.
    fn source_runs_on(&self) -> bool {
        false
    }

    /// Rollback, first: a destination still waiting for the transfer is told to give up.
    fn withdraw(&mut self, ctx: &Ctx<'_, H>) -> impl Future<Output = ()> + Send;

    /// Rollback: restores the stopped source from its checkpoint `name`.
    fn restore_source(&self, ctx: &Ctx<'_, H>, name: &str) -> impl Future<Output = Result<(), Error>> + Send;

    /// Other checkpoint records this path leaves on the source for checkpoint `name`.
    fn source_records(&self, name: &str) -> Vec<String>;
}

/// The layer's first pass, shared by both paths: every changed path of the writable layer
/// copied into the destination container while the service runs.
pub(crate) async fn first_layer_pass(
    ctx: &Ctx<'_, Provider>,
    undo: &Undo,
    stats: &mut MigrationStats,
) -> Result<LayerSync, Error> {
    let destination_id = undo.destination_id.as_deref().ok_or_else(|| not_prepared("the destination container"))?;
    let volumes: Vec<String> = ctx.source.volumes.iter().map(|v| v.destination.clone()).collect();
    let mut layer = LayerSync::new(ctx.src, &ctx.source.id, ctx.dst, destination_id, volumes);
    let pass = layer.first_pass(&|bytes| ctx.bytes(Phase::Precopy, bytes)).await?;
    stats.precopy_bytes = pass.bytes;
    Ok(layer)
}

/// A step that ran before what it needs: a broken invariant of the orchestration.
pub(crate) fn not_prepared(what: &str) -> Error {
    ProviderError::Failed {
        provider: "broker".into(),
        step: "the migration's phase sequence".into(),
        detail: format!("{what} should have been prepared by now"),
    }
    .into()
}
