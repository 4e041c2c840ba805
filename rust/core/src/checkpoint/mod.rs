//! Checkpointing a container with CRIU through Docker, and restoring it from a checkpoint (this
//! file); proving that a provider can do both ([`criu_probe`]); and what CRIU does with TCP
//! connections, set on the hosts for Docker's path ([`criu_options`]).
//!
//! Checkpoints live where the daemon keeps them by default,
//! `<DockerRootDir>/containers/<full id>/checkpoints/<name>`: Docker 20.10 refuses a restore
//! from any other directory (403 "custom checkpointdir is not supported"), so a checkpoint
//! taken there can be restored on the same daemon (a rollback) without copying, and a migration
//! copies it to the same place on the destination ([`Provider::checkpoint_parent_dir`]).

pub mod criu_options;
pub mod criu_probe;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bollard::container::{CreateCheckpointOptions, DeleteCheckpointOptions, ListCheckpointsOptions};
use bollard::query_parameters::StartContainerOptions;
use bollard::BollardRequest;

use crate::error::{is_not_found, Error, InputError};
use crate::provider::Provider;

/// Longest checkpoint name accepted: it becomes a directory name (NAME_MAX).
const MAX_CHECKPOINT_NAME: usize = 255;

/// Sent as the body of a restore whose `checkpoint` query could not be added. Docker refuses a
/// start with a non-empty body (400, "starting container with non-empty request body was
/// deprecated since API v1.22 and removed in v1.24") without starting anything.
const REFUSE_START_BODY: &[u8] = br#"{"vimigrate":"the checkpoint query could not be added; refusing a plain start"}"#;

/// How many times a restore is tried when containerd's content store races (see
/// [`is_content_store_race`]).
const RESTORE_ATTEMPTS: u32 = 3;
/// The pause before the second attempt; doubled before the third.
const RESTORE_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// Whether a restore failed on a race in containerd's content store, not on the checkpoint:
/// Docker 20.10 uploads the checkpoint to containerd before restoring, and that upload
/// intermittently fails with "failed to upload checkpoint to containerd: commit failed: content
/// sha256:...: already exists" although the store holds no such content (moby/moby#42900; seen
/// here on about one restore in five of a small container restored right after its
/// checkpoint). It fails before the task is created, so the container is still stopped and the
/// same restore succeeds when tried again.
fn is_content_store_race(err: &bollard::errors::Error) -> bool {
    matches!(
        err,
        bollard::errors::Error::DockerResponseServerError { status_code: 500, message }
            if message.contains("failed to upload checkpoint to containerd") && message.contains("already exists")
    )
}

/// Checks a checkpoint name against Docker's own rule (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`: at least
/// two characters; Docker 20.10 answers 500 "Invalid checkpoint ID" to a single one). Checking
/// it here reports the mistake as bad input, and guarantees that the name can be put in a
/// request URI's query and a file path unescaped.
pub(crate) fn validate_checkpoint_name(name: &str) -> Result<(), InputError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && (2..=MAX_CHECKPOINT_NAME).contains(&name.len()) {
        Ok(())
    } else {
        Err(InputError::new(
            "checkpoint",
            format!("2 to {MAX_CHECKPOINT_NAME} characters from [A-Za-z0-9_.-], starting with a letter or digit"),
            name,
        ))
    }
}

/// `uri` with `checkpoint=NAME` added to its query. `name` must have passed
/// [`validate_checkpoint_name`], so it needs no percent-encoding.
fn with_checkpoint_query(uri: &str, name: &str) -> String {
    let separator = match uri.find('?') {
        None => "?",
        Some(at) if at + 1 == uri.len() => "",
        Some(_) => "&",
    };
    format!("{uri}{separator}checkpoint={name}")
}

/// Adds `checkpoint=NAME` to a start request's URI. If the new URI does not parse, the request
/// is given a body that makes Docker refuse the start and `refused` is set: sending it
/// unchanged would start the container's command afresh instead of restoring it.
fn add_checkpoint_query(mut request: BollardRequest, name: &str, refused: &AtomicBool) -> BollardRequest {
    let rewritten = with_checkpoint_query(&request.uri().to_string(), name);
    match rewritten.parse() {
        Ok(uri) => *request.uri_mut() = uri,
        Err(_) => {
            tracing::error!(uri = %rewritten, "cannot add the checkpoint query to a start request; making it fail");
            refused.store(true, Ordering::SeqCst);
            *request.body_mut() = bollard::body_full(bytes::Bytes::from_static(REFUSE_START_BODY));
        }
    }
    request
}

impl Provider {
    /// Checkpoints the running container `container` as `name` and stops it (CRIU dumps the
    /// process tree, then Docker leaves the container exited). The checkpoint lands in the
    /// daemon's default place (see [`Provider::checkpoint_parent_dir`]), readable by root only,
    /// where [`Provider::start_from_checkpoint`] on this provider finds it.
    ///
    /// A CRIU failure comes back from Docker as a 500 carrying CRIU's message, kept as the
    /// cause of the returned error.
    pub async fn create_checkpoint(&self, container: &str, name: &str) -> Result<(), Error> {
        validate_checkpoint_name(name)?;
        let options = CreateCheckpointOptions { checkpoint_id: name.to_string(), checkpoint_dir: None, exit: true };
        let started = std::time::Instant::now();
        self.docker()
            .create_checkpoint(container, options)
            .await
            .map_err(self.api_error(format!("checkpoint container `{container}` as `{name}`")))?;
        tracing::debug!(provider = %self.name(), container, checkpoint = name, elapsed_ms = started.elapsed().as_millis() as u64, "checkpointed");
        Ok(())
    }

    /// Starts the stopped container `container` by restoring checkpoint `name`
    /// (`POST /containers/{id}/start?checkpoint=NAME`); the checkpoint must be in the daemon's
    /// default place for that container.
    ///
    /// bollard's start options have no `checkpoint` field, so this call goes through a clone of
    /// the client whose request modifier adds the query to this one request. The name is
    /// validated first, which guarantees the rewritten URI parses; should the rewrite fail
    /// anyway, the request is made to fail (Docker refuses a start with a body) rather than
    /// sent without the query: a plain start would launch the container's command afresh, a
    /// second copy of a service that is meant to resume where it was frozen.
    ///
    /// A missing checkpoint is refused by Docker (500, "checkpoint NAME does not exist") and
    /// leaves the container stopped. A spurious "already exists" from containerd's content
    /// store, which also leaves it stopped, is retried (twice, after 200 and 400 ms).
    pub async fn start_from_checkpoint(&self, container: &str, name: &str) -> Result<(), Error> {
        validate_checkpoint_name(name)?;
        let refused = Arc::new(AtomicBool::new(false));
        let docker = {
            let refused = Arc::clone(&refused);
            let name = name.to_string();
            self.docker().clone().with_request_modifier(move |request| add_checkpoint_query(request, &name, &refused))
        };
        let started = std::time::Instant::now();
        let mut attempt = 1;
        let result = loop {
            let result = docker.start_container(container, None::<StartContainerOptions>).await;
            match result {
                Err(ref e) if attempt < RESTORE_ATTEMPTS && is_content_store_race(e) => {
                    tracing::warn!(provider = %self.name(), container, checkpoint = name, attempt, error = %e, "containerd refused the checkpoint upload; retrying the restore");
                    tokio::time::sleep(RESTORE_RETRY_PAUSE * attempt).await;
                    attempt += 1;
                }
                other => break other,
            }
        };
        if let Err(source) = result {
            let step = if refused.load(Ordering::SeqCst) {
                format!(
                    "restore container `{container}` from checkpoint `{name}` (the checkpoint could not be added to the \
                     request, so the start was refused on purpose)"
                )
            } else {
                format!("restore container `{container}` from checkpoint `{name}`")
            };
            return Err(self.api_error(step)(source));
        }
        tracing::debug!(provider = %self.name(), container, checkpoint = name, elapsed_ms = started.elapsed().as_millis() as u64, "restored");
        Ok(())
    }

    /// Deletes checkpoint `name` of `container`. Returns `false` when it was already gone,
    /// including when the container itself is gone (its checkpoints went with it).
    pub async fn delete_checkpoint(&self, container: &str, name: &str) -> Result<bool, Error> {
        validate_checkpoint_name(name)?;
        // Docker answers a missing checkpoint with a 500, indistinguishable by status from a
        // real failure: look first, and look again after a failure, instead of parsing messages.
        if !self.has_checkpoint(container, name).await? {
            return Ok(false);
        }
        match self.docker().delete_checkpoint(container, name, None::<DeleteCheckpointOptions>).await {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => {
                if !self.has_checkpoint(container, name).await? {
                    // Someone else deleted it between the two calls.
                    return Ok(false);
                }
                Err(self.api_error(format!("delete checkpoint `{name}` of container `{container}`"))(e))
            }
        }
    }

    /// The names of the checkpoints of `container` in the daemon's default place, sorted.
    pub async fn list_checkpoints(&self, container: &str) -> Result<Vec<String>, Error> {
        let found = self
            .docker()
            .list_checkpoints(container, None::<ListCheckpointsOptions>)
            .await
            .map_err(self.api_error(format!("list checkpoints of container `{container}`")))?;
        let mut names: Vec<String> = found.into_iter().map(|c| c.name).collect();
        names.sort();
        Ok(names)
    }

    /// The directory on the provider's host where a restore on this daemon looks for the
    /// checkpoints of `container`: `<DockerRootDir>/containers/<full id>/checkpoints`.
    pub async fn checkpoint_parent_dir(&self, container: &str) -> Result<String, Error> {
        Ok(format!("{}/checkpoints", self.container_dir(container).await?))
    }

    /// Whether `container` has checkpoint `name`; `false` when the container is gone.
    async fn has_checkpoint(&self, container: &str, name: &str) -> Result<bool, Error> {
        match self.docker().list_checkpoints(container, None::<ListCheckpointsOptions>).await {
            Ok(found) => Ok(found.iter().any(|c| c.name == name)),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(self.api_error(format!("list checkpoints of container `{container}`"))(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_names_follow_dockers_rule() {
        for good in ["cp", "vimigrate-1", "a.b_c-d", "0x", &"a".repeat(255)] {
            assert!(validate_checkpoint_name(good).is_ok(), "{good:?}");
        }
        for bad in ["", "x", "-cp", ".cp", "_cp", "cp/x", "../cp", "cp x", "cp&x=1", "cp?", "é1", &"a".repeat(256)] {
            let err = validate_checkpoint_name(bad).unwrap_err();
            assert_eq!(err.field, "checkpoint", "{bad:?}");
        }
    }

    #[test]
    fn checkpoint_query_is_added_or_appended() {
        let base = "unix://2f72756e/v1.41/containers/web/start";
        assert_eq!(with_checkpoint_query(base, "cp1"), format!("{base}?checkpoint=cp1"));
        assert_eq!(with_checkpoint_query(&format!("{base}?"), "cp1"), format!("{base}?checkpoint=cp1"));
        assert_eq!(
            with_checkpoint_query(&format!("{base}?detachKeys=ctrl-x"), "cp1"),
            format!("{base}?detachKeys=ctrl-x&checkpoint=cp1")
        );
    }

    #[test]
    fn only_the_content_store_race_is_retried() {
        let server = |status_code, message: &str| bollard::errors::Error::DockerResponseServerError {
            status_code,
            message: message.to_string(),
        };
        let race = "failed to upload checkpoint to containerd: commit failed: content sha256:cbea34a4: already exists";
        assert!(is_content_store_race(&server(500, race)));
        assert!(!is_content_store_race(&server(500, "checkpoint cp1 does not exist for container /web")));
        assert!(!is_content_store_race(&server(500, "criu failed: type NOTIFY errno 0")));
        assert!(!is_content_store_race(&bollard::errors::Error::RequestTimeoutError));
    }

    fn start_request() -> BollardRequest {
        let mut request = BollardRequest::new(bollard::body_full(bytes::Bytes::new()));
        *request.uri_mut() = "unix://2f72756e/v1.41/containers/web/start".parse().unwrap();
        request
    }

    #[test]
    fn request_modifier_adds_the_query() {
        let refused = AtomicBool::new(false);
        let request = add_checkpoint_query(start_request(), "cp1", &refused);
        assert_eq!(request.uri().to_string(), "unix://2f72756e/v1.41/containers/web/start?checkpoint=cp1");
        assert!(!refused.load(Ordering::SeqCst));
    }

    #[test]
    fn unparsable_query_makes_the_start_fail_instead_of_starting_fresh() {
        let refused = AtomicBool::new(false);
        // A name that skipped validation: a space cannot be in a URI.
        let request = add_checkpoint_query(start_request(), "bad name", &refused);
        assert!(refused.load(Ordering::SeqCst));
        // The body (not inspectable here: bollard's body type has no Debug) makes Docker answer
        // 400 without starting; `refused` lets the caller say so.
        assert!(!request.uri().to_string().contains("checkpoint"));
    }
}
