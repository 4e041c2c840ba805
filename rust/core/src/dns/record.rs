//! One DNS record as vimigrate manages it: a single value per name and type.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::error::InputError;

/// The longest TTL accepted: one week, as most providers cap it.
pub const MAX_TTL: u32 = 604_800;

/// The record types vimigrate manages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RecordType {
    /// An IPv4 address.
    A,
    /// An IPv6 address.
    AAAA,
    /// An alias to another name.
    CNAME,
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordType::A => "A",
            RecordType::AAAA => "AAAA",
            RecordType::CNAME => "CNAME",
        })
    }
}

/// A record the caller wants to exist: exactly one value for `name` and `rtype`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsRecord {
    /// Fully qualified name with its trailing dot, e.g. `web.vi.test.`.
    pub name: String,
    /// The record type.
    pub rtype: RecordType,
    /// Time to live in seconds, in 1..=604800.
    pub ttl: u32,
    /// An IPv4 address (A), an IPv6 address (AAAA) or a fully qualified name (CNAME).
    pub value: String,
}

impl DnsRecord {
    /// Checks every field; the error names the field that is wrong.
    pub fn validate(&self) -> Result<(), InputError> {
        self.validate_at("")
    }

    /// As [`DnsRecord::validate`], with `prefix` (e.g. `desired[2].`) before the field names.
    pub(crate) fn validate_at(&self, prefix: &str) -> Result<(), InputError> {
        validate_fqdn(&self.name, &format!("{prefix}name"))?;
        if self.ttl == 0 || self.ttl > MAX_TTL {
            return Err(InputError::new(format!("{prefix}ttl"), format!("seconds in 1..={MAX_TTL}"), self.ttl));
        }
        canonical_value(self.rtype, &self.value, &format!("{prefix}value")).map(|_| ())
    }
}

/// The value of a record of type `rtype` in the form a DNS answer shows it (shortest IPv6 form,
/// lower-case names), so values from the caller and from the server compare equal.
pub(crate) fn canonical_value(rtype: RecordType, value: &str, field: &str) -> Result<String, InputError> {
    match rtype {
        RecordType::A => value
            .parse::<Ipv4Addr>()
            .map(|ip| ip.to_string())
            .map_err(|_| InputError::new(field, "an IPv4 address, e.g. 192.0.2.10", value)),
        RecordType::AAAA => value
            .parse::<Ipv6Addr>()
            .map(|ip| ip.to_string())
            .map_err(|_| InputError::new(field, "an IPv6 address, e.g. 2001:db8::10", value)),
        RecordType::CNAME => {
            validate_fqdn(value, field)?;
            Ok(value.to_ascii_lowercase())
        }
    }
}

/// Checks that `name` is a fully qualified domain name with its trailing dot.
pub(crate) fn validate_fqdn(name: &str, field: &str) -> Result<(), InputError> {
    const EXPECTED: &str = "a fully qualified name with a trailing dot, e.g. web.vi.test.";
    let Some(body) = name.strip_suffix('.') else {
        return Err(InputError::new(field, EXPECTED, name));
    };
    if body.is_empty() || name.len() > 254 {
        return Err(InputError::new(field, EXPECTED, name));
    }
    for (i, label) in body.split('.').enumerate() {
        let wildcard = i == 0 && label == "*";
        let valid = wildcard
            || (!label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        if !valid {
            return Err(InputError::new(
                field,
                "labels of 1 to 63 letters, digits, `-` or `_` separated by dots, with a trailing dot",
                name,
            ));
        }
    }
    Ok(())
}

/// Whether `name` lies inside `zone` (both fully qualified; case-insensitive).
pub(crate) fn in_zone(name: &str, zone: &str) -> bool {
    let (name, zone) = (name.to_ascii_lowercase(), zone.to_ascii_lowercase());
    name == zone || name.ends_with(&format!(".{zone}"))
}

/// One RRset to change: what the server answers now (`before`) and what it should answer
/// (`after`, `None` to delete). Values are `(value, ttl)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordChange {
    /// Fully qualified name.
    pub name: String,
    /// Record type.
    pub rtype: RecordType,
    /// The current value and TTL, `None` when the name has no record of this type.
    pub before: Option<(String, u32)>,
    /// The wanted value and TTL, `None` to delete the RRset.
    pub after: Option<(String, u32)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, rtype: RecordType, ttl: u32, value: &str) -> DnsRecord {
        DnsRecord { name: name.into(), rtype, ttl, value: value.into() }
    }

    #[test]
    fn valid_records() {
        assert!(record("web.vi.test.", RecordType::A, 60, "192.0.2.1").validate().is_ok());
        assert!(record("web.vi.test.", RecordType::AAAA, 1, "2001:db8::1").validate().is_ok());
        assert!(record("*.vi.test.", RecordType::CNAME, MAX_TTL, "web.vi.test.").validate().is_ok());
    }

    #[test]
    fn each_bad_field_is_named() {
        let field = |r: DnsRecord| r.validate().unwrap_err().field;
        assert_eq!(field(record("web.vi.test", RecordType::A, 60, "192.0.2.1")), "name");
        assert_eq!(field(record("we b.vi.test.", RecordType::A, 60, "192.0.2.1")), "name");
        assert_eq!(field(record("-x.vi.test.", RecordType::A, 60, "192.0.2.1")), "name");
        assert_eq!(field(record(".", RecordType::A, 60, "192.0.2.1")), "name");
        assert_eq!(field(record("web.vi.test.", RecordType::A, 0, "192.0.2.1")), "ttl");
        assert_eq!(field(record("web.vi.test.", RecordType::A, MAX_TTL + 1, "192.0.2.1")), "ttl");
        assert_eq!(field(record("web.vi.test.", RecordType::A, 60, "2001:db8::1")), "value");
        assert_eq!(field(record("web.vi.test.", RecordType::AAAA, 60, "192.0.2.1")), "value");
        assert_eq!(field(record("web.vi.test.", RecordType::CNAME, 60, "other.vi.test")), "value");
        let err = record("web.vi.test.", RecordType::A, 60, "x").validate_at("desired[3].").unwrap_err();
        assert_eq!(err.field, "desired[3].value");
    }

    #[test]
    fn serde_shape() {
        let r: DnsRecord =
            serde_json::from_str(r#"{"name":"a.vi.test.","rtype":"AAAA","ttl":5,"value":"2001:db8::1"}"#).unwrap();
        assert_eq!(r.rtype, RecordType::AAAA);
        assert!(serde_json::from_str::<DnsRecord>(r#"{"name":"a.","rtype":"A","ttl":5,"value":"x","z":1}"#).is_err());
        assert!(serde_json::from_str::<DnsRecord>(r#"{"name":"a.","rtype":"MX","ttl":5,"value":"x"}"#).is_err());
    }

    #[test]
    fn canonical_values_and_zones() {
        assert_eq!(canonical_value(RecordType::AAAA, "2001:DB8:0::1", "v").unwrap(), "2001:db8::1");
        assert_eq!(canonical_value(RecordType::CNAME, "Web.VI.test.", "v").unwrap(), "web.vi.test.");
        assert!(in_zone("web.VI.test.", "vi.test."));
        assert!(!in_zone("web.xvi.test.", "vi.test."));
    }
}
