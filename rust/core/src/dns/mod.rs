//! Public DNS names that follow a migration. The plan/apply cycle of a zone, after external-dns
//! (this file): read what the authoritative server answers, compute the record changes that
//! make it match the desired state, then apply exactly those; applying a desired state twice
//! changes nothing the second time. Records and changes are [`record`], where a zone's server is
//! and how to reach it is [`server`], the backends that apply changes (RFC 2136 with TSIG,
//! PowerDNS's HTTP API) are `backend/`, DNS queries are `wire.rs`, failures [`error`].

mod backend;
pub mod error;
pub mod record;
pub mod server;
mod wire;

use std::collections::{BTreeMap, BTreeSet};

pub use crate::dns::record::RecordChange;
use crate::dns::record::{canonical_value, in_zone, validate_fqdn, DnsRecord, RecordType, MAX_TTL};
use crate::dns::server::DnsServerConfig;
use crate::dns::wire::{query, Target};
use crate::error::{Error, InputError};

/// What the server answers, per (lower-case name, type).
type Current = BTreeMap<(String, RecordType), Vec<(String, u32)>>;

/// Computes the changes that make the zone of `server` hold `desired` and none of the RRsets in
/// `delete`, reading the current state from the authoritative server by DNS (what clients see).
/// Changes nothing.
pub async fn plan(
    server: &DnsServerConfig,
    desired: &[DnsRecord],
    delete: &[(String, RecordType)],
) -> Result<Vec<RecordChange>, Error> {
    server.validate()?;
    let keys = validate_request(server.zone(), desired, delete)?;
    let mut current = Current::new();
    for (name, rtype) in keys {
        let found = lookup(server, &name, rtype).await?;
        current.insert((name, rtype), found);
    }
    Ok(diff(desired, delete, &current))
}

/// Applies `changes` (from [`plan`]) in one request. An empty list contacts nobody.
pub async fn apply(server: &DnsServerConfig, changes: &[RecordChange]) -> Result<(), Error> {
    server.validate()?;
    for (i, change) in changes.iter().enumerate() {
        validate_change(server.zone(), change, i)?;
    }
    if changes.is_empty() {
        return Ok(());
    }
    match server {
        DnsServerConfig::Rfc2136(config) => crate::dns::backend::rfc2136::update(config, changes).await,
        DnsServerConfig::Powerdns(config) => crate::dns::backend::powerdns::patch(config, changes).await,
    }
}

/// The values and TTLs the authoritative server answers for `name` and `rtype`, sorted (empty
/// when there are none).
pub async fn lookup(server: &DnsServerConfig, name: &str, rtype: RecordType) -> Result<Vec<(String, u32)>, Error> {
    server.validate()?;
    validate_fqdn(name, "name")?;
    let address = server.query_address();
    let step = format!("lookup of {name} {rtype}");
    let target = Target { server: &address, step: &step, timeout: server.timeout() };
    Ok(query(&target, name, rtype).await?)
}

/// Checks the request and returns the RRsets to read, once each.
fn validate_request(
    zone: &str,
    desired: &[DnsRecord],
    delete: &[(String, RecordType)],
) -> Result<BTreeSet<(String, RecordType)>, InputError> {
    let mut keys = BTreeSet::new();
    for (i, record) in desired.iter().enumerate() {
        let prefix = format!("desired[{i}].");
        record.validate_at(&prefix)?;
        check_zone(zone, &record.name, &format!("{prefix}name"))?;
        if !keys.insert((record.name.to_ascii_lowercase(), record.rtype)) {
            return Err(InputError::new(
                format!("{prefix}name"),
                "one record per name and type (vimigrate manages single-value RRsets)",
                format!("{} {} twice", record.name, record.rtype),
            ));
        }
    }
    for (i, (name, rtype)) in delete.iter().enumerate() {
        let field = format!("delete[{i}]");
        validate_fqdn(name, &field)?;
        check_zone(zone, name, &field)?;
        if !keys.insert((name.to_ascii_lowercase(), *rtype)) {
            return Err(InputError::new(
                field,
                "a name and type not also desired or deleted twice",
                format!("{name} {rtype}"),
            ));
        }
    }
    Ok(keys)
}

fn check_zone(zone: &str, name: &str, field: &str) -> Result<(), InputError> {
    if in_zone(name, zone) && !name.eq_ignore_ascii_case(zone) {
        Ok(())
    } else {
        Err(InputError::new(field, format!("a name inside zone {zone}"), name))
    }
}

fn validate_change(zone: &str, change: &RecordChange, i: usize) -> Result<(), InputError> {
    validate_fqdn(&change.name, &format!("changes[{i}].name"))?;
    check_zone(zone, &change.name, &format!("changes[{i}].name"))?;
    if let Some((value, ttl)) = &change.after {
        DnsRecord { name: change.name.clone(), rtype: change.rtype, ttl: *ttl, value: value.clone() }
            .validate_at(&format!("changes[{i}].after."))?;
        if *ttl == 0 || *ttl > MAX_TTL {
            return Err(InputError::new(format!("changes[{i}].after.ttl"), format!("seconds in 1..={MAX_TTL}"), ttl));
        }
    }
    Ok(())
}

/// The changes between `current` and the desired state (pure: the seam for tests).
fn diff(desired: &[DnsRecord], delete: &[(String, RecordType)], current: &Current) -> Vec<RecordChange> {
    let now = |name: &str, rtype: RecordType| {
        current.get(&(name.to_ascii_lowercase(), rtype)).map(Vec::as_slice).unwrap_or_default()
    };
    let mut changes = Vec::new();
    for record in desired {
        let found = now(&record.name, record.rtype);
        // Validated before: the canonical form exists.
        let value = canonical_value(record.rtype, &record.value, "value").unwrap_or_else(|_| record.value.clone());
        let wanted = (value, record.ttl);
        if found.len() == 1 && found[0] == wanted {
            continue;
        }
        changes.push(RecordChange {
            name: record.name.clone(),
            rtype: record.rtype,
            before: found.first().cloned(),
            after: Some(wanted),
        });
    }
    for (name, rtype) in delete {
        let found = now(name, *rtype);
        if let Some(first) = found.first() {
            changes.push(RecordChange { name: name.clone(), rtype: *rtype, before: Some(first.clone()), after: None });
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(name: &str, value: &str, ttl: u32) -> DnsRecord {
        DnsRecord { name: name.into(), rtype: RecordType::A, ttl, value: value.into() }
    }

    /// One RRset of an in-memory zone: name, type, (value, ttl) pairs.
    type Entry<'a> = (&'a str, RecordType, &'a [(&'a str, u32)]);

    /// An in-memory zone: what a server would answer.
    fn zone(entries: &[Entry<'_>]) -> Current {
        entries
            .iter()
            .map(|(n, t, vals)| ((n.to_string(), *t), vals.iter().map(|(v, ttl)| (v.to_string(), *ttl)).collect()))
            .collect()
    }

    #[test]
    fn creates_what_is_missing() {
        let changes = diff(&[a("web.vi.test.", "192.0.2.1", 60)], &[], &Current::new());
        assert_eq!(
            changes,
            vec![RecordChange {
                name: "web.vi.test.".into(),
                rtype: RecordType::A,
                before: None,
                after: Some(("192.0.2.1".into(), 60)),
            }]
        );
    }

    #[test]
    fn nothing_to_do_when_the_zone_matches() {
        let current = zone(&[("web.vi.test.", RecordType::A, &[("192.0.2.1", 60)])]);
        assert!(diff(&[a("WEB.vi.test.", "192.0.2.1", 60)], &[], &current).is_empty());
        let v6 =
            DnsRecord { name: "w.vi.test.".into(), rtype: RecordType::AAAA, ttl: 5, value: "2001:DB8:0::1".into() };
        let current = zone(&[("w.vi.test.", RecordType::AAAA, &[("2001:db8::1", 5)])]);
        assert!(diff(&[v6], &[], &current).is_empty());
    }

    #[test]
    fn changes_value_ttl_and_extra_values() {
        let current = zone(&[("web.vi.test.", RecordType::A, &[("192.0.2.1", 60)])]);
        let c = diff(&[a("web.vi.test.", "192.0.2.2", 60)], &[], &current);
        assert_eq!(c[0].before, Some(("192.0.2.1".into(), 60)));
        assert_eq!(c[0].after, Some(("192.0.2.2".into(), 60)));
        assert_eq!(diff(&[a("web.vi.test.", "192.0.2.1", 30)], &[], &current).len(), 1);
        let two = zone(&[("web.vi.test.", RecordType::A, &[("192.0.2.1", 60), ("192.0.2.9", 60)])]);
        assert_eq!(diff(&[a("web.vi.test.", "192.0.2.1", 60)], &[], &two).len(), 1);
    }

    #[test]
    fn deletes_only_what_exists() {
        let current = zone(&[("old.vi.test.", RecordType::A, &[("192.0.2.1", 60)])]);
        let delete = [("old.vi.test.".to_string(), RecordType::A), ("gone.vi.test.".to_string(), RecordType::A)];
        let c = diff(&[], &delete, &current);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].after, None);
        assert_eq!(c[0].before, Some(("192.0.2.1".into(), 60)));
    }

    #[test]
    fn request_is_checked_before_any_lookup() {
        let field = |d: &[DnsRecord], x: &[(String, RecordType)]| validate_request("vi.test.", d, x).unwrap_err().field;
        assert_eq!(field(&[a("web.other.", "192.0.2.1", 60)], &[]), "desired[0].name");
        assert_eq!(
            field(&[a("web.vi.test.", "192.0.2.1", 60), a("web.vi.test.", "192.0.2.2", 60)], &[]),
            "desired[1].name"
        );
        assert_eq!(field(&[a("web.vi.test.", "x", 60)], &[]), "desired[0].value");
        assert_eq!(
            field(&[a("web.vi.test.", "192.0.2.1", 60)], &[("web.vi.test.".into(), RecordType::A)]),
            "delete[0]"
        );
        assert_eq!(field(&[], &[("vi.test.".into(), RecordType::A)]), "delete[0]");
    }

    #[test]
    fn changes_are_checked_before_sending() {
        let change = RecordChange {
            name: "web.vi.test.".into(),
            rtype: RecordType::A,
            before: None,
            after: Some(("nope".into(), 60)),
        };
        assert_eq!(validate_change("vi.test.", &change, 2).unwrap_err().field, "changes[2].after.value");
    }

    /// Every error reachable without a live server, formatted every way, never shows a secret.
    #[tokio::test]
    async fn no_error_shows_a_secret() {
        const TSIG: &str = "c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1sZWFrCg==";
        const KEY: &str = "api-key-that-must-never-leak";
        let rfc: DnsServerConfig = serde_json::from_value(serde_json::json!({
            "kind": "rfc2136", "server": "127.0.0.1:1", "zone": "vi.test.", "tsig_key_name": "k",
            "tsig_secret": TSIG, "timeout_secs": 1,
        }))
        .unwrap();
        let pdns: DnsServerConfig = serde_json::from_value(serde_json::json!({
            "kind": "powerdns", "api_url": "http://127.0.0.1:1", "zone": "vi.test.", "api_key": KEY,
            "dns_server": "127.0.0.1:1", "timeout_secs": 1,
        }))
        .unwrap();
        let change = RecordChange {
            name: "w.vi.test.".into(),
            rtype: RecordType::A,
            before: None,
            after: Some(("127.0.0.1".into(), 5)),
        };
        let bad = RecordChange { after: Some(("nope".into(), 5)), ..change.clone() };
        let mut errors = Vec::new();
        for server in [&rfc, &pdns] {
            errors.push(plan(server, &[a("w.vi.test.", "127.0.0.1", 5)], &[]).await.unwrap_err());
            errors.push(apply(server, std::slice::from_ref(&change)).await.unwrap_err());
            errors.push(apply(server, std::slice::from_ref(&bad)).await.unwrap_err());
            errors.push(lookup(server, "w.vi.test", RecordType::A).await.unwrap_err());
            let text = format!("{server:?} {}", serde_json::to_string(server).unwrap());
            assert!(!text.contains(TSIG) && !text.contains(KEY), "{text}");
        }
        let kinds: Vec<_> = errors.iter().map(Error::kind).collect();
        use crate::error::ErrorKind::{InvalidInput as I, Unavailable as U};
        assert_eq!(kinds, [U, U, I, I, U, U, I, I]);
        for err in &errors {
            let text = format!("{} | {err:?} | {err}", err.report());
            assert!(!text.contains(TSIG) && !text.contains(KEY), "{text}");
            assert!(text.contains("127.0.0.1:1") || err.kind() == I, "{text}");
        }
    }
}
