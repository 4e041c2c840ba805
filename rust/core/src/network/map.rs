//! How a container's networks map from the source provider to the destination: each
//! user-defined network is recreated under its name, with the same subnet where the destination
//! has it free (then the container keeps its address, and established connections between
//! containers that move together can survive), or with a subnet the destination picks (then the
//! addresses change, and every place that held the old ones is rewritten).

use serde::{Deserialize, Serialize};

use crate::network::cidr::overlaps;
use crate::network::{NetworkInfo, NetworkSpec};

/// Whether a network keeps its addresses on the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressMode {
    /// Same subnet on the destination: the container keeps its address.
    Preserve,
    /// The destination chooses: the container gets a new address.
    Remap,
}

/// The decision for one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkDecision {
    /// Network name (the same on both providers).
    pub name: String,
    /// The source's subnet, when known.
    pub source_subnet: Option<String>,
    /// Whether addresses are kept.
    pub mode: AddressMode,
    /// Why this mode, in words for the plan.
    pub reason: String,
    /// What to create on the destination when the network is missing there (`None`: it exists).
    pub create: Option<NetworkSpec>,
}

/// Decides, for one source network, what the destination gets. `destination` lists every
/// network the destination has now (including its default bridge).
pub(crate) fn decide(source: &NetworkInfo, destination: &[NetworkInfo]) -> NetworkDecision {
    let source_subnet = source.subnets.first().cloned();
    let same_name = destination.iter().find(|n| n.name == source.name);
    let (mode, reason, create) = match (&source_subnet, same_name) {
        (Some(subnet), Some(existing)) if existing.subnets.first() == Some(subnet) => {
            (AddressMode::Preserve, format!("`{}` exists there with the same subnet {subnet}", source.name), None)
        }
        (_, Some(existing)) => (
            AddressMode::Remap,
            format!(
                "`{}` exists there with subnet {}",
                source.name,
                existing.subnets.first().map(String::as_str).unwrap_or("unknown")
            ),
            None,
        ),
        (Some(subnet), None) => match destination.iter().find(|n| n.subnets.iter().any(|s| overlaps(s, subnet))) {
            Some(taken) => (
                AddressMode::Remap,
                format!("subnet {subnet} is taken there by network `{}`", taken.name),
                Some(spec(source, None)),
            ),
            None => (AddressMode::Preserve, format!("subnet {subnet} is free there"), Some(spec(source, Some(subnet)))),
        },
        (None, None) => (AddressMode::Remap, "the source subnet is unknown".to_string(), Some(spec(source, None))),
    };
    NetworkDecision { name: source.name.clone(), source_subnet, mode, reason, create }
}

fn spec(source: &NetworkInfo, subnet: Option<&String>) -> NetworkSpec {
    NetworkSpec {
        name: source.name.clone(),
        subnet: subnet.cloned(),
        gateway: subnet.and(source.gateways.first().cloned()),
        labels: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, subnet: &str) -> NetworkInfo {
        NetworkInfo {
            id: format!("id-{name}"),
            name: name.into(),
            subnets: vec![subnet.into()],
            gateways: vec![subnet.replace(".0/24", ".1")],
            managed: true,
            created_by_migration: false,
        }
    }

    #[test]
    fn a_free_subnet_is_kept() {
        let decision = decide(&net("app", "172.29.5.0/24"), &[net("bridge", "172.31.2.0/24")]);
        assert_eq!(decision.mode, AddressMode::Preserve);
        let create = decision.create.unwrap();
        assert_eq!(create.subnet.as_deref(), Some("172.29.5.0/24"));
        assert_eq!(create.gateway.as_deref(), Some("172.29.5.1"));
    }

    #[test]
    fn a_taken_subnet_is_remapped() {
        let decision = decide(&net("app", "172.29.5.0/24"), &[net("other", "172.29.0.0/16")]);
        assert_eq!(decision.mode, AddressMode::Remap);
        assert!(decision.reason.contains("taken there by network `other`"), "{}", decision.reason);
        assert_eq!(decision.create.unwrap().subnet, None, "the destination picks");
    }

    #[test]
    fn an_existing_network_decides_by_its_subnet() {
        let same = decide(&net("app", "172.29.5.0/24"), &[net("app", "172.29.5.0/24")]);
        assert_eq!((same.mode, same.create), (AddressMode::Preserve, None));
        let other = decide(&net("app", "172.29.5.0/24"), &[net("app", "172.30.9.0/24")]);
        assert_eq!((other.mode, other.create), (AddressMode::Remap, None));
    }
}
