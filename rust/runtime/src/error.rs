//! The wrapper's errors: each names the step that failed and keeps its cause.

use std::io;

/// A step of the wrapper's work failed.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A file or system call failed.
    #[error("{step}: {context}")]
    Io {
        /// The step, e.g. `receive`.
        step: &'static str,
        /// What was being done, e.g. "write images/pages-1.img".
        context: String,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// The peer broke the protocol or sent something unacceptable.
    #[error("{step}: {detail}")]
    Protocol {
        /// The step.
        step: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// What arrived differs from what was sent.
    #[error("verify: {what} arrived corrupted: {detail}")]
    Checksum {
        /// The entry.
        what: String,
        /// Sizes or digests that differ.
        detail: String,
    },
    /// TLS setup or handshake failed.
    #[error("{step}: TLS: {detail}")]
    Tls {
        /// The step.
        step: &'static str,
        /// rustls' message.
        detail: String,
    },
    /// The directive or the container's spec is unusable.
    #[error("directive: {0}")]
    Directive(String),
    /// runc (CRIU) failed.
    #[error("{step}: runc {command} failed ({status}){log}")]
    Runc {
        /// `dump` or `restore`.
        step: &'static str,
        /// The runc command.
        command: &'static str,
        /// Its exit status.
        status: String,
        /// The end of CRIU's log, when there is one.
        log: String,
    },
    /// The deadline of the directive passed, or the broker withdrew it.
    #[error("{step}: {detail}")]
    Abandoned {
        /// The step.
        step: &'static str,
        /// Why.
        detail: String,
    },
}

impl RuntimeError {
    /// An I/O error at `step` while doing `context`.
    pub fn io(step: &'static str, context: impl Into<String>) -> impl FnOnce(io::Error) -> RuntimeError {
        let context = context.into();
        move |source| RuntimeError::Io { step, context, source }
    }

    /// A protocol error at `step`.
    pub fn protocol(step: &'static str, detail: impl Into<String>) -> RuntimeError {
        RuntimeError::Protocol { step, detail: detail.into() }
    }

    /// The step that failed.
    pub fn step(&self) -> &'static str {
        match self {
            RuntimeError::Io { step, .. }
            | RuntimeError::Protocol { step, .. }
            | RuntimeError::Tls { step, .. }
            | RuntimeError::Runc { step, .. }
            | RuntimeError::Abandoned { step, .. } => step,
            RuntimeError::Checksum { .. } => "verify",
            RuntimeError::Directive(_) => "directive",
        }
    }

    /// Whether trying the migration again may succeed: the network or the peer failed, not the
    /// data or the checkpoint.
    pub fn is_retryable(&self) -> bool {
        match self {
            RuntimeError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::WouldBlock
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::NetworkUnreachable
                    | io::ErrorKind::HostUnreachable
            ),
            RuntimeError::Checksum { .. } | RuntimeError::Abandoned { .. } => true,
            _ => false,
        }
    }

    /// The error as the status file carries it to the broker.
    pub fn failure(&self) -> vimigrate_protocol::RuntimeFailure {
        vimigrate_protocol::RuntimeFailure::new(self.step(), self.report(), self.is_retryable())
    }

    /// The error and its causes on one line.
    pub fn report(&self) -> String {
        vimigrate_protocol::error_chain(self)
    }
}
