//! Helper containers: created and never started, they give the archive endpoints access to a
//! host directory (a checkpoint) through a bind mount, so that checkpoint images move through
//! the Docker API only, with nothing installed on the provider hosts.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::CreateContainerOptionsBuilder;

use crate::error::Error;
use crate::provider::labels::MANAGED_LABEL;
use crate::provider::Provider;

/// Marks helper containers, so that a later run can find and remove any left behind.
pub(crate) const HELPER_LABEL: &str = "io.vimigrate.helper";
/// The container a helper serves (empty for the host-wide ones): what heal cleans after it.
pub(crate) const HELPER_FOR_LABEL: &str = "io.vimigrate.helper.for";

impl Provider {
    /// Creates a never-started container from `image` that bind-mounts `host_dir` at
    /// `mount_point` (read-only when `read_only`). Any image present on the provider works:
    /// nothing in it runs.
    pub(crate) async fn create_helper(
        &self,
        name: &str,
        image: &str,
        host_dir: &str,
        mount_point: &str,
        read_only: bool,
        serves: &str,
    ) -> Result<String, Error> {
        let mode = if read_only { "ro" } else { "rw" };
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            // Never started; a command is given only because images without CMD refuse creation.
            cmd: Some(vec!["/vimigrate-helper-is-never-started".to_string()]),
            entrypoint: Some(vec![]),
            labels: Some(HashMap::from([
                (MANAGED_LABEL.to_string(), "true".to_string()),
                (HELPER_LABEL.to_string(), "true".to_string()),
                (HELPER_FOR_LABEL.to_string(), serves.to_string()),
            ])),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                binds: Some(vec![format!("{host_dir}:{mount_point}:{mode}")]),
                network_mode: Some("none".to_string()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(name).build();
        let created = self
            .docker()
            .create_container(Some(options), body)
            .await
            .map_err(self.api_error(format!("create helper container `{name}` for {host_dir}")))?;
        Ok(created.id)
    }
}
