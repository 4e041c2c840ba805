//! Streaming copies between providers through the Docker API's archive endpoints, digested on
//! the way so that what arrived can be checked against what was sent.
//!
//! `GET /containers/{id}/archive?path=P` answers a tar of `P` whose top entry is `P`'s base name
//! (`data/`, `data/blob`, ... for `/data`; `./`, `./blob`, ... for `/data/.`), and
//! `PUT /containers/{id}/archive?path=D` extracts a tar into the existing directory `D`. Both work
//! on containers that were created and never started (Docker mounts their volumes and binds for
//! the call), which is how vimigrate reads and writes checkpoint directories: through a helper
//! container bind-mounting them.

use std::time::{Duration, Instant};

use bollard::query_parameters::{DownloadFromContainerOptionsBuilder, UploadToContainerOptionsBuilder};
use bytes::Bytes;
use futures_util::future::Either;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::error::{Error, IntegrityError, ProviderError};
use crate::provider::Provider;
use crate::transfer::tar::manifest::TarManifest;
use crate::transfer::tar::reader::TarManifestBuilder;
use vimigrate_protocol::DUMP_STATS_FILE;

/// Chunks queued between the download and the upload. Docker sends chunks of at most a few tens
/// of KiB, so this bounds the memory a copy holds to about a megabyte, whatever its size.
const QUEUED_CHUNKS: usize = 16;

/// The request timeout given to the upload. Docker answers a `PUT .../archive` only after the
/// whole body has arrived, so the provider's per-call timeout would cap the size of a copy;
/// instead each chunk must move within that timeout (a stall is an error), and the answer must
/// come within it once the body has been sent.
const UPLOAD_REQUEST_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// The outcome of [`copy_archive`].
#[derive(Debug, Clone)]
pub struct CopyReport {
    /// Bytes of the tar stream moved (headers and padding included).
    pub bytes: u64,
    /// What the stream held, digested on the way; CRIU's `stats-dump` is captured when present.
    pub manifest: TarManifest,
    /// Time from the first request to the destination's answer.
    pub elapsed: Duration,
}

/// How the download side of a copy ended.
enum Pumped {
    /// The whole stream was read, digested and (unless the destination stopped reading early)
    /// handed to the upload.
    Done { bytes: u64, manifest: TarManifest },
    /// Reading from the source failed; the upload body was ended with an error.
    ReadFailed(bollard::errors::Error),
    /// The stream is not a complete, well-formed tar; the upload body was ended with an error.
    Corrupt(IntegrityError),
    /// The destination took no chunk for a whole timeout.
    WriteStalled,
}

/// The body chunks handed to the upload; an `Err` makes the HTTP client abort the request, so
/// the destination never takes a cut stream for a complete one.
type Chunk = Result<Bytes, std::io::Error>;

/// Reads `download` to its end, feeding every chunk to `builder`, to `progress` (total bytes so
/// far) and to `tx`. A read failure, a stall or a malformed stream ends the body with an error
/// rather than cleanly. If the destination stops reading (it answered early), the rest is still
/// digested, so the manifest always describes the whole source.
async fn pump<S>(
    download: S,
    tx: mpsc::Sender<Chunk>,
    mut builder: TarManifestBuilder,
    progress: &(dyn Fn(u64) + Send + Sync),
    read_stall: Duration,
    write_stall: Duration,
) -> Pumped
where
    S: Stream<Item = Result<Bytes, bollard::errors::Error>>,
{
    let mut download = std::pin::pin!(download);
    let mut bytes = 0u64;
    let mut sender = Some(tx);
    // Ends the upload body with an error. If it cannot be queued in time, the caller drops the
    // upload request, which aborts it just as well.
    async fn abort(sender: Option<mpsc::Sender<Chunk>>, why: String, wait: Duration) {
        if let Some(tx) = sender {
            let _ = tokio::time::timeout(wait, tx.send(Err(std::io::Error::other(why)))).await;
        }
    }
    loop {
        let next = match tokio::time::timeout(read_stall, download.next()).await {
            Ok(next) => next,
            Err(_) => Some(Err(bollard::errors::Error::RequestTimeoutError)),
        };
        let chunk = match next {
            Some(Ok(chunk)) => chunk,
            Some(Err(err)) => {
                abort(sender, format!("reading the source failed: {err}"), write_stall).await;
                return Pumped::ReadFailed(err);
            }
            None => break,
        };
        if let Err(err) = builder.update(&chunk) {
            abort(sender, err.to_string(), write_stall).await;
            return Pumped::Corrupt(err);
        }
        bytes += chunk.len() as u64;
        if let Some(tx) = &sender {
            match tokio::time::timeout(write_stall, tx.send(Ok(chunk))).await {
                Ok(Ok(())) => {}
                // The upload dropped its body: it has answered. Its answer decides the outcome.
                Ok(Err(_)) => sender = None,
                Err(_) => return Pumped::WriteStalled,
            }
        }
        progress(bytes);
    }
    match builder.finish() {
        Ok(manifest) => {
            // Dropping the sender ends the body cleanly: only now is the stream known complete.
            drop(sender);
            Pumped::Done { bytes, manifest }
        }
        Err(err) => {
            abort(sender, err.to_string(), write_stall).await;
            Pumped::Corrupt(err)
        }
    }
}

/// Adds where a malformed stream was read from to its description.
fn in_context(err: IntegrityError, provider: &Provider, container: &str, path: &str) -> IntegrityError {
    match err {
        IntegrityError::Tar(detail) => IntegrityError::Tar(format!(
            "{detail}, reading `{path}` from container `{container}` on provider `{}`",
            provider.name()
        )),
        other => other,
    }
}

/// The error for a stall or a timeout, with its step named.
fn timed_out(provider: &Provider, step: String) -> Error {
    ProviderError::Api {
        provider: provider.name().to_string(),
        step,
        source: bollard::errors::Error::RequestTimeoutError,
    }
    .into()
}

/// Copies `src_path` of `src_container` on `src` into the existing directory `dst_dir` of
/// `dst_container` on `dst`, streaming: the download is piped into the upload through a small
/// bounded queue and never held whole in memory. Every chunk is digested on the way, and
/// `progress` is called with the number of bytes moved so far.
///
/// Docker's archive of a directory `/x/name` holds `name/...`, so the copy lands at
/// `dst_dir/name`. Either container may be created and never started.
///
/// A download that fails midway ends the upload with an error (the destination does not take a
/// cut stream for a whole one) and is returned as the read step's error; a stream that ends
/// before tar's end-of-archive marker is an [`IntegrityError::Tar`]. Each chunk must be read
/// and written within the providers' timeouts, but the copy as a whole has no time limit.
pub async fn copy_archive(
    src: &Provider,
    src_container: &str,
    src_path: &str,
    dst: &Provider,
    dst_container: &str,
    dst_dir: &str,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<CopyReport, Error> {
    let started = Instant::now();
    let read_step = format!(
        "read `{src_path}` from container `{src_container}` (copying to `{dst_dir}` of container `{dst_container}` on provider `{}`)",
        dst.name()
    );
    let write_step = format!(
        "write into `{dst_dir}` of container `{dst_container}` (copying `{src_path}` from container `{src_container}` on provider `{}`)",
        src.name()
    );
    let download = src.docker().download_from_container(
        src_container,
        Some(DownloadFromContainerOptionsBuilder::new().path(src_path).build()),
    );
    let (tx, rx) = mpsc::channel::<Chunk>(QUEUED_CHUNKS);
    let body = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|chunk| (chunk, rx)) });
    let uploader = dst.docker().clone().with_timeout(UPLOAD_REQUEST_TIMEOUT);
    let upload = uploader.upload_to_container(
        dst_container,
        Some(UploadToContainerOptionsBuilder::new().path(dst_dir).build()),
        bollard::body_try_stream(body),
    );
    let read_stall = src.docker().timeout();
    let answer_wait = dst.docker().timeout();
    let builder = TarManifestBuilder::new().capture(DUMP_STATS_FILE);
    let pumping = pump(download, tx, builder, progress, read_stall, answer_wait);

    let (pumped, uploaded) = match futures_util::future::select(Box::pin(pumping), Box::pin(upload)).await {
        Either::Left((pumped, upload)) => {
            let uploaded = match &pumped {
                // The upload is left to fail on its aborted body, so that the destination has
                // seen the failure when this returns; its own error says less than the source's.
                Pumped::ReadFailed(_) | Pumped::Corrupt(_) => {
                    if let Ok(Ok(())) = tokio::time::timeout(answer_wait, upload).await {
                        tracing::warn!(
                            provider = dst.name(),
                            container = dst_container,
                            path = dst_dir,
                            "the destination accepted an aborted archive upload"
                        );
                    }
                    Ok(())
                }
                // Reported below; dropping the upload aborts it.
                Pumped::WriteStalled => Ok(()),
                Pumped::Done { .. } => match tokio::time::timeout(answer_wait, upload).await {
                    Ok(result) => result.map_err(dst.api_error(write_step.clone())),
                    Err(_) => Err(timed_out(dst, write_step.clone())),
                },
            };
            (pumped, uploaded)
        }
        // The destination answered before the source was fully read: an error (the container or
        // directory is missing, ...), or success once it found tar's end marker. In the first case
        // the download is dropped, which cancels it; in the second the rest is still digested.
        Either::Right((Err(err), _pumping)) => return Err(dst.api_error(write_step)(err)),
        Either::Right((Ok(()), pumping)) => (pumping.await, Ok(())),
    };
    match pumped {
        Pumped::ReadFailed(err) => Err(src.api_error(read_step)(err)),
        Pumped::Corrupt(err) => Err(in_context(err, src, src_container, src_path).into()),
        Pumped::WriteStalled => Err(timed_out(dst, write_step)),
        Pumped::Done { bytes, manifest } => {
            uploaded?;
            let elapsed = started.elapsed();
            tracing::debug!(
                from = src.name(),
                to = dst.name(),
                path = src_path,
                bytes,
                files = manifest.entries.len(),
                ?elapsed,
                "archive copied"
            );
            Ok(CopyReport { bytes, manifest, elapsed })
        }
    }
}

/// Downloads `path` of `container` and digests it without storing it: what a copy's
/// destination actually holds, to compare with what was sent.
pub async fn read_manifest(provider: &Provider, container: &str, path: &str) -> Result<TarManifest, Error> {
    let step = format!("read `{path}` from container `{container}`");
    let download = provider
        .docker()
        .download_from_container(container, Some(DownloadFromContainerOptionsBuilder::new().path(path).build()));
    let mut download = std::pin::pin!(download);
    let mut builder = TarManifestBuilder::new().capture(DUMP_STATS_FILE);
    let stall = provider.docker().timeout();
    loop {
        let chunk = match tokio::time::timeout(stall, download.next()).await {
            Err(_) => return Err(timed_out(provider, step)),
            Ok(None) => break,
            Ok(Some(chunk)) => chunk.map_err(provider.api_error(step.clone()))?,
        };
        builder.update(&chunk).map_err(|e| in_context(e, provider, container, path))?;
    }
    builder.finish().map_err(|e| in_context(e, provider, container, path).into())
}

/// Checks that `dst_path` of `dst_container` on `dst` holds exactly the tree `sent` describes
/// (same paths, kinds, sizes, digests and link targets). When the top directory is named
/// differently there (e.g. a checkpoint renamed on the way), `sent` is compared as rebased onto
/// the destination's name. A difference is an [`IntegrityError::Mismatch`] naming `what` and
/// listing the differing files.
pub async fn verify_copy(
    sent: &TarManifest,
    dst: &Provider,
    dst_container: &str,
    dst_path: &str,
    what: &str,
) -> Result<(), Error> {
    let found = read_manifest(dst, dst_container, dst_path).await?;
    let rebased;
    let expected = match (sent.top_level(), found.top_level()) {
        (Some(from), Some(to)) if from != to => {
            rebased = sent.rebased(from, to);
            &rebased
        }
        _ => sent,
    };
    let differences = expected.differences(&found);
    if differences.is_empty() {
        return Ok(());
    }
    Err(IntegrityError::Mismatch {
        what: what.to_string(),
        from: "what was sent".to_string(),
        to: format!("`{dst_path}` of container `{dst_container}` on provider `{}`", dst.name()),
        detail: differences.join("; "),
    }
    .into())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::transfer::tar::tests::TarWriter;

    fn sample() -> Vec<u8> {
        let blob: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        TarWriter::default().dir("cp1/").file("cp1/pages-1.img", &blob).file("cp1/stats-dump", b"stats").end()
    }

    /// The source stream as Docker's client yields it: chunks, then maybe an error.
    fn source(
        data: &[u8],
        chunk: usize,
        fail_after: Option<usize>,
    ) -> impl Stream<Item = Result<Bytes, bollard::errors::Error>> {
        let mut items: Vec<Result<Bytes, bollard::errors::Error>> =
            data.chunks(chunk).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        if let Some(n) = fail_after {
            items.truncate(n);
            items.push(Err(bollard::errors::Error::IOError { err: std::io::Error::other("connection reset") }));
        }
        futures_util::stream::iter(items)
    }

    /// Runs `pump` with a reader on the other end of the queue, as the upload would be.
    async fn run(data: &[u8], fail_after: Option<usize>) -> (Pumped, Vec<Chunk>, Vec<u64>) {
        let (tx, mut rx) = mpsc::channel(QUEUED_CHUNKS);
        let seen = Mutex::new(Vec::new());
        let progress = |n| seen.lock().map(|mut s| s.push(n)).unwrap_or(());
        let reader = async {
            let mut got = Vec::new();
            while let Some(chunk) = rx.recv().await {
                got.push(chunk);
            }
            got
        };
        let second = Duration::from_secs(1);
        let (pumped, got) = tokio::join!(
            pump(
                source(data, 1000, fail_after),
                tx,
                TarManifestBuilder::new().capture("stats-dump"),
                &progress,
                second,
                second
            ),
            reader
        );
        (pumped, got, seen.into_inner().unwrap_or_default())
    }

    #[tokio::test]
    async fn a_complete_stream_ends_the_body_cleanly() {
        let data = sample();
        let (pumped, got, progress) = run(&data, None).await;
        let Pumped::Done { bytes, manifest } = pumped else { panic!("the pump did not finish") };
        assert_eq!(bytes, data.len() as u64);
        assert_eq!(manifest.captured["cp1/stats-dump"], b"stats");
        assert!(got.iter().all(|c| c.is_ok()));
        let body: Vec<u8> = got.into_iter().flatten().flat_map(|b| b.to_vec()).collect();
        assert_eq!(body, data);
        assert!(progress.windows(2).all(|w| w[0] < w[1]), "{progress:?}");
        assert_eq!(progress.last(), Some(&bytes));
    }

    #[tokio::test]
    async fn a_failed_download_ends_the_body_with_an_error() {
        let data = sample();
        let (pumped, got, _) = run(&data, Some(20)).await;
        assert!(matches!(pumped, Pumped::ReadFailed(_)));
        let last = got.last().expect("chunks were sent");
        assert!(last.as_ref().is_err_and(|e| e.to_string().contains("connection reset")), "{last:?}");
    }

    #[tokio::test]
    async fn a_stream_that_stops_early_ends_the_body_with_an_error() {
        let data = sample();
        // The source ends cleanly at an entry boundary, before the end-of-archive marker: the
        // kind of cut the destination's tar reader would not notice.
        let cut = &data[..data.len() - 1024];
        let (pumped, got, _) = run(cut, None).await;
        assert!(matches!(pumped, Pumped::Corrupt(IntegrityError::Tar(_))));
        assert!(got.last().is_some_and(|c| c.is_err()));
    }

    #[test]
    fn copy_futures_are_send() {
        fn is_send<T: Send>(_: &T) {}
        let provider: Option<&Provider> = None;
        if let Some(p) = provider {
            is_send(&copy_archive(p, "a", "/a", p, "b", "/", &|_| {}));
            is_send(&read_manifest(p, "a", "/a"));
            is_send(&verify_copy(&TarManifest::default(), p, "b", "/b", "x"));
        }
    }
}
