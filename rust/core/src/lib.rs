//! vimigrate's engine.
//!
//! vimigrate moves a running virtual infrastructure (containers, their networks, published ports
//! and DNS names) from one IaaS provider to another by checkpoint/restore. This crate holds all of
//! the logic and has no Python dependency: the pyo3 shim in `rust/python` only converts arguments
//! and errors, and the Cloudify plugin only reads its context and calls the shim.
//!
//! A provider is a Docker Engine reachable through its API ([`ProviderConfig`]); everything the
//! engine does to it goes through [`Provider`].

mod archive;
mod checkpoint;
mod container_clone;
mod container_deploy;
mod container_files;
mod container_remove;
mod container_spec;
mod criu_probe;
mod direct_path;
mod dns_error;
mod dns_plan;
mod dns_powerdns;
mod dns_record;
mod dns_rfc2136;
mod dns_server;
mod dns_wire;
mod endpoint;
mod error;
mod heal;
mod helper_container;
mod image_transfer;
mod labels;
mod layer_sync;
mod migrate;
mod migration_lock;
mod network;
mod network_map;
mod probe;
mod provider;
mod strict;
mod tar_manifest;
mod tar_writer;

pub use archive::{copy_archive, read_manifest, verify_copy, CopyReport};
pub use container_clone::VolumeMount;
pub use container_deploy::{DeployedContainer, PublishedPort};
pub use container_files::CriuTcp;
pub use container_spec::{ContainerSpec, NetworkAttachment, PortSpec, Protocol, VolumeSpec};
pub use criu_probe::CriuCheck;
pub use dns_error::DnsError;
pub use dns_plan::{apply as dns_apply, lookup as dns_lookup, plan as dns_plan, RecordChange};
pub use dns_record::{DnsRecord, RecordType, MAX_TTL};
pub use dns_server::{DnsServerConfig, PowerDnsConfig, Rfc2136Config};
pub use endpoint::{Endpoint, ProviderConfig, TlsFiles};
pub use error::{
    error_chain, Error, ErrorKind, InputError, IntegrityError, PortTaken, ProviderError, RuntimeStepError,
};
pub use heal::{heal, HealReport};
pub use image_transfer::{ensure_image, image_platform, ImageTransfer};
pub use labels::MANAGED_LABEL;
pub use migrate::{
    migrate, Method, MigrationError, MigrationOptions, MigrationReport, MigrationStats, Phase, ProgressEvent, Rollback,
};
pub use network::{NetworkInfo, NetworkSpec};
pub use network_map::{AddressMode, NetworkDecision};
pub use probe::ProviderReport;
pub use provider::Provider;
pub use tar_manifest::{Entry, TarManifest, TarManifestBuilder, CAPTURE_LIMIT};

pub use vimigrate_protocol as protocol;
pub use vimigrate_protocol::{
    parse_dump_stats, parse_restore_stats, rewrite_addresses, rfc3339, DumpStats, RestoreStats, Secret,
    DUMP_STATS_FILE, RESTORE_STATS_FILE,
};
pub(crate) use vimigrate_protocol as runtime_directive;
pub(crate) use vimigrate_protocol::criu_stats;

/// The version of this engine, as built.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
