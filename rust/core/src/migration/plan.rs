//! The plan of one migration: everything the preflight decided before anything changed (how the
//! checkpoint moves, how each network maps, which published ports move, what CRIU does with TCP
//! connections, which image runs), which the migration then follows and a dry run prints. The
//! decisions themselves are pure functions of what the preflight read, tested on their own.

use std::collections::{BTreeMap, HashMap};

use serde::{Serialize, Serializer};
use vimigrate_protocol::{CriuOptions, PreCopy, StreamCompression, TcpMode, RUNTIME_NAME};

use crate::checkpoint::criu_options::CriuTcp;
use crate::error::PortTaken;
use crate::migration::clone::CloneChanges;
use crate::migration::host_checks::{CheckOutcome, HostComparison, HostSummary};
use crate::migration::memory::MemoryMode;
use crate::migration::options::Method;
use crate::network::map::{AddressMode, NetworkDecision};

/// How the checkpoint moves, as the preflight decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum PlannedPath {
    /// Host to host through `vimigrate-runtime` on both hosts (see [`vimigrate_protocol`]).
    Direct {
        /// Where the source host reaches the destination's runtime (name or address).
        destination_host: String,
    },
    /// Docker's checkpoint API, the images through the broker.
    Docker {
        /// Why not the direct path.
        reason: String,
    },
}

impl PlannedPath {
    /// `direct` or `docker`, as reports name it.
    pub fn method(&self) -> &'static str {
        match self {
            PlannedPath::Direct { .. } => "direct",
            PlannedPath::Docker { .. } => "docker",
        }
    }
}

/// One forwarding rule of the container (a published host port) and where it lands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Forwarding {
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The host port on the source.
    pub source_port: u16,
    /// The host port on the destination (another one when `port_map` moved it).
    pub destination_port: u16,
}

/// What one migration will do, decided before anything changes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MigrationPlan {
    /// The container's name (the same on both providers).
    pub container: String,
    /// The source provider.
    pub source: String,
    /// The destination provider.
    pub destination: String,
    /// The container's id on the source.
    pub source_id: String,
    /// The checkpoint's name.
    pub checkpoint: String,
    /// The image the destination runs: the container's reference, or its image id when the
    /// reference names another image by now.
    pub image: String,
    /// Whether the destination has that image already (else it is streamed from the source).
    pub image_on_destination: bool,
    /// How the checkpoint moves.
    pub path: PlannedPath,
    /// How each user-defined network maps to the destination.
    pub networks: Vec<NetworkDecision>,
    /// The forwarding rules recreated on the destination.
    pub forwarding: Vec<Forwarding>,
    /// What CRIU does with established TCP connections on both hosts (`tcp-established`,
    /// `tcp-close`; none: the hosts' own configuration).
    #[serde(rename = "criu_tcp_option", serialize_with = "tcp_option_name")]
    pub tcp: Option<TcpMode>,
    /// Why that TCP mode.
    pub tcp_reason: String,
    /// How the memory moves.
    pub memory: MemoryMode,
    /// Why that way.
    pub memory_reason: String,
    /// Whether the stream is compressed.
    pub compression: StreamCompression,
    /// Why so.
    pub compression_reason: String,
    /// Pre-copy's bounds, when the memory is pre-copied.
    pub pre_copy: Option<PreCopy>,
    /// The OCI runtime the destination container runs under (`None`: the daemon's default).
    pub destination_runtime: Option<String>,
    /// Peer addresses rewritten on the destination (old -> new).
    pub address_map: BTreeMap<String, String>,
    /// The container's address on each network the destination remaps, where a group decided
    /// it before the freeze (network -> IPv4 address; empty otherwise: Docker picks it).
    pub assigned_addresses: BTreeMap<String, String>,
    /// Whether the destination rewrites the dumped sockets' addresses by `address_map` (a
    /// group across a remapped subnet: its members' connections to each other survive).
    pub rewrite_sockets: bool,
    /// Whether the sockets' images could follow a remapped address (the direct path, a
    /// runtime that holds the addresses where the destination needs it, `criu_tcp` auto): the
    /// group then keeps its members' connections to each other (see `group/addresses.rs`).
    #[serde(skip)]
    pub(crate) sockets_can_follow: bool,
    /// Files in the container whose peer addresses are rewritten.
    pub peer_files: Vec<String>,
    /// Whether checkpoint/restore is proved on both hosts with a probe before anything changes.
    pub criu_check: bool,
    /// What differs between the two hosts, and what the host checks decided.
    pub hosts: HostComparison,
}

fn tcp_option_name<S: Serializer>(tcp: &Option<TcpMode>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_some(&tcp.map(criu_tcp_option))
}

/// CRIU's name of a TCP mode.
pub(crate) fn criu_tcp_option(mode: TcpMode) -> &'static str {
    match mode {
        TcpMode::Established => "tcp-established",
        TcpMode::Close => "tcp-close",
    }
}

impl MigrationPlan {
    /// CRIU's option for TCP connections, as it is written into runc's configuration.
    pub fn criu_tcp_option(&self) -> Option<&'static str> {
        self.tcp.map(criu_tcp_option)
    }

    /// The direct path's per-container CRIU options (the hosts' own file is left alone): a
    /// loaded server always has connections in its accept queue, which CRIU refuses to dump
    /// unless told to drop them, so `skip-in-flight` comes with any TCP mode vimigrate sets.
    pub(crate) fn criu_options(&self) -> CriuOptions {
        CriuOptions { tcp: self.tcp, skip_in_flight: self.tcp.is_some() }
    }

    /// What the destination container changes from the source's configuration.
    pub(crate) fn clone_changes(&self) -> CloneChanges {
        CloneChanges {
            preserved: self
                .networks
                .iter()
                .filter(|d| d.mode == AddressMode::Preserve)
                .map(|d| d.name.clone())
                .collect(),
            port_map: self
                .forwarding
                .iter()
                .filter(|f| f.source_port != f.destination_port)
                .map(|f| (f.source_port, f.destination_port))
                .collect(),
            address_map: self.address_map.clone(),
            assigned: self.assigned_addresses.clone(),
            runtime: self.destination_runtime.clone(),
        }
    }

    /// The plan in words, one line each, for a dry run.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "{}: {} -> {}, checkpoint {}",
            self.container, self.source, self.destination, self.checkpoint
        )];
        lines.push(match &self.path {
            PlannedPath::Direct { destination_host } => {
                format!("  path: direct, host to host through vimigrate-runtime (to {destination_host})")
            }
            PlannedPath::Docker { reason } => format!("  path: docker, Docker's checkpoint API ({reason})"),
        });
        let image = if self.image_on_destination {
            format!("present on {}", self.destination)
        } else {
            format!("streamed from {} first", self.source)
        };
        lines.push(format!("  image: {} ({image})", self.image));
        for decision in &self.networks {
            let mode = match decision.mode {
                AddressMode::Preserve => "addresses kept",
                AddressMode::Remap => "new addresses",
            };
            let created = if decision.create.is_some() { ", created there" } else { "" };
            lines.push(format!("  network {}: {mode} ({}{created})", decision.name, decision.reason));
        }
        for rule in &self.forwarding {
            let moved = if rule.source_port == rule.destination_port { "" } else { " (port_map)" };
            lines.push(format!(
                "  forwarding {}/{} -> {}/{} on {}{moved}",
                rule.source_port, rule.protocol, rule.destination_port, rule.protocol, self.destination
            ));
        }
        lines.push(match self.criu_tcp_option() {
            Some(option) => format!("  TCP connections: {option} ({})", self.tcp_reason),
            None => format!("  TCP connections: as the hosts' CRIU configuration says ({})", self.tcp_reason),
        });
        lines.push(format!("  memory: {} ({})", self.memory.name(), self.memory_reason));
        lines.push(format!("  compression: {}", self.compression_reason));
        lines.push(format!(
            "  runtime on {}: {}",
            self.destination,
            self.destination_runtime.as_deref().unwrap_or("the daemon's default")
        ));
        for path in &self.peer_files {
            lines.push(format!("  peer file {path}: addresses rewritten ({} rule(s))", self.address_map.len()));
        }
        lines.push(if self.criu_check {
            "  CRIU: checkpoint/restore proved on both hosts before anything changes".to_string()
        } else {
            "  CRIU: not proved first (check_criu false)".to_string()
        });
        for host in [&self.hosts.source, &self.hosts.destination] {
            lines.push(format!("  host {}: {}", host.provider, describe_host(host)));
        }
        for check in &self.hosts.checks {
            let outcome = match check.outcome {
                CheckOutcome::Refused => "refused",
                CheckOutcome::Overridden => "overridden by ignore_host_checks",
                CheckOutcome::Note => "note",
            };
            lines.push(format!("  host check ({outcome}) {}: {}", check.provider, check.detail));
        }
        lines
    }
}

/// One host in words: engine, containerd, runc, CRIU, kernel, cgroup version, image store.
fn describe_host(host: &HostSummary) -> String {
    let or_unknown = |v: &str| if v.is_empty() { "?".to_string() } else { v.to_string() };
    let criu = match (&host.criu, host.facts_known) {
        (Some(v), _) => v.clone(),
        (None, true) => "none".into(),
        (None, false) => "? (no vimigrate-runtime)".into(),
    };
    format!(
        "Docker {}, containerd {}, runc {}, CRIU {criu}, kernel {}, cgroup v{}, images in {}",
        or_unknown(&host.engine),
        or_unknown(&host.containerd),
        or_unknown(&host.runc),
        or_unknown(&host.kernel),
        or_unknown(&host.cgroup_version),
        or_unknown(&host.image_store)
    )
}

/// What the path decision looks at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PathFacts<'a> {
    /// The method the caller asked for.
    pub wanted: Method,
    /// Whether the source's daemon has runtime `vimigrate`.
    pub source_has_runtime: bool,
    /// Whether the destination's daemon has it.
    pub destination_has_runtime: bool,
    /// The runtime the container runs under (`None`: the daemon's default).
    pub container_runtime: Option<&'a str>,
    /// The destination provider's name, for the reasons.
    pub destination: &'a str,
    /// Where the source host would reach the destination's runtime.
    pub destination_host: Option<&'a str>,
}

/// The direct path when both hosts run `vimigrate-runtime`, the container runs under it, and
/// the destination has an address the source host reaches; else Docker's checkpoint API, with
/// the reason. `Err` carries the reason when the direct path was demanded and is not possible.
pub(crate) fn choose_path(facts: PathFacts<'_>) -> Result<PlannedPath, String> {
    let reason = if facts.wanted == Method::Docker {
        Some("method docker was asked for".to_string())
    } else if !facts.source_has_runtime {
        Some("the source provider has no `vimigrate` runtime (vimigrate-runtime is not installed there)".to_string())
    } else if !facts.destination_has_runtime {
        Some(format!(
            "provider `{}` has no `vimigrate` runtime (vimigrate-runtime is not installed there)",
            facts.destination
        ))
    } else if facts.container_runtime != Some(RUNTIME_NAME) {
        Some(format!(
            "the container runs under runtime `{}`, not `{RUNTIME_NAME}`",
            facts.container_runtime.unwrap_or("runc")
        ))
    } else if facts.destination_host.is_none() {
        Some(format!("provider `{}` has neither transfer_address nor public_address", facts.destination))
    } else {
        None
    };
    match (reason, facts.wanted) {
        (None, _) => {
            Ok(PlannedPath::Direct { destination_host: facts.destination_host.unwrap_or_default().to_string() })
        }
        (Some(reason), Method::Direct) => Err(reason),
        (Some(reason), _) => Ok(PlannedPath::Docker { reason }),
    }
}

/// What CRIU does with established TCP connections: they can only survive when every network
/// keeps its addresses, and when the restoring host can give the sockets their addresses at the
/// restore: `network_after_restore` names a host (and its engine) that cannot (Docker >= 28
/// with a `vimigrate-runtime` older than the one that holds them), so `auto` closes them then
/// and `established` is refused with the reason (`Err`).
pub(crate) fn tcp_mode(
    wanted: CriuTcp,
    networks: &[NetworkDecision],
    network_after_restore: Option<(&str, &str)>,
) -> Result<(Option<TcpMode>, String), String> {
    let all_kept = !networks.is_empty() && networks.iter().all(|d| d.mode == AddressMode::Preserve);
    if let Some((host, engine)) = network_after_restore {
        let why = format!(
            "Docker {engine} on `{host}` wires the container's network only after the restore, and its \
             vimigrate-runtime is too old to hold the sockets' addresses meanwhile (install this version's), so \
             established connections cannot be restored there"
        );
        return match wanted {
            CriuTcp::Established => Err(why),
            CriuTcp::Auto => Ok((Some(TcpMode::Close), format!("{why}: they close, peers reconnect"))),
            _ => Ok(tcp_mode_with_addresses(wanted, networks, all_kept)),
        };
    }
    Ok(tcp_mode_with_addresses(wanted, networks, all_kept))
}

fn tcp_mode_with_addresses(wanted: CriuTcp, networks: &[NetworkDecision], all_kept: bool) -> (Option<TcpMode>, String) {
    match wanted {
        CriuTcp::Host => (None, "criu_tcp host: the hosts' /etc/criu/runc.conf decides".into()),
        CriuTcp::Established => (Some(TcpMode::Established), "criu_tcp established was asked for".into()),
        CriuTcp::Close => (Some(TcpMode::Close), "criu_tcp close was asked for".into()),
        CriuTcp::Auto if all_kept => {
            (Some(TcpMode::Established), "every network keeps its addresses: connections survive".into())
        }
        CriuTcp::Auto if networks.is_empty() => {
            (Some(TcpMode::Close), "no user-defined network keeps the address: connections close".into())
        }
        CriuTcp::Auto => (Some(TcpMode::Close), "an address changes: connections close, peers reconnect".into()),
    }
}

/// The runtime the destination container runs under: `vimigrate` where the destination has it
/// (so that the next migration can take the direct path), else the container's own, unless
/// that is `vimigrate`, which the destination lacks.
pub(crate) fn destination_runtime(destination_has_runtime: bool, container_runtime: Option<&str>) -> Option<String> {
    if destination_has_runtime {
        Some(RUNTIME_NAME.to_string())
    } else if container_runtime == Some(RUNTIME_NAME) {
        None
    } else {
        container_runtime.map(str::to_string)
    }
}

/// The forwarding rules on the destination: every published port of the source, moved where
/// `port_map` says; the first one the destination already publishes is an error saying what
/// to do.
pub(crate) fn forwarding(
    destination: &str,
    host_ports: &[(u16, String)],
    port_map: &BTreeMap<u16, u16>,
    taken: &HashMap<(u16, String), String>,
) -> Result<Vec<Forwarding>, PortTaken> {
    let mut rules = Vec::new();
    for (port, protocol) in host_ports {
        let wanted = port_map.get(port).copied().unwrap_or(*port);
        if let Some(owner) = taken.get(&(wanted, protocol.clone())) {
            let advice = if wanted == *port {
                "free it, or publish the container on another port there with port_map"
            } else {
                "port_map points at a taken port: choose a free one"
            };
            return Err(PortTaken {
                provider: destination.to_string(),
                port: wanted,
                protocol: protocol.clone(),
                owner: owner.clone(),
                advice,
            });
        }
        rules.push(Forwarding { protocol: protocol.clone(), source_port: *port, destination_port: wanted });
    }
    Ok(rules)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn facts(wanted: Method) -> PathFacts<'static> {
        PathFacts {
            wanted,
            source_has_runtime: true,
            destination_has_runtime: true,
            container_runtime: Some("vimigrate"),
            destination: "provider-b",
            destination_host: Some("10.231.0.12"),
        }
    }

    #[test]
    fn the_path_is_direct_only_when_everything_offers_it() {
        let direct = PlannedPath::Direct { destination_host: "10.231.0.12".into() };
        assert_eq!(choose_path(facts(Method::Auto)), Ok(direct.clone()));
        assert_eq!(choose_path(facts(Method::Direct)), Ok(direct));
        let cases: [(PathFacts<'static>, &str); 5] = [
            (facts(Method::Docker), "method docker was asked for"),
            (PathFacts { source_has_runtime: false, ..facts(Method::Auto) }, "the source provider has no"),
            (PathFacts { destination_has_runtime: false, ..facts(Method::Auto) }, "provider `provider-b` has no"),
            (PathFacts { container_runtime: None, ..facts(Method::Auto) }, "runs under runtime `runc`"),
            (PathFacts { destination_host: None, ..facts(Method::Auto) }, "neither transfer_address nor"),
        ];
        for (facts, reason) in cases {
            match choose_path(facts) {
                Ok(PlannedPath::Docker { reason: why }) => assert!(why.contains(reason), "{why}"),
                other => panic!("{facts:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_demanded_direct_path_that_is_impossible_is_an_error_with_the_reason() {
        let facts = PathFacts { container_runtime: Some("runc"), ..facts(Method::Direct) };
        assert_eq!(choose_path(facts), Err("the container runs under runtime `runc`, not `vimigrate`".into()));
    }

    fn decision(name: &str, mode: AddressMode) -> NetworkDecision {
        NetworkDecision { name: name.into(), source_subnet: None, mode, reason: String::new(), create: None }
    }

    #[test]
    fn tcp_connections_survive_only_when_every_address_is_kept() {
        use AddressMode::{Preserve, Remap};
        let kept = [decision("a", Preserve), decision("b", Preserve)];
        let one_changes = [decision("a", Preserve), decision("b", Remap)];
        let table: [(CriuTcp, &[NetworkDecision], Option<TcpMode>); 7] = [
            (CriuTcp::Auto, &kept, Some(TcpMode::Established)),
            (CriuTcp::Auto, &one_changes, Some(TcpMode::Close)),
            (CriuTcp::Auto, &[], Some(TcpMode::Close)),
            (CriuTcp::Established, &one_changes, Some(TcpMode::Established)),
            (CriuTcp::Close, &kept, Some(TcpMode::Close)),
            (CriuTcp::Host, &kept, None),
            (CriuTcp::Host, &[], None),
        ];
        for (wanted, networks, expected) in table {
            assert_eq!(tcp_mode(wanted, networks, None).unwrap().0, expected, "{wanted:?} with {networks:?}");
        }
    }

    #[test]
    fn connections_close_where_an_old_runtime_restores_before_the_network() {
        let kept = [decision("a", AddressMode::Preserve)];
        let old = Some(("provider-28", "28.5.2"));
        let (mode, why) = tcp_mode(CriuTcp::Auto, &kept, old).unwrap();
        assert_eq!(mode, Some(TcpMode::Close));
        assert!(why.contains("Docker 28.5.2 on `provider-28` wires the container's network only after"), "{why}");
        assert!(why.contains("too old"), "{why}");
        assert!(tcp_mode(CriuTcp::Established, &kept, old).unwrap_err().contains("cannot be restored"));
        assert_eq!(tcp_mode(CriuTcp::Host, &kept, old).unwrap().0, None);
    }

    #[test]
    fn the_destination_runs_vimigrate_where_it_can() {
        assert_eq!(destination_runtime(true, None).as_deref(), Some("vimigrate"));
        assert_eq!(destination_runtime(true, Some("runc")).as_deref(), Some("vimigrate"));
        assert_eq!(destination_runtime(false, Some("vimigrate")), None);
        assert_eq!(destination_runtime(false, Some("crun")).as_deref(), Some("crun"));
        assert_eq!(destination_runtime(false, None), None);
    }

    #[test]
    fn published_ports_move_where_port_map_says_or_fail_saying_what_to_do() {
        let ports = [(8080, "tcp".to_string()), (53, "udp".to_string())];
        let taken = HashMap::from([((8080, "tcp".to_string()), "other".to_string())]);
        let err = forwarding("provider-b", &ports, &BTreeMap::new(), &taken).unwrap_err();
        assert_eq!((err.port, err.owner.as_str()), (8080, "other"));
        assert!(err.advice.contains("port_map"), "{}", err.advice);
        let moved = forwarding("provider-b", &ports, &BTreeMap::from([(8080, 18080)]), &taken).unwrap();
        assert_eq!(moved[0], Forwarding { protocol: "tcp".into(), source_port: 8080, destination_port: 18080 });
        assert_eq!(moved[1].destination_port, 53);
        let onto_taken = forwarding(
            "provider-b",
            &ports,
            &BTreeMap::from([(53, 8080)]),
            &HashMap::from([((8080, "udp".to_string()), "dns".to_string())]),
        );
        assert!(onto_taken.unwrap_err().advice.contains("choose a free one"));
    }

    #[test]
    fn the_direct_path_drops_in_flight_connections_only_with_a_tcp_mode() {
        let mut plan = sample_plan();
        plan.tcp = None;
        assert_eq!(plan.criu_options(), CriuOptions { tcp: None, skip_in_flight: false });
        plan.tcp = Some(TcpMode::Close);
        assert_eq!(plan.criu_options(), CriuOptions { tcp: Some(TcpMode::Close), skip_in_flight: true });
        assert_eq!(plan.criu_tcp_option(), Some("tcp-close"));
    }

    #[test]
    fn clone_changes_follow_the_plan() {
        let plan = sample_plan();
        let changes = plan.clone_changes();
        assert_eq!(changes.port_map, BTreeMap::from([(8080, 18080)]));
        assert!(changes.preserved.contains("app") && !changes.preserved.contains("back"));
        assert_eq!(changes.runtime.as_deref(), Some("vimigrate"));
    }

    #[test]
    fn the_plan_reads_as_lines_and_serializes_the_criu_option() {
        let plan = sample_plan();
        let text = plan.describe().join("\n");
        assert!(text.contains("web: provider-a -> provider-b"), "{text}");
        assert!(text.contains("path: direct"), "{text}");
        assert!(text.contains("forwarding 8080/tcp -> 18080/tcp on provider-b (port_map)"), "{text}");
        assert!(text.contains("TCP connections: tcp-close"), "{text}");
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["criu_tcp_option"], "tcp-close");
        assert_eq!(json["path"]["method"], "direct");
    }

    pub(crate) fn sample_plan() -> MigrationPlan {
        MigrationPlan {
            container: "web".into(),
            source: "provider-a".into(),
            destination: "provider-b".into(),
            source_id: "src-1".into(),
            checkpoint: "cp-1".into(),
            image: "vimigrate-lab/web:latest".into(),
            image_on_destination: true,
            path: PlannedPath::Direct { destination_host: "10.231.0.12".into() },
            networks: vec![decision("app", AddressMode::Preserve), decision("back", AddressMode::Remap)],
            forwarding: vec![Forwarding { protocol: "tcp".into(), source_port: 8080, destination_port: 18080 }],
            tcp: Some(TcpMode::Close),
            tcp_reason: "an address changes".into(),
            memory: MemoryMode::StopAndCopy,
            memory_reason: String::new(),
            compression: StreamCompression::Off,
            compression_reason: String::new(),
            pre_copy: None,
            destination_runtime: Some("vimigrate".into()),
            address_map: BTreeMap::new(),
            assigned_addresses: BTreeMap::new(),
            rewrite_sockets: false,
            sockets_can_follow: true,
            peer_files: vec![],
            criu_check: true,
            hosts: HostComparison::default(),
        }
    }
}
