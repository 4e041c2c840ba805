//! The container's writable layer: the files its processes created or changed. A checkpoint does
//! not contain them, yet CRIU needs every file a process holds open to exist on the destination
//! with the same content and size, so they are copied before the restore: a first pass while the
//! container still runs, then, after the freeze, only what changed since.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bollard::models::ChangeType;
use bollard::query_parameters::ContainerArchiveInfoOptionsBuilder;

use crate::error::{is_not_found, Error};
use crate::provider::files::parent;
use crate::provider::Provider;
use crate::transfer::archive::copy_archive;

/// How a path differs from the image, as `GET /containers/{id}/changes` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Modified,
    Added,
    Deleted,
}

/// What to copy for a set of changes: whole subtrees (never one inside another) and the leaf
/// paths whose later changes a delta pass looks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LayerPlan {
    pub copies: Vec<String>,
    pub leaves: Vec<String>,
}

/// A file's identity for change detection between the two passes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stat {
    size: i64,
    mtime: String,
    mode: u32,
}

/// Bytes and paths moved by one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PassReport {
    pub bytes: u64,
    pub paths: usize,
}

fn is_under(path: &str, dir: &str) -> bool {
    path == dir || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// Plans the copies for `changes`, leaving out anything under `excluded` (volume mount points,
/// whose data moves separately). An added directory is copied whole; a modified path with
/// changed children is a directory whose children are copied instead (copying it whole would
/// drag the image's own files along); deleted paths cannot be deleted through the API and are
/// left as the image has them.
pub(crate) fn plan(changes: &[(String, Change)], excluded: &[String]) -> LayerPlan {
    let kinds: BTreeMap<&str, Change> = changes
        .iter()
        .filter(|(p, _)| !excluded.iter().any(|e| is_under(p, e)))
        .map(|(p, k)| (p.as_str(), *k))
        .collect();
    let with_children: BTreeSet<&str> = kinds.keys().map(|p| parent(p)).collect();
    let added_ancestor = |path: &str| {
        let mut current = parent(path);
        while current != "/" {
            if kinds.get(current) == Some(&Change::Added) {
                return true;
            }
            current = parent(current);
        }
        false
    };
    let mut out = LayerPlan::default();
    for (&path, &kind) in &kinds {
        if kind == Change::Deleted {
            continue;
        }
        let leaf = !with_children.contains(path);
        if leaf {
            out.leaves.push(path.to_string());
        }
        let covered = added_ancestor(path);
        if !covered && (kind == Change::Added || leaf) {
            out.copies.push(path.to_string());
        }
    }
    out
}

impl Provider {
    /// The container's writable-layer changes.
    pub(crate) async fn layer_changes(&self, container: &str) -> Result<Vec<(String, Change)>, Error> {
        let changes = self
            .docker()
            .container_changes(container)
            .await
            .map_err(self.api_error(format!("list the changed files of container `{container}`")))?;
        Ok(changes
            .unwrap_or_default()
            .into_iter()
            .map(|c| {
                let kind = match c.kind {
                    ChangeType::_0 => Change::Modified,
                    ChangeType::_1 => Change::Added,
                    ChangeType::_2 => Change::Deleted,
                };
                (c.path, kind)
            })
            .collect())
    }

    async fn stat_path(&self, container: &str, path: &str) -> Result<Option<Stat>, Error> {
        let options = ContainerArchiveInfoOptionsBuilder::default().path(path).build();
        match self.docker().get_container_archive_info(container, Some(options)).await {
            Ok(stat) => Ok(Some(Stat {
                size: stat.size,
                mtime: stat.modification_time.unwrap_or_default(),
                mode: stat.file_mode,
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.api_error(format!("stat `{path}` in container `{container}`"))(e)),
        }
    }
}

/// Copies the writable layer of `src_container` into `dst_container` in two passes.
pub(crate) struct LayerSync {
    src: Provider,
    src_container: String,
    dst: Provider,
    dst_container: String,
    excluded: Vec<String>,
    first: LayerPlan,
    first_stats: HashMap<String, Stat>,
}

impl LayerSync {
    /// A sync of the layer, leaving out the `excluded` mount points.
    pub(crate) fn new(
        src: &Provider,
        src_container: &str,
        dst: &Provider,
        dst_container: &str,
        excluded: Vec<String>,
    ) -> Self {
        LayerSync {
            src: src.clone(),
            src_container: src_container.to_string(),
            dst: dst.clone(),
            dst_container: dst_container.to_string(),
            excluded,
            first: LayerPlan::default(),
            first_stats: HashMap::new(),
        }
    }

    /// The first pass, while the source still runs: every changed path, recording what each
    /// leaf looked like so the delta pass can find what changed since.
    pub(crate) async fn first_pass(&mut self, progress: &(dyn Fn(u64) + Send + Sync)) -> Result<PassReport, Error> {
        let changes = self.src.layer_changes(&self.src_container).await?;
        self.first = plan(&changes, &self.excluded);
        for leaf in &self.first.leaves {
            if let Some(stat) = self.src.stat_path(&self.src_container, leaf).await? {
                self.first_stats.insert(leaf.clone(), stat);
            }
        }
        let copies = self.first.copies.clone();
        self.copy_all(&copies, progress).await
    }

    /// What the destination holds of the layer after the first pass, for the direct path's
    /// runtime to compare the frozen layer with. A time that does not parse never matches, so
    /// that file is sent again.
    pub(crate) fn baseline(&self) -> Vec<vimigrate_protocol::BaselineEntry> {
        self.first_stats
            .iter()
            .map(|(path, stat)| vimigrate_protocol::BaselineEntry {
                path: path.clone(),
                size: u64::try_from(stat.size).unwrap_or(u64::MAX),
                mtime_ns: vimigrate_protocol::rfc3339::parse_rfc3339_ns(&stat.mtime).unwrap_or(i128::MIN),
                mode: stat.mode,
            })
            .collect()
    }

    /// The delta pass, once the source is frozen: new subtrees, and leaves whose size, time or
    /// mode changed since the first pass.
    pub(crate) async fn delta_pass(&mut self, progress: &(dyn Fn(u64) + Send + Sync)) -> Result<PassReport, Error> {
        let changes = self.src.layer_changes(&self.src_container).await?;
        let now = plan(&changes, &self.excluded);
        let copied_before: Vec<&String> = self.first.copies.iter().collect();
        let mut todo: Vec<String> = Vec::new();
        for path in &now.copies {
            let covered_before = copied_before.iter().any(|c| is_under(path, c));
            if !covered_before {
                todo.push(path.clone());
            }
        }
        for leaf in &now.leaves {
            if todo.iter().any(|t| is_under(leaf, t)) {
                continue;
            }
            let stat = self.src.stat_path(&self.src_container, leaf).await?;
            if stat.is_some() && stat.as_ref() != self.first_stats.get(leaf) {
                todo.push(leaf.clone());
            }
        }
        self.copy_all(&todo, progress).await
    }

    async fn copy_all(&self, paths: &[String], progress: &(dyn Fn(u64) + Send + Sync)) -> Result<PassReport, Error> {
        let mut report = PassReport::default();
        for path in paths {
            let done = report.bytes;
            let each = |bytes: u64| progress(done + bytes);
            let copied =
                copy_archive(&self.src, &self.src_container, path, &self.dst, &self.dst_container, parent(path), &each)
                    .await?;
            report.bytes += copied.bytes;
            report.paths += 1;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(list: &[(&str, Change)]) -> Vec<(String, Change)> {
        list.iter().map(|(p, k)| (p.to_string(), *k)).collect()
    }

    #[test]
    fn added_directories_are_copied_whole_and_modified_dirs_by_child() {
        let plan = plan(
            &changes(&[
                ("/data", Change::Added),
                ("/data/blob", Change::Added),
                ("/data/sub", Change::Added),
                ("/data/sub/x", Change::Added),
                ("/etc", Change::Modified),
                ("/etc/app.conf", Change::Modified),
                ("/tmp", Change::Modified),
                ("/tmp/held", Change::Added),
                ("/usr/bin/gone", Change::Deleted),
            ]),
            &[],
        );
        assert_eq!(plan.copies, vec!["/data", "/etc/app.conf", "/tmp/held"]);
        assert_eq!(plan.leaves, vec!["/data/blob", "/data/sub/x", "/etc/app.conf", "/tmp/held"]);
    }

    #[test]
    fn volume_mount_points_are_left_out() {
        let plan = plan(
            &changes(&[("/data", Change::Added), ("/data/x", Change::Added), ("/var/x", Change::Added)]),
            &["/data".into()],
        );
        assert_eq!(plan.copies, vec!["/var/x"]);
    }

    #[test]
    fn prefixes() {
        assert!(is_under("/data/x", "/data"));
        assert!(!is_under("/database", "/data"));
    }
}
