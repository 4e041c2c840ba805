//! Post-copy on the source: CRIU dumps everything but the memory (`runc checkpoint
//! --lazy-pages`), keeps the processes frozen and serves their pages from a page server on
//! 127.0.0.1 until the destination's lazy-pages daemon has them all (the relay in
//! [`crate::transfer::page_relay`] carries them inside the migration's TLS connection).
//!
//! What CRIU does at the end decides what the source does, measured with CRIU 4.2 here:
//!
//! - when the page server's client closes its connection, CRIU takes the transfer as complete:
//!   "Lazy pages transfer finished successfully", and the processes are killed (the dump's
//!   final state). That is the end of a successful post-copy, and also how the source discards
//!   its copy once the destination has restored and the transfer broke: the memory is split
//!   between the hosts then, and neither copy may run on;
//! - when CRIU itself is killed, the processes are released where they were, memory intact:
//!   that is the rollback before the destination restored (runc then reports the checkpoint
//!   failed, and a container whose cgroup CRIU froze is thawed with `runc resume`).

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::error::RuntimeError;

/// Where CRIU's page server listens: this host only (the relay is its one client).
pub const PAGE_SERVER_ADDRESS: &str = "127.0.0.1";

/// The page server CRIU will run on this host, and the pipe on which runc's `--status-fd`
/// says that the images are complete.
#[derive(Debug)]
pub struct PageServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    ready_read: OwnedFd,
    ready_write: Option<OwnedFd>,
}

impl PageServer {
    /// Picks a free port and makes the status pipe (its write end inherited by runc).
    pub fn prepare() -> Result<PageServer, RuntimeError> {
        // A port free now; CRIU binds it a few milliseconds later (nothing else on this host
        // picks ports from 127.0.0.1 in between but the kernel's ephemeral range, from which
        // this one came).
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(RuntimeError::io("dump", "find a free port for CRIU's page server"))?
            .port();
        let mut fds = [0; 2];
        // SAFETY: a two-int array; the read end is close-on-exec, the write end is inherited.
        if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
            return Err(
                RuntimeError::io("dump", "make the page server's status pipe")(std::io::Error::last_os_error()),
            );
        }
        // SAFETY: both fds are new and owned here.
        let (ready_read, ready_write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: setting FD_CLOEXEC on an fd we own.
        unsafe { libc::fcntl(ready_read.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        Ok(PageServer { port, ready_read, ready_write: Some(ready_write) })
    }

    /// The arguments `runc checkpoint` takes for it.
    pub fn runc_args(&self) -> Vec<String> {
        let fd = self.ready_write.as_ref().map_or(-1, |f| f.as_raw_fd());
        vec![
            "--lazy-pages".into(),
            "--page-server".into(),
            format!("127.0.0.1:{}", self.port),
            "--status-fd".into(),
            fd.to_string(),
        ]
    }

    /// Once runc runs: this process's copy of the pipe's write end goes, so that the read end
    /// sees the end of the pipe when runc (and CRIU) exit without a word.
    pub fn started(&mut self) {
        self.ready_write = None;
    }

    /// Waits until CRIU says the images are complete and its page server listens (`Ok(true)`),
    /// or runc exited first (`Ok(false)`: the dump failed), for at most `limit`.
    pub fn wait_ready(&self, runc: &mut Child, limit: Duration) -> Result<bool, RuntimeError> {
        let started = Instant::now();
        loop {
            let mut poll = libc::pollfd { fd: self.ready_read.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            let ready = unsafe { libc::poll(&mut poll, 1, 50) };
            if ready > 0 {
                let mut byte = [0u8; 1];
                let mut pipe = std::fs::File::from(self.ready_read.try_clone().map_err(io("read the status pipe"))?);
                return Ok(matches!(pipe.read(&mut byte), Ok(1)));
            }
            if runc.try_wait().map_err(io("wait for runc"))?.is_some() {
                return Ok(false);
            }
            if started.elapsed() > limit {
                return Err(RuntimeError::protocol(
                    "dump",
                    format!("CRIU's page server was not ready within {} s", limit.as_secs()),
                ));
            }
        }
    }
}

/// Connects to CRIU's page server on `port` (ready once [`PageServer::wait_ready`] said so).
pub fn connect_page_server(port: u16) -> Result<TcpStream, RuntimeError> {
    let stream = TcpStream::connect(("127.0.0.1", port)).map_err(io("connect to CRIU's page server"))?;
    stream.set_nodelay(true).map_err(io("connect to CRIU's page server"))?;
    Ok(stream)
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> RuntimeError {
    RuntimeError::io("dump", context)
}

/// Kills the CRIU process runc runs (its child in `swrk` mode, whatever its program's name: a
/// CRIU installed under a loader wrapper is not called `criu`): the frozen processes are
/// released where they were.
pub fn kill_criu_under(runc_pid: u32) -> usize {
    let mut killed = 0;
    for criu in criu_under(runc_pid) {
        // SAFETY: sending a signal to a process id.
        if unsafe { libc::kill(criu as libc::pid_t, libc::SIGKILL) } == 0 {
            killed += 1;
        }
    }
    killed
}

/// Whether a CRIU still runs under runc `runc_pid` (a killed one is a zombie without arguments
/// until runc reaps it).
pub fn criu_runs_under(runc_pid: u32) -> bool {
    !criu_under(runc_pid).is_empty()
}

/// runc's CRIU children (`criu swrk`, runc's RPC mode).
fn criu_under(runc_pid: u32) -> Vec<u32> {
    children_of(runc_pid)
        .into_iter()
        .filter(|child| {
            let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
            cmdline.split(|b| *b == 0).any(|arg| arg == b"swrk")
        })
        .collect()
}

fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut found = Vec::new();
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        found.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
    }
    found
}
