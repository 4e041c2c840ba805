//! Live migration of one running container from a source provider to a destination provider.
//!
//! The order matters for downtime and for safety (see the README's architecture section):
//! everything that can be done while the service runs is done before the freeze (preflight,
//! image, destination container, first copy of the writable layer); after the freeze only what
//! must move does (the layer's delta, volumes, checkpoint images), and any failure from the
//! freeze on resumes the service on the source from the same checkpoint.

pub mod clone;
pub mod heal;
pub(crate) mod lock;
pub(crate) mod path;

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::transfer::archive::{copy_archive, verify_copy};
use crate::migration::clone::{CloneChanges, SourceContainer};
use crate::checkpoint::criu_options::CriuTcp;
use vimigrate_protocol::rewrite_addresses;
use crate::criu_stats::{parse_dump_stats, DumpStats, RestoreStats};
use crate::migration::path::direct::{choose_path, DirectTransfer, PathChoice, TransferKeys};
use crate::error::{Error, InputError, PortTaken, ProviderError};
use crate::provider::image::{ensure_image, image_platform};
use crate::provider::labels;
use crate::transfer::layer_sync::LayerSync;
use crate::network::map::{self as network_map, AddressMode, NetworkDecision};
use crate::provider::Provider;
use crate::runtime_directive::{CriuOptions, Fault, TcpMode, RUNTIME_NAME};

/// What to migrate and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationOptions {
    /// Name or id of the running container on the source provider.
    pub container: String,
    /// Keep the (stopped) source container after a successful migration.
    #[serde(default, deserialize_with = "crate::serde_strict::strict_bool")]
    pub keep_source: bool,
    /// Read the checkpoint back from the destination and compare it with what was sent before
    /// restoring (detects a corrupted transfer; costs one more read of the images).
    #[serde(default = "yes", deserialize_with = "crate::serde_strict::strict_bool")]
    pub verify: bool,
    /// Prove checkpoint/restore works on both hosts with a probe container before anything
    /// changes (about a second per provider).
    #[serde(default = "yes", deserialize_with = "crate::serde_strict::strict_bool")]
    pub check_criu: bool,
    /// Checkpoint name; default `vimigrate-<unix time in ms>`.
    #[serde(default)]
    pub checkpoint_name: Option<String>,
    /// Published host ports taken on the destination, moved to other ports there:
    /// `{"8080": 18080}`.
    #[serde(default)]
    pub port_map: BTreeMap<String, u16>,
    /// Peer addresses that changed (old -> new, as `"172.29.0.2"` or `"172.29.0.2:6379"`),
    /// rewritten in the environment, extra hosts entries and `peer_files` before the restore.
    #[serde(default)]
    pub address_map: BTreeMap<String, String>,
    /// Files inside the container that hold peer addresses (absolute paths).
    #[serde(default)]
    pub peer_files: Vec<String>,
    /// What CRIU does with established TCP connections (see [`CriuTcp`]).
    #[serde(default)]
    pub criu_tcp: CriuTcp,
    /// How the checkpoint moves (see [`Method`]).
    #[serde(default)]
    pub method: Method,
    /// Fault injection for the project's own tests (direct path only).
    #[serde(default)]
    pub fault: Option<Fault>,
}

/// How a migration moves the checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The direct path when both hosts offer it (see [`crate::runtime_directive`]), else
    /// Docker's checkpoint API; the report says which was taken and why.
    #[default]
    Auto,
    /// The direct path, or a preflight error saying why it is not possible.
    Direct,
    /// Docker's checkpoint API (`docker checkpoint create`, the images through the broker,
    /// `docker start --checkpoint`).
    Docker,
}

fn yes() -> bool {
    true
}

impl MigrationOptions {
    /// Checks what can be checked without a provider; the error names the first wrong field.
    pub fn validate(&self) -> Result<(), InputError> {
        if !crate::provider::spec::is_valid_docker_name(&self.container) {
            return Err(InputError::new("container", "a container name or id", &self.container));
        }
        if let Some(name) = &self.checkpoint_name {
            crate::checkpoint::validate_checkpoint_name(name)
                .map_err(|e| InputError { field: "checkpoint_name".into(), ..e })?;
        }
        for (key, port) in &self.port_map {
            if key.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(InputError::new(
                    format!("port_map.{key}"),
                    "a host port number (1..=65535) as the key",
                    key,
                ));
            }
            if *port == 0 {
                return Err(InputError::new(format!("port_map.{key}"), "a port in 1..=65535", port));
            }
        }
        for (i, path) in self.peer_files.iter().enumerate() {
            if !path.starts_with('/') {
                return Err(InputError::new(
                    format!("peer_files[{i}]"),
                    "an absolute path of a file in the container",
                    path,
                ));
            }
        }
        Ok(())
    }

    /// Options for migrating `container` with the defaults.
    pub fn new(container: impl Into<String>) -> Self {
        MigrationOptions {
            container: container.into(),
            keep_source: false,
            verify: true,
            check_criu: true,
            checkpoint_name: None,
            port_map: BTreeMap::new(),
            address_map: BTreeMap::new(),
            peer_files: Vec::new(),
            criu_tcp: CriuTcp::Auto,
            method: Method::Auto,
            fault: None,
        }
    }
}

/// The phases of a migration, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
    /// Why Docker's checkpoint API was used, when it was.
    pub method_reason: Option<String>,
}

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
    /// Undoing failed too: this error says why, and the service may be down.
    Failed(Box<Error>),
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

/// Bookkeeping of what a migration changed, so that a failure undoes exactly that.
#[derive(Default)]
struct Undo {
    destination_id: Option<String>,
    /// The destination container was asked to start (a restore): it may run.
    destination_started: bool,
    helpers: Vec<(bool, String)>,
    checkpoint_taken: bool,
    /// Hosts' CRIU options as found, to put back: (on the source?, previous content).
    criu_options: Vec<(bool, Option<Vec<u8>>)>,
    /// Networks this migration created on the destination: a rollback removes them once unused.
    networks: Vec<String>,
}

/// The name of the checkpoint Docker records on the direct path, next to the runtime's own
/// (whose directory holds the dump).
pub(crate) fn docker_checkpoint_name(checkpoint: &str) -> String {
    format!("{checkpoint}{DOCKER_CHECKPOINT_SUFFIX}")
}

/// See [`docker_checkpoint_name`].
pub(crate) const DOCKER_CHECKPOINT_SUFFIX: &str = ".docker";

/// How long a rollback waits for a destination that was being started to answer, so that it can
/// be made sure not to run the container before the source resumes.
const DESTINATION_PATIENCE: Duration = Duration::from_secs(30);

fn ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn default_checkpoint_name() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or(Duration::ZERO);
    format!("vimigrate-{}", now.as_millis())
}

/// Migrates one running container from `src` to `dst`. On success the container runs on `dst`
/// with its processes, memory and files; on failure the error names the phase and the service
/// runs where it ran (see [`Rollback`]).
pub async fn migrate(
    src: &Provider,
    dst: &Provider,
    options: &MigrationOptions,
    progress: &(dyn Fn(&ProgressEvent) + Send + Sync),
) -> Result<MigrationReport, MigrationError> {
    let checkpoint = options.checkpoint_name.clone().unwrap_or_else(default_checkpoint_name);
    Migration {
        src,
        dst,
        options,
        progress,
        checkpoint,
        decisions: Vec::new(),
        changes: CloneChanges::default(),
        image: String::new(),
        path: PathChoice::Docker(String::new()),
        direct: None,
        undo: Undo::default(),
    }
    .run()
    .await
}

struct Migration<'a> {
    src: &'a Provider,
    dst: &'a Provider,
    options: &'a MigrationOptions,
    progress: &'a (dyn Fn(&ProgressEvent) + Send + Sync),
    checkpoint: String,
    decisions: Vec<NetworkDecision>,
    changes: CloneChanges,
    /// The image both helpers and the destination run (see `SourceContainer::image`).
    image: String,
    /// How the checkpoint moves, decided in preflight.
    path: PathChoice,
    /// The direct path's state, once prepared.
    direct: Option<DirectTransfer>,
    undo: Undo,
}

impl Migration<'_> {
    fn phase(&self, phase: Phase) -> Instant {
        (self.progress)(&ProgressEvent::Phase { phase });
        tracing::info!(container = %self.options.container, %phase, "phase");
        Instant::now()
    }

    async fn fail(&mut self, phase: Phase, source: &SourceContainer, cause: Error) -> MigrationError {
        tracing::warn!(container = %source.name, %phase, error = %cause.report(), "migration failed; rolling back");
        let rollback = self.roll_back(source).await;
        MigrationError {
            phase,
            container: source.name.clone(),
            source_provider: self.src.name().to_string(),
            destination: self.dst.name().to_string(),
            cause,
            rollback,
        }
    }

    async fn run(mut self) -> Result<MigrationReport, MigrationError> {
        let started = Instant::now();
        let mut stats = MigrationStats::default();
        let checkpoint = self.checkpoint.clone();

        let t = self.phase(Phase::Preflight);
        let preflight_error = |this: &Self, container: &str, cause: Error| MigrationError {
            phase: Phase::Preflight,
            container: container.to_string(),
            source_provider: this.src.name().to_string(),
            destination: this.dst.name().to_string(),
            cause,
            rollback: Rollback::NothingToUndo,
        };
        let source = match self.find_source(&checkpoint).await {
            Ok(source) => source,
            Err(cause) => return Err(preflight_error(&self, &self.options.container, cause)),
        };
        // One migration of a container at a time. Taken first, before anything asks the
        // destination (which may still be busy with a migration whose broker died), and
        // released if the rest of the preflight fails: a refused migration changes nothing.
        let lock = match self.src.lock_migration(&source.name, &source.image, &checkpoint, self.dst.name()).await {
            Ok(lock) => lock,
            Err(cause) => return Err(preflight_error(&self, &source.name, cause)),
        };
        let source = match self.preflight(source).await {
            Ok(source) => source,
            Err(cause) => {
                lock.release().await;
                return Err(preflight_error(&self, &self.options.container, cause));
            }
        };
        stats.preflight_ms = ms(t);
        let result = self.run_locked(source, stats, started).await;
        lock.release().await;
        result
    }

    /// Everything after the preflight, under the migration lock.
    async fn run_locked(
        mut self,
        source: SourceContainer,
        mut stats: MigrationStats,
        started: Instant,
    ) -> Result<MigrationReport, MigrationError> {
        let checkpoint = self.checkpoint.clone();
        let t = self.phase(Phase::Image);
        let image_progress = |bytes| (self.progress)(&ProgressEvent::Bytes { phase: Phase::Image, bytes });
        match ensure_image(self.src, self.dst, &source.image, &image_progress).await {
            Ok(moved) => stats.image_bytes = moved.bytes,
            Err(e) => return Err(self.fail(Phase::Image, &source, e).await),
        }
        stats.image_ms = ms(t);

        let t = self.phase(Phase::Prepare);
        let helpers = match self.prepare(&source).await {
            Ok(helpers) => helpers,
            Err(e) => return Err(self.fail(Phase::Prepare, &source, e).await),
        };
        if let PathChoice::Direct { .. } = self.path {
            if let Err(e) = self.prepare_direct(&source).await {
                return Err(self.fail(Phase::Prepare, &source, e).await);
            }
        }
        let destination_id = self.undo.destination_id.clone().unwrap_or_default();
        stats.prepare_ms = ms(t);

        let t = self.phase(Phase::Precopy);
        let volumes: Vec<String> = source.volumes.iter().map(|v| v.destination.clone()).collect();
        let mut layer = LayerSync::new(self.src, &source.id, self.dst, &destination_id, volumes);
        let precopy_progress = |bytes| (self.progress)(&ProgressEvent::Bytes { phase: Phase::Precopy, bytes });
        match layer.first_pass(&precopy_progress).await {
            Ok(pass) => stats.precopy_bytes = pass.bytes,
            Err(e) => return Err(self.fail(Phase::Precopy, &source, e).await),
        }
        stats.precopy_ms = ms(t);

        if let PathChoice::Direct { destination_host } = self.path.clone() {
            return self.run_direct(&source, &layer, stats, started, &destination_host).await;
        }

        let tcp_option = self.tcp_option();
        if let Some(option) = tcp_option {
            if let Err(e) = self.set_tcp_option(option).await {
                return Err(self.fail(Phase::Prepare, &source, e).await);
            }
        }

        // The service stops answering from here until the restore.
        let frozen = self.phase(Phase::Checkpoint);
        self.undo.checkpoint_taken = true;
        if let Err(e) = self.src.create_checkpoint(&source.id, &checkpoint).await {
            return Err(self.fail(Phase::Checkpoint, &source, e).await);
        }
        stats.checkpoint_ms = ms(frozen);

        let t = self.phase(Phase::Transfer);
        let transfer_progress = |bytes| (self.progress)(&ProgressEvent::Bytes { phase: Phase::Transfer, bytes });
        let sent = match self
            .transfer(&source, &mut layer, &helpers, &checkpoint, &destination_id, &transfer_progress)
            .await
        {
            Ok(sent) => sent,
            Err(e) => return Err(self.fail(Phase::Transfer, &source, e).await),
        };
        stats.transfer_ms = ms(t);
        stats.transfer_bytes = sent.total_bytes;
        stats.checkpoint_bytes = sent.checkpoint_bytes;
        stats.criu_dump = sent.dump_stats;
        let rewrites = match self.rewrite_peer_files(&source, &destination_id).await {
            Ok(rewrites) => rewrites,
            Err(e) => return Err(self.fail(Phase::Transfer, &source, e).await),
        };

        if self.options.verify {
            let t = self.phase(Phase::Verify);
            let arrived = format!("/vimigrate-dst/{checkpoint}");
            if let Err(e) = verify_copy(&sent.manifest, self.dst, &helpers.1, &arrived, "checkpoint images").await {
                return Err(self.fail(Phase::Verify, &source, e).await);
            }
            stats.verify_ms = ms(t);
        }

        let t = self.phase(Phase::Restore);
        self.undo.destination_started = true;
        if let Err(e) = self.restore(&destination_id, &checkpoint).await {
            return Err(self.fail(Phase::Restore, &source, e).await);
        }
        stats.restore_ms = ms(t);
        stats.downtime_ms = ms(frozen);

        let address_changes = self.address_changes(&source, &destination_id).await;
        let t = self.phase(Phase::Cleanup);
        let mut warnings = self.clean_up(&source, &destination_id, &checkpoint).await;
        warnings.extend(self.restore_host_options().await);
        stats.cleanup_ms = ms(t);
        stats.total_ms = ms(started);
        Ok(self.report(&source, Finished { destination_id, checkpoint, stats, warnings, address_changes, rewrites }))
    }

    /// The direct path's helpers and keys (after the destination container exists).
    async fn prepare_direct(&mut self, source: &SourceContainer) -> Result<(), Error> {
        let destination_id = self.undo.destination_id.clone().unwrap_or_default();
        let keys = TransferKeys::generate()?;
        match DirectTransfer::prepare(
            (self.src, self.dst),
            &self.checkpoint,
            (&source.id, &destination_id),
            &self.image,
            &source.name,
            keys,
        )
        .await
        {
            Ok((transfer, helpers)) => {
                self.undo.helpers.extend(helpers);
                self.direct = Some(transfer);
                Ok(())
            }
            Err((e, helpers)) => {
                self.undo.helpers.extend(helpers);
                Err(e)
            }
        }
    }

    /// CRIU's options on the direct path: each container gets its own, the hosts' file is left
    /// alone.
    fn direct_criu_options(&self) -> CriuOptions {
        match self.tcp_option() {
            None => CriuOptions { tcp: None, skip_in_flight: false },
            Some("tcp-established") => CriuOptions { tcp: Some(TcpMode::Established), skip_in_flight: true },
            Some(_) => CriuOptions { tcp: Some(TcpMode::Close), skip_in_flight: true },
        }
    }

    /// The rest of a migration on the direct path, from the armed runtimes to the cleanup.
    async fn run_direct(
        mut self,
        source: &SourceContainer,
        layer: &LayerSync<'_>,
        mut stats: MigrationStats,
        started: Instant,
        destination_host: &str,
    ) -> Result<MigrationReport, MigrationError> {
        let checkpoint = self.checkpoint.clone();
        let criu = self.direct_criu_options();
        let Some(mut transfer) = self.direct.take() else {
            let e = ProviderError::Unsuitable {
                provider: self.dst.name().to_string(),
                requirement: "a prepared direct transfer",
                detail: "the direct path was chosen but not prepared".into(),
            };
            return Err(self.fail(Phase::Prepare, source, e.into()).await);
        };
        let destination_id = transfer.dst_id.clone();

        // Still while the service runs: the destination starts and waits for the images.
        let t = Instant::now();
        self.undo.destination_started = true;
        let armed = async {
            let port = transfer.arm_destination(&criu, &self.options.peer_files, &self.options.address_map).await?;
            let host = if destination_host.contains(':') {
                format!("[{destination_host}]")
            } else {
                destination_host.to_string()
            };
            let volumes = source.volumes.iter().map(|v| v.destination.clone()).collect();
            transfer.arm_source(format!("{host}:{port}"), &criu, layer.baseline(), volumes, self.options.fault).await
        }
        .await;
        stats.prepare_ms += ms(t);
        self.direct = Some(transfer);
        if let Err(e) = armed {
            return Err(self.fail(Phase::Prepare, source, e).await);
        }

        // The service stops answering from here until the destination's start returns.
        let frozen = self.phase(Phase::Checkpoint);
        self.undo.checkpoint_taken = true;
        // Docker's checkpoint of its own name only carries containerd's bookkeeping (the
        // runtime dumps into `checkpoint`'s directory): a failure of Docker's after the dump,
        // which makes it delete its checkpoint directory, cannot take the dump with it.
        let dumped = self.src.create_checkpoint(&source.id, &docker_checkpoint_name(&checkpoint)).await;
        stats.checkpoint_ms = ms(frozen);
        if let Err(e) = dumped {
            let transfer = self.direct.as_ref().expect("set above");
            match transfer.status(true).await {
                // Dumped and sent in full: what failed was Docker's bookkeeping after the dump
                // (containerd's content store, moby/moby#42900); the destination has it all.
                Some(status) if status.state == crate::runtime_directive::RuntimeState::Dumped => {
                    tracing::warn!(error = %e.report(), "Docker reported a failed checkpoint after a complete dump and transfer; going on");
                }
                _ => {
                    // The runtime's report says why (the destination unreachable, CRIU's error).
                    let cause = transfer.reported_failure(true).await.unwrap_or(e);
                    return Err(self.fail(Phase::Checkpoint, source, cause).await);
                }
            }
        }
        let t = self.phase(Phase::Transfer);
        let restored = self.direct.as_mut().expect("set above").await_start().await;
        if let Err(e) = restored {
            let transfer = self.direct.as_ref().expect("set above");
            // Everything had arrived when the destination got as far as its restore.
            let received = transfer.status(false).await.is_some_and(|s| {
                s.state == crate::runtime_directive::RuntimeState::Received
                    || s.error.is_some_and(|e| e.step == "restore" || e.step == "rewrite")
            });
            // The destination's own report names the root cause (a full disk, a corrupted
            // file); the source's adds what it saw. Without the former, the source's explains
            // a destination that waited in vain.
            let cause = match (e, transfer.reported_failure(true).await) {
                (Error::Runtime(at_dst), Some(Error::Runtime(at_src))) if !received => {
                    Error::Runtime(crate::error::RuntimeStepError {
                        message: format!("{} (the source reported: {})", at_dst.message, at_src.message),
                        retryable: at_dst.retryable || at_src.retryable,
                        ..at_dst
                    })
                }
                (Error::Runtime(at_dst), _) => Error::Runtime(at_dst),
                (_, Some(at_src)) if !received => at_src,
                (e, _) => e,
            };
            let phase = if received { Phase::Restore } else { Phase::Transfer };
            return Err(self.fail(phase, source, cause).await);
        }
        let running = self.dst.inspect_deployed(&destination_id).await;
        if !matches!(running, Ok(Some(ref c)) if c.running) {
            let cause = match running {
                Err(e) => e,
                _ => ProviderError::Unsuitable {
                    provider: self.dst.name().to_string(),
                    requirement: "a running restored container",
                    detail: format!("container {destination_id} stopped right after its restore"),
                }
                .into(),
            };
            return Err(self.fail(Phase::Restore, source, cause).await);
        }
        stats.downtime_ms = ms(frozen);
        let transfer_phase_ms = ms(t);

        let transfer = self.direct.as_ref().expect("set above");
        let (sent, received) = (transfer.status(true).await, transfer.status(false).await);
        if let Some(sent) = &sent {
            stats.dump_ms = sent.stats.dump_ms;
            stats.transfer_ms = sent.stats.send_ms;
            stats.checkpoint_bytes = sent.stats.image_bytes;
            stats.transfer_bytes = sent.stats.image_bytes + sent.stats.file_bytes;
            stats.criu_dump = sent.stats.criu_dump.clone();
            stats.runtime_peak_rss_kib = sent.stats.peak_rss_kib;
        }
        if let Some(received) = &received {
            stats.receive_ms = received.stats.receive_ms;
            stats.restore_ms = received.stats.restore_ms;
            stats.network_ms = received.stats.network_ms;
            stats.criu_restore = received.stats.criu_restore.clone();
            stats.runtime_peak_rss_kib = stats.runtime_peak_rss_kib.max(received.stats.peak_rss_kib);
        } else {
            stats.restore_ms = transfer_phase_ms;
        }

        let address_changes = self.address_changes(source, &destination_id).await;
        let t = self.phase(Phase::Cleanup);
        let warnings = self.clean_up(source, &destination_id, &checkpoint).await;
        stats.cleanup_ms = ms(t);
        stats.total_ms = ms(started);
        let rewrites = received.map(|r| r.stats.rewrites).unwrap_or_default();
        Ok(self.report(source, Finished { destination_id, checkpoint, stats, warnings, address_changes, rewrites }))
    }

    /// The report of a successful migration.
    fn report(&self, source: &SourceContainer, done: Finished) -> MigrationReport {
        let direct = matches!(self.path, PathChoice::Direct { .. });
        MigrationReport {
            container: source.name.clone(),
            source: self.src.name().to_string(),
            destination: self.dst.name().to_string(),
            source_id: source.id.clone(),
            destination_id: done.destination_id,
            checkpoint: done.checkpoint,
            source_kept: self.options.keep_source,
            stats: done.stats,
            warnings: done.warnings,
            networks: self.decisions.clone(),
            address_changes: done.address_changes,
            criu_tcp_option: self.tcp_option().map(str::to_string),
            rewrites: done.rewrites,
            method: if direct { "direct" } else { "docker" },
            method_reason: match &self.path {
                PathChoice::Docker(reason) => Some(reason.clone()),
                PathChoice::Direct { .. } => None,
            },
        }
    }

    /// The TCP option for this migration: connections can only survive when every network
    /// keeps its addresses.
    fn tcp_option(&self) -> Option<&'static str> {
        let all_kept = self.decisions.iter().all(|d| d.mode == AddressMode::Preserve);
        match self.options.criu_tcp {
            CriuTcp::Host => None,
            CriuTcp::Established => Some("tcp-established"),
            CriuTcp::Close => Some("tcp-close"),
            CriuTcp::Auto if all_kept && !self.decisions.is_empty() => Some("tcp-established"),
            CriuTcp::Auto => Some("tcp-close"),
        }
    }

    async fn set_tcp_option(&mut self, option: &str) -> Result<(), Error> {
        let previous = self.src.set_criu_tcp_option(&self.image, option).await?;
        self.undo.criu_options.push((true, previous));
        let previous = self.dst.set_criu_tcp_option(&self.image, option).await?;
        self.undo.criu_options.push((false, previous));
        Ok(())
    }

    /// Puts the hosts' CRIU options back, last set first (both may be the same host).
    async fn restore_host_options(&mut self) -> Vec<String> {
        let mut warnings = Vec::new();
        while let Some((on_source, previous)) = self.undo.criu_options.pop() {
            let provider = if on_source { self.src } else { self.dst };
            if let Err(e) = provider.restore_criu_options(&self.image, previous).await {
                warnings.push(e.report());
            }
        }
        warnings
    }

    /// Declared peer files, read from the frozen source, addresses rewritten, written into the
    /// destination before its restore (the process reads the new addresses when it reconnects).
    async fn rewrite_peer_files(
        &self,
        source: &SourceContainer,
        destination_id: &str,
    ) -> Result<Vec<(String, usize)>, Error> {
        let mut done = Vec::new();
        for path in &self.options.peer_files {
            let Some(content) = self.src.read_file(&source.id, path).await? else {
                return Err(InputError::new("peer_files", "files that exist in the container", path).into());
            };
            let text = String::from_utf8_lossy(&content);
            let (rewritten, count) = rewrite_addresses(&text, &self.options.address_map);
            self.dst.write_file(destination_id, path, rewritten.as_bytes()).await?;
            done.push((path.clone(), count));
        }
        Ok(done)
    }

    /// Old address -> new address of the container on each network whose address changed.
    async fn address_changes(&self, source: &SourceContainer, destination_id: &str) -> BTreeMap<String, String> {
        let now = match self.dst.inspect_deployed(destination_id).await {
            Ok(Some(found)) => found.addresses,
            _ => return BTreeMap::new(),
        };
        source
            .networks
            .iter()
            .filter_map(|ep| {
                let old = ep.ipv4.clone()?;
                let new = now.get(&ep.network)?.clone();
                (old != new).then_some((old, new))
            })
            .collect()
    }

    /// Every check that can fail before anything changes.
    /// The source container, as the migration will move it.
    async fn find_source(&self, checkpoint: &str) -> Result<SourceContainer, Error> {
        self.options.validate()?;
        if !crate::provider::spec::is_valid_docker_name(checkpoint) {
            return Err(
                InputError::new("checkpoint_name", "a name matching [a-zA-Z0-9][a-zA-Z0-9_.-]*", checkpoint).into()
            );
        }
        if self.src.name() == self.dst.name() {
            return Err(InputError::new("destination", "a provider other than the source", self.dst.name()).into());
        }
        let name = &self.options.container;
        let inspect = self
            .src
            .inspect_container_raw(name)
            .await?
            .ok_or_else(|| InputError::new("container", format!("a container on {}", self.src.name()), name))?;
        let mut source = SourceContainer::from_inspect(inspect);
        // The container runs the image it was created from; its reference may name another
        // image by now (a rebuilt `latest`). Move and run exactly the image it runs.
        let named = self.src.docker().inspect_image(&source.image).await.ok().and_then(|i| i.id);
        if named.as_deref() != Some(source.image_id.as_str()) && !source.image_id.is_empty() {
            tracing::info!(container = %source.name, reference = %source.image, id = %source.image_id,
                "the image reference names another image now; migrating by id");
            source.image = source.image_id.clone();
        }
        Ok(source)
    }

    /// Every other check that can fail before anything changes.
    async fn preflight(&mut self, source: SourceContainer) -> Result<SourceContainer, Error> {
        let name = &self.options.container;
        if !source.running {
            return Err(
                InputError::new("container", "a running container", format!("{name} ({})", source.status)).into()
            );
        }
        if source.auto_remove {
            return Err(InputError::new(
                "container",
                "a container without auto-remove (--rm): Docker would delete it, and the checkpoint to roll back to, at the freeze",
                name,
            )
            .into());
        }
        if !source.host_binds.is_empty() {
            return Err(InputError::new(
                "container",
                "no bind mount of a host path (it cannot follow the container to another host; use a named volume)",
                source.host_binds.join(", "),
            )
            .into());
        }
        let (src_report, dst_report) = tokio::try_join!(self.src.probe(), self.dst.probe())?;
        for report in [&src_report, &dst_report] {
            if !report.experimental {
                return Err(ProviderError::Unsuitable {
                    provider: report.name.clone(),
                    requirement: "experimental mode (dockerd --experimental) for checkpoint/restore",
                    detail: format!("Docker {} runs without it", report.server_version),
                }
                .into());
            }
        }
        self.path = choose_path(
            self.options.method,
            src_report.vimigrate_runtime,
            dst_report.vimigrate_runtime,
            source.runtime.as_deref(),
            self.dst,
        )
        .map_err(|detail| ProviderError::Unsuitable {
            provider: self.dst.name().to_string(),
            requirement: "the direct migration path (method direct)",
            detail,
        })?;
        if let PathChoice::Docker(reason) = &self.path {
            tracing::info!(container = %source.name, %reason, "migrating through Docker's checkpoint API");
        }
        // The destination runs the container under vimigrate-runtime when it has it, so that
        // the next migration can take the direct path.
        self.changes.runtime = if dst_report.vimigrate_runtime {
            Some(RUNTIME_NAME.to_string())
        } else if source.runtime.as_deref() == Some(RUNTIME_NAME) {
            None
        } else {
            source.runtime.clone()
        };
        // The container list, not an inspect: an inspect waits for a start in progress there.
        if self.dst.container_exists(&source.name).await? {
            return Err(ProviderError::NameTaken {
                provider: self.dst.name().to_string(),
                what: "container",
                name: source.name.clone(),
                reason: "is already in use on the destination",
            }
            .into());
        }
        let (_, image_arch) = image_platform(self.src, &source.image).await?;
        if !image_arch.is_empty() && image_arch != dst_report.arch {
            return Err(ProviderError::Unsuitable {
                provider: self.dst.name().to_string(),
                requirement: "the image's architecture",
                detail: format!("image `{}` is {image_arch}, the destination is {}", source.image, dst_report.arch),
            }
            .into());
        }
        self.plan_networks(&source).await?;
        self.check_ports(&source).await?;
        for (i, path) in self.options.peer_files.iter().enumerate() {
            if !path.starts_with('/') || self.src.read_file(&source.id, path).await?.is_none() {
                return Err(InputError::new(
                    format!("peer_files[{i}]"),
                    "an absolute path of a file in the container",
                    path,
                )
                .into());
            }
        }
        if self.options.check_criu {
            tokio::try_join!(self.src.check_criu(), self.dst.check_criu())?;
        }
        self.image = source.image.clone();
        Ok(source)
    }

    /// Decides, for each network of the container, whether the destination keeps its subnet.
    async fn plan_networks(&mut self, source: &SourceContainer) -> Result<(), Error> {
        let existing = self.dst.list_networks().await?;
        self.decisions.clear();
        for ep in &source.networks {
            let info = self.src.inspect_network(&ep.network).await?.ok_or_else(|| {
                InputError::new("container", format!("a container whose network `{}` exists", ep.network), &source.name)
            })?;
            let decision = network_map::decide(&info, &existing);
            tracing::info!(network = %decision.name, mode = ?decision.mode, reason = %decision.reason, "network mapping");
            if decision.mode == AddressMode::Preserve {
                self.changes.preserved.insert(decision.name.clone());
            }
            self.decisions.push(decision);
        }
        self.changes.address_map = self.options.address_map.clone();
        Ok(())
    }

    /// Every published host port must be free on the destination, or mapped to one that is.
    async fn check_ports(&mut self, source: &SourceContainer) -> Result<(), Error> {
        for (key, port) in &self.options.port_map {
            let from = key
                .parse::<u16>()
                .map_err(|_| InputError::new(format!("port_map.{key}"), "a host port number as the key", key))?;
            if *port == 0 {
                return Err(InputError::new(format!("port_map.{key}"), "a port in 1..=65535", port).into());
            }
            self.changes.port_map.insert(from, *port);
        }
        let taken = self.dst.published_ports().await?;
        for (port, protocol) in &source.host_ports {
            let wanted = self.changes.port_map.get(port).copied().unwrap_or(*port);
            if let Some(owner) = taken.get(&(wanted, protocol.clone())) {
                let advice = if wanted == *port {
                    "free it, or publish the container on another port there with port_map"
                } else {
                    "port_map points at a taken port: choose a free one"
                };
                return Err(PortTaken {
                    provider: self.dst.name().to_string(),
                    port: wanted,
                    protocol: protocol.clone(),
                    owner: owner.clone(),
                    advice,
                }
                .into());
            }
        }
        Ok(())
    }

    /// The destination container and the two helpers that carry the checkpoint.
    async fn prepare(&mut self, source: &SourceContainer) -> Result<(String, String), Error> {
        // Networks created here are marked with this migration and remembered before they
        // exist, so that a rollback (or a heal, after a broker died) does not leave them.
        for decision in &mut self.decisions {
            if let Some(spec) = decision.create.as_mut() {
                if self.dst.inspect_network(&spec.name).await?.is_none() {
                    spec.labels.insert(labels::MIGRATION_NETWORK_LABEL.to_string(), self.checkpoint.clone());
                    self.undo.networks.push(spec.name.clone());
                }
            }
        }
        let destination_id = self.dst.create_clone(source, &self.decisions, &self.changes).await?;
        self.undo.destination_id = Some(destination_id.clone());
        if let PathChoice::Direct { .. } = self.path {
            // The direct path's helpers mount the containers' directories instead.
            return Ok((String::new(), String::new()));
        }
        let src_dir = self.src.checkpoint_parent_dir(&source.id).await?;
        let dst_dir = self.dst.checkpoint_parent_dir(&destination_id).await?;
        let tag: String = destination_id.chars().take(12).collect();
        let src_helper = self
            .src
            .create_helper(
                &format!("vimigrate-helper-src-{tag}"),
                &source.image,
                &src_dir,
                "/vimigrate-src",
                true,
                &source.name,
            )
            .await?;
        self.undo.helpers.push((true, src_helper.clone()));
        let dst_helper = self
            .dst
            .create_helper(
                &format!("vimigrate-helper-dst-{tag}"),
                &source.image,
                &dst_dir,
                "/vimigrate-dst",
                false,
                &source.name,
            )
            .await?;
        self.undo.helpers.push((false, dst_helper.clone()));
        Ok((src_helper, dst_helper))
    }

    async fn transfer(
        &self,
        source: &SourceContainer,
        layer: &mut LayerSync<'_>,
        helpers: &(String, String),
        checkpoint: &str,
        destination_id: &str,
        progress: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Sent, Error> {
        let mut total = 0u64;
        let delta = {
            let each = |bytes: u64| progress(bytes);
            layer.delta_pass(&each).await?
        };
        total += delta.bytes;
        for volume in &source.volumes {
            let done = total;
            let each = |bytes: u64| progress(done + bytes);
            let parent = crate::provider::files::parent(&volume.destination);
            let copied =
                copy_archive(self.src, &source.id, &volume.destination, self.dst, destination_id, parent, &each)
                    .await?;
            total += copied.bytes;
        }
        let done = total;
        let each = |bytes: u64| progress(done + bytes);
        let from = format!("/vimigrate-src/{checkpoint}");
        let copied = copy_archive(self.src, &helpers.0, &from, self.dst, &helpers.1, "/vimigrate-dst", &each).await?;
        total += copied.bytes;
        let dump_stats = match copied.manifest.captured.get("stats-dump") {
            Some(bytes) => match parse_dump_stats(bytes) {
                Ok(stats) => Some(stats),
                Err(e) => {
                    tracing::warn!(error = %e, "CRIU dump statistics unreadable; reported without them");
                    None
                }
            },
            None => None,
        };
        Ok(Sent { total_bytes: total, checkpoint_bytes: copied.bytes, manifest: copied.manifest, dump_stats })
    }

    async fn restore(&self, destination_id: &str, checkpoint: &str) -> Result<(), Error> {
        self.dst.start_from_checkpoint(destination_id, checkpoint).await?;
        let running = self.dst.inspect_deployed(destination_id).await?.is_some_and(|c| c.running);
        if !running {
            return Err(ProviderError::Unsuitable {
                provider: self.dst.name().to_string(),
                requirement: "a running restored container",
                detail: format!("container {destination_id} stopped right after its restore"),
            }
            .into());
        }
        Ok(())
    }

    /// After success: checkpoint data holds process memory, so it goes from both hosts.
    async fn clean_up(&self, source: &SourceContainer, destination_id: &str, checkpoint: &str) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut note = |result: Result<bool, Error>| {
            if let Err(e) = result {
                warnings.push(e.report());
            }
        };
        note(self.dst.delete_checkpoint(destination_id, checkpoint).await);
        note(self.src.delete_checkpoint(&source.id, checkpoint).await);
        if self.direct.is_some() {
            note(self.src.delete_checkpoint(&source.id, &docker_checkpoint_name(checkpoint)).await);
        }
        for (on_source, helper) in &self.undo.helpers {
            let provider = if *on_source { self.src } else { self.dst };
            note(provider.force_remove(helper).await);
        }
        if !self.options.keep_source {
            note(self.src.force_remove(&source.id).await);
        }
        for warning in &warnings {
            tracing::warn!(container = %source.name, warning = %warning, "cleanup after migration");
        }
        warnings
    }

    /// Undoes what this migration changed, so that the service runs where it ran.
    async fn roll_back(&mut self, source: &SourceContainer) -> Rollback {
        let mut first_error: Option<Error> = None;
        let mut keep = |result: Result<bool, Error>| {
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        };
        // A destination still waiting for the transfer is told to give up first, so that its
        // start call ends and the container can go.
        if let Some(transfer) = self.direct.as_mut() {
            if transfer.destination_starting() {
                transfer.withdraw_destination().await;
            }
        }
        // The destination goes first: it must never run alongside a resumed source.
        if let Some(id) = self.undo.destination_id.take() {
            match self.remove_destination(&id).await {
                Ok(_) => {}
                Err(cause) if self.undo.destination_started && self.undo.checkpoint_taken => {
                    // It may run there: resuming the source could make two copies.
                    for (on_source, helper) in std::mem::take(&mut self.undo.helpers) {
                        let provider = if on_source { self.src } else { self.dst };
                        if let Err(e) = provider.force_remove(&helper).await {
                            tracing::warn!(error = %e.report(), "helper left behind; heal removes it");
                        }
                    }
                    return Rollback::Held { destination: self.dst.name().to_string(), cause: Box::new(cause) };
                }
                Err(e) => keep(Err(e)),
            }
        }
        for network in std::mem::take(&mut self.undo.networks) {
            if let Err(e) = self.dst.remove_network(&network, true).await {
                tracing::warn!(error = %e.report(), network = %network, "network left on the destination; heal removes it");
            }
        }
        let helpers = std::mem::take(&mut self.undo.helpers);
        let (source_helpers, destination_helpers): (Vec<_>, Vec<_>) =
            helpers.into_iter().partition(|(on_source, _)| *on_source);
        for (_, helper) in destination_helpers {
            keep(self.dst.force_remove(&helper).await);
        }
        let resumed = if self.undo.checkpoint_taken { Some(self.resume_source(source).await) } else { None };
        // The source's helpers served the resume on the direct path; they go last.
        for (_, helper) in source_helpers {
            keep(self.src.force_remove(&helper).await);
        }
        for warning in self.restore_host_options().await {
            tracing::warn!(warning = %warning, "CRIU options not restored after the rollback");
        }
        match (resumed, first_error) {
            (None, None) => Rollback::Undone,
            (None, Some(e)) => Rollback::Failed(Box::new(e)),
            (Some(Ok(())), None) => Rollback::Resumed { provider: self.src.name().to_string() },
            (Some(Ok(())), Some(cleanup)) => {
                tracing::warn!(error = %cleanup.report(), "service resumed, but the destination was not fully cleaned");
                Rollback::Resumed { provider: self.src.name().to_string() }
            }
            (Some(Err(e)), _) => Rollback::Failed(Box::new(e)),
        }
    }

    /// Removes the destination container. When it was started (it may run), a provider that
    /// does not answer is given some time (a daemon restarting) before this gives up.
    async fn remove_destination(&self, id: &str) -> Result<bool, Error> {
        let patience = if self.undo.destination_started { DESTINATION_PATIENCE } else { Duration::ZERO };
        let deadline = Instant::now() + patience;
        loop {
            match self.dst.force_remove(id).await {
                // Any error: a daemon restarting answers with all sorts of them, and a
                // container that may run must not be left behind for a transient reason.
                Err(e) if Instant::now() < deadline => {
                    tracing::warn!(error = %e.report(), "the destination container could not be removed; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                other => return other,
            }
        }
    }

    /// Restores the source from the checkpoint unless it still runs (a failed dump leaves the
    /// processes running), then deletes the checkpoint: it holds process memory.
    async fn resume_source(&self, source: &SourceContainer) -> Result<(), Error> {
        let running = self.src.inspect_deployed(&source.id).await?.is_some_and(|c| c.running);
        let names = self.src.list_checkpoints(&source.id).await?;
        let name = names.iter().find(|n| **n == self.checkpoint).cloned();
        if !running {
            let Some(name) = name.clone() else {
                return Err(ProviderError::Unsuitable {
                    provider: self.src.name().to_string(),
                    requirement: "a checkpoint to resume from",
                    detail: format!("container `{}` is stopped and has no checkpoint", source.name),
                }
                .into());
            };
            match &self.direct {
                // The runtime kept the dump in the checkpoint directory: restore from it the
                // same way the destination would have; Docker's own restore reads the same
                // directory and is the fallback.
                Some(transfer) => {
                    if let Err(e) = transfer.restore_source_locally(&self.direct_criu_options()).await {
                        tracing::warn!(error = %e.report(), "direct restore on the source failed; trying Docker's restore");
                        self.src.start_from_checkpoint(&source.id, &name).await?;
                    }
                }
                None => self.src.start_from_checkpoint(&source.id, &name).await?,
            }
            let running = self.src.inspect_deployed(&source.id).await?.is_some_and(|c| c.running);
            if !running {
                return Err(ProviderError::Unsuitable {
                    provider: self.src.name().to_string(),
                    requirement: "a running source after the rollback",
                    detail: format!("container `{}` stopped right after its restore", source.name),
                }
                .into());
            }
        }
        if let Some(name) = name {
            if let Err(e) = self.src.delete_checkpoint(&source.id, &name).await {
                tracing::warn!(error = %e.report(), "checkpoint left on the source after the rollback");
            }
        }
        if self.direct.is_some() {
            let _ = self.src.delete_checkpoint(&source.id, &docker_checkpoint_name(&self.checkpoint)).await;
        }
        Ok(())
    }
}

/// What a successful migration ends with, for its report.
struct Finished {
    destination_id: String,
    checkpoint: String,
    stats: MigrationStats,
    warnings: Vec<String>,
    address_changes: BTreeMap<String, String>,
    rewrites: Vec<(String, usize)>,
}

/// What the transfer phase moved.
struct Sent {
    total_bytes: u64,
    checkpoint_bytes: u64,
    manifest: crate::transfer::tar::manifest::TarManifest,
    dump_stats: Option<DumpStats>,
}
