//! Live migration of a running container from a source provider to a destination provider, and
//! the healing of one that did not finish.
//!
//! The order matters for downtime and for safety: everything that can be done while the service
//! runs is done before the freeze (preflight, image, destination container, first copy of the
//! writable layer); after the freeze only what must move does (the layer's delta, volumes,
//! checkpoint images), and any failure from the freeze on resumes the service on the source from
//! the same checkpoint.
//!
//! Where things live:
//! - [`options`]: what the caller asks for, checked in one place;
//! - `preflight.rs`: every check before anything changes, ending in a [`MigrationPlan`]
//!   (`plan.rs`: the plan and the pure decisions behind it: path, TCP mode, ports, runtime;
//!   [`host_checks`]: what differs between the two hosts, CPU, CRIU, engines);
//! - `sequence.rs`: the phase sequence, once for both paths, over the narrow `host.rs` seam;
//! - `path/`: what differs between Docker's checkpoint API (`docker.rs`) and the direct path
//!   through `vimigrate-runtime` (`direct.rs`, `direct_transfer.rs`, `transfer_keys.rs`);
//! - `undo.rs` and `rollback.rs`: what was changed and how a failure undoes it;
//! - [`memory`]: how the memory moves (stop-and-copy, pre-copy, post-copy, auto);
//! - [`compression`]: whether the stream is compressed (zstd, where it pays);
//! - `lock.rs`: one migration of a container at a time; [`heal`]: settling one that did not
//!   finish;
//! - [`report`] and [`error`]: what the caller gets back.

pub mod clone;
pub mod compression;
pub mod error;
#[cfg(test)]
mod fake;
pub mod group;
pub mod heal;
pub(crate) mod host;
pub mod host_checks;
pub(crate) mod lock;
pub mod memory;
pub mod options;
pub(crate) mod path;
pub mod plan;
pub(crate) mod preflight;
pub mod report;
pub(crate) mod rollback;
pub(crate) mod sequence;
pub(crate) mod side;
pub(crate) mod source;
#[cfg(test)]
mod tests;
pub(crate) mod undo;

use std::time::{Duration, Instant};

pub use compression::Compression;
pub use error::{MigrationError, Rollback};
pub use group::{
    migrate_group, plan_group, GroupError, GroupMember, GroupPlan, GroupReport, GroupStats, MemberOutcome,
};
pub use memory::MemoryMode;
pub use options::{Method, MigrationOptions};
pub use plan::{Forwarding, MigrationPlan, PlannedPath};
pub use report::{MigrationReport, MigrationStats, Phase, ProgressEvent};

use crate::error::Error;
use crate::migration::path::either::AnyPath;
use crate::migration::path::Ctx;
use crate::migration::preflight::{find_source, preflight, CriuProof};
use crate::migration::sequence::{ms, Migration};
use crate::provider::Provider;

/// How long a rollback waits for a destination that was being started to answer, so that it can
/// be made sure not to run the container before the source resumes.
pub(crate) const DESTINATION_PATIENCE: Duration = Duration::from_secs(30);

/// Migrates one running container from `src` to `dst`. On success the container runs on `dst`
/// with its processes, memory and files; on failure the error names the phase and the service
/// runs where it ran (see [`Rollback`]).
pub async fn migrate(
    src: &Provider,
    dst: &Provider,
    options: &MigrationOptions,
    progress: &(dyn Fn(&ProgressEvent) + Send + Sync),
) -> Result<MigrationReport, MigrationError> {
    let started = Instant::now();
    progress(&ProgressEvent::Phase { phase: Phase::Preflight });
    tracing::info!(container = %options.container, phase = %Phase::Preflight, "phase");
    let refused = |container: &str, cause: Error| MigrationError {
        phase: Phase::Preflight,
        container: container.to_string(),
        source_provider: src.name().to_string(),
        destination: dst.name().to_string(),
        cause,
        rollback: Rollback::NothingToUndo,
    };
    let (source, checked) = find_source(src, dst, options).await.map_err(|e| refused(&options.container, e))?;
    // One migration of a container at a time. Taken first, before anything asks the destination
    // (which may still be busy with a migration whose broker died), and released if the rest of
    // the preflight fails: a refused migration changes nothing.
    let lock = src
        .lock_migration(&source.name, &source.image, &checked.checkpoint, dst.name(), &[])
        .await
        .map_err(|e| refused(&source.name, e))?;
    let plan = match preflight(src, dst, options, &checked, &source, CriuProof::Run).await {
        Ok(plan) => plan,
        Err(e) => {
            lock.release().await;
            return Err(refused(&options.container, e));
        }
    };
    let stats = MigrationStats { preflight_ms: ms(started), ..MigrationStats::default() };
    let ctx = Ctx { src, dst, source: &source, plan: &plan, options, progress, patience: DESTINATION_PATIENCE };
    let result = Migration::new(ctx, AnyPath::for_plan(&plan.path), stats, started).run().await;
    lock.release().await;
    result
}

/// What [`migrate`] would do with these options, from the same preflight, changing nothing: no
/// lock is taken and CRIU is not proved (the plan says whether the migration would prove it).
pub async fn plan_migration(
    src: &Provider,
    dst: &Provider,
    options: &MigrationOptions,
) -> Result<MigrationPlan, Error> {
    let (source, checked) = find_source(src, dst, options).await?;
    preflight(src, dst, options, &checked, &source, CriuProof::Skip).await
}
