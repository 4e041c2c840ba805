//! What a provider is: versions, platform and the capabilities migration depends on.

use serde::Serialize;

use crate::error::Error;
use crate::provider::Provider;
use vimigrate_protocol::RUNTIME_NAME;

/// Facts about a provider's Docker Engine, read through its API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProviderReport {
    /// Provider name.
    pub name: String,
    /// The endpoint reached (no secret in it).
    pub endpoint: String,
    /// Docker Engine version, e.g. `20.10.24+dfsg1`.
    pub server_version: String,
    /// The API version negotiated for this connection.
    pub api_version: String,
    /// The oldest API version the daemon accepts.
    pub min_api_version: String,
    /// Operating system, e.g. `linux`.
    pub os: String,
    /// Architecture as Docker reports it, e.g. `amd64`.
    pub arch: String,
    /// Kernel version of the provider host.
    pub kernel_version: String,
    /// Whether the daemon runs in experimental mode (needed for checkpoint/restore).
    pub experimental: bool,
    /// The daemon's root directory (checkpoints are restored from under it).
    pub docker_root_dir: String,
    /// Containers running now.
    pub containers_running: i64,
    /// The provider's public address, if configured.
    pub public_address: Option<String>,
    /// OCI runtimes the daemon offers, sorted.
    pub runtimes: Vec<String>,
    /// Whether `vimigrate-runtime` is registered (as runtime `vimigrate`): containers running
    /// under it migrate by the direct path.
    pub vimigrate_runtime: bool,
    /// The daemon's default OCI runtime, e.g. `runc`.
    pub default_runtime: String,
    /// containerd's version, as the daemon reports its components (empty when it does not).
    pub containerd_version: String,
    /// runc's version, likewise.
    pub runc_version: String,
    /// `1` or `2`: the cgroup hierarchy the daemon uses (empty when it does not say).
    pub cgroup_version: String,
    /// `cgroupfs` or `systemd`.
    pub cgroup_driver: String,
    /// Where the engine keeps images and container layers: `containerd` (the containerd image
    /// store, Docker 29's default) or the graph driver's name (`overlay2`).
    pub image_store: String,
}

impl ProviderReport {
    /// The engine's major version (`28` of `28.5.2+dfsg4`), 0 when it cannot be read.
    pub fn engine_major(&self) -> u32 {
        self.server_version.split(['.', '+', '-']).next().and_then(|m| m.parse().ok()).unwrap_or(0)
    }
}

/// `containerd` when the daemon's driver status names a containerd snapshotter (its
/// `driver-type`, e.g. `io.containerd.snapshotter.v1`), else the graph driver's name.
fn image_store(driver: Option<&str>, status: Option<&[Vec<String>]>) -> String {
    let containerd = status.unwrap_or_default().iter().any(|pair| {
        pair.first().is_some_and(|k| k == "driver-type") && pair.get(1).is_some_and(|v| v.contains("containerd"))
    });
    if containerd {
        "containerd".to_string()
    } else {
        driver.unwrap_or_default().to_string()
    }
}

impl Provider {
    /// Reads the daemon's version and system information.
    pub async fn probe(&self) -> Result<ProviderReport, Error> {
        let version = self.docker().version().await.map_err(self.api_error("read version"))?;
        let info = self.docker().info().await.map_err(self.api_error("read system info"))?;
        let mut runtimes: Vec<String> = info.runtimes.clone().unwrap_or_default().into_keys().collect();
        runtimes.sort();
        let component = |name: &str| {
            let components = version.components.as_deref().unwrap_or_default();
            components.iter().find(|c| c.name.eq_ignore_ascii_case(name)).map(|c| c.version.clone()).unwrap_or_default()
        };
        let (containerd_version, runc_version) = (component("containerd"), component("runc"));
        Ok(ProviderReport {
            name: self.name().to_string(),
            endpoint: self.endpoint().to_string(),
            server_version: version.version.unwrap_or_default(),
            api_version: self.api_version(),
            min_api_version: version.min_api_version.unwrap_or_default(),
            os: version.os.unwrap_or_default(),
            arch: version.arch.unwrap_or_default(),
            kernel_version: version.kernel_version.unwrap_or_default(),
            experimental: version.experimental.or(info.experimental_build).unwrap_or(false),
            docker_root_dir: info.docker_root_dir.unwrap_or_default(),
            containers_running: info.containers_running.unwrap_or(0),
            public_address: self.public_address().map(str::to_string),
            vimigrate_runtime: runtimes.iter().any(|r| r == RUNTIME_NAME),
            runtimes,
            default_runtime: info.default_runtime.unwrap_or_default(),
            containerd_version,
            runc_version,
            cgroup_version: info.cgroup_version.map(|v| v.to_string()).unwrap_or_default(),
            cgroup_driver: info.cgroup_driver.map(|d| d.to_string()).unwrap_or_default(),
            image_store: image_store(info.driver.as_deref(), info.driver_status.as_deref()),
        })
    }
}
