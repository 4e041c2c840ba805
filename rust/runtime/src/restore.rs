//! `create` with a restore directive: what a plain `docker start` becomes on the destination
//! (and on the source for a rollback). Docker has already set the container up (network
//! namespace, published ports, mounted root filesystem and volumes) when it calls `create`, so
//! the broker starts the destination container before the freeze and this call waits for the
//! images there: after the freeze only the transfer's tail and CRIU's restore remain.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use vimigrate_protocol::rewrite_addresses;
use vimigrate_protocol::{
    parse_restore_stats, rewrite_socket_addresses, socket_addresses, FILES_IMAGE, RESTORE_STATS_FILE,
};
use vimigrate_protocol::{Action, Directive, Fault, RestoreDirective, RuntimeState, RuntimeStatus};

use crate::dump::{checked_images_dir, locate};
use crate::error::RuntimeError;
use crate::fs::safe;
use crate::fs::safe::Root;
use crate::fs::state_files::StateDir;
use crate::lazy_restore::{FetchPlan, PageFetcher};
use crate::net::announce;
use crate::net::inbound_hold;
use crate::net::prepared_netns;
use crate::net::restore_addresses;
use crate::runc::args::Invocation;
use crate::runc::log as runc_log;
use crate::runc::spec::Spec;
use crate::transfer::receive::{self, ReceivePlan};
use crate::transfer::tls::decode_der;
use crate::{criu_log_tail, ms, peak_rss_kib, runc_command, runc_path, unix_ms_now, Outcome, CRIU_LOG};

/// Handles `create`: a restore when a directive asks for one, else runc's create (with the
/// container's own CRIU configuration file recorded in its spec).
pub fn on_create(inv: &Invocation) -> Outcome {
    let (Some(id), Some(bundle)) = (inv.container_id(), inv.arg_value("--bundle").or_else(|| inv.arg_value("-b")))
    else {
        return Outcome::PassThrough;
    };
    let Ok(mut spec) = Spec::load(Path::new(bundle)) else {
        return Outcome::PassThrough;
    };
    let Some(container_dir) = spec.container_dir(id) else {
        return Outcome::PassThrough;
    };
    let log = inv.global_value("--log");
    if let Err(e) = spec.annotate_criu_config(&container_dir) {
        // Without it the container still runs; its dumps then use the host's CRIU options.
        runc_log::log_error(log, &format!("{} (the container keeps the host's CRIU options)", e.report()));
    }
    let state = StateDir::of(&container_dir);
    // A probe container the broker created to learn this host's facts (preflight).
    crate::facts::answer_request(&state);
    let directive = match state.take_directive() {
        Ok(Some(d)) => d,
        Ok(None) => return Outcome::PassThrough,
        Err(e) => return crate::fail(&state, log, "", &e),
    };
    let restore = match &directive.action {
        Action::Restore(r) => r.clone(),
        // A probe the broker made to run pre-copy's rounds for another container.
        Action::PreCopy(pre) => {
            crate::pre_copy::on_probe_create(inv, &state, &directive, pre);
            return Outcome::PassThrough;
        }
        Action::Dump(_) => {
            let e = RuntimeError::Directive("a dump directive was found when the container starts".into());
            return crate::fail(&state, log, &directive.migration, &e);
        }
    };
    match run_restore(inv, id, spec, &container_dir, &state, &directive, &restore) {
        Ok(code) => Outcome::Exit(code),
        Err(e) => crate::fail(&state, log, &directive.migration, &e),
    }
}

/// Handles `start`: after a restore the container already runs.
pub fn on_start(inv: &Invocation) -> Outcome {
    match locate(inv) {
        Some((_, _, dir)) if StateDir::of(&dir).take_restored_mark() => Outcome::Exit(0),
        _ => Outcome::PassThrough,
    }
}

/// Handles Docker's own restore (`docker start --checkpoint`): runc restores with the host's
/// CRIU options, as without the wrapper. The container is given its own CRIU file first (a
/// copy of the host's, as at a create), recorded in its spec: runc keeps that in its state,
/// so that a later dump through this runtime (the direct path, moving it on) reads the
/// migration's options, not the host's. Without it that dump took the host's `tcp-close`
/// while its restore asked for `tcp-established`, and CRIU refused ("Need to set the
/// --tcp-close options").
pub fn on_docker_restore(inv: &Invocation) -> Outcome {
    let (Some(id), Some(bundle)) = (inv.container_id(), inv.arg_value("--bundle").or_else(|| inv.arg_value("-b")))
    else {
        return Outcome::PassThrough;
    };
    let Ok(mut spec) = Spec::load(Path::new(bundle)) else {
        return Outcome::PassThrough;
    };
    let Some(container_dir) = spec.container_dir(id) else {
        return Outcome::PassThrough;
    };
    let log = inv.global_value("--log");
    let own = StateDir::of(&container_dir)
        .write_criu_conf(None, None, &[])
        .and_then(|()| spec.annotate_criu_config(&container_dir));
    if let Err(e) = own {
        runc_log::log_error(log, &format!("{} (the container keeps the host's CRIU options)", e.report()));
    }
    Outcome::PassThrough
}

fn run_restore(
    inv: &Invocation,
    id: &str,
    mut spec: Spec,
    container_dir: &Path,
    state: &StateDir,
    directive: &Directive,
    restore: &RestoreDirective,
) -> Result<i32, RuntimeError> {
    let mut status = RuntimeStatus { migration: directive.migration.clone(), ..Default::default() };
    state.write_status(&status);
    let work = state.private_subdir("restore-work")?;
    state.write_criu_conf(Some(&directive.criu), Some(&work.join(CRIU_LOG)), &[])?;
    let images_dir = checked_images_dir(directive, container_dir)?;
    if restore.receive.is_none() && state.is_lazy_dump(&directive.migration) {
        // CRIU would spin on the missing pages (measured: a core at 95 % for minutes).
        return Err(RuntimeError::Directive(format!(
            "checkpoint {} is a post-copy dump: its memory never was on disk here, it cannot be restored",
            directive.migration
        )));
    }
    // Docker's network hook, the slowest part of a restore, runs now: before the source
    // freezes, while this waits for the transfer.
    let docker_spec = spec.clone();
    let netns = prepared_netns::prepare(&mut spec, id)?;
    if let Some(n) = &netns {
        status.stats.network_ms = u64::try_from(n.elapsed.as_millis()).unwrap_or(u64::MAX);
    }
    // While it waits, peers restored first must not be reset by this namespace (see
    // `inbound_hold`).
    let inbound = netns.as_ref().and_then(|n| {
        inbound_hold::hold(&n.path)
            .map_err(|e| {
                runc_log::log_error(inv.global_value("--log"), &format!("{} (restoring without it)", e.report()))
            })
            .ok()
    });

    let mut connection = None;
    if let Some(receive) = &restore.receive {
        let listener = receive::bind(&receive.listen)?;
        status.port = listener.local_addr().ok().map(|a| a.port());
        status.state = RuntimeState::Listening;
        state.write_status(&status);
        let volumes: BTreeMap<String, PathBuf> =
            spec.binds.iter().map(|m| (m.destination.trim_end_matches('/').to_string(), m.source.clone())).collect();
        let abandoned = || state.abort_requested();
        let plan = ReceivePlan {
            token: receive.token.expose().as_bytes().to_vec(),
            migration: directive.migration.clone(),
            cert: decode_der("receive", "receive.cert", &receive.cert)?,
            key: decode_der("receive", "receive.key", receive.key.expose())?,
            io_timeout: Duration::from_millis(directive.io_timeout_ms.max(1000)),
            deadline: UNIX_EPOCH + Duration::from_millis(directive.deadline_unix_ms),
            abandoned: &abandoned,
            images_dir: images_dir.clone(),
            rootfs: spec.root.clone(),
            volumes,
        };
        let (report, stream) = receive::receive_keeping_connection(&listener, &plan)?;
        drop(listener);
        connection = Some(stream);
        status.stats.receive_ms = report.receive_ms;
        status.stats.image_bytes = report.image_bytes;
        status.stats.file_bytes = report.file_bytes;
        status.stats.file_entries = report.file_entries;
        status.state = RuntimeState::Received;
        state.write_status(&status);
    }
    status.stats.rewrites = rewrite_peer_files(&spec.root, &restore.peer_files, &restore.address_map)?;
    if restore.rewrite_sockets {
        let done = rewrite_sockets(&images_dir, &restore.address_map)?;
        status.stats.sockets_kept = done.kept as u64;
        status.stats.sockets_closed = done.closed as u64;
    }
    if restore.fault == Some(Fault::FailRestore) {
        return Err(RuntimeError::Runc {
            step: "restore",
            command: "restore",
            status: "not run".into(),
            log: ": fault fail_restore: this restore fails on purpose (a test)".into(),
        });
    }
    // A source with cgroup v1 hierarchies this kernel lacks (known only now, from the images).
    let stubs = crate::cgroup_stubs::stub_lines(&images_dir, &work)
        .map_err(RuntimeError::io("restore", "create the missing cgroup hierarchies' stubs"))?;
    if !stubs.is_empty() {
        state.write_criu_conf(Some(&directive.criu), Some(&work.join(CRIU_LOG)), &stubs)?;
    }

    let held = match &netns {
        Some(n) => hold_socket_addresses(&images_dir, &n.path, inv.global_value("--log"))?,
        None => None,
    };
    status.stats.addresses_held = held.as_ref().map_or(0, |h| h.addresses().len() as u64);
    // Post-copy: the memory comes after the restore, fetched by a process of its own.
    let fetcher = match (restore.lazy_pages, connection) {
        (false, _) => None,
        (true, None) => {
            return Err(RuntimeError::Directive("post-copy (lazy_pages) needs the images from a source".into()))
        }
        (true, Some(stream)) => Some(PageFetcher::start(FetchPlan {
            stream,
            images_dir: &images_dir,
            work: &work,
            pid_file: inv.arg_value("--pid-file").map(PathBuf::from),
            state,
            migration: &directive.migration,
            io_timeout: Duration::from_millis(directive.io_timeout_ms.max(1000)),
        })?),
    };

    let runc = runc_path(inv);
    let mut command = runc_command(inv, &runc);
    command
        .arg("restore")
        .arg("--detach")
        .arg("--no-subreaper")
        .arg("--image-path")
        .arg(&images_dir)
        .arg("--work-path")
        .arg(&work)
        .arg("--bundle")
        .arg(&spec.bundle);
    if let Some(pid_file) = inv.arg_value("--pid-file") {
        command.arg("--pid-file").arg(pid_file);
    }
    if let Some(socket) = inv.arg_value("--console-socket") {
        command.arg("--console-socket").arg(socket);
    }
    if inv.has_flag("--no-pivot") {
        command.arg("--no-pivot");
    }
    if fetcher.is_some() {
        command.arg("--lazy-pages");
    }
    command.arg(id);
    let started = Instant::now();
    let exit = command.status().map_err(RuntimeError::io("restore", format!("run {}", runc.display())));
    if let Some(Err(e)) = inbound.map(inbound_hold::InboundHold::release) {
        runc_log::log_error(inv.global_value("--log"), &format!("{} (after the restore)", e.report()));
    }
    if let Some(fetcher) = fetcher {
        match &exit {
            Ok(e) if e.success() => fetcher.restored(),
            _ => fetcher.failed(),
        }
    }
    let exit = exit?;
    status.stats.restore_ms = ms(started);
    status.stats.at_unix_ms = unix_ms_now();
    status.stats.peak_rss_kib = peak_rss_kib();
    if !exit.success() {
        return Err(RuntimeError::Runc {
            step: "restore",
            command: "restore",
            status: exit.to_string(),
            log: criu_log_tail(&work, CRIU_LOG),
        });
    }
    state.mark_restored()?;
    if let Some(held) = held {
        if let Err(e) = held.release() {
            runc_log::log_error(inv.global_value("--log"), &format!("{} (after a successful restore)", e.report()));
        }
    }
    // Clients that knocked before the restore left the neighbours' entries unresolved.
    let netns_path = netns.as_ref().map(|n| n.path.clone()).or_else(|| spec.network_namespace()).or_else(|| {
        let pid = std::fs::read_to_string(inv.arg_value("--pid-file")?).ok()?;
        Some(PathBuf::from(format!("/proc/{}/ns/net", pid.trim())))
    });
    if let Some(path) = netns_path {
        status.stats.addresses_announced = announce::announce_addresses(&path) as u64;
    }
    if netns.is_some() {
        let forgotten = crate::runc_root(inv).and_then(|root| prepared_netns::forget_path(root, id, &docker_spec));
        if let Err(e) = forgotten {
            // The container runs; only a later Docker (not vimigrate) checkpoint of it would
            // expect its network namespace back from the host that restores it.
            runc_log::log_error(inv.global_value("--log"), &format!("{} (after a successful restore)", e.report()));
        }
    }
    drop(netns);
    status.stats.criu_restore =
        std::fs::read(work.join(RESTORE_STATS_FILE)).ok().and_then(|b| parse_restore_stats(&b).ok());
    status.state = RuntimeState::Restored;
    state.write_status(&status);
    Ok(0)
}

/// Rewrites the dumped inet sockets' IPv4 addresses by `address_map` (a group across a
/// remapped subnet; see [`vimigrate_protocol::rewrite_socket_addresses`]), in place: written
/// to a new file first, then renamed over the image, so that a failure leaves the dump whole.
fn rewrite_sockets(
    images_dir: &Path,
    address_map: &BTreeMap<String, String>,
) -> Result<vimigrate_protocol::SocketRewrite, RuntimeError> {
    let map: BTreeMap<std::net::Ipv4Addr, std::net::Ipv4Addr> =
        address_map.iter().filter_map(|(old, new)| Some((old.parse().ok()?, new.parse().ok()?))).collect();
    let path = images_dir.join(FILES_IMAGE);
    let bytes = std::fs::read(&path).map_err(RuntimeError::io("rewrite", format!("read {}", path.display())))?;
    let (rewritten, done) =
        rewrite_socket_addresses(&bytes, &map).map_err(|e| RuntimeError::protocol("rewrite", e.to_string()))?;
    let staged = images_dir.join(format!("{FILES_IMAGE}.rewritten"));
    std::fs::write(&staged, &rewritten).map_err(RuntimeError::io("rewrite", format!("write {}", staged.display())))?;
    std::fs::rename(&staged, &path).map_err(RuntimeError::io("rewrite", format!("replace {}", path.display())))?;
    Ok(done)
}

/// Holds in the prepared namespace the addresses the dump's sockets are bound to and it lacks
/// (see [`restore_addresses`]). An image that cannot be read leaves the namespace as it is: the
/// restore then says what it missed.
fn hold_socket_addresses(
    images_dir: &Path,
    netns: &Path,
    log: Option<&str>,
) -> Result<Option<restore_addresses::HeldAddresses>, RuntimeError> {
    let needed = match std::fs::read(images_dir.join(FILES_IMAGE))
        .map_err(|e| e.to_string())
        .and_then(|bytes| socket_addresses(&bytes).map_err(|e| e.to_string()))
    {
        Ok(needed) => needed,
        Err(e) => {
            runc_log::log_error(log, &format!("network: cannot tell the sockets' addresses ({e})"));
            return Ok(None);
        }
    };
    restore_addresses::hold(netns, &needed)
}

/// Rewrites old peer addresses to new ones in the declared files of the container's root
/// filesystem, before its processes come back and read them.
fn rewrite_peer_files(
    rootfs: &Path,
    files: &[String],
    map: &BTreeMap<String, String>,
) -> Result<Vec<(String, usize)>, RuntimeError> {
    let mut done = Vec::new();
    if files.is_empty() {
        return Ok(done);
    }
    let root = Root::open(rootfs).map_err(RuntimeError::io("rewrite", format!("open {}", rootfs.display())))?;
    for file in files {
        let fail = |e: std::io::Error| RuntimeError::Io {
            step: "rewrite",
            context: format!("rewrite peer file {file}"),
            source: e,
        };
        let (dir, name) = root.parent_of(Path::new(file)).map_err(fail)?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&dir)))
            .join(std::ffi::OsStr::new(name.to_str().unwrap_or_default()));
        let mut text = String::new();
        safe::open_no_follow(&path).and_then(|mut f| f.read_to_string(&mut text)).map_err(fail)?;
        let (rewritten, count) = rewrite_addresses(&text, map);
        if count > 0 {
            // Truncate and write in place: the file keeps its inode, owner and mode.
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(fail)?;
            out.write_all(rewritten.as_bytes()).map_err(fail)?;
        }
        done.push((file.clone(), count));
    }
    Ok(done)
}
