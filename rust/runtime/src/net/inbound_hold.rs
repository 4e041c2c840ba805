//! Inbound TCP dropped in a waiting destination's network namespace until its restore ended.
//!
//! A group's members restore in parallel (on the destination, or on their sources when the
//! group rolls back), each into a namespace that has its address from the moment its
//! container started (on the destination, before the freeze). A member restored first carries on at
//! once: the worker sends its next command, a socket leaving repair mode probes its peer's
//! window. Should that segment reach a peer whose namespace has the address but not yet the
//! socket (its restore still running), that kernel answers with a reset and the connection is
//! gone (seen on the lab: "Connection reset by peer" in one group move in three). Dropped
//! instead, the segment is sent again by TCP once the peer runs. So the namespace drops inbound
//! TCP while it waits: one iptables rule, inserted before the transfer and deleted right after
//! `runc restore` returned, when the restored sockets exist. CRIU's own network lock is
//! separate (its own chain) and comes and goes within the restore. Clients reaching the
//! published port meanwhile see their SYN dropped and sent again, rather than a refusal.
//!
//! Best effort: without an iptables on the host (or a kernel without its tables) the restore
//! goes on without the hold, as before, and the runtime's log says so.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::RuntimeError;

/// The rule, as `iptables` takes it after `-I INPUT 1` or `-D INPUT`.
const RULE: [&str; 4] = ["-p", "tcp", "-j", "DROP"];

/// Where hosts keep iptables (the runtime's PATH is containerd's, which may lack sbin).
const SEARCHED: [&str; 4] = ["/usr/sbin/iptables", "/sbin/iptables", "/usr/local/sbin/iptables", "/usr/bin/iptables"];

/// A hold in one namespace; [`InboundHold::release`] (or dropping it) deletes the rule.
#[derive(Debug)]
pub struct InboundHold {
    netns: File,
    iptables: PathBuf,
    held: bool,
}

/// Inserts the rule in the namespace at `netns` (a `/proc/<pid>/ns/net` path).
pub fn hold(netns: &Path) -> Result<InboundHold, RuntimeError> {
    let iptables =
        SEARCHED.iter().map(PathBuf::from).find(|p| p.exists()).ok_or_else(|| {
            RuntimeError::Directive("no iptables on this host (searched /usr/sbin, /sbin, ...)".into())
        })?;
    let netns = File::open(netns).map_err(RuntimeError::io("network", format!("open {}", netns.display())))?;
    let mut hold = InboundHold { netns, iptables, held: false };
    hold.run(&["-w", "5", "-I", "INPUT", "1"])?;
    hold.held = true;
    Ok(hold)
}

impl InboundHold {
    /// Deletes the rule: inbound TCP reaches the restored sockets again.
    pub fn release(mut self) -> Result<(), RuntimeError> {
        self.held = false;
        self.run(&["-w", "5", "-D", "INPUT"])
    }

    /// Runs iptables with `args` and the rule, inside the namespace.
    fn run(&self, args: &[&str]) -> Result<(), RuntimeError> {
        let fd = self.netns.as_raw_fd();
        let mut command = Command::new(&self.iptables);
        command.args(args).args(RULE).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        // SAFETY: setns is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let what = format!("{} {}", args.join(" "), RULE.join(" "));
        let output = command.output().map_err(RuntimeError::io("network", format!("run iptables {what}")))?;
        if output.status.success() {
            return Ok(());
        }
        Err(RuntimeError::Directive(format!(
            "iptables {what} in the container's namespace failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

impl Drop for InboundHold {
    fn drop(&mut self) {
        if self.held {
            let _ = self.run(&["-w", "5", "-D", "INPUT"]);
        }
    }
}
