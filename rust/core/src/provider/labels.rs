//! Labels vimigrate puts on the Docker objects it creates, so it only ever touches its own.

/// Present (value `"true"`) on every container and network vimigrate created.
pub const MANAGED_LABEL: &str = "io.vimigrate.managed";

/// On a network a migration created on its destination, the migration's id: what heal may remove
/// once nothing uses it (a user's own networks never carry it).
pub const MIGRATION_NETWORK_LABEL: &str = "io.vimigrate.created-by-migration";

/// Why vimigrate refuses to touch an object it did not create.
pub(crate) const NOT_MANAGED: &str = "is not managed by vimigrate";

/// The labels every object vimigrate creates carries, merged with the user's own.
pub(crate) fn with_managed(
    user: &std::collections::BTreeMap<String, String>,
) -> std::collections::HashMap<String, String> {
    let mut labels: std::collections::HashMap<String, String> =
        user.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    labels.insert(MANAGED_LABEL.to_string(), "true".to_string());
    labels
}

/// Whether `existing` carries every one of `wanted` with the same value: the object was created
/// from the same specification (e.g. the same deployment and node), so it may be reused.
pub(crate) fn includes(
    existing: Option<&std::collections::HashMap<String, String>>,
    wanted: &std::collections::BTreeMap<String, String>,
) -> bool {
    wanted.iter().all(|(k, v)| existing.and_then(|e| e.get(k)) == Some(v))
}

/// Whether a label set marks an object as created by vimigrate.
pub(crate) fn is_managed(labels: Option<&std::collections::HashMap<String, String>>) -> bool {
    labels.and_then(|l| l.get(MANAGED_LABEL)).is_some_and(|v| v == "true")
}
