//! vimigrate's engine.
//!
//! vimigrate moves a running virtual infrastructure (containers, their networks, published ports
//! and DNS names) from one IaaS provider to another by checkpoint/restore. This crate holds all of
//! the logic and has no Python dependency: the pyo3 shim in `rust/python` only converts arguments
//! and errors, and the Cloudify plugin only reads its context and calls the shim.
//!
//! A provider is a Docker Engine reachable through its API ([`ProviderConfig`]); everything the
//! engine does to it goes through [`Provider`].

pub mod checkpoint;
pub mod dns;
mod error;
pub mod migration;
pub mod network;
pub mod provider;
mod serde_strict;
mod shapes;
pub mod transfer;

pub use checkpoint::criu_options::CriuTcp;
pub use checkpoint::criu_probe::CriuCheck;
pub use dns::error::DnsError;
pub use dns::record::{DnsRecord, RecordType, MAX_TTL};
pub use dns::server::{DnsServerConfig, PowerDnsConfig, Rfc2136Config};
pub use dns::{apply as dns_apply, lookup as dns_lookup, plan as dns_plan, RecordChange};
pub use error::{
    error_chain, Error, ErrorKind, InputError, IntegrityError, PortTaken, ProviderError, RuntimeStepError,
};
pub use migration::heal::{heal, heal_with, HealOptions, HealReport};
pub use migration::source::VolumeMount;
pub use migration::{
    migrate, migrate_group, plan_group, plan_migration, Forwarding, GroupError, GroupMember, GroupPlan, GroupReport,
    GroupStats, MemberOutcome, Method, MigrationError, MigrationOptions, MigrationPlan, MigrationReport,
    MigrationStats, Phase, PlannedPath, ProgressEvent, Rollback,
};
pub use network::map::{AddressMode, NetworkDecision};
pub use network::{NetworkInfo, NetworkSpec};
pub use provider::config::{Endpoint, ProviderConfig, TlsFiles};
pub use provider::deploy::{DeployedContainer, PublishedPort};
pub use provider::image::{ensure_image, image_platform, ImageTransfer};
pub use provider::labels::MANAGED_LABEL;
pub use provider::probe::ProviderReport;
pub use provider::spec::{ContainerSpec, NetworkAttachment, PortSpec, Protocol, VolumeSpec};
pub use provider::Provider;
pub use shapes::shapes;
pub use transfer::archive::{copy_archive, read_manifest, verify_copy, CopyReport};
pub use transfer::tar::manifest::{Entry, TarManifest, CAPTURE_LIMIT};
pub use transfer::tar::reader::TarManifestBuilder;

pub use vimigrate_protocol as protocol;
pub use vimigrate_protocol::{
    parse_dump_stats, parse_restore_stats, rewrite_addresses, rfc3339, DumpStats, RestoreStats, Secret,
    DUMP_STATS_FILE, RESTORE_STATS_FILE,
};

/// The version of this engine, as built.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
