//! `checkpoint` with a dump directive: CRIU dumps into the container's Docker checkpoint
//! directory while the changed files and the page images stream to the destination.
//!
//! containerd has frozen the container (cgroup freezer) before calling: from here the service
//! is down until the destination restores it. The connection to the destination is opened
//! first, so that an unreachable destination fails the checkpoint before anything is dumped
//! and the container simply resumes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use vimigrate_protocol::{parse_dump_stats, DUMP_STATS_FILE};
use vimigrate_protocol::{
    Action, Directive, DumpDirective, Fault, RuntimeFailure, RuntimeState, RuntimeStatus, SendTo, StreamCompression,
};

use crate::error::RuntimeError;
use crate::fs::layer_delta::{layer_delta, whole_tree};
use crate::fs::state_files;
use crate::fs::state_files::StateDir;
use crate::lazy_pages::PageServer;
use crate::net::prepared_netns;
use crate::runc::args::Invocation;
use crate::runc::log as runc_log;
use crate::runc::spec::{overlay_upper_dir, Spec};
use crate::transfer::page_relay::{self, RelayEnd};
use crate::transfer::send::{SendReport, SendTarget, Sender};
use crate::transfer::wire::Area;
use crate::{criu_log_tail, ms, peak_rss_kib, runc_command, runc_path, unix_ms_now, Outcome, CRIU_LOG};

const RUNNING: u8 = 0;
const DUMPED: u8 = 1;
const FAILED: u8 = 2;
/// How long the source waits for the destination to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The container's spec and directory, found from runc's state (checkpoint gets no bundle).
pub(crate) fn locate(inv: &Invocation) -> Option<(String, Spec, PathBuf)> {
    let id = inv.container_id()?.to_string();
    let root = inv.global_value("--root")?;
    let bundle = Spec::bundle_from_state(Path::new(root), &id).ok()?;
    let spec = Spec::load(&bundle).ok()?;
    let dir = spec.container_dir(&id)?;
    Some((id, spec, dir))
}

/// Handles `checkpoint`.
pub fn on_checkpoint(inv: &Invocation) -> Outcome {
    let Some((id, spec, container_dir)) = locate(inv) else {
        return Outcome::PassThrough;
    };
    let state = StateDir::of(&container_dir);
    let log = inv.global_value("--log");
    let directive = match state.take_directive() {
        Ok(Some(d)) => d,
        Ok(None) => {
            // Docker's own checkpoint path: the container's CRIU file mirrors the host's.
            if let Err(e) = state.write_criu_conf(None, None, &[]) {
                runc_log::log_error(log, &e.report());
            }
            return Outcome::PassThrough;
        }
        Err(e) => return crate::fail(&state, log, "", &e),
    };
    let dump = match &directive.action {
        Action::Dump(dump) => dump.clone(),
        Action::Restore(_) | Action::PreCopy(_) => {
            let e = RuntimeError::Directive("a restore or pre-copy directive was found at checkpoint time".into());
            return crate::fail(&state, log, &directive.migration, &e);
        }
    };
    match run_dump(inv, &id, &spec, &container_dir, &state, &directive, &dump) {
        Ok(code) => Outcome::Exit(code),
        Err(e) => crate::fail(&state, log, &directive.migration, &e),
    }
}

/// The images directory must be the container's own checkpoint directory.
pub(crate) fn checked_images_dir(directive: &Directive, container_dir: &Path) -> Result<PathBuf, RuntimeError> {
    let dir = PathBuf::from(&directive.images_dir);
    let expected = container_dir.join("checkpoints").join(&directive.migration);
    if dir != expected || directive.migration.is_empty() || directive.migration.contains('/') {
        return Err(RuntimeError::Directive(format!(
            "images_dir `{}` is not this container's checkpoint directory `{}`",
            dir.display(),
            expected.display()
        )));
    }
    Ok(dir)
}

fn target_of(directive: &Directive, dump: &DumpDirective) -> Result<Option<SendTarget>, RuntimeError> {
    dump.send.as_ref().map(|send| target_of_send(directive, send, dump.compression)).transpose()
}

/// Where and how to send, from a directive's `send`.
pub(crate) fn target_of_send(
    directive: &Directive,
    send: &SendTo,
    compression: StreamCompression,
) -> Result<SendTarget, RuntimeError> {
    let server_cert = base64::engine::general_purpose::STANDARD
        .decode(send.server_cert.trim())
        .map_err(|e| RuntimeError::Directive(format!("send.server_cert is not base64: {e}")))?;
    Ok(SendTarget {
        address: send.address.clone(),
        token: send.token.expose().as_bytes().to_vec(),
        migration: directive.migration.clone(),
        server_cert,
        connect_timeout: CONNECT_TIMEOUT,
        io_timeout: Duration::from_millis(directive.io_timeout_ms.max(1000)),
        compression,
    })
}

fn run_dump(
    inv: &Invocation,
    id: &str,
    spec: &Spec,
    container_dir: &Path,
    state: &StateDir,
    directive: &Directive,
    dump: &DumpDirective,
) -> Result<i32, RuntimeError> {
    let mut status = RuntimeStatus { migration: directive.migration.clone(), ..Default::default() };
    state.write_status(&status);
    // CRIU's log and statistics land in its work directory: ours, so that they outlive the
    // shim's (deleted with the task) and the broker can report them.
    let work = state.private_subdir("dump-work")?;
    // The destination restores into a network namespace it prepared before the freeze: the
    // dump marks the container's own one external so that CRIU expects exactly that.
    let mut external: Vec<String> =
        prepared_netns::external_netns_option(crate::runc_root(inv)?, id)?.into_iter().collect();
    // A container restored from a host with cgroup hierarchies this one lacks (cgroup_stubs.rs).
    let (_, runc_state) = crate::runc::spec::runc_state(crate::runc_root(inv)?, id, "dump")?;
    if let Some(pid) = runc_state["init_process_pid"].as_u64() {
        external.extend(crate::cgroup_stubs::dump_lines(pid));
    }
    if dump.lazy_pages {
        // CRIU's lazy page server takes no address from runc (its RPC keeps only the port in
        // lazy mode) and would listen on every address: the pages are only for the relay here.
        external.push(format!("address {}", crate::lazy_pages::PAGE_SERVER_ADDRESS));
    }
    state.write_criu_conf(Some(&directive.criu), Some(&work.join(CRIU_LOG)), &external)?;
    let images_dir = checked_images_dir(directive, container_dir)?;
    state_files::create_private_dir(&images_dir)
        .map_err(RuntimeError::io("dump", format!("create {}", images_dir.display())))?;

    let mut sender = match target_of(directive, dump)? {
        Some(target) => Some(Sender::connect(&target)?),
        None => None,
    };
    if let (Some(sender), Some(Fault::CorruptStream)) = (sender.as_mut(), dump.fault) {
        sender.corrupt_the_stream();
    }
    let upper = overlay_upper_dir(&spec.root);
    let mut volumes = Vec::new();
    for destination in &dump.volumes {
        let source = spec.bind_source(destination).ok_or_else(|| {
            RuntimeError::Directive(format!("the container has no volume mounted at `{destination}`"))
        })?;
        volumes.push((destination.clone(), source.to_path_buf()));
    }

    let mut lazy = if dump.lazy_pages {
        if sender.is_none() {
            return Err(RuntimeError::Directive("post-copy (lazy_pages) needs a destination to send to".into()));
        }
        state.mark_lazy_dump(&directive.migration)?;
        Some(PageServer::prepare()?)
    } else {
        None
    };
    let io_timeout = Duration::from_millis(directive.io_timeout_ms.max(1000));
    // Post-copy: CRIU's page server, connected to as soon as it listens (it takes one client
    // and then closes its listening socket), reaches the send thread once the images went.
    let (page_server_tx, page_server_rx) = std::sync::mpsc::channel::<std::net::TcpStream>();
    let relay_to = lazy.as_ref().map(|_| page_server_rx);

    // Pre-copy: the rounds that went while the service ran (see pre_copy.rs).
    let pre_copied = dump.pre_copy.and_then(|_| crate::pre_copy::rounds_for(state, &directive.migration));
    if let Some(rounds) = &pre_copied {
        status.stats.predump_rounds = rounds.rounds;
        status.stats.predump_bytes = rounds.image_bytes;
        status.stats.predump_ms = rounds.ms;
        status.stats.round_bytes = rounds.round_bytes.clone();
    }
    let started = Instant::now();
    status.stats.at_unix_ms = unix_ms_now();
    let dump_state = Arc::new(AtomicU8::new(RUNNING));
    let watch = sender.as_ref().and_then(|s| Some((s.progress(), s.socket().ok()?)));
    let send_thread = sender.map(|mut sender| {
        let dump_state = Arc::clone(&dump_state);
        let images_dir = images_dir.clone();
        let baseline = dump.baseline.clone();
        let excluded = dump.excluded.clone();
        std::thread::spawn(move || -> Result<Sent, RuntimeError> {
            let result = (|| {
                if let Some(upper) = &upper {
                    let delta = layer_delta(upper, &baseline, &excluded)?;
                    sender.send_items(Area::Rootfs, "", &delta)?;
                }
                for (destination, source) in &volumes {
                    let items = whole_tree(source)?;
                    sender.send_items(Area::Volume, destination, &items)?;
                }
                let state = || match dump_state.load(Ordering::SeqCst) {
                    RUNNING => None,
                    DUMPED => Some(true),
                    _ => Some(false),
                };
                sender.stream_images(&images_dir, &state)?;
                // Pre-copy: the link CRIU made to the last round, which the destination has.
                sender.send_parent_link(&images_dir)
            })();
            match (result, relay_to) {
                (Ok(()), None) => sender.finish().map(|report| (report, None)),
                // Post-copy: the images went; the pages follow over the same connection.
                (Ok(()), Some(page_server)) => {
                    let (report, mut stream) = sender.finish_keeping_connection()?;
                    let mut local = page_server
                        .recv()
                        .map_err(|_| RuntimeError::protocol("send", "CRIU's page server was never connected to"))?;
                    Ok((report, Some(page_relay::run(&mut stream, &mut local, None, io_timeout))))
                }
                (Err(e), _) => {
                    sender.abort(&e.report());
                    Err(e)
                }
            }
        })
    });

    // containerd archives the directory it gave (left empty: the dump goes to ours) into its
    // content store under the archive's digest; two empty archives have the same digest and two
    // concurrent checkpoints then collide there ("content ... already exists"). A marker of
    // this dump makes each archive unique.
    if let Some(theirs) = inv.arg_value("--image-path") {
        let marker = format!(
            "vimigrate-runtime dump {} of {} at {}\n",
            directive.migration,
            inv.container_id().unwrap_or("?"),
            unix_ms_now()
        );
        let _ = std::fs::write(Path::new(theirs).join("vimigrate-dump"), marker);
    }
    let runc = runc_path(inv);
    let mut command = runc_command(inv, &runc);
    let args = Invocation { args: inv.args_without("--image-path"), ..inv.clone() }.args_without("--work-path");
    command.arg("checkpoint").arg("--image-path").arg(&images_dir).arg("--work-path").arg(&work).args(args);
    if let Some(rounds) = &pre_copied {
        // CRIU links `parent` to it and writes only the pages dirtied since (soft-dirty).
        command.arg("--parent-path").arg(rounds.last.as_deref().unwrap_or_default());
    }
    if let Some(server) = lazy.as_mut() {
        command.args(server.runc_args());
        let child = command.spawn().map_err(RuntimeError::io("dump", format!("run {}", runc.display())))?;
        server.started();
        let tail = LazyDump { inv, id, work: &work, state, started, io_timeout };
        return tail.finish(server, child, &dump_state, (send_thread, page_server_tx), status);
    }
    let exit = command.status().map_err(RuntimeError::io("dump", format!("run {}", runc.display())))?;
    status.stats.dump_ms = ms(started);
    dump_state.store(if exit.success() { DUMPED } else { FAILED }, Ordering::SeqCst);
    // A link that went silent would hold the sender (and the service's rollback) in blocked
    // writes, one I/O timeout each: once nothing moved for a whole timeout, the connection is
    // shut, which ends them at once.
    if let (Some(thread), Some((progress, socket))) = (&send_thread, &watch) {
        let timeout = Duration::from_millis(directive.io_timeout_ms.max(1000));
        // Counted from the dump's end at the earliest: a dump that wrote no pages for a while
        // left the sender idle without any fault of the link.
        let dumped = Instant::now();
        while !thread.is_finished() {
            if progress.idle() > timeout && dumped.elapsed() > timeout {
                let _ = socket.shutdown(std::net::Shutdown::Both);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let sent = send_thread.map(|t| join_sender(t).map(|(report, _)| report));

    if !exit.success() {
        let e = RuntimeError::Runc {
            step: "dump",
            command: "checkpoint",
            status: exit.to_string(),
            log: criu_log_tail(&work, CRIU_LOG),
        };
        // CRIU resumes the processes when a dump fails: the service goes on on the source.
        runc_log::log_error(inv.global_value("--log"), &e.report());
        status.state = RuntimeState::Failed;
        status.error = Some(RuntimeFailure::new("dump", e.report(), false));
        state.write_status(&status);
        return Ok(exit.code().unwrap_or(1));
    }
    status.stats.criu_dump = std::fs::read(work.join(DUMP_STATS_FILE)).ok().and_then(|b| parse_dump_stats(&b).ok());
    if let (Some(_), Some(criu)) = (&pre_copied, &status.stats.criu_dump) {
        status.stats.round_bytes.push(criu.pages_written * 4096);
    }
    status.stats.send_ms = ms(started);
    status.stats.peak_rss_kib = peak_rss_kib();
    match sent {
        None | Some(Ok(_)) => {
            if let Some(Ok(report)) = sent {
                report.record(&mut status.stats);
            }
            status.state = RuntimeState::Dumped;
        }
        Some(Err(e)) => {
            // The dump is complete here, so the source can resume from it; the destination
            // did not get it. The checkpoint itself succeeded: Docker is told so.
            status.state = RuntimeState::Failed;
            status.error = Some(e.failure());
        }
    }
    state.write_status(&status);
    Ok(0)
}

/// What the send thread hands back: what it sent, and in post-copy how the page relay ended.
type Sent = (SendReport, Option<RelayEnd>);

fn join_sender(thread: std::thread::JoinHandle<Result<Sent, RuntimeError>>) -> Result<Sent, RuntimeError> {
    thread.join().unwrap_or_else(|_| Err(RuntimeError::protocol("send", "the sender panicked")))
}

/// A post-copy dump abandoned before its pages were served: the sender is told the dump failed
/// (and gets no page-server connection) and waited for.
fn stop_sending(
    dump_state: &AtomicU8,
    page_server: std::sync::mpsc::Sender<std::net::TcpStream>,
    send_thread: Option<std::thread::JoinHandle<Result<Sent, RuntimeError>>>,
) {
    dump_state.store(FAILED, Ordering::SeqCst);
    drop(page_server);
    if let Some(thread) = send_thread {
        let _ = join_sender(thread);
    }
}

/// The end of a post-copy dump (see [`crate::lazy_pages`]): once CRIU's page server is ready the
/// images are complete and the processes frozen; the relay then serves the pages until the
/// destination has them all. On a failure before the destination restored, CRIU is killed and
/// the processes go on here; after it, the copy here is discarded.
struct LazyDump<'a> {
    inv: &'a Invocation,
    id: &'a str,
    work: &'a Path,
    state: &'a StateDir,
    started: Instant,
    io_timeout: Duration,
}

impl LazyDump<'_> {
    fn finish(
        &self,
        server: &PageServer,
        mut runc: std::process::Child,
        dump_state: &AtomicU8,
        (send_thread, page_server): (
            Option<std::thread::JoinHandle<Result<Sent, RuntimeError>>>,
            std::sync::mpsc::Sender<std::net::TcpStream>,
        ),
        mut status: RuntimeStatus,
    ) -> Result<i32, RuntimeError> {
        let log = self.inv.global_value("--log");
        // CRIU dumps everything but the memory: as long as a small dump takes, bounded.
        let ready = server.wait_ready(&mut runc, self.io_timeout.max(Duration::from_secs(30)));
        let ready = match ready {
            Ok(ready) => ready,
            Err(e) => {
                self.release_source(&mut runc);
                stop_sending(dump_state, page_server, send_thread);
                return Err(e);
            }
        };
        if !ready {
            // runc exited first: CRIU's dump failed and the processes went on.
            stop_sending(dump_state, page_server, send_thread);
            let exit = runc.wait().map_err(RuntimeError::io("dump", "wait for runc"))?;
            return Err(RuntimeError::Runc {
                step: "dump",
                command: "checkpoint",
                status: exit.to_string(),
                log: criu_log_tail(self.work, CRIU_LOG),
            });
        }
        status.stats.dump_ms = ms(self.started);
        // This thread keeps its own handle on the connection: it must stay open until CRIU was
        // killed, should the migration fail before the restore (its closing would end the
        // frozen processes).
        let held = match crate::lazy_pages::connect_page_server(server.port).and_then(|local| {
            let ours = local.try_clone().map_err(RuntimeError::io("dump", "share CRIU's page-server connection"))?;
            Ok((local, ours))
        }) {
            Ok((local, ours)) => {
                let _ = page_server.send(local);
                ours
            }
            Err(e) => {
                // Someone else took the page server's one connection, or it is gone: the pages
                // go nowhere, and the processes go on here.
                self.release_source(&mut runc);
                stop_sending(dump_state, page_server, send_thread);
                return Err(e);
            }
        };
        dump_state.store(DUMPED, Ordering::SeqCst);
        status.state = RuntimeState::ServingPages;
        self.state.write_status(&status);
        let pages_started = Instant::now();
        let sent = match send_thread {
            Some(thread) => join_sender(thread),
            None => Err(RuntimeError::Directive("post-copy without a destination".into())),
        };
        status.stats.peak_rss_kib = peak_rss_kib();
        match sent {
            Ok((report, Some(end))) if end.complete => {
                // The lazy-pages daemon closed: CRIU ends the dump and the processes here.
                let exit = runc.wait().map_err(RuntimeError::io("dump", "wait for runc"))?;
                report.record(&mut status.stats);
                status.stats.page_bytes = end.bytes_out;
                status.stats.pages_ms = ms(pages_started);
                status.stats.send_ms = ms(self.started);
                status.stats.criu_dump =
                    std::fs::read(self.work.join(DUMP_STATS_FILE)).ok().and_then(|b| parse_dump_stats(&b).ok());
                if !exit.success() {
                    let e = RuntimeError::Runc {
                        step: "post-copy",
                        command: "checkpoint",
                        status: exit.to_string(),
                        log: criu_log_tail(self.work, CRIU_LOG),
                    };
                    // CRIU gone on its own (killed, crashed: its relay end closed as if done)
                    // released the processes whole.
                    if end.restored && self.processes_live_on() {
                        return Ok(self.kept_here(&mut status, end.elapsed, &e.report()));
                    }
                    runc_log::log_error(log, &e.report());
                    return Err(e);
                }
                status.state = RuntimeState::Dumped;
                self.state.write_status(&status);
                Ok(0)
            }
            Ok((_, Some(end))) if end.restored => {
                // CRIU gone on its own (killed, crashed) released the processes whole: they run
                // on here from where they were frozen, and the destination's copy, whose pages
                // stopped coming, is the one that stops. Otherwise the link broke: closing CRIU's
                // connection ends the dump and the processes here (never two copies; the
                // destination's runtime stops its own).
                let criu_ended = !crate::lazy_pages::criu_runs_under(runc.id());
                if !criu_ended {
                    let _ = held.shutdown(std::net::Shutdown::Both);
                }
                drop(held);
                let _ = runc.wait();
                let reason = end.failure.as_deref().unwrap_or("no reason given");
                if criu_ended && self.processes_live_on() {
                    return Ok(self.kept_here(&mut status, end.elapsed, reason));
                }
                let e = RuntimeError::protocol(
                    "post-copy",
                    format!(
                        "the page transfer broke {:.1} s after the destination restored ({reason}): the container's \
                         memory was split between the hosts, the copy here was discarded, and the destination's \
                         stops without its pages",
                        end.elapsed.as_secs_f64()
                    ),
                );
                runc_log::log_error(log, &e.report());
                status.state = RuntimeState::Failed;
                status.error = Some(RuntimeFailure::new("post-copy", e.report(), false));
                self.state.write_status(&status);
                // The checkpoint itself completed: Docker sees the container exited.
                Ok(0)
            }
            other => {
                // Before the restore: the processes go on here, as if nothing had happened
                // (CRIU killed while its connection is still open).
                self.release_source(&mut runc);
                drop(held);
                let e = match other {
                    Err(e) => e,
                    Ok((_, end)) => RuntimeError::protocol(
                        "send",
                        format!(
                            "the page transfer broke before the destination restored ({}); the container goes on here",
                            end.and_then(|e| e.failure).unwrap_or_default()
                        ),
                    ),
                };
                Err(e)
            }
        }
    }

    /// After the restore, CRIU ended without ending the processes (`why`): they run on here
    /// whole from where they were frozen, so this copy is the one to keep; the status says so
    /// (the broker stops the destination's), and the checkpoint fails, so that Docker sees the
    /// container running on. Returns the exit code.
    fn kept_here(&self, status: &mut RuntimeStatus, since_restore: Duration, why: &str) -> i32 {
        let elapsed = since_restore.as_secs_f64();
        let e = RuntimeError::protocol(
            "post-copy",
            format!(
                "CRIU ended {elapsed:.1} s after the destination restored ({why}) without ending the processes \
                 here: the container goes on here from where it was frozen, the destination's copy stops, and \
                 what it did in those {elapsed:.1} s is gone"
            ),
        );
        runc_log::log_error(self.inv.global_value("--log"), &e.report());
        status.state = RuntimeState::Failed;
        status.error =
            Some(RuntimeFailure { source_runs: true, ..RuntimeFailure::new("post-copy", e.report(), false) });
        self.state.write_status(status);
        1
    }

    /// Kills CRIU, which releases the frozen processes, and thaws a cgroup it had frozen.
    fn release_source(&self, runc: &mut std::process::Child) {
        let killed = crate::lazy_pages::kill_criu_under(runc.id());
        let _ = runc.wait();
        let resumed = self.thaw();
        runc_log::log_error(
            self.inv.global_value("--log"),
            &format!(
                "post-copy abandoned before the restore: CRIU stopped ({killed} process(es)), the container resumed here \
                 (runc resume: {})",
                resumed.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string())
            ),
        );
    }

    /// `runc resume`: thaws the container's cgroup, which a CRIU that did not finish leaves
    /// frozen.
    fn thaw(&self) -> std::io::Result<std::process::ExitStatus> {
        runc_command(self.inv, &runc_path(self.inv))
            .arg("resume")
            .arg(self.id)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
    }

    /// Whether the container's processes live on after CRIU ended (runc's `state`: running, or
    /// paused, which is thawed).
    fn processes_live_on(&self) -> bool {
        let state = runc_command(self.inv, &runc_path(self.inv))
            .arg("state")
            .arg(self.id)
            .stderr(std::process::Stdio::null())
            .output();
        let status = state
            .ok()
            .and_then(|out| serde_json::from_slice::<serde_json::Value>(&out.stdout).ok())
            .and_then(|state| state.get("status").and_then(|s| s.as_str()).map(str::to_string));
        match status.as_deref() {
            Some("running") => true,
            Some("paused") => self.thaw().map(|s| s.success()).unwrap_or(false),
            _ => false,
        }
    }
}
