//! Failures while reading or changing a zone. Each names the server (its address, never a
//! credential) and the step, and keeps its cause.

/// A failure talking to a zone's authoritative server or its API.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The server could not be reached (connection refused, network unreachable...).
    #[error("DNS server {server}: {step} failed: cannot reach it")]
    Unreachable {
        /// The server's address.
        server: String,
        /// The step, e.g. "update of zone vi.test.".
        step: String,
        /// What the socket reported.
        #[source]
        source: std::io::Error,
    },
    /// The server did not answer in time.
    #[error("DNS server {server}: {step} timed out after {secs} s")]
    Timeout {
        /// The server's address.
        server: String,
        /// The step.
        step: String,
        /// The timeout, in seconds.
        secs: u64,
    },
    /// The server does not accept our credentials (TSIG NOTAUTH/BADSIG/BADKEY, HTTP 401/403),
    /// or its answer is not signed with them.
    #[error("DNS server {server}: {step} was denied: {reason}")]
    Denied {
        /// The server's address.
        server: String,
        /// The step.
        step: String,
        /// Why, e.g. "NOTAUTH: the TSIG key name, algorithm or secret does not match the server's".
        reason: String,
    },
    /// The server refused the request (REFUSED: not allowed by its policy).
    #[error("DNS server {server}: {step} was refused (REFUSED): {reason}")]
    Refused {
        /// The server's address.
        server: String,
        /// The step.
        step: String,
        /// What is probably wrong.
        reason: String,
    },
    /// The server answered with another error code.
    #[error("DNS server {server}: {step} failed with {rcode}")]
    Rcode {
        /// The server's address.
        server: String,
        /// The step.
        step: String,
        /// The response code, e.g. "SERVFAIL".
        rcode: String,
    },
    /// A message could not be encoded, or the answer could not be decoded.
    #[error("DNS server {server}: {step} failed: malformed DNS message")]
    Protocol {
        /// The server's address.
        server: String,
        /// The step.
        step: String,
        /// What the DNS library reported.
        #[source]
        source: hickory_proto::ProtoError,
    },
    /// An HTTP exchange with the API failed before a response arrived.
    #[error("DNS API {server}: {step} failed")]
    Http {
        /// The API's base URL.
        server: String,
        /// The step.
        step: String,
        /// What the HTTP client reported (connection refused, timeout...).
        #[source]
        source: reqwest::Error,
    },
    /// The API answered with an error status.
    #[error("DNS API {server}: {step} failed with HTTP {status}: {body}")]
    Api {
        /// The API's base URL.
        server: String,
        /// The step.
        step: String,
        /// The HTTP status.
        status: u16,
        /// The start of the response body (credentials removed).
        body: String,
    },
}
