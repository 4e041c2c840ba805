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
mod container_deploy;
mod container_remove;
mod container_spec;
mod criu_probe;
mod criu_stats;
mod endpoint;
mod error;
mod image_transfer;
mod labels;
mod network;
mod probe;
mod provider;
mod tar_manifest;

pub use container_deploy::{DeployedContainer, PublishedPort};
pub use container_spec::{ContainerSpec, NetworkAttachment, PortSpec, Protocol};
pub use endpoint::{Endpoint, ProviderConfig, TlsFiles};
pub use error::{Error, ErrorKind, InputError, IntegrityError, ProviderError};
pub use labels::MANAGED_LABEL;
pub use network::{NetworkInfo, NetworkSpec};
pub use probe::ProviderReport;
pub use provider::Provider;

/// The version of this engine, as built.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
