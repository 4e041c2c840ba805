//! The wrapper's files in a container's directory: the directive it acts on, the status it
//! reports, the container's own CRIU configuration, and the marker a restore leaves for the
//! `start` that follows.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use vimigrate_protocol::{
    CriuOptions, Directive, RuntimeStatus, TcpMode, ABORT_FILE, CRIU_CONF_FILE, DIRECTIVE_FILE, DIRECTIVE_VERSION,
    PAGES_STATUS_FILE, RESTORED_MARK, STATE_DIR, STATUS_FILE,
};

use crate::error::RuntimeError;

/// Where runc's CRIU options live host-wide; the per-container file starts from it.
pub const HOST_CRIU_CONF: &str = "/etc/criu/runc.conf";

/// `<container dir>/vimigrate`.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

/// Creates `dir` (and missing parents) private from the first instant: mode 0700 at creation,
/// not after (process memory must never sit in a directory others can read, even briefly).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Writes `bytes` to `path` as a private file (0600), atomically (through a temporary file).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    // No fsync: these files matter only while the host runs, and an fsync inside the freeze
    // costs the service tens of milliseconds.
    file.write_all(bytes)?;
    fs::rename(&tmp, path)
}

impl StateDir {
    /// The wrapper's directory of the container whose Docker directory is `container_dir`.
    pub fn of(container_dir: &Path) -> StateDir {
        StateDir { dir: container_dir.join(STATE_DIR) }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn ensure(&self) -> Result<(), RuntimeError> {
        create_private_dir(&self.dir).map_err(RuntimeError::io("directive", format!("create {}", self.dir.display())))
    }

    /// A subdirectory of the state directory (0700, emptied first): CRIU's work directory of
    /// one dump or restore.
    pub fn private_subdir(&self, name: &str) -> Result<PathBuf, RuntimeError> {
        self.ensure()?;
        let dir = self.dir.join(name);
        let _ = fs::remove_dir_all(&dir);
        create_private_dir(&dir).map_err(RuntimeError::io("directive", format!("create {}", dir.display())))?;
        Ok(dir)
    }

    /// Reads and removes the directive, if there is one: a directive is acted on once. An
    /// unreadable one is kept (renamed) for diagnosis and reported.
    pub fn take_directive(&self) -> Result<Option<Directive>, RuntimeError> {
        let path = self.dir.join(DIRECTIVE_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(RuntimeError::Io {
                    step: "directive",
                    context: format!("read {}", path.display()),
                    source: e,
                })
            }
        };
        let parsed = serde_json::from_slice::<Directive>(&bytes);
        match parsed {
            Ok(directive) if directive.version == DIRECTIVE_VERSION => {
                fs::remove_file(&path).map_err(RuntimeError::io("directive", format!("remove {}", path.display())))?;
                Ok(Some(directive))
            }
            Ok(directive) => {
                let _ = fs::rename(&path, path.with_extension("rejected"));
                Err(RuntimeError::Directive(format!(
                    "directive version {} (this runtime understands {DIRECTIVE_VERSION}): upgrade vimigrate-runtime on this host",
                    directive.version
                )))
            }
            Err(e) => {
                let _ = fs::rename(&path, path.with_extension("rejected"));
                Err(RuntimeError::Directive(format!("{} is not a valid directive: {e}", path.display())))
            }
        }
    }

    /// Writes the status (atomically, 0600). A status that cannot be written is reported on
    /// stderr only: the runtime's own result still reaches Docker.
    pub fn write_status(&self, status: &RuntimeStatus) {
        self.write_status_file(STATUS_FILE, status);
    }

    /// Writes the post-copy page fetcher's report ([`PAGES_STATUS_FILE`]), as [`Self::write_status`].
    pub fn write_pages_status(&self, status: &RuntimeStatus) {
        self.write_status_file(PAGES_STATUS_FILE, status);
    }

    fn write_status_file(&self, name: &str, status: &RuntimeStatus) {
        let result = self.ensure().and_then(|()| {
            let bytes = serde_json::to_vec_pretty(status).unwrap_or_default();
            let path = self.dir.join(name);
            write_private(&path, &bytes).map_err(RuntimeError::io("status", format!("write {}", path.display())))
        });
        if let Err(e) = result {
            eprintln!("vimigrate-runtime: {}", e.report());
        }
    }

    /// Whether the broker withdrew the directive being waited on.
    pub fn abort_requested(&self) -> bool {
        self.dir.join(ABORT_FILE).exists()
    }

    /// Leaves the mark a restore leaves for the next `start`.
    pub fn mark_restored(&self) -> Result<(), RuntimeError> {
        self.ensure()?;
        let path = self.dir.join(RESTORED_MARK);
        write_private(&path, b"").map_err(RuntimeError::io("restore", format!("write {}", path.display())))
    }

    /// Removes the mark; `true` when it was there.
    pub fn take_restored_mark(&self) -> bool {
        fs::remove_file(self.dir.join(RESTORED_MARK)).is_ok()
    }

    /// Marks checkpoint `migration` as a post-copy dump: its images hold no memory (the pages
    /// stayed in the frozen processes), so it can never be restored from here.
    pub fn mark_lazy_dump(&self, migration: &str) -> Result<(), RuntimeError> {
        self.ensure()?;
        let path = self.dir.join(vimigrate_protocol::lazy_dump_mark(migration));
        write_private(&path, b"").map_err(RuntimeError::io("dump", format!("write {}", path.display())))
    }

    /// Whether checkpoint `migration` is a post-copy dump (see [`StateDir::mark_lazy_dump`]).
    pub fn is_lazy_dump(&self, migration: &str) -> bool {
        self.dir.join(vimigrate_protocol::lazy_dump_mark(migration)).exists()
    }

    /// Writes the container's CRIU configuration: the host's `/etc/criu/runc.conf`, with this
    /// migration's options in place of the host's TCP choice, and CRIU's log in `log_file` when
    /// given (runc removes the log it asks CRIU for when a restore fails), then the `extra`
    /// option lines of this one dump or restore.
    pub fn write_criu_conf(
        &self,
        options: Option<&CriuOptions>,
        log_file: Option<&Path>,
        extra: &[String],
    ) -> Result<(), RuntimeError> {
        self.ensure()?;
        let host = fs::read_to_string(HOST_CRIU_CONF).unwrap_or_default();
        let mut text = criu_conf(&host, options);
        if let Some(log) = log_file {
            text = text.lines().filter(|l| !is_option(l, "log-file")).map(|l| format!("{l}\n")).collect();
            text.push_str(&format!("log-file {}\n", log.display()));
        }
        for line in extra {
            text.push_str(line);
            text.push('\n');
        }
        let path = self.dir.join(CRIU_CONF_FILE);
        write_private(&path, text.as_bytes()).map_err(RuntimeError::io("criu", format!("write {}", path.display())))
    }
}

fn is_option(line: &str, name: &str) -> bool {
    line.trim().trim_start_matches("--").split_whitespace().next() == Some(name)
}

/// CRIU's configuration for one dump or restore: `host` (the host's runc.conf) with the TCP
/// option replaced when `options` sets one, and `skip-in-flight` added when asked.
pub fn criu_conf(host: &str, options: Option<&CriuOptions>) -> String {
    let option_name =
        |line: &str| line.trim().trim_start_matches("--").split_whitespace().next().unwrap_or("").to_string();
    let mut out = String::from("# written by vimigrate-runtime for this container's dump or restore\n");
    let tcp = options.and_then(|o| o.tcp);
    let mut have_skip = false;
    for line in host.lines() {
        let name = option_name(line);
        if tcp.is_some() && (name == "tcp-established" || name == "tcp-close") {
            continue;
        }
        have_skip |= name == "skip-in-flight";
        out.push_str(line);
        out.push('\n');
    }
    match tcp {
        Some(TcpMode::Established) => out.push_str("tcp-established\n"),
        Some(TcpMode::Close) => out.push_str("tcp-close\n"),
        None => {}
    }
    if options.is_some_and(|o| o.skip_in_flight) && !have_skip {
        out.push_str("skip-in-flight\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migration_decides_the_tcp_option() {
        let host = "log-file /var/log/criu.log\ntcp-close\n# comment\n";
        let options = CriuOptions { tcp: Some(TcpMode::Established), skip_in_flight: true };
        let conf = criu_conf(host, Some(&options));
        assert!(conf.contains("log-file /var/log/criu.log\n"), "{conf}");
        assert!(conf.contains("tcp-established\n") && !conf.contains("tcp-close"), "{conf}");
        assert!(conf.contains("skip-in-flight\n"), "{conf}");
        assert_eq!(criu_conf(host, None).matches("tcp-close").count(), 1);
    }

    #[test]
    fn a_directive_is_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::of(dir.path());
        assert!(state.take_directive().unwrap().is_none());
        fs::create_dir_all(state.path()).unwrap();
        fs::write(state.path().join(DIRECTIVE_FILE), b"{not json").unwrap();
        assert!(matches!(state.take_directive(), Err(RuntimeError::Directive(_))));
        assert!(state.take_directive().unwrap().is_none(), "a rejected directive is not read again");
        assert!(!state.take_restored_mark());
        state.mark_restored().unwrap();
        assert!(state.take_restored_mark());
        assert!(!state.take_restored_mark());
    }
}
