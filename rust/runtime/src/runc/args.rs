//! The command line containerd's shim gives an OCI runtime, split into the wrapper's own flags,
//! runc's global flags, the command and the command's arguments.
//!
//! dockerd puts a runtime's `runtimeArgs` first, then the shim adds runc's global flags
//! (`--root R --log L --log-format json`), the command, its flags and the container id last:
//! `vimigrate-runtime --vimigrate-runc=/usr/sbin/runc --root R --log L --log-format json
//! create --bundle B --pid-file P ID`.

use std::path::PathBuf;

/// runc's global flags that take a value (urfave/cli also accepts `--flag=value`).
const GLOBAL_WITH_VALUE: [&str; 5] = ["--root", "--log", "--log-format", "--criu", "--rootless"];
/// The wrapper's own flag prefix; such flags are never passed on to runc.
const WRAPPER_PREFIX: &str = "--vimigrate-";

/// One invocation of the runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// `--vimigrate-runc=PATH`: the real runc (default: `runc` found on `PATH`, not ourselves).
    pub runc: Option<PathBuf>,
    /// runc's global flags, verbatim and in order.
    pub global: Vec<String>,
    /// The command (`create`, `start`, `checkpoint`, ...), if any.
    pub command: Option<String>,
    /// The command's arguments, verbatim.
    pub args: Vec<String>,
}

impl Invocation {
    /// Splits `argv` (without the program name).
    pub fn parse(argv: &[String]) -> Invocation {
        let mut runc = None;
        let mut global = Vec::new();
        let mut i = 0;
        while i < argv.len() {
            let arg = &argv[i];
            if let Some(flag) = arg.strip_prefix(WRAPPER_PREFIX) {
                let (name, value) = match flag.split_once('=') {
                    Some((name, value)) => (name, Some(value.to_string())),
                    None => {
                        i += 1;
                        (flag, argv.get(i).cloned())
                    }
                };
                if name == "runc" {
                    runc = value.map(PathBuf::from);
                }
                i += 1;
                continue;
            }
            if !arg.starts_with('-') {
                break;
            }
            global.push(arg.clone());
            if GLOBAL_WITH_VALUE.contains(&arg.as_str()) {
                if let Some(value) = argv.get(i + 1) {
                    global.push(value.clone());
                    i += 1;
                }
            }
            i += 1;
        }
        let command = argv.get(i).cloned();
        let args = argv.get(i + 1..).map(<[String]>::to_vec).unwrap_or_default();
        Invocation { runc, global, command, args }
    }

    /// The value of runc's global flag `name` (`--root`, `--log`).
    pub fn global_value(&self, name: &str) -> Option<&str> {
        value_in(&self.global, name)
    }

    /// The value of the command's flag `name` (`--bundle`, `--pid-file`, `--work-path`).
    pub fn arg_value(&self, name: &str) -> Option<&str> {
        value_in(&self.args, name)
    }

    /// Whether the command has the boolean flag `name`.
    pub fn has_flag(&self, name: &str) -> bool {
        self.args.iter().any(|a| a == name)
    }

    /// The container id: the command's last argument.
    pub fn container_id(&self) -> Option<&str> {
        self.args.last().map(String::as_str).filter(|id| !id.starts_with('-') && is_container_id(id))
    }

    /// The command's arguments without flag `name` and its value.
    pub fn args_without(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut skip = false;
        for arg in &self.args {
            if skip {
                skip = false;
                continue;
            }
            if arg == name {
                skip = true;
                continue;
            }
            if arg.strip_prefix(name).is_some_and(|rest| rest.starts_with('=')) {
                continue;
            }
            out.push(arg.clone());
        }
        out
    }
}

fn value_in<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == name {
            return iter.next().map(String::as_str);
        }
        if let Some(value) = arg.strip_prefix(name).and_then(|rest| rest.strip_prefix('=')) {
            return Some(value);
        }
    }
    None
}

/// Docker's container ids (and runc's, as the shim passes them): 64 lowercase hex digits. The
/// id becomes part of paths, so nothing else is accepted.
pub fn is_container_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "86fe2dd9ede5354abf8d7748403543be16bc407c15bf62f08104ff489f182b0f";

    fn argv(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn a_shim_create_call_splits_into_its_parts() {
        let inv = Invocation::parse(&argv(&format!(
            "--vimigrate-runc=/usr/sbin/runc --root /run/r/moby --log /b/log.json --log-format json \
             create --bundle /b --pid-file /b/init.pid {ID}"
        )));
        assert_eq!(inv.runc, Some(PathBuf::from("/usr/sbin/runc")));
        assert_eq!(inv.global, argv("--root /run/r/moby --log /b/log.json --log-format json"));
        assert_eq!(inv.command.as_deref(), Some("create"));
        assert_eq!(inv.arg_value("--bundle"), Some("/b"));
        assert_eq!(inv.arg_value("--pid-file"), Some("/b/init.pid"));
        assert_eq!(inv.global_value("--log"), Some("/b/log.json"));
        assert_eq!(inv.container_id(), Some(ID));
    }

    #[test]
    fn equals_forms_and_boolean_globals() {
        let inv = Invocation::parse(&argv(&format!(
            "--debug --root=/r --systemd-cgroup checkpoint --image-path=/i --work-path /w --leave-running {ID}"
        )));
        assert_eq!(inv.global, argv("--debug --root=/r --systemd-cgroup"));
        assert_eq!(inv.global_value("--root"), Some("/r"));
        assert_eq!(inv.arg_value("--image-path"), Some("/i"));
        assert!(inv.has_flag("--leave-running"));
        assert_eq!(inv.args_without("--image-path"), argv(&format!("--work-path /w --leave-running {ID}")));
        assert_eq!(inv.args_without("--work-path"), argv(&format!("--image-path=/i --leave-running {ID}")));
    }

    #[test]
    fn version_calls_and_odd_ids_have_no_container() {
        let inv = Invocation::parse(&argv("--vimigrate-runc /usr/sbin/runc --version"));
        assert_eq!(inv.runc, Some(PathBuf::from("/usr/sbin/runc")));
        assert_eq!(inv.global, argv("--version"));
        assert_eq!(inv.command, None);
        assert_eq!(inv.container_id(), None);
        let inv = Invocation::parse(&argv("start ../../etc"));
        assert_eq!(inv.container_id(), None);
    }
}
