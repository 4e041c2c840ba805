//! One migration of a container at a time, whichever broker runs it.
//!
//! The lock is a never-started container named `vimigrate-lock-<container>` on the provider the
//! container runs on: Docker creates a name at most once, so creating it is an atomic
//! test-and-set that every broker reaching that provider sees, with no state of our own
//! anywhere. Its labels say who holds it, since when and for which migration. A broker that dies
//! leaves it behind: the next migration is refused with that information until `heal` (which
//! finds where the container really runs first) removes it.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::CreateContainerOptionsBuilder;

use crate::error::{Error, ProviderError};
use crate::provider::helper::HELPER_LABEL;
use crate::provider::labels::MANAGED_LABEL;
use crate::provider::Provider;

/// Marks lock containers.
pub(crate) const LOCK_LABEL: &str = "io.vimigrate.lock";
const OWNER_LABEL: &str = "io.vimigrate.lock.owner";
const SINCE_LABEL: &str = "io.vimigrate.lock.since";
const MIGRATION_LABEL: &str = "io.vimigrate.lock.migration";
const DESTINATION_LABEL: &str = "io.vimigrate.lock.destination";
/// The members of the group the locked container moves with (comma-separated names), on each
/// member's lock: heal settles them together.
const GROUP_LABEL: &str = "io.vimigrate.lock.group";

/// What a lock records of the migration that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LockRecord {
    /// The migration's checkpoint name.
    pub migration: String,
    /// The destination provider's name.
    pub destination: String,
    /// The containers of its group, this one included; empty for a migration alone.
    pub group: Vec<String>,
}

/// The name of the lock of container `name`.
pub(crate) fn lock_name(name: &str) -> String {
    format!("vimigrate-lock-{name}")
}

/// Who takes a lock: this process on this host.
fn owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("pid {} on {}", std::process::id(), host.trim())
}

/// A held lock; [`MigrationLock::release`] removes it.
#[derive(Debug)]
pub(crate) struct MigrationLock {
    provider: Provider,
    id: String,
}

impl Provider {
    /// Takes the migration lock of container `name` (running `image`, which any lock container
    /// can be created from), moving with `group` (empty: alone). A held lock is a `Conflict`
    /// naming its holder.
    pub(crate) async fn lock_migration(
        &self,
        name: &str,
        image: &str,
        migration: &str,
        destination: &str,
        group: &[String],
    ) -> Result<MigrationLock, Error> {
        let since =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(vec!["/vimigrate-lock-is-never-started".to_string()]),
            entrypoint: Some(vec![]),
            labels: Some(HashMap::from([
                (MANAGED_LABEL.to_string(), "true".to_string()),
                (HELPER_LABEL.to_string(), "true".to_string()),
                (LOCK_LABEL.to_string(), name.to_string()),
                (OWNER_LABEL.to_string(), owner()),
                (SINCE_LABEL.to_string(), since.to_string()),
                (MIGRATION_LABEL.to_string(), migration.to_string()),
                (DESTINATION_LABEL.to_string(), destination.to_string()),
                (GROUP_LABEL.to_string(), group.join(",")),
            ])),
            network_disabled: Some(true),
            host_config: Some(HostConfig { network_mode: Some("none".to_string()), ..Default::default() }),
            ..Default::default()
        };
        let lock = lock_name(name);
        let options = CreateContainerOptionsBuilder::default().name(&lock).build();
        match self.docker().create_container(Some(options), body).await {
            Ok(created) => Ok(MigrationLock { provider: self.clone(), id: created.id }),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => {
                Err(self.lock_conflict(name, &lock).await)
            }
            Err(e) => Err(self.api_error(format!("take the migration lock `{lock}`"))(e)),
        }
    }

    async fn lock_conflict(&self, name: &str, lock: &str) -> Error {
        let labels = self
            .inspect_container_raw(lock)
            .await
            .ok()
            .flatten()
            .and_then(|c| c.config)
            .and_then(|c| c.labels)
            .unwrap_or_default();
        let get = |key: &str| labels.get(key).cloned().unwrap_or_else(|| "?".into());
        let since: u64 = get(SINCE_LABEL).parse().unwrap_or(0);
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default();
        ProviderError::Busy {
            provider: self.name().to_string(),
            container: name.to_string(),
            detail: format!(
                "migration {} to {} by {}, started {} s ago; wait for it to finish, or run heal if that process died",
                get(MIGRATION_LABEL),
                get(DESTINATION_LABEL),
                get(OWNER_LABEL),
                now.saturating_sub(since)
            ),
        }
        .into()
    }

    /// What the lock of container `name` here records, `None` without one.
    pub(crate) async fn lock_record(&self, name: &str) -> Result<Option<LockRecord>, Error> {
        let Some(lock) = self.inspect_container_raw(&lock_name(name)).await? else { return Ok(None) };
        let labels = lock.config.and_then(|c| c.labels).unwrap_or_default();
        let get = |key: &str| labels.get(key).cloned().unwrap_or_default();
        let group = get(GROUP_LABEL).split(',').filter(|m| !m.is_empty()).map(str::to_string).collect();
        Ok(Some(LockRecord { migration: get(MIGRATION_LABEL), destination: get(DESTINATION_LABEL), group }))
    }

    /// Removes the lock of container `name`, whoever holds it (heal, after it made sure no
    /// migration of it is still running). Returns whether there was one.
    pub(crate) async fn break_migration_lock(&self, name: &str) -> Result<bool, Error> {
        self.force_remove(&lock_name(name)).await
    }
}

impl MigrationLock {
    /// Gives the lock up.
    pub(crate) async fn release(self) {
        if let Err(e) = self.provider.force_remove(&self.id).await {
            tracing::warn!(provider = %self.provider.name(), error = %e.report(), "migration lock left behind; heal removes it");
        }
    }
}
