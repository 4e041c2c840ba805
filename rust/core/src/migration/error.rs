//! A failed migration: the phase that failed, its cause, and what the rollback did about it.

use std::fmt;

use crate::error::Error;
use crate::migration::report::Phase;

/// What happened to the service after a failure.
#[derive(Debug)]
pub enum Rollback {
    /// The failure came before anything changed.
    NothingToUndo,
    /// The failure came before the freeze: what was made on the destination was removed; the
    /// service never stopped.
    Undone,
    /// The service runs again on the source, restored from the checkpoint (or never stopped).
    Resumed {
        /// The provider it runs on.
        provider: String,
    },
    /// The destination was being started and could not be reached to make sure it does not run
    /// the container: the source was left stopped with its checkpoint rather than risk the
    /// service running twice. `heal` settles it once the destination answers.
    Held {
        /// The provider that could not be reached.
        destination: String,
        /// Why removing the destination's container failed.
        cause: Box<Error>,
    },
    /// Post-copy broke after the destination ran: the memory was split between the hosts, so
    /// neither copy runs on (what the service did since the restore is lost). The destination's
    /// container is kept, stopped, to be started afresh from its image (`heal` with
    /// [`crate::HealOptions::restart_from_image`]).
    Lost {
        /// The provider holding the stopped container.
        provider: String,
        /// That container.
        container: String,
    },
    /// Undoing failed too: this error says why, and the service may be down.
    Failed(Box<Error>),
}

impl Rollback {
    /// Every state's name, as [`Rollback::state`] gives them.
    pub const STATES: [&'static str; 6] = ["nothing_to_undo", "undone", "resumed", "held", "lost", "failed"];

    /// The state's name, as front ends report it (`resumed`, `held`, ...).
    pub fn state(&self) -> &'static str {
        match self {
            Rollback::NothingToUndo => "nothing_to_undo",
            Rollback::Undone => "undone",
            Rollback::Resumed { .. } => "resumed",
            Rollback::Held { .. } => "held",
            Rollback::Lost { .. } => "lost",
            Rollback::Failed(_) => "failed",
        }
    }
}

impl fmt::Display for Rollback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rollback::NothingToUndo => f.write_str("nothing was changed"),
            Rollback::Undone => f.write_str("the destination was cleaned up; the service never stopped"),
            Rollback::Resumed { provider } => write!(f, "rolled back: the service runs on {provider} again"),
            Rollback::Held { destination, cause } => write!(
                f,
                "HELD: {destination} cannot be reached to make sure it does not run the container ({}); the source \
                 was left stopped with its checkpoint so that the service never runs twice; run heal once \
                 {destination} answers",
                cause.report()
            ),
            Rollback::Lost { provider, container } => write!(
                f,
                "LOST (the price of post-copy): the container runs on neither provider, what it did since the \
                 restore is gone; its container {container} on {provider} is kept stopped, to be started afresh \
                 from its image (heal with restart_from_image)"
            ),
            Rollback::Failed(err) => write!(f, "ROLLBACK FAILED: {}", err.report()),
        }
    }
}

/// A failed migration: the phase, the cause, and how the rollback went.
#[derive(Debug, thiserror::Error)]
#[error("migration of `{container}` from {source_provider} to {destination} failed in phase {phase}: {}; {rollback}", .cause.report())]
pub struct MigrationError {
    /// The phase that failed.
    pub phase: Phase,
    /// The container being migrated.
    pub container: String,
    /// Source provider.
    pub source_provider: String,
    /// Destination provider.
    pub destination: String,
    /// Why the phase failed.
    #[source]
    pub cause: Error,
    /// What was done about it.
    pub rollback: Rollback,
}
