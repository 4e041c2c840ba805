//! Writing files into a container's root filesystem or volume from the host, without ever
//! leaving it.
//!
//! A path inside a container may cross symbolic links that point anywhere (`/var/run -> /run`,
//! or a hostile `/x -> /etc` on the host): resolving it from the host would follow them out of
//! the container. Every parent directory is therefore opened with `openat2(RESOLVE_IN_ROOT)`,
//! which resolves the path as if the container's root were `/`, and the last component is
//! created or replaced with `*at` calls that never follow a link.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The components of a path inside a root: absolute or relative, but never `..`, `.` or empty
/// components. Returns the normalized relative path.
pub fn relative_in_root(path: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::RootDir => {}
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("path `{}` has a `.` or `..` component", path.display()),
                ))
            }
        }
    }
    Ok(out)
}

/// A directory that paths are resolved within.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    /// Opens `path` (a host directory) as a root.
    pub fn open(path: &Path) -> io::Result<Root> {
        let c = cstr(path.as_os_str().as_bytes())?;
        // SAFETY: `c` is a valid NUL-terminated string; the returned fd is owned below.
        let fd = check(unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) })?;
        // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
        Ok(Root { fd: unsafe { OwnedFd::from_raw_fd(fd) }, path: path.to_path_buf() })
    }

    /// The host path of this root (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the directory `rel` inside the root (resolved within it), creating missing
    /// directories (mode 0755) when `create` is set.
    pub fn open_dir(&self, rel: &Path, create: bool) -> io::Result<OwnedFd> {
        let rel = relative_in_root(rel)?;
        if rel.as_os_str().is_empty() {
            return dup(self.fd.as_raw_fd());
        }
        match self.openat2(&rel, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) {
            Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {
                let parent = rel.parent().unwrap_or(Path::new(""));
                let name = rel.file_name().ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
                let parent_fd = self.open_dir(parent, true)?;
                let c = cstr(name.as_bytes())?;
                // SAFETY: valid fd and NUL-terminated name.
                let made = check(unsafe { libc::mkdirat(parent_fd.as_raw_fd(), c.as_ptr(), 0o755) });
                match made {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(e),
                }
                self.openat2(&rel, libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
            }
            other => other,
        }
    }

    fn openat2(&self, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
        let c = cstr(rel.as_os_str().as_bytes())?;
        let how = OpenHow { flags: flags as u64, mode: 0, resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
        // SAFETY: valid dirfd, NUL-terminated path and a properly sized `open_how`.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.fd.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a new fd that nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
    }

    /// The parent directory of `rel` (created if missing) and the last component's name.
    pub fn parent_of(&self, rel: &Path) -> io::Result<(OwnedFd, CString)> {
        let rel = relative_in_root(rel)?;
        let name = rel
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the root itself has no parent"))?;
        let parent = self.open_dir(rel.parent().unwrap_or(Path::new("")), true)?;
        Ok((parent, cstr(name.as_bytes())?))
    }
}

fn dup(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a valid fd returns a new owned fd.
    let new = check(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) })?;
    // SAFETY: see above.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Removes whatever `name` is in `dir` (a file, a link, or a whole directory tree). Absent is
/// fine.
pub fn remove_entry(dir: &OwnedFd, name: &CString) -> io::Result<()> {
    // SAFETY: valid fd and NUL-terminated name.
    let ret = unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) };
    if ret == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOENT) => Ok(()),
        Some(libc::EISDIR) | Some(libc::EPERM) => {
            // std's remove_dir_all never follows links below the top; the top is reached through
            // the directory fd already resolved within the root.
            let path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()))
                .join(std::ffi::OsStr::from_bytes(name.as_bytes()));
            std::fs::remove_dir_all(path)
        }
        _ => Err(err),
    }
}

/// Creates `name` in `dir` as a new regular file (replacing any file or link there), for
/// writing, mode 0600 until [`set_attributes`] gives it its own.
pub fn create_file(dir: &OwnedFd, name: &CString) -> io::Result<File> {
    remove_entry(dir, name)?;
    // SAFETY: valid fd and NUL-terminated name; the result is owned by the File.
    let fd = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        )
    })?;
    // SAFETY: see above.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Makes sure `name` in `dir` is a directory (replacing a file or link there) and returns it
/// opened.
pub fn make_dir(dir: &OwnedFd, name: &CString) -> io::Result<File> {
    // SAFETY: valid fd and NUL-terminated name.
    let made = unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o700) };
    if made != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EEXIST) {
            return Err(err);
        }
    }
    let open = || {
        // SAFETY: valid fd and NUL-terminated name.
        check(unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        })
    };
    let fd = match open() {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR) | Some(libc::ELOOP)) => {
            remove_entry(dir, name)?;
            // SAFETY: as above.
            check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o700) })?;
            open()?
        }
        Err(e) => return Err(e),
    };
    // SAFETY: the fd is new and owned by the File.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Creates `name` in `dir` as a symbolic link to `target` (replacing what is there).
pub fn make_symlink(dir: &OwnedFd, name: &CString, target: &[u8]) -> io::Result<()> {
    remove_entry(dir, name)?;
    let target = cstr(target)?;
    // SAFETY: valid fd and NUL-terminated strings.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// Creates `name` in `dir` as a FIFO (replacing what is there).
pub fn make_fifo(dir: &OwnedFd, name: &CString) -> io::Result<()> {
    remove_entry(dir, name)?;
    // SAFETY: valid fd and NUL-terminated name.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), libc::S_IFIFO | 0o600, 0) }).map(drop)
}

/// Owner, permission bits and modification time of an entry, as the source had them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes {
    /// Permission bits (with setuid/setgid/sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time: seconds since the epoch.
    pub mtime_sec: i64,
    /// Modification time: nanoseconds.
    pub mtime_nsec: u32,
}

/// Gives an open file or directory its owner, mode and time (owner first: chown clears setuid).
pub fn set_attributes(file: &File, attrs: &Attributes, times: bool) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: valid fd for all three calls; `ts` outlives the futimens call.
    unsafe {
        check(libc::fchown(fd, attrs.uid, attrs.gid))?;
        check(libc::fchmod(fd, (attrs.mode & 0o7777) as libc::mode_t))?;
        if times {
            let ts = [
                libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
                libc::timespec { tv_sec: attrs.mtime_sec, tv_nsec: i64::from(attrs.mtime_nsec) },
            ];
            check(libc::futimens(fd, ts.as_ptr()))?;
        }
    }
    Ok(())
}

/// Owner and time of a link or FIFO `name` in `dir`, without following it (a link has no mode
/// of its own; a FIFO gets its mode).
pub fn set_entry_attributes(dir: &OwnedFd, name: &CString, attrs: &Attributes, is_link: bool) -> io::Result<()> {
    let ts = [
        libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT },
        libc::timespec { tv_sec: attrs.mtime_sec, tv_nsec: i64::from(attrs.mtime_nsec) },
    ];
    // SAFETY: valid fd, NUL-terminated name, `ts` outlives the call.
    unsafe {
        check(libc::fchownat(dir.as_raw_fd(), name.as_ptr(), attrs.uid, attrs.gid, libc::AT_SYMLINK_NOFOLLOW))?;
        if !is_link {
            check(libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), (attrs.mode & 0o7777) as libc::mode_t, 0))?;
        }
        check(libc::utimensat(dir.as_raw_fd(), name.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW))?;
    }
    Ok(())
}

/// Opens `path` for reading without following a link at its last component.
pub fn open_no_follow(path: &Path) -> io::Result<File> {
    let c = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: NUL-terminated path; the fd is owned by the File.
    let fd = check(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC) })?;
    // SAFETY: see above.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn links_are_resolved_inside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let root_dir = tempfile::tempdir().unwrap();
        // A link inside the container pointing at an absolute path: within the root it means
        // <root>/<outside>, never the host's directory.
        symlink(outside.path(), root_dir.path().join("escape")).unwrap();
        let inside_dir = root_dir.path().join(outside.path().strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside_dir).unwrap();
        let root = Root::open(root_dir.path()).unwrap();
        let (dir, name) = root.parent_of(Path::new("/escape/file")).unwrap();
        create_file(&dir, &name).unwrap().write_all(b"x").unwrap();
        assert!(!outside.path().join("file").exists(), "wrote outside the root");
        assert_eq!(std::fs::read(inside_dir.join("file")).unwrap(), b"x");
    }

    #[test]
    fn dot_dot_is_refused() {
        assert!(relative_in_root(Path::new("/a/../b")).is_err());
        assert_eq!(relative_in_root(Path::new("/a/b")).unwrap(), PathBuf::from("a/b"));
    }

    #[test]
    fn entries_are_replaced_and_removed() {
        let root_dir = tempfile::tempdir().unwrap();
        let root = Root::open(root_dir.path()).unwrap();
        let (dir, name) = root.parent_of(Path::new("d/e")).unwrap();
        make_dir(&dir, &name).unwrap();
        std::fs::write(root_dir.path().join("d/e/inner"), b"1").unwrap();
        // A file where a directory was: the tree goes.
        create_file(&dir, &name).unwrap();
        assert!(root_dir.path().join("d/e").is_file());
        make_symlink(&dir, &name, b"/nowhere").unwrap();
        assert_eq!(std::fs::read_link(root_dir.path().join("d/e")).unwrap(), PathBuf::from("/nowhere"));
        remove_entry(&dir, &name).unwrap();
        assert!(!root_dir.path().join("d/e").exists());
        remove_entry(&dir, &name).unwrap();
    }
}
