//! What of a frozen container's files must still reach the destination: the writable layer's
//! entries that differ from what was copied while the service ran (the baseline), deletions
//! included, and named volumes whole.
//!
//! The layer is read from the overlay's upper directory on the host, which holds exactly what
//! the container changed: regular entries, and whiteouts (character devices 0:0) for files of
//! the image it deleted. The upper directory outlives the container's stop, so the walk may
//! run while CRIU dumps and after.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use vimigrate_protocol::BaselineEntry;

use crate::error::RuntimeError;
use crate::transfer::wire::Kind;

/// One entry to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaItem {
    /// Path inside the container (absolute) or inside the volume (relative).
    pub path: String,
    /// What it is on the source.
    pub kind: Kind,
    /// Where it is on the source host (unused for deletions).
    pub host_path: PathBuf,
    /// `st_mode`, owner and modification time.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Seconds.
    pub mtime_sec: i64,
    /// Nanoseconds.
    pub mtime_nsec: u32,
    /// Size (files and links).
    pub size: u64,
}

fn is_under(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    path == dir || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

fn item(path: String, kind: Kind, host_path: PathBuf, meta: &fs::Metadata) -> DeltaItem {
    DeltaItem {
        path,
        kind,
        host_path,
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        mtime_sec: meta.mtime(),
        mtime_nsec: meta.mtime_nsec() as u32,
        size: meta.len(),
    }
}

fn walk_error(dir: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
    move |e| RuntimeError::Io { step: "send", context: format!("read directory {}", dir.display()), source: e }
}

/// Every entry under `root` in pre-order (a directory right before its children), sorted by
/// name, never following links. `prefix` is prepended to each path ("/" for a root filesystem,
/// "" for a volume). Paths under `excluded` are left out.
fn walk(
    root: &Path,
    prefix: &str,
    excluded: &[String],
    out: &mut Vec<(String, PathBuf, fs::Metadata)>,
) -> Result<(), RuntimeError> {
    walk_dir(root, "", prefix, excluded, out)
}

fn walk_dir(
    dir: &Path,
    rel: &str,
    prefix: &str,
    excluded: &[String],
    out: &mut Vec<(String, PathBuf, fs::Metadata)>,
) -> Result<(), RuntimeError> {
    let mut names: Vec<_> =
        fs::read_dir(dir).map_err(walk_error(dir))?.collect::<Result<Vec<_>, _>>().map_err(walk_error(dir))?;
    names.sort_by_key(|e| e.file_name());
    for entry in names {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue; // Non-UTF-8 names cannot be named in a baseline; left as they are.
        };
        let child_rel = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
        let path = format!("{prefix}{child_rel}");
        if excluded.iter().any(|e| is_under(&path, e)) {
            continue;
        }
        let host = entry.path();
        let meta = fs::symlink_metadata(&host).map_err(walk_error(&host))?;
        let is_dir = meta.is_dir();
        out.push((path, host.clone(), meta));
        if is_dir {
            walk_dir(&host, &child_rel, prefix, excluded, out)?;
        }
    }
    Ok(())
}

fn classify(meta: &fs::Metadata) -> Option<Kind> {
    let ft = meta.file_type();
    if ft.is_dir() {
        Some(Kind::Dir)
    } else if ft.is_file() {
        Some(Kind::File)
    } else if ft.is_symlink() {
        Some(Kind::Symlink)
    } else if ft.is_fifo() {
        Some(Kind::Fifo)
    } else if ft.is_char_device() && meta.rdev() == 0 {
        // An overlay whiteout: the container deleted this path of the image.
        Some(Kind::Delete)
    } else {
        None // Sockets (CRIU recreates bound ones) and device nodes are not files to copy.
    }
}

/// The writable layer's changes since `baseline`, read from the overlay upper directory
/// `upper`: entries that are new or whose size, modification time or permissions differ,
/// directories (their attributes), whiteouts, and baseline files that are gone.
pub fn layer_delta(
    upper: &Path,
    baseline: &[BaselineEntry],
    excluded: &[String],
) -> Result<Vec<DeltaItem>, RuntimeError> {
    let known: BTreeMap<&str, &BaselineEntry> = baseline.iter().map(|b| (b.path.as_str(), b)).collect();
    let mut entries = Vec::new();
    walk(upper, "/", excluded, &mut entries)?;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (path, host, meta) in entries {
        let Some(kind) = classify(&meta) else { continue };
        seen.insert(path.clone());
        if matches!(kind, Kind::File | Kind::Symlink) {
            if let Some(before) = known.get(path.as_str()) {
                let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
                let same = before.size == meta.len()
                    && before.mtime_ns == mtime_ns
                    && before.mode & 0o777 == meta.mode() & 0o777;
                if same {
                    continue;
                }
            }
        }
        out.push(item(path, kind, host, &meta));
    }
    for gone in baseline.iter().filter(|b| !seen.contains(&b.path) && !excluded.iter().any(|e| is_under(&b.path, e))) {
        out.push(DeltaItem {
            path: gone.path.clone(),
            kind: Kind::Delete,
            host_path: PathBuf::new(),
            mode: 0,
            uid: 0,
            gid: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
            size: 0,
        });
    }
    Ok(out)
}

/// Everything in a volume's directory, for a whole copy.
pub fn whole_tree(root: &Path) -> Result<Vec<DeltaItem>, RuntimeError> {
    let mut entries = Vec::new();
    walk(root, "", &[], &mut entries)?;
    Ok(entries
        .into_iter()
        .filter_map(|(path, host, meta)| {
            let kind = classify(&meta).filter(|k| *k != Kind::Delete)?;
            Some(item(path, kind, host, &meta))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn baseline_of(path: &str, host: &Path) -> BaselineEntry {
        let meta = fs::symlink_metadata(host).unwrap();
        BaselineEntry {
            path: path.into(),
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            mode: meta.mode(),
        }
    }

    #[test]
    fn only_what_changed_since_the_baseline_is_sent() {
        let upper = tempfile::tempdir().unwrap();
        let u = upper.path();
        fs::create_dir_all(u.join("tmp")).unwrap();
        fs::create_dir_all(u.join("data/vol")).unwrap();
        fs::write(u.join("tmp/same"), b"1").unwrap();
        fs::write(u.join("tmp/changed"), b"1").unwrap();
        fs::write(u.join("data/vol/excluded"), b"1").unwrap();
        symlink("/etc/passwd", u.join("tmp/link")).unwrap();
        let baseline = vec![
            baseline_of("/tmp/same", &u.join("tmp/same")),
            baseline_of("/tmp/changed", &u.join("tmp/changed")),
            baseline_of("/tmp/link", &u.join("tmp/link")),
            BaselineEntry { path: "/tmp/removed".into(), size: 1, mtime_ns: 0, mode: 0o644 },
        ];
        fs::write(u.join("tmp/changed"), b"22").unwrap();
        fs::write(u.join("tmp/new"), b"3").unwrap();
        let delta = layer_delta(u, &baseline, &["/data/vol".to_string()]).unwrap();
        let got: Vec<(&str, Kind)> = delta.iter().map(|d| (d.path.as_str(), d.kind)).collect();
        assert_eq!(
            got,
            vec![
                ("/data", Kind::Dir),
                ("/tmp", Kind::Dir),
                ("/tmp/changed", Kind::File),
                ("/tmp/new", Kind::File),
                ("/tmp/removed", Kind::Delete),
            ]
        );
        assert_eq!(delta[2].size, 2);
    }

    #[test]
    fn a_volume_is_copied_whole_in_pre_order() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("a/b")).unwrap();
        fs::write(root.path().join("a/b/f"), b"x").unwrap();
        fs::write(root.path().join("z"), b"y").unwrap();
        let items = whole_tree(root.path()).unwrap();
        let got: Vec<&str> = items.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(got, vec!["a", "a/b", "a/b/f", "z"]);
    }
}
