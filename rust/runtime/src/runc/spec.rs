//! What the wrapper reads from a container's OCI bundle (`config.json`) and runc's state: where
//! its root filesystem and volumes are on the host, and where Docker keeps its directory.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use vimigrate_protocol::{CRIU_CONFIG_ANNOTATION, CRIU_CONF_FILE, STATE_DIR};

use crate::error::RuntimeError;

/// One bind mount of the spec: a host directory or file at a path in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// Path inside the container.
    pub destination: String,
    /// Host path.
    pub source: PathBuf,
}

/// The parts of a bundle's `config.json` the wrapper uses.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// The container's root filesystem on the host (Docker: the overlay's merged directory).
    pub root: PathBuf,
    /// Bind mounts, in spec order.
    pub binds: Vec<BindMount>,
    /// The whole document, for rewriting.
    document: Value,
}

impl Spec {
    /// Reads `<bundle>/config.json`.
    pub fn load(bundle: &Path) -> Result<Spec, RuntimeError> {
        let path = bundle.join("config.json");
        let text = fs::read(&path).map_err(RuntimeError::io("spec", format!("read {}", path.display())))?;
        let document: Value = serde_json::from_slice(&text)
            .map_err(|e| RuntimeError::Directive(format!("{} is not JSON: {e}", path.display())))?;
        let root = document["root"]["path"]
            .as_str()
            .ok_or_else(|| RuntimeError::Directive(format!("{} has no root.path", path.display())))?;
        let root = if Path::new(root).is_absolute() { PathBuf::from(root) } else { bundle.join(root) };
        let binds = document["mounts"]
            .as_array()
            .map(|mounts| {
                mounts
                    .iter()
                    .filter(|m| m["type"].as_str() == Some("bind"))
                    .filter_map(|m| {
                        Some(BindMount {
                            destination: m["destination"].as_str()?.to_string(),
                            source: PathBuf::from(m["source"].as_str()?),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Spec { bundle: bundle.to_path_buf(), root, binds, document })
    }

    /// The bundle of container `id` as runc recorded it (`bundle=` label of
    /// `<runc root>/<id>/state.json`): how `checkpoint` and `start`, which get no `--bundle`,
    /// find the spec.
    pub fn bundle_from_state(runc_root: &Path, id: &str) -> Result<PathBuf, RuntimeError> {
        let (path, state) = runc_state(runc_root, id, "spec")?;
        state["config"]["labels"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find_map(|label| label.strip_prefix("bundle="))
            .map(PathBuf::from)
            .ok_or_else(|| RuntimeError::Directive(format!("{} names no bundle", path.display())))
    }

    /// Docker's directory of the container, `<DockerRootDir>/containers/<id>`: the host side
    /// of its `/etc/hostname` mount. `None` for a container Docker did not set up that way.
    pub fn container_dir(&self, id: &str) -> Option<PathBuf> {
        self.binds
            .iter()
            .filter(|m| m.destination == "/etc/hostname" || m.destination == "/etc/hosts")
            .filter_map(|m| m.source.parent())
            .find(|dir| dir.file_name().is_some_and(|name| name == id))
            .map(Path::to_path_buf)
    }

    /// The network namespace the container joins (Docker creates it and gives its path).
    pub fn network_namespace(&self) -> Option<PathBuf> {
        self.document["linux"]["namespaces"].as_array()?.iter().find(|ns| ns["type"].as_str() == Some("network"))?
            ["path"]
            .as_str()
            .map(PathBuf::from)
    }

    /// The host source of the bind mount at `destination`.
    pub fn bind_source(&self, destination: &str) -> Option<&Path> {
        let wanted = destination.trim_end_matches('/');
        self.binds.iter().find(|m| m.destination.trim_end_matches('/') == wanted).map(|m| m.source.as_path())
    }

    /// Points runc's CRIU configuration at the container's own file
    /// (`<container dir>/vimigrate/criu.conf`), rewriting `config.json` in place (atomically).
    /// runc copies the annotation into its state, so the dump of this container later reads
    /// that file too.
    pub fn annotate_criu_config(&mut self, container_dir: &Path) -> Result<(), RuntimeError> {
        let conf = container_dir.join(STATE_DIR).join(CRIU_CONF_FILE);
        let Some(conf) = conf.to_str() else {
            return Err(RuntimeError::Directive(format!("non-UTF-8 path {}", conf.display())));
        };
        if self.document["annotations"][CRIU_CONFIG_ANNOTATION].as_str() == Some(conf) {
            return Ok(());
        }
        if !self.document["annotations"].is_object() {
            self.document["annotations"] = Value::Object(Default::default());
        }
        self.document["annotations"][CRIU_CONFIG_ANNOTATION] = Value::String(conf.to_string());
        self.save()
    }

    /// The whole `config.json`, for the changes [`Spec::save`] then writes.
    pub fn document_mut(&mut self) -> &mut Value {
        &mut self.document
    }

    /// Writes the document back to `<bundle>/config.json`, atomically (runc reads it at any
    /// moment).
    pub fn save(&self) -> Result<(), RuntimeError> {
        let path = self.bundle.join("config.json");
        let tmp = self.bundle.join(".config.json.vimigrate");
        let text = serde_json::to_vec(&self.document).map_err(|e| RuntimeError::Directive(e.to_string()))?;
        fs::write(&tmp, text).map_err(RuntimeError::io("spec", format!("write {}", tmp.display())))?;
        fs::rename(&tmp, &path).map_err(RuntimeError::io("spec", format!("replace {}", path.display())))
    }
}

/// runc's state of container `id` (`<runc root>/<id>/state.json`) and its path; `step` names the
/// wrapper's step in an error.
pub fn runc_state(runc_root: &Path, id: &str, step: &'static str) -> Result<(PathBuf, Value), RuntimeError> {
    let path = runc_root.join(id).join("state.json");
    let text = fs::read(&path).map_err(RuntimeError::io(step, format!("read {}", path.display())))?;
    let state = serde_json::from_slice(&text)
        .map_err(|e| RuntimeError::Directive(format!("{} is not JSON: {e}", path.display())))?;
    Ok((path, state))
}

/// The upper (writable) directory of the overlay mounted at `root`, from this process's
/// mountinfo; for Docker's overlay2, the `diff` directory beside `merged` when mountinfo does
/// not name one.
pub fn overlay_upper_dir(root: &Path) -> Option<PathBuf> {
    if let Ok(info) = fs::read_to_string("/proc/self/mountinfo") {
        if let Some(upper) = upper_from_mountinfo(&info, root) {
            return Some(upper);
        }
    }
    let sibling = root.parent()?.join("diff");
    sibling.is_dir().then_some(sibling)
}

fn upper_from_mountinfo(info: &str, root: &Path) -> Option<PathBuf> {
    let wanted = root.to_str()?;
    info.lines().rev().find_map(|line| {
        let (fields, rest) = line.split_once(" - ")?;
        let mount_point = unescape(fields.split(' ').nth(4)?);
        if mount_point != wanted {
            return None;
        }
        let mut rest = rest.split(' ');
        if rest.next()? != "overlay" {
            return None;
        }
        let options = rest.nth(1)?;
        options.split(',').find_map(|o| o.strip_prefix("upperdir=")).map(|p| PathBuf::from(unescape(p)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let digit = |k: usize| u32::from(bytes[i + k] - b'0');
            out.push((digit(1) * 64 + digit(2) * 8 + digit(3)) as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "7f74894fe1720c661b70ad2f6170864333165ebf0b94f59d038b033110ce707b";

    fn bundle() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let spec = serde_json::json!({
            "root": {"path": "/var/lib/docker/overlay2/969f/merged"},
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/data", "type": "bind", "source": "/var/lib/docker/volumes/vol1/_data"},
                {"destination": "/etc/hostname", "type": "bind", "source": format!("/var/lib/docker/containers/{ID}/hostname")},
            ],
        });
        fs::write(dir.path().join("config.json"), spec.to_string()).unwrap();
        dir
    }

    #[test]
    fn root_binds_and_container_dir() {
        let dir = bundle();
        let spec = Spec::load(dir.path()).unwrap();
        assert_eq!(spec.root, PathBuf::from("/var/lib/docker/overlay2/969f/merged"));
        assert_eq!(spec.bind_source("/data/"), Some(Path::new("/var/lib/docker/volumes/vol1/_data")));
        assert_eq!(spec.container_dir(ID), Some(PathBuf::from(format!("/var/lib/docker/containers/{ID}"))));
        assert_eq!(spec.container_dir(&"0".repeat(64)), None);
    }

    #[test]
    fn the_annotation_is_added_and_kept() {
        let dir = bundle();
        let mut spec = Spec::load(dir.path()).unwrap();
        spec.annotate_criu_config(Path::new("/c/x")).unwrap();
        let written: Value = serde_json::from_slice(&fs::read(dir.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(written["annotations"][CRIU_CONFIG_ANNOTATION], "/c/x/vimigrate/criu.conf");
        assert_eq!(written["mounts"].as_array().unwrap().len(), 3);
    }

    proptest::proptest! {
        #[test]
        fn mountinfo_parsing_never_panics(info in "(.{0,80}\n){0,5}", root in "/.{0,20}") {
            let _ = upper_from_mountinfo(&info, Path::new(&root));
            let _ = unescape(&info);
        }
    }

    #[test]
    fn upper_dir_comes_from_mountinfo() {
        let info = "55 50 0:40 / /var/lib/docker/overlay2/969f/merged rw,relatime shared:8 - overlay overlay \
                    rw,lowerdir=/l/A:/l/B,upperdir=/var/lib/docker/overlay2/969f/diff,workdir=/w\n";
        assert_eq!(
            upper_from_mountinfo(info, Path::new("/var/lib/docker/overlay2/969f/merged")),
            Some(PathBuf::from("/var/lib/docker/overlay2/969f/diff"))
        );
        assert_eq!(upper_from_mountinfo(info, Path::new("/other")), None);
        assert_eq!(unescape(r"/a\040b"), "/a b");
    }
}
