//! The DNS engine against the lab's real servers: BIND9 (RFC 2136 + TSIG) and PowerDNS (HTTP
//! API). They fail, naming what is missing, when the lab is down.
#![cfg(feature = "lab-tests")]

mod common;

use vimigrate_core::{dns_apply, dns_lookup, dns_plan, DnsRecord, DnsServerConfig, ErrorKind, RecordType};

/// The `secret "..."` of a BIND key file.
fn bind_secret(path: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read the lab's TSIG key {path}: {e}"));
    let start = text.find("secret \"").unwrap_or_else(|| panic!("no `secret \"...\"` in {path}")) + 8;
    let end = text[start..].find('"').expect("closing quote of the secret") + start;
    text[start..end].to_string()
}

fn bind(lab: &serde_json::Value) -> (DnsServerConfig, String) {
    let dns = &lab["dns"];
    assert!(dns.is_object(), "the lab has no DNS server (lab.json has no `dns`); run `make lab-up`");
    let secret = bind_secret(dns["tsig_key_file"].as_str().expect("dns.tsig_key_file"));
    let config = serde_json::from_value(serde_json::json!({
        "kind": "rfc2136",
        "server": format!("{}:{}", dns["server"].as_str().expect("dns.server"), dns["port"]),
        "zone": dns["zone"],
        "tsig_key_name": dns["tsig_key_name"],
        "tsig_algorithm": dns["tsig_algorithm"],
        "tsig_secret": secret,
        "timeout_secs": 5,
    }))
    .expect("a valid rfc2136 configuration");
    (config, secret)
}

fn powerdns(lab: &serde_json::Value) -> (DnsServerConfig, String) {
    let p = &lab["dns"]["powerdns"];
    assert!(
        p.is_object(),
        "the lab has no PowerDNS server: lab.json has no `dns.powerdns` (api_url, server_id, zone, api_key_file, port); \
         add it to the lab and run `make lab-up`"
    );
    let key_file = p["api_key_file"].as_str().expect("dns.powerdns.api_key_file");
    let key = std::fs::read_to_string(key_file)
        .unwrap_or_else(|e| panic!("cannot read the lab's PowerDNS API key {key_file}: {e}"))
        .trim()
        .to_string();
    let host = p["server"].as_str().or(lab["dns"]["server"].as_str()).unwrap_or("127.0.0.1");
    let config = serde_json::from_value(serde_json::json!({
        "kind": "powerdns",
        "api_url": p["api_url"],
        "server_id": p["server_id"].as_str().unwrap_or("localhost"),
        "zone": p["zone"],
        "api_key": key,
        "dns_server": format!("{host}:{}", p["port"]),
        "timeout_secs": 5,
    }))
    .expect("a valid powerdns configuration");
    (config, key)
}

fn unique_name(config: &DnsServerConfig, tag: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{tag}-{}-{}.{}", std::process::id(), nanos % 1_000_000_000, config.zone())
}

fn a(name: &str, value: &str) -> DnsRecord {
    DnsRecord { name: name.into(), rtype: RecordType::A, ttl: 60, value: value.into() }
}

/// Create, apply twice, change, delete: the whole life of one record.
async fn record_lifecycle(config: &DnsServerConfig, tag: &str) {
    let name = unique_name(config, tag);
    let changes = dns_plan(config, &[a(&name, "127.0.0.10")], &[]).await.expect("plan a new record");
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].before, None);
    dns_apply(config, &changes).await.expect("create the record");
    assert_eq!(dns_lookup(config, &name, RecordType::A).await.unwrap(), vec![("127.0.0.10".to_string(), 60)]);

    // Idempotent: the same desired state again is an empty plan.
    let again = dns_plan(config, &[a(&name, "127.0.0.10")], &[]).await.unwrap();
    assert!(again.is_empty(), "second plan should be empty: {again:?}");
    dns_apply(config, &again).await.unwrap();

    let moved = dns_plan(config, &[a(&name, "127.0.0.11")], &[]).await.unwrap();
    assert_eq!(moved.len(), 1);
    assert_eq!(moved[0].before, Some(("127.0.0.10".to_string(), 60)));
    dns_apply(config, &moved).await.expect("move the record");
    assert_eq!(dns_lookup(config, &name, RecordType::A).await.unwrap(), vec![("127.0.0.11".to_string(), 60)]);

    let delete = [(name.clone(), RecordType::A)];
    let removal = dns_plan(config, &[], &delete).await.unwrap();
    assert_eq!(removal.len(), 1);
    assert_eq!(removal[0].after, None);
    dns_apply(config, &removal).await.expect("delete the record");
    assert!(dns_lookup(config, &name, RecordType::A).await.unwrap().is_empty());
    assert!(dns_plan(config, &[], &delete).await.unwrap().is_empty(), "deleting twice changes nothing");
}

#[tokio::test]
async fn bind_record_lifecycle() {
    let (config, _) = bind(&common::lab());
    record_lifecycle(&config, "lab-rfc2136").await;
}

#[tokio::test]
async fn bind_wrong_tsig_secret_is_access_denied_without_leaking_it() {
    let (config, _) = bind(&common::lab());
    let wrong = "d3JvbmctdnNlY3JldC13aGljaC1tdXN0LW5vdC1sZWFrIQ==";
    let DnsServerConfig::Rfc2136(mut c) = config else { unreachable!() };
    c.tsig_secret = vimigrate_core::Secret::new(wrong);
    let server = c.server.clone();
    let config = DnsServerConfig::Rfc2136(c);
    let name = unique_name(&config, "lab-badkey");
    let changes = dns_plan(&config, &[a(&name, "127.0.0.12")], &[]).await.expect("plan reads without the key");
    let err = dns_apply(&config, &changes).await.expect_err("a wrong secret must be refused");
    assert_eq!(err.kind(), ErrorKind::AccessDenied, "{}", err.report());
    assert!(!err.kind().is_retryable());
    let report = err.report();
    assert!(report.contains(&server), "the message names the server: {report}");
    for text in [report, format!("{err:?}"), format!("{config:?}"), serde_json::to_string(&config).unwrap()] {
        assert!(!text.contains(wrong), "the secret leaked: {text}");
    }
    assert!(dns_lookup(&config, &name, RecordType::A).await.unwrap().is_empty(), "nothing was changed");
}

#[tokio::test]
async fn unreachable_server_is_unavailable() {
    let (config, secret) = bind(&common::lab());
    let DnsServerConfig::Rfc2136(mut c) = config else { unreachable!() };
    c.server = "127.0.0.1:1".into();
    c.timeout_secs = 2;
    let config = DnsServerConfig::Rfc2136(c);
    let name = unique_name(&config, "lab-unreachable");
    let started = std::time::Instant::now();
    let err = dns_plan(&config, &[a(&name, "127.0.0.13")], &[]).await.expect_err("nobody listens on port 1");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.report());
    assert!(err.kind().is_retryable());
    assert!(err.report().contains("127.0.0.1:1"), "{}", err.report());
    let change = vimigrate_core::RecordChange {
        name,
        rtype: RecordType::A,
        before: None,
        after: Some(("127.0.0.13".into(), 60)),
    };
    let err = dns_apply(&config, &[change]).await.expect_err("nobody listens on port 1");
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.report());
    assert!(!err.report().contains(&secret) && !format!("{err:?}").contains(&secret));
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test]
async fn powerdns_record_lifecycle() {
    let (config, _) = powerdns(&common::lab());
    record_lifecycle(&config, "lab-powerdns").await;
}

#[tokio::test]
async fn powerdns_wrong_api_key_is_access_denied_without_leaking_it() {
    let (config, _) = powerdns(&common::lab());
    let wrong = "wrong-api-key-that-must-not-leak";
    let DnsServerConfig::Powerdns(mut c) = config else { unreachable!() };
    c.api_key = vimigrate_core::Secret::new(wrong);
    let api = c.api_url.clone();
    let config = DnsServerConfig::Powerdns(c);
    let name = unique_name(&config, "lab-pdns-badkey");
    let changes = dns_plan(&config, &[a(&name, "127.0.0.14")], &[]).await.expect("plan reads by DNS");
    let err = dns_apply(&config, &changes).await.expect_err("a wrong API key must be refused");
    assert_eq!(err.kind(), ErrorKind::AccessDenied, "{}", err.report());
    assert!(err.report().contains(api.trim_end_matches('/')), "{}", err.report());
    for text in [err.report(), format!("{err:?}"), format!("{config:?}")] {
        assert!(!text.contains(wrong), "the key leaked: {text}");
    }
}
