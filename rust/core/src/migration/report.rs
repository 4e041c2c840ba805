//! What a migration tells its caller: the phases as they start ([`ProgressEvent`]), and at the
//! end the report of a success with the figures of each phase ([`MigrationReport`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use vimigrate_protocol::{DumpStats, RestoreStats};

use crate::migration::memory::MemoryMode;
use crate::network::map::NetworkDecision;

/// The phases of a migration, in order (and ordered so).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Checks on both providers; nothing changes.
    Preflight,
    /// The image reaches the destination if it lacks it.
    Image,
    /// The destination container is created (not started).
    Prepare,
    /// First copy of the writable layer, while the service runs.
    Precopy,
    /// The checkpoint: the service stops answering here.
    Checkpoint,
    /// Writable-layer delta, volumes and checkpoint images move.
    Transfer,
    /// What arrived is compared with what was sent.
    Verify,
    /// The destination restores the checkpoint: the service answers again.
    Restore,
    /// Post-copy: the memory pages follow the restored container; the source is released once
    /// every page arrived.
    Postcopy,
    /// Checkpoint data and the source container are removed.
    Cleanup,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Phase::Preflight => "preflight",
            Phase::Image => "image",
            Phase::Prepare => "prepare",
            Phase::Precopy => "precopy",
            Phase::Checkpoint => "checkpoint",
            Phase::Transfer => "transfer",
            Phase::Verify => "verify",
            Phase::Restore => "restore",
            Phase::Postcopy => "postcopy",
            Phase::Cleanup => "cleanup",
        };
        f.write_str(name)
    }
}

/// Something a running migration reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProgressEvent {
    /// A phase starts.
    Phase {
        /// The phase.
        phase: Phase,
    },
    /// Bytes moved so far within a phase.
    Bytes {
        /// The phase moving them.
        phase: Phase,
        /// Total so far in this phase.
        bytes: u64,
    },
}

/// Time and volume of each phase. Times in milliseconds; the CRIU figures use Podman's
/// `--print-stats` names and CRIU's own microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MigrationStats {
    /// Preflight checks, including the CRIU proof on both hosts.
    pub preflight_ms: u64,
    /// Image transfer (0 bytes when the destination had it).
    pub image_ms: u64,
    /// Bytes of image streamed.
    pub image_bytes: u64,
    /// Creating the destination container.
    pub prepare_ms: u64,
    /// First pass over the writable layer.
    pub precopy_ms: u64,
    /// Bytes moved by the first pass.
    pub precopy_bytes: u64,
    /// `docker checkpoint`: freezing and dumping the processes.
    pub checkpoint_ms: u64,
    /// Writable-layer delta, volumes and checkpoint images.
    pub transfer_ms: u64,
    /// Bytes moved after the freeze (delta + volumes + checkpoint).
    pub transfer_bytes: u64,
    /// Of which the checkpoint images.
    pub checkpoint_bytes: u64,
    /// Reading the checkpoint back on the destination and comparing.
    pub verify_ms: u64,
    /// `docker start --checkpoint` on the destination.
    pub restore_ms: u64,
    /// From the start of the checkpoint to the restored container running: the service's
    /// interruption as the broker sees it.
    pub downtime_ms: u64,
    /// Deleting checkpoint data and the source container.
    pub cleanup_ms: u64,
    /// The whole migration.
    pub total_ms: u64,
    /// CRIU's own dump statistics (freezing_time, frozen_time, memdump_time, memwrite_time,
    /// pages_written, ...), when the checkpoint carried them.
    pub criu_dump: Option<DumpStats>,
    /// CRIU's own restore statistics (restore_time, ...), on the direct path.
    pub criu_restore: Option<RestoreStats>,
    /// On the direct path: the source runtime's dump (runc checkpoint), ms.
    pub dump_ms: u64,
    /// On the direct path: the destination runtime's receive, from connection to last checksum.
    pub receive_ms: u64,
    /// Peak resident memory of the runtimes on the source and destination hosts (KiB).
    pub runtime_peak_rss_kib: u64,
    /// On the direct path: the destination's network set up (Docker's network hook run on a
    /// prepared namespace) while it waited for the transfer, before the freeze.
    pub network_ms: u64,
    /// On the direct path: addresses the destination's sockets are bound to that its network
    /// namespace lacked at the restore (Docker >= 28 wires it afterwards), held for the restore.
    pub addresses_held: u64,
    /// Post-copy: from the images' end to the last page served, the window in which a failure
    /// of the source or the link loses what the service did since the restore.
    pub postcopy_ms: u64,
    /// Post-copy: bytes of memory pages moved after the restore.
    pub page_bytes: u64,
    /// On the direct path: bytes on the wire for the images, layer and volume files, after
    /// compression.
    pub wire_bytes: u64,
    /// Their raw size over `wire_bytes` (1 when nothing went compressed; 0 on Docker's path,
    /// which does not measure it).
    pub compression_ratio: f64,
    /// Pre-copy: pre-dump rounds taken while the service ran.
    pub predump_rounds: u32,
    /// Pre-copy: image bytes those rounds moved before the freeze.
    pub predump_bytes: u64,
    /// Pre-copy: from the first pre-dump to the freeze (the service ran meanwhile).
    pub predump_ms: u64,
    /// Pre-copy: image bytes of each round, the freeze's last: how the dirty set shrank.
    pub round_bytes: Vec<u64>,
    /// Connections to group peers restored on their new addresses (a group across a remapped
    /// subnet; the direct path).
    pub sockets_kept: u64,
    /// Connections to outside the group whose own address changed: restored closed.
    pub sockets_closed: u64,
    /// When the source's dump began, Unix time in ms, as its host's clock says (the direct path
    /// only; 0 otherwise): a group's members compare their freezes by it.
    pub dump_started_unix_ms: u64,
    /// When the destination's restore ended, Unix time in ms, as its host's clock says (the
    /// direct path only; 0 otherwise).
    pub restored_unix_ms: u64,
}

impl MigrationStats {
    /// The wire's figures from the source runtime's report.
    pub(crate) fn set_wire(&mut self, sent: &vimigrate_protocol::RuntimeStats) {
        self.wire_bytes = sent.wire_bytes;
        let raw = sent.image_bytes + sent.file_bytes;
        self.compression_ratio = if sent.wire_bytes == 0 { 1.0 } else { raw as f64 / sent.wire_bytes as f64 };
        self.predump_rounds = sent.predump_rounds;
        self.predump_bytes = sent.predump_bytes;
        self.predump_ms = sent.predump_ms;
        self.round_bytes = sent.round_bytes.clone();
    }
}

/// A successful migration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationReport {
    /// Container name (the same on both providers).
    pub container: String,
    /// Source provider.
    pub source: String,
    /// Destination provider.
    pub destination: String,
    /// Container id on the source.
    pub source_id: String,
    /// Container id on the destination, where it runs now.
    pub destination_id: String,
    /// The checkpoint's name.
    pub checkpoint: String,
    /// Whether the source container was kept (stopped).
    pub source_kept: bool,
    /// Per-phase figures.
    pub stats: MigrationStats,
    /// Cleanup steps that failed after the service already ran on the destination; the
    /// migration still succeeded.
    pub warnings: Vec<String>,
    /// How each user-defined network mapped to the destination.
    pub networks: Vec<NetworkDecision>,
    /// The container's addresses that changed, old -> new (empty when all were kept): what
    /// peers that name it by address need rewritten.
    pub address_changes: BTreeMap<String, String>,
    /// The TCP option CRIU ran with on both hosts (`tcp-established`, `tcp-close`), unless the
    /// hosts' own configuration was left alone.
    pub criu_tcp_option: Option<String>,
    /// Declared peer files rewritten on the destination, with the number of addresses replaced.
    pub rewrites: Vec<(String, usize)>,
    /// `direct` or `docker`: how the checkpoint moved.
    pub method: &'static str,
    /// How the memory moved.
    pub memory: MemoryMode,
    /// Why that way (pre-copy taken or not by `auto`, post-copy's price).
    pub memory_reason: String,
    /// Whether the stream was compressed (`off`, `adaptive`, `always`); the ratio is in the
    /// stats.
    pub compression: vimigrate_protocol::StreamCompression,
    /// Why Docker's checkpoint API was used, when it was.
    pub method_reason: Option<String>,
}
