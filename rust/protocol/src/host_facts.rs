//! What a provider host is, as `vimigrate-runtime` reads it there for the broker's preflight:
//! kernel, CPU features, cgroup version and the CRIU that runc will run, with the CRIU features
//! migration options depend on. Docker's API tells the engine's versions but nothing of CRIU
//! or of the CPU's features, and the broker never runs anything on a host but containers, so the
//! wrapper (which runs on the host, with dockerd's `PATH`, exactly where runc runs CRIU) answers.
//!
//! The broker asks by writing [`FACTS_REQUEST_FILE`] into a probe container's [`crate::STATE_DIR`]
//! before starting it; the wrapper's `create` writes [`FACTS_FILE`] there, removes the request and
//! creates the container as runc would (the probe only waits to be removed).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The broker's request for the host's facts, in [`crate::STATE_DIR`]; its content is ignored.
pub const FACTS_REQUEST_FILE: &str = "facts-request";
/// The wrapper's answer, a JSON [`HostFacts`], in [`crate::STATE_DIR`].
pub const FACTS_FILE: &str = "host-facts.json";
/// The version of [`HostFacts`]; the broker ignores answers of another version.
pub const FACTS_VERSION: u32 = 1;

/// CRIU features (names as `criu check --feature` takes them) the wrapper asks about: lazy
/// pages over userfaultfd (post-copy) and soft-dirty tracking (pre-copy).
pub const CRIU_FEATURES: &[&str] = &["uffd-noncoop", "mem_dirty_track"];

/// The runtime holds the addresses a restore's sockets are bound to in a network namespace that
/// lacks them (Docker >= 28 wires the namespace after the restore), so that established TCP
/// connections restore there.
pub const HOLDS_RESTORE_ADDRESSES: &str = "restore-addresses";
/// The runtime dumps and restores with lazy pages and relays them between the hosts
/// (post-copy).
pub const POST_COPY: &str = "post-copy";
/// The runtime reads zstd-compressed chunks of the stream (and compresses its own).
pub const COMPRESSION: &str = "zstd";
/// The runtime pre-dumps memory while the service runs and streams it (pre-copy), and restores
/// from a chain of pre-dumps.
pub const PRE_COPY: &str = "pre-copy";
/// Every feature this version of `vimigrate-runtime` has.
pub const RUNTIME_FEATURES: &[&str] = &[HOLDS_RESTORE_ADDRESSES, POST_COPY, COMPRESSION, PRE_COPY];

/// One host's facts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    /// [`FACTS_VERSION`].
    pub version: u32,
    /// The kernel release (`uname -r`).
    pub kernel: String,
    /// The CPU's model name, from `/proc/cpuinfo`.
    #[serde(default)]
    pub cpu_model: String,
    /// The CPU's feature flags, from `/proc/cpuinfo`, sorted.
    #[serde(default)]
    pub cpu_flags: Vec<String>,
    /// `1` or `2`: the cgroup hierarchy mounted at `/sys/fs/cgroup`.
    #[serde(default)]
    pub cgroup_version: u8,
    /// The CRIU runc runs here; `None` when none is on `PATH`.
    #[serde(default)]
    pub criu: Option<CriuFacts>,
    /// What this host's `vimigrate-runtime` can do beyond the directive format (the names of
    /// [`RUNTIME_FEATURES`] it has): a broker newer than a host's runtime asks before relying
    /// on them.
    #[serde(default)]
    pub runtime_features: Vec<String>,
    /// `fs.pipe-max-size`: without CAP_SYS_RESOURCE, CRIU cannot grow its pipes beyond it,
    /// and its lazy pages (post-copy) fail below [`LAZY_PAGES_PIPE_SIZE`] ("splice: Bad file
    /// descriptor"). 0 when unknown.
    #[serde(default)]
    pub pipe_max_size: u64,
    /// Whether the runtime (and so runc's CRIU) runs with CAP_SYS_RESOURCE.
    #[serde(default)]
    pub cap_sys_resource: bool,
}

/// The pipe size CRIU's lazy pages need when it cannot raise the limit itself (measured here:
/// 4 MiB worked, the default 1 MiB did not).
pub const LAZY_PAGES_PIPE_SIZE: u64 = 4 << 20;

/// The CRIU of a host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CriuFacts {
    /// Its path, as found on dockerd's `PATH`.
    pub path: String,
    /// `criu --version`'s version, e.g. `4.2.1`.
    pub version: String,
    /// Whether `criu check` says "Looks good" (TCP repair, namespaces, ...).
    pub check_ok: bool,
    /// The last line `criu check` printed when it did not say "Looks good".
    #[serde(default)]
    pub check_message: String,
    /// Each of [`CRIU_FEATURES`]: whether `criu check --feature` says it is supported.
    #[serde(default)]
    pub features: BTreeMap<String, bool>,
}

impl HostFacts {
    /// Whether the CPU has `flag`.
    pub fn has_cpu_flag(&self, flag: &str) -> bool {
        self.cpu_flags.iter().any(|f| f == flag)
    }

    /// Whether the host's runtime has `feature` (one of [`RUNTIME_FEATURES`]).
    pub fn runtime_has(&self, feature: &str) -> bool {
        self.runtime_features.iter().any(|f| f == feature)
    }

    /// Why CRIU's lazy pages would fail on this host for its pipes, if they would.
    pub fn lazy_pages_pipe_problem(&self) -> Option<String> {
        (!self.cap_sys_resource && self.pipe_max_size > 0 && self.pipe_max_size < LAZY_PAGES_PIPE_SIZE).then(|| {
            format!(
                "fs.pipe-max-size is {} and CRIU runs without CAP_SYS_RESOURCE: its lazy pages need pipes of {} \
                 (sysctl -w fs.pipe-max-size={})",
                self.pipe_max_size, LAZY_PAGES_PIPE_SIZE, LAZY_PAGES_PIPE_SIZE
            )
        })
    }

    /// Whether the host's CRIU supports `feature` (one of [`CRIU_FEATURES`]).
    pub fn criu_supports(&self, feature: &str) -> bool {
        self.criu.as_ref().and_then(|c| c.features.get(feature)).copied().unwrap_or(false)
    }
}

/// The flags of the first processor in a `/proc/cpuinfo` text, sorted (every processor of one
/// host has the same). Empty when there is no `flags` line (not x86).
pub fn parse_cpu_flags(cpuinfo: &str) -> Vec<String> {
    let mut flags: Vec<String> = cpuinfo_field(cpuinfo, "flags")
        .map(|line| line.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    flags.sort();
    flags.dedup();
    flags
}

/// The first value of `field` in a `/proc/cpuinfo` text (`model name`, `flags`, ...).
pub fn cpuinfo_field<'a>(cpuinfo: &'a str, field: &str) -> Option<&'a str> {
    cpuinfo.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == field).then(|| value.trim())
    })
}

/// The version in `criu --version`'s output (`Version: 4.2.1`).
pub fn parse_criu_version(output: &str) -> Option<String> {
    output.lines().find_map(|line| line.trim().strip_prefix("Version:").map(|v| v.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)\n\
        flags\t\t: fpu sse2 avx2 avx512f\nbugs\t\t: spectre_v1\n\nprocessor\t: 1\nflags\t\t: fpu\n";

    #[test]
    fn cpu_flags_are_the_first_processors_sorted() {
        assert_eq!(parse_cpu_flags(CPUINFO), ["avx2", "avx512f", "fpu", "sse2"]);
        assert_eq!(cpuinfo_field(CPUINFO, "model name"), Some("Intel(R) Xeon(R)"));
        assert!(parse_cpu_flags("processor : 0\n").is_empty());
    }

    #[test]
    fn criu_version_is_read_from_its_banner() {
        assert_eq!(parse_criu_version("Version: 4.2.1\n").as_deref(), Some("4.2.1"));
        assert_eq!(parse_criu_version("Version: 4.1.1\nGitID: v4.1.1\n").as_deref(), Some("4.1.1"));
        assert_eq!(parse_criu_version("criu: command not found"), None);
    }

    #[test]
    fn an_old_answer_without_optional_fields_still_parses() {
        let facts: HostFacts = serde_json::from_str(r#"{"version":1,"kernel":"6.12.0"}"#).unwrap();
        assert_eq!(facts.kernel, "6.12.0");
        assert!(!facts.criu_supports("uffd-noncoop"));
    }
}
