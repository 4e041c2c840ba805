//! Removing a container vimigrate created.

use bollard::query_parameters::RemoveContainerOptionsBuilder;

use crate::error::{is_not_found, Error, ProviderError};
use crate::provider::labels::{self, NOT_MANAGED};
use crate::provider::Provider;

impl Provider {
    /// Kills and removes the container called `name`. Returns `false` when it was already gone.
    /// Refuses to remove a container vimigrate did not create.
    pub async fn remove_container(&self, name: &str) -> Result<bool, Error> {
        let Some(found) = self.inspect_container_raw(name).await? else {
            return Ok(false);
        };
        if !labels::is_managed(found.config.as_ref().and_then(|c| c.labels.as_ref())) {
            return Err(ProviderError::NameTaken {
                provider: self.name().to_string(),
                what: "container",
                name: name.to_string(),
                reason: NOT_MANAGED,
            }
            .into());
        }
        // force: PID 1 of a container ignores SIGTERM from outside, so a graceful stop would
        // only wait out the timeout; the volumes are kept (they may hold the user's data).
        let options = RemoveContainerOptionsBuilder::default().force(true).v(false).build();
        match self.docker().remove_container(name, Some(options)).await {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(self.api_error(format!("remove container `{name}`"))(e)),
        }
    }
}
