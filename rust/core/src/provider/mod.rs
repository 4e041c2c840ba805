//! A provider: one Docker Engine reached through its API. This module owns the connection
//! ([`config`]: how a user writes where it is; [`Provider`]: the negotiated client), what the
//! provider is ([`probe`]), and everything the engine does to it that is not a migration
//! step of its own: the labels on what vimigrate creates ([`labels`]), finding and removing
//! containers (`container.rs`), deploying one from a spec ([`spec`], [`deploy`]), single files
//! through the archive endpoints ([`files`]), never-started helper containers (`helper.rs`),
//! the host's own facts as its vimigrate-runtime reads them ([`host_facts`]),
//! and images moved between providers ([`image`]). One definition of where a daemon keeps a
//! container's directory lives here too.

pub mod config;
pub(crate) mod container;
pub mod deploy;
pub mod files;
pub(crate) mod helper;
pub mod host_facts;
pub mod image;
pub mod labels;
pub mod probe;
pub mod spec;

use bollard::Docker;

use crate::error::{Error, InputError, ProviderError};
use crate::provider::config::{Endpoint, ProviderConfig};

/// One provider: a Docker Engine reached through its API, with the API version negotiated.
///
/// Cheap to clone: clones share the underlying HTTP client.
#[derive(Debug, Clone)]
pub struct Provider {
    name: String,
    endpoint: Endpoint,
    public_address: Option<String>,
    transfer_address: Option<String>,
    transfer_port: u16,
    timeout_secs: u64,
    docker: Docker,
    /// The host's facts once read, shared by clones (see [`Provider::host_facts`]).
    facts: host_facts::FactsCache,
}

impl Provider {
    /// Validates `config`, connects and negotiates the API version with the daemon
    /// (Docker 20.10 speaks at most 1.41, older than the client's default).
    pub async fn connect(config: &ProviderConfig) -> Result<Provider, Error> {
        let endpoint = config.endpoint()?;
        if let Endpoint::Tcp { tls: Some(tls), .. } = &endpoint {
            // The TLS stack reads these only during the handshake, where a missing client
            // certificate shows up as the server's "bad certificate": check them first.
            for (field, path) in [("tls.ca", &tls.ca), ("tls.cert", &tls.cert), ("tls.key", &tls.key)] {
                if let Err(e) = std::fs::File::open(path) {
                    return Err(
                        InputError::new(field, "a readable PEM file", format!("{} ({e})", path.display())).into()
                    );
                }
            }
        }
        let connect_error =
            |source| ProviderError::Connect { provider: config.name.clone(), endpoint: endpoint.to_string(), source };
        let version = bollard::API_DEFAULT_VERSION;
        let docker = match &endpoint {
            Endpoint::Unix(path) => Docker::connect_with_unix(&path.to_string_lossy(), config.timeout_secs, version),
            Endpoint::Tcp { address, tls: Some(tls) } => {
                Docker::connect_with_ssl(address, &tls.key, &tls.cert, &tls.ca, config.timeout_secs, version)
            }
            Endpoint::Tcp { address, tls: None } => Docker::connect_with_http(address, config.timeout_secs, version),
        }
        .map_err(connect_error)?;
        let docker = docker.negotiate_version().await.map_err(connect_error)?;
        tracing::debug!(provider = %config.name, %endpoint, api = %docker.client_version(), "connected");
        Ok(Provider {
            name: config.name.clone(),
            endpoint,
            public_address: config.public_address.clone(),
            transfer_address: config.transfer_address.clone().or_else(|| config.public_address.clone()),
            transfer_port: config.transfer_port,
            timeout_secs: config.timeout_secs,
            docker,
            facts: host_facts::FactsCache::default(),
        })
    }

    /// The provider's name, as configured.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The endpoint this provider was reached at.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The provider's public address, where published ports answer, if configured.
    pub fn public_address(&self) -> Option<&str> {
        self.public_address.as_deref()
    }

    /// Where another provider's host reaches this one for a direct transfer
    /// (`transfer_address`, else `public_address`).
    pub fn transfer_address(&self) -> Option<&str> {
        self.transfer_address.as_deref()
    }

    /// The port this host receives direct transfers on (0: any free port).
    pub fn transfer_port(&self) -> u16 {
        self.transfer_port
    }

    /// Seconds a single API call may take.
    pub fn timeout_secs(&self) -> u64 {
        self.timeout_secs
    }

    /// The negotiated Docker API version, e.g. `1.41`.
    pub fn api_version(&self) -> String {
        self.docker.client_version().to_string()
    }

    /// The Docker client, for the engine's own modules.
    pub(crate) fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Wraps a Docker error with this provider's name and the step that failed.
    pub(crate) fn api_error(&self, step: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Error + '_ {
        let step = step.into();
        move |source| ProviderError::Api { provider: self.name.clone(), step, source }.into()
    }

    /// The daemon's root directory (`DockerRootDir`), where it keeps every container's directory.
    pub(crate) async fn docker_root_dir(&self) -> Result<String, Error> {
        let info = self.docker().info().await.map_err(self.api_error("read system info"))?;
        info.docker_root_dir.filter(|r| !r.is_empty()).map(|r| r.trim_end_matches('/').to_string()).ok_or_else(|| {
            ProviderError::Failed {
                provider: self.name().to_string(),
                step: "read the Docker root directory".into(),
                detail: "GET /info reported no DockerRootDir".into(),
            }
            .into()
        })
    }

    /// Docker's directory of the container with the full id `id` on its host,
    /// `<DockerRootDir>/containers/<id>`, found without inspecting the container (an inspect
    /// waits for a start in progress).
    pub(crate) async fn container_dir_of_id(&self, id: &str) -> Result<String, Error> {
        Ok(format!("{}/containers/{id}", self.docker_root_dir().await?))
    }

    /// Docker's directory of `container` (a name or an id) on its host,
    /// `<DockerRootDir>/containers/<full id>`.
    pub(crate) async fn container_dir(&self, container: &str) -> Result<String, Error> {
        let inspect = self
            .docker()
            .inspect_container(container, None)
            .await
            .map_err(self.api_error(format!("inspect container `{container}`")))?;
        let id = inspect.id.filter(|id| !id.is_empty()).ok_or_else(|| ProviderError::Failed {
            provider: self.name().to_string(),
            step: format!("inspect container `{container}`"),
            detail: "Docker returned no container id".into(),
        })?;
        self.container_dir_of_id(&id).await
    }
}
