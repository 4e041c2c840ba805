//! An incremental tar reader that digests a stream as it passes, so a transfer can be checked
//! end to end without ever holding a whole file (checkpoint images reach gigabytes) in memory.
//!
//! It understands what Docker's archive endpoints and CRIU's images produce: POSIX ustar (name
//! plus prefix), GNU long names and link names (`L`, `K`), PAX extended headers (`x` with `path`,
//! `linkpath` and `size`; global `g` headers are read and ignored), regular files, directories,
//! symbolic and hard links. A truncated or corrupted stream is an [`IntegrityError::Tar`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::error::IntegrityError;

/// Tar's block size: headers are one block and content is padded to a whole number of them.
const BLOCK: usize = 512;

/// Largest file kept by [`TarManifestBuilder::capture`]: CRIU's `stats-dump` is a few hundred bytes,
/// and anything bigger than this is not a file meant to be decoded in memory.
pub const CAPTURE_LIMIT: u64 = 1 << 20;

/// Largest GNU long name or PAX header accepted: real ones are a few hundred bytes, and a bound
/// keeps a corrupted size field from making the reader buffer gigabytes.
const METADATA_LIMIT: u64 = 1 << 20;

/// At most this many lines of [`TarManifest::differences`] are listed, then a count of the rest.
const MAX_DIFFERENCES: usize = 20;

/// One entry of a tar stream, as far as a comparison of two trees cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A regular file with its size and the SHA-256 digest of its content.
    File {
        /// Size in bytes.
        size: u64,
        /// SHA-256 of the content.
        sha256: [u8; 32],
    },
    /// A directory.
    Dir,
    /// A symbolic link; the target is the link's text, as stored.
    Symlink {
        /// Where the link points.
        target: String,
    },
    /// A hard link to an earlier entry of the same stream.
    Hardlink {
        /// The normalized path of the entry it links to.
        target: String,
    },
    /// Anything else (devices, FIFOs, ...): its presence is recorded, not its content.
    Other,
}

impl Entry {
    /// A short description used in difference reports.
    fn describe(&self) -> String {
        match self {
            Entry::File { size, .. } => format!("a file of {size} bytes"),
            Entry::Dir => "a directory".to_string(),
            Entry::Symlink { target } => format!("a symlink to `{target}`"),
            Entry::Hardlink { target } => format!("a hard link to `{target}`"),
            Entry::Other => "a special file".to_string(),
        }
    }
}

/// What a tar stream held: every entry by normalized path, and the content of captured files.
///
/// Paths are normalized: no leading `./` or `/`, no trailing `/`, no empty or `.` components.
/// Names that are not UTF-8 are converted lossily. The archive's root itself (`./`) is not an
/// entry. When a path occurs twice, the later entry wins, as it would on extraction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TarManifest {
    /// Every entry, by normalized path.
    pub entries: BTreeMap<String, Entry>,
    /// Content of the files asked for with [`TarManifestBuilder::capture`], by normalized path.
    pub captured: BTreeMap<String, Vec<u8>>,
}

impl TarManifest {
    /// Sum of the sizes of all regular files.
    pub fn total_file_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match e {
                Entry::File { size, .. } => *size,
                _ => 0,
            })
            .sum()
    }

    /// How `other` (what was found) differs from `self` (what was expected), one human-readable
    /// line per path: missing, unexpected, different kind, size or content. At most 20 lines,
    /// followed by "and N more" when there are more. Empty when both hold the same tree.
    pub fn differences(&self, other: &TarManifest) -> Vec<String> {
        let mut lines = Vec::new();
        let mut more = 0usize;
        let mut push = |line: String| {
            if lines.len() < MAX_DIFFERENCES {
                lines.push(line);
            } else {
                more += 1;
            }
        };
        for (path, expected) in &self.entries {
            match other.entries.get(path) {
                None => push(format!("`{path}` is missing ({})", expected.describe())),
                Some(found) if found == expected => {}
                Some(found) => push(describe_difference(path, expected, found)),
            }
        }
        for (path, found) in &other.entries {
            if !self.entries.contains_key(path) {
                push(format!("`{path}` is unexpected ({})", found.describe()));
            }
        }
        if more > 0 {
            lines.push(format!("and {more} more"));
        }
        lines
    }

    /// The same manifest with the leading path `from_prefix` replaced by `to_prefix` (both
    /// normalized first; hard link targets too), to compare trees whose top directories are named
    /// differently, e.g. a checkpoint `cp1` stored as `cp-restore` on the destination. Paths
    /// outside `from_prefix` are kept as they are; an empty `to_prefix` strips the prefix.
    pub fn rebased(&self, from_prefix: &str, to_prefix: &str) -> TarManifest {
        let from = normalize(from_prefix);
        let to = normalize(to_prefix);
        let rebase = |path: &str| -> String {
            let rest = if from.is_empty() {
                Some(path)
            } else if path == from {
                Some("")
            } else {
                path.strip_prefix(&from).and_then(|r| r.strip_prefix('/'))
            };
            match rest {
                None => path.to_string(),
                Some(rest) => normalize(&format!("{to}/{rest}")),
            }
        };
        let entries = self
            .entries
            .iter()
            .filter_map(|(path, entry)| {
                let entry = match entry {
                    Entry::Hardlink { target } => Entry::Hardlink { target: rebase(target) },
                    other => other.clone(),
                };
                let path = rebase(path);
                // Stripping a prefix turns its own directory into the root, which is no entry.
                (!path.is_empty()).then_some((path, entry))
            })
            .collect();
        let captured = self.captured.iter().map(|(path, data)| (rebase(path), data.clone())).collect();
        TarManifest { entries, captured }
    }

    /// The single top-level name every entry lives under (`data` for Docker's archive of
    /// `/data`), or `None` when the entries do not share one.
    pub fn top_level(&self) -> Option<&str> {
        let mut top: Option<&str> = None;
        for path in self.entries.keys() {
            let first = path.split('/').next().unwrap_or(path);
            match top {
                None => top = Some(first),
                Some(t) if t == first => {}
                Some(_) => return None,
            }
        }
        top
    }
}

fn describe_difference(path: &str, expected: &Entry, found: &Entry) -> String {
    match (expected, found) {
        (Entry::File { size: a, .. }, Entry::File { size: b, .. }) if a != b => {
            format!("`{path}` has {b} bytes instead of {a}")
        }
        (Entry::File { sha256: a, .. }, Entry::File { sha256: b, .. }) => {
            format!("`{path}` has different content (sha256 {} instead of {})", short_hex(b), short_hex(a))
        }
        _ => format!("`{path}` is {} instead of {}", found.describe(), expected.describe()),
    }
}

/// The first 8 bytes of a digest in hex: enough to tell two digests apart in a report.
fn short_hex(digest: &[u8; 32]) -> String {
    let mut out = String::with_capacity(16);
    for byte in &digest[..8] {
        // Writing into a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Normalizes an archive path: no leading `./` or `/`, no trailing `/`, no empty or `.` parts.
fn normalize(path: &str) -> String {
    path.split('/').filter(|part| !part.is_empty() && *part != ".").collect::<Vec<_>>().join("/")
}

/// What the content of the current entry is being read for.
enum Content {
    /// A regular file: hashed, and kept when its name was asked for.
    File { path: String, size: u64, hasher: Sha256, keep: Option<Vec<u8>> },
    /// A GNU long name (`L`) or long link name (`K`), or a PAX header (`x`, `g`): kept, then parsed.
    Meta { kind: u8, data: Vec<u8> },
    /// Content nobody needs (e.g. of a special file): skipped.
    Skip,
}

/// Where the reader is in the stream.
enum State {
    /// Collecting the next header block into `block`.
    Header,
    /// Reading `remaining` content bytes, then `padding` bytes up to the next block boundary.
    Content { remaining: u64, padding: u64, content: Content },
    /// Skipping the padding after content.
    Padding { remaining: u64 },
    /// One zero block seen: the next block must be zero too.
    OneZeroBlock,
    /// The end-of-archive marker (two zero blocks) was seen; only zero padding may follow.
    Ended,
}

/// Names set by GNU or PAX headers for the entry that follows them.
#[derive(Default)]
struct Pending {
    path: Option<String>,
    link: Option<String>,
    size: Option<u64>,
}

/// Reads a tar stream fed in chunks of any size and builds a [`TarManifest`].
///
/// Never buffers more than one header block, a bounded long name or PAX header, and the captured
/// files (each at most 1 MiB).
pub struct TarManifestBuilder {
    state: State,
    block: Vec<u8>,
    pending: Pending,
    capture: Vec<String>,
    manifest: TarManifest,
    /// Bytes consumed so far, to say where a problem is.
    offset: u64,
}

impl Default for TarManifestBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TarManifestBuilder {
    /// A reader at the start of a stream, capturing nothing.
    pub fn new() -> Self {
        TarManifestBuilder {
            state: State::Header,
            block: Vec::with_capacity(BLOCK),
            pending: Pending::default(),
            capture: Vec::new(),
            manifest: TarManifest::default(),
            offset: 0,
        }
    }

    /// Also keeps the content of every regular file whose base name is `file_name` (e.g.
    /// CRIU's `stats-dump`) in [`TarManifest::captured`]. Files over 1 MiB are digested but not
    /// kept. May be called several times for several names.
    pub fn capture(mut self, file_name: &str) -> Self {
        self.capture.push(file_name.to_string());
        self
    }

    /// Bytes fed so far.
    pub fn bytes_read(&self) -> u64 {
        self.offset
    }

    /// Feeds the next chunk of the stream; chunks may be split anywhere, even inside a header.
    /// Fails on a header with a bad checksum or an impossible field, or data after the end.
    pub fn update(&mut self, mut chunk: &[u8]) -> Result<(), IntegrityError> {
        while !chunk.is_empty() {
            let used = self.step(chunk)?;
            chunk = &chunk[used..];
            self.offset += used as u64;
        }
        Ok(())
    }

    /// Ends the stream and returns the manifest. Fails when the stream stopped inside an entry
    /// or before the end-of-archive marker: that is how a truncated transfer shows.
    pub fn finish(self) -> Result<TarManifest, IntegrityError> {
        match self.state {
            State::Ended => Ok(self.manifest),
            State::Header if self.block.is_empty() => {
                Err(self.error("the stream ended without the end-of-archive marker"))
            }
            State::Header => {
                Err(self.error(&format!("the stream ended inside a header ({} of 512 bytes)", self.block.len())))
            }
            State::Content { remaining, content: Content::File { ref path, .. }, .. } => {
                Err(self.error(&format!("the stream ended inside `{path}`, {remaining} bytes short")))
            }
            State::Content { remaining, .. } => {
                Err(self.error(&format!("the stream ended inside an entry, {remaining} bytes short")))
            }
            State::Padding { .. } => Err(self.error("the stream ended inside an entry's padding")),
            State::OneZeroBlock => Err(self.error("the stream ended after a single zero block")),
        }
    }

    fn error(&self, what: &str) -> IntegrityError {
        IntegrityError::Tar(format!("{what} (at byte {})", self.offset))
    }

    /// Consumes a prefix of `chunk` according to the current state; returns how many bytes.
    fn step(&mut self, chunk: &[u8]) -> Result<usize, IntegrityError> {
        match &mut self.state {
            State::Header | State::OneZeroBlock | State::Ended => {
                let take = (BLOCK - self.block.len()).min(chunk.len());
                self.block.extend_from_slice(&chunk[..take]);
                if self.block.len() == BLOCK {
                    // Offsets in errors point at the block's start.
                    self.offset -= (BLOCK - take) as u64;
                    let block = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
                    let result = self.on_block(&block);
                    self.offset += (BLOCK - take) as u64;
                    result?;
                }
                Ok(take)
            }
            State::Content { remaining, padding, content } => {
                let take = (*remaining).min(chunk.len() as u64) as usize;
                let data = &chunk[..take];
                match content {
                    Content::File { hasher, keep, .. } => {
                        hasher.update(data);
                        if let Some(keep) = keep {
                            keep.extend_from_slice(data);
                        }
                    }
                    Content::Meta { data: kept, .. } => kept.extend_from_slice(data),
                    Content::Skip => {}
                }
                *remaining -= take as u64;
                if *remaining == 0 {
                    let padding = *padding;
                    let done = std::mem::replace(&mut self.state, State::Padding { remaining: padding });
                    if let State::Content { content, .. } = done {
                        self.on_content(content)?;
                    }
                    if padding == 0 {
                        self.state = State::Header;
                    }
                }
                Ok(take)
            }
            State::Padding { remaining } => {
                let take = (*remaining).min(chunk.len() as u64) as usize;
                *remaining -= take as u64;
                if *remaining == 0 {
                    self.state = State::Header;
                }
                Ok(take)
            }
        }
    }

    /// Handles one complete 512-byte block read in a header position.
    fn on_block(&mut self, block: &[u8]) -> Result<(), IntegrityError> {
        let zero = block.iter().all(|b| *b == 0);
        match self.state {
            State::Ended if zero => return Ok(()),
            State::Ended => return Err(self.error("data follows the end-of-archive marker")),
            State::OneZeroBlock if zero => {
                self.state = State::Ended;
                return Ok(());
            }
            State::OneZeroBlock => return Err(self.error("a lone zero block inside the archive")),
            _ if zero => {
                if self.pending.path.is_some() || self.pending.link.is_some() || self.pending.size.is_some() {
                    return Err(self.error("the archive ends after a long-name or PAX header with no entry"));
                }
                self.state = State::OneZeroBlock;
                return Ok(());
            }
            _ => {}
        }
        self.on_header(block)
    }

    fn on_header(&mut self, header: &[u8]) -> Result<(), IntegrityError> {
        verify_checksum(header).map_err(|e| self.error(&e))?;
        let typeflag = header[156];
        let header_size = numeric(&header[124..136]).map_err(|e| self.error(&format!("size field: {e}")))?;
        let is_metadata = matches!(typeflag, b'L' | b'K' | b'x' | b'g');
        let size = if is_metadata { header_size } else { self.pending.size.unwrap_or(header_size) };
        if is_metadata && size > METADATA_LIMIT {
            return Err(self.error(&format!("a long-name or PAX header of {size} bytes")));
        }
        let content = if is_metadata {
            Content::Meta { kind: typeflag, data: Vec::new() }
        } else {
            let pending = std::mem::take(&mut self.pending);
            let raw_path = match pending.path {
                Some(path) => path,
                None => ustar_path(header),
            };
            let path = normalize(&raw_path);
            let link = pending.link.unwrap_or_else(|| field_str(&header[157..257]));
            match typeflag {
                b'0' | 0 | b'7' => {
                    // Old archives mark directories only with a trailing slash on a regular entry.
                    if typeflag == 0 && raw_path.ends_with('/') && size == 0 {
                        self.record(path, Entry::Dir);
                        Content::Skip
                    } else {
                        let keep = self.wants(&path, size).then(Vec::new);
                        Content::File { path, size, hasher: Sha256::new(), keep }
                    }
                }
                b'1' => {
                    self.record(path, Entry::Hardlink { target: normalize(&link) });
                    Content::Skip
                }
                b'2' => {
                    self.record(path, Entry::Symlink { target: link });
                    Content::Skip
                }
                b'5' => {
                    self.record(path, Entry::Dir);
                    Content::Skip
                }
                b'S' => {
                    // Sparse entries carry a map in extra header blocks this reader does not
                    // interpret; Docker's Go tar writer never produces them.
                    return Err(self.error(&format!("`{path}` is a GNU sparse file, which is not supported")));
                }
                _ => {
                    self.record(path, Entry::Other);
                    Content::Skip
                }
            }
        };
        let padding = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
        if size == 0 {
            self.on_content(content)?;
            self.state = State::Header;
        } else {
            self.state = State::Content { remaining: size, padding, content };
        }
        Ok(())
    }

    /// Whether the content of the file at `path` is to be kept.
    fn wants(&self, path: &str, size: u64) -> bool {
        let base = path.rsplit('/').next().unwrap_or(path);
        if !self.capture.iter().any(|name| name == base) {
            return false;
        }
        if size > CAPTURE_LIMIT {
            tracing::warn!(path, size, limit = CAPTURE_LIMIT, "file too large to capture; only digested");
            return false;
        }
        true
    }

    fn record(&mut self, path: String, entry: Entry) {
        // The archive's root (`./`) is where it is extracted, not an entry of it.
        if !path.is_empty() {
            self.manifest.entries.insert(path, entry);
        }
    }

    /// Handles an entry whose content has been read completely.
    fn on_content(&mut self, content: Content) -> Result<(), IntegrityError> {
        match content {
            Content::File { path, size, hasher, keep } => {
                if let Some(data) = keep {
                    if !path.is_empty() {
                        self.manifest.captured.insert(path.clone(), data);
                    }
                }
                self.record(path, Entry::File { size, sha256: hasher.finalize().into() });
            }
            Content::Meta { kind: b'L', data } => self.pending.path = Some(field_str(&data)),
            Content::Meta { kind: b'K', data } => self.pending.link = Some(field_str(&data)),
            Content::Meta { kind: b'x', data } => {
                for (key, value) in parse_pax(&data).map_err(|e| self.error(&e))? {
                    match key.as_str() {
                        "path" => self.pending.path = Some(value),
                        "linkpath" => self.pending.link = Some(value),
                        "size" => {
                            let size = value
                                .parse()
                                .map_err(|_| self.error(&format!("PAX size `{value}` is not a number")))?;
                            self.pending.size = Some(size);
                        }
                        // Times, owners and attributes do not change what is compared.
                        _ => {}
                    }
                }
            }
            // Global PAX headers only set defaults such as times: checked for form, then ignored.
            Content::Meta { kind: b'g', data } => {
                parse_pax(&data).map_err(|e| self.error(&e))?;
            }
            Content::Meta { .. } | Content::Skip => {}
        }
        Ok(())
    }
}

/// Checks a header's checksum: the sum of its bytes with the checksum field read as spaces.
/// Both the unsigned sum (POSIX) and the signed one (some historic writers) are accepted.
fn verify_checksum(header: &[u8]) -> Result<(), String> {
    let stored = numeric(&header[148..156]).map_err(|e| format!("header checksum field: {e}"))?;
    let (mut unsigned, mut signed) = (0u64, 0i64);
    for (i, byte) in header.iter().enumerate() {
        let byte = if (148..156).contains(&i) { b' ' } else { *byte };
        unsigned += u64::from(byte);
        signed += i64::from(byte as i8);
    }
    if stored == unsigned || i64::try_from(stored).is_ok_and(|s| s == signed) {
        Ok(())
    } else {
        Err(format!("header checksum mismatch: stored {stored}, computed {unsigned}"))
    }
}

/// Reads a numeric header field: octal text (NUL/space padded), or GNU base-256 when the high
/// bit of the first byte is set (sizes of 8 GiB and more).
fn numeric(field: &[u8]) -> Result<u64, String> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        if field[0] & 0x40 != 0 {
            return Err("negative base-256 number".to_string());
        }
        let mut value: u64 = u64::from(field[0] & 0x3f);
        for byte in &field[1..] {
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(*byte)))
                .ok_or_else(|| "base-256 number too large".to_string())?;
        }
        return Ok(value);
    }
    let text: Vec<u8> = field.iter().copied().take_while(|b| *b != 0).collect();
    let text = std::str::from_utf8(&text).map_err(|_| format!("not octal: {field:?}"))?.trim_matches(' ');
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| format!("not octal: {text:?}"))
}

/// A NUL-terminated (or full-width) text field.
fn field_str(field: &[u8]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// The entry's path from the header alone: `prefix/name` for POSIX ustar, `name` otherwise.
/// GNU headers (magic `ustar  `) use the prefix area for other fields, so it is ignored there.
fn ustar_path(header: &[u8]) -> String {
    let name = field_str(&header[0..100]);
    if &header[257..263] == b"ustar\0" {
        let prefix = field_str(&header[345..500]);
        if !prefix.is_empty() {
            return format!("{prefix}/{name}");
        }
    }
    name
}

/// Parses PAX records, `"<len> <key>=<value>\n"` each, where `len` counts the whole record.
fn parse_pax(mut data: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut records = Vec::new();
    while !data.is_empty() {
        let space = data.iter().position(|b| *b == b' ').ok_or("PAX record without a length")?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("PAX record length is not a number")?;
        if len <= space + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(format!("PAX record length {len} does not fit the record"));
        }
        let record = &data[space + 1..len - 1];
        let eq = record.iter().position(|b| *b == b'=').ok_or("PAX record without `=`")?;
        records.push((
            String::from_utf8_lossy(&record[..eq]).into_owned(),
            String::from_utf8_lossy(&record[eq + 1..]).into_owned(),
        ));
        data = &data[len..];
    }
    Ok(records)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds tar streams by hand, one header at a time, so tests control every byte.
    #[derive(Default)]
    pub(crate) struct TarWriter {
        pub(crate) out: Vec<u8>,
    }

    impl TarWriter {
        /// Appends one POSIX ustar header (with a correct checksum) and its padded content.
        pub(crate) fn entry(&mut self, typeflag: u8, name: &str, prefix: &str, link: &str, data: &[u8]) -> &mut Self {
            let mut h = [0u8; BLOCK];
            h[..name.len()].copy_from_slice(name.as_bytes());
            h[100..107].copy_from_slice(b"0000644");
            h[108..115].copy_from_slice(b"0000000");
            h[116..123].copy_from_slice(b"0000000");
            h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
            h[136..147].copy_from_slice(b"00000000000");
            h[156] = typeflag;
            h[157..157 + link.len()].copy_from_slice(link.as_bytes());
            h[257..263].copy_from_slice(b"ustar\0");
            h[263..265].copy_from_slice(b"00");
            h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
            h[148..156].copy_from_slice(b"        ");
            let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
            h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
            self.out.extend_from_slice(&h);
            self.out.extend_from_slice(data);
            self.out.resize(self.out.len().div_ceil(BLOCK) * BLOCK, 0);
            self
        }

        pub(crate) fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
            self.entry(b'0', name, "", "", data)
        }

        pub(crate) fn dir(&mut self, name: &str) -> &mut Self {
            self.entry(b'5', name, "", "", b"")
        }

        /// A PAX extended header (`x`) with the given records.
        pub(crate) fn pax(&mut self, records: &[(&str, &str)]) -> &mut Self {
            let mut data = Vec::new();
            for (key, value) in records {
                let body = format!(" {key}={value}\n");
                // The length counts its own digits: grow until it is self-consistent.
                let mut len = body.len() + 1;
                while format!("{len}{body}").len() != len {
                    len += 1;
                }
                data.extend_from_slice(format!("{len}{body}").as_bytes());
            }
            self.entry(b'x', "PaxHeaders/x", "", "", &data)
        }

        /// The end-of-archive marker.
        pub(crate) fn end(&mut self) -> Vec<u8> {
            self.out.extend_from_slice(&[0u8; 2 * BLOCK]);
            std::mem::take(&mut self.out)
        }
    }

    fn sha(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    fn read(stream: &[u8], chunk: usize, capture: &[&str]) -> Result<TarManifest, IntegrityError> {
        let mut builder = TarManifestBuilder::new();
        for name in capture {
            builder = builder.capture(name);
        }
        for part in stream.chunks(chunk.max(1)) {
            builder.update(part)?;
        }
        builder.finish()
    }

    /// Content that is not a multiple of any chunk size used, nor of the block size.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn sample() -> (Vec<u8>, Vec<u8>) {
        let blob = pattern(70_001);
        let stream = TarWriter::default()
            .dir("cp1/")
            .file("cp1/pages-1.img", &blob)
            .file("cp1/stats-dump", b"\x01\x02stats")
            .file("cp1/empty", b"")
            .entry(b'2', "cp1/link", "", "pages-1.img", b"")
            .entry(b'1', "cp1/hard", "", "cp1/pages-1.img", b"")
            .entry(0, "./cp1/old-style", "", "", b"abc")
            .end();
        (stream, blob)
    }

    #[test]
    fn digests_match_sha2_whatever_the_chunking() {
        let (stream, blob) = sample();
        let whole = read(&stream, stream.len(), &["stats-dump"]).unwrap();
        for chunk in [1, 7, 511, 512, 513, 4096] {
            assert_eq!(read(&stream, chunk, &["stats-dump"]).unwrap(), whole, "chunk size {chunk}");
        }
        let e = &whole.entries;
        assert_eq!(e["cp1"], Entry::Dir);
        assert_eq!(e["cp1/pages-1.img"], Entry::File { size: blob.len() as u64, sha256: sha(&blob) });
        assert_eq!(e["cp1/empty"], Entry::File { size: 0, sha256: sha(b"") });
        assert_eq!(e["cp1/old-style"], Entry::File { size: 3, sha256: sha(b"abc") });
        assert_eq!(e["cp1/link"], Entry::Symlink { target: "pages-1.img".into() });
        assert_eq!(e["cp1/hard"], Entry::Hardlink { target: "cp1/pages-1.img".into() });
        assert_eq!(e.len(), 7);
        assert_eq!(whole.captured.len(), 1);
        assert_eq!(whole.captured["cp1/stats-dump"], b"\x01\x02stats");
        assert_eq!(whole.total_file_bytes(), blob.len() as u64 + 7 + 3);
    }

    #[test]
    fn truncation_anywhere_is_detected() {
        let (stream, _) = sample();
        // Every cut that is not the full stream must fail, wherever it falls: in a header, in
        // content, in padding, or between the two end blocks. Step through a spread of them.
        let cuts = (0..stream.len()).step_by(97).chain([stream.len() - 512, stream.len() - 1024, 512, 1024]);
        for cut in cuts {
            let err = read(&stream[..cut], 7, &[]).unwrap_err();
            assert!(matches!(err, IntegrityError::Tar(_)), "cut at {cut}: {err}");
        }
        let err = read(&stream[..1024 + 1000], 4096, &[]).unwrap_err();
        assert!(err.to_string().contains("ended inside `cp1/pages-1.img`"), "{err}");
    }

    #[test]
    fn bad_checksum_is_detected() {
        let (mut stream, _) = sample();
        // Flip one byte of the second header's name.
        stream[512 + 5] ^= 0x20;
        let err = read(&stream, 7, &[]).unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        assert!(err.to_string().contains("at byte 512"), "{err}");
    }

    #[test]
    fn data_after_the_end_marker_is_rejected_but_zero_padding_is_fine() {
        let (stream, _) = sample();
        let mut padded = stream.clone();
        padded.extend_from_slice(&[0u8; 8192]);
        assert!(read(&padded, 1000, &[]).is_ok());
        let mut garbage = stream;
        garbage.extend_from_slice(&[0u8; 512]);
        garbage.push(1);
        garbage.extend_from_slice(&[0u8; 511]);
        assert!(read(&garbage, 1000, &[]).unwrap_err().to_string().contains("follows the end-of-archive"));
    }

    #[test]
    fn long_names_via_pax_gnu_and_prefix() {
        let long = format!("cp1/{}/pages-2.img", "d".repeat(180));
        let prefixed_dir = format!("cp1/{}", "p".repeat(120));
        let gnu = format!("cp1/{}", "g".repeat(150));
        let target = format!("cp1/{}", "t".repeat(130));
        let stream = TarWriter::default()
            .pax(&[("mtime", "1.5"), ("path", &long)])
            .file("ignored-short-name", b"pax content")
            .entry(b'g', "GlobalHead", "", "", b"20 comment=whatever\n")
            .entry(b'0', "inner.img", &prefixed_dir, "", b"prefixed")
            .entry(b'L', "././@LongLink", "", "", format!("{gnu}\0").as_bytes())
            .file("truncated-gnu-name", b"gnu content")
            .pax(&[("linkpath", &target)])
            .entry(b'2', "cp1/sym", "", "short", b"")
            .end();
        for chunk in [1, 7, stream.len()] {
            let m = read(&stream, chunk, &[]).unwrap();
            assert_eq!(m.entries[&long], Entry::File { size: 11, sha256: sha(b"pax content") });
            assert_eq!(
                m.entries[&format!("{prefixed_dir}/inner.img")],
                Entry::File { size: 8, sha256: sha(b"prefixed") }
            );
            assert_eq!(m.entries[&gnu], Entry::File { size: 11, sha256: sha(b"gnu content") });
            assert_eq!(m.entries["cp1/sym"], Entry::Symlink { target: target.clone() });
            assert_eq!(m.entries.len(), 4, "{:?}", m.entries.keys());
        }
    }

    #[test]
    fn pax_size_overrides_the_header() {
        let stream = TarWriter::default().pax(&[("size", "5")]).entry(b'0', "f", "", "", b"hello").end();
        // Zero the size field of the file header (keeping its checksum right) to show that the
        // PAX record is what counts.
        let mut stream = stream;
        let h = 1024;
        stream[h + 124..h + 135].copy_from_slice(b"00000000000");
        stream[h + 148..h + 156].copy_from_slice(b"        ");
        let sum: u32 = stream[h..h + 512].iter().map(|b| u32::from(*b)).sum();
        stream[h + 148..h + 155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        let m = read(&stream, 7, &[]).unwrap();
        assert_eq!(m.entries["f"], Entry::File { size: 5, sha256: sha(b"hello") });
    }

    #[test]
    fn large_files_are_digested_not_captured() {
        let big = pattern(CAPTURE_LIMIT as usize + 1);
        let stream = TarWriter::default().file("a/stats-dump", &big).file("b/stats-dump", b"small").end();
        let m = read(&stream, 65536, &["stats-dump"]).unwrap();
        assert_eq!(m.captured.keys().collect::<Vec<_>>(), ["b/stats-dump"]);
        assert_eq!(m.entries["a/stats-dump"], Entry::File { size: big.len() as u64, sha256: sha(&big) });
    }

    #[test]
    fn base256_and_octal_numbers() {
        assert_eq!(numeric(b"00000000017\0").unwrap(), 15);
        assert_eq!(numeric(b"     17 \0\0\0\0").unwrap(), 15);
        let mut field = [0u8; 12];
        field[0] = 0x80;
        field[7] = 0x02;
        field[11] = 0x01;
        assert_eq!(numeric(&field).unwrap(), (2u64 << 32) + 1);
        assert!(numeric(b"0000000009\0\0").is_err());
    }

    #[test]
    fn differences_name_each_path() {
        let (stream, _) = sample();
        let sent = read(&stream, stream.len(), &[]).unwrap();
        assert!(sent.differences(&sent).is_empty());
        let mut got = sent.clone();
        got.entries.remove("cp1/empty");
        got.entries.insert("cp1/extra".into(), Entry::Dir);
        got.entries.insert("cp1/old-style".into(), Entry::File { size: 4, sha256: sha(b"abcd") });
        got.entries.insert("cp1/stats-dump".into(), Entry::File { size: 7, sha256: sha(b"\x01\x02statz") });
        got.entries.insert("cp1/link".into(), Entry::Dir);
        let lines = sent.differences(&got);
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(lines.iter().any(|l| l == "`cp1/empty` is missing (a file of 0 bytes)"), "{lines:#?}");
        assert!(lines.iter().any(|l| l == "`cp1/extra` is unexpected (a directory)"), "{lines:#?}");
        assert!(lines.iter().any(|l| l == "`cp1/old-style` has 4 bytes instead of 3"), "{lines:#?}");
        assert!(lines.iter().any(|l| l.starts_with("`cp1/stats-dump` has different content (sha256 ")), "{lines:#?}");
        assert!(lines.iter().any(|l| l.starts_with("`cp1/link` is a directory instead of a symlink")), "{lines:#?}");
    }

    #[test]
    fn differences_are_capped() {
        let sent = TarManifest::default();
        let mut got = TarManifest::default();
        for i in 0..25 {
            got.entries.insert(format!("f{i:02}"), Entry::Other);
        }
        let lines = sent.differences(&got);
        assert_eq!(lines.len(), 21);
        assert_eq!(lines[20], "and 5 more");
    }

    #[test]
    fn rebased_renames_the_top_directory() {
        let (stream, _) = sample();
        let sent = read(&stream, stream.len(), &["stats-dump"]).unwrap();
        assert_eq!(sent.top_level(), Some("cp1"));
        let moved = sent.rebased("cp1/", "./restore/cp-x");
        assert_eq!(moved.top_level(), Some("restore"));
        assert_eq!(moved.entries["restore/cp-x"], Entry::Dir);
        assert_eq!(moved.entries["restore/cp-x/hard"], Entry::Hardlink { target: "restore/cp-x/pages-1.img".into() });
        assert_eq!(moved.entries["restore/cp-x/link"], Entry::Symlink { target: "pages-1.img".into() });
        assert!(moved.captured.contains_key("restore/cp-x/stats-dump"));
        assert_eq!(moved.rebased("restore/cp-x", "cp1"), sent);
        // Stripping the prefix drops its own directory (it becomes the root).
        let stripped = sent.rebased("cp1", "");
        assert!(stripped.entries.contains_key("pages-1.img"));
        assert_eq!(stripped.entries.len(), sent.entries.len() - 1);
        // A path that merely starts with the same letters is not under the prefix.
        let mut other = TarManifest::default();
        other.entries.insert("cp10/x".into(), Entry::Other);
        assert_eq!(other.rebased("cp1", "z"), other);
    }

    #[test]
    fn paths_are_normalized() {
        assert_eq!(normalize("./a//b/./c/"), "a/b/c");
        assert_eq!(normalize("/etc/"), "etc");
        assert_eq!(normalize("./"), "");
        let stream = TarWriter::default().dir("./").file("./x", b"1").end();
        let m = read(&stream, 3, &[]).unwrap();
        assert_eq!(m.entries.keys().collect::<Vec<_>>(), ["x"]);
    }

    #[test]
    fn a_header_full_of_garbage_is_rejected() {
        let mut stream = vec![0x41u8; 512];
        stream.extend_from_slice(&[0u8; 1024]);
        assert!(read(&stream, 100, &[]).is_err());
    }
}
