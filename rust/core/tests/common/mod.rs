//! What every lab test shares: the lab's connection facts and provider configurations.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;

use vimigrate_core::ProviderConfig;

/// `.lab/lab.json`, or a panic naming what is missing (`make lab-up`).
pub fn lab() -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.lab/lab.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the provider lab is not set up ({}: {e}); run `make lab-up`", path.display()));
    serde_json::from_str(&text).expect("lab.json is JSON")
}

/// The engine's configuration of lab provider `name`, with `timeout_secs` per API call.
pub fn config_with_timeout(lab: &serde_json::Value, name: &str, timeout_secs: u64) -> ProviderConfig {
    let p = &lab["providers"][name];
    serde_json::from_value(serde_json::json!({
        "name": name,
        "docker_host": p["docker_host"],
        "public_address": p["public_address"],
        "timeout_secs": timeout_secs,
    }))
    .expect("lab.json describes the provider")
}

/// The engine's configuration of lab provider `name`.
pub fn config(lab: &serde_json::Value, name: &str) -> ProviderConfig {
    config_with_timeout(lab, name, 60)
}
