//! Typed errors. Every error keeps its cause and says which step failed, and
//! [`Error::kind`] tells a caller whether retrying can help.

use std::fmt;

use crate::dns::error::DnsError;

/// One field of the caller's input is wrong: names the field and what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: expected {expected}, got {got}")]
pub struct InputError {
    /// Dotted path of the field, e.g. `ports[0].container_port`.
    pub field: String,
    /// What a valid value looks like.
    pub expected: String,
    /// What was given (never a secret: secret fields are reported by name only).
    pub got: String,
}

impl InputError {
    /// Builds an error for `field`, expecting `expected`, given `got`.
    pub fn new(field: impl Into<String>, expected: impl Into<String>, got: impl fmt::Debug) -> Self {
        Self { field: field.into(), expected: expected.into(), got: format!("{got:?}") }
    }
}

/// A failure while talking to one provider's Docker Engine.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The endpoint could not be reached or refused the connection setup.
    #[error("provider `{provider}`: cannot connect to {endpoint}")]
    Connect {
        /// Provider name.
        provider: String,
        /// The endpoint as configured (no secret in it).
        endpoint: String,
        /// What the Docker client reported.
        #[source]
        source: bollard::errors::Error,
    },
    /// A Docker API call failed.
    #[error("provider `{provider}`: {step} failed{}", transport_hint(.source))]
    Api {
        /// Provider name.
        provider: String,
        /// The step that failed, e.g. "create container `web`".
        step: String,
        /// What the Docker daemon or client reported.
        #[source]
        source: bollard::errors::Error,
    },
    /// The provider lacks a capability vimigrate needs (experimental mode, a CRIU that can dump
    /// and restore, the image's architecture, the direct path's runtime): only for what a
    /// provider cannot do, never for an operation that failed.
    #[error("provider `{provider}`: {requirement} is not met: {detail}")]
    Unsuitable {
        /// Provider name.
        provider: String,
        /// The requirement, e.g. "experimental mode".
        requirement: &'static str,
        /// What was found instead.
        detail: String,
    },
    /// The two hosts differ in a way that would make the restore fail or the restored process
    /// die (a CPU feature, CRIU, a broken engine restore): named by the check, which
    /// `ignore_host_checks` can override.
    #[error("provider `{provider}`: {detail} (host check `{check}`; `ignore_host_checks: [{check}]` overrides it)")]
    HostMismatch {
        /// Provider name.
        provider: String,
        /// The check, as `ignore_host_checks` names it.
        check: &'static str,
        /// What differs.
        detail: String,
    },
    /// A step ran but did not have the effect it must have (a restored container that stopped
    /// at once, a directive that reads back different, a runtime that never reported).
    #[error("provider `{provider}`: {step} failed: {detail}")]
    Failed {
        /// Provider name (`broker` for the broker's own steps).
        provider: String,
        /// The step, e.g. "restore container `web`".
        step: String,
        /// What was found instead of the step's effect.
        detail: String,
    },
    /// Something a step relies on is not there (the checkpoint a stopped container would be
    /// resumed from).
    #[error("provider `{provider}`: {what} is missing: {detail}")]
    Missing {
        /// Provider name, or several, comma-separated.
        provider: String,
        /// What is missing, e.g. "a checkpoint to resume from".
        what: &'static str,
        /// Where it was looked for.
        detail: String,
    },
    /// A container runs nowhere and no copy holds a checkpoint with its process state (a
    /// post-copy that broke leaves dumps without memory): only a fresh start from its image
    /// can bring it back, and that loses the state, so heal does it only when asked.
    #[error(
        "provider `{provider}`: {step} is not possible: the process state of `{container}` is lost \
         ({detail}); heal with `restart_from_image` (CLI `--restart-from-image`) restarts it from its image"
    )]
    StateLost {
        /// Provider name, or several, comma-separated.
        provider: String,
        /// The step refused, e.g. "resume `web` from a checkpoint".
        step: String,
        /// The container.
        container: String,
        /// What each copy holds.
        detail: String,
    },
    /// What the providers hold contradicts an invariant the step keeps (one container running
    /// on several providers): nothing was changed, the operator decides.
    #[error("provider `{provider}`: {invariant} does not hold: {detail}")]
    Inconsistent {
        /// Provider name, or several, comma-separated.
        provider: String,
        /// The invariant, e.g. "the container runs on one provider".
        invariant: &'static str,
        /// What was found and what to do.
        detail: String,
    },
    /// Another migration of the container holds its lock.
    #[error("provider `{provider}`: container `{container}` is being migrated already: {detail}")]
    Busy {
        /// Provider name.
        provider: String,
        /// The container.
        container: String,
        /// Who holds the lock and what to do.
        detail: String,
    },
    /// A name is already used on the provider by something vimigrate may not reuse.
    #[error("provider `{provider}`: {what} `{name}` already exists and {reason}")]
    NameTaken {
        /// Provider name.
        provider: String,
        /// The kind of object, e.g. "container".
        what: &'static str,
        /// The name in use.
        name: String,
        /// Why it cannot be reused, e.g. "is not managed by vimigrate".
        reason: &'static str,
    },
}

/// Data that did not arrive intact or could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IntegrityError {
    /// A tar stream was malformed or truncated.
    #[error("malformed tar stream: {0}")]
    Tar(String),
    /// What arrived differs from what was sent.
    #[error("{what} differs between {from} and {to}: {detail}")]
    Mismatch {
        /// What was compared, e.g. "checkpoint images".
        what: String,
        /// Where it came from.
        from: String,
        /// Where it went.
        to: String,
        /// Which files differ and how.
        detail: String,
    },
    /// A CRIU image (e.g. stats-dump) could not be decoded.
    #[error(transparent)]
    CriuImage(#[from] vimigrate_protocol::CriuImageError),
}

/// A published port the destination cannot offer.
#[derive(Debug, thiserror::Error)]
#[error("provider `{provider}`: port {port}/{protocol} is already published there by container `{owner}`; {advice}")]
pub struct PortTaken {
    /// The destination provider.
    pub provider: String,
    /// The host port.
    pub port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// The container holding it.
    pub owner: String,
    /// What the user can do.
    pub advice: &'static str,
}

/// The OCI runtime wrapper (`vimigrate-runtime`) on a provider host reported a failed step of
/// the direct migration path.
#[derive(Debug, thiserror::Error)]
#[error("provider `{provider}`: vimigrate-runtime failed at step {step}: {message}")]
pub struct RuntimeStepError {
    /// The provider whose host reported it.
    pub provider: String,
    /// `connect`, `send`, `receive`, `verify`, `dump`, `restore`, ...
    pub step: String,
    /// The wrapper's message, with its causes.
    pub message: String,
    /// Whether the wrapper judged that a retry may help (a network failure, a corrupted
    /// transfer).
    pub retryable: bool,
}

/// Every error the engine returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input, found before anything changed.
    #[error(transparent)]
    Input(#[from] InputError),
    /// A provider interaction failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// Data was corrupted or malformed on its way.
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    /// A forwarding rule cannot be recreated on the destination.
    #[error(transparent)]
    PortTaken(#[from] PortTaken),
    /// A DNS server or API failed or refused a request.
    #[error(transparent)]
    Dns(#[from] DnsError),
    /// The runtime wrapper on a provider host failed a step of the direct path.
    #[error(transparent)]
    Runtime(#[from] RuntimeStepError),
}

/// Coarse classes of [`Error`], for callers that map errors to their own types
/// (the Python binding maps each to an exception class).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input is wrong; retrying the same call cannot help.
    InvalidInput,
    /// A provider or service could not be reached or timed out; a retry may help.
    Unavailable,
    /// Something named does not exist.
    NotFound,
    /// A name or resource is in use.
    Conflict,
    /// A provider lacks a capability vimigrate needs.
    Unsuitable,
    /// The provider and vimigrate do not trust each other (TLS: unknown CA, refused client
    /// certificate; DNS: wrong TSIG key or API key); retrying with the same credentials cannot help.
    AccessDenied,
    /// The provider refused or failed the request for another reason.
    Failed,
}

impl ErrorKind {
    /// Whether retrying the same operation later may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Unavailable)
    }
}

impl Error {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Input(_) => ErrorKind::InvalidInput,
            Error::Provider(ProviderError::Connect { source, .. }) if is_tls_trust_failure(source) => {
                ErrorKind::AccessDenied
            }
            Error::Provider(ProviderError::Connect { .. }) => ErrorKind::Unavailable,
            Error::Provider(ProviderError::Api { source, .. }) => docker_error_kind(source),
            Error::Provider(ProviderError::Unsuitable { .. }) => ErrorKind::Unsuitable,
            Error::Provider(ProviderError::HostMismatch { .. }) => ErrorKind::Unsuitable,
            Error::Provider(ProviderError::Failed { .. }) => ErrorKind::Failed,
            Error::Provider(ProviderError::Missing { .. }) => ErrorKind::NotFound,
            // What is missing is the state to resume from, as for a copy without any checkpoint.
            Error::Provider(ProviderError::StateLost { .. }) => ErrorKind::NotFound,
            Error::Provider(ProviderError::Inconsistent { .. }) => ErrorKind::Conflict,
            Error::Provider(ProviderError::NameTaken { .. }) => ErrorKind::Conflict,
            Error::Provider(ProviderError::Busy { .. }) => ErrorKind::Conflict,
            // A corrupted transfer may well succeed when repeated.
            Error::Integrity(IntegrityError::Mismatch { .. }) => ErrorKind::Unavailable,
            Error::Integrity(_) => ErrorKind::Failed,
            Error::PortTaken(_) => ErrorKind::Conflict,
            Error::Dns(err) => err.kind(),
            Error::Runtime(err) if err.retryable => ErrorKind::Unavailable,
            Error::Runtime(_) => ErrorKind::Failed,
        }
    }

    /// The error and all of its causes on one line, outermost first.
    pub fn report(&self) -> String {
        // `#[error(transparent)]` variants forward `source()` to the inner error's source, so the
        // chain never repeats the top-level message.
        error_chain(self)
    }
}

pub use vimigrate_protocol::error_chain;

// Here rather than in dns/error.rs: the error kinds are this module's, and dns/ only describes
// what failed.
impl DnsError {
    /// The class of this error: unreachable or slow servers may recover, bad credentials and
    /// refusals will not.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DnsError::Unreachable { .. } | DnsError::Timeout { .. } => ErrorKind::Unavailable,
            DnsError::Denied { .. } => ErrorKind::AccessDenied,
            DnsError::Refused { .. } => ErrorKind::Failed,
            DnsError::Rcode { rcode, .. } if rcode.starts_with("SERVFAIL") => ErrorKind::Unavailable,
            DnsError::Rcode { .. } | DnsError::Protocol { .. } => ErrorKind::Failed,
            DnsError::Http { source, .. } if source.is_connect() || source.is_timeout() => ErrorKind::Unavailable,
            DnsError::Http { .. } => ErrorKind::Failed,
            DnsError::Api { status, .. } => match status {
                401 | 403 => ErrorKind::AccessDenied,
                404 => ErrorKind::NotFound,
                400 | 422 => ErrorKind::InvalidInput,
                502..=504 => ErrorKind::Unavailable,
                _ => ErrorKind::Failed,
            },
        }
    }
}

/// Classifies a Docker client error by whether the daemon answered and what it said.
pub(crate) fn docker_error_kind(err: &bollard::errors::Error) -> ErrorKind {
    use bollard::errors::Error as E;
    match err {
        E::DockerResponseServerError { status_code, .. } => match status_code {
            404 => ErrorKind::NotFound,
            409 => ErrorKind::Conflict,
            400 => ErrorKind::InvalidInput,
            502..=504 => ErrorKind::Unavailable,
            _ => ErrorKind::Failed,
        },
        E::RequestTimeoutError
        | E::IOError { .. }
        | E::HyperLegacyError { .. }
        | E::HyperResponseError { .. }
        | E::SocketNotFoundError(_) => ErrorKind::Unavailable,
        _ => ErrorKind::Failed,
    }
}

/// For a call whose connection broke (not an answer of the daemon, not a certificate refused):
/// what that usually means, since the transport's own message ("connection closed before
/// message completed") does not say.
fn transport_hint(err: &bollard::errors::Error) -> &'static str {
    let transport = !matches!(err, bollard::errors::Error::DockerResponseServerError { .. })
        && docker_error_kind(err) == ErrorKind::Unavailable
        && !is_tls_trust_failure(err);
    if transport {
        " (the connection to its Docker daemon broke: the daemon stopped, is restarting, or cannot be reached)"
    } else {
        ""
    }
}

/// Whether a connection failed because one side did not trust the other's certificate. The TLS
/// stack reports it only in its message (through hyper's error), so the cause chain is read.
fn is_tls_trust_failure(err: &bollard::errors::Error) -> bool {
    let mut text = err.to_string();
    let mut cause = std::error::Error::source(err);
    while let Some(inner) = cause {
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    ["invalid peer certificate", "BadCertificate", "UnknownIssuer", "CertificateRequired", "certificate unknown"]
        .iter()
        .any(|needle| text.contains(needle))
}

/// Whether a Docker client error is the daemon's "no such object" answer.
pub(crate) fn is_not_found(err: &bollard::errors::Error) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { status_code: 404, .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_error_names_field_and_expectation() {
        let err = Error::from(InputError::new("ports[0].container_port", "a port in 1..=65535", 0));
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(err.report(), "invalid `ports[0].container_port`: expected a port in 1..=65535, got 0");
        assert!(!err.kind().is_retryable());
    }

    #[test]
    fn report_includes_the_cause() {
        let err = Error::from(ProviderError::Api {
            provider: "provider-a".into(),
            step: "create container `web`".into(),
            source: bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message: "name in use".into(),
            },
        });
        assert_eq!(err.kind(), ErrorKind::Conflict);
        let report = err.report();
        assert!(report.starts_with("provider `provider-a`: create container `web` failed: "), "{report}");
        assert!(report.contains("name in use"), "{report}");
    }

    #[test]
    fn a_broken_connection_says_what_it_usually_means() {
        let broken = Error::from(ProviderError::Api {
            provider: "provider-b".into(),
            step: "start container `web`".into(),
            source: bollard::errors::Error::RequestTimeoutError,
        });
        assert!(broken.report().contains("the connection to its Docker daemon broke"), "{}", broken.report());
        let answered = Error::from(ProviderError::Api {
            provider: "provider-b".into(),
            step: "start container `web`".into(),
            source: bollard::errors::Error::DockerResponseServerError { status_code: 503, message: "busy".into() },
        });
        assert!(!answered.report().contains("connection to its Docker daemon"), "{}", answered.report());
    }

    #[test]
    fn unreachable_daemon_is_retryable() {
        let err = Error::from(ProviderError::Connect {
            provider: "p".into(),
            endpoint: "unix:///nowhere.sock".into(),
            source: bollard::errors::Error::SocketNotFoundError("/nowhere.sock".into()),
        });
        assert!(err.kind().is_retryable());
    }
}
