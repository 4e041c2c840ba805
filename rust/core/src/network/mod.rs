//! User-defined networks: their declaration and their life on a provider (this file), IPv4
//! subnets (`cidr.rs`), and how a container's networks map to the destination of a migration,
//! kept or remapped ([`map`]).

pub(crate) mod cidr;
pub mod map;

use std::collections::BTreeMap;

use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use serde::{Deserialize, Serialize};

use crate::error::{is_not_found, Error, InputError, ProviderError};
use crate::provider::labels::{self, NOT_MANAGED};
use crate::provider::spec::is_valid_docker_name;
use crate::provider::Provider;

/// A user-defined bridge network as the user declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Network name on the provider.
    pub name: String,
    /// IPv4 subnet in CIDR form; `None` lets the provider pick one from its pools.
    #[serde(default)]
    pub subnet: Option<String>,
    /// Gateway address inside `subnet`; `None` lets Docker pick the first address.
    #[serde(default)]
    pub gateway: Option<String>,
    /// Labels, in addition to vimigrate's own.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A network as it exists on a provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkInfo {
    /// Docker's network id.
    pub id: String,
    /// Network name.
    pub name: String,
    /// IPv4 subnets in CIDR form.
    pub subnets: Vec<String>,
    /// Gateways, one per subnet where known.
    pub gateways: Vec<String>,
    /// Whether vimigrate created it.
    pub managed: bool,
    /// Whether a migration created it on its destination (see [`labels::MIGRATION_NETWORK_LABEL`]).
    pub created_by_migration: bool,
}

/// A network's facts from the parts Docker's list and inspect answers share.
fn network_info(
    id: Option<String>,
    name: String,
    ipam: Option<bollard::models::Ipam>,
    label_set: Option<&std::collections::HashMap<String, String>>,
) -> NetworkInfo {
    let configs = ipam.and_then(|i| i.config).unwrap_or_default();
    NetworkInfo {
        id: id.unwrap_or_default(),
        name,
        subnets: configs.iter().filter_map(|c| c.subnet.clone()).collect(),
        gateways: configs.iter().filter_map(|c| c.gateway.clone()).collect(),
        managed: labels::is_managed(label_set),
        created_by_migration: label_set.is_some_and(|l| l.contains_key(labels::MIGRATION_NETWORK_LABEL)),
    }
}

impl NetworkSpec {
    /// Checks every field; the error names the first wrong one.
    pub fn validate(&self) -> Result<(), InputError> {
        if !is_valid_docker_name(&self.name) {
            return Err(InputError::new("name", "a network name matching [a-zA-Z0-9][a-zA-Z0-9_.-]*", &self.name));
        }
        if let Some(subnet) = &self.subnet {
            if cidr::parse_cidr(subnet).is_none() {
                return Err(InputError::new("subnet", "an IPv4 subnet in CIDR form, e.g. 10.10.0.0/24", subnet));
            }
        }
        if let Some(gateway) = &self.gateway {
            let inside =
                match (self.subnet.as_deref().and_then(cidr::parse_cidr), gateway.parse::<std::net::Ipv4Addr>()) {
                    (Some((network, len)), Ok(address)) => {
                        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                        u32::from(address) & mask == network
                    }
                    _ => false,
                };
            if !inside {
                return Err(InputError::new("gateway", "an IPv4 address inside the declared subnet", gateway));
            }
        }
        Ok(())
    }
}

impl Provider {
    /// Creates the network unless one with that name exists; returns what is there.
    ///
    /// An existing network is reused as is: the caller compares its subnet when it matters.
    pub async fn ensure_network(&self, spec: &NetworkSpec) -> Result<NetworkInfo, Error> {
        spec.validate()?;
        if let Some(existing) = self.inspect_network(&spec.name).await? {
            return Ok(existing);
        }
        let ipam = spec.subnet.as_ref().map(|subnet| Ipam {
            config: Some(vec![IpamConfig {
                subnet: Some(subnet.clone()),
                gateway: spec.gateway.clone(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let request = NetworkCreateRequest {
            name: spec.name.clone(),
            driver: Some("bridge".to_string()),
            ipam,
            labels: Some(labels::with_managed(&spec.labels)),
            ..Default::default()
        };
        self.docker()
            .create_network(request)
            .await
            .map_err(self.api_error(format!("create network `{}`", spec.name)))?;
        self.inspect_network(&spec.name).await?.ok_or_else(|| {
            ProviderError::Failed {
                provider: self.name().to_string(),
                step: format!("create network `{}`", spec.name),
                detail: "the network vanished right after it was created".into(),
            }
            .into()
        })
    }

    /// Every network on the provider, with its subnets.
    pub async fn list_networks(&self) -> Result<Vec<NetworkInfo>, Error> {
        let networks = self
            .docker()
            .list_networks(None::<bollard::query_parameters::ListNetworksOptions>)
            .await
            .map_err(self.api_error("list networks"))?;
        Ok(networks
            .into_iter()
            .map(|n| network_info(n.id, n.name.unwrap_or_default(), n.ipam, n.labels.as_ref()))
            .collect())
    }

    /// The network called `name`, or `None` if there is none.
    pub async fn inspect_network(&self, name: &str) -> Result<Option<NetworkInfo>, Error> {
        let network = match self.docker().inspect_network(name, None).await {
            Ok(n) => n,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.api_error(format!("inspect network `{name}`"))(e)),
        };
        Ok(Some(network_info(
            network.id,
            network.name.unwrap_or_else(|| name.to_string()),
            network.ipam,
            network.labels.as_ref(),
        )))
    }

    /// Removes a network vimigrate created. Returns `false` when it was already gone, or when
    /// `only_if_unused` is set and containers are still attached to it (the last container to
    /// leave a network removes it). Refuses to remove a network vimigrate does not manage.
    pub async fn remove_network(&self, name: &str, only_if_unused: bool) -> Result<bool, Error> {
        let Some(existing) = self.inspect_network(name).await? else {
            return Ok(false);
        };
        if !existing.managed {
            return Err(ProviderError::NameTaken {
                provider: self.name().to_string(),
                what: "network",
                name: name.to_string(),
                reason: NOT_MANAGED,
            }
            .into());
        }
        match self.docker().remove_network(name).await {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) if only_if_unused && has_active_endpoints(&e) => Ok(false),
            Err(e) => Err(self.api_error(format!("remove network `{name}`"))(e)),
        }
    }
}

/// Docker's refusal to remove a network that containers still use (403, "active endpoints").
fn has_active_endpoints(err: &bollard::errors::Error) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { status_code: 403, message }
        if message.contains("active endpoints"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(subnet: Option<&str>, gateway: Option<&str>) -> NetworkSpec {
        NetworkSpec {
            name: "app".into(),
            subnet: subnet.map(Into::into),
            gateway: gateway.map(Into::into),
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn subnet_and_gateway_are_checked() {
        assert_eq!(spec(Some("10.1.0.0/24"), Some("10.1.0.1")).validate(), Ok(()));
        assert_eq!(spec(Some("10.1.0.0/33"), None).validate().unwrap_err().field, "subnet");
        assert_eq!(spec(Some("10.1.0.0"), None).validate().unwrap_err().field, "subnet");
        assert_eq!(spec(None, Some("10.1.0.1")).validate().unwrap_err().field, "gateway");
    }
}
