//! `vimigrate-protocol`: the contract between the broker (`vimigrate-core`) and
//! `vimigrate-runtime`, the OCI runtime wrapper on every provider host; plain data and pure
//! functions, serde only, so that the binary dockerd execs on every host builds without the
//! engine (bollard, tokio, reqwest, hickory, rcgen).
//!
//! # The direct migration path
//!
//! Docker's checkpoint API moves the images through containerd's content store, twice in each
//! direction (60-75 MB/s each way, 23-26 s of downtime for 500 MiB). On the direct path Docker
//! still drives every step (`docker checkpoint create` on the source, `docker start` on the
//! destination), but the runtime it calls is `vimigrate-runtime`, which finds a *directive* for
//! the container ([`Directive`]) and turns the call into a dump streamed straight to the
//! destination host, or into a restore from what arrived. The container stays under Docker's
//! management throughout: `docker ps`, `logs`, `stop` and the next migration work as for any
//! container.
//!
//! The broker's files live in the container's own directory on its host,
//! `<DockerRootDir>/containers/<id>/`[`STATE_DIR`]`/`, so that they disappear with the
//! container. The broker writes the directive (and reads the [`RuntimeStatus`]) through a helper
//! container that bind-mounts that directory; the wrapper finds the directory from the
//! container's OCI spec (the source of its `/etc/hostname` mount). The wrapper deletes a
//! directive as soon as it acts on it, so a later plain `docker start` never replays a restore.
//!
//! Versions: the directive format is [`DIRECTIVE_VERSION`] 1 (a wrapper refuses any other); the
//! host-to-host stream inside TLS is version 1 of `vimigrate-runtime`'s `wire` module (magic
//! `VMGR`, a hello carrying the token, entries, `Done`, a verdict). One migration, in order:
//!
//! ```mermaid
//! sequenceDiagram
//!     participant B as broker (vimigrate-core)
//!     participant DA as source dockerd
//!     participant RA as source vimigrate-runtime
//!     participant DB as destination dockerd
//!     participant RB as destination vimigrate-runtime
//!     Note over B: preflight, image, destination container created, first layer copy (service runs)
//!     B->>DB: helper: write directive.json (Restore, receive: listen, token, cert, key)
//!     B->>DB: POST /containers/{dst}/start (in the background)
//!     DB->>RB: runc create
//!     RB->>RB: prepare the network namespace, listen (TLS, this migration's certificate)
//!     RB-->>B: status.json: listening, port
//!     B->>DA: helper: write directive.json (Dump, send: address, token, pinned certificate, layer baseline, volumes)
//!     Note over B,RB: the freeze starts here
//!     B->>DA: POST /containers/{src}/checkpoints (the runtime's own checkpoint name + ".docker")
//!     DA->>RA: runc checkpoint
//!     RA->>RB: TLS: hello(token) then layer delta, volumes, page images as CRIU writes them (BLAKE3 per file), Done
//!     RB-->>RA: verdict: every checksum matched
//!     RA-->>B: status.json: dumped (stats, CRIU's stats-dump)
//!     RB->>RB: rewrite peer files, runc restore (joins the prepared netns), gratuitous ARP
//!     RB-->>DB: create returns; runc start is a no-op
//!     DB-->>B: start returns: the service answers again
//!     Note over B,RB: the freeze ends here
//!     B->>RB: read status.json: restored (stats, CRIU's stats-restore)
//!     B->>DA: remove the checkpoint and the source container; helpers go
//! ```
//!
//! A rollback writes [`ABORT_FILE`] next to a destination's directive still waiting, removes that
//! container, and restores the source from the dump it kept: a local [`Action::Restore`]
//! directive (no `receive`) and a plain `docker start` on the source.

pub mod address_rewrite;
pub mod criu_sockets;
pub mod criu_stats;
pub mod directive;
pub mod error_chain;
pub mod host_facts;
mod protobuf;
pub mod rfc3339;
pub mod secret;
pub mod status;

pub use address_rewrite::rewrite_addresses;
pub use criu_sockets::{rewrite_socket_addresses, socket_addresses, SocketAddresses, SocketRewrite, FILES_IMAGE};
pub use criu_stats::{
    parse_dump_stats, parse_restore_stats, CriuImageError, DumpStats, RestoreStats, DUMP_STATS_FILE, RESTORE_STATS_FILE,
};
pub use directive::{
    Action, BaselineEntry, CriuOptions, Directive, DumpDirective, Fault, PreCopy, PreCopyDirective, ReceiveFrom,
    RestoreDirective, SendTo, StreamCompression, TcpMode,
};
pub use error_chain::error_chain;
pub use host_facts::{
    CriuFacts, HostFacts, COMPRESSION, FACTS_FILE, FACTS_REQUEST_FILE, FACTS_VERSION, HOLDS_RESTORE_ADDRESSES,
    POST_COPY, PRE_COPY, RUNTIME_FEATURES,
};
pub use secret::Secret;
pub use status::{PreCopyRounds, RuntimeFailure, RuntimeState, RuntimeStats, RuntimeStatus};

/// The version of the directive format; a wrapper refuses any other.
pub const DIRECTIVE_VERSION: u32 = 1;
/// The name under which provider hosts register `vimigrate-runtime` with dockerd
/// (`"runtimes": {"vimigrate": {"path": "/usr/local/bin/vimigrate-runtime"}}` in daemon.json).
pub const RUNTIME_NAME: &str = "vimigrate";
/// The wrapper's directory inside a container's directory.
pub const STATE_DIR: &str = "vimigrate";
/// The directive, in [`STATE_DIR`].
pub const DIRECTIVE_FILE: &str = "directive.json";
/// The wrapper's report, in [`STATE_DIR`].
pub const STATUS_FILE: &str = "status.json";
/// Post-copy: the destination's page fetcher's report (a [`RuntimeStatus`]: `dumped` once every
/// page arrived, `failed` when they stopped coming), in [`STATE_DIR`]. Apart from
/// [`STATUS_FILE`], which the restore writes, because the fetch outlives the restore.
pub const PAGES_STATUS_FILE: &str = "pages-status.json";
/// Pre-copy's rounds' report ([`PreCopyRounds`]), in the pre-dumped container's [`STATE_DIR`].
pub const PRE_COPY_FILE: &str = "precopy.json";
/// Written by the broker next to a directive a wrapper waits on, to withdraw it (a rollback).
pub const ABORT_FILE: &str = "abort";
/// Left by a restore in [`STATE_DIR`] for the `start` call that follows it: with it there, the
/// wrapper answers `start` without running runc's.
pub const RESTORED_MARK: &str = "restored";

/// The mark of a post-copy dump in [`STATE_DIR`]: the images of checkpoint `migration` hold no
/// memory (the pages stayed in the frozen processes), so nothing is ever restored from them.
pub fn lazy_dump_mark(migration: &str) -> String {
    format!("lazy-dump-{migration}")
}
/// The per-container CRIU configuration the wrapper writes before each dump or restore, in
/// [`STATE_DIR`]; runc hands it to CRIU through the `org.criu.config` annotation instead of the
/// host-wide `/etc/criu/runc.conf`, so two migrations on one host never share CRIU options.
pub const CRIU_CONF_FILE: &str = "criu.conf";
/// The OCI annotation runc reads to find a container's CRIU configuration file.
pub const CRIU_CONFIG_ANNOTATION: &str = "org.criu.config";
