//! The container a user asks for, as plain data, checked before anything is created.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::InputError;

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (the default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The name Docker uses in port keys (`80/tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A forwarding rule: a container port published on the provider's public address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    /// The port the process listens on inside the container.
    pub container_port: u16,
    /// The port on the provider's address; `None` lets Docker pick a free one.
    #[serde(default)]
    pub host_port: Option<u16>,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// A user-defined network the container joins, with the names it answers to there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkAttachment {
    /// The network's name on the provider.
    pub network: String,
    /// Extra DNS names for the container on that network (its name always resolves).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// A fixed IPv4 address on that network (needs a network with a declared subnet).
    #[serde(default)]
    pub ipv4_address: Option<String>,
}

/// A named volume mounted into the container; its data moves with the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// Volume name on the provider (created when missing).
    pub name: String,
    /// Absolute mount point inside the container.
    pub destination: String,
    /// Mount read-only.
    #[serde(default, deserialize_with = "crate::serde_strict::strict_bool")]
    pub read_only: bool,
}

/// Everything needed to create and start one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// Container name on the provider (Docker's rules: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`).
    pub name: String,
    /// Image reference, e.g. `vimigrate-lab/redis:latest`.
    pub image: String,
    /// Command, overriding the image's CMD.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Entrypoint, overriding the image's ENTRYPOINT.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Hostname inside the container (a checkpoint restores it, so migration keeps it).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Labels, in addition to vimigrate's own.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Published ports.
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// Networks to join; none means Docker's default bridge.
    #[serde(default)]
    pub networks: Vec<NetworkAttachment>,
    /// Named volumes (host-path binds are not offered: they could not follow a migration).
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    /// Working directory.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// User to run as.
    #[serde(default)]
    pub user: Option<String>,
}

/// Whether `name` follows Docker's object naming rules.
pub(crate) fn is_valid_docker_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl ContainerSpec {
    /// Checks every field; the error names the first wrong one.
    pub fn validate(&self) -> Result<(), InputError> {
        if !is_valid_docker_name(&self.name) {
            return Err(InputError::new("name", "a container name matching [a-zA-Z0-9][a-zA-Z0-9_.-]*", &self.name));
        }
        if self.image.trim().is_empty() || self.image.chars().any(char::is_whitespace) {
            return Err(InputError::new("image", "an image reference such as repo/name:tag", &self.image));
        }
        for (field, argv) in [("command", &self.command), ("entrypoint", &self.entrypoint)] {
            if argv.as_ref().is_some_and(|a| a.is_empty()) {
                return Err(InputError::new(field, "a non-empty list of arguments, or no value", "[]"));
            }
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') {
                return Err(InputError::new(format!("env.{key}"), "a variable name without '='", key));
            }
        }
        if let Some(hostname) = &self.hostname {
            let ok = !hostname.is_empty()
                && hostname.len() <= 63
                && hostname.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !hostname.starts_with('-');
            if !ok {
                return Err(InputError::new(
                    "hostname",
                    "an RFC 1123 host label (letters, digits, '-', at most 63)",
                    hostname,
                ));
            }
        }
        if let Some(dir) = &self.working_dir {
            if !dir.starts_with('/') {
                return Err(InputError::new("working_dir", "an absolute path", dir));
            }
        }
        for (i, port) in self.ports.iter().enumerate() {
            if port.container_port == 0 {
                return Err(InputError::new(format!("ports[{i}].container_port"), "a port in 1..=65535", 0));
            }
            if port.host_port == Some(0) {
                return Err(InputError::new(format!("ports[{i}].host_port"), "a port in 1..=65535, or no value", 0));
            }
        }
        for (i, volume) in self.volumes.iter().enumerate() {
            if !is_valid_docker_name(&volume.name) {
                return Err(InputError::new(
                    format!("volumes[{i}].name"),
                    "a volume name matching [a-zA-Z0-9][a-zA-Z0-9_.-]*",
                    &volume.name,
                ));
            }
            if !volume.destination.starts_with('/') || volume.destination.contains(':') {
                return Err(InputError::new(
                    format!("volumes[{i}].destination"),
                    "an absolute path without ':'",
                    &volume.destination,
                ));
            }
        }
        for (i, attachment) in self.networks.iter().enumerate() {
            if !is_valid_docker_name(&attachment.network) {
                return Err(InputError::new(format!("networks[{i}].network"), "a network name", &attachment.network));
            }
            if let Some(ip) = &attachment.ipv4_address {
                if ip.parse::<std::net::Ipv4Addr>().is_err() {
                    return Err(InputError::new(format!("networks[{i}].ipv4_address"), "an IPv4 address", ip));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        serde_json::from_value(serde_json::json!({"name": "web", "image": "vimigrate-lab/web:latest"})).unwrap()
    }

    #[test]
    fn minimal_spec_is_valid() {
        assert_eq!(spec().validate(), Ok(()));
    }

    #[test]
    fn names_follow_docker_rules() {
        assert!(is_valid_docker_name("redis-1.db_x"));
        assert!(!is_valid_docker_name("-x"));
        assert!(!is_valid_docker_name(""));
        assert!(!is_valid_docker_name("a/b"));
        let bad = ContainerSpec { name: "bad name".into(), ..spec() };
        assert_eq!(bad.validate().unwrap_err().field, "name");
    }

    #[test]
    fn each_wrong_field_is_named() {
        let port = ContainerSpec {
            ports: vec![PortSpec { container_port: 0, host_port: None, protocol: Protocol::Tcp }],
            ..spec()
        };
        assert_eq!(port.validate().unwrap_err().field, "ports[0].container_port");
        let net = ContainerSpec {
            networks: vec![NetworkAttachment {
                network: "n".into(),
                aliases: vec![],
                ipv4_address: Some("300.1.1.1".into()),
            }],
            ..spec()
        };
        assert_eq!(net.validate().unwrap_err().field, "networks[0].ipv4_address");
        let env = ContainerSpec { env: [("A=B".to_string(), "x".to_string())].into(), ..spec() };
        assert_eq!(env.validate().unwrap_err().field, "env.A=B");
        let cmd = ContainerSpec { command: Some(vec![]), ..spec() };
        assert_eq!(cmd.validate().unwrap_err().field, "command");
        let host = ContainerSpec { hostname: Some("a_b".into()), ..spec() };
        assert_eq!(host.validate().unwrap_err().field, "hostname");
        let volume = ContainerSpec {
            volumes: vec![VolumeSpec { name: "data".into(), destination: "data".into(), read_only: false }],
            ..spec()
        };
        assert_eq!(volume.validate().unwrap_err().field, "volumes[0].destination");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_value::<ContainerSpec>(serde_json::json!({"name": "w", "image": "i", "imgae": "x"}));
        assert!(err.unwrap_err().to_string().contains("imgae"));
    }
}
