//! Applying record changes through the PowerDNS Authoritative HTTP API: one PATCH of the zone
//! with every RRset, which PowerDNS applies in one transaction.

use serde_json::json;

use crate::dns::error::DnsError;
use crate::dns::record::RecordChange;
use crate::dns::server::PowerDnsConfig;
use crate::error::Error;

/// How much of an error body is kept in the message.
const BODY_LIMIT: usize = 300;

/// Sends `changes` (already validated) as one PATCH of the zone's RRsets.
pub(crate) async fn patch(config: &PowerDnsConfig, changes: &[RecordChange]) -> Result<(), Error> {
    let base = config.api_url.trim_end_matches('/');
    let step = format!("PATCH of zone {} ({} change(s))", config.zone, changes.len());
    let http = |source: reqwest::Error| DnsError::Http { server: base.to_string(), step: step.clone(), source };
    let rrsets: Vec<serde_json::Value> = changes
        .iter()
        .map(|change| match &change.after {
            Some((value, ttl)) => json!({
                "name": change.name, "type": change.rtype.to_string(), "ttl": ttl, "changetype": "REPLACE",
                "records": [{"content": value, "disabled": false}],
            }),
            None => json!({"name": change.name, "type": change.rtype.to_string(), "changetype": "DELETE"}),
        })
        .collect();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(config.timeout_secs))
        .no_proxy()
        .build()
        .map_err(http)?;
    let url = format!("{base}/api/v1/servers/{}/zones/{}", config.server_id, config.zone);
    tracing::debug!(api = base, zone = config.zone, changes = changes.len(), "patching zone");
    let response = client
        .patch(&url)
        .header("X-API-Key", config.api_key.expose())
        .json(&json!({ "rrsets": rrsets }))
        .send()
        .await
        .map_err(http)?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    Err(DnsError::Api { server: base.to_string(), step, status: status.as_u16(), body: clean_body(&body, config) }
        .into())
}

/// The start of an error body on one line, with the API key removed should the server echo it.
fn clean_body(body: &str, config: &PowerDnsConfig) -> String {
    let mut text: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    if !config.api_key.expose().is_empty() {
        text = text.replace(config.api_key.expose(), "<redacted>");
    }
    match text.char_indices().nth(BODY_LIMIT) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::server::Secret;

    #[test]
    fn echoed_key_is_removed_from_the_body() {
        let config = PowerDnsConfig {
            api_url: "http://127.0.0.1:8081".into(),
            server_id: "localhost".into(),
            zone: "vi.test.".into(),
            api_key: Secret::new("s3cr3t-key"),
            dns_server: String::new(),
            timeout_secs: 5,
        };
        assert_eq!(clean_body("bad key\n s3cr3t-key", &config), "bad key <redacted>");
        assert!(clean_body(&"x".repeat(1000), &config).len() < 310);
    }
}
