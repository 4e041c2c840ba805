//! Where a provider's Docker Engine is and how to reach it safely.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::InputError;

/// Client TLS material for a Docker Engine exposed over TCP (`dockerd --tlsverify`), as files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// CA certificate that signed the daemon's certificate (PEM).
    pub ca: PathBuf,
    /// Client certificate (PEM).
    pub cert: PathBuf,
    /// Client private key (PEM). Only its path is ever shown.
    pub key: PathBuf,
}

/// How to reach one provider, as a user writes it (blueprint inputs, CLI flags, environment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// A short name used in messages and runtime properties, e.g. `provider-a`.
    pub name: String,
    /// `unix:///path/to/docker.sock` or `tcp://host:port`, as in `DOCKER_HOST`.
    pub docker_host: String,
    /// Client TLS material; required for `tcp://` unless `allow_plain_tcp` is set.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Allow `tcp://` without TLS. Off by default: an unauthenticated Docker API is root on the host.
    #[serde(default, deserialize_with = "crate::serde_strict::strict_bool")]
    pub allow_plain_tcp: bool,
    /// Seconds a single API call may take before it is abandoned.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
    /// The provider's public address, where published ports answer.
    #[serde(default)]
    pub public_address: Option<String>,
    /// Where another provider's host reaches this host's `vimigrate-runtime` for a direct
    /// transfer (a host name or address); default: `public_address`.
    #[serde(default)]
    pub transfer_address: Option<String>,
    /// The TCP port this host's runtime receives direct transfers on; 0 (default) lets it pick
    /// a free port for each migration. Set it when a firewall only opens known ports.
    #[serde(default)]
    pub transfer_port: u16,
}

fn default_timeout_secs() -> u64 {
    120
}

/// A validated endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A local unix socket.
    Unix(PathBuf),
    /// `host:port` over TCP, with client TLS unless plain TCP was explicitly allowed.
    Tcp {
        /// `host:port`.
        address: String,
        /// Client TLS material; `None` only when plain TCP was allowed.
        tls: Option<TlsFiles>,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Tcp { address, tls: Some(_) } => write!(f, "tcp://{address} (TLS)"),
            Endpoint::Tcp { address, tls: None } => write!(f, "tcp://{address} (plain)"),
        }
    }
}

impl ProviderConfig {
    /// A configuration for `name` following the Docker CLI's environment conventions:
    /// `DOCKER_HOST` (default `unix:///var/run/docker.sock`), and with `DOCKER_TLS_VERIFY` set,
    /// `ca.pem`, `cert.pem` and `key.pem` from `DOCKER_CERT_PATH` (default `~/.docker`).
    pub fn from_env(name: &str) -> Self {
        Self::from_vars(name, |var| std::env::var(var).ok())
    }

    fn from_vars(name: &str, var: impl Fn(&str) -> Option<String>) -> Self {
        let docker_host =
            var("DOCKER_HOST").filter(|h| !h.is_empty()).unwrap_or_else(|| "unix:///var/run/docker.sock".to_string());
        let tls_verify = var("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty() && v != "0");
        let tls = tls_verify.then(|| {
            let dir = var("DOCKER_CERT_PATH")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(var("HOME").unwrap_or_default()).join(".docker"));
            TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem") }
        });
        ProviderConfig {
            name: name.to_string(),
            docker_host,
            tls,
            allow_plain_tcp: false,
            timeout_secs: default_timeout_secs(),
            public_address: None,
            transfer_address: None,
            transfer_port: 0,
        }
    }

    /// Checks every field and returns the endpoint to connect to.
    pub fn endpoint(&self) -> Result<Endpoint, InputError> {
        if self.name.trim().is_empty() {
            return Err(InputError::new("name", "a non-empty provider name", &self.name));
        }
        if self.timeout_secs == 0 || self.timeout_secs > 3600 {
            return Err(InputError::new("timeout_secs", "seconds in 1..=3600", self.timeout_secs));
        }
        let host = self.docker_host.trim();
        if let Some(path) = host.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(InputError::new(
                    "docker_host",
                    "an absolute socket path after unix://, e.g. unix:///var/run/docker.sock",
                    host,
                ));
            }
            if self.tls.is_some() {
                return Err(InputError::new("tls", "no TLS material for a unix socket", "TLS files"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if let Some(address) = host.strip_prefix("tcp://") {
            let valid_port =
                address.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !valid_port || address.contains('/') {
                return Err(InputError::new("docker_host", "tcp://HOST:PORT, e.g. tcp://203.0.113.7:2376", host));
            }
            if self.tls.is_none() && !self.allow_plain_tcp {
                return Err(InputError::new(
                    "tls",
                    "client TLS files (ca, cert, key) for a tcp:// endpoint, or allow_plain_tcp: true",
                    "none",
                ));
            }
            return Ok(Endpoint::Tcp { address: address.to_string(), tls: self.tls.clone() });
        }
        Err(InputError::new("docker_host", "unix:///path/to/docker.sock or tcp://HOST:PORT", host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(host: &str) -> ProviderConfig {
        ProviderConfig { docker_host: host.into(), ..ProviderConfig::from_vars("p", |_| None) }
    }

    #[test]
    fn unix_socket() {
        assert_eq!(config("unix:///run/x.sock").endpoint(), Ok(Endpoint::Unix("/run/x.sock".into())));
    }

    #[test]
    fn relative_unix_path_is_rejected() {
        let err = config("unix://run/x.sock").endpoint().unwrap_err();
        assert_eq!(err.field, "docker_host");
    }

    #[test]
    fn plain_tcp_needs_explicit_permission() {
        let err = config("tcp://10.0.0.1:2375").endpoint().unwrap_err();
        assert_eq!(err.field, "tls");
        let allowed = ProviderConfig { allow_plain_tcp: true, ..config("tcp://10.0.0.1:2375") };
        assert_eq!(allowed.endpoint().unwrap().to_string(), "tcp://10.0.0.1:2375 (plain)");
    }

    #[test]
    fn tcp_without_port_is_rejected() {
        let with_tls = |h: &str| ProviderConfig {
            tls: Some(TlsFiles { ca: "ca".into(), cert: "c".into(), key: "k".into() }),
            ..config(h)
        };
        assert_eq!(with_tls("tcp://host").endpoint().unwrap_err().field, "docker_host");
        assert_eq!(with_tls("tcp://host:0").endpoint().unwrap_err().field, "docker_host");
        assert!(with_tls("tcp://host:2376").endpoint().is_ok());
    }

    #[test]
    fn unknown_scheme_is_rejected() {
        assert_eq!(config("http://x:1").endpoint().unwrap_err().field, "docker_host");
        assert_eq!(config("").endpoint().unwrap_err().field, "docker_host");
    }

    #[test]
    fn docker_env_conventions() {
        let vars = |k: &str| match k {
            "DOCKER_HOST" => Some("tcp://h:2376".to_string()),
            "DOCKER_TLS_VERIFY" => Some("1".to_string()),
            "DOCKER_CERT_PATH" => Some("/certs".to_string()),
            _ => None,
        };
        let cfg = ProviderConfig::from_vars("p", vars);
        assert_eq!(cfg.docker_host, "tcp://h:2376");
        assert_eq!(cfg.tls.as_ref().unwrap().key, PathBuf::from("/certs/key.pem"));
        assert!(cfg.endpoint().is_ok());
        let default = ProviderConfig::from_vars("p", |_| None);
        assert_eq!(default.docker_host, "unix:///var/run/docker.sock");
        assert_eq!(default.tls, None);
    }

    #[test]
    fn zero_timeout_is_rejected() {
        let cfg = ProviderConfig { timeout_secs: 0, ..config("unix:///x.sock") };
        assert_eq!(cfg.endpoint().unwrap_err().field, "timeout_secs");
    }
}
