//! Making a container's image present on the destination provider.
//!
//! Providers have no registry in common (often none at all), so the image is streamed from one
//! Docker Engine to the other: `GET /images/{name}/get` on the source piped into
//! `POST /images/load` on the destination, through a small bounded channel so that no more than a
//! few chunks are ever held in memory, whatever the image's size.
//!
//! An image's id is not the same thing on every engine: with Docker's graph drivers it is the
//! digest of the image's configuration, with the containerd image store (Docker 29's default,
//! `features.containerd-snapshotter` before) the digest of its manifest, which a load rebuilds.
//! So two providers have the same image when the ids are equal or, across stores, when what the
//! configuration digest covers is equal: the layers' content digests (diff ids), creation time,
//! platform and run configuration ([`same_image`]).

use std::time::Instant;

use bollard::models::ImageInspect;
use bollard::query_parameters::ImportImageOptions;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::{is_not_found, Error, IntegrityError};
use crate::provider::Provider;

/// Chunks in flight between the export and the load: enough to keep both connections busy,
/// small enough that memory stays bounded (hyper's chunks are at most a few tens of KiB).
const CHUNKS_IN_FLIGHT: usize = 16;

/// What [`ensure_image`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageTransfer {
    /// The image reference, as given.
    pub image: String,
    /// Whether the image had to be streamed (false: the destination already had it).
    pub transferred: bool,
    /// Bytes of image archive streamed (0 when nothing was transferred).
    pub bytes: u64,
    /// The image id (`sha256:...`) on the source (the destination's differs when one of them keeps
    /// images in containerd; the content is the same, see [`same_image`]).
    pub image_id: String,
    /// Wall-clock time of the whole call, checks included, in milliseconds.
    pub elapsed_ms: u64,
}

/// Makes `image` present on `dst` as the same image as on `src` ([`same_image`]), streaming it
/// from `src` when `dst` lacks it or has another image under that reference (which then moves to
/// the source's image, as a `docker load` would do). `progress` is called with the running total
/// of bytes streamed, as chunks pass.
///
/// The image is exported by its reference, so its tags come along; after the load the
/// destination is checked to resolve the same reference to the same image.
pub async fn ensure_image(
    src: &Provider,
    dst: &Provider,
    image: &str,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<ImageTransfer, Error> {
    let started = Instant::now();
    let step = format!("inspect image `{image}` to copy to provider `{}`", dst.name());
    let original = inspect_of(src, image, step).await?;
    let image_id = original.id.clone().unwrap_or_default();
    let step = format!("inspect image `{image}` (from provider `{}`)", src.name());
    let present = match dst.docker().inspect_image(image).await {
        Ok(found) if same_image(&original, &found) => true,
        Ok(found) => {
            // Loading moves the reference to the source's image; whatever held it stays, untagged.
            tracing::warn!(image, dst = dst.name(), other = ?found.id, "destination has another image under this reference");
            false
        }
        Err(e) if is_not_found(&e) => false,
        Err(e) => return Err(dst.api_error(step)(e)),
    };
    if present {
        tracing::debug!(image, %image_id, src = src.name(), dst = dst.name(), "image already present");
        return Ok(ImageTransfer {
            image: image.to_string(),
            transferred: false,
            bytes: 0,
            image_id,
            elapsed_ms: millis(started),
        });
    }

    let bytes = stream_image(src, dst, image, progress).await?;

    let step = format!("verify image `{image}` loaded from provider `{}`", src.name());
    let loaded = inspect_of(dst, image, step).await?;
    if !same_image(&original, &loaded) {
        // The reference moved on the source while it was being exported, or the load kept
        // something else under that name: either way the destination does not have our image.
        return Err(IntegrityError::Mismatch {
            what: format!("image `{image}`"),
            from: src.name().to_string(),
            to: dst.name().to_string(),
            detail: format!(
                "id {image_id} on the source, {} on the destination after loading",
                loaded.id.as_deref().unwrap_or("none")
            ),
        }
        .into());
    }
    let elapsed_ms = millis(started);
    tracing::info!(image, %image_id, bytes, elapsed_ms, src = src.name(), dst = dst.name(), "image transferred");
    Ok(ImageTransfer { image: image.to_string(), transferred: true, bytes, image_id, elapsed_ms })
}

/// The `(os, architecture)` of `image` on `p`, as the image records them (e.g. `linux`, `amd64`;
/// empty when the image does not say).
pub async fn image_platform(p: &Provider, image: &str) -> Result<(String, String), Error> {
    let found = p.docker().inspect_image(image).await.map_err(p.api_error(format!("inspect image `{image}`")))?;
    Ok((found.os.unwrap_or_default(), found.architecture.unwrap_or_default()))
}

/// Pipes the export from `src` into a load on `dst`; returns the bytes streamed.
async fn stream_image(
    src: &Provider,
    dst: &Provider,
    image: &str,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<u64, Error> {
    // The load's request body must be a 'static stream, but `progress` is only borrowed: this
    // function pumps the export into a channel itself (counting and reporting as it goes) and the
    // load reads the other end.
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHUNKS_IN_FLIGHT);
    let body = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) });
    let options = ImportImageOptions { quiet: true, ..Default::default() };
    let mut load = dst.docker().import_image_stream(options, body, None);

    let export_step = format!("export image `{image}` to provider `{}`", dst.name());
    let pump = async move {
        let mut export = src.docker().export_image(image);
        let mut total = 0u64;
        while let Some(chunk) = export.next().await {
            match chunk {
                Ok(chunk) => {
                    total += chunk.len() as u64;
                    progress(total);
                    if tx.send(Ok(chunk)).await.is_err() {
                        // The load ended early; its response says why.
                        break;
                    }
                }
                Err(e) => {
                    // Fail the request body too, so the destination discards a partial archive
                    // instead of loading what it got.
                    let _ = tx.send(Err(std::io::Error::other("the source's export failed"))).await;
                    return Err(src.api_error(export_step)(e));
                }
            }
        }
        Ok(total)
    };

    let load_step = format!("load image `{image}` from provider `{}`", src.name());
    let drain = async {
        let mut loaded = Vec::new();
        while let Some(message) = load.next().await {
            // bollard turns an `errorDetail` in the stream into an error already.
            let message = message.map_err(dst.api_error(load_step.clone()))?;
            if let Some(line) = message.stream.as_deref().map(str::trim).filter(|l| !l.is_empty()) {
                loaded.push(line.to_string());
            }
        }
        Ok::<_, Error>(loaded)
    };

    let (pumped, loaded) = futures_util::future::join(pump, drain).await;
    // An export failure also fails the load; it is the cause, so it is the error reported.
    let total = pumped?;
    let loaded = loaded?;
    tracing::debug!(image, total, ?loaded, dst = dst.name(), "image loaded");
    Ok(total)
}

/// `image` as `p` describes it, naming `step` on failure.
async fn inspect_of(p: &Provider, image: &str, step: String) -> Result<ImageInspect, Error> {
    p.docker().inspect_image(image).await.map_err(p.api_error(step))
}

/// Whether two engines' descriptions of an image are the same image: the same id, or (an id being
/// a manifest digest in containerd's image store and a configuration digest with graph drivers)
/// the same layers by content, creation time, platform and run configuration: the fields the
/// configuration digest covers, but for the build history, which does not change what runs.
/// An image without layers or creation time is only ever the same by id.
pub fn same_image(one: &ImageInspect, other: &ImageInspect) -> bool {
    if one.id.is_some() && one.id == other.id {
        return true;
    }
    fn layers(i: &ImageInspect) -> Option<&Vec<String>> {
        i.root_fs.as_ref().and_then(|r| r.layers.as_ref()).filter(|l| !l.is_empty())
    }
    layers(one).is_some()
        && one.created.is_some()
        && layers(one) == layers(other)
        && one.created == other.created
        && one.os == other.os
        && one.architecture == other.architecture
        && one.variant == other.variant
        && one.config == other.config
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ImageConfig, ImageInspectRootFs};

    fn image(id: &str, layers: &[&str], created: &str, cmd: &str) -> ImageInspect {
        ImageInspect {
            id: Some(id.to_string()),
            created: Some(created.to_string()),
            os: Some("linux".into()),
            architecture: Some("amd64".into()),
            root_fs: Some(ImageInspectRootFs {
                typ: "layers".into(),
                layers: Some(layers.iter().map(|l| l.to_string()).collect()),
            }),
            config: Some(ImageConfig { cmd: Some(vec![cmd.to_string()]), ..Default::default() }),
            ..Default::default()
        }
    }

    #[test]
    fn the_same_image_under_a_graph_driver_id_and_a_containerd_manifest_id() {
        let graph = image("sha256:config", &["sha256:l1", "sha256:l2"], "2026-12-02T19:23:23Z", "sh");
        let containerd = image("sha256:manifest", &["sha256:l1", "sha256:l2"], "2026-12-02T19:23:23Z", "sh");
        assert!(same_image(&graph, &containerd));
        assert!(same_image(&containerd, &graph));
    }

    #[test]
    fn another_layer_time_or_configuration_is_another_image() {
        let one = image("sha256:a", &["sha256:l1"], "2026-12-02T19:23:23Z", "sh");
        assert!(!same_image(&one, &image("sha256:b", &["sha256:l2"], "2026-12-02T19:23:23Z", "sh")));
        assert!(!same_image(&one, &image("sha256:b", &["sha256:l1"], "2026-12-02T19:23:24Z", "sh")));
        assert!(!same_image(&one, &image("sha256:b", &["sha256:l1"], "2026-12-02T19:23:23Z", "bash")));
        let mut arm = image("sha256:b", &["sha256:l1"], "2026-12-02T19:23:23Z", "sh");
        arm.architecture = Some("arm64".into());
        assert!(!same_image(&one, &arm));
    }

    #[test]
    fn without_layers_only_the_id_says_it_is_the_same() {
        let bare = ImageInspect { id: Some("sha256:a".into()), ..Default::default() };
        assert!(same_image(&bare, &bare.clone()));
        assert!(!same_image(&bare, &ImageInspect { id: Some("sha256:b".into()), ..Default::default() }));
    }
}
