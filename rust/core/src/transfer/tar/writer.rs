//! Writing small tar archives by hand: what the archive endpoints take to place a file.

/// A ustar header block for `path` (no leading slash). Owner root, mtime 0 so that the tar, and
/// thus the imported image, is the same bytes on every build.
pub(crate) fn ustar_header(path: &str, mode: u32, size: usize, typeflag: u8) -> [u8; 512] {
    fn octal(field: &mut [u8], value: u64) {
        // Zero-padded octal digits followed by a NUL, filling the field.
        let text = format!("{value:0width$o}\0", width = field.len() - 1);
        field.copy_from_slice(text.as_bytes());
    }
    let mut header = [0u8; 512];
    header[..path.len()].copy_from_slice(path.as_bytes());
    octal(&mut header[100..108], u64::from(mode));
    octal(&mut header[108..116], 0); // uid
    octal(&mut header[116..124], 0); // gid
    octal(&mut header[124..136], size as u64);
    octal(&mut header[136..148], 0); // mtime
    header[156] = typeflag;
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[265..269].copy_from_slice(b"root");
    header[297..301].copy_from_slice(b"root");
    seal(&mut header);
    header
}

/// Writes the header's checksum: the sum of all its bytes with its own field counted as
/// spaces, stored as six octal digits, a NUL and a space.
fn seal(header: &mut [u8; 512]) {
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

/// A tar holding one regular file at `path` (no leading slash) with `content`.
pub(crate) fn single_file_tar(path: &str, mode: u32, content: &[u8]) -> Vec<u8> {
    let mut tar = Vec::with_capacity(512 + content.len() + 1536);
    tar.extend_from_slice(&ustar_header(path, mode, content.len(), b'0'));
    tar.extend_from_slice(content);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
    // End of archive: two zero blocks.
    tar.resize(tar.len() + 1024, 0);
    tar
}

/// A tar holding directory `dir` (mode 0700) and, inside it, `files` (mode 0600): private
/// files placed through the archive endpoints (directives that carry secrets).
pub(crate) fn private_files_tar(dir: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut tar = Vec::new();
    tar.extend_from_slice(&ustar_header(&format!("{dir}/"), 0o700, 0, b'5'));
    for (name, content) in files {
        tar.extend_from_slice(&ustar_header(&format!("{dir}/{name}"), 0o600, content.len(), b'0'));
        tar.extend_from_slice(content);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.resize(tar.len() + 1024, 0);
    tar
}

/// A tar holding one symbolic link at `path` (no leading slash) pointing to `target` (at most
/// 100 bytes, ustar's limit). Extracting it replaces whatever was at `path`: the archive
/// endpoints cannot delete a file, but a link to nothing reads as no file to whoever follows it.
pub(crate) fn symlink_tar(path: &str, target: &str) -> Vec<u8> {
    let mut header = ustar_header(path, 0o777, 0, b'2');
    header[157..157 + target.len()].copy_from_slice(target.as_bytes());
    seal(&mut header);
    let mut tar = header.to_vec();
    tar.resize(tar.len() + 1024, 0);
    tar
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::tar::manifest::Entry;
    use crate::transfer::tar::reader::TarManifestBuilder;

    #[test]
    fn a_single_file_tar_reads_back() {
        let tar = single_file_tar("etc/app.conf", 0o644, b"redis=10.0.0.5:6379\n");
        let mut reader = TarManifestBuilder::new();
        reader.update(&tar).unwrap();
        let manifest = reader.finish().unwrap();
        assert!(matches!(manifest.entries["etc/app.conf"], Entry::File { size: 20, .. }));
    }

    #[test]
    fn a_symlink_tar_reads_back_as_the_link() {
        let tar = symlink_tar("vimigrate/directive.json", "directive.json.withdrawn");
        let mut reader = TarManifestBuilder::new();
        reader.update(&tar).unwrap();
        let manifest = reader.finish().unwrap();
        let expected = Entry::Symlink { target: "directive.json.withdrawn".into() };
        assert_eq!(manifest.entries["vimigrate/directive.json"], expected);
    }
}
