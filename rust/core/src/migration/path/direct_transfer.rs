//! One direct transfer in progress, seen from the broker: the directives it leaves for
//! `vimigrate-runtime` on both hosts (through helper containers that mount the containers'
//! directories), the statuses the runtimes write back, and the destination's `docker start`
//! that waits for the images in the background.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::StartContainerOptions;
use tokio::task::JoinHandle;
use vimigrate_protocol::{
    Action, BaselineEntry, CriuOptions, Directive, DumpDirective, Fault, PreCopy, PreCopyDirective, PreCopyRounds,
    ReceiveFrom, RestoreDirective, RuntimeFailure, RuntimeState, RuntimeStatus, SendTo, StreamCompression, ABORT_FILE,
    DIRECTIVE_FILE, DIRECTIVE_VERSION, PRE_COPY_FILE, STATE_DIR, STATUS_FILE,
};

use crate::error::{Error, ProviderError, RuntimeStepError};
use crate::migration::path::transfer_keys::TransferKeys;
use crate::migration::side::Side;
use crate::provider::Provider;
use crate::transfer::tar::writer::private_files_tar;

/// Where the helper containers mount a container's directory.
pub(crate) const MOUNT: &str = "/vimigrate-c";
/// How often the broker looks at the destination's status while it starts listening.
const STATUS_POLL: Duration = Duration::from_millis(20);
/// Longest silence on the transfer connection: a quarter of the providers' call timeout, between
/// 2 and 30 s (ms).
fn io_timeout_ms(a: &Provider, b: &Provider) -> u64 {
    (a.timeout_secs().min(b.timeout_secs()) * 250).clamp(2_000, 30_000)
}

/// Writes `directive` for a container through its helper, and reads it back: a restore
/// directive that did not land would turn the next `docker start` into a fresh start.
pub(crate) async fn place_directive(provider: &Provider, helper: &str, directive: &Directive) -> Result<(), Error> {
    let json = directive.to_json();
    let tar = private_files_tar(STATE_DIR, &[(DIRECTIVE_FILE, &json)]);
    provider.put_archive(helper, MOUNT, tar).await?;
    let back = provider.read_file(helper, &format!("{MOUNT}/{STATE_DIR}/{DIRECTIVE_FILE}")).await?;
    if back.as_deref() != Some(json.as_slice()) {
        return Err(ProviderError::Failed {
            provider: provider.name().to_string(),
            step: "write a directive into the container's directory".into(),
            detail: "the directive read back differs from the one written".into(),
        }
        .into());
    }
    Ok(())
}

/// A restore from the dump already in the container's checkpoint directory `migration` (a
/// rollback on the source, or heal).
pub(crate) fn local_restore_directive(container_dir: &str, migration: &str, criu: &CriuOptions) -> Directive {
    Directive {
        version: DIRECTIVE_VERSION,
        migration: migration.to_string(),
        images_dir: format!("{container_dir}/checkpoints/{migration}"),
        criu: criu.clone(),
        deadline_unix_ms: 0,
        io_timeout_ms: 30_000,
        action: Action::Restore(RestoreDirective {
            receive: None,
            peer_files: vec![],
            address_map: BTreeMap::new(),
            lazy_pages: false,
            rewrite_sockets: false,
            fault: None,
        }),
    }
}

/// How the source's runtime moves the memory and the stream (from the plan).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MemoryMoves {
    /// Post-copy: dump without the memory and serve the pages after the restore.
    pub lazy_pages: bool,
    /// The stream's compression.
    pub compression: StreamCompression,
    /// Pre-copy: the rounds' bounds.
    pub pre_copy: Option<PreCopy>,
}

/// One direct transfer in progress: the containers, their directories and helpers, and the
/// destination's `docker start` in flight.
pub(crate) struct DirectTransfer {
    pub src: Provider,
    pub dst: Provider,
    pub migration: String,
    pub src_id: String,
    pub dst_id: String,
    pub src_dir: String,
    pub dst_dir: String,
    pub src_helper: String,
    pub dst_helper: String,
    pub keys: TransferKeys,
    /// How many of the providers' call timeouts the destination's waiting start may last: 1,
    /// or with pre-copy one per round more (each round's transfer is bounded by it, and the
    /// rounds run while the destination waits).
    pub window: u32,
    start: Option<JoinHandle<Result<(), bollard::errors::Error>>>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl DirectTransfer {
    /// Creates the helper containers that give the broker the two container directories
    /// (`ids`: the source's and the destination's container; `serves`: the container's name).
    pub(crate) async fn prepare(
        (src, dst): (&Provider, &Provider),
        migration: &str,
        (src_id, dst_id): (&str, &str),
        image: &str,
        serves: &str,
        keys: TransferKeys,
    ) -> Result<(DirectTransfer, Vec<(Side, String)>), (Error, Vec<(Side, String)>)> {
        let mut made = Vec::new();
        let result = async {
            let src_dir = src.container_dir(src_id).await?;
            let dst_dir = dst.container_dir(dst_id).await?;
            let tag: String = dst_id.chars().take(12).collect();
            let src_helper = src
                .create_helper(&format!("vimigrate-helper-src-{tag}"), image, &src_dir, MOUNT, false, serves)
                .await?;
            made.push((Side::Source, src_helper.clone()));
            let dst_helper = dst
                .create_helper(&format!("vimigrate-helper-dst-{tag}"), image, &dst_dir, MOUNT, false, serves)
                .await?;
            made.push((Side::Destination, dst_helper.clone()));
            Ok::<_, Error>(DirectTransfer {
                src: src.clone(),
                dst: dst.clone(),
                migration: migration.to_string(),
                src_id: src_id.to_string(),
                dst_id: dst_id.to_string(),
                src_dir,
                dst_dir,
                src_helper,
                dst_helper,
                keys,
                window: 1,
                start: None,
            })
        }
        .await;
        match result {
            Ok(transfer) => Ok((transfer, made)),
            Err(e) => Err((e, made)),
        }
    }

    fn images_dir(dir: &str, migration: &str) -> String {
        format!("{dir}/checkpoints/{migration}")
    }

    fn deadline(provider: &Provider, window: u32) -> u64 {
        // The destination's `docker start` must return before the broker's own call times out.
        let window = Duration::from_secs(provider.timeout_secs().max(10) * u64::from(window)).mul_f64(0.8);
        unix_ms(SystemTime::now() + window)
    }

    /// How long the destination's waiting start, or pre-copy's rounds, may take.
    pub(crate) fn window_timeout(&self, provider: &Provider) -> Duration {
        Duration::from_secs(provider.timeout_secs().max(10) * u64::from(self.window))
    }

    /// A directive for one side of this migration.
    fn directive(&self, side: Side, criu: &CriuOptions, action: Action) -> Directive {
        let (dir, provider) = side.of(((&self.src_dir, &self.src), (&self.dst_dir, &self.dst)));
        Directive {
            version: DIRECTIVE_VERSION,
            migration: self.migration.clone(),
            images_dir: Self::images_dir(dir, &self.migration),
            criu: criu.clone(),
            deadline_unix_ms: Self::deadline(provider, self.window),
            io_timeout_ms: io_timeout_ms(&self.src, &self.dst),
            action,
        }
    }

    /// The runtime's status on one side, if it wrote one for this migration.
    pub(crate) async fn status(&self, side: Side) -> Option<RuntimeStatus> {
        let (provider, helper) = side.of(((&self.src, &self.src_helper), (&self.dst, &self.dst_helper)));
        let bytes = provider.read_file(helper, &format!("{MOUNT}/{STATE_DIR}/{STATUS_FILE}")).await.ok()??;
        let status: RuntimeStatus = serde_json::from_slice(&bytes).ok()?;
        (status.migration == self.migration).then_some(status)
    }

    /// The error a failed side reported, if it did.
    pub(crate) async fn reported_failure(&self, side: Side) -> Option<Error> {
        let status = self.status(side).await?;
        let failure = status.error?;
        let provider = side.of((self.src.name(), self.dst.name()));
        Some(
            RuntimeStepError {
                provider: provider.to_string(),
                step: failure.step,
                message: failure.message,
                retryable: failure.retryable,
            }
            .into(),
        )
    }

    /// Arms the destination: its directive, then `docker start` in the background, until its
    /// runtime listens. Returns the port.
    pub(crate) async fn arm_destination(
        &mut self,
        criu: &CriuOptions,
        peer_files: &[String],
        address_map: &BTreeMap<String, String>,
        lazy_pages: bool,
        rewrite_sockets: bool,
        fault: Option<Fault>,
    ) -> Result<u16, Error> {
        let directive = self.directive(
            Side::Destination,
            criu,
            Action::Restore(RestoreDirective {
                receive: Some(ReceiveFrom {
                    listen: format!("0.0.0.0:{}", self.dst.transfer_port()),
                    token: self.keys.token.clone(),
                    cert: self.keys.cert_b64.clone(),
                    key: self.keys.key_b64.clone(),
                }),
                peer_files: peer_files.to_vec(),
                address_map: address_map.clone(),
                lazy_pages,
                rewrite_sockets,
                fault,
            }),
        );
        place_directive(&self.dst, &self.dst_helper, &directive).await?;
        let docker = self.dst.docker().clone().with_timeout(self.window_timeout(&self.dst));
        let id = self.dst_id.clone();
        self.start =
            Some(tokio::spawn(async move { docker.start_container(&id, None::<StartContainerOptions>).await }));
        let waited = Instant::now();
        let limit = Duration::from_secs(self.dst.timeout_secs().clamp(10, 60));
        loop {
            if let Some(status) = self.status(Side::Destination).await {
                match status.state {
                    RuntimeState::Listening | RuntimeState::Received => {
                        if let Some(port) = status.port {
                            return Ok(port);
                        }
                    }
                    RuntimeState::Failed => {
                        return Err(self.reported_failure(Side::Destination).await.unwrap_or_else(|| {
                            self.destination_failed("start the receiving runtime", "it failed without saying why")
                        }))
                    }
                    _ => {}
                }
            }
            if self.start.as_ref().is_some_and(JoinHandle::is_finished) {
                return Err(match self.await_start().await {
                    Err(e) => e,
                    Ok(()) => self.destination_failed(
                        "start the receiving runtime",
                        "the container started without waiting for the transfer (was it created under the `vimigrate` runtime?)",
                    ),
                });
            }
            if waited.elapsed() > limit {
                return Err(self.destination_failed(
                    "start the receiving runtime",
                    format!("no status after {} s", limit.as_secs()),
                ));
            }
            tokio::time::sleep(STATUS_POLL).await;
        }
    }

    /// The destination's runtime did not do what its directive asked.
    fn destination_failed(&self, step: &str, detail: impl Into<String>) -> Error {
        ProviderError::Failed { provider: self.dst.name().to_string(), step: step.to_string(), detail: detail.into() }
            .into()
    }

    /// Arms the source: where to send, what the destination has of the layer already, how the
    /// memory goes.
    pub(crate) async fn arm_source(
        &self,
        address: String,
        criu: &CriuOptions,
        baseline: Vec<BaselineEntry>,
        volumes: Vec<String>,
        fault: Option<Fault>,
        memory: MemoryMoves,
    ) -> Result<(), Error> {
        let directive = self.directive(
            Side::Source,
            criu,
            Action::Dump(DumpDirective {
                send: Some(SendTo { address, token: self.keys.token.clone(), server_cert: self.keys.cert_b64.clone() }),
                baseline,
                excluded: volumes.clone(),
                volumes,
                fault,
                lazy_pages: memory.lazy_pages,
                compression: memory.compression,
                pre_copy: memory.pre_copy,
            }),
        );
        place_directive(&self.src, &self.src_helper, &directive).await
    }

    /// Pre-copy's rounds on the source while the service runs (see the runtime's
    /// `pre_copy.rs`): a probe container's `create` pre-dumps the source container and streams
    /// each round to the destination's receiver, which waits for the dump afterwards. Returns
    /// what the rounds did; an error means nothing froze and the chain is not to be used.
    pub(crate) async fn run_pre_copy(
        &self,
        address: String,
        criu: &CriuOptions,
        bounds: PreCopy,
        compression: StreamCompression,
    ) -> Result<PreCopyRounds, Error> {
        let directive = self.directive(
            Side::Source,
            criu,
            Action::PreCopy(PreCopyDirective {
                container: self.src_id.clone(),
                send: SendTo { address, token: self.keys.token.clone(), server_cert: self.keys.cert_b64.clone() },
                bounds,
                compression,
            }),
        );
        let json = directive.to_json();
        let answer = format!("{STATE_DIR}/{STATUS_FILE}");
        let rounds_may_take = Some(self.window_timeout(&self.src));
        let probe =
            self.src.run_runtime_probe("pre-copy", &[(DIRECTIVE_FILE, &json)], &answer, rounds_may_take).await?;
        let probe: Option<RuntimeStatus> = probe.and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let record = self.src.read_file(&self.src_helper, &format!("{MOUNT}/{STATE_DIR}/{PRE_COPY_FILE}")).await?;
        let rounds: Option<PreCopyRounds> = record.and_then(|bytes| serde_json::from_slice(&bytes).ok());
        if let Some(rounds) = rounds.as_ref().filter(|r| r.migration == self.migration && r.error.is_none()) {
            if rounds.last.is_some() {
                return Ok(rounds.clone());
            }
        }
        let failure = rounds
            .filter(|r| r.migration == self.migration)
            .and_then(|r| r.error)
            .or_else(|| probe.and_then(|status| status.error))
            .unwrap_or_else(|| {
                RuntimeFailure::new(
                    "pre-copy",
                    "the runtime left no record of the rounds (is it older than this engine?)",
                    false,
                )
            });
        Err(RuntimeStepError {
            provider: self.src.name().to_string(),
            step: failure.step,
            message: failure.message,
            retryable: failure.retryable,
        }
        .into())
    }

    /// Waits for the destination's `docker start`: `Ok` once the runtime restored it.
    pub(crate) async fn await_start(&mut self) -> Result<(), Error> {
        let Some(task) = self.start.take() else { return Ok(()) };
        let result = match task.await {
            Ok(result) => result,
            Err(join) => {
                return Err(self.destination_failed(
                    "start the destination container",
                    format!("the call did not complete: {join}"),
                ));
            }
        };
        match result {
            Ok(()) => Ok(()),
            Err(source) => {
                // The runtime's own report says which step failed; Docker's message is the
                // fallback.
                if let Some(reported) = self.reported_failure(Side::Destination).await {
                    return Err(reported);
                }
                Err(ProviderError::Api {
                    provider: self.dst.name().to_string(),
                    step: format!("start container {} restoring from the transfer", self.dst_id),
                    source,
                }
                .into())
            }
        }
    }

    /// The transfer connection's longest silence, as both runtimes were told (ms).
    pub(crate) fn io_timeout_ms(&self) -> u64 {
        io_timeout_ms(&self.src, &self.dst)
    }

    /// Whether the destination's start is still in flight.
    pub(crate) fn destination_starting(&self) -> bool {
        self.start.is_some()
    }

    /// Withdraws the destination's directive and waits (bounded) for its start call to end, so
    /// that the container can be removed.
    pub(crate) async fn withdraw_destination(&mut self) {
        let tar = private_files_tar(STATE_DIR, &[(ABORT_FILE, b"")]);
        if let Err(e) = self.dst.put_archive(&self.dst_helper, MOUNT, tar).await {
            tracing::warn!(error = %e.report(), "could not withdraw the destination's directive");
        }
        if let Some(task) = self.start.take() {
            let waited = tokio::time::timeout(Duration::from_secs(30), task).await;
            if waited.is_err() {
                tracing::warn!("the destination's start call did not end within 30 s of the withdrawal");
            }
        }
    }

    /// Restores the source from the dump it kept, through its runtime (a local restore
    /// directive and a plain `docker start`).
    pub(crate) async fn restore_source_locally(&self, criu: &CriuOptions) -> Result<(), Error> {
        let directive = local_restore_directive(&self.src_dir, &self.migration, criu);
        place_directive(&self.src, &self.src_helper, &directive).await?;
        self.src
            .docker()
            .start_container(&self.src_id, None::<StartContainerOptions>)
            .await
            .map_err(self.src.api_error(format!("restore container {} from its own dump", self.src_id)))
    }
}
