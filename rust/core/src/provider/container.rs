//! Finding and removing containers on a provider. Lookups by name go through the container list
//! where a start may be in progress: unlike an inspect, a list never waits for it.

use std::collections::HashMap;

use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::RemoveContainerOptionsBuilder;

use crate::error::{is_not_found, Error, ProviderError};
use crate::provider::labels::{self, NOT_MANAGED};
use crate::provider::Provider;

impl Provider {
    /// Kills `container` (a managed one) if it runs, keeping it; `false` when it did not run or
    /// is gone.
    pub async fn kill_container(&self, name: &str) -> Result<bool, Error> {
        match self.docker().kill_container(name, None::<bollard::query_parameters::KillContainerOptions>).await {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            // 409: it does not run.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) => Ok(false),
            Err(e) => Err(self.api_error(format!("kill container `{name}`"))(e)),
        }
    }

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

    /// Removes a container whatever its labels say (a helper, or the migrated source once its
    /// service runs elsewhere). Returns `false` when it was already gone.
    pub(crate) async fn force_remove(&self, container: &str) -> Result<bool, Error> {
        let options = RemoveContainerOptionsBuilder::default().force(true).v(false).build();
        match self.docker().remove_container(container, Some(options)).await {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(self.api_error(format!("remove container `{container}`"))(e)),
        }
    }

    /// Host ports published by running containers, with the container that holds each:
    /// `(port, protocol) -> container name`.
    pub async fn published_ports(&self) -> Result<HashMap<(u16, String), String>, Error> {
        let containers = self
            .docker()
            .list_containers(None::<bollard::query_parameters::ListContainersOptions>)
            .await
            .map_err(self.api_error("list running containers"))?;
        let mut taken = HashMap::new();
        for container in containers {
            let name = container.names.and_then(|n| n.first().cloned()).unwrap_or_default();
            for port in container.ports.unwrap_or_default() {
                if let Some(public) = port.public_port {
                    let protocol = port.typ.map(|t| t.to_string()).unwrap_or_else(|| "tcp".to_string());
                    taken.insert((public, protocol), name.trim_start_matches('/').to_string());
                }
            }
        }
        Ok(taken)
    }

    /// The containers named exactly `name` (at most one), from the container list: unlike an
    /// inspect, a list never waits for a container's start in progress.
    pub(crate) async fn containers_named(&self, name: &str) -> Result<Vec<bollard::models::ContainerSummary>, Error> {
        let filters = HashMap::from([("name".to_string(), vec![format!("^/{name}$")])]);
        let options =
            bollard::query_parameters::ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        self.docker()
            .list_containers(Some(options))
            .await
            .map_err(self.api_error(format!("list containers named `{name}`")))
    }

    /// Whether a container named `name` exists (in any state).
    pub(crate) async fn container_exists(&self, name: &str) -> Result<bool, Error> {
        Ok(!self.containers_named(name).await?.is_empty())
    }

    pub(crate) async fn inspect_container_raw(&self, name: &str) -> Result<Option<ContainerInspectResponse>, Error> {
        match self.docker().inspect_container(name, None).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(self.api_error(format!("inspect container `{name}`"))(e)),
        }
    }
}
