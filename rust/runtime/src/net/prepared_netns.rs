//! The destination's network namespace, set up by Docker before the freeze.
//!
//! A Docker container's network namespace is created by runc and filled by Docker's prestart
//! hook (`libnetwork-setkey`: dockerd's binary re-executed to move the prepared interface in,
//! address it and route it). During a `runc restore` that hook runs while the service is
//! down: about 120 ms here, the largest fixed cost of a restore. So the wrapper runs it while
//! the destination waits for the transfer, on an empty namespace held by a small child
//! process, and hands that namespace to `runc restore` as an external one (runc gives it to
//! CRIU through `--inherit-fd`). The source's dump marks its namespace external to match
//! ([`external_netns_option`]), which CRIU records in the images.
//!
//! Afterwards the container looks to runc as any other Docker container: runc's state forgets
//! the namespace's path (the restored processes hold the namespace, and dockerd's own bind
//! mount of it stays), so a later Docker checkpoint of this container is an ordinary one that
//! any Docker host can restore.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::RuntimeError;
use crate::fs::state_files::write_private;
use crate::runc::spec::{runc_state, Spec};

/// The argument that makes this binary the namespace holder.
pub const HOLDER_ARG: &str = "--vimigrate-hold-netns";
/// The key runc uses for an external network namespace (`extRoot<Type>NS`).
const EXT_NETNS_KEY: &str = "extRootNetNS";
/// Docker's network hook, recognised by its first argument.
const SETKEY_HOOK: &str = "libnetwork-setkey";
/// How long a hook may run when the spec sets no timeout.
const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// The body of the holder process: it only keeps its namespace alive, until its parent closes
/// its standard input (or dies).
pub fn hold() -> i32 {
    let mut sink = [0u8; 64];
    while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
    0
}

/// A network namespace prepared for a restore, and the spec changed to use it.
#[derive(Debug)]
pub struct PreparedNetns {
    holder: Child,
    /// The namespace, as the spec given to `runc restore` names it.
    pub path: PathBuf,
    /// How long creating the namespace and running Docker's hooks took.
    pub elapsed: Duration,
}

impl Drop for PreparedNetns {
    fn drop(&mut self) {
        // Closing its stdin ends the holder; the namespace lives on in whoever else holds it.
        drop(self.holder.stdin.take());
        if self.holder.wait().is_err() {
            let _ = self.holder.kill();
        }
    }
}

/// Prepares the network namespace of container `id` before its restore: a new namespace
/// (held by a child), Docker's network hooks run on it, and the spec (`config.json`) rewritten
/// to join it instead of running those hooks again. `None` when the spec already names a
/// namespace or has none of its own: runc then handles it as it did at the dump.
pub fn prepare(spec: &mut Spec, id: &str) -> Result<Option<PreparedNetns>, RuntimeError> {
    let started = Instant::now();
    let doc = spec.document_mut();
    let Some(netns) = network_entry(doc) else { return Ok(None) };
    if netns.get("path").and_then(Value::as_str).is_some_and(|p| !p.is_empty()) {
        return Ok(None);
    }
    let me = std::env::current_exe().map_err(RuntimeError::io("network", "find this program"))?;
    let mut command = Command::new(me);
    command.arg(HOLDER_ARG).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null());
    // SAFETY: unshare is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let holder = command.spawn().map_err(RuntimeError::io("network", "start the network namespace's holder"))?;
    let path = PathBuf::from(format!("/proc/{}/ns/net", holder.id()));
    let mut prepared = PreparedNetns { holder, path, elapsed: Duration::ZERO };

    let hooks = take_setkey_hooks(doc);
    let state = serde_json::json!({
        "ociVersion": doc.get("ociVersion").cloned().unwrap_or(Value::String("1.0.2".into())),
        "id": id,
        "status": "creating",
        "pid": prepared.holder.id(),
        "bundle": spec.bundle.to_string_lossy(),
        "annotations": spec.document_mut().get("annotations").cloned().unwrap_or(Value::Null),
    });
    for hook in &hooks {
        run_hook(hook, &state)?;
    }
    let doc = spec.document_mut();
    if let Some(entry) = network_entry(doc) {
        entry["path"] = Value::String(prepared.path.to_string_lossy().into_owned());
    }
    spec.save()?;
    prepared.elapsed = started.elapsed();
    Ok(Some(prepared))
}

/// After a successful restore: runc's state forgets the namespace's path, so that runc treats
/// the container as one whose namespace it created (its next checkpoint is then an ordinary
/// one), and the bundle's spec is Docker's again.
pub fn forget_path(runc_root: &Path, id: &str, original_spec: &Spec) -> Result<(), RuntimeError> {
    original_spec.save()?;
    let (path, mut state) = runc_state(runc_root, id, "network")?;
    let Some(namespaces) = state["config"]["namespaces"].as_array_mut() else { return Ok(()) };
    for ns in namespaces.iter_mut().filter(|ns| ns["type"].as_str() == Some("NEWNET")) {
        ns["path"] = Value::String(String::new());
    }
    let body = serde_json::to_vec(&state).map_err(|e| RuntimeError::Directive(e.to_string()))?;
    write_private(&path, &body).map_err(RuntimeError::io("network", format!("replace {}", path.display())))
}

/// The CRIU option that marks the container's network namespace external in its dump (what
/// the destination's prepared namespace replaces), from runc's state of container `id`;
/// `None` when runc marks it itself (the spec names the namespace) or it has none of its own.
pub fn external_netns_option(runc_root: &Path, id: &str) -> Result<Option<String>, RuntimeError> {
    let (_, state) = runc_state(runc_root, id, "network")?;
    external_option_from_state(&state, |ns_path| std::fs::metadata(ns_path).map(|m| m.ino()))
}

fn external_option_from_state(
    state: &Value,
    inode_of: impl Fn(&str) -> std::io::Result<u64>,
) -> Result<Option<String>, RuntimeError> {
    let own = state["config"]["namespaces"].as_array().into_iter().flatten().find(|ns| ns["type"] == "NEWNET");
    match own {
        None => return Ok(None),
        Some(ns) if ns["path"].as_str().is_some_and(|p| !p.is_empty()) => return Ok(None),
        Some(_) => {}
    }
    let ns_path = match state["namespace_paths"]["NEWNET"].as_str() {
        Some(p) => p.to_string(),
        None => match state["init_process_pid"].as_u64() {
            Some(pid) => format!("/proc/{pid}/ns/net"),
            None => return Err(RuntimeError::Directive("runc's state names no process of the container".into())),
        },
    };
    let inode = inode_of(&ns_path).map_err(RuntimeError::io("network", format!("stat {ns_path}")))?;
    Ok(Some(format!("external net[{inode}]:{EXT_NETNS_KEY}")))
}

fn network_entry(doc: &mut Value) -> Option<&mut Value> {
    doc["linux"]["namespaces"].as_array_mut()?.iter_mut().find(|ns| ns["type"].as_str() == Some("network"))
}

/// Removes Docker's network hooks from the spec's prestart hooks (the wrapper runs them) and
/// returns them; other hooks stay for runc to run at the restore with the restored process.
fn take_setkey_hooks(doc: &mut Value) -> Vec<Value> {
    let mut taken = Vec::new();
    for kind in ["prestart", "createRuntime"] {
        let Some(hooks) = doc["hooks"][kind].as_array_mut() else { continue };
        let (setkey, rest): (Vec<Value>, Vec<Value>) = hooks.drain(..).partition(is_setkey_hook);
        *hooks = rest;
        taken.extend(setkey);
    }
    taken
}

fn is_setkey_hook(hook: &Value) -> bool {
    hook["args"].as_array().and_then(|a| a.first()).and_then(Value::as_str) == Some(SETKEY_HOOK)
}

/// Runs one OCI hook as runc would: `path` with `args` (the first is argv[0]), only the hook's
/// own environment, the container's state on stdin, within its timeout.
fn run_hook(hook: &Value, state: &Value) -> Result<(), RuntimeError> {
    let path = hook["path"].as_str().ok_or_else(|| RuntimeError::Directive("a hook has no path".into()))?;
    let args: Vec<&str> = hook["args"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let mut command = Command::new(path);
    if let Some((argv0, rest)) = args.split_first() {
        command.arg0(argv0).args(rest);
    }
    command.env_clear();
    for pair in hook["env"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        if let Some((k, v)) = pair.split_once('=') {
            command.env(k, v);
        }
    }
    command.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = command.spawn().map_err(RuntimeError::io("network", format!("run Docker's hook {path}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let body = serde_json::to_vec(state).map_err(|e| RuntimeError::Directive(e.to_string()))?;
        match stdin.write_all(&body) {
            // A hook that exits without reading its state (a failing one, typically) closes the
            // pipe first: its exit status and stderr below say what happened, not the pipe.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other.map_err(RuntimeError::io("network", "give Docker's hook the container's state"))?,
        }
    }
    let timeout = hook["timeout"].as_u64().map(Duration::from_secs).unwrap_or(DEFAULT_HOOK_TIMEOUT);
    let started = Instant::now();
    let status = loop {
        match child.try_wait().map_err(RuntimeError::io("network", "wait for Docker's hook"))? {
            Some(status) => break status,
            None if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RuntimeError::Protocol {
                    step: "network",
                    detail: format!("Docker's network hook did not finish within {} s", timeout.as_secs()),
                });
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    };
    if !status.success() {
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        return Err(RuntimeError::Protocol {
            step: "network",
            detail: format!("Docker's network hook failed ({status}): {}", stderr.trim()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(path: &str) -> Value {
        serde_json::json!({
            "init_process_pid": 42,
            "config": {"namespaces": [{"type": "NEWNS", "path": ""}, {"type": "NEWNET", "path": path}]},
            "namespace_paths": {"NEWNET": "/proc/42/ns/net"},
        })
    }

    #[test]
    fn a_namespace_runc_created_is_marked_external_by_inode() {
        let option = external_option_from_state(&state(""), |p| {
            assert_eq!(p, "/proc/42/ns/net");
            Ok(4026532999)
        })
        .unwrap();
        assert_eq!(option.as_deref(), Some("external net[4026532999]:extRootNetNS"));
    }

    #[test]
    fn a_named_namespace_or_none_is_left_to_runc() {
        assert_eq!(external_option_from_state(&state("/run/netns/x"), |_| Ok(1)).unwrap(), None);
        let no_netns = serde_json::json!({"config": {"namespaces": [{"type": "NEWNS", "path": ""}]}});
        assert_eq!(external_option_from_state(&no_netns, |_| Ok(1)).unwrap(), None);
    }

    #[test]
    fn a_vanished_process_is_an_error_naming_the_path() {
        let err = external_option_from_state(&state(""), |_| Err(std::io::ErrorKind::NotFound.into())).unwrap_err();
        assert!(err.report().contains("/proc/42/ns/net"), "{}", err.report());
    }

    #[test]
    fn only_docker_network_hooks_are_taken() {
        let mut doc = serde_json::json!({"hooks": {"prestart": [
            {"path": "/proc/1/exe", "args": ["libnetwork-setkey", "-exec-root=/run/docker", "id", "ctl"]},
            {"path": "/usr/bin/other-hook", "args": ["other-hook"]},
        ]}});
        let taken = take_setkey_hooks(&mut doc);
        assert_eq!(taken.len(), 1);
        assert_eq!(doc["hooks"]["prestart"].as_array().unwrap().len(), 1);
        assert_eq!(doc["hooks"]["prestart"][0]["path"], "/usr/bin/other-hook");
    }

    #[test]
    fn a_failing_hook_reports_its_stderr() {
        let hook = serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", "echo broken >&2; exit 3"]});
        let err = run_hook(&hook, &serde_json::json!({})).unwrap_err();
        assert!(err.report().contains("broken") && err.report().starts_with("network:"), "{}", err.report());
    }

    #[test]
    fn a_hook_reads_the_state_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("state");
        let hook = serde_json::json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}", out.display())]});
        run_hook(&hook, &serde_json::json!({"pid": 7})).unwrap();
        let got: Value = serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap();
        assert_eq!(got["pid"], 7);
    }
}
