//! Making a container's image present on the destination provider.
//!
//! Providers have no registry in common (often none at all), so the image is streamed from one
//! Docker Engine to the other: `GET /images/{name}/get` on the source piped into
//! `POST /images/load` on the destination, through a small bounded channel so that no more than a
//! few chunks are ever held in memory, whatever the image's size.

use std::time::Instant;

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
    /// The image id (`sha256:...`), the same on both providers.
    pub image_id: String,
    /// Wall-clock time of the whole call, checks included, in milliseconds.
    pub elapsed_ms: u64,
}

/// Makes `image` present on `dst` with the same image id as on `src`, streaming it from `src`
/// when `dst` lacks it or has another image under that reference (which then moves to the
/// source's image, as a `docker load` would do). `progress` is called with the running total of
/// bytes streamed, as chunks pass.
///
/// The image is exported by its reference, so its tags come along; after the load the
/// destination is checked to resolve the same reference to the same id.
pub async fn ensure_image(
    src: &Provider,
    dst: &Provider,
    image: &str,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<ImageTransfer, Error> {
    let started = Instant::now();
    let step = format!("inspect image `{image}` to copy to provider `{}`", dst.name());
    let image_id = image_id_of(src, image, step).await?;
    let step = format!("inspect image `{image}` (from provider `{}`)", src.name());
    let present = match dst.docker().inspect_image(image).await {
        Ok(found) if found.id.as_deref() == Some(image_id.as_str()) => true,
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
    let loaded = image_id_of(dst, image, step).await?;
    if loaded != image_id {
        // The reference moved on the source while it was being exported, or the load kept
        // something else under that name: either way the destination does not have our image.
        return Err(IntegrityError::Mismatch {
            what: format!("image `{image}`"),
            from: src.name().to_string(),
            to: dst.name().to_string(),
            detail: format!("id {image_id} on the source, {loaded} on the destination after loading"),
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

/// The id of `image` on `p`, naming `step` on failure.
async fn image_id_of(p: &Provider, image: &str, step: String) -> Result<String, Error> {
    let found = p.docker().inspect_image(image).await.map_err(p.api_error(step))?;
    // Docker always reports an id; were it missing, the comparisons would simply not match.
    Ok(found.id.unwrap_or_default())
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}
