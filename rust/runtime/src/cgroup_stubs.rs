//! Restoring a container dumped on a host whose cgroup v1 hierarchies this host lacks.
//!
//! runc tells CRIU each of a v1 container's cgroup mounts (`/sys/fs/cgroup/<hierarchy>`) as an
//! external mount, keyed by its mount point, and on restore maps the keys of the hierarchies this
//! host mounts. A kernel built without a v1 controller (Debian's 6.12 has neither `memory` nor
//! `cpuset` for v1) cannot give the source's: CRIU then stops at "No mapping for ...
//! mountpoint". This maps every such key to an empty directory, so that the restored container
//! finds an empty hierarchy there, and has CRIU leave cgroup membership to runc (which already
//! put CRIU itself into the container's cgroups: the restored processes inherit them), as CRIU
//! could not join a controller the kernel does not offer for v1.
//!
//! A container restored so holds bind mounts of the stubs, which runc does not declare external:
//! its next dump declares them ([`dump_lines`]), keyed by their mount points as runc keys its own.
//!
//! Only the dumped mount points decide: they are found in CRIU's `mountpoints-*.img` as the
//! length-prefixed protobuf strings they are, so a host that has every hierarchy the image
//! names restores exactly as before.

use std::path::{Path, PathBuf};

/// The v1 hierarchies a container's `/sys/fs/cgroup` may hold, as directory names (runc
/// mounts one per hierarchy of the host that dumped it).
const V1_HIERARCHIES: &[&str] = &[
    "blkio",
    "cpu",
    "cpu,cpuacct",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_cls,net_prio",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
    "systemd",
];

/// The CRIU configuration lines a restore of the images in `images_dir` needs on this host
/// (none when it mounts every hierarchy they name); the stub directories go under `work`.
pub fn stub_lines(images_dir: &Path, work: &Path) -> std::io::Result<Vec<String>> {
    let mounted = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let dumped = dumped_mount_points(images_dir);
    let missing: Vec<&str> = V1_HIERARCHIES
        .iter()
        .copied()
        .filter(|h| {
            let point = format!("/sys/fs/cgroup/{h}");
            contains_string_field(&dumped, &point) && !is_mount_point(&mounted, &point)
        })
        .collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    let mut lines = Vec::new();
    for hierarchy in missing {
        let stub: PathBuf = work.join("cgroup-stubs").join(hierarchy);
        std::fs::create_dir_all(&stub)?;
        lines.push(format!("ext-mount-map /sys/fs/cgroup/{hierarchy}:{}", stub.display()));
    }
    lines.push("manage-cgroups=ignore".to_string());
    Ok(lines)
}

/// The CRIU configuration lines a dump of the container whose first process is `init_pid`
/// needs: a container restored here with stubs holds bind mounts of them at the mount points
/// of the hierarchies this host lacks, which runc does not declare external; each is declared
/// under its mount point as key, the key the next restore maps (runc's, or a stub again).
pub fn dump_lines(init_pid: u64) -> Vec<String> {
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let container = std::fs::read_to_string(format!("/proc/{init_pid}/mountinfo")).unwrap_or_default();
    V1_HIERARCHIES
        .iter()
        .map(|h| format!("/sys/fs/cgroup/{h}"))
        .filter(|point| is_mount_point(&container, point) && !is_mount_point(&host, point))
        .map(|point| format!("ext-mount-map {point}:{point}"))
        .collect()
}

/// The bytes of every `mountpoints-*.img` in `images_dir`, concatenated.
fn dumped_mount_points(images_dir: &Path) -> Vec<u8> {
    let Ok(entries) = std::fs::read_dir(images_dir) else { return Vec::new() };
    let mut bytes = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("mountpoints-") && name.ends_with(".img") {
            if let Ok(content) = std::fs::read(entry.path()) {
                bytes.extend_from_slice(&content);
            }
        }
    }
    bytes
}

/// Whether `haystack` holds `value` as a protobuf string field's payload: its length (one
/// varint byte, the paths here are short) right before it, so that `/sys/fs/cgroup/cpu` is not
/// found inside `/sys/fs/cgroup/cpuacct`.
fn contains_string_field(haystack: &[u8], value: &str) -> bool {
    let Ok(len) = u8::try_from(value.len()) else { return false };
    if len >= 0x80 {
        return false;
    }
    let mut needle = vec![len];
    needle.extend_from_slice(value.as_bytes());
    haystack.windows(needle.len()).any(|w| w == needle.as_slice())
}

/// Whether `point` is a mount point in a `/proc/self/mountinfo` text (field 5).
fn is_mount_point(mountinfo: &str, point: &str) -> bool {
    mountinfo.lines().any(|line| line.split_whitespace().nth(4) == Some(point))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(value: &str) -> Vec<u8> {
        let mut bytes = vec![0x3a, value.len() as u8];
        bytes.extend_from_slice(value.as_bytes());
        bytes
    }

    #[test]
    fn a_string_field_is_found_by_its_length_prefix() {
        let mut image = field("/sys/fs/cgroup/cpuacct");
        image.extend(field("/proc"));
        assert!(contains_string_field(&image, "/sys/fs/cgroup/cpuacct"));
        assert!(!contains_string_field(&image, "/sys/fs/cgroup/cpu"), "a prefix is not the field");
        assert!(contains_string_field(&image, "/proc"));
    }

    #[test]
    fn mount_points_are_read_from_mountinfo() {
        let info = "30 25 0:26 / /sys/fs/cgroup/cpu rw,relatime shared:9 - cgroup cgroup rw,cpu\n";
        assert!(is_mount_point(info, "/sys/fs/cgroup/cpu"));
        assert!(!is_mount_point(info, "/sys/fs/cgroup/memory"));
    }

    #[test]
    fn stubs_only_for_dumped_hierarchies_this_host_lacks() {
        let images = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        // A hierarchy no host mounts: its stub and the cgroup mode come back.
        let absent = "net_cls,net_prio";
        let mounted = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let point = format!("/sys/fs/cgroup/{absent}");
        if is_mount_point(&mounted, &point) {
            return;
        }
        std::fs::write(images.path().join("mountpoints-13.img"), field(&point)).unwrap();
        let lines = stub_lines(images.path(), work.path()).unwrap();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].starts_with(&format!("ext-mount-map {point}:")), "{lines:?}");
        assert!(work.path().join("cgroup-stubs").join(absent).is_dir());
        assert_eq!(lines[1], "manage-cgroups=ignore");
        std::fs::write(images.path().join("mountpoints-13.img"), field("/proc")).unwrap();
        assert!(stub_lines(images.path(), work.path()).unwrap().is_empty(), "nothing dumped, nothing to stub");
    }
}
