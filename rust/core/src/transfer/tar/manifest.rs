//! What a tar stream held, entry by entry (a digest per file, never its content but for the few
//! captured small files), and the comparison of two such manifests: how a transfer is checked
//! end to end without ever holding a whole file (checkpoint images reach gigabytes) in memory.
//! The reader that builds a manifest from a stream is `reader.rs`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Tar's block size: headers are one block and content is padded to a whole number of them.
pub(crate) const BLOCK: usize = 512;

/// Largest file kept by [`crate::TarManifestBuilder::capture`]: CRIU's `stats-dump` is a few hundred bytes,
/// and anything bigger than this is not a file meant to be decoded in memory.
pub const CAPTURE_LIMIT: u64 = 1 << 20;

/// Largest GNU long name or PAX header accepted: real ones are a few hundred bytes, and a bound
/// keeps a corrupted size field from making the reader buffer gigabytes.
pub(crate) const METADATA_LIMIT: u64 = 1 << 20;

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
    /// Content of the files asked for with [`crate::TarManifestBuilder::capture`], by normalized path.
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
pub(crate) fn normalize(path: &str) -> String {
    path.split('/').filter(|part| !part.is_empty() && *part != ".").collect::<Vec<_>>().join("/")
}
