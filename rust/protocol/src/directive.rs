//! What the broker asks of `vimigrate-runtime` about one container: a dump streamed to the
//! destination host, or a restore (from what arrives, or from a dump already on the host).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};

use crate::secret::Secret;
#[cfg(test)]
use crate::DIRECTIVE_VERSION;

/// One request to the wrapper about one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directive {
    /// [`crate::DIRECTIVE_VERSION`].
    pub version: u32,
    /// The migration this belongs to: its checkpoint name. Status reports carry it, so that the
    /// broker never mistakes an earlier migration's report for this one's.
    pub migration: String,
    /// Where the checkpoint images are on this host: the container's Docker checkpoint
    /// directory `<DockerRootDir>/containers/<id>/checkpoints/<migration>`, so that Docker's own
    /// checkpoint API lists and deletes them.
    pub images_dir: String,
    /// CRIU options for this dump or restore.
    pub criu: CriuOptions,
    /// Unix time (ms) after which a wrapper still waiting gives up: a broker that died never
    /// leaves a `docker start` hanging.
    pub deadline_unix_ms: u64,
    /// Longest silence on the transfer connection before it is abandoned (ms).
    pub io_timeout_ms: u64,
    /// What to do.
    pub action: Action,
}

/// What the wrapper does when Docker calls it for the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// On `checkpoint`: dump into [`Directive::images_dir`] and stream the writable layer's
    /// changes, the named volumes and the images to the destination.
    Dump(DumpDirective),
    /// On `create` (a plain `docker start`): restore from the images instead of starting the
    /// command afresh, after receiving them when `receive` is set.
    Restore(RestoreDirective),
    /// On `create` of a probe container: pre-copy's rounds for another container of this
    /// runtime, while it runs (see [`PreCopyDirective`]); the probe then starts as usual.
    PreCopy(PreCopyDirective),
}

/// Pre-copy's rounds, run from the `create` of a probe container because Docker's checkpoint
/// call freezes the container (containerd pauses the task) for the whole call: outside it, the
/// service runs while CRIU pre-dumps (`runc checkpoint --pre-dump`, each round freezing it only
/// while CRIU collects the dirty pages) and the rounds stream to the destination. The chain
/// (`pre-N/` in the container's images directory, [`Directive::images_dir`]) and the rounds'
/// figures ([`crate::PRE_COPY_FILE`]) stay for the dump that freezes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreCopyDirective {
    /// The id of the container to pre-dump (runs under this runtime, on this host).
    pub container: String,
    /// The destination's receiver, which takes the rounds and then waits for the dump.
    pub send: SendTo,
    /// The rounds' bounds.
    pub bounds: PreCopy,
    /// Whether the rounds' stream is compressed.
    #[serde(default, skip_serializing_if = "StreamCompression::is_off")]
    pub compression: StreamCompression,
}

/// How to dump and where to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DumpDirective {
    /// The destination's receiver; `None` dumps locally only.
    pub send: Option<SendTo>,
    /// What the destination already holds of the writable layer (copied while the service
    /// ran): only entries that differ from it are sent after the freeze.
    #[serde(default)]
    pub baseline: Vec<BaselineEntry>,
    /// Mount points of named volumes, sent whole after the freeze.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Paths (absolute in the container) the layer delta leaves out: volume mount points.
    #[serde(default)]
    pub excluded: Vec<String>,
    /// Fault injection for the project's own tests of the integrity checks and rollbacks.
    #[serde(default)]
    pub fault: Option<Fault>,
    /// Post-copy: CRIU dumps everything but the memory (`--lazy-pages`), and serves the pages
    /// over the transfer connection once the images went, until the destination has them all;
    /// the processes stay frozen here until then, and are discarded once every page arrived.
    #[serde(default, skip_serializing_if = "is_false")]
    pub lazy_pages: bool,
    /// Whether the stream is compressed (zstd), chunk by chunk; the destination's runtime must
    /// list [`crate::COMPRESSION`] in its features.
    #[serde(default, skip_serializing_if = "StreamCompression::is_off")]
    pub compression: StreamCompression,
    /// Pre-copy: the rounds ran (see [`PreCopyDirective`]); the dump takes the last one as
    /// its parent and carries only what was dirtied since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pre_copy: Option<PreCopy>,
}

/// Whether the source's runtime compresses the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamCompression {
    /// As it is.
    #[default]
    Off,
    /// Each chunk compressed when that pays: it shrinks, and the link is slower than the
    /// compressor (both measured during the transfer).
    Adaptive,
    /// Each chunk compressed when it shrinks, whatever the link.
    Always,
}

impl StreamCompression {
    /// True for [`StreamCompression::Off`].
    pub fn is_off(&self) -> bool {
        *self == StreamCompression::Off
    }
}

/// The bounds of pre-copy's rounds, as P.Haul bounds its iterations: rounds go on while the
/// memory dirtied since the last one shrinks, and stop at `max_rounds`, once a round carried
/// less than `enough_bytes`, or when a round did not shrink below `shrink_percent` % of the
/// one before (the service dirties memory as fast as it goes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreCopy {
    /// Pre-dumps at most, the first (all the memory) included.
    pub max_rounds: u32,
    /// A round that carried fewer bytes is the last one.
    pub enough_bytes: u64,
    /// A round must carry less than this percentage of the one before for another to follow.
    pub shrink_percent: u32,
}

impl Default for PreCopy {
    fn default() -> PreCopy {
        PreCopy { max_rounds: 5, enough_bytes: 4 << 20, shrink_percent: 80 }
    }
}

/// A failure a runtime provokes on purpose, for the project's own tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The source flips a byte of the image stream after it was hashed: the destination must
    /// catch it.
    CorruptStream,
    /// The destination fails its restore once everything arrived, as a CRIU restore that fails
    /// would: the migration (or its whole group) must resume on the source.
    FailRestore,
}

/// Where the source's wrapper connects to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendTo {
    /// `host:port` of the destination's receiver, as reachable from the source host.
    pub address: String,
    /// Proves to the receiver that the sender is the one this migration expects.
    #[serde(serialize_with = "expose")]
    pub token: Secret,
    /// The receiver's certificate (DER, base64), generated for this migration: the sender
    /// accepts no other, so the transfer is encrypted and authenticated end to end.
    pub server_cert: String,
}

/// How to restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreDirective {
    /// Receive the images first; `None` restores from images already in
    /// [`Directive::images_dir`] (a rollback on the source).
    pub receive: Option<ReceiveFrom>,
    /// Files inside the container whose peer addresses are rewritten before the restore.
    #[serde(default)]
    pub peer_files: Vec<String>,
    /// Old peer address -> new, for `peer_files`.
    #[serde(default)]
    pub address_map: BTreeMap<String, String>,
    /// Post-copy: restore without the memory (`--lazy-pages`) once the images arrived; CRIU's
    /// lazy-pages daemon fetches the pages from the source over the transfer connection, and
    /// the container is killed here if they stop coming.
    #[serde(default, skip_serializing_if = "is_false")]
    pub lazy_pages: bool,
    /// Rewrite the addresses of the dumped inet sockets by `address_map` before the restore,
    /// both ends of each connection: a group's members keep their connections to each other
    /// across a remapped subnet.
    #[serde(default, skip_serializing_if = "is_false")]
    pub rewrite_sockets: bool,
    /// Fault injection for the project's own tests ([`Fault::FailRestore`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
}

/// The destination's receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveFrom {
    /// Address to listen on, `0.0.0.0:PORT` (port 0: any free port, reported in the status).
    pub listen: String,
    /// The token the sender must present.
    #[serde(serialize_with = "expose")]
    pub token: Secret,
    /// This migration's certificate (DER, base64).
    pub cert: String,
    /// Its private key (PKCS#8 DER, base64).
    #[serde(serialize_with = "expose")]
    pub key: Secret,
}

/// What CRIU does with established TCP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpMode {
    /// `tcp-established`: connections are checkpointed and survive (same addresses needed).
    Established,
    /// `tcp-close`: connections come back closed; peers reconnect.
    Close,
}

/// CRIU options of one dump or restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriuOptions {
    /// `None` keeps the host's `/etc/criu/runc.conf` choice.
    pub tcp: Option<TcpMode>,
    /// Drop connections still in a listening socket's accept queue instead of failing the dump.
    pub skip_in_flight: bool,
}

/// One file of the writable layer as the destination received it before the freeze.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaselineEntry {
    /// Absolute path inside the container.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i128,
    /// Permission bits and file type as `stat` gives them (`st_mode`), or the permission bits
    /// alone when only those are known.
    pub mode: u32,
}

fn is_false(value: &bool) -> bool {
    !value
}

fn expose<S: Serializer>(secret: &Secret, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(secret.expose())
}

impl Directive {
    /// The directive as written to the host (secrets included: the file is 0600 in a 0700
    /// directory readable by root only, and deleted once used).
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain data into a Vec cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Directive {
        Directive {
            version: DIRECTIVE_VERSION,
            migration: "vimigrate-1".into(),
            images_dir: "/var/lib/docker/containers/abc/checkpoints/vimigrate-1".into(),
            criu: CriuOptions { tcp: Some(TcpMode::Close), skip_in_flight: true },
            deadline_unix_ms: 1,
            io_timeout_ms: 30_000,
            action: Action::Restore(RestoreDirective {
                receive: Some(ReceiveFrom {
                    listen: "0.0.0.0:0".into(),
                    token: Secret::new("t0ken"),
                    cert: "Y2VydA==".into(),
                    key: Secret::new("a2V5"),
                }),
                peer_files: vec![],
                address_map: BTreeMap::new(),
                lazy_pages: false,
                rewrite_sockets: false,
                fault: None,
            }),
        }
    }

    #[test]
    fn secrets_reach_the_file_and_round_trip() {
        let directive = sample();
        let json = directive.to_json();
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("t0ken") && text.contains("a2V5"), "{text}");
        assert!(text.contains(r#""restore": {"#), "{text}");
        assert!(!text.contains("lazy_pages"), "left out unless asked, for older runtimes: {text}");
        let back: Directive = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, directive);
    }

    #[test]
    fn debug_output_redacts_the_secrets() {
        let text = format!("{:?}", sample());
        assert!(!text.contains("t0ken") && !text.contains("a2V5"), "{text}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut value: serde_json::Value = serde_json::from_slice(&sample().to_json()).unwrap();
        value["surprise"] = serde_json::json!(1);
        assert!(serde_json::from_value::<Directive>(value).is_err());
    }
}
