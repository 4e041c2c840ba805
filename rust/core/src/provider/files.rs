//! Reading and writing single files through the archive endpoints: a container's declared
//! config files (rewritten when peer addresses change) and, through a helper container, the
//! provider host's CRIU options for runc.

use bollard::query_parameters::{DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder};
use futures_util::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{is_not_found, Error, IntegrityError};
use crate::provider::Provider;
use crate::transfer::tar::manifest::TarManifestBuilder;
use crate::transfer::tar::writer::single_file_tar;
use vimigrate_protocol::rewrite_addresses;

/// Where runc's CRIU reads its options on a provider host.
const RUNC_CRIU_DIR: &str = "/etc/criu";
const RUNC_CRIU_FILE: &str = "runc.conf";

/// What CRIU does with established TCP connections, set for a migration on both hosts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CriuTcp {
    /// `tcp-established` when every network keeps its addresses (connections between
    /// containers that move together survive), `tcp-close` otherwise (they come back closed and
    /// the peers reconnect).
    #[default]
    Auto,
    /// Always `tcp-established`.
    Established,
    /// Always `tcp-close`.
    Close,
    /// Leave the hosts' `/etc/criu/runc.conf` as it is.
    Host,
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The directory holding `path` (`/` for a top-level entry): where the archive endpoints put it.
pub(crate) fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

impl Provider {
    /// The content of the file at `path` in `container`, or `None` when it does not exist.
    pub(crate) async fn read_file(&self, container: &str, path: &str) -> Result<Option<Vec<u8>>, Error> {
        let options = DownloadFromContainerOptionsBuilder::default().path(path).build();
        let mut stream = self.docker().download_from_container(container, Some(options));
        let name = base_name(path);
        let mut reader = TarManifestBuilder::new().capture(name);
        loop {
            match stream.try_next().await {
                Ok(Some(chunk)) => reader.update(&chunk)?,
                Ok(None) => break,
                Err(e) if is_not_found(&e) => return Ok(None),
                Err(e) => return Err(self.api_error(format!("read `{path}` from container `{container}`"))(e)),
            }
        }
        let mut manifest = reader.finish()?;
        match manifest.captured.remove(name) {
            Some(content) => Ok(Some(content)),
            None => Err(IntegrityError::Tar(format!("`{path}` is not a regular file of at most 1 MiB")).into()),
        }
    }

    /// Extracts the tar archive `tar` at `path` in `container` (`PUT /containers/{id}/archive`).
    pub(crate) async fn put_archive(&self, container: &str, path: &str, tar: Vec<u8>) -> Result<(), Error> {
        let options = UploadToContainerOptionsBuilder::default().path(path).build();
        self.docker()
            .upload_to_container(container, Some(options), bollard::body_full(tar.into()))
            .await
            .map_err(self.api_error(format!("write into `{path}` of container `{container}`")))
    }

    /// Writes `content` as the file at `path` in `container` (mode 0644).
    pub(crate) async fn write_file(&self, container: &str, path: &str, content: &[u8]) -> Result<(), Error> {
        let tar = single_file_tar(base_name(path), 0o644, content);
        let options = UploadToContainerOptionsBuilder::default().path(parent(path)).build();
        self.docker()
            .upload_to_container(container, Some(options), bollard::body_full(tar.into()))
            .await
            .map_err(self.api_error(format!("write `{path}` into container `{container}`")))
    }

    /// Rewrites the peer addresses of `map` in the file at `path` of a (running) container, in
    /// place: how a container that stays learns where a peer went. Returns how many addresses
    /// were replaced; the file is not touched when there were none.
    pub async fn rewrite_file(
        &self,
        container: &str,
        path: &str,
        map: &std::collections::BTreeMap<String, String>,
    ) -> Result<usize, Error> {
        let Some(content) = self.read_file(container, path).await? else {
            return Err(crate::error::InputError::new("path", "a file in the container", path).into());
        };
        let (rewritten, count) = rewrite_addresses(&String::from_utf8_lossy(&content), map);
        if count > 0 {
            self.write_file(container, path, rewritten.as_bytes()).await?;
        }
        Ok(count)
    }

    /// Sets the TCP option of runc-driven CRIU runs on this provider's host to `option`
    /// (`tcp-established` or `tcp-close`) through a helper container that bind-mounts
    /// `/etc/criu` (Docker 20.10 passes no per-container CRIU options; this file is what runc's
    /// CRIU reads). Returns the file's previous content, for [`Provider::restore_criu_options`].
    pub(crate) async fn set_criu_tcp_option(&self, image: &str, option: &str) -> Result<Option<Vec<u8>>, Error> {
        let helper = self.criu_options_helper(image).await?;
        let result = async {
            let previous = self.read_file(&helper, &format!("/vimigrate-criu/{RUNC_CRIU_FILE}")).await?;
            let text = previous.as_deref().map(String::from_utf8_lossy).unwrap_or_default();
            let mut lines: Vec<&str> = text
                .lines()
                .filter(|l| !matches!(l.trim(), "tcp-established" | "tcp-close" | "skip-in-flight"))
                .collect();
            lines.push(option);
            // A server under load always has connections in its accept queue; CRIU refuses to
            // dump those ("In-flight connection") unless told to drop them. Their clients see a
            // reset or retry, as with any restart, while the accepted connections follow `option`.
            lines.push("skip-in-flight");
            let content = format!("{}\n", lines.join("\n"));
            self.write_file(&helper, &format!("/vimigrate-criu/{RUNC_CRIU_FILE}"), content.as_bytes()).await?;
            Ok(previous)
        }
        .await;
        if let Err(e) = self.force_remove(&helper).await {
            tracing::warn!(provider = %self.name(), error = %e.report(), "helper container left behind");
        }
        result
    }

    /// Puts back what [`Provider::set_criu_tcp_option`] found (an absent file comes back empty).
    pub(crate) async fn restore_criu_options(&self, image: &str, previous: Option<Vec<u8>>) -> Result<(), Error> {
        let helper = self.criu_options_helper(image).await?;
        let content = previous.unwrap_or_default();
        let result = self.write_file(&helper, &format!("/vimigrate-criu/{RUNC_CRIU_FILE}"), &content).await;
        if let Err(e) = self.force_remove(&helper).await {
            tracing::warn!(provider = %self.name(), error = %e.report(), "helper container left behind");
        }
        result
    }

    async fn criu_options_helper(&self, image: &str) -> Result<String, Error> {
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        self.create_helper(
            &format!("vimigrate-helper-criu-{unique}"),
            image,
            RUNC_CRIU_DIR,
            "/vimigrate-criu",
            false,
            "",
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split() {
        assert_eq!(base_name("/etc/web/web.conf"), "web.conf");
        assert_eq!(parent("/etc/web/web.conf"), "/etc/web");
        assert_eq!(parent("/x"), "/");
    }
}
