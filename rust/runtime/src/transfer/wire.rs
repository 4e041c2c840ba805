//! The transfer protocol between the source's and the destination's wrapper, inside TLS.
//!
//! The sender opens with a hello (magic, version, the migration's token and name); the receiver
//! answers with a verdict byte. Then the sender streams entries: each starts with an `Entry`
//! header, carries its content in `Data` frames (several entries may be open at once: the page
//! images grow while CRIU dumps, and are sent as they grow) and, for files, ends with `End`
//! (size and BLAKE3); a `Zdata` frame carries a chunk compressed with zstd, when the source's
//! compressor judged it pays (see [`crate::transfer::compress`]). `Done` closes the stream; the receiver answers with a verdict once every
//! checksum has matched. `Part` ends one connection of several (pre-copy's rounds come in one,
//! the dump in the next): checked and answered like `Done`, then the receiver waits for the
//! next connection. `Abort` tells the receiver the dump failed on the source.
//!
//! Integers are big-endian; byte strings are a u16 length and the bytes.

use std::io::{self, Read, Write};

/// First bytes of every stream.
pub const MAGIC: &[u8; 4] = b"VMGR";
/// Protocol version.
pub const VERSION: u8 = 1;
/// Largest `Data` payload accepted.
pub const MAX_DATA: u32 = 4 << 20;
/// Largest byte string accepted (paths, link targets, messages).
pub const MAX_BYTES: usize = 8192;

/// Where an entry goes on the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// The checkpoint images directory (flat file names).
    Images,
    /// The container's root filesystem (absolute paths inside it).
    Rootfs,
    /// A named volume, identified by its mount point (paths relative to the volume).
    Volume,
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file: `Data` frames and an `End` follow.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (target in the header).
    Symlink,
    /// The path no longer exists on the source: remove it.
    Delete,
    /// A named pipe.
    Fifo,
}

/// The header of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    /// Identifies the entry's `Data` and `End` frames.
    pub id: u32,
    /// Where it goes.
    pub area: Area,
    /// For [`Area::Volume`]: the volume's mount point; empty otherwise.
    pub volume: Vec<u8>,
    /// Path within the area.
    pub path: Vec<u8>,
    /// What it is.
    pub kind: Kind,
    /// `st_mode` permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds.
    pub mtime_sec: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// For [`Kind::Symlink`]: the target.
    pub link: Vec<u8>,
}

/// One frame from the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A new entry.
    Entry(EntryHeader),
    /// `len` bytes of entry `id` follow the frame header.
    Data {
        /// The entry.
        id: u32,
        /// Payload length.
        len: u32,
    },
    /// `len` bytes of a zstd frame follow the header, `raw_len` bytes of entry `id` once
    /// decompressed.
    Zdata {
        /// The entry.
        id: u32,
        /// Length once decompressed.
        raw_len: u32,
        /// Payload length on the wire.
        len: u32,
    },
    /// Entry `id` is complete.
    End {
        /// The entry.
        id: u32,
        /// Its size.
        size: u64,
        /// BLAKE3 of its content.
        digest: [u8; 32],
    },
    /// The stream is complete.
    Done {
        /// Content bytes sent in all.
        bytes: u64,
        /// Entries sent.
        entries: u64,
    },
    /// This connection's part is complete (`bytes` and `entries` as in `Done`, for it alone);
    /// the rest comes in a later connection: pre-copy's rounds, then the dump.
    Part {
        /// Content bytes sent in this connection.
        bytes: u64,
        /// Entries sent in this connection.
        entries: u64,
    },
    /// The source gave up (its dump failed).
    Abort {
        /// Why.
        message: Vec<u8>,
    },
}

const T_ENTRY: u8 = 1;
const T_DATA: u8 = 2;
const T_END: u8 = 3;
const T_DONE: u8 = 4;
const T_ABORT: u8 = 5;
const T_ZDATA: u8 = 6;
const T_PART: u8 = 7;

fn bad(detail: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, detail.into())
}

fn read_u8(r: &mut impl Read) -> io::Result<u8> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

fn read_u16(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

/// Reads a length-prefixed byte string of at most [`MAX_BYTES`].
pub fn read_bytes(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let len = usize::from(read_u16(r)?);
    if len > MAX_BYTES {
        return Err(bad(format!("a string of {len} bytes (at most {MAX_BYTES})")));
    }
    let mut out = vec![0u8; len];
    r.read_exact(&mut out)?;
    Ok(out)
}

/// Writes a length-prefixed byte string.
pub fn write_bytes(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    let len = u16::try_from(bytes.len()).ok().filter(|l| usize::from(*l) <= MAX_BYTES);
    let len = len.ok_or_else(|| bad(format!("a string of {} bytes (at most {MAX_BYTES})", bytes.len())))?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(bytes)
}

/// The sender's hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The migration's token.
    pub token: Vec<u8>,
    /// The migration (checkpoint name).
    pub migration: Vec<u8>,
}

/// Writes the hello.
pub fn write_hello(w: &mut impl Write, hello: &Hello) -> io::Result<()> {
    w.write_all(MAGIC)?;
    w.write_all(&[VERSION])?;
    write_bytes(w, &hello.token)?;
    write_bytes(w, &hello.migration)
}

/// Reads the hello, refusing other protocols and versions.
pub fn read_hello(r: &mut impl Read) -> io::Result<Hello> {
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(bad("not a vimigrate transfer stream"));
    }
    let version = read_u8(r)?;
    if version != VERSION {
        return Err(bad(format!("transfer protocol version {version}, this runtime speaks {VERSION}")));
    }
    Ok(Hello { token: read_bytes(r)?, migration: read_bytes(r)? })
}

/// Writes a verdict: accepted, or refused with a message.
pub fn write_verdict(w: &mut impl Write, refusal: Option<&str>) -> io::Result<()> {
    match refusal {
        None => w.write_all(&[0]),
        Some(message) => {
            w.write_all(&[1])?;
            let cut = &message.as_bytes()[..message.len().min(MAX_BYTES)];
            write_bytes(w, cut)
        }
    }?;
    w.flush()
}

/// Reads a verdict: `Ok(None)` when accepted, `Ok(Some(message))` when refused.
pub fn read_verdict(r: &mut impl Read) -> io::Result<Option<String>> {
    match read_u8(r)? {
        0 => Ok(None),
        1 => Ok(Some(String::from_utf8_lossy(&read_bytes(r)?).into_owned())),
        other => Err(bad(format!("verdict byte {other}"))),
    }
}

fn area_code(area: Area) -> u8 {
    match area {
        Area::Images => 0,
        Area::Rootfs => 1,
        Area::Volume => 2,
    }
}

fn kind_code(kind: Kind) -> u8 {
    match kind {
        Kind::File => 0,
        Kind::Dir => 1,
        Kind::Symlink => 2,
        Kind::Delete => 3,
        Kind::Fifo => 4,
    }
}

/// Writes a frame header (for `Data`, the caller writes the payload right after).
pub fn write_frame(w: &mut impl Write, frame: &Frame) -> io::Result<()> {
    match frame {
        Frame::Entry(h) => {
            w.write_all(&[T_ENTRY])?;
            w.write_all(&h.id.to_be_bytes())?;
            w.write_all(&[area_code(h.area)])?;
            write_bytes(w, &h.volume)?;
            write_bytes(w, &h.path)?;
            w.write_all(&[kind_code(h.kind)])?;
            w.write_all(&h.mode.to_be_bytes())?;
            w.write_all(&h.uid.to_be_bytes())?;
            w.write_all(&h.gid.to_be_bytes())?;
            w.write_all(&h.mtime_sec.to_be_bytes())?;
            w.write_all(&h.mtime_nsec.to_be_bytes())?;
            write_bytes(w, &h.link)
        }
        Frame::Data { id, len } => {
            w.write_all(&[T_DATA])?;
            w.write_all(&id.to_be_bytes())?;
            w.write_all(&len.to_be_bytes())
        }
        Frame::Zdata { id, raw_len, len } => {
            w.write_all(&[T_ZDATA])?;
            w.write_all(&id.to_be_bytes())?;
            w.write_all(&raw_len.to_be_bytes())?;
            w.write_all(&len.to_be_bytes())
        }
        Frame::End { id, size, digest } => {
            w.write_all(&[T_END])?;
            w.write_all(&id.to_be_bytes())?;
            w.write_all(&size.to_be_bytes())?;
            w.write_all(digest)
        }
        Frame::Done { bytes, entries } => {
            w.write_all(&[T_DONE])?;
            w.write_all(&bytes.to_be_bytes())?;
            w.write_all(&entries.to_be_bytes())
        }
        Frame::Part { bytes, entries } => {
            w.write_all(&[T_PART])?;
            w.write_all(&bytes.to_be_bytes())?;
            w.write_all(&entries.to_be_bytes())
        }
        Frame::Abort { message } => {
            w.write_all(&[T_ABORT])?;
            write_bytes(w, &message[..message.len().min(MAX_BYTES)])
        }
    }
}

/// Reads one frame header; after `Data`, the caller reads exactly `len` payload bytes.
pub fn read_frame(r: &mut impl Read) -> io::Result<Frame> {
    match read_u8(r)? {
        T_ENTRY => {
            let id = read_u32(r)?;
            let area = match read_u8(r)? {
                0 => Area::Images,
                1 => Area::Rootfs,
                2 => Area::Volume,
                other => return Err(bad(format!("area {other}"))),
            };
            let volume = read_bytes(r)?;
            let path = read_bytes(r)?;
            let kind = match read_u8(r)? {
                0 => Kind::File,
                1 => Kind::Dir,
                2 => Kind::Symlink,
                3 => Kind::Delete,
                4 => Kind::Fifo,
                other => return Err(bad(format!("entry kind {other}"))),
            };
            let mode = read_u32(r)?;
            let uid = read_u32(r)?;
            let gid = read_u32(r)?;
            let mtime_sec = read_u64(r)? as i64;
            let mtime_nsec = read_u32(r)?;
            if mtime_nsec >= 1_000_000_000 {
                return Err(bad(format!("{mtime_nsec} nanoseconds")));
            }
            let link = read_bytes(r)?;
            Ok(Frame::Entry(EntryHeader { id, area, volume, path, kind, mode, uid, gid, mtime_sec, mtime_nsec, link }))
        }
        T_DATA => {
            let id = read_u32(r)?;
            let len = read_u32(r)?;
            if len > MAX_DATA {
                return Err(bad(format!("a data frame of {len} bytes (at most {MAX_DATA})")));
            }
            Ok(Frame::Data { id, len })
        }
        T_ZDATA => {
            let id = read_u32(r)?;
            let raw_len = read_u32(r)?;
            let len = read_u32(r)?;
            if raw_len > MAX_DATA || len > MAX_DATA {
                return Err(bad(format!("a compressed frame of {len} -> {raw_len} bytes (at most {MAX_DATA})")));
            }
            Ok(Frame::Zdata { id, raw_len, len })
        }
        T_END => {
            let id = read_u32(r)?;
            let size = read_u64(r)?;
            let mut digest = [0u8; 32];
            r.read_exact(&mut digest)?;
            Ok(Frame::End { id, size, digest })
        }
        T_DONE => Ok(Frame::Done { bytes: read_u64(r)?, entries: read_u64(r)? }),
        T_PART => Ok(Frame::Part { bytes: read_u64(r)?, entries: read_u64(r)? }),
        T_ABORT => Ok(Frame::Abort { message: read_bytes(r)? }),
        other => Err(bad(format!("frame type {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> EntryHeader {
        EntryHeader {
            id: 7,
            area: Area::Volume,
            volume: b"/data".to_vec(),
            path: b"sub/file".to_vec(),
            kind: Kind::Symlink,
            mode: 0o120777,
            uid: 1000,
            gid: 1000,
            mtime_sec: 1_700_000_000,
            mtime_nsec: 123,
            link: b"../target".to_vec(),
        }
    }

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Entry(header()),
            Frame::Data { id: 7, len: 3 },
            Frame::Zdata { id: 7, raw_len: 4096, len: 12 },
            Frame::End { id: 7, size: 3, digest: [9; 32] },
            Frame::Done { bytes: 3, entries: 1 },
            Frame::Part { bytes: 9, entries: 2 },
            Frame::Abort { message: b"dump failed".to_vec() },
        ];
        let mut buf = Vec::new();
        for frame in &frames {
            write_frame(&mut buf, frame).unwrap();
        }
        let mut r = buf.as_slice();
        for frame in &frames {
            assert_eq!(&read_frame(&mut r).unwrap(), frame);
        }
        assert!(r.is_empty());
    }

    #[test]
    fn hello_and_verdicts() {
        let mut buf = Vec::new();
        write_hello(&mut buf, &Hello { token: b"tok".to_vec(), migration: b"m".to_vec() }).unwrap();
        write_verdict(&mut buf, Some("wrong token")).unwrap();
        write_verdict(&mut buf, None).unwrap();
        let mut r = buf.as_slice();
        assert_eq!(read_hello(&mut r).unwrap().token, b"tok");
        assert_eq!(read_verdict(&mut r).unwrap().as_deref(), Some("wrong token"));
        assert_eq!(read_verdict(&mut r).unwrap(), None);
    }

    #[test]
    fn hostile_input_is_refused_not_allocated() {
        let mut huge = vec![T_DATA, 0, 0, 0, 1];
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(read_frame(&mut huge.as_slice()).is_err());
        let mut bomb = vec![T_ZDATA, 0, 0, 0, 1];
        bomb.extend_from_slice(&u32::MAX.to_be_bytes());
        bomb.extend_from_slice(&16u32.to_be_bytes());
        assert!(read_frame(&mut bomb.as_slice()).is_err(), "a chunk claiming 4 GiB once decompressed");
        let long_string = [T_ABORT, 0xff, 0xff];
        assert!(read_frame(&mut long_string.as_slice()).is_err());
        assert!(read_frame(&mut [99u8].as_slice()).is_err());
        assert!(read_hello(&mut b"HTTP/1.1".as_slice()).is_err());
        let truncated = [T_END, 0, 0];
        assert!(read_frame(&mut truncated.as_slice()).is_err());
    }
}
