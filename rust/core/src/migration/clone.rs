//! The destination container of a migration: created (never started) on the destination with
//! the source container's configuration, so that a checkpoint of the source restores into it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HostConfig, NetworkConnectRequest, NetworkingConfig,
};
use bollard::query_parameters::CreateContainerOptionsBuilder;
use vimigrate_protocol::rewrite_addresses;

use crate::error::{Error, InputError};
use crate::migration::source::{SourceContainer, SourceEndpoint};
use crate::network::map::NetworkDecision;
use crate::provider::Provider;

/// What the destination container changes from the source's configuration.
#[derive(Debug, Clone, Default)]
pub(crate) struct CloneChanges {
    /// Networks whose subnet the destination keeps: the container keeps its address there.
    pub preserved: BTreeSet<String>,
    /// Source host port -> destination host port, for published ports taken on the destination.
    pub port_map: BTreeMap<u16, u16>,
    /// Old peer address -> new, rewritten in environment values and extra hosts entries.
    pub address_map: BTreeMap<String, String>,
    /// The address decided for each remapped network (network -> IPv4 address), where a group
    /// decided it; elsewhere Docker picks.
    pub assigned: BTreeMap<String, String>,
    /// The OCI runtime the destination container runs under (`None`: the daemon's default).
    pub runtime: Option<String>,
}

impl SourceContainer {
    /// The create request for the destination: the source's configuration (command, entrypoint,
    /// environment, labels, hostname, working dir, user, resources, volumes, port bindings, ...)
    /// with what only made sense on the source host left out.
    pub(crate) fn clone_body(&self, changes: &CloneChanges) -> Result<ContainerCreateBody, Error> {
        let config = self.inspect.config.clone().unwrap_or_default();
        // ContainerConfig and the create body are the same JSON object in Docker's API: go
        // through JSON so that every field Docker reports is carried over, not just the ones
        // this code knows about.
        let value = serde_json::to_value(&config).map_err(|e| clone_error("config", e))?;
        let mut body: ContainerCreateBody = serde_json::from_value(value).map_err(|e| clone_error("config", e))?;
        body.image = Some(self.image.clone());
        let mut host: HostConfig = self.inspect.host_config.clone().unwrap_or_default();
        // Host-specific: a file path on the source host, and named-volume binds are kept while
        // host-path binds were refused by the preflight.
        host.container_id_file = None;
        host.runtime = changes.runtime.clone();
        host.binds = host.binds.map(|binds| binds.into_iter().filter(|b| !b.starts_with('/')).collect());
        if let Some(bindings) = host.port_bindings.as_mut() {
            for binding in bindings.values_mut().flatten().flatten() {
                let port = binding.host_port.as_deref().and_then(|p| p.parse::<u16>().ok());
                if let Some(new) = port.and_then(|p| changes.port_map.get(&p)) {
                    binding.host_port = Some(new.to_string());
                }
            }
        }
        if !changes.address_map.is_empty() {
            let rewrite = |values: Vec<String>| -> Vec<String> {
                values.into_iter().map(|v| rewrite_addresses(&v, &changes.address_map).0).collect()
            };
            body.env = body.env.map(rewrite);
            host.extra_hosts = host.extra_hosts.map(rewrite);
        }
        let first = self.networks.first();
        host.network_mode = match first {
            Some(ep) => Some(ep.network.clone()),
            None => host.network_mode,
        };
        body.host_config = Some(host);
        body.networking_config = first.map(|ep| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(ep.network.clone(), endpoint(ep, changes))])),
        });
        Ok(body)
    }
}

/// The destination endpoint: the same aliases, and the same address where the network keeps
/// its subnet (or the one a group decided where it does not).
fn endpoint(source: &SourceEndpoint, changes: &CloneChanges) -> EndpointSettings {
    let address = if changes.preserved.contains(&source.network) {
        source.ipv4.clone()
    } else {
        changes.assigned.get(&source.network).cloned()
    };
    EndpointSettings {
        aliases: (!source.aliases.is_empty()).then(|| source.aliases.clone()),
        ipam_config: address.map(|ip| EndpointIpamConfig { ipv4_address: Some(ip), ..Default::default() }),
        ..Default::default()
    }
}

fn clone_error(part: &str, err: serde_json::Error) -> Error {
    InputError::new(format!("source container {part}"), "a configuration Docker can recreate", err.to_string()).into()
}

impl Provider {
    /// Creates, without starting it, the destination container for `source`, with the same name
    /// and configuration (as `changes` adapt it), joined to its networks, which are created here
    /// as `decisions` say when missing. Returns its id.
    pub(crate) async fn create_clone(
        &self,
        source: &SourceContainer,
        decisions: &[NetworkDecision],
        changes: &CloneChanges,
    ) -> Result<String, Error> {
        for network in decisions.iter().filter_map(|d| d.create.as_ref()) {
            self.ensure_network(network).await?;
        }
        let options = CreateContainerOptionsBuilder::default().name(&source.name).build();
        let created =
            self.docker().create_container(Some(options), source.clone_body(changes)?).await.map_err(
                self.api_error(format!("create container `{}` as the migration's destination", source.name)),
            )?;
        for ep in source.networks.iter().skip(1) {
            let request =
                NetworkConnectRequest { container: created.id.clone(), endpoint_config: Some(endpoint(ep, changes)) };
            let connected = self.docker().connect_network(&ep.network, request).await;
            if let Err(e) = connected {
                // The caller only learns the id on success: a half-made destination goes here.
                if let Err(cleanup) = self.force_remove(&created.id).await {
                    tracing::warn!(error = %cleanup.report(), "half-made destination container left; heal removes it");
                }
                let step = format!("connect container `{}` to network `{}`", source.name, ep.network);
                return Err(self.api_error(step)(e));
            }
        }
        Ok(created.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::source::tests::inspect;

    #[test]
    fn clone_keeps_the_configuration_and_drops_host_specifics() {
        let changes = CloneChanges {
            preserved: BTreeSet::from(["app".to_string()]),
            port_map: BTreeMap::from([(8080, 18080)]),
            address_map: BTreeMap::from([("10.0.0.9".to_string(), "10.1.0.9".to_string())]),
            assigned: BTreeMap::new(),
            runtime: Some("vimigrate".to_string()),
        };
        let body = SourceContainer::from_inspect(inspect()).clone_body(&changes).unwrap();
        assert_eq!(body.hostname.as_deref(), Some("web"));
        assert_eq!(body.cmd, Some(vec!["/web".to_string()]));
        assert_eq!(body.working_dir.as_deref(), Some("/srv"));
        assert_eq!(body.user.as_deref(), Some("1000"));
        assert_eq!(body.env, Some(vec!["A=1".to_string(), "PEER=10.1.0.9:6379".to_string()]));
        let host = body.host_config.unwrap();
        assert_eq!(host.runtime.as_deref(), Some("vimigrate"));
        assert_eq!(host.memory, Some(268435456));
        assert_eq!(host.nano_cpus, Some(500000000));
        assert_eq!(host.binds, Some(vec!["data:/data".to_string()]));
        assert_eq!(host.container_id_file, None);
        assert_eq!(host.network_mode.as_deref(), Some("app"));
        assert_eq!(host.port_bindings.unwrap()["8080/tcp"].as_ref().unwrap()[0].host_port.as_deref(), Some("18080"));
        let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
        assert_eq!(endpoints["app"].aliases, Some(vec!["web".to_string()]));
        assert_eq!(endpoints["app"].ipam_config.as_ref().unwrap().ipv4_address.as_deref(), Some("172.29.0.5"));
    }
}
