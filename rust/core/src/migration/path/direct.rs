//! The direct path (see [`vimigrate_protocol`] for its protocol): Docker drives every step; the
//! broker only leaves directives for `vimigrate-runtime` on both hosts and makes the Docker
//! calls in the right order:
//!
//! 1. before the freeze, the destination container is started (`docker start`): Docker sets up
//!    its network, ports and mounts, and the runtime's `create` waits for the images, listening
//!    on the destination host;
//! 2. the freeze is an ordinary `docker checkpoint create` on the source: the runtime dumps and
//!    streams to the destination at the same time (host to host, TLS with a certificate made
//!    for this migration, the broker relays nothing);
//! 3. the destination's `docker start` returns once the runtime restored the container.
//!
//! A rollback withdraws the destination's directive, removes that container, and restores the
//! source from the dump it kept (the same directive mechanism on the source host, or Docker's
//! own restore from the same checkpoint directory should that fail).

use vimigrate_protocol::RuntimeState;

use crate::error::{Error, RuntimeStepError};
use crate::migration::memory::MemoryMode;
use crate::migration::path::direct_transfer::{DirectTransfer, MemoryMoves};
use crate::migration::path::transfer_keys::TransferKeys;
use crate::migration::path::{first_layer_pass, not_prepared, CheckpointPath, Ctx, InPhase, StepError};
use crate::migration::plan::PlannedPath;
use crate::migration::report::{MigrationStats, Phase};
use crate::migration::side::Side;
use crate::migration::undo::Undo;
use crate::provider::Provider;
use crate::transfer::layer_sync::LayerSync;

/// See [`docker_checkpoint_name`].
pub(crate) const DOCKER_CHECKPOINT_SUFFIX: &str = ".docker";

/// The name of the checkpoint Docker records on the direct path, next to the runtime's own
/// (whose directory holds the dump). Docker's checkpoint of this name only carries containerd's
/// bookkeeping: a failure of Docker's after the dump, which makes it delete its checkpoint
/// directory, cannot take the dump with it.
pub(crate) fn docker_checkpoint_name(checkpoint: &str) -> String {
    format!("{checkpoint}{DOCKER_CHECKPOINT_SUFFIX}")
}

/// The state of one migration on the direct path.
#[derive(Default)]
pub(crate) struct DirectPath {
    /// The helpers, directives and the destination's start, once prepared.
    transfer: Option<DirectTransfer>,
    /// The writable layer after its first pass: its baseline tells the source's runtime what
    /// the destination has already.
    layer: Option<LayerSync>,
    /// Post-copy: the source's checkpoint call, which returns once every page went.
    serving: Option<tokio::task::JoinHandle<Result<(), Error>>>,
    /// Post-copy failed after the restore, and the source's runtime said its processes run on.
    source_runs: bool,
}

impl DirectPath {
    fn prepared(&self) -> Result<&DirectTransfer, Error> {
        self.transfer.as_ref().ok_or_else(|| not_prepared("the direct transfer"))
    }

    /// The freeze of a post-copy: Docker's checkpoint call returns only once every page went,
    /// so it runs in the background; the freeze is over for the broker once the source's
    /// runtime serves the pages (everything else went to the destination, which restores).
    async fn freeze_serving_pages(&mut self, ctx: &Ctx<'_, Provider>) -> Result<(), Error> {
        let transfer = self.prepared()?;
        let (src, id, name) = (ctx.src.clone(), ctx.source.id.clone(), docker_checkpoint_name(&ctx.plan.checkpoint));
        let call = tokio::spawn(async move { src.create_checkpoint(&id, &name).await });
        loop {
            match transfer.status(Side::Source).await.map(|s| s.state) {
                Some(RuntimeState::ServingPages | RuntimeState::Dumped) => break,
                Some(RuntimeState::Failed) => {
                    let _ = call.await;
                    return Err(transfer
                        .reported_failure(Side::Source)
                        .await
                        .unwrap_or_else(|| not_prepared("the source runtime's report of its failed dump")));
                }
                _ if call.is_finished() => {
                    let called = call.await;
                    return match (transfer.status(Side::Source).await.map(|s| s.state), called) {
                        (Some(RuntimeState::Dumped), _) => Ok(()),
                        (_, Ok(Err(e))) => Err(transfer.reported_failure(Side::Source).await.unwrap_or(e)),
                        _ => Err(transfer
                            .reported_failure(Side::Source)
                            .await
                            .unwrap_or_else(|| not_prepared("the source runtime's report of its dump"))),
                    };
                }
                _ => tokio::time::sleep(SERVING_POLL).await,
            }
        }
        self.serving = Some(call);
        Ok(())
    }
}

/// How often the broker looks at the source's status during a post-copy freeze.
const SERVING_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Why a destination's start failed, from what both runtimes reported: the destination's own
/// report names the root cause (a full disk, a corrupted file), the source's adds what it saw;
/// without the former, the source's explains a destination that waited in vain. `received`:
/// everything had arrived, so the restore is what failed.
pub(crate) fn start_failure(at_destination: Error, source_report: Option<Error>, received: bool) -> StepError {
    let cause = match (at_destination, source_report) {
        (Error::Runtime(at_dst), Some(Error::Runtime(at_src))) if !received => Error::Runtime(RuntimeStepError {
            message: format!("{} (the source reported: {})", at_dst.message, at_src.message),
            retryable: at_dst.retryable || at_src.retryable,
            ..at_dst
        }),
        (Error::Runtime(at_dst), _) => Error::Runtime(at_dst),
        (_, Some(at_src)) if !received => at_src,
        (e, _) => e,
    };
    StepError { phase: if received { Phase::Restore } else { Phase::Transfer }, cause }
}

impl CheckpointPath<Provider> for DirectPath {
    fn method(&self) -> &'static str {
        "direct"
    }

    async fn prepare(&mut self, ctx: &Ctx<'_, Provider>, undo: &mut Undo) -> Result<(), Error> {
        let destination_id = undo.destination_id.clone().ok_or_else(|| not_prepared("the destination container"))?;
        let keys = TransferKeys::generate()?;
        let ids = (ctx.source.id.as_str(), destination_id.as_str());
        match DirectTransfer::prepare(
            (ctx.src, ctx.dst),
            &ctx.plan.checkpoint,
            ids,
            &ctx.plan.image,
            &ctx.source.name,
            keys,
        )
        .await
        {
            Ok((transfer, helpers)) => {
                undo.helpers.extend(helpers);
                self.transfer = Some(transfer);
                Ok(())
            }
            Err((e, helpers)) => {
                undo.helpers.extend(helpers);
                Err(e)
            }
        }
    }

    async fn precopy(&mut self, ctx: &Ctx<'_, Provider>, undo: &Undo, stats: &mut MigrationStats) -> Result<(), Error> {
        self.layer = Some(first_layer_pass(ctx, undo, stats).await?);
        Ok(())
    }

    async fn arm(&mut self, ctx: &Ctx<'_, Provider>, undo: &mut Undo) -> Result<(), Error> {
        let PlannedPath::Direct { destination_host } = &ctx.plan.path else {
            return Err(not_prepared("a direct path in the plan"));
        };
        let baseline = self.layer.as_ref().ok_or_else(|| not_prepared("the layer's first pass"))?.baseline();
        let transfer = self.transfer.as_mut().ok_or_else(|| not_prepared("the direct transfer"))?;
        let criu = ctx.plan.criu_options();
        // Still while the service runs: the destination starts and waits for the images.
        undo.destination_started = true;
        if let Some(bounds) = ctx.plan.pre_copy {
            transfer.window = 1 + bounds.max_rounds;
        }
        let lazy = ctx.plan.memory == MemoryMode::PostCopy;
        let port = transfer
            .arm_destination(
                &criu,
                &ctx.plan.peer_files,
                &ctx.plan.address_map,
                lazy,
                ctx.plan.rewrite_sockets,
                ctx.options.fault,
            )
            .await?;
        let host =
            if destination_host.contains(':') { format!("[{destination_host}]") } else { destination_host.clone() };
        let volumes = ctx.source.volumes.iter().map(|v| v.destination.clone()).collect();
        let address = format!("{host}:{port}");
        let memory = MemoryMoves { lazy_pages: lazy, compression: ctx.plan.compression, pre_copy: ctx.plan.pre_copy };
        if let Some(bounds) = ctx.plan.pre_copy {
            // While the service runs; the dump that freezes then carries what was dirtied since.
            let rounds = transfer.run_pre_copy(address.clone(), &criu, bounds, ctx.plan.compression).await?;
            tracing::info!(rounds = rounds.rounds, bytes = ?rounds.round_bytes, ms = rounds.ms, stopped = %rounds.stopped, "pre-copy rounds");
        }
        transfer.arm_source(address, &criu, baseline, volumes, ctx.options.fault, memory).await
    }

    async fn freeze(&mut self, ctx: &Ctx<'_, Provider>) -> Result<(), Error> {
        if ctx.plan.memory == MemoryMode::PostCopy {
            return self.freeze_serving_pages(ctx).await;
        }
        let dumped = ctx.src.create_checkpoint(&ctx.source.id, &docker_checkpoint_name(&ctx.plan.checkpoint)).await;
        let Err(e) = dumped else { return Ok(()) };
        let transfer = self.prepared()?;
        match transfer.status(Side::Source).await {
            // Dumped and sent in full: what failed was Docker's bookkeeping after the dump
            // (containerd's content store, moby/moby#42900); the destination has it all.
            Some(status) if status.state == RuntimeState::Dumped => {
                tracing::warn!(error = %e.report(), "Docker reported a failed checkpoint after a complete dump and transfer; going on");
                Ok(())
            }
            // The runtime's report says why (the destination unreachable, CRIU's error).
            _ => Err(transfer.reported_failure(Side::Source).await.unwrap_or(e)),
        }
    }

    async fn transfer(
        &mut self,
        _ctx: &Ctx<'_, Provider>,
        _undo: &Undo,
        _stats: &mut MigrationStats,
    ) -> Result<(), StepError> {
        let transfer =
            self.transfer.as_mut().ok_or_else(|| not_prepared("the direct transfer")).in_phase(Phase::Transfer)?;
        let Err(e) = transfer.await_start().await else { return Ok(()) };
        // Everything had arrived when the destination got as far as its restore.
        let received = transfer.status(Side::Destination).await.is_some_and(|s| {
            s.state == RuntimeState::Received || s.error.is_some_and(|e| e.step == "restore" || e.step == "rewrite")
        });
        Err(start_failure(e, transfer.reported_failure(Side::Source).await, received))
    }

    fn verifies(&self, _options: &crate::migration::options::MigrationOptions) -> bool {
        // The destination's runtime checks every file's BLAKE3 as it arrives.
        false
    }

    async fn verify(&mut self, _ctx: &Ctx<'_, Provider>) -> Result<(), Error> {
        Ok(())
    }

    async fn restore(&mut self, _ctx: &Ctx<'_, Provider>, _undo: &Undo) -> Result<(), Error> {
        // The destination's start, awaited in the transfer phase, restored it.
        Ok(())
    }

    async fn finish(&mut self, _ctx: &Ctx<'_, Provider>, stats: &mut MigrationStats) -> Vec<(String, usize)> {
        let Some(transfer) = self.transfer.as_ref() else { return Vec::new() };
        let (sent, received) = (transfer.status(Side::Source).await, transfer.status(Side::Destination).await);
        if let Some(sent) = &sent {
            stats.dump_ms = sent.stats.dump_ms;
            stats.transfer_ms = sent.stats.send_ms;
            stats.checkpoint_bytes = sent.stats.image_bytes;
            stats.transfer_bytes = sent.stats.image_bytes + sent.stats.file_bytes;
            stats.set_wire(&sent.stats);
            stats.criu_dump = sent.stats.criu_dump.clone();
            stats.runtime_peak_rss_kib = sent.stats.peak_rss_kib;
            stats.dump_started_unix_ms = sent.stats.at_unix_ms;
        }
        match received {
            Some(received) => {
                stats.receive_ms = received.stats.receive_ms;
                stats.restore_ms = received.stats.restore_ms;
                stats.network_ms = received.stats.network_ms;
                stats.addresses_held = received.stats.addresses_held;
                stats.criu_restore = received.stats.criu_restore.clone();
                stats.restored_unix_ms = received.stats.at_unix_ms;
                stats.sockets_kept = received.stats.sockets_kept;
                stats.sockets_closed = received.stats.sockets_closed;
                stats.runtime_peak_rss_kib = stats.runtime_peak_rss_kib.max(received.stats.peak_rss_kib);
                received.stats.rewrites
            }
            None => Vec::new(),
        }
    }

    async fn release_source(&mut self, _ctx: &Ctx<'_, Provider>, stats: &mut MigrationStats) -> Result<(), Error> {
        let Some(call) = self.serving.take() else { return Ok(()) };
        let transfer = self.prepared()?;
        let called = call.await;
        let status = transfer.status(Side::Source).await;
        if let Some(status) = &status {
            // The source's figures are complete only now (its send thread ended with the pages).
            stats.page_bytes = status.stats.page_bytes;
            stats.postcopy_ms = status.stats.pages_ms;
            stats.checkpoint_bytes = status.stats.image_bytes;
            stats.transfer_bytes = status.stats.image_bytes + status.stats.file_bytes;
            stats.set_wire(&status.stats);
            stats.criu_dump = status.stats.criu_dump.clone();
            stats.runtime_peak_rss_kib = stats.runtime_peak_rss_kib.max(status.stats.peak_rss_kib);
        }
        let source_runs = status.as_ref().and_then(|s| s.error.as_ref()).is_some_and(|e| e.source_runs);
        let released = match (status.map(|s| s.state), called) {
            (Some(RuntimeState::Dumped), _) => Ok(()),
            // The runtime's report says what was lost, and when.
            (_, called) => Err(transfer.reported_failure(Side::Source).await.unwrap_or_else(|| match called {
                Ok(Err(e)) => e,
                _ => not_prepared("the source's report of the page transfer"),
            })),
        };
        self.source_runs = source_runs;
        released
    }

    fn source_runs_on(&self) -> bool {
        self.source_runs
    }

    async fn withdraw(&mut self, _ctx: &Ctx<'_, Provider>) {
        if let Some(transfer) = self.transfer.as_mut() {
            if transfer.destination_starting() {
                transfer.withdraw_destination().await;
            }
        }
        // Post-copy before the restore: the source's runtime releases its frozen processes
        // once the destination gave up (or fell silent for an I/O timeout); the rollback looks
        // at the source after that.
        if let (Some(call), Some(transfer)) = (self.serving.take(), self.transfer.as_ref()) {
            let limit = std::time::Duration::from_millis(transfer.io_timeout_ms()) * 3;
            if tokio::time::timeout(limit, call).await.is_err() {
                tracing::warn!("the source's checkpoint call of a post-copy did not end after the rollback began");
            }
        }
    }

    async fn restore_source(&self, ctx: &Ctx<'_, Provider>, name: &str) -> Result<(), Error> {
        // The runtime kept the dump in the checkpoint directory: restore from it the same way
        // the destination would have; Docker's own restore reads the same directory and is the
        // fallback.
        if let Some(transfer) = &self.transfer {
            match transfer.restore_source_locally(&ctx.plan.criu_options()).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e.report(), "direct restore on the source failed; trying Docker's restore")
                }
            }
        }
        ctx.src.start_from_checkpoint(&ctx.source.id, name).await
    }

    fn source_records(&self, name: &str) -> Vec<String> {
        vec![docker_checkpoint_name(name)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ProviderError;

    fn runtime(provider: &str, message: &str, retryable: bool) -> Error {
        RuntimeStepError { provider: provider.into(), step: "receive".into(), message: message.into(), retryable }
            .into()
    }

    fn message(err: &Error) -> String {
        match err {
            Error::Runtime(e) => format!("{}: {} ({})", e.provider, e.message, e.retryable),
            other => other.report(),
        }
    }

    #[test]
    fn a_start_failure_names_both_runtimes_until_everything_arrived() {
        let docker = || -> Error {
            ProviderError::Api {
                provider: "provider-b".into(),
                step: "start container".into(),
                source: bollard::errors::Error::RequestTimeoutError,
            }
            .into()
        };
        let table: [(Error, Option<Error>, bool, Phase, &str); 5] = [
            (
                runtime("provider-b", "disk full", false),
                Some(runtime("provider-a", "peer closed", true)),
                false,
                Phase::Transfer,
                "provider-b: disk full (the source reported: peer closed) (true)",
            ),
            (
                runtime("provider-b", "restore failed", false),
                Some(runtime("provider-a", "x", true)),
                true,
                Phase::Restore,
                "provider-b: restore failed (false)",
            ),
            (
                docker(),
                Some(runtime("provider-a", "cannot connect", true)),
                false,
                Phase::Transfer,
                "provider-a: cannot connect (true)",
            ),
            (docker(), Some(runtime("provider-a", "late", true)), true, Phase::Restore, "provider `provider-b`: start"),
            (docker(), None, false, Phase::Transfer, "provider `provider-b`: start"),
        ];
        for (at_destination, source, received, phase, expected) in table {
            let failure = start_failure(at_destination, source, received);
            assert_eq!(failure.phase, phase);
            assert!(message(&failure.cause).starts_with(expected), "{} / {expected}", message(&failure.cause));
        }
    }

    #[test]
    fn docker_records_its_own_checkpoint_next_to_the_dump() {
        assert_eq!(docker_checkpoint_name("vimigrate-1"), "vimigrate-1.docker");
        assert_eq!(DirectPath::default().source_records("cp"), vec!["cp.docker".to_string()]);
    }
}
