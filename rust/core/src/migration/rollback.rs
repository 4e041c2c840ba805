//! Undoing a failed migration, so that the service runs where it ran: exactly what the undo log
//! says was changed, in the order that keeps the service from ever running twice. The
//! destination goes first (it must never run alongside a resumed source); a destination that was
//! started and cannot be reached holds the rollback ([`Rollback::Held`]): the source stays
//! stopped with its checkpoint until `heal` can see both.

use std::time::{Duration, Instant};

use crate::error::{Error, ProviderError};
use crate::migration::error::Rollback;
use crate::migration::host::Host;
use crate::migration::path::{CheckpointPath, Ctx};
use crate::migration::side::Side;
use crate::migration::undo::Undo;

/// The pause between two attempts at removing a destination that may run.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Whether a failure to remove the destination must hold the rollback: the destination was
/// started after the freeze began, so it may run the container, and resuming the source could
/// make two copies.
pub(crate) fn must_hold(undo: &Undo) -> bool {
    undo.destination_started && undo.checkpoint_taken
}

/// How the rollback went, from whether the source was resumed (`None`: it never stopped) and
/// the first cleanup step that failed.
pub(crate) fn outcome(resumed: Option<Result<(), Error>>, cleanup: Option<Error>, source: &str) -> Rollback {
    match (resumed, cleanup) {
        (None, None) => Rollback::Undone,
        (None, Some(e)) => Rollback::Failed(Box::new(e)),
        (Some(Ok(())), None) => Rollback::Resumed { provider: source.to_string() },
        (Some(Ok(())), Some(cleanup)) => {
            tracing::warn!(error = %cleanup.report(), "service resumed, but the destination was not fully cleaned");
            Rollback::Resumed { provider: source.to_string() }
        }
        (Some(Err(e)), _) => Rollback::Failed(Box::new(e)),
    }
}

/// Undoes what the migration changed (see the module documentation).
pub(crate) async fn roll_back<H: Host, P: CheckpointPath<H>>(
    ctx: &Ctx<'_, H>,
    path: &mut P,
    undo: &mut Undo,
) -> Rollback {
    let mut first_error: Option<Error> = None;
    let mut keep = |result: Result<bool, Error>| {
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    };
    // A destination still waiting for the transfer is told to give up first, so that its start
    // call ends and the container can go.
    path.withdraw(ctx).await;
    if let Some(id) = undo.destination_id.take() {
        match remove_destination(ctx, &id, undo.destination_started).await {
            Ok(_) => {}
            Err(cause) if must_hold(undo) => {
                for (side, helper) in std::mem::take(&mut undo.helpers) {
                    if let Err(e) = side.of((ctx.src, ctx.dst)).remove_container(&helper).await {
                        tracing::warn!(error = %e.report(), "helper left behind; heal removes it");
                    }
                }
                return Rollback::Held { destination: ctx.dst.name().to_string(), cause: Box::new(cause) };
            }
            Err(e) => keep(Err(e)),
        }
    }
    for network in std::mem::take(&mut undo.networks) {
        if let Err(e) = ctx.dst.remove_unused_network(&network).await {
            tracing::warn!(error = %e.report(), network = %network, "network left on the destination; heal removes it");
        }
    }
    let (source_helpers, destination_helpers): (Vec<_>, Vec<_>) =
        std::mem::take(&mut undo.helpers).into_iter().partition(|(side, _)| *side == Side::Source);
    for (_, helper) in destination_helpers {
        keep(ctx.dst.remove_container(&helper).await);
    }
    let resumed = if undo.checkpoint_taken { Some(resume_source(ctx, path).await) } else { None };
    // The source's helpers served the resume on the direct path; they go last.
    for (_, helper) in source_helpers {
        keep(ctx.src.remove_container(&helper).await);
    }
    for warning in restore_host_options(ctx, undo).await {
        tracing::warn!(warning = %warning, "CRIU options not restored after the rollback");
    }
    outcome(resumed, first_error, ctx.src.name())
}

/// Removes the destination container. When it was started (it may run), a provider that does
/// not answer is given some time (a daemon restarting) before this gives up.
async fn remove_destination<H: Host>(ctx: &Ctx<'_, H>, id: &str, started: bool) -> Result<bool, Error> {
    let patience = if started { ctx.patience } else { Duration::ZERO };
    let deadline = Instant::now() + patience;
    loop {
        match ctx.dst.remove_container(id).await {
            // Any error: a daemon restarting answers with all sorts of them, and a container
            // that may run must not be left behind for a transient reason.
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e.report(), "the destination container could not be removed; trying again");
                tokio::time::sleep(RETRY_PAUSE.min(patience / 4)).await;
            }
            other => return other,
        }
    }
}

/// Restores the source from the checkpoint unless it still runs (a failed dump leaves the
/// processes running), then deletes the checkpoint: it holds process memory.
async fn resume_source<H: Host, P: CheckpointPath<H>>(ctx: &Ctx<'_, H>, path: &P) -> Result<(), Error> {
    let (src, id, checkpoint) = (ctx.src, &ctx.source.id, &ctx.plan.checkpoint);
    let running = src.is_running(id).await?;
    let name = src.checkpoints(id).await?.into_iter().find(|n| n == checkpoint);
    if !running {
        let Some(name) = name.as_deref() else {
            return Err(ProviderError::Missing {
                provider: src.name().to_string(),
                what: "a checkpoint to resume from",
                detail: format!("container `{}` is stopped and has no checkpoint `{checkpoint}`", ctx.source.name),
            }
            .into());
        };
        path.restore_source(ctx, name).await?;
        if !src.is_running(id).await? {
            return Err(ProviderError::Failed {
                provider: src.name().to_string(),
                step: format!("resume container `{}` from checkpoint `{name}`", ctx.source.name),
                detail: "it stopped right after its restore".into(),
            }
            .into());
        }
    }
    if let Some(name) = name {
        if let Err(e) = src.delete_checkpoint(id, &name).await {
            tracing::warn!(error = %e.report(), "checkpoint left on the source after the rollback");
        }
    }
    for record in path.source_records(checkpoint) {
        let _ = src.delete_checkpoint(id, &record).await;
    }
    Ok(())
}

/// Puts the hosts' CRIU options back, last set first (both may be the same host); returns what
/// could not be put back.
pub(crate) async fn restore_host_options<H: Host>(ctx: &Ctx<'_, H>, undo: &mut Undo) -> Vec<String> {
    let mut warnings = Vec::new();
    while let Some((side, previous)) = undo.criu_options.pop() {
        if let Err(e) = side.of((ctx.src, ctx.dst)).restore_criu_options(&ctx.plan.image, previous).await {
            warnings.push(e.report());
        }
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(step: &str) -> Error {
        ProviderError::Failed { provider: "p".into(), step: step.into(), detail: "x".into() }.into()
    }

    #[test]
    fn the_outcome_says_where_the_service_runs() {
        assert!(matches!(outcome(None, None, "a"), Rollback::Undone));
        assert!(matches!(outcome(None, Some(failed("rm")), "a"), Rollback::Failed(_)));
        assert!(matches!(outcome(Some(Ok(())), None, "a"), Rollback::Resumed { provider } if provider == "a"));
        assert!(
            matches!(outcome(Some(Ok(())), Some(failed("rm")), "a"), Rollback::Resumed { .. }),
            "a cleanup failure does not undo a resume"
        );
        match outcome(Some(Err(failed("resume"))), Some(failed("rm")), "a") {
            Rollback::Failed(e) => assert!(e.report().contains("resume failed"), "{}", e.report()),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn only_a_started_destination_after_the_freeze_holds_the_rollback() {
        let table = [(false, false, false), (true, false, false), (false, true, false), (true, true, true)];
        for (destination_started, checkpoint_taken, holds) in table {
            let undo = Undo { destination_started, checkpoint_taken, ..Undo::default() };
            assert_eq!(must_hold(&undo), holds, "started {destination_started}, taken {checkpoint_taken}");
        }
    }
}
