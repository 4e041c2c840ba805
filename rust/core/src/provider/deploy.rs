//! Creating and starting a container from a [`ContainerSpec`], idempotently.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, EndpointIpamConfig, EndpointSettings, HostConfig,
    NetworkConnectRequest, NetworkingConfig, PortBinding,
};
use bollard::query_parameters::{CreateContainerOptionsBuilder, StartContainerOptions};
use serde::Serialize;

use crate::error::{Error, ProviderError};
use crate::provider::labels;
use crate::provider::spec::{ContainerSpec, NetworkAttachment};
use crate::provider::Provider;

/// A published port as the provider bound it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublishedPort {
    /// Port inside the container.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Address the provider bound on (`0.0.0.0` for all).
    pub host_ip: String,
    /// Port on the provider.
    pub host_port: u16,
}

/// A running container as it exists on a provider after deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeployedContainer {
    /// Docker's container id.
    pub id: String,
    /// Container name.
    pub name: String,
    /// The provider it runs on.
    pub provider: String,
    /// IPv4 address on each network it joined, by network name.
    pub addresses: BTreeMap<String, String>,
    /// Published ports.
    pub ports: Vec<PublishedPort>,
    /// Whether its main process is running.
    pub running: bool,
}

fn endpoint_settings(attachment: &NetworkAttachment) -> EndpointSettings {
    EndpointSettings {
        aliases: (!attachment.aliases.is_empty()).then(|| attachment.aliases.clone()),
        ipam_config: attachment
            .ipv4_address
            .as_ref()
            .map(|ip| EndpointIpamConfig { ipv4_address: Some(ip.clone()), ..Default::default() }),
        ..Default::default()
    }
}

fn create_body(spec: &ContainerSpec, runtime: Option<String>) -> ContainerCreateBody {
    let port_key = |p: &crate::provider::spec::PortSpec| format!("{}/{}", p.container_port, p.protocol.as_str());
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for port in &spec.ports {
        port_bindings.entry(port_key(port)).or_insert_with(|| Some(Vec::new())).get_or_insert_with(Vec::new).push(
            PortBinding { host_ip: None, host_port: Some(port.host_port.map(|p| p.to_string()).unwrap_or_default()) },
        );
    }
    // API 1.41 (Docker 20.10) accepts a single network at creation; the others are connected
    // before the start, so the process sees all of its interfaces from its first instruction.
    let first_network = spec.networks.first();
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        hostname: spec.hostname.clone(),
        labels: Some(labels::with_managed(&spec.labels)),
        working_dir: spec.working_dir.clone(),
        user: spec.user.clone(),
        exposed_ports: Some(spec.ports.iter().map(port_key).collect()),
        host_config: Some(HostConfig {
            port_bindings: Some(port_bindings),
            // Named volumes as binds: Docker creates a missing volume on the fly.
            binds: Some(
                spec.volumes
                    .iter()
                    .map(|v| format!("{}:{}:{}", v.name, v.destination, if v.read_only { "ro" } else { "rw" }))
                    .collect(),
            ),
            network_mode: first_network.map(|n| n.network.clone()),
            runtime,
            ..Default::default()
        }),
        networking_config: first_network.map(|n| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(n.network.clone(), endpoint_settings(n))])),
        }),
        ..Default::default()
    }
}

/// Reads addresses and bound ports out of an inspect response.
fn deployed_from(provider: &str, inspect: ContainerInspectResponse) -> DeployedContainer {
    let settings = inspect.network_settings.unwrap_or_default();
    let addresses = settings
        .networks
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(net, ep)| ep.ip_address.filter(|ip| !ip.is_empty()).map(|ip| (net, ip)))
        .collect();
    let mut ports: Vec<PublishedPort> = settings
        .ports
        .unwrap_or_default()
        .into_iter()
        .flat_map(|(key, bindings)| {
            let (port, protocol) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
            let container_port = port.parse().unwrap_or(0);
            let protocol = protocol.to_string();
            bindings.unwrap_or_default().into_iter().filter_map(move |b| {
                Some(PublishedPort {
                    container_port,
                    protocol: protocol.clone(),
                    host_ip: b.host_ip.unwrap_or_default(),
                    host_port: b.host_port?.parse().ok()?,
                })
            })
        })
        .collect();
    ports.sort_by(|a, b| (a.container_port, &a.host_ip).cmp(&(b.container_port, &b.host_ip)));
    DeployedContainer {
        id: inspect.id.unwrap_or_default(),
        name: inspect.name.unwrap_or_default().trim_start_matches('/').to_string(),
        provider: provider.to_string(),
        addresses,
        ports,
        running: inspect.state.and_then(|s| s.running).unwrap_or(false),
    }
}

impl Provider {
    /// Creates and starts the container, or returns it as it is when vimigrate already created
    /// it from a spec with the same labels (starting it if it was stopped). A same-named
    /// container that vimigrate does not manage, or that carries other labels (another
    /// deployment's), is left alone and reported as a conflict.
    pub async fn deploy_container(&self, spec: &ContainerSpec) -> Result<DeployedContainer, Error> {
        spec.validate()?;
        let existing = self.inspect_container_raw(&spec.name).await?;
        let created_now = existing.is_none();
        match existing {
            Some(found) => {
                let found_labels = found.config.as_ref().and_then(|c| c.labels.as_ref());
                let reason = if !labels::is_managed(found_labels) {
                    Some(labels::NOT_MANAGED)
                } else if !labels::includes(found_labels, &spec.labels) {
                    Some("was created for another owner (its labels differ)")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    return Err(ProviderError::NameTaken {
                        provider: self.name().to_string(),
                        what: "container",
                        name: spec.name.clone(),
                        reason,
                    }
                    .into());
                }
            }
            None => {
                // Every network must be there before anything is created: Docker only notices a
                // missing one when the container starts.
                for (i, attachment) in spec.networks.iter().enumerate() {
                    let builtin = matches!(attachment.network.as_str(), "bridge" | "host" | "none");
                    if !builtin && self.inspect_network(&attachment.network).await?.is_none() {
                        return Err(crate::error::InputError::new(
                            format!("networks[{i}].network"),
                            format!("a network that exists on {}", self.name()),
                            &attachment.network,
                        )
                        .into());
                    }
                }
                // Under vimigrate-runtime when the provider has it: such a container later
                // migrates by the direct path.
                let info = self.docker().info().await.map_err(self.api_error("read system info"))?;
                let runtime = info
                    .runtimes
                    .unwrap_or_default()
                    .contains_key(vimigrate_protocol::RUNTIME_NAME)
                    .then(|| vimigrate_protocol::RUNTIME_NAME.to_string());
                let options = CreateContainerOptionsBuilder::default().name(&spec.name).build();
                self.docker()
                    .create_container(Some(options), create_body(spec, runtime))
                    .await
                    .map_err(self.api_error(format!("create container `{}`", spec.name)))?;
                for attachment in spec.networks.iter().skip(1) {
                    let request = NetworkConnectRequest {
                        container: spec.name.clone(),
                        endpoint_config: Some(endpoint_settings(attachment)),
                    };
                    self.docker().connect_network(&attachment.network, request).await.map_err(
                        self.api_error(format!(
                            "connect container `{}` to network `{}`",
                            spec.name, attachment.network
                        )),
                    )?;
                }
            }
        }
        let started = self.docker().start_container(&spec.name, None::<StartContainerOptions>).await;
        if let Err(e) = started {
            // 304 "already started" is the idempotent case; anything else leaves no half-made
            // container behind when this call created it.
            let already_running =
                matches!(e, bollard::errors::Error::DockerResponseServerError { status_code: 304, .. });
            if !already_running {
                if created_now {
                    if let Err(cleanup) = self.remove_container(&spec.name).await {
                        tracing::warn!(container = %spec.name, error = %cleanup.report(), "cleanup after failed start");
                    }
                }
                return Err(self.api_error(format!("start container `{}`", spec.name))(e));
            }
        }
        self.inspect_deployed(&spec.name).await?.ok_or_else(|| {
            ProviderError::Failed {
                provider: self.name().to_string(),
                step: format!("start container `{}`", spec.name),
                detail: "the container vanished right after it started".into(),
            }
            .into()
        })
    }

    /// The container called `name` with its addresses and ports, or `None` if there is none.
    pub async fn inspect_deployed(&self, name: &str) -> Result<Option<DeployedContainer>, Error> {
        Ok(self.inspect_container_raw(name).await?.map(|c| deployed_from(self.name(), c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::spec::{PortSpec, Protocol};

    #[test]
    fn create_body_maps_ports_networks_and_labels() {
        let spec = ContainerSpec {
            ports: vec![
                PortSpec { container_port: 8080, host_port: Some(80), protocol: Protocol::Tcp },
                PortSpec { container_port: 53, host_port: None, protocol: Protocol::Udp },
            ],
            networks: vec![
                NetworkAttachment { network: "front".into(), aliases: vec!["www".into()], ipv4_address: None },
                NetworkAttachment { network: "back".into(), aliases: vec![], ipv4_address: Some("10.1.0.5".into()) },
            ],
            ..serde_json::from_value(serde_json::json!({"name": "web", "image": "img"})).unwrap()
        };
        let body = create_body(&spec, None);
        let host = body.host_config.unwrap();
        assert_eq!(host.network_mode.as_deref(), Some("front"));
        let bindings = host.port_bindings.unwrap();
        assert_eq!(bindings["8080/tcp"].as_ref().unwrap()[0].host_port.as_deref(), Some("80"));
        assert_eq!(bindings["53/udp"].as_ref().unwrap()[0].host_port.as_deref(), Some(""));
        let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(endpoints.len(), 1, "API 1.41 takes one network at creation");
        assert_eq!(endpoints["front"].aliases.as_deref(), Some(&["www".to_string()][..]));
        assert_eq!(body.labels.unwrap()[labels::MANAGED_LABEL], "true");
    }
}
