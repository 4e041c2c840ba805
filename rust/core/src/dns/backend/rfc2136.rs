//! Applying record changes with one RFC 2136 UPDATE signed with TSIG: all changes of a plan in
//! one message, so the server applies all of them or none.

use std::time::{SystemTime, UNIX_EPOCH};

use hickory_proto::dnssec::rdata::tsig::TsigAlgorithm;
use hickory_proto::dnssec::tsig::TSigner;
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode, UpdateMessage};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{DNSClass, RData, Record};

use crate::dns::error::DnsError;
use crate::dns::record::RecordChange;
use crate::dns::record::RecordType;
use crate::dns::server::Rfc2136Config;
use crate::dns::wire::{exchange, new_id, wire_name, wire_type, Target};
use crate::error::{Error, InputError};

/// How far apart our clock and the server's may be, in seconds (BIND's default).
const FUDGE: u16 = 300;

/// Sends `changes` (already validated) to the server as one signed UPDATE and checks the
/// answer's signature.
pub(crate) async fn update(config: &Rfc2136Config, changes: &[RecordChange]) -> Result<(), Error> {
    let step = format!("update of zone {} ({} change(s))", config.zone, changes.len());
    let target =
        Target { server: &config.server, step: &step, timeout: std::time::Duration::from_secs(config.timeout_secs) };
    let zone = wire_name(&target, &config.zone)?;
    let mut message = Message::new();
    message
        .set_id(new_id())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Update)
        .set_recursion_desired(false);
    let mut zone_query = Query::query(zone, hickory_proto::rr::RecordType::SOA);
    zone_query.set_query_class(DNSClass::IN);
    message.add_zone(zone_query);
    for (i, change) in changes.iter().enumerate() {
        let name = wire_name(&target, &change.name)?;
        // RFC 2136 2.5.2: delete the whole RRset, then add the one value we want.
        let mut delete = Record::update0(name.clone(), 0, wire_type(change.rtype));
        delete.set_dns_class(DNSClass::ANY);
        message.add_update(delete);
        if let Some((value, ttl)) = &change.after {
            let data = rdata(&target, change.rtype, value, &format!("changes[{i}].after"))?;
            let mut add = Record::from_rdata(name, *ttl, data);
            add.set_dns_class(DNSClass::IN);
            message.add_update(add);
        }
    }
    let signer = signer(config)?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut verifier = message.finalize(&signer, now as u32).map_err(|e| target.protocol(e))?;
    let request = message.to_vec().map_err(|e| target.protocol(e))?;
    tracing::debug!(server = config.server, zone = config.zone, changes = changes.len(), "sending signed UPDATE");
    let raw = exchange(&target, &request).await?;
    let answer = Message::from_vec(&raw).map_err(|e| target.protocol(e))?;
    if answer.response_code() != ResponseCode::NoError {
        return Err(target.rcode(answer.response_code()).into());
    }
    // A success must be signed with our key: otherwise anyone on the path could fake it.
    if let Some(verify) = verifier.as_mut() {
        if let Err(err) = verify(&raw) {
            return Err(DnsError::Denied {
                server: config.server.clone(),
                step,
                reason: format!("the answer's TSIG signature does not verify ({err})"),
            }
            .into());
        }
    }
    Ok(())
}

fn signer(config: &Rfc2136Config) -> Result<TSigner, Error> {
    let algorithm = match config.tsig_algorithm.as_str() {
        "hmac-sha384" => TsigAlgorithm::HmacSha384,
        "hmac-sha512" => TsigAlgorithm::HmacSha512,
        _ => TsigAlgorithm::HmacSha256,
    };
    let key_name = hickory_proto::rr::Name::from_ascii(&config.tsig_key_name)
        .map_err(|_| InputError::new("server.tsig_key_name", "a DNS name", &config.tsig_key_name))?;
    TSigner::new(config.tsig_key()?, algorithm, key_name, FUDGE).map_err(|_| {
        Error::from(InputError::new(
            "server.tsig_algorithm",
            "an algorithm this build supports",
            &config.tsig_algorithm,
        ))
    })
}

fn rdata(target: &Target<'_>, rtype: RecordType, value: &str, field: &str) -> Result<RData, Error> {
    Ok(match rtype {
        RecordType::A => RData::A(A(value.parse().map_err(|_| InputError::new(field, "an IPv4 address", value))?)),
        RecordType::AAAA => {
            RData::AAAA(AAAA(value.parse().map_err(|_| InputError::new(field, "an IPv6 address", value))?))
        }
        RecordType::CNAME => RData::CNAME(CNAME(wire_name(target, value)?)),
    })
}
