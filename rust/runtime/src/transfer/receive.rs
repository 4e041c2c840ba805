//! The destination side of a transfer: listens, authenticates the sender, and writes what it
//! streams where it belongs (the checkpoint images directory, the container's root filesystem,
//! its volumes), checking every file's size and BLAKE3 before the restore may begin.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rustls::{ServerConnection, StreamOwned};

use crate::error::RuntimeError;
use crate::fs::safe;
use crate::fs::safe::{Attributes, Root};
use crate::fs::state_files;
use crate::transfer::compress::decompress_chunk;
use crate::transfer::tls::server_config;
use crate::transfer::wire;
use crate::transfer::wire::{Area, EntryHeader, Frame, Kind, MAX_DATA};

/// Entries open at once (the sender keeps only the growing page images open).
const MAX_OPEN: usize = 1024;
/// Connections that fail the handshake or the token before the right one is given up on.
const MAX_BAD_CONNECTIONS: u32 = 16;
/// How often the wait for the sender looks at the deadline and the broker's abort.
const POLL: Duration = Duration::from_millis(20);

/// What the receiver needs to know.
pub struct ReceivePlan<'a> {
    /// The token the sender must present.
    pub token: Vec<u8>,
    /// The migration it must name.
    pub migration: String,
    /// This migration's certificate and key (DER).
    pub cert: Vec<u8>,
    /// PKCS#8 key (DER).
    pub key: Vec<u8>,
    /// Longest silence once connected.
    pub io_timeout: Duration,
    /// Give up waiting for the sender after this.
    pub deadline: SystemTime,
    /// True when the broker withdrew the directive.
    pub abandoned: &'a dyn Fn() -> bool,
    /// Where the images go (created, 0700).
    pub images_dir: PathBuf,
    /// The container's root filesystem on this host.
    pub rootfs: PathBuf,
    /// Mount point in the container -> host directory, for volumes.
    pub volumes: BTreeMap<String, PathBuf>,
}

/// What arrived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiveReport {
    /// Image bytes.
    pub image_bytes: u64,
    /// Layer and volume file bytes.
    pub file_bytes: u64,
    /// Layer and volume entries.
    pub file_entries: u64,
    /// From the connection to the last checksum checked (ms).
    pub receive_ms: u64,
}

struct Open {
    file: File,
    hasher: blake3::Hasher,
    written: u64,
    attrs: Attributes,
    images: bool,
    what: String,
}

fn recv_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    RuntimeError::io("receive", context)
}

/// Binds the receiver's socket (before the status reports the port).
pub fn bind(listen: &str) -> Result<TcpListener, RuntimeError> {
    let listener = TcpListener::bind(listen).map_err(RuntimeError::io("listen", format!("listen on {listen}")))?;
    listener.set_nonblocking(true).map_err(RuntimeError::io("listen", "make the socket non-blocking"))?;
    Ok(listener)
}

/// Waits for the sender, then receives and checks everything it sends.
pub fn receive(listener: &TcpListener, plan: &ReceivePlan<'_>) -> Result<ReceiveReport, RuntimeError> {
    receive_keeping_connection(listener, plan).map(|(report, _)| report)
}

/// [`receive`], handing back the connection for what follows the images (post-copy's page
/// relay).
pub fn receive_keeping_connection(
    listener: &TcpListener,
    plan: &ReceivePlan<'_>,
) -> Result<(ReceiveReport, StreamOwned<ServerConnection, TcpStream>), RuntimeError> {
    let config = server_config(plan.cert.clone(), plan.key.clone())?;
    let mut bad = 0;
    // One receiver across the connections: pre-copy's rounds, then the dump.
    let mut receiver: Option<Receiver<'_>> = None;
    let mut report = ReceiveReport::default();
    loop {
        let tcp = wait_for_connection(listener, plan)?;
        let started = Instant::now();
        tcp.set_nonblocking(false).map_err(recv_error("configure the connection"))?;
        tcp.set_nodelay(true).map_err(recv_error("configure the connection"))?;
        tcp.set_read_timeout(Some(plan.io_timeout)).map_err(recv_error("configure the connection"))?;
        tcp.set_write_timeout(Some(plan.io_timeout)).map_err(recv_error("configure the connection"))?;
        let conn = ServerConnection::new(config.clone())
            .map_err(|e| RuntimeError::Tls { step: "receive", detail: e.to_string() })?;
        let mut stream = StreamOwned::new(conn, tcp);
        match authenticate(&mut stream, plan) {
            Ok(()) => {}
            Err(e) => {
                bad += 1;
                eprintln!("vimigrate-runtime: refused a transfer connection: {}", e.report());
                if bad >= MAX_BAD_CONNECTIONS {
                    return Err(RuntimeError::protocol(
                        "receive",
                        format!("{bad} connections failed to authenticate; the last: {}", e.report()),
                    ));
                }
                continue;
            }
        }
        if receiver.is_none() {
            receiver = Some(Receiver::new(plan)?);
        }
        let result = receiver.as_mut().expect("made above").run(&mut stream, &mut report);
        match result {
            Ok(Ended::Done) => {
                let _ = wire::write_verdict(&mut stream, None);
                report.receive_ms = started.elapsed().as_millis() as u64;
                return Ok((report, stream));
            }
            // Pre-copy's rounds went: the dump comes in another connection.
            Ok(Ended::Part) => {
                wire::write_verdict(&mut stream, None).map_err(recv_error("confirm the pre-copy rounds"))?;
                bad = 0;
            }
            Err(e) => {
                let _ = wire::write_verdict(&mut stream, Some(&e.report()));
                return Err(e);
            }
        }
    }
}

fn wait_for_connection(listener: &TcpListener, plan: &ReceivePlan<'_>) -> Result<TcpStream, RuntimeError> {
    loop {
        match listener.accept() {
            Ok((tcp, _)) => return Ok(tcp),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(RuntimeError::Io { step: "receive", context: "accept the sender".into(), source: e }),
        }
        if (plan.abandoned)() {
            return Err(RuntimeError::Abandoned {
                step: "receive",
                detail: "the broker withdrew the migration".into(),
            });
        }
        if SystemTime::now() > plan.deadline {
            return Err(RuntimeError::Abandoned {
                step: "receive",
                detail: "the source never connected before the directive's deadline".into(),
            });
        }
        std::thread::sleep(POLL);
    }
}

fn authenticate(
    stream: &mut StreamOwned<ServerConnection, TcpStream>,
    plan: &ReceivePlan<'_>,
) -> Result<(), RuntimeError> {
    let hello = wire::read_hello(stream).map_err(recv_error("read the sender's hello"))?;
    // Compare in constant time: the token is a secret.
    let token_ok = hello.token.len() == plan.token.len()
        && hello.token.iter().zip(&plan.token).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    let refusal = if !token_ok {
        Some("wrong token".to_string())
    } else if hello.migration != plan.migration.as_bytes() {
        Some(format!("this receiver waits for migration {}", plan.migration))
    } else {
        None
    };
    wire::write_verdict(stream, refusal.as_deref()).map_err(recv_error("answer the hello"))?;
    match refusal {
        None => Ok(()),
        Some(r) => Err(RuntimeError::protocol("receive", r)),
    }
}

/// How one connection's stream ended.
enum Ended {
    /// `Done`: everything arrived.
    Done,
    /// `Part`: more comes in another connection.
    Part,
}

struct Receiver<'a> {
    plan: &'a ReceivePlan<'a>,
    images: Root,
    rootfs: Option<Root>,
    volumes: HashMap<String, Root>,
    open: HashMap<u32, Open>,
    buf: Vec<u8>,
    /// A `Zdata` frame's payload, before decompression.
    compressed: Vec<u8>,
    decompressor: Option<zstd::bulk::Decompressor<'static>>,
    entries: u64,
}

impl<'a> Receiver<'a> {
    fn new(plan: &'a ReceivePlan<'a>) -> Result<Receiver<'a>, RuntimeError> {
        state_files::create_private_dir(&plan.images_dir)
            .map_err(recv_error(format!("create {}", plan.images_dir.display())))?;
        let images = Root::open(&plan.images_dir).map_err(recv_error(format!("open {}", plan.images_dir.display())))?;
        Ok(Receiver {
            plan,
            images,
            rootfs: None,
            volumes: HashMap::new(),
            open: HashMap::new(),
            buf: Vec::new(),
            compressed: Vec::new(),
            decompressor: None,
            entries: 0,
        })
    }

    fn root_for(&mut self, header: &EntryHeader) -> Result<&Root, RuntimeError> {
        match header.area {
            Area::Images => Ok(&self.images),
            Area::Rootfs => {
                if self.rootfs.is_none() {
                    let root = Root::open(&self.plan.rootfs)
                        .map_err(recv_error(format!("open the root filesystem {}", self.plan.rootfs.display())))?;
                    self.rootfs = Some(root);
                }
                Ok(self.rootfs.as_ref().expect("set above"))
            }
            Area::Volume => {
                let name = String::from_utf8_lossy(&header.volume).into_owned();
                if !self.volumes.contains_key(&name) {
                    let source = self.plan.volumes.get(name.trim_end_matches('/')).ok_or_else(|| {
                        RuntimeError::protocol("receive", format!("the container has no volume mounted at `{name}`"))
                    })?;
                    let root = Root::open(source).map_err(recv_error(format!("open volume {}", source.display())))?;
                    self.volumes.insert(name.clone(), root);
                }
                Ok(&self.volumes[&name])
            }
        }
    }

    fn run(&mut self, stream: &mut impl Read, report: &mut ReceiveReport) -> Result<Ended, RuntimeError> {
        // Each connection is checked on its own counts.
        let (bytes_before, entries_before) = (report.image_bytes + report.file_bytes, self.entries);
        loop {
            let frame = wire::read_frame(stream).map_err(recv_error("read a frame"))?;
            let part = matches!(frame, Frame::Part { .. });
            match frame {
                Frame::Entry(header) => self.begin(header, report)?,
                Frame::Data { id, len } => {
                    let len = len as usize;
                    if self.buf.len() < len {
                        self.buf.resize(len, 0);
                    }
                    stream.read_exact(&mut self.buf[..len]).map_err(recv_error("read data"))?;
                    self.data(id, len, report)?;
                }
                Frame::Zdata { id, raw_len, len } => {
                    let (raw_len, len) = (raw_len as usize, len as usize);
                    self.compressed.resize(len, 0);
                    stream.read_exact(&mut self.compressed).map_err(recv_error("read compressed data"))?;
                    if self.buf.len() < raw_len {
                        self.buf.resize(raw_len, 0);
                    }
                    let decompressor = match self.decompressor.as_mut() {
                        Some(d) => d,
                        None => self.decompressor.insert(
                            zstd::bulk::Decompressor::new().map_err(recv_error("set up the zstd decompressor"))?,
                        ),
                    };
                    decompress_chunk(decompressor, &self.compressed, &mut self.buf[..raw_len])
                        .map_err(|e| RuntimeError::protocol("receive", format!("entry {id}: {e}")))?;
                    self.data(id, raw_len, report)?;
                }
                Frame::End { id, size, digest } => self.end(id, size, digest)?,
                Frame::Done { bytes, entries } | Frame::Part { bytes, entries } => {
                    if let Some(open) = self.open.values().next() {
                        return Err(RuntimeError::protocol(
                            "receive",
                            format!("the stream ended with {} incomplete", open.what),
                        ));
                    }
                    let got = report.image_bytes + report.file_bytes - bytes_before;
                    let got_entries = self.entries - entries_before;
                    if bytes != got || entries != got_entries {
                        return Err(RuntimeError::Checksum {
                            what: "the transfer".into(),
                            detail: format!("sent {bytes} bytes in {entries} entries, received {got} in {got_entries}"),
                        });
                    }
                    return Ok(if part { Ended::Part } else { Ended::Done });
                }
                Frame::Abort { message } => {
                    return Err(RuntimeError::Abandoned {
                        step: "receive",
                        detail: format!("the source gave up: {}", String::from_utf8_lossy(&message)),
                    })
                }
            }
        }
    }

    fn begin(&mut self, header: EntryHeader, report: &mut ReceiveReport) -> Result<(), RuntimeError> {
        if self.open.contains_key(&header.id) {
            return Err(RuntimeError::protocol("receive", format!("entry {} opened twice", header.id)));
        }
        if self.open.len() >= MAX_OPEN {
            return Err(RuntimeError::protocol("receive", format!("more than {MAX_OPEN} entries open at once")));
        }
        self.entries += 1;
        let path = PathBuf::from(OsStr::from_bytes(&header.path));
        let images = header.area == Area::Images;
        if images && !is_image_entry(&header) {
            return Err(RuntimeError::protocol(
                "receive",
                format!(
                    "image entry `{}` is neither a plain file name nor part of a pre-dump (pre-N/, parent links)",
                    path.display()
                ),
            ));
        }
        if !images {
            report.file_entries += 1;
        }
        let what = describe(&header, &path);
        let attrs = Attributes {
            mode: match (images, header.kind) {
                (true, Kind::Dir) => 0o700,
                (true, _) => 0o600,
                (false, _) => header.mode,
            },
            uid: if images { 0 } else { header.uid },
            gid: if images { 0 } else { header.gid },
            mtime_sec: header.mtime_sec,
            mtime_nsec: header.mtime_nsec,
        };
        let fail =
            |e: std::io::Error| RuntimeError::Io { step: "receive", context: format!("write {what}"), source: e };
        let (dir, name): (OwnedFd, _) = self.root_for(&header)?.parent_of(&path).map_err(fail)?;
        match header.kind {
            Kind::File => {
                let file = safe::create_file(&dir, &name).map_err(fail)?;
                self.open.insert(
                    header.id,
                    Open { file, hasher: blake3::Hasher::new(), written: 0, attrs, images, what: what.clone() },
                );
            }
            Kind::Dir => {
                let made = safe::make_dir(&dir, &name).map_err(fail)?;
                safe::set_attributes(&made, &attrs, false).map_err(fail)?;
            }
            Kind::Symlink => {
                safe::make_symlink(&dir, &name, &header.link).map_err(fail)?;
                safe::set_entry_attributes(&dir, &name, &attrs, true).map_err(fail)?;
            }
            Kind::Fifo => {
                safe::make_fifo(&dir, &name).map_err(fail)?;
                safe::set_entry_attributes(&dir, &name, &attrs, false).map_err(fail)?;
            }
            Kind::Delete => safe::remove_entry(&dir, &name).map_err(fail)?,
        }
        Ok(())
    }

    /// Writes `self.buf[..len]`, read or decompressed, to entry `id`.
    fn data(&mut self, id: u32, len: usize, report: &mut ReceiveReport) -> Result<(), RuntimeError> {
        debug_assert!(len <= MAX_DATA as usize);
        let open = self
            .open
            .get_mut(&id)
            .ok_or_else(|| RuntimeError::protocol("receive", format!("data for entry {id}, which is not open")))?;
        open.file.write_all(&self.buf[..len]).map_err(RuntimeError::io("receive", format!("write {}", open.what)))?;
        open.hasher.update(&self.buf[..len]);
        open.written += len as u64;
        if open.images {
            report.image_bytes += len as u64;
        } else {
            report.file_bytes += len as u64;
        }
        Ok(())
    }

    fn end(&mut self, id: u32, size: u64, sent: [u8; 32]) -> Result<(), RuntimeError> {
        let open = self
            .open
            .remove(&id)
            .ok_or_else(|| RuntimeError::protocol("receive", format!("end of entry {id}, which is not open")))?;
        let digest: [u8; 32] = *open.hasher.finalize().as_bytes();
        if open.written != size || digest != sent {
            return Err(RuntimeError::Checksum {
                what: open.what,
                detail: format!(
                    "sent {size} bytes with BLAKE3 {}, received {} bytes with BLAKE3 {}",
                    hex(&sent),
                    open.written,
                    hex(&digest)
                ),
            });
        }
        safe::set_attributes(&open.file, &open.attrs, true)
            .map_err(RuntimeError::io("receive", format!("set the attributes of {}", open.what)))?;
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn describe(header: &EntryHeader, path: &Path) -> String {
    match header.area {
        Area::Images => format!("image {}", path.display()),
        Area::Rootfs => format!("container file {}", path.display()),
        Area::Volume => format!("volume {} file {}", String::from_utf8_lossy(&header.volume), path.display()),
    }
}

/// What the images area takes: plain files (the dump's images); and pre-copy's chain, exactly:
/// a directory `pre-N`, plain files in it, and the links CRIU makes from a dump to its parent
/// (`parent` or `pre-N/parent`, pointing at `pre-M` or `../pre-M`). Nothing else, so that no
/// entry reaches outside the images directory.
fn is_image_entry(header: &EntryHeader) -> bool {
    let path = header.path.as_slice();
    let (dir, name) = match path.iter().position(|&b| b == b'/') {
        Some(i) => (Some(&path[..i]), &path[i + 1..]),
        None => (None, path),
    };
    if dir.is_some_and(|d| !is_predump_dir(d)) {
        return false;
    }
    match header.kind {
        Kind::File => is_plain_name(name),
        Kind::Dir => dir.is_none() && is_predump_dir(name),
        Kind::Symlink => {
            let link = header.link.as_slice();
            name == b"parent" && is_predump_dir(link.strip_prefix(b"../").unwrap_or(link))
        }
        _ => false,
    }
}

/// `pre-` and a round number.
fn is_predump_dir(name: &[u8]) -> bool {
    name.strip_prefix(b"pre-").is_some_and(|n| !n.is_empty() && n.len() <= 4 && n.iter().all(u8::is_ascii_digit))
}

/// A single file name: no separator, not `.` or `..`, not empty.
fn is_plain_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: Kind, link: &str) -> EntryHeader {
        EntryHeader {
            id: 1,
            area: Area::Images,
            volume: vec![],
            path: path.as_bytes().to_vec(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
            link: link.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_images_area_takes_images_and_the_pre_dump_chain_only() {
        for ok in [
            entry("pages-1.img", Kind::File, ""),
            entry("pre-1", Kind::Dir, ""),
            entry("pre-12/pagemap-7.img", Kind::File, ""),
            entry("parent", Kind::Symlink, "pre-3"),
            entry("pre-2/parent", Kind::Symlink, "../pre-1"),
        ] {
            assert!(is_image_entry(&ok), "{:?}", String::from_utf8_lossy(&ok.path));
        }
        for bad in [
            entry("../pages-1.img", Kind::File, ""),
            entry("pre-1/../../x", Kind::File, ""),
            entry("pre-1/sub/x", Kind::File, ""),
            entry("pre-x/pages-1.img", Kind::File, ""),
            entry("other", Kind::Dir, ""),
            entry("pre-1/pre-2", Kind::Dir, ""),
            entry("parent", Kind::Symlink, "/etc"),
            entry("parent", Kind::Symlink, "../../pre-1"),
            entry("link", Kind::Symlink, "pre-1"),
            entry("pre-1/parent", Kind::Symlink, "../x"),
            entry("fifo", Kind::Fifo, ""),
            entry("pages-1.img", Kind::Delete, ""),
        ] {
            assert!(!is_image_entry(&bad), "{:?} -> {:?}", String::from_utf8_lossy(&bad.path), bad.link);
        }
    }
}
