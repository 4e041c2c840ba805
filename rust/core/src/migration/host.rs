//! The narrow seam between the migration's orchestration and a provider: the few operations the
//! phase sequence, the rollback and the cleanup do on a host themselves (the checkpoint paths do
//! the rest). [`Provider`] implements it over Docker's API; the orchestration's unit tests
//! implement it in memory (`fake.rs`), so that every rollback path runs in milliseconds, without
//! root or a daemon.
//!
//! The methods return `impl Future + Send` rather than being `async fn`, so that the generic
//! orchestration's own future is provably `Send` (the Python binding runs it on a thread pool).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::migration::clone::CloneChanges;
use crate::migration::source::SourceContainer;
use crate::network::map::NetworkDecision;
use crate::provider::image::ensure_image;
use crate::provider::Provider;

/// Called with the running total of bytes a step moved.
pub(crate) type BytesProgress<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// One provider, as the orchestration sees it.
pub(crate) trait Host: Sync {
    /// The provider's name, for messages.
    fn name(&self) -> &str;

    /// Makes `image` present here with the id it has on `src`, streamed from there when missing;
    /// returns the bytes streamed.
    fn ensure_image_from(
        &self,
        src: &Self,
        image: &str,
        progress: BytesProgress<'_>,
    ) -> impl Future<Output = Result<u64, Error>> + Send;

    /// Whether a network of that name exists here.
    fn network_exists(&self, name: &str) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Creates (never starts) the destination container of `source`, with the networks
    /// `decisions` create; returns its id.
    fn create_destination(
        &self,
        source: &SourceContainer,
        decisions: &[NetworkDecision],
        changes: &CloneChanges,
    ) -> impl Future<Output = Result<String, Error>> + Send;

    /// Whether `container` runs; `false` when it is gone.
    fn is_running(&self, container: &str) -> impl Future<Output = Result<bool, Error>> + Send;

    /// The container's IPv4 address on each network, `None` when it is gone.
    fn addresses(
        &self,
        container: &str,
    ) -> impl Future<Output = Result<Option<BTreeMap<String, String>>, Error>> + Send;

    /// Kills and removes `container` whatever it is (a helper, the migrated source); `false`
    /// when it was gone already.
    fn remove_container(&self, container: &str) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Kills `container` if it runs, keeping it; `false` when it did not run.
    fn kill_container(&self, container: &str) -> impl Future<Output = Result<bool, Error>> + Send;

    /// The names of the checkpoints of `container`, sorted.
    fn checkpoints(&self, container: &str) -> impl Future<Output = Result<Vec<String>, Error>> + Send;

    /// Deletes checkpoint `name` of `container`; `false` when it was gone already.
    fn delete_checkpoint(&self, container: &str, name: &str) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Removes a network a migration created, unless containers still use it; `false` when it
    /// stayed or was gone.
    fn remove_unused_network(&self, name: &str) -> impl Future<Output = Result<bool, Error>> + Send;

    /// Puts back the host's CRIU options as they were before the migration set its TCP option
    /// (`previous`: the file's content then, `None` when there was none).
    fn restore_criu_options(
        &self,
        image: &str,
        previous: Option<Vec<u8>>,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}

/// Kills `container` and waits up to `patience` until it is seen stopped (a kill only sends
/// the signal): `Ok(true)` once it is; `Ok(false)` when it still runs then, or the kill's own
/// error if that failed.
pub(crate) async fn kill_and_wait<H: Host>(host: &H, container: &str, patience: Duration) -> Result<bool, Error> {
    let killed = host.kill_container(container).await;
    let deadline = Instant::now() + patience;
    while host.is_running(container).await? {
        if Instant::now() >= deadline {
            killed?;
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(true)
}

impl Host for Provider {
    fn name(&self) -> &str {
        Provider::name(self)
    }

    async fn ensure_image_from(&self, src: &Self, image: &str, progress: BytesProgress<'_>) -> Result<u64, Error> {
        Ok(ensure_image(src, self, image, progress).await?.bytes)
    }

    async fn network_exists(&self, name: &str) -> Result<bool, Error> {
        Ok(self.inspect_network(name).await?.is_some())
    }

    async fn create_destination(
        &self,
        source: &SourceContainer,
        decisions: &[NetworkDecision],
        changes: &CloneChanges,
    ) -> Result<String, Error> {
        self.create_clone(source, decisions, changes).await
    }

    async fn is_running(&self, container: &str) -> Result<bool, Error> {
        Ok(self.inspect_deployed(container).await?.is_some_and(|c| c.running))
    }

    async fn addresses(&self, container: &str) -> Result<Option<BTreeMap<String, String>>, Error> {
        Ok(self.inspect_deployed(container).await?.map(|c| c.addresses))
    }

    async fn remove_container(&self, container: &str) -> Result<bool, Error> {
        self.force_remove(container).await
    }

    async fn kill_container(&self, container: &str) -> Result<bool, Error> {
        Provider::kill_container(self, container).await
    }

    async fn checkpoints(&self, container: &str) -> Result<Vec<String>, Error> {
        self.list_checkpoints(container).await
    }

    async fn delete_checkpoint(&self, container: &str, name: &str) -> Result<bool, Error> {
        Provider::delete_checkpoint(self, container, name).await
    }

    async fn remove_unused_network(&self, name: &str) -> Result<bool, Error> {
        self.remove_network(name, true).await
    }

    async fn restore_criu_options(&self, image: &str, previous: Option<Vec<u8>>) -> Result<(), Error> {
        Provider::restore_criu_options(self, image, previous).await
    }
}
