//! The undo log: what a migration changed so far, recorded before each change is made, so that
//! a failure undoes exactly that (see `rollback.rs`) and a success cleans up exactly that.

use crate::migration::side::Side;

/// What a migration changed on the two providers.
#[derive(Debug, Default)]
pub(crate) struct Undo {
    /// The destination container, once created.
    pub destination_id: Option<String>,
    /// The destination was asked to start (a restore, or the direct path's start that waits for
    /// the transfer): it may run, so it must be proved gone before the source resumes.
    pub destination_started: bool,
    /// Helper containers, on the side they were created on.
    pub helpers: Vec<(Side, String)>,
    /// The freeze began: the source may be stopped and hold the checkpoint to resume from.
    pub checkpoint_taken: bool,
    /// Hosts' CRIU options as found, to put back, in the order they were changed.
    pub criu_options: Vec<(Side, Option<Vec<u8>>)>,
    /// Networks this migration created on the destination: a rollback removes them once unused.
    pub networks: Vec<String>,
}
