//! Where a zone's authoritative server is and how to change it: RFC 2136 with TSIG, or the
//! PowerDNS Authoritative HTTP API.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use vimigrate_protocol::Secret;

use crate::dns::record::validate_fqdn;
use crate::error::InputError;

/// An authoritative server that accepts RFC 2136 dynamic updates signed with TSIG (BIND, Knot...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rfc2136Config {
    /// `host:port` of the server, e.g. `127.0.0.1:5300`; used for updates and lookups.
    pub server: String,
    /// The zone, fully qualified, e.g. `vi.test.`.
    pub zone: String,
    /// The TSIG key's name as the server knows it.
    pub tsig_key_name: String,
    /// `hmac-sha256` (default), `hmac-sha384` or `hmac-sha512`.
    #[serde(default = "default_tsig_algorithm")]
    pub tsig_algorithm: String,
    /// The TSIG secret, base64 as in a BIND key file's `secret "..."`.
    pub tsig_secret: Secret,
    /// Seconds one exchange with the server may take.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

/// A PowerDNS Authoritative server, changed through its HTTP API and read through DNS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerDnsConfig {
    /// Base URL of the API, e.g. `http://127.0.0.1:8081`.
    pub api_url: String,
    /// The API's server id, normally `localhost`.
    #[serde(default = "default_server_id")]
    pub server_id: String,
    /// The zone, fully qualified, e.g. `vi.test.`.
    pub zone: String,
    /// The API key (`X-API-Key`).
    pub api_key: Secret,
    /// `host:port` where the server answers DNS queries, e.g. `127.0.0.1:5301`; empty means the
    /// API's host on port 53.
    #[serde(default)]
    pub dns_server: String,
    /// Seconds one exchange with the server may take.
    #[serde(default = "default_timeout_secs")]
    pub timeout_secs: u64,
}

/// The authoritative server of one zone, as a user writes it: `{"kind": "rfc2136", ...}` or
/// `{"kind": "powerdns", ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DnsServerConfig {
    /// RFC 2136 dynamic updates signed with TSIG.
    Rfc2136(Rfc2136Config),
    /// The PowerDNS Authoritative HTTP API.
    Powerdns(PowerDnsConfig),
}

fn default_tsig_algorithm() -> String {
    "hmac-sha256".to_string()
}

fn default_server_id() -> String {
    "localhost".to_string()
}

fn default_timeout_secs() -> u64 {
    10
}

impl DnsServerConfig {
    /// Checks every field; the error names the field (never a secret's value).
    pub fn validate(&self) -> Result<(), InputError> {
        validate_fqdn(self.zone(), "server.zone")?;
        let timeout = match self {
            DnsServerConfig::Rfc2136(c) => {
                validate_host_port(&c.server, "server.server")?;
                if c.tsig_key_name.trim().is_empty() {
                    return Err(InputError::new("server.tsig_key_name", "the TSIG key's name", &c.tsig_key_name));
                }
                if !["hmac-sha256", "hmac-sha384", "hmac-sha512"].contains(&c.tsig_algorithm.as_str()) {
                    return Err(InputError::new(
                        "server.tsig_algorithm",
                        "hmac-sha256, hmac-sha384 or hmac-sha512",
                        &c.tsig_algorithm,
                    ));
                }
                c.tsig_key()?;
                c.timeout_secs
            }
            DnsServerConfig::Powerdns(c) => {
                let rest = c.api_url.strip_prefix("http://").or_else(|| c.api_url.strip_prefix("https://"));
                if rest.is_none_or(|r| r.trim_end_matches('/').is_empty()) {
                    return Err(InputError::new(
                        "server.api_url",
                        "http://HOST:PORT, e.g. http://127.0.0.1:8081",
                        &c.api_url,
                    ));
                }
                if c.server_id.is_empty() || c.server_id.contains('/') {
                    return Err(InputError::new(
                        "server.server_id",
                        "the API's server id, e.g. localhost",
                        &c.server_id,
                    ));
                }
                if c.api_key.expose().is_empty() {
                    return Err(InputError::new("server.api_key", "a non-empty API key", c.api_key.clone()));
                }
                if !c.dns_server.is_empty() {
                    validate_host_port(&c.dns_server, "server.dns_server")?;
                }
                c.timeout_secs
            }
        };
        if timeout == 0 || timeout > 300 {
            return Err(InputError::new("server.timeout_secs", "seconds in 1..=300", timeout));
        }
        Ok(())
    }

    /// The zone, fully qualified.
    pub fn zone(&self) -> &str {
        match self {
            DnsServerConfig::Rfc2136(c) => &c.zone,
            DnsServerConfig::Powerdns(c) => &c.zone,
        }
    }

    /// How long one exchange may take.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(match self {
            DnsServerConfig::Rfc2136(c) => c.timeout_secs,
            DnsServerConfig::Powerdns(c) => c.timeout_secs,
        })
    }

    /// `host:port` that answers DNS queries for the zone (what clients see).
    pub fn query_address(&self) -> String {
        match self {
            DnsServerConfig::Rfc2136(c) => c.server.clone(),
            DnsServerConfig::Powerdns(c) if !c.dns_server.is_empty() => c.dns_server.clone(),
            DnsServerConfig::Powerdns(c) => {
                let rest = c.api_url.split_once("://").map_or(c.api_url.as_str(), |(_, r)| r);
                let authority = rest.split('/').next().unwrap_or_default();
                let host = match authority.rsplit_once(':') {
                    Some((h, p)) if p.parse::<u16>().is_ok() => h,
                    _ => authority,
                };
                format!("{host}:53")
            }
        }
    }
}

impl Rfc2136Config {
    /// The decoded TSIG key.
    pub(crate) fn tsig_key(&self) -> Result<Vec<u8>, InputError> {
        use base64::Engine as _;
        match base64::engine::general_purpose::STANDARD.decode(self.tsig_secret.expose().trim()) {
            Ok(key) if !key.is_empty() => Ok(key),
            _ => Err(InputError::new(
                "server.tsig_secret",
                "a base64 TSIG secret, as in a BIND key file's `secret \"...\"`",
                self.tsig_secret.clone(),
            )),
        }
    }
}

fn validate_host_port(address: &str, field: &str) -> Result<(), InputError> {
    let valid = address
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && !h.contains('/') && p.parse::<u16>().is_ok_and(|p| p > 0));
    if valid {
        Ok(())
    } else {
        Err(InputError::new(field, "HOST:PORT, e.g. 127.0.0.1:53 or [::1]:53", address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const SECRET: &str = "c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1sZWFrCg==";

    fn rfc2136() -> serde_json::Value {
        serde_json::json!({
            "kind": "rfc2136", "server": "127.0.0.1:5300", "zone": "vi.test.",
            "tsig_key_name": "k", "tsig_secret": SECRET,
        })
    }

    #[test]
    fn parses_both_kinds_with_defaults() {
        let cfg: DnsServerConfig = serde_json::from_value(rfc2136()).unwrap();
        let DnsServerConfig::Rfc2136(c) = &cfg else { panic!("kind") };
        assert_eq!(c.tsig_algorithm, "hmac-sha256");
        assert!(cfg.validate().is_ok());
        let pdns: DnsServerConfig = serde_json::from_value(serde_json::json!({
            "kind": "powerdns", "api_url": "http://127.0.0.1:8081", "zone": "vi.test.", "api_key": "k",
            "dns_server": "127.0.0.1:5301",
        }))
        .unwrap();
        assert!(pdns.validate().is_ok());
        assert_eq!(pdns.query_address(), "127.0.0.1:5301");
        let DnsServerConfig::Powerdns(mut p) = pdns else { panic!("kind") };
        p.dns_server.clear();
        assert_eq!(DnsServerConfig::Powerdns(p).query_address(), "127.0.0.1:53");
    }

    #[test]
    fn unknown_fields_and_kinds_are_rejected() {
        let mut v = rfc2136();
        v["extra"] = 1.into();
        assert!(serde_json::from_value::<DnsServerConfig>(v).is_err());
        let mut v = rfc2136();
        v["kind"] = "route53".into();
        assert!(serde_json::from_value::<DnsServerConfig>(v).is_err());
    }

    #[test]
    fn bad_fields_are_named() {
        let field = |patch: serde_json::Value| {
            let mut v = rfc2136();
            for (k, val) in patch.as_object().unwrap() {
                v[k] = val.clone();
            }
            serde_json::from_value::<DnsServerConfig>(v).unwrap().validate().unwrap_err().field
        };
        assert_eq!(field(serde_json::json!({"server": "127.0.0.1"})), "server.server");
        assert_eq!(field(serde_json::json!({"zone": "vi.test"})), "server.zone");
        assert_eq!(field(serde_json::json!({"tsig_algorithm": "hmac-md5"})), "server.tsig_algorithm");
        assert_eq!(field(serde_json::json!({"tsig_secret": "not base64!"})), "server.tsig_secret");
        assert_eq!(field(serde_json::json!({"timeout_secs": 0})), "server.timeout_secs");
    }

    #[test]
    fn secrets_never_show() {
        let cfg: DnsServerConfig = serde_json::from_value(rfc2136()).unwrap();
        assert!(!format!("{cfg:?}").contains(SECRET));
        assert!(!serde_json::to_string(&cfg).unwrap().contains(SECRET));
        let bad = Secret::new("%%%not-base64-but-secret%%%");
        let cfg = Rfc2136Config {
            tsig_secret: bad.clone(),
            ..match cfg {
                DnsServerConfig::Rfc2136(c) => c,
                DnsServerConfig::Powerdns(_) => panic!("kind"),
            }
        };
        let err = crate::Error::from(cfg.tsig_key().unwrap_err());
        assert!(!err.report().contains(bad.expose()), "{}", err.report());
        assert!(!format!("{err:?}").contains(bad.expose()));
        assert_eq!(format!("{bad} {bad:?}"), "<redacted> <redacted>");
    }
}
