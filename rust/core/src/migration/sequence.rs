//! The phase sequence of one migration, written once for both checkpoint paths: image, prepare,
//! precopy (and the path's last preparation), checkpoint (the freeze), transfer, verify, restore,
//! cleanup. A failure from any phase rolls back (`rollback.rs`); the error names the phase.
//!
//! The sequence is steps the caller drives: [`Migration::before_freeze`] (everything that can be
//! done while the service runs), [`Migration::freeze`] and [`Migration::restore`] (from the
//! checkpoint to the restored destination: the interruption) and [`Migration::clean_up`].
//! [`Migration::run`] drives them for one container; a group of containers (one freeze for a
//! whole virtual infrastructure, `group/`) drives several migrations step by step, every
//! member's freeze started together, and rolls every member back when one fails.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::error::{Error, ProviderError};
use crate::migration::error::{MigrationError, Rollback};
use crate::migration::host::{kill_and_wait, Host};
use crate::migration::path::{not_prepared, CheckpointPath, Ctx, InPhase, StepError};
use crate::migration::plan::PlannedPath;
use crate::migration::report::{MigrationReport, MigrationStats, Phase, ProgressEvent};
use crate::migration::rollback::{restore_host_options, roll_back};
use crate::migration::undo::Undo;

/// How long a post-copy's settling waits for a killed destination container to stop.
const STOP_PATIENCE: Duration = Duration::from_secs(10);
use crate::provider::labels::MIGRATION_NETWORK_LABEL;

/// Milliseconds since `since`.
pub(crate) fn ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One migration in progress, after its preflight.
pub(crate) struct Migration<'a, H: Host, P: CheckpointPath<H>> {
    ctx: Ctx<'a, H>,
    path: P,
    undo: Undo,
    stats: MigrationStats,
    started: Instant,
    /// When the freeze began.
    frozen: Option<Instant>,
    warnings: Vec<String>,
    rewrites: Vec<(String, usize)>,
    address_changes: BTreeMap<String, String>,
}

impl<'a, H: Host, P: CheckpointPath<H>> Migration<'a, H, P> {
    /// A migration whose preflight (timed in `stats`) began at `started`.
    pub(crate) fn new(ctx: Ctx<'a, H>, path: P, stats: MigrationStats, started: Instant) -> Self {
        Migration {
            ctx,
            path,
            undo: Undo::default(),
            stats,
            started,
            frozen: None,
            warnings: Vec::new(),
            rewrites: Vec::new(),
            address_changes: BTreeMap::new(),
        }
    }

    /// The whole sequence: the container runs on the destination, or, with the error, where it
    /// ran (see [`Rollback`]).
    pub(crate) async fn run(mut self) -> Result<MigrationReport, MigrationError> {
        let moved = async {
            self.before_freeze().await?;
            self.freeze_and_restore().await
        }
        .await;
        match moved {
            Ok(()) => {
                self.clean_up().await;
                Ok(self.report())
            }
            Err(StepError { phase, cause }) => Err(self.fail(phase, cause).await),
        }
    }

    fn begin(&self, phase: Phase) -> Instant {
        (self.ctx.progress)(&ProgressEvent::Phase { phase });
        tracing::info!(container = %self.ctx.source.name, %phase, "phase");
        Instant::now()
    }

    /// Everything that can be done while the service runs: [`Migration::prepare`], then
    /// [`Migration::arm`].
    pub(crate) async fn before_freeze(&mut self) -> Result<(), StepError> {
        self.prepare().await?;
        self.arm().await
    }

    /// Whether this migration's arming and cleanup change something host-wide (Docker's path
    /// sets the hosts' CRIU options): a group then arms such members one after another and
    /// cleans them up in the reverse order, so that the hosts' options come back as found.
    pub(crate) fn arms_host_wide(&self) -> bool {
        self.path.arms_host_wide()
    }

    /// The image, the destination container, the path's preparation, the first copy of the
    /// writable layer.
    pub(crate) async fn prepare(&mut self) -> Result<(), StepError> {
        let t = self.begin(Phase::Image);
        let ctx = &self.ctx;
        let progress = |bytes| ctx.bytes(Phase::Image, bytes);
        self.stats.image_bytes =
            ctx.dst.ensure_image_from(ctx.src, &ctx.plan.image, &progress).await.in_phase(Phase::Image)?;
        self.stats.image_ms = ms(t);

        let t = self.begin(Phase::Prepare);
        self.create_destination().await.in_phase(Phase::Prepare)?;
        self.path.prepare(&self.ctx, &mut self.undo).await.in_phase(Phase::Prepare)?;
        self.stats.prepare_ms = ms(t);

        let t = self.begin(Phase::Precopy);
        self.path.precopy(&self.ctx, &self.undo, &mut self.stats).await.in_phase(Phase::Precopy)?;
        self.stats.precopy_ms = ms(t);
        Ok(())
    }

    /// The last of the preparation, after the first copy: on the direct path it starts the
    /// destination, which should wait for as short a time as possible.
    pub(crate) async fn arm(&mut self) -> Result<(), StepError> {
        let t = Instant::now();
        self.path.arm(&self.ctx, &mut self.undo).await.in_phase(Phase::Prepare)?;
        self.stats.prepare_ms += ms(t);
        Ok(())
    }

    /// The destination container, with the networks the plan creates there; each is recorded
    /// in the undo log before it exists.
    async fn create_destination(&mut self) -> Result<(), Error> {
        let ctx = &self.ctx;
        let mut decisions = ctx.plan.networks.clone();
        for decision in &mut decisions {
            if let Some(spec) = decision.create.as_mut() {
                if !ctx.dst.network_exists(&spec.name).await? {
                    // Marked with this migration, so that a rollback (or a heal, after a broker
                    // died) does not leave it.
                    spec.labels.insert(MIGRATION_NETWORK_LABEL.to_string(), ctx.plan.checkpoint.clone());
                    self.undo.networks.push(spec.name.clone());
                }
            }
        }
        let id = ctx.dst.create_destination(ctx.source, &decisions, &ctx.plan.clone_changes()).await?;
        self.undo.destination_id = Some(id);
        Ok(())
    }

    /// From the freeze to the restored destination: the service's interruption.
    pub(crate) async fn freeze_and_restore(&mut self) -> Result<(), StepError> {
        self.freeze().await?;
        self.restore().await
    }

    /// The freeze: the source is dumped (on the direct path, streamed to the destination at the
    /// same time). A group freezes every member before any moves on.
    pub(crate) async fn freeze(&mut self) -> Result<(), StepError> {
        // The service stops answering from here until the restore.
        let frozen = self.begin(Phase::Checkpoint);
        self.frozen = Some(frozen);
        self.undo.checkpoint_taken = true;
        self.path.freeze(&self.ctx).await.in_phase(Phase::Checkpoint)?;
        self.stats.checkpoint_ms = ms(frozen);
        Ok(())
    }

    /// After the freeze, up to the restored destination: what must move, then the restore.
    pub(crate) async fn restore(&mut self) -> Result<(), StepError> {
        let frozen = self.frozen.ok_or_else(|| not_prepared("the freeze")).in_phase(Phase::Transfer)?;
        let t = self.begin(Phase::Transfer);
        self.path.transfer(&self.ctx, &self.undo, &mut self.stats).await?;
        self.stats.transfer_ms = ms(t);

        if self.path.verifies(self.ctx.options) {
            let t = self.begin(Phase::Verify);
            self.path.verify(&self.ctx).await.in_phase(Phase::Verify)?;
            self.stats.verify_ms = ms(t);
        }

        let t = self.begin(Phase::Restore);
        self.undo.destination_started = true;
        self.path.restore(&self.ctx, &self.undo).await.in_phase(Phase::Restore)?;
        self.require_running_destination().await.in_phase(Phase::Restore)?;
        self.stats.restore_ms = ms(t);
        self.stats.downtime_ms = ms(frozen);

        self.rewrites = self.path.finish(&self.ctx, &mut self.stats).await;
        self.address_changes = self.address_changes().await;
        // Post-copy: the service runs on the destination; the source goes once its pages did.
        self.path.release_source(&self.ctx, &mut self.stats).await.in_phase(Phase::Postcopy)?;
        Ok(())
    }

    fn destination_id(&self) -> &str {
        self.undo.destination_id.as_deref().unwrap_or_default()
    }

    async fn require_running_destination(&self) -> Result<(), Error> {
        if self.ctx.dst.is_running(self.destination_id()).await? {
            return Ok(());
        }
        Err(ProviderError::Failed {
            provider: self.ctx.dst.name().to_string(),
            step: format!("restore container `{}`", self.ctx.source.name),
            detail: format!("container {} stopped right after its restore", self.destination_id()),
        }
        .into())
    }

    /// Old address -> new address of the container on each network whose address changed.
    async fn address_changes(&self) -> BTreeMap<String, String> {
        let Ok(Some(now)) = self.ctx.dst.addresses(self.destination_id()).await else { return BTreeMap::new() };
        self.ctx
            .source
            .networks
            .iter()
            .filter_map(|ep| {
                let old = ep.ipv4.clone()?;
                let new = now.get(&ep.network)?.clone();
                (old != new).then_some((old, new))
            })
            .collect()
    }

    /// After success: checkpoint data holds process memory, so it goes from both hosts; the
    /// helpers and (unless kept) the stopped source go; the hosts' CRIU options come back.
    /// Nothing here fails the migration: what cannot be cleaned is a warning of the report.
    pub(crate) async fn clean_up(&mut self) {
        let t = self.begin(Phase::Cleanup);
        let ctx = &self.ctx;
        let (checkpoint, source_id, destination_id) = (&ctx.plan.checkpoint, &ctx.source.id, self.destination_id());
        let mut results = vec![
            ctx.dst.delete_checkpoint(destination_id, checkpoint).await,
            ctx.src.delete_checkpoint(source_id, checkpoint).await,
        ];
        for record in self.path.source_records(checkpoint) {
            results.push(ctx.src.delete_checkpoint(source_id, &record).await);
        }
        for (side, helper) in &self.undo.helpers {
            results.push(side.of((ctx.src, ctx.dst)).remove_container(helper).await);
        }
        if !ctx.options.keep_source {
            results.push(ctx.src.remove_container(source_id).await);
        }
        let mut warnings: Vec<String> = results.into_iter().filter_map(Result::err).map(|e| e.report()).collect();
        for warning in &warnings {
            tracing::warn!(container = %ctx.source.name, warning = %warning, "cleanup after migration");
        }
        warnings.extend(restore_host_options(&self.ctx, &mut self.undo).await);
        self.warnings = warnings;
        self.stats.cleanup_ms = ms(t);
        self.stats.total_ms = ms(self.started);
    }

    /// Rolls back after `cause` failed `phase`.
    pub(crate) async fn fail(mut self, phase: Phase, cause: Error) -> MigrationError {
        let name = &self.ctx.source.name;
        tracing::warn!(container = %name, %phase, error = %cause.report(), "migration failed; rolling back");
        let rollback: Rollback = if phase == Phase::Postcopy {
            self.settle_lost().await
        } else {
            roll_back(&self.ctx, &mut self.path, &mut self.undo).await
        };
        MigrationError {
            phase,
            container: name.clone(),
            source_provider: self.ctx.src.name().to_string(),
            destination: self.ctx.dst.name().to_string(),
            cause,
            rollback,
        }
    }

    /// After a post-copy that broke once the destination ran. The destination's copy stops
    /// either way (its runtime kills it when the pages stop coming; this makes sure). When the
    /// source's processes outlived the failure whole, the service goes on there from where it
    /// was frozen: the rest is undone as in any rollback ([`Rollback::Resumed`]; only what the
    /// destination did since its restore is gone, and the cause says for how long). Otherwise
    /// no copy can run on ([`Rollback::Lost`]): the destination's container is kept, stopped,
    /// and the rest goes as after a success. A destination that cannot be made sure to stop
    /// never has a running source beside it: the source goes too.
    async fn settle_lost(&mut self) -> Rollback {
        let destination = self.destination_id().to_string();
        let stopped = match kill_and_wait(self.ctx.dst, &destination, STOP_PATIENCE).await {
            Ok(stopped) => stopped,
            Err(e) => {
                tracing::warn!(error = %e.report(), "the destination container could not be made sure to stop");
                false
            }
        };
        let source_runs =
            self.path.source_runs_on() && matches!(self.ctx.src.is_running(&self.ctx.source.id).await, Ok(true));
        if source_runs && stopped {
            return roll_back(&self.ctx, &mut self.path, &mut self.undo).await;
        }
        if source_runs {
            tracing::warn!("the source runs on but the destination's copy was not seen stopped: the source goes too");
            if let Err(e) = self.ctx.src.kill_container(&self.ctx.source.id).await {
                tracing::warn!(error = %e.report(), "the source container could not be stopped");
            }
        }
        self.clean_up().await;
        Rollback::Lost { provider: self.ctx.dst.name().to_string(), container: destination }
    }

    /// When the freeze began (its call was made), once it did.
    pub(crate) fn frozen_at(&self) -> Option<Instant> {
        self.frozen
    }

    /// The figures so far.
    pub(crate) fn stats(&self) -> &MigrationStats {
        &self.stats
    }

    /// Undoes this migration although none of its own steps failed: a peer of its group did.
    /// Before the freeze it was only prepared ([`Rollback::Undone`]); from the freeze on, and
    /// even once restored on the destination, its source resumes from its own dump
    /// ([`Rollback::Resumed`]).
    pub(crate) async fn abandon(mut self) -> Rollback {
        tracing::warn!(container = %self.ctx.source.name, "a peer of the group failed; rolling back");
        roll_back(&self.ctx, &mut self.path, &mut self.undo).await
    }

    /// The report of a successful migration.
    pub(crate) fn report(self) -> MigrationReport {
        let plan = self.ctx.plan;
        MigrationReport {
            container: self.ctx.source.name.clone(),
            source: self.ctx.src.name().to_string(),
            destination: self.ctx.dst.name().to_string(),
            source_id: self.ctx.source.id.clone(),
            destination_id: self.undo.destination_id.clone().unwrap_or_default(),
            checkpoint: plan.checkpoint.clone(),
            source_kept: self.ctx.options.keep_source,
            stats: self.stats,
            warnings: self.warnings,
            networks: plan.networks.clone(),
            address_changes: self.address_changes,
            criu_tcp_option: plan.criu_tcp_option().map(str::to_string),
            rewrites: self.rewrites,
            method: self.path.method(),
            memory: plan.memory,
            memory_reason: plan.memory_reason.clone(),
            compression: plan.compression,
            method_reason: match &plan.path {
                PlannedPath::Docker { reason } => Some(reason.clone()),
                PlannedPath::Direct { .. } => None,
            },
        }
    }
}
