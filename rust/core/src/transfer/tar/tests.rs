//! The tar reader's and the manifest's tests, on streams built by hand one header at a time.

use sha2::{Digest, Sha256};

use crate::error::IntegrityError;
use crate::transfer::tar::manifest::{normalize, Entry, TarManifest, BLOCK, CAPTURE_LIMIT};
use crate::transfer::tar::reader::numeric;
use crate::transfer::tar::reader::TarManifestBuilder;

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
        assert_eq!(m.entries[&format!("{prefixed_dir}/inner.img")], Entry::File { size: 8, sha256: sha(b"prefixed") });
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
