//! [`AnyPath`]: the path a plan chose, as one type, so that a migration's type does not depend
//! on it. A group of containers (see `group/`) holds migrations whose preflights may have chosen
//! different paths; each step here only hands over to the chosen one.

use crate::error::Error;
use crate::migration::options::MigrationOptions;
use crate::migration::path::direct::DirectPath;
use crate::migration::path::docker::DockerPath;
use crate::migration::path::{CheckpointPath, Ctx, StepError};
use crate::migration::plan::PlannedPath;
use crate::migration::report::MigrationStats;
use crate::migration::undo::Undo;
use crate::provider::Provider;

/// The direct path or Docker's, as the plan chose.
pub(crate) enum AnyPath {
    /// Through `vimigrate-runtime`, host to host.
    Direct(Box<DirectPath>),
    /// Through Docker's checkpoint API (boxed too: the two differ in size).
    Docker(Box<DockerPath>),
}

impl AnyPath {
    /// The path `planned` names, before its first step.
    pub(crate) fn for_plan(planned: &PlannedPath) -> AnyPath {
        match planned {
            PlannedPath::Direct { .. } => AnyPath::Direct(Box::default()),
            PlannedPath::Docker { .. } => AnyPath::Docker(Box::default()),
        }
    }
}

/// Calls the same step on whichever path this is.
macro_rules! each {
    ($self:expr, $path:ident => $call:expr) => {
        match $self {
            AnyPath::Direct($path) => $call,
            AnyPath::Docker($path) => $call,
        }
    };
}

impl CheckpointPath<Provider> for AnyPath {
    fn method(&self) -> &'static str {
        each!(self, p => p.method())
    }

    async fn prepare(&mut self, ctx: &Ctx<'_, Provider>, undo: &mut Undo) -> Result<(), Error> {
        each!(self, p => p.prepare(ctx, undo).await)
    }

    async fn precopy(&mut self, ctx: &Ctx<'_, Provider>, undo: &Undo, stats: &mut MigrationStats) -> Result<(), Error> {
        each!(self, p => p.precopy(ctx, undo, stats).await)
    }

    async fn arm(&mut self, ctx: &Ctx<'_, Provider>, undo: &mut Undo) -> Result<(), Error> {
        each!(self, p => p.arm(ctx, undo).await)
    }

    fn arms_host_wide(&self) -> bool {
        each!(self, p => p.arms_host_wide())
    }

    async fn freeze(&mut self, ctx: &Ctx<'_, Provider>) -> Result<(), Error> {
        each!(self, p => p.freeze(ctx).await)
    }

    async fn transfer(
        &mut self,
        ctx: &Ctx<'_, Provider>,
        undo: &Undo,
        stats: &mut MigrationStats,
    ) -> Result<(), StepError> {
        each!(self, p => p.transfer(ctx, undo, stats).await)
    }

    fn verifies(&self, options: &MigrationOptions) -> bool {
        each!(self, p => p.verifies(options))
    }

    async fn verify(&mut self, ctx: &Ctx<'_, Provider>) -> Result<(), Error> {
        each!(self, p => p.verify(ctx).await)
    }

    async fn restore(&mut self, ctx: &Ctx<'_, Provider>, undo: &Undo) -> Result<(), Error> {
        each!(self, p => p.restore(ctx, undo).await)
    }

    async fn finish(&mut self, ctx: &Ctx<'_, Provider>, stats: &mut MigrationStats) -> Vec<(String, usize)> {
        each!(self, p => p.finish(ctx, stats).await)
    }

    async fn release_source(&mut self, ctx: &Ctx<'_, Provider>, stats: &mut MigrationStats) -> Result<(), Error> {
        each!(self, p => p.release_source(ctx, stats).await)
    }

    fn source_runs_on(&self) -> bool {
        each!(self, p => p.source_runs_on())
    }

    async fn withdraw(&mut self, ctx: &Ctx<'_, Provider>) {
        each!(self, p => p.withdraw(ctx).await)
    }

    async fn restore_source(&self, ctx: &Ctx<'_, Provider>, name: &str) -> Result<(), Error> {
        each!(self, p => p.restore_source(ctx, name).await)
    }

    fn source_records(&self, name: &str) -> Vec<String> {
        each!(self, p => p.source_records(name))
    }
}
