//! The container being migrated, as the migration needs to know it: read once from the source's
//! inspect at the start, so that every later step works from the same facts.

use bollard::models::ContainerInspectResponse;
use serde::Serialize;

/// Docker's built-in networks: present on every daemon, never created by vimigrate.
const BUILTIN_NETWORKS: [&str; 3] = ["bridge", "host", "none"];

/// A named volume the container uses: its data moves with the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeMount {
    /// Volume name (the same on both providers).
    pub name: String,
    /// Mount point inside the container.
    pub destination: String,
}

/// The container on one user-defined network of the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceEndpoint {
    pub network: String,
    pub aliases: Vec<String>,
    pub ipv4: Option<String>,
}

/// What the migration needs to know about the source container, read once from its inspect.
#[derive(Debug, Clone)]
pub(crate) struct SourceContainer {
    pub id: String,
    pub name: String,
    /// The image to run on the destination: the source's image reference when it still names
    /// the image the container runs, else the image id (a tag may have moved since).
    pub image: String,
    /// The id of the image the container runs.
    pub image_id: String,
    pub running: bool,
    pub status: String,
    pub auto_remove: bool,
    /// The OCI runtime it runs under, as Docker reports it (`runc`, `vimigrate`, ...).
    pub runtime: Option<String>,
    /// Host paths bind-mounted into the container: they cannot follow it to another host.
    pub host_binds: Vec<String>,
    pub volumes: Vec<VolumeMount>,
    /// Published host ports with their protocol (forwarding rules to recreate).
    pub host_ports: Vec<(u16, String)>,
    /// User-defined networks with the container's aliases and address on each, in a stable order.
    pub networks: Vec<SourceEndpoint>,
    pub(crate) inspect: ContainerInspectResponse,
}

impl SourceContainer {
    /// Reads the facts out of an inspect response.
    pub(crate) fn from_inspect(inspect: ContainerInspectResponse) -> SourceContainer {
        let state = inspect.state.clone().unwrap_or_default();
        let config = inspect.config.clone().unwrap_or_default();
        let host = inspect.host_config.clone().unwrap_or_default();
        let mut host_binds = Vec::new();
        let mut volumes = Vec::new();
        for mount in inspect.mounts.clone().unwrap_or_default() {
            match mount.typ.as_deref() {
                Some("volume") => volumes.push(VolumeMount {
                    name: mount.name.unwrap_or_default(),
                    destination: mount.destination.unwrap_or_default(),
                }),
                Some("bind") => host_binds.push(mount.source.unwrap_or_default()),
                _ => {}
            }
        }
        let short_id: String = inspect.id.clone().unwrap_or_default().chars().take(12).collect();
        let mut networks: Vec<SourceEndpoint> = inspect
            .network_settings
            .clone()
            .and_then(|n| n.networks)
            .unwrap_or_default()
            .into_iter()
            .filter(|(name, _)| !BUILTIN_NETWORKS.contains(&name.as_str()))
            .map(|(name, endpoint)| {
                // Docker adds the short container id as an alias by itself; carrying it over would
                // make the destination answer to the source's id.
                let aliases = endpoint.aliases.unwrap_or_default().into_iter().filter(|a| *a != short_id).collect();
                SourceEndpoint { network: name, aliases, ipv4: endpoint.ip_address.filter(|ip| !ip.is_empty()) }
            })
            .collect();
        networks.sort_by(|a, b| a.network.cmp(&b.network));
        let mut host_ports: Vec<(u16, String)> = host
            .port_bindings
            .clone()
            .unwrap_or_default()
            .into_iter()
            .flat_map(|(key, bindings)| {
                let protocol = key.split_once('/').map_or("tcp", |(_, p)| p).to_string();
                bindings
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(move |b| Some((b.host_port?.parse::<u16>().ok()?, protocol.clone())))
            })
            .collect();
        host_ports.sort();
        host_ports.dedup();
        SourceContainer {
            id: inspect.id.clone().unwrap_or_default(),
            name: inspect.name.clone().unwrap_or_default().trim_start_matches('/').to_string(),
            image: config.image.clone().unwrap_or_default(),
            image_id: inspect.image.clone().unwrap_or_default(),
            running: state.running.unwrap_or(false),
            status: state.status.map(|s| s.to_string()).unwrap_or_else(|| "unknown".into()),
            auto_remove: host.auto_remove.unwrap_or(false),
            runtime: host.runtime.clone().filter(|r| !r.is_empty()),
            host_binds,
            volumes,
            host_ports,
            networks,
            inspect,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The inspect of a running container on a user-defined network, with a volume and a
    /// published port, as Docker 20.10 answers it.
    pub(crate) fn inspect() -> ContainerInspectResponse {
        serde_json::from_value(serde_json::json!({
            "Id": "0123456789abcdef0123",
            "Name": "/web",
            "State": {"Running": true, "Status": "running"},
            "Config": {
                "Hostname": "web", "Image": "vimigrate-lab/web:latest", "Env": ["A=1", "PEER=10.0.0.9:6379"], "Cmd": ["/web"],
                "WorkingDir": "/srv", "User": "1000", "Labels": {"io.vimigrate.managed": "true"},
                "ExposedPorts": {"8080/tcp": {}},
            },
            "HostConfig": {
                "PortBindings": {"8080/tcp": [{"HostIp": "", "HostPort": "8080"}]},
                "Memory": 268435456, "NanoCpus": 500000000,
                "Binds": ["data:/data", "/srv/host:/host"], "ContainerIDFile": "/tmp/cid", "NetworkMode": "app",
            },
            "Mounts": [
                {"Type": "volume", "Name": "data", "Destination": "/data"},
                {"Type": "bind", "Source": "/srv/host", "Destination": "/host"},
            ],
            "NetworkSettings": {"Networks": {
                "app": {"Aliases": ["web", "0123456789ab"], "IPAddress": "172.29.0.5"},
                "bridge": {},
            }},
        }))
        .unwrap()
    }

    #[test]
    fn facts_are_read_from_the_inspect() {
        let source = SourceContainer::from_inspect(inspect());
        assert_eq!(source.name, "web");
        assert!(source.running);
        assert_eq!(source.image, "vimigrate-lab/web:latest");
        assert_eq!(source.host_binds, vec!["/srv/host".to_string()]);
        assert_eq!(source.volumes, vec![VolumeMount { name: "data".into(), destination: "/data".into() }]);
        assert_eq!(
            source.networks,
            vec![SourceEndpoint {
                network: "app".into(),
                aliases: vec!["web".into()],
                ipv4: Some("172.29.0.5".into())
            }],
            "id alias and bridge dropped"
        );
    }
}
