//! Reading and writing single files of a container through the archive endpoints: its declared
//! peer files (rewritten when peer addresses change), the direct path's directives and statuses
//! (through a helper container that mounts the container's directory).

use bollard::query_parameters::{DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder};
use futures_util::TryStreamExt;

use crate::error::{is_not_found, Error, IntegrityError};
use crate::provider::Provider;
use crate::transfer::tar::reader::TarManifestBuilder;
use crate::transfer::tar::writer::single_file_tar;
use vimigrate_protocol::rewrite_addresses;

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
