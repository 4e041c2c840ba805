//! An incremental tar reader that digests a stream as it passes and builds its [`TarManifest`].
//!
//! It understands what Docker's archive endpoints and CRIU's images produce: POSIX ustar (name
//! plus prefix), GNU long names and link names (`L`, `K`), PAX extended headers (`x` with `path`,
//! `linkpath` and `size`; global `g` headers are read and ignored), regular files, directories,
//! symbolic and hard links. A truncated or corrupted stream is an [`IntegrityError::Tar`].

use sha2::{Digest, Sha256};

use crate::error::IntegrityError;
use crate::transfer::tar::manifest::{normalize, Entry, TarManifest, BLOCK, CAPTURE_LIMIT, METADATA_LIMIT};

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
pub(crate) fn numeric(field: &[u8]) -> Result<u64, String> {
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
