//! The host's facts for the broker's preflight (see [`vimigrate_protocol::host_facts`]): read
//! here because only the host knows its CPU's features and the CRIU runc will run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use vimigrate_protocol::host_facts::{self, CriuFacts, HostFacts, CRIU_FEATURES, FACTS_VERSION};
use vimigrate_protocol::{FACTS_FILE, FACTS_REQUEST_FILE};

use crate::fs::state_files::{write_private, StateDir};

/// Answers a facts request left in `state`, if there is one: writes the facts, then removes
/// the request (so a restart of the probe never asks again). Failures only leave the answer
/// out; the broker then reports that the host did not answer.
pub fn answer_request(state: &StateDir) {
    let request = state.path().join(FACTS_REQUEST_FILE);
    if !request.exists() {
        return;
    }
    let facts = read_host_facts();
    let bytes = serde_json::to_vec_pretty(&facts).unwrap_or_default();
    if let Err(e) = write_private(&state.path().join(FACTS_FILE), &bytes) {
        eprintln!("vimigrate-runtime: write {FACTS_FILE}: {e}");
    }
    let _ = std::fs::remove_file(request);
}

/// Reads this host's facts.
pub fn read_host_facts() -> HostFacts {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    HostFacts {
        version: FACTS_VERSION,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        cpu_model: host_facts::cpuinfo_field(&cpuinfo, "model name").unwrap_or_default().to_string(),
        cpu_flags: host_facts::parse_cpu_flags(&cpuinfo),
        cgroup_version: cgroup_version(Path::new("/sys/fs/cgroup")),
        criu: find_on_path("criu").map(|path| criu_facts(&path)),
        runtime_features: vimigrate_protocol::RUNTIME_FEATURES.iter().map(|f| f.to_string()).collect(),
        pipe_max_size: std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0),
        cap_sys_resource: has_capability(CAP_SYS_RESOURCE),
    }
}

/// The capability number of CAP_SYS_RESOURCE.
const CAP_SYS_RESOURCE: u32 = 24;

/// Whether this process has capability `cap` in its effective set.
fn has_capability(cap: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask >> cap & 1 == 1)
}

/// 2 when `dir` is a cgroup2 mount (the unified hierarchy), else 1.
fn cgroup_version(dir: &Path) -> u8 {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else { return 1 };
    // SAFETY: statfs writes into the zeroed struct it is given; the path is NUL-terminated.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c_path.as_ptr(), &mut buf) };
    if rc == 0 && buf.f_type as i64 == CGROUP2_SUPER_MAGIC {
        2
    } else {
        1
    }
}

/// The first executable `name` on `PATH` (dockerd's, inherited through containerd: the one
/// runc finds).
/// The first executable `name` on `PATH` (dockerd's, where runc finds CRIU too).
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| candidate.is_file())
}

fn criu_facts(criu: &Path) -> CriuFacts {
    let version = output(criu, &["--version"]).and_then(|(_, text)| host_facts::parse_criu_version(&text));
    let check = output(criu, &["check"]);
    let check_ok = check.as_ref().is_some_and(|(ok, text)| *ok && text.contains("Looks good"));
    let check_message = match &check {
        Some(_) if check_ok => String::new(),
        Some((_, text)) => text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string(),
        None => format!("{} could not be run", criu.display()),
    };
    let features: BTreeMap<String, bool> = CRIU_FEATURES
        .iter()
        .map(|feature| {
            let supported = output(criu, &["check", "--feature", feature])
                .is_some_and(|(ok, text)| ok && text.contains("is supported"));
            (feature.to_string(), supported)
        })
        .collect();
    CriuFacts {
        path: criu.display().to_string(),
        version: version.unwrap_or_default(),
        check_ok,
        check_message,
        features,
    }
}

/// Runs `program args`; its success and its stdout and stderr together (CRIU prints its
/// verdicts on either).
fn output(program: &Path, args: &[&str]) -> Option<(bool, String)> {
    let out = Command::new(program).args(args).stdin(Stdio::null()).output().ok()?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Some((out.status.success(), text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_hosts_facts_are_read() {
        let facts = read_host_facts();
        assert_eq!(facts.version, FACTS_VERSION);
        assert!(!facts.kernel.is_empty());
        assert!(facts.cgroup_version == 1 || facts.cgroup_version == 2);
        if cfg!(target_arch = "x86_64") {
            assert!(facts.has_cpu_flag("sse2"), "an x86_64 CPU has sse2: {:?}", facts.cpu_flags);
        }
    }

    #[test]
    fn a_request_is_answered_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::of(dir.path());
        std::fs::create_dir_all(state.path()).unwrap();
        answer_request(&state);
        assert!(!state.path().join(FACTS_FILE).exists(), "no request, no answer");
        std::fs::write(state.path().join(FACTS_REQUEST_FILE), b"").unwrap();
        answer_request(&state);
        let facts: HostFacts = serde_json::from_slice(&std::fs::read(state.path().join(FACTS_FILE)).unwrap()).unwrap();
        assert_eq!(facts.version, FACTS_VERSION);
        assert!(!state.path().join(FACTS_REQUEST_FILE).exists());
    }
}
