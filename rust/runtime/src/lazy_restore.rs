//! Post-copy on the destination: the container is restored without its memory (`runc restore
//! --lazy-pages`), and CRIU's lazy-pages daemon fetches the pages from the source, those the
//! processes fault on first, then all the others in the background.
//!
//! The fetching outlives this `create` call (Docker's start returns as soon as the processes
//! run), so it happens in a process of its own, forked once the images arrived, while this
//! process is still single-threaded: the page fetcher. It starts `criu lazy-pages`, relays its
//! page-server connection over the migration's TLS connection
//! ([`crate::transfer::page_relay`]), and when the pages stop coming before the last one
//! arrived it kills the restored container: with part of its memory missing, a process
//! touching a page that never came would read zeros instead of its data. Its stdio and every
//! inherited descriptor but its own are closed at once, so that containerd, which waits for
//! the end of `runc create`'s output, is not held by it.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustls::{ServerConnection, StreamOwned};
use vimigrate_protocol::{RuntimeFailure, RuntimeState, RuntimeStatus};

use crate::error::RuntimeError;
use crate::fs::state_files::StateDir;
use crate::transfer::page_relay::{self, CONTROL_FAILED, CONTROL_RESTORED};

/// The socket CRIU's lazy-pages daemon creates in its work directory for the restore.
const LAZY_SOCKET: &str = "lazy-pages.socket";
/// CRIU's log of the lazy-pages daemon, in the work directory.
pub const LAZY_LOG: &str = "lazy-pages.log";
/// How long the daemon may take to be ready for the restore.
const READY_WITHIN: Duration = Duration::from_secs(10);
/// How long after the page relay ended the daemon may take to exit.
const EXIT_WITHIN: Duration = Duration::from_secs(10);

/// What the page fetcher needs.
pub struct FetchPlan<'a> {
    /// The migration's connection, the images received.
    pub stream: StreamOwned<ServerConnection, TcpStream>,
    /// Where the images are.
    pub images_dir: &'a Path,
    /// The restore's work directory (the daemon's socket goes there).
    pub work: &'a Path,
    /// runc's pid file of the restored container (its init, killed if the pages stop coming).
    pub pid_file: Option<PathBuf>,
    /// Where the fetch's outcome is reported.
    pub state: &'a StateDir,
    /// The migration (the report names it).
    pub migration: &'a str,
    /// Longest silence on the connection.
    pub io_timeout: Duration,
}

/// The running page fetcher, seen from the restore.
#[derive(Debug)]
pub struct PageFetcher {
    control: File,
}

impl PageFetcher {
    /// Forks the page fetcher and waits until its lazy-pages daemon is ready for the restore.
    pub fn start(plan: FetchPlan<'_>) -> Result<PageFetcher, RuntimeError> {
        let (control_read, control_write) = pipe()?;
        let (ready_read, ready_write) = pipe()?;
        let criu = crate::facts::find_on_path("criu")
            .ok_or_else(|| RuntimeError::protocol("restore", "post-copy needs CRIU on PATH, and there is none"))?;
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io("listen for CRIU's lazy-pages daemon"))?;
        let port = listener.local_addr().map_err(io("listen for CRIU's lazy-pages daemon"))?.port();
        // SAFETY: this process is single-threaded here (the receive ran on this thread only),
        // so the child may go on with the Rust runtime as it is.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io("fork the page fetcher")(std::io::Error::last_os_error()));
        }
        if pid == 0 {
            drop(control_write);
            drop(ready_read);
            let keep =
                [plan.stream.sock.as_raw_fd(), control_read.as_raw_fd(), ready_write.as_raw_fd(), listener.as_raw_fd()];
            detach(&keep);
            let code = fetch(plan, &criu, listener, port, control_read, ready_write);
            // SAFETY: ends the child without running the parent's destructors twice.
            unsafe { libc::_exit(code) };
        }
        drop(control_read);
        drop(ready_write);
        drop(listener);
        let mut ready = File::from(ready_read);
        let mut byte = [0u8; 1];
        match ready.read(&mut byte) {
            Ok(1) if byte[0] == b'S' => Ok(PageFetcher { control: File::from(control_write) }),
            _ => Err(RuntimeError::protocol(
                "restore",
                format!("CRIU's lazy-pages daemon did not get ready{}", crate::criu_log_tail(plan.work, LAZY_LOG)),
            )),
        }
    }

    /// The restore succeeded: the fetcher tells the source, which must never resume its copy now.
    pub fn restored(mut self) {
        let _ = self.control.write_all(&[CONTROL_RESTORED]);
    }

    /// The restore failed: the fetcher gives up (the source resumes its copy).
    pub fn failed(mut self) {
        let _ = self.control.write_all(&[CONTROL_FAILED]);
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), RuntimeError> {
    let mut fds = [0; 2];
    // SAFETY: a two-int array; both ends close on exec (only this process and its fork use them).
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io("make a pipe")(std::io::Error::last_os_error()));
    }
    // SAFETY: both fds are new and owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> RuntimeError {
    RuntimeError::io("restore", context)
}

/// In the fetcher: a session of its own, stdio on /dev/null, and every inherited descriptor
/// closed but `keep`.
fn detach(keep: &[RawFd]) {
    // SAFETY: plain system calls on this process's own descriptors.
    unsafe {
        libc::setsid();
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
    }
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    for fd in open.into_iter().filter(|fd| *fd > 2 && !keep.contains(fd)) {
        // SAFETY: closing a descriptor this process inherited and does not use.
        unsafe { libc::close(fd) };
    }
}

/// The fetcher's work; returns its exit code.
fn fetch(
    mut plan: FetchPlan<'_>,
    criu: &Path,
    listener: TcpListener,
    port: u16,
    control: OwnedFd,
    ready: OwnedFd,
) -> i32 {
    let started = Instant::now();
    let daemon = Command::new(criu)
        .arg("lazy-pages")
        .arg("--page-server")
        .args(["--address", "127.0.0.1", "--port", &port.to_string()])
        .arg("--images-dir")
        .arg(plan.images_dir)
        .arg("--work-dir")
        .arg(plan.work)
        .args(["--log-file", LAZY_LOG, "-v4"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut daemon = match daemon {
        Ok(d) => d,
        Err(e) => {
            return fail(&plan, &format!("cannot run {} lazy-pages: {e}", criu.display()), false, Default::default())
        }
    };
    // Ready once its socket exists (it listens on it for the restore).
    let socket = plan.work.join(LAZY_SOCKET);
    while !socket.exists() {
        if started.elapsed() > READY_WITHIN || matches!(daemon.try_wait(), Ok(Some(_))) {
            let _ = daemon.kill();
            return fail(&plan, "CRIU's lazy-pages daemon did not get ready", false, Default::default());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = File::from(ready).write_all(b"S");
    // It connects to the "page server" (this relay) once the restore handed it the memory.
    let local = accept_within(&listener, plan.io_timeout.max(Duration::from_secs(10)) * 2, &mut daemon);
    let mut local = match local {
        Some(l) => l,
        None => {
            let _ = daemon.kill();
            return fail(&plan, "CRIU's lazy-pages daemon never asked for pages", false, Default::default());
        }
    };
    plan.state.write_pages_status(&RuntimeStatus {
        migration: plan.migration.to_string(),
        state: RuntimeState::ServingPages,
        ..Default::default()
    });
    let end = page_relay::run(&mut plan.stream, &mut local, Some(control.as_raw_fd()), plan.io_timeout);
    drop(local);
    let exit = wait_within(&mut daemon, EXIT_WITHIN);
    let complete = end.complete && exit.is_some_and(|s| s.success());
    let mut status = RuntimeStatus { migration: plan.migration.to_string(), ..Default::default() };
    status.stats.pages_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    status.stats.page_bytes = end.bytes_in;
    if complete {
        status.state = RuntimeState::Dumped;
        plan.state.write_pages_status(&status);
        return 0;
    }
    let why = end.failure.clone().unwrap_or_else(|| match exit {
        Some(s) => format!("CRIU's lazy-pages daemon ended with {s}{}", crate::criu_log_tail(plan.work, LAZY_LOG)),
        None => "CRIU's lazy-pages daemon did not end".into(),
    });
    fail(&plan, &why, end.restored, status)
}

/// Records the failure; when the container was restored, kills it first (its memory is
/// incomplete). Returns the fetcher's exit code.
fn fail(plan: &FetchPlan<'_>, why: &str, restored: bool, mut status: RuntimeStatus) -> i32 {
    status.migration = plan.migration.to_string();
    let message = if restored {
        let killed = plan
            .pid_file
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|pid| pid.trim().parse::<libc::pid_t>().ok())
            // SAFETY: a signal to the restored container's init.
            .is_some_and(|pid| unsafe { libc::kill(pid, libc::SIGKILL) } == 0);
        format!(
            "post-copy: the pages stopped coming after the restore ({why}); the container here was {} (its memory \
             is incomplete)",
            if killed { "killed" } else { "to be killed, but its process was not found" }
        )
    } else {
        format!("post-copy: {why}")
    };
    eprintln!("vimigrate-runtime: {message}");
    status.state = RuntimeState::Failed;
    status.error = Some(RuntimeFailure::new("post-copy", message, !restored));
    plan.state.write_pages_status(&status);
    1
}

fn accept_within(listener: &TcpListener, limit: Duration, daemon: &mut std::process::Child) -> Option<TcpStream> {
    listener.set_nonblocking(true).ok()?;
    let started = Instant::now();
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).ok()?;
                return Some(stream);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return None,
        }
        if started.elapsed() > limit || matches!(daemon.try_wait(), Ok(Some(_))) {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn wait_within(child: &mut std::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
