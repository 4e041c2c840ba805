//! Errors where containerd looks for them: runc's JSON log file (`--log`). When a runtime
//! call fails, containerd reports the last `error` line of that file, so a failed restore shows
//! up in `docker start`'s error as the wrapper's own message.

use std::fs::OpenOptions;
use std::io::Write;
use std::time::SystemTime;

use vimigrate_protocol::rfc3339::format_rfc3339;

/// One log line in runc's format.
pub fn error_line(message: &str) -> String {
    let line = serde_json::json!({
        "level": "error",
        "msg": format!("vimigrate-runtime: {message}"),
        "time": format_rfc3339(SystemTime::now()),
    });
    format!("{line}\n")
}

/// Appends `message` as an error to the log file at `path` (if any) and to stderr.
pub fn log_error(path: Option<&str>, message: &str) {
    eprintln!("vimigrate-runtime: {message}");
    let Some(path) = path else { return };
    if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(path) {
        let _ = file.write_all(error_line(message).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_what_containerd_parses() {
        let line = error_line("restore: runc restore failed");
        let value: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(value["level"], "error");
        assert_eq!(value["msg"], "vimigrate-runtime: restore: runc restore failed");
        assert!(vimigrate_protocol::rfc3339::parse_rfc3339_ns(value["time"].as_str().unwrap()).is_some());
    }
}
