//! The names of the engine's shapes as serde spells them on the wire (struct fields, enum
//! variants), for the front ends that keep typed copies of them: the Python stubs' TypedDicts
//! are compared with these by a test, so that the two cannot drift apart.
//!
//! Fields come from serializing an instance (no field of these types is ever skipped); the
//! variants of an enum come from its own `Deserialize`, which hands serde the list of every
//! variant it accepts.

use std::collections::BTreeMap;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::Serialize;

use crate::checkpoint::criu_options::CriuTcp;
use crate::dns::record::{DnsRecord, RecordChange, RecordType};
use crate::migration::group::{GroupPlan, GroupReport, GroupStats};
use crate::migration::heal::HealReport;
use crate::migration::host_checks::{CheckOutcome, HostCheck, HostCheckKind, HostComparison, HostSummary};
use crate::migration::memory::MemoryMode;
use crate::migration::options::{Method, MigrationOptions};
use crate::migration::plan::{Forwarding, MigrationPlan, PlannedPath};
use crate::migration::report::{MigrationReport, MigrationStats, Phase};
use crate::migration::Rollback;
use crate::network::map::{AddressMode, NetworkDecision};
use crate::network::{NetworkInfo, NetworkSpec};
use crate::provider::config::{ProviderConfig, TlsFiles};
use crate::provider::deploy::{DeployedContainer, PublishedPort};
use crate::provider::probe::ProviderReport;
use crate::provider::spec::{ContainerSpec, NetworkAttachment, PortSpec, Protocol, VolumeSpec};

/// Type name -> its serialized field names (structs) or variant names (enums), sorted.
pub fn shapes() -> BTreeMap<&'static str, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut fields = |name: &'static str, value: serde_json::Value| {
        let mut keys: Vec<String> = value.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
        keys.sort();
        out.insert(name, keys);
    };
    fields("ProviderConfig", parse::<ProviderConfig>(serde_json::json!({"name": "p", "docker_host": "unix:///s"})));
    fields("TlsFiles", to_json(&TlsFiles { ca: "ca".into(), cert: "cert".into(), key: "key".into() }));
    fields("MigrationOptions", to_json(&MigrationOptions::new("c")));
    fields("MigrationStats", to_json(&MigrationStats::default()));
    fields("MigrationReport", to_json(&sample_report()));
    fields("HealReport", to_json(&HealReport::default()));
    fields("GroupStats", to_json(&GroupStats::default()));
    fields(
        "GroupReport",
        to_json(&GroupReport {
            destination: String::new(),
            members: Vec::new(),
            stats: GroupStats::default(),
            address_changes: BTreeMap::new(),
        }),
    );
    fields("GroupPlan", to_json(&GroupPlan { destination: String::new(), members: Vec::new(), gate: Vec::new() }));
    fields("ProviderReport", to_json(&sample_provider_report()));
    fields("DeployedContainer", to_json(&sample_deployed()));
    fields("PublishedPort", to_json(&sample_port()));
    fields("NetworkInfo", to_json(&sample_network_info()));
    fields("NetworkSpec", parse::<NetworkSpec>(serde_json::json!({"name": "n"})));
    fields("NetworkDecision", to_json(&sample_decision()));
    fields("ContainerSpec", parse::<ContainerSpec>(serde_json::json!({"name": "c", "image": "i"})));
    fields("PortSpec", parse::<PortSpec>(serde_json::json!({"container_port": 1})));
    fields("VolumeSpec", parse::<VolumeSpec>(serde_json::json!({"name": "v", "destination": "/v"})));
    fields("NetworkAttachment", parse::<NetworkAttachment>(serde_json::json!({"network": "n"})));
    fields("DnsRecord", to_json(&sample_record()));
    fields(
        "RecordChange",
        to_json(&RecordChange { name: "n.".into(), rtype: RecordType::A, before: None, after: None }),
    );
    fields("MigrationPlan", to_json(&sample_plan()));
    fields("PreCopy", to_json(&vimigrate_protocol::PreCopy::default()));
    fields("Forwarding", to_json(&Forwarding { protocol: "tcp".into(), source_port: 1, destination_port: 1 }));
    fields("HostComparison", to_json(&HostComparison::default()));
    fields("HostSummary", to_json(&HostSummary::default()));
    fields(
        "HostCheck",
        to_json(&HostCheck {
            check: None,
            provider: String::new(),
            outcome: CheckOutcome::Note,
            detail: String::new(),
        }),
    );
    out.insert("Method", variants::<Method>());
    out.insert("MemoryMode", variants::<MemoryMode>());
    out.insert("Compression", variants::<crate::migration::Compression>());
    out.insert("StreamCompression", variants::<vimigrate_protocol::StreamCompression>());
    out.insert("CriuTcp", variants::<CriuTcp>());
    out.insert("Phase", variants::<Phase>());
    out.insert("AddressMode", variants::<AddressMode>());
    out.insert("Protocol", variants::<Protocol>());
    out.insert("RecordType", variants::<RecordType>());
    out.insert("Fault", variants::<vimigrate_protocol::Fault>());
    out.insert("HostCheckKind", variants::<HostCheckKind>());
    out.insert("Rollback", sorted(Rollback::STATES.iter().map(|s| s.to_string()).collect()));
    out
}

fn to_json<T: Serialize>(value: &T) -> serde_json::Value {
    // Plain data of the engine's own types always serializes.
    serde_json::to_value(value).unwrap_or_default()
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

fn parse<T: for<'de> Deserialize<'de> + Serialize>(value: serde_json::Value) -> serde_json::Value {
    // These minimal inputs are valid by construction; the unit test below proves it.
    serde_json::from_value::<T>(value).ok().map(|v| serde_json::to_value(v).unwrap_or_default()).unwrap_or_default()
}

/// The variants `T`'s `Deserialize` accepts.
fn variants<T: for<'de> Deserialize<'de>>() -> Vec<String> {
    struct Capture(Vec<String>);
    #[derive(Debug)]
    struct Captured;
    impl std::fmt::Display for Captured {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("captured")
        }
    }
    impl std::error::Error for Captured {}
    impl de::Error for Captured {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Captured
        }
    }
    impl<'de> Deserializer<'de> for &mut Capture {
        type Error = Captured;
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _name: &'static str,
            variants: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Captured> {
            self.0 = variants.iter().map(|v| v.to_string()).collect();
            Err(Captured)
        }
        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Captured> {
            Err(Captured)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map struct identifier ignored_any
        }
    }
    let mut capture = Capture(Vec::new());
    let _ = T::deserialize(&mut capture);
    sorted(capture.0)
}

fn sample_report() -> MigrationReport {
    MigrationReport {
        container: String::new(),
        source: String::new(),
        destination: String::new(),
        source_id: String::new(),
        destination_id: String::new(),
        checkpoint: String::new(),
        source_kept: false,
        stats: MigrationStats::default(),
        warnings: Vec::new(),
        networks: Vec::new(),
        address_changes: BTreeMap::new(),
        criu_tcp_option: None,
        rewrites: Vec::new(),
        method: "docker",
        memory: MemoryMode::StopAndCopy,
        memory_reason: String::new(),
        compression: vimigrate_protocol::StreamCompression::Off,
        method_reason: None,
    }
}

fn sample_provider_report() -> ProviderReport {
    ProviderReport::default()
}

fn sample_port() -> PublishedPort {
    PublishedPort { container_port: 1, protocol: "tcp".into(), host_ip: String::new(), host_port: 1 }
}

fn sample_deployed() -> DeployedContainer {
    DeployedContainer {
        id: String::new(),
        name: String::new(),
        provider: String::new(),
        addresses: BTreeMap::new(),
        ports: Vec::new(),
        running: false,
    }
}

fn sample_network_info() -> NetworkInfo {
    NetworkInfo {
        id: String::new(),
        name: String::new(),
        subnets: Vec::new(),
        gateways: Vec::new(),
        managed: false,
        created_by_migration: false,
    }
}

fn sample_decision() -> NetworkDecision {
    NetworkDecision {
        name: String::new(),
        source_subnet: None,
        mode: AddressMode::Remap,
        reason: String::new(),
        create: None,
    }
}

fn sample_record() -> DnsRecord {
    DnsRecord { name: "n.".into(), rtype: RecordType::A, ttl: 1, value: "10.0.0.1".into() }
}

fn sample_plan() -> MigrationPlan {
    MigrationPlan {
        container: String::new(),
        source: String::new(),
        destination: String::new(),
        source_id: String::new(),
        checkpoint: String::new(),
        image: String::new(),
        image_on_destination: false,
        path: PlannedPath::Docker { reason: String::new() },
        networks: Vec::new(),
        forwarding: Vec::new(),
        tcp: None,
        tcp_reason: String::new(),
        memory: MemoryMode::StopAndCopy,
        memory_reason: String::new(),
        compression: vimigrate_protocol::StreamCompression::Off,
        compression_reason: String::new(),
        pre_copy: None,
        destination_runtime: None,
        address_map: BTreeMap::new(),
        assigned_addresses: BTreeMap::new(),
        rewrite_sockets: false,
        sockets_can_follow: false,
        peer_files: Vec::new(),
        criu_check: false,
        hosts: HostComparison::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_has_names() {
        let shapes = shapes();
        for (name, names) in &shapes {
            assert!(!names.is_empty(), "{name} has no fields or variants: its sample does not parse");
        }
        assert!(shapes["MigrationOptions"].contains(&"criu_tcp".to_string()), "{:?}", shapes["MigrationOptions"]);
        assert_eq!(shapes["Method"], ["auto", "direct", "docker"]);
        assert_eq!(shapes["Rollback"], ["failed", "held", "lost", "nothing_to_undo", "resumed", "undone"]);
        assert_eq!(shapes["MemoryMode"], ["auto", "post-copy", "pre-copy", "stop-and-copy"]);
        assert!(shapes["Phase"].contains(&"checkpoint".to_string()));
        assert_eq!(shapes["ProviderConfig"].len(), 8, "{:?}", shapes["ProviderConfig"]);
    }
}
