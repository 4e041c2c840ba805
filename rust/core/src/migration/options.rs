//! What to migrate and how, as the caller gives it, checked in one place ([`MigrationOptions::validate`])
//! before any provider is asked anything.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use vimigrate_protocol::Fault;

use crate::checkpoint::criu_options::CriuTcp;
use crate::checkpoint::validate_checkpoint_name;
use crate::error::InputError;
use crate::migration::compression::Compression;
use crate::migration::host_checks::HostCheckKind;
use crate::migration::memory::MemoryMode;
use crate::provider::spec::is_valid_docker_name;

/// What to migrate and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationOptions {
    /// Name or id of the running container on the source provider.
    pub container: String,
    /// Keep the (stopped) source container after a successful migration.
    #[serde(default, deserialize_with = "crate::serde_strict::strict_bool")]
    pub keep_source: bool,
    /// Read the checkpoint back from the destination and compare it with what was sent before
    /// restoring (detects a corrupted transfer; costs one more read of the images).
    #[serde(default = "yes", deserialize_with = "crate::serde_strict::strict_bool")]
    pub verify: bool,
    /// Prove checkpoint/restore works on both hosts with a probe container before anything
    /// changes (about a second per provider).
    #[serde(default = "yes", deserialize_with = "crate::serde_strict::strict_bool")]
    pub check_criu: bool,
    /// Checkpoint name; default `vimigrate-<unix time in ms>`.
    #[serde(default)]
    pub checkpoint_name: Option<String>,
    /// Published host ports taken on the destination, moved to other ports there:
    /// `{"8080": 18080}`.
    #[serde(default)]
    pub port_map: BTreeMap<String, u16>,
    /// Peer addresses that changed (old -> new, as `"172.29.0.2"` or `"172.29.0.2:6379"`),
    /// rewritten in the environment, extra hosts entries and `peer_files` before the restore.
    #[serde(default)]
    pub address_map: BTreeMap<String, String>,
    /// Files inside the container that hold peer addresses (absolute paths).
    #[serde(default)]
    pub peer_files: Vec<String>,
    /// What CRIU does with established TCP connections (see [`CriuTcp`]).
    #[serde(default)]
    pub criu_tcp: CriuTcp,
    /// How the checkpoint moves (see [`Method`]).
    #[serde(default)]
    pub method: Method,
    /// How the memory moves (see [`MemoryMode`]): inside the freeze (the default), or after
    /// the restore (`post-copy`, with its price).
    #[serde(default)]
    pub memory: MemoryMode,
    /// Whether the direct path's stream is compressed (see [`Compression`]): where it pays by
    /// default.
    #[serde(default)]
    pub compression: Compression,
    /// Host checks of the preflight to override (`cpu`, `criu`, `cgroup`, `engine`, see
    /// [`HostCheckKind`]): their findings stay in the plan and the report, but no longer stop
    /// the migration. For a user who knows, e.g., that the container's process never uses the
    /// CPU feature the destination lacks.
    #[serde(default)]
    pub ignore_host_checks: Vec<HostCheckKind>,
    /// Fault injection for the project's own tests (direct path only).
    #[serde(default)]
    pub fault: Option<Fault>,
}

/// How a migration moves the checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The direct path when both hosts offer it (see [`vimigrate_protocol`]), else
    /// Docker's checkpoint API; the report says which was taken and why.
    #[default]
    Auto,
    /// The direct path, or a preflight error saying why it is not possible.
    Direct,
    /// Docker's checkpoint API (`docker checkpoint create`, the images through the broker,
    /// `docker start --checkpoint`).
    Docker,
}

fn yes() -> bool {
    true
}

/// The options as the migration uses them, once checked: every later step relies on these
/// without checking again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckedOptions {
    /// The checkpoint's name: the one given, or `vimigrate-<unix time in ms>`.
    pub checkpoint: String,
    /// `port_map` with its keys parsed: source host port -> destination host port.
    pub port_map: BTreeMap<u16, u16>,
}

impl MigrationOptions {
    /// Checks what can be checked without a provider; the error names the first wrong field.
    pub fn validate(&self) -> Result<(), InputError> {
        self.checked().map(|_| ())
    }

    /// [`MigrationOptions::validate`], returning what the checks parsed.
    pub(crate) fn checked(&self) -> Result<CheckedOptions, InputError> {
        if !is_valid_docker_name(&self.container) {
            return Err(InputError::new("container", "a container name or id", &self.container));
        }
        let checkpoint = match &self.checkpoint_name {
            Some(name) => {
                validate_checkpoint_name(name).map_err(|e| InputError { field: "checkpoint_name".into(), ..e })?;
                name.clone()
            }
            None => default_checkpoint_name(),
        };
        let mut port_map = BTreeMap::new();
        for (key, port) in &self.port_map {
            let from = key.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                InputError::new(format!("port_map.{key}"), "a host port number (1..=65535) as the key", key)
            })?;
            if *port == 0 {
                return Err(InputError::new(format!("port_map.{key}"), "a port in 1..=65535", port));
            }
            port_map.insert(from, *port);
        }
        for (i, path) in self.peer_files.iter().enumerate() {
            if !path.starts_with('/') {
                return Err(InputError::new(
                    format!("peer_files[{i}]"),
                    "an absolute path of a file in the container",
                    path,
                ));
            }
        }
        Ok(CheckedOptions { checkpoint, port_map })
    }

    /// Options for migrating `container` with the defaults.
    pub fn new(container: impl Into<String>) -> Self {
        MigrationOptions {
            container: container.into(),
            keep_source: false,
            verify: true,
            check_criu: true,
            checkpoint_name: None,
            port_map: BTreeMap::new(),
            address_map: BTreeMap::new(),
            peer_files: Vec::new(),
            criu_tcp: CriuTcp::Auto,
            method: Method::Auto,
            memory: MemoryMode::StopAndCopy,
            compression: Compression::Auto,
            ignore_host_checks: Vec::new(),
            fault: None,
        }
    }
}

fn default_checkpoint_name() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    format!("vimigrate-{}", now.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    type Change = Box<dyn FnOnce(&mut MigrationOptions)>;

    fn with(change: impl FnOnce(&mut MigrationOptions)) -> Result<CheckedOptions, InputError> {
        let mut options = MigrationOptions::new("web");
        change(&mut options);
        options.checked()
    }

    #[test]
    fn defaults_pass_and_name_a_checkpoint() {
        let checked = with(|_| {}).unwrap();
        assert!(checked.checkpoint.starts_with("vimigrate-"), "{}", checked.checkpoint);
        assert!(validate_checkpoint_name(&checked.checkpoint).is_ok());
    }

    #[test]
    fn each_wrong_field_is_named() {
        let cases: [(&str, Change); 7] = [
            ("container", Box::new(|o| o.container = "bad name".into())),
            ("checkpoint_name", Box::new(|o| o.checkpoint_name = Some("x".into()))),
            ("checkpoint_name", Box::new(|o| o.checkpoint_name = Some("../cp".into()))),
            (
                "port_map.http",
                Box::new(|o| {
                    o.port_map.insert("http".into(), 80);
                }),
            ),
            (
                "port_map.0",
                Box::new(|o| {
                    o.port_map.insert("0".into(), 80);
                }),
            ),
            (
                "port_map.8080",
                Box::new(|o| {
                    o.port_map.insert("8080".into(), 0);
                }),
            ),
            ("peer_files[1]", Box::new(|o| o.peer_files = vec!["/etc/a".into(), "etc/b".into()])),
        ];
        for (field, change) in cases {
            let err = with(change).unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
    }

    #[test]
    fn the_port_map_is_parsed_once() {
        let checked = with(|o| {
            o.port_map.insert("8080".into(), 18080);
            o.checkpoint_name = Some("cp-1".into());
        })
        .unwrap();
        assert_eq!(checked.port_map, BTreeMap::from([(8080, 18080)]));
        assert_eq!(checked.checkpoint, "cp-1");
    }

    #[test]
    fn unknown_fields_and_non_booleans_are_refused() {
        let parse = |v: serde_json::Value| serde_json::from_value::<MigrationOptions>(v);
        assert!(parse(serde_json::json!({"container": "web", "surprise": 1})).is_err());
        assert!(parse(serde_json::json!({"container": "web", "keep_source": "no"})).is_err());
        assert!(parse(serde_json::json!({"container": "web"})).is_ok());
    }
}
