//! The source side of a transfer: connects to the destination's receiver, then streams the
//! writable layer's delta, the volumes and the checkpoint images, each file with its BLAKE3.
//!
//! Page images are sent while CRIU is still writing them (CRIU appends to `pages-*.img` with
//! `splice` at the file position and never rewrites it), so the transfer of the memory overlaps
//! the dump instead of following it; every other image is sent once the dump has finished.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rustls::{ClientConnection, StreamOwned};
use vimigrate_protocol::StreamCompression;

use crate::error::RuntimeError;
use crate::fs::layer_delta::DeltaItem;
use crate::fs::safe::open_no_follow;
use crate::transfer::compress::Compressor;
use crate::transfer::tls::{client_config, server_name};
use crate::transfer::wire;
use crate::transfer::wire::{Area, EntryHeader, Frame, Hello, Kind};

/// Payload of one `Data` frame.
const CHUNK: usize = 1 << 20;
/// How long the tail loop waits when CRIU has written nothing new.
const TAIL_PAUSE: Duration = Duration::from_millis(2);

/// Where and how to send.
#[derive(Debug, Clone)]
pub struct SendTarget {
    /// `host:port` of the receiver.
    pub address: String,
    /// The migration's token.
    pub token: Vec<u8>,
    /// The migration (checkpoint name).
    pub migration: String,
    /// The receiver's pinned certificate (DER).
    pub server_cert: Vec<u8>,
    /// Connection timeout.
    pub connect_timeout: Duration,
    /// Longest silence on the connection.
    pub io_timeout: Duration,
    /// Whether chunks go compressed (the receiver must read `Zdata` frames).
    pub compression: StreamCompression,
}

/// What was sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Image bytes.
    pub image_bytes: u64,
    /// Layer and volume file bytes.
    pub file_bytes: u64,
    /// Layer and volume entries.
    pub file_entries: u64,
    /// Payload bytes on the wire for both (after compression).
    pub wire_bytes: u64,
}

impl SendReport {
    /// Copies these figures into the status the broker reads.
    pub fn record(&self, stats: &mut vimigrate_protocol::RuntimeStats) {
        stats.image_bytes = self.image_bytes;
        stats.file_bytes = self.file_bytes;
        stats.file_entries = self.file_entries;
        stats.wire_bytes = self.wire_bytes;
    }
}

/// An open connection to the receiver.
pub struct Sender {
    out: BufWriter<StreamOwned<ClientConnection, TcpStream>>,
    next_id: u32,
    report: SendReport,
    buf: Vec<u8>,
    corrupt: bool,
    progress: Progress,
    compressor: Compressor,
}

/// When the sender last moved data (ms since the connection): a watchdog outside the sender's
/// thread can tell a stalled link from a slow one.
#[derive(Debug, Clone)]
pub struct Progress {
    start: std::time::Instant,
    last_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Progress {
    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(now, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long since data last moved.
    pub fn idle(&self) -> Duration {
        let last = self.last_ms.load(std::sync::atomic::Ordering::Relaxed);
        self.start.elapsed().saturating_sub(Duration::from_millis(last))
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("entries", &self.next_id).field("report", &self.report).finish_non_exhaustive()
    }
}

struct Tail {
    id: u32,
    file: File,
    offset: u64,
    hasher: blake3::Hasher,
}

fn send_error(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RuntimeError {
    RuntimeError::io("send", context)
}

impl Sender {
    /// Connects, completes the TLS handshake against the pinned certificate, and presents the
    /// token. Fails without side effects: nothing has been dumped yet.
    pub fn connect(target: &SendTarget) -> Result<Sender, RuntimeError> {
        let addresses: Vec<_> = target
            .address
            .to_socket_addrs()
            .map_err(RuntimeError::io("connect", format!("resolve {}", target.address)))?
            .collect();
        let mut last = None;
        let mut tcp = None;
        for address in addresses {
            match TcpStream::connect_timeout(&address, target.connect_timeout) {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = tcp.ok_or_else(|| RuntimeError::Io {
            step: "connect",
            context: format!("connect to the destination's receiver at {}", target.address),
            source: last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AddrNotAvailable)),
        })?;
        tcp.set_nodelay(true).map_err(RuntimeError::io("connect", "set TCP_NODELAY"))?;
        tcp.set_read_timeout(Some(target.io_timeout)).map_err(RuntimeError::io("connect", "set a read timeout"))?;
        tcp.set_write_timeout(Some(target.io_timeout)).map_err(RuntimeError::io("connect", "set a write timeout"))?;
        let config = client_config(target.server_cert.clone())?;
        let conn = ClientConnection::new(config, server_name())
            .map_err(|e| RuntimeError::Tls { step: "connect", detail: e.to_string() })?;
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).map_err(|e| RuntimeError::Io {
                step: "connect",
                context: format!("TLS handshake with {}", target.address),
                source: e,
            })?;
        }
        wire::write_hello(
            &mut stream,
            &Hello { token: target.token.clone(), migration: target.migration.as_bytes().to_vec() },
        )
        .map_err(RuntimeError::io("connect", "send the hello"))?;
        stream.flush().map_err(RuntimeError::io("connect", "send the hello"))?;
        if let Some(refusal) =
            wire::read_verdict(&mut stream).map_err(RuntimeError::io("connect", "read the receiver's answer"))?
        {
            return Err(RuntimeError::protocol("connect", format!("the receiver refused the transfer: {refusal}")));
        }
        Ok(Sender {
            out: BufWriter::with_capacity(256 << 10, stream),
            next_id: 0,
            report: SendReport::default(),
            buf: vec![0; CHUNK],
            corrupt: false,
            compressor: Compressor::new(target.compression)
                .map_err(RuntimeError::io("connect", "set up the zstd compressor"))?,
            progress: Progress {
                start: std::time::Instant::now(),
                last_ms: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0)),
            },
        })
    }

    /// The sender's progress, for a watchdog.
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// A second handle on the connection: shutting it down unblocks a sender stuck on a link
    /// that went silent.
    pub fn socket(&self) -> std::io::Result<TcpStream> {
        self.out.get_ref().sock.try_clone()
    }

    /// Fault injection for tests of the integrity checks: flips one byte of the next image
    /// chunk after it was hashed, as a corrupting link or disk would.
    pub fn corrupt_the_stream(&mut self) {
        self.corrupt = true;
    }

    fn new_id(&mut self) -> u32 {
        self.next_id += 1;
        self.next_id
    }

    fn frame(&mut self, frame: &Frame) -> Result<(), RuntimeError> {
        wire::write_frame(&mut self.out, frame).map_err(send_error("write a frame"))
    }

    /// Sends `self.buf[..len]` as entry `id`'s next chunk, compressed when the compressor
    /// judges it pays.
    fn data(&mut self, id: u32, len: usize) -> Result<(), RuntimeError> {
        let encoded = self.compressor.encode(&self.buf[..len]);
        // The compressor's own time is not the link's.
        let started = Instant::now();
        let wire = match encoded {
            Some(compressed) => {
                let frame = Frame::Zdata { id, raw_len: len as u32, len: compressed.len() as u32 };
                wire::write_frame(&mut self.out, &frame).map_err(send_error("write a frame"))?;
                self.out.write_all(compressed).map_err(send_error("write data"))?;
                compressed.len()
            }
            None => {
                wire::write_frame(&mut self.out, &Frame::Data { id, len: len as u32 })
                    .map_err(send_error("write a frame"))?;
                self.out.write_all(&self.buf[..len]).map_err(send_error("write data"))?;
                len
            }
        };
        self.compressor.wrote(wire, started.elapsed());
        self.report.wire_bytes += wire as u64;
        self.progress.touch();
        Ok(())
    }

    /// Raw bytes over wire bytes so far (1 when nothing went compressed).
    pub fn compression_ratio(&self) -> f64 {
        self.compressor.ratio()
    }

    /// Sends layer or volume entries (`area` Rootfs or Volume; `volume` names the volume).
    pub fn send_items(&mut self, area: Area, volume: &str, items: &[DeltaItem]) -> Result<(), RuntimeError> {
        for item in items {
            let id = self.new_id();
            let link = if item.kind == Kind::Symlink {
                fs::read_link(&item.host_path)
                    .map_err(send_error(format!("read link {}", item.host_path.display())))?
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            } else {
                Vec::new()
            };
            self.frame(&Frame::Entry(EntryHeader {
                id,
                area,
                volume: volume.as_bytes().to_vec(),
                path: item.path.as_bytes().to_vec(),
                kind: item.kind,
                mode: item.mode,
                uid: item.uid,
                gid: item.gid,
                mtime_sec: item.mtime_sec,
                mtime_nsec: item.mtime_nsec,
                link,
            }))?;
            self.report.file_entries += 1;
            if item.kind == Kind::File {
                let mut file = open_no_follow(&item.host_path)
                    .map_err(send_error(format!("open {}", item.host_path.display())))?;
                let mut hasher = blake3::Hasher::new();
                let mut size = 0u64;
                loop {
                    let n =
                        file.read(&mut self.buf).map_err(send_error(format!("read {}", item.host_path.display())))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&self.buf[..n]);
                    self.data(id, n)?;
                    size += n as u64;
                }
                self.report.file_bytes += size;
                self.frame(&Frame::End { id, size, digest: *hasher.finalize().as_bytes() })?;
            }
        }
        Ok(())
    }

    /// Streams the images of `dir` while `dump_result()` is `None` (the dump runs: page
    /// images only, as they grow), then everything that is left once it is `Some(true)`.
    /// Returns when every image has been sent in full; a failed dump (`Some(false)`) stops it.
    pub fn stream_images(&mut self, dir: &Path, dump_result: &dyn Fn() -> Option<bool>) -> Result<(), RuntimeError> {
        let mut tails: BTreeMap<String, Tail> = BTreeMap::new();
        loop {
            // Read the state before listing: the final pass then sees every file CRIU wrote.
            let finished = match dump_result() {
                None => false,
                Some(true) => true,
                Some(false) => {
                    return Err(RuntimeError::Abandoned { step: "send", detail: "the dump failed".into() });
                }
            };
            let mut progressed = false;
            let names = image_names(dir)?;
            for name in names {
                if !finished && !is_page_image(&name) {
                    continue;
                }
                if !tails.contains_key(&name) {
                    let path = dir.join(&name);
                    let file = open_no_follow(&path).map_err(send_error(format!("open {}", path.display())))?;
                    let id = self.new_id();
                    self.frame(&Frame::Entry(EntryHeader {
                        id,
                        area: Area::Images,
                        volume: Vec::new(),
                        path: name.as_bytes().to_vec(),
                        kind: Kind::File,
                        mode: 0o600,
                        uid: 0,
                        gid: 0,
                        mtime_sec: 0,
                        mtime_nsec: 0,
                        link: Vec::new(),
                    }))?;
                    tails.insert(name.clone(), Tail { id, file, offset: 0, hasher: blake3::Hasher::new() });
                }
                let tail = tails.get_mut(&name).expect("inserted above");
                let (id, mut offset) = (tail.id, tail.offset);
                loop {
                    let n =
                        tail.file.read_at(&mut self.buf, offset).map_err(send_error(format!("read image {name}")))?;
                    if n == 0 {
                        break;
                    }
                    tail.hasher.update(&self.buf[..n]);
                    if std::mem::take(&mut self.corrupt) {
                        self.buf[n / 2] ^= 0x55;
                    }
                    offset += n as u64;
                    tail.offset = offset;
                    self.data(id, n)?;
                    self.report.image_bytes += n as u64;
                    progressed = true;
                }
            }
            if finished {
                break;
            }
            if !progressed {
                self.out.flush().map_err(send_error("flush"))?;
                std::thread::sleep(TAIL_PAUSE);
            }
        }
        for (name, tail) in tails {
            let size = tail.file.metadata().map_err(send_error(format!("stat image {name}")))?.len();
            if size != tail.offset {
                return Err(RuntimeError::protocol(
                    "send",
                    format!("image {name} changed while it was sent ({} of {size} bytes)", tail.offset),
                ));
            }
            self.frame(&Frame::End { id: tail.id, size, digest: *tail.hasher.finalize().as_bytes() })?;
        }
        Ok(())
    }

    /// Sends pre-copy's round `name` (`pre-N`), a finished pre-dump in `dir`, into the images
    /// area under that name: the directory, its images, and its link to the round before.
    /// Returns the bytes of its page images (how much memory the round carried).
    pub fn send_predump(&mut self, dir: &Path, name: &str) -> Result<u64, RuntimeError> {
        let entry = |id, path: String, kind, link: Vec<u8>| {
            Frame::Entry(EntryHeader {
                id,
                area: Area::Images,
                volume: Vec::new(),
                path: path.into_bytes(),
                kind,
                mode: 0o600,
                uid: 0,
                gid: 0,
                mtime_sec: 0,
                mtime_nsec: 0,
                link,
            })
        };
        let id = self.new_id();
        self.frame(&entry(id, name.to_string(), Kind::Dir, Vec::new()))?;
        let mut pages = 0;
        for file in image_names(dir)? {
            let path = dir.join(&file);
            let mut source = open_no_follow(&path).map_err(send_error(format!("open {}", path.display())))?;
            let id = self.new_id();
            self.frame(&entry(id, format!("{name}/{file}"), Kind::File, Vec::new()))?;
            let mut hasher = blake3::Hasher::new();
            let mut size = 0u64;
            loop {
                let n = source.read(&mut self.buf).map_err(send_error(format!("read {}", path.display())))?;
                if n == 0 {
                    break;
                }
                hasher.update(&self.buf[..n]);
                self.data(id, n)?;
                size += n as u64;
            }
            self.report.image_bytes += size;
            if is_page_image(&file) {
                pages += size;
            }
            self.frame(&Frame::End { id, size, digest: *hasher.finalize().as_bytes() })?;
        }
        if let Ok(parent) = fs::read_link(dir.join(PARENT_LINK)) {
            let id = self.new_id();
            self.frame(&entry(
                id,
                format!("{name}/{PARENT_LINK}"),
                Kind::Symlink,
                parent.as_os_str().as_bytes().to_vec(),
            ))?;
        }
        self.out.flush().map_err(send_error("flush"))?;
        Ok(pages)
    }

    /// Sends the link CRIU made from the final dump's images to the last pre-dump (`parent`),
    /// when there is one.
    pub fn send_parent_link(&mut self, images: &Path) -> Result<(), RuntimeError> {
        let Ok(parent) = fs::read_link(images.join(PARENT_LINK)) else { return Ok(()) };
        let id = self.new_id();
        self.frame(&Frame::Entry(EntryHeader {
            id,
            area: Area::Images,
            volume: Vec::new(),
            path: PARENT_LINK.as_bytes().to_vec(),
            kind: Kind::Symlink,
            mode: 0o600,
            uid: 0,
            gid: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
            link: parent.as_os_str().as_bytes().to_vec(),
        }))
    }

    /// Tells the receiver the transfer is off, so that it gives up at once. Best effort and
    /// quick: after a failed write the link may be gone, and every blocked write would wait a
    /// whole I/O timeout (the dump, and the service's rollback, would wait with it).
    pub fn abort(mut self, message: &str) {
        let _ = self.out.get_ref().sock.set_write_timeout(Some(Duration::from_millis(200)));
        let _ = self.frame(&Frame::Abort { message: message.as_bytes().to_vec() });
        let _ = self.out.flush();
        // Whatever is still buffered is dropped, not written on drop.
        let (stream, _unsent) = self.out.into_parts();
        let _ = stream.sock.shutdown(std::net::Shutdown::Both);
    }

    /// Closes the stream and waits for the receiver to confirm that every checksum matched.
    pub fn finish(self) -> Result<SendReport, RuntimeError> {
        self.finish_keeping_connection().map(|(report, _)| report)
    }

    /// Ends this connection's part of the transfer (pre-copy's rounds) and waits for the
    /// receiver to confirm it; the receiver then waits for the next connection.
    pub fn finish_part(mut self) -> Result<SendReport, RuntimeError> {
        let total = self.report.image_bytes + self.report.file_bytes;
        self.frame(&Frame::Part { bytes: total, entries: u64::from(self.next_id) })?;
        self.out.flush().map_err(send_error("flush"))?;
        match wire::read_verdict(self.out.get_mut()).map_err(send_error("read the receiver's verdict"))? {
            None => {
                let (mut stream, _) = self.out.into_parts();
                stream.conn.send_close_notify();
                let _ = stream.flush();
                Ok(self.report)
            }
            Some(refusal) => {
                Err(RuntimeError::protocol("send", format!("the destination rejected the pre-copy rounds: {refusal}")))
            }
        }
    }

    /// [`Sender::finish`], handing back the connection for what follows the images (post-copy's
    /// page relay).
    pub fn finish_keeping_connection(
        mut self,
    ) -> Result<(SendReport, StreamOwned<ClientConnection, TcpStream>), RuntimeError> {
        let total = self.report.image_bytes + self.report.file_bytes;
        self.frame(&Frame::Done { bytes: total, entries: u64::from(self.next_id) })?;
        self.out.flush().map_err(send_error("flush"))?;
        let stream = self.out.get_mut();
        match wire::read_verdict(stream).map_err(send_error("read the receiver's verdict"))? {
            None => {
                let (stream, _) = self.out.into_parts();
                Ok((self.report, stream))
            }
            Some(refusal) => {
                Err(RuntimeError::protocol("send", format!("the destination rejected the transfer: {refusal}")))
            }
        }
    }
}

/// The link CRIU makes in a dump's images directory to its parent's (`--parent-path`).
pub const PARENT_LINK: &str = "parent";

/// Page images: what CRIU appends to while it dumps.
fn is_page_image(name: &str) -> bool {
    name.starts_with("pages-") && name.ends_with(".img")
}

fn image_names(dir: &Path) -> Result<Vec<String>, RuntimeError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(send_error(format!("list {}", dir.display())))? {
        let entry = entry.map_err(send_error(format!("list {}", dir.display())))?;
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if let (true, Some(name)) = (is_file, entry.file_name().to_str()) {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}
