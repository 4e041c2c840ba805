//! What `vimigrate-runtime` reports back to the broker: how far it got with a directive, what
//! failed, and the figures it measured. Written to [`crate::STATUS_FILE`] after every step.

use serde::{Deserialize, Serialize};

use crate::criu_stats::{DumpStats, RestoreStats};

/// How far the wrapper got, written to [`crate::STATUS_FILE`] after every step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeStatus {
    /// [`crate::Directive::migration`] of the directive this reports on.
    pub migration: String,
    /// The last step reached.
    pub state: RuntimeState,
    /// The port the receiver listens on (restore with `receive`).
    #[serde(default)]
    pub port: Option<u16>,
    /// The step that failed and why, when `state` is `failed`.
    #[serde(default)]
    pub error: Option<RuntimeFailure>,
    /// Figures of the steps done so far.
    #[serde(default)]
    pub stats: RuntimeStats,
}

/// Steps of the wrapper's work, in order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeState {
    /// The directive was read.
    #[default]
    Accepted,
    /// The receiver listens (see [`RuntimeStatus::port`]).
    Listening,
    /// Everything arrived and matched its checksums.
    Received,
    /// Post-copy: the images went; the memory is served to the destination while the
    /// processes stay frozen here.
    ServingPages,
    /// The dump finished (and was sent, when asked; in post-copy, every page arrived).
    Dumped,
    /// The restore finished: the container runs.
    Restored,
    /// A step failed (see [`RuntimeStatus::error`]).
    Failed,
}

/// A failed step of the wrapper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeFailure {
    /// `connect`, `send`, `receive`, `verify`, `dump`, `restore`, ...
    pub step: String,
    /// What went wrong, with its causes.
    pub message: String,
    /// Whether trying again may succeed (an unreachable peer, a timeout).
    pub retryable: bool,
    /// Post-copy, on the source: its processes outlived the failure (CRIU ended without ending
    /// them) and run on here from where they were frozen, so the service has not stopped here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub source_runs: bool,
}

impl RuntimeFailure {
    /// A failed `step`: what went wrong, and whether trying again may succeed.
    pub fn new(step: impl Into<String>, message: impl Into<String>, retryable: bool) -> Self {
        RuntimeFailure { step: step.into(), message: message.into(), retryable, source_runs: false }
    }
}

/// Figures the wrapper measured. Times in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeStats {
    /// `runc checkpoint`: CRIU's dump, freeze to processes gone.
    #[serde(default)]
    pub dump_ms: u64,
    /// From the start of the dump to the receiver's acknowledgement of the last byte.
    #[serde(default)]
    pub send_ms: u64,
    /// Receiving, from the connection to the last checksum checked.
    #[serde(default)]
    pub receive_ms: u64,
    /// `runc restore`.
    #[serde(default)]
    pub restore_ms: u64,
    /// Preparing the destination's network namespace (Docker's network hook), before the freeze.
    #[serde(default)]
    pub network_ms: u64,
    /// Bytes of checkpoint images moved.
    #[serde(default)]
    pub image_bytes: u64,
    /// Bytes of writable-layer and volume files moved.
    #[serde(default)]
    pub file_bytes: u64,
    /// Writable-layer and volume entries moved (files, directories, links, deletions).
    #[serde(default)]
    pub file_entries: u64,
    /// The wrapper's peak resident memory (KiB).
    #[serde(default)]
    pub peak_rss_kib: u64,
    /// Declared peer files rewritten before the restore, with the addresses replaced in each.
    #[serde(default)]
    pub rewrites: Vec<(String, usize)>,
    /// Addresses announced by gratuitous ARP after the restore.
    #[serde(default)]
    pub addresses_announced: u64,
    /// Addresses the restore's sockets needed and the network namespace lacked (Docker >= 28
    /// wires it only after the restore), held on its loopback while CRIU restored.
    #[serde(default)]
    pub addresses_held: u64,
    /// Connections whose both ends moved with the group across a remapped subnet: restored on
    /// their new addresses (see [`crate::rewrite_socket_addresses`]).
    #[serde(default)]
    pub sockets_kept: u64,
    /// Connections to outside the group whose own address changed: restored closed.
    #[serde(default)]
    pub sockets_closed: u64,
    /// Post-copy: from the images' end to the last page served (source) or fetched
    /// (destination).
    #[serde(default)]
    pub pages_ms: u64,
    /// Post-copy: bytes of the page traffic from the source.
    #[serde(default)]
    pub page_bytes: u64,
    /// Bytes the sender put on the wire for the images, layer and volume files (after
    /// compression; with it off, their sum).
    #[serde(default)]
    pub wire_bytes: u64,
    /// Of which sent before the freeze by pre-copy's pre-dumps.
    #[serde(default)]
    pub predump_bytes: u64,
    /// Pre-copy: the pre-dump rounds taken while the service ran.
    #[serde(default)]
    pub predump_rounds: u32,
    /// Pre-copy: from the first pre-dump to the freeze (the service ran meanwhile).
    #[serde(default)]
    pub predump_ms: u64,
    /// Pre-copy: image bytes of each round, the freeze's last (how the dirty set shrank).
    #[serde(default)]
    pub round_bytes: Vec<u64>,
    /// When the dump started (source) or the restore ended (destination), Unix time in ms:
    /// the two ends of the interruption as the hosts saw it.
    #[serde(default)]
    pub at_unix_ms: u64,
    /// CRIU's own dump statistics (`stats-dump`).
    #[serde(default)]
    pub criu_dump: Option<DumpStats>,
    /// CRIU's own restore statistics (`stats-restore`).
    #[serde(default)]
    pub criu_restore: Option<RestoreStats>,
}

/// What pre-copy's rounds did, written to [`crate::PRE_COPY_FILE`] in the pre-dumped
/// container's state directory, for the dump that follows and the broker.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreCopyRounds {
    /// The migration they belong to.
    pub migration: String,
    /// The last round pre-dumped and received in full (`pre-N`): the dump's parent. `None`
    /// when not even the first one went.
    pub last: Option<String>,
    /// Rounds taken (those that went in full).
    pub rounds: u32,
    /// Page image bytes of each round.
    pub round_bytes: Vec<u64>,
    /// Image bytes sent by the rounds.
    pub image_bytes: u64,
    /// Their bytes on the wire.
    pub wire_bytes: u64,
    /// From the first pre-dump to the end of the last round.
    pub ms: u64,
    /// Why the rounds stopped: `max_rounds`, `enough`, `not shrinking`, or the failure that
    /// ended them early.
    pub stopped: String,
    /// When the rounds failed before any went in full: why.
    pub error: Option<RuntimeFailure>,
}
