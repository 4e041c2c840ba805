//! CRIU's statistics images, `stats-dump` and `stats-restore`, decoded by hand.
//!
//! Both are CRIU "service" images: two little-endian u32 magic words (`IMG_SERVICE_MAGIC`, then
//! `STATS_MAGIC`), then one entry, a little-endian u32 length followed by that many bytes of a
//! protobuf `stats_entry` message (criu/include/magic.h, images/stats.proto). The message is tiny
//! and only holds varints and two submessages, so a minimal wire-format reader is enough and keeps
//! a protobuf toolchain out of the build.
//!
//! Where Docker leaves them (Docker 20.10, containerd 1.6, runc 1.1): CRIU writes them into its
//! work directory, never into the checkpoint directory. For a dump that is containerd's temporary
//! `<task dir>/criu-work`, removed as soon as the dump ends, so Docker-driven checkpoints keep no
//! `stats-dump`. For a restore it is the task directory itself,
//! `<containerd root>/io.containerd.runtime.v2.task/moby/<container id>/stats-restore` (with a
//! dockerd-managed containerd the root is `<DockerRootDir>/containerd/daemon`), which lives as
//! long as the restored task does.

use serde::{Deserialize, Serialize};

use crate::protobuf::{for_each_field, submessage};

/// A CRIU image that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode CRIU image {file}: {detail}")]
pub struct CriuImageError {
    /// The image file name.
    pub file: String,
    /// What was wrong.
    pub detail: String,
}

/// File name CRIU gives the statistics of a dump.
pub const DUMP_STATS_FILE: &str = "stats-dump";
/// File name CRIU gives the statistics of a restore.
pub const RESTORE_STATS_FILE: &str = "stats-restore";

/// First magic word of CRIU's service images (stats, irmap cache).
const IMG_SERVICE_MAGIC: u32 = 0x5510_5940;
/// Second magic word of a statistics image.
const STATS_MAGIC: u32 = 0x5709_3306;

/// What CRIU measured while dumping (`dump_stats_entry`). Times are in microseconds, pages are
/// counts of memory pages. Optional fields that CRIU did not write read as 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DumpStats {
    /// Time to freeze the process tree (Podman's `freezing_time`).
    pub freezing_time_us: u64,
    /// Time the process tree stayed frozen during the dump (Podman's `frozen_time`).
    pub frozen_time_us: u64,
    /// Time to collect the memory pages (Podman's `memdump_time`).
    pub memdump_time_us: u64,
    /// Time to write the memory pages out (Podman's `memwrite_time`).
    pub memwrite_time_us: u64,
    /// Pages examined.
    pub pages_scanned: u64,
    /// Pages left out because a parent (pre-dump) image already holds them.
    pub pages_skipped_parent: u64,
    /// Pages written to the images (Podman's `pages_written`).
    pub pages_written: u64,
    /// Time to resolve inotify/fanotify watches to paths.
    pub irmap_resolve_us: u64,
    /// Pages left for lazy (post-copy) transfer.
    pub pages_lazy: u64,
    /// Page pipes used to move pages.
    pub page_pipes: u64,
    /// Buffers across those page pipes.
    pub page_pipe_bufs: u64,
    /// Shared-memory pages examined.
    pub shpages_scanned: u64,
    /// Shared-memory pages left out because a parent image holds them.
    pub shpages_skipped_parent: u64,
    /// Shared-memory pages written.
    pub shpages_written: u64,
}

/// What CRIU measured while restoring (`restore_stats_entry`). Times are in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestoreStats {
    /// Pages compared with a parent image.
    pub pages_compared: u64,
    /// Pages not copied because copy-on-write sharing made it unnecessary.
    pub pages_skipped_cow: u64,
    /// Time to fork the process tree.
    pub forking_time_us: u64,
    /// Time of the whole restore (Podman's `restore_time`).
    pub restore_time_us: u64,
    /// Pages restored (0 when CRIU did not record it).
    pub pages_restored: u64,
}

/// Decodes a `stats-dump` image.
pub fn parse_dump_stats(bytes: &[u8]) -> Result<DumpStats, CriuImageError> {
    let fail = |detail: String| CriuImageError { file: DUMP_STATS_FILE.to_string(), detail };
    let entry = stats_entry(bytes).map_err(fail)?;
    let dump = submessage(entry, 1, "dump").map_err(fail)?;
    let mut stats = DumpStats::default();
    let mut seen = 0u32;
    for_each_field(dump, |number, value| {
        let slot = match number {
            1 => &mut stats.freezing_time_us,
            2 => &mut stats.frozen_time_us,
            3 => &mut stats.memdump_time_us,
            4 => &mut stats.memwrite_time_us,
            5 => &mut stats.pages_scanned,
            6 => &mut stats.pages_skipped_parent,
            7 => &mut stats.pages_written,
            8 => &mut stats.irmap_resolve_us,
            9 => &mut stats.pages_lazy,
            10 => &mut stats.page_pipes,
            11 => &mut stats.page_pipe_bufs,
            12 => &mut stats.shpages_scanned,
            13 => &mut stats.shpages_skipped_parent,
            14 => &mut stats.shpages_written,
            // A field a newer CRIU added: its value is already skipped.
            _ => return Ok(()),
        };
        *slot = value.varint(number)?;
        seen |= 1 << number;
        Ok(())
    })
    .map_err(fail)?;
    const REQUIRED: [(u32, &str); 8] = [
        (1, "freezing_time"),
        (2, "frozen_time"),
        (3, "memdump_time"),
        (4, "memwrite_time"),
        (5, "pages_scanned"),
        (6, "pages_skipped_parent"),
        (7, "pages_written"),
        (9, "pages_lazy"),
    ];
    check_required(seen, &REQUIRED, "dump").map_err(fail)?;
    Ok(stats)
}

/// Decodes a `stats-restore` image.
pub fn parse_restore_stats(bytes: &[u8]) -> Result<RestoreStats, CriuImageError> {
    let fail = |detail: String| CriuImageError { file: RESTORE_STATS_FILE.to_string(), detail };
    let entry = stats_entry(bytes).map_err(fail)?;
    let restore = submessage(entry, 2, "restore").map_err(fail)?;
    let mut stats = RestoreStats::default();
    let mut seen = 0u32;
    for_each_field(restore, |number, value| {
        let slot = match number {
            1 => &mut stats.pages_compared,
            2 => &mut stats.pages_skipped_cow,
            3 => &mut stats.forking_time_us,
            4 => &mut stats.restore_time_us,
            5 => &mut stats.pages_restored,
            _ => return Ok(()),
        };
        *slot = value.varint(number)?;
        seen |= 1 << number;
        Ok(())
    })
    .map_err(fail)?;
    const REQUIRED: [(u32, &str); 4] =
        [(1, "pages_compared"), (2, "pages_skipped_cow"), (3, "forking_time"), (4, "restore_time")];
    check_required(seen, &REQUIRED, "restore").map_err(fail)?;
    Ok(stats)
}

/// Checks the image header and returns the payload of its single `stats_entry`.
fn stats_entry(bytes: &[u8]) -> Result<&[u8], String> {
    let word = |at: usize, what: &str| -> Result<u32, String> {
        bytes
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
            .ok_or_else(|| format!("truncated: {} bytes, no room for the {what}", bytes.len()))
    };
    let service = word(0, "image magic")?;
    if service != IMG_SERVICE_MAGIC {
        return Err(format!("not a CRIU service image: magic {service:#010x}, expected {IMG_SERVICE_MAGIC:#010x}"));
    }
    let kind = word(4, "image magic")?;
    if kind != STATS_MAGIC {
        return Err(format!("not a statistics image: magic {kind:#010x}, expected {STATS_MAGIC:#010x}"));
    }
    let len = word(8, "entry length")? as usize;
    let payload = &bytes[12..];
    if payload.len() < len {
        return Err(format!("truncated: the entry declares {len} bytes, {} follow", payload.len()));
    }
    // CRIU writes exactly one entry; anything after it means the file is not what we think.
    if payload.len() > len {
        return Err(format!("{} unexpected bytes after the entry", payload.len() - len));
    }
    Ok(payload)
}

fn check_required(seen: u32, required: &[(u32, &str)], what: &str) -> Result<(), String> {
    let missing: Vec<&str> = required.iter().filter(|(n, _)| seen & (1 << n) == 0).map(|(_, name)| *name).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("{what} statistics lack required field(s) {}", missing.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real `stats-dump` from a Docker checkpoint of the lab's counter container (CRIU 4.2.1).
    const DUMP: &[u8] = include_bytes!("../tests/fixtures/stats-dump");
    /// A real `stats-restore` from restoring that checkpoint with `docker start --checkpoint`.
    const RESTORE: &[u8] = include_bytes!("../tests/fixtures/stats-restore");

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn image(entry: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&IMG_SERVICE_MAGIC.to_le_bytes());
        out.extend_from_slice(&STATS_MAGIC.to_le_bytes());
        out.extend_from_slice(&(entry.len() as u32).to_le_bytes());
        out.extend_from_slice(entry);
        out
    }

    fn submsg(number: u32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(u64::from(number) << 3 | 2, &mut out);
        varint(body.len() as u64, &mut out);
        out.extend_from_slice(body);
        out
    }

    fn varint_field(number: u32, v: u64, out: &mut Vec<u8>) {
        varint(u64::from(number) << 3, out);
        varint(v, out);
    }

    fn is_criu_image_error(err: &CriuImageError, file: &str) -> bool {
        err.file == file
    }

    #[test]
    fn real_dump_stats_are_sane() {
        let s = parse_dump_stats(DUMP).unwrap();
        assert!(s.pages_written > 0, "{s:?}");
        assert!(s.pages_scanned >= s.pages_written, "{s:?}");
        assert!(s.freezing_time_us > 0 && s.frozen_time_us > 0, "{s:?}");
        assert!(s.frozen_time_us >= s.memdump_time_us, "{s:?}");
        assert!(s.frozen_time_us < 60_000_000, "a counter freezes for well under a minute: {s:?}");
        assert_eq!(s.pages_lazy, 0, "not a lazy dump");
        // The exact figures of that dump, as `crit decode` would show them.
        assert_eq!(
            (s.freezing_time_us, s.frozen_time_us, s.memdump_time_us, s.memwrite_time_us),
            (445, 76054, 857, 142)
        );
        assert_eq!((s.pages_scanned, s.pages_written, s.page_pipes, s.page_pipe_bufs), (48, 34, 8, 8));
    }

    #[test]
    fn real_restore_stats_are_sane() {
        let s = parse_restore_stats(RESTORE).unwrap();
        assert!(s.restore_time_us > s.forking_time_us, "{s:?}");
        assert!(s.pages_restored > 0, "{s:?}");
        assert_eq!((s.pages_compared, s.pages_skipped_cow, s.forking_time_us, s.restore_time_us), (9, 2, 365, 240_868));
        assert_eq!(s.pages_restored, 32);
    }

    #[test]
    fn dump_and_restore_images_are_not_confused() {
        let err = parse_restore_stats(DUMP).unwrap_err();
        assert!(is_criu_image_error(&err, "stats-restore"), "{err}");
        assert!(err.to_string().contains("no `restore` statistics"), "{err}");
        let err = parse_dump_stats(RESTORE).unwrap_err();
        assert!(err.to_string().contains("no `dump` statistics"), "{err}");
    }

    #[test]
    fn every_truncation_is_an_error() {
        for len in 0..DUMP.len() {
            let err = parse_dump_stats(&DUMP[..len]).unwrap_err();
            assert!(is_criu_image_error(&err, "stats-dump"), "at {len}: {err}");
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let err = parse_dump_stats(b"not a CRIU image at all").unwrap_err();
        assert!(err.to_string().contains("not a CRIU service image"), "{err}");
        let mut other_image = DUMP.to_vec();
        other_image[4..8].copy_from_slice(&0x5630_3138u32.to_le_bytes()); // FILES_MAGIC
        assert!(parse_dump_stats(&other_image).unwrap_err().to_string().contains("not a statistics image"));
        // A valid header over a payload of invalid wire data.
        let err = parse_dump_stats(&image(&[0x0f, 0xff, 0xff])).unwrap_err();
        assert!(is_criu_image_error(&err, "stats-dump"), "{err}");
        let err = parse_dump_stats(&image(&submsg(1, &[0xff; 11]))).unwrap_err();
        assert!(err.to_string().contains("varint"), "{err}");
        let mut trailing = DUMP.to_vec();
        trailing.push(0);
        assert!(parse_dump_stats(&trailing).unwrap_err().to_string().contains("unexpected bytes"));
    }

    #[test]
    fn missing_required_fields_are_named() {
        let mut dump = Vec::new();
        varint_field(1, 10, &mut dump);
        varint_field(7, 3, &mut dump);
        let err = parse_dump_stats(&image(&submsg(1, &dump))).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("frozen_time") && text.contains("pages_lazy") && !text.contains("pages_written"),
            "{text}"
        );
    }

    #[test]
    fn unknown_fields_of_every_wire_type_are_skipped() {
        let mut dump = Vec::new();
        for n in 1..=9 {
            varint_field(n, u64::from(n) * 100, &mut dump);
        }
        // Unknown fields a newer CRIU might add: varint, fixed64, bytes, group, fixed32.
        varint_field(40, u64::MAX, &mut dump);
        varint(41 << 3 | 1, &mut dump);
        dump.extend_from_slice(&[7; 8]);
        dump.extend(submsg(42, b"\x08\x01 any bytes"));
        varint(43 << 3 | 3, &mut dump);
        varint_field(1, 5, &mut dump); // inside the group: must not overwrite freezing_time
        varint(44 << 3 | 3, &mut dump);
        varint(44 << 3 | 4, &mut dump);
        varint(43 << 3 | 4, &mut dump);
        varint(45 << 3 | 5, &mut dump);
        dump.extend_from_slice(&[9; 4]);
        varint_field(14, 77, &mut dump);
        let mut entry = submsg(1, &dump);
        entry.extend(submsg(3, b"unknown submessage of stats_entry"));
        let s = parse_dump_stats(&image(&entry)).unwrap();
        assert_eq!(s.freezing_time_us, 100);
        assert_eq!(s.pages_written, 700);
        assert_eq!(s.pages_lazy, 900);
        assert_eq!(s.shpages_written, 77);
        assert_eq!(s.page_pipes, 0, "absent optional fields read as 0");
    }

    #[test]
    fn a_field_of_the_wrong_wire_type_is_an_error() {
        let mut dump = Vec::new();
        dump.extend(submsg(7, b"xx"));
        let err = parse_dump_stats(&image(&submsg(1, &dump))).unwrap_err();
        assert!(err.to_string().contains("field 7 should be a varint"), "{err}");
    }

    #[test]
    fn unbalanced_groups_are_errors() {
        let mut body = Vec::new();
        varint(43 << 3 | 3, &mut body);
        assert!(parse_dump_stats(&image(&submsg(1, &body))).unwrap_err().to_string().contains("never ends"));
        let mut body = Vec::new();
        varint(43 << 3 | 4, &mut body);
        assert!(parse_dump_stats(&image(&submsg(1, &body))).unwrap_err().to_string().contains("unmatched"));
        let mut deep = Vec::new();
        for _ in 0..100 {
            varint(43 << 3 | 3, &mut deep);
        }
        assert!(parse_dump_stats(&image(&submsg(1, &deep))).unwrap_err().to_string().contains("nested deeper"));
    }

    #[test]
    fn serializes_with_podman_like_names() {
        let json = serde_json::to_value(parse_dump_stats(DUMP).unwrap()).unwrap();
        assert_eq!(json["frozen_time_us"], 76054);
        assert_eq!(json["pages_written"], 34);
    }
}
