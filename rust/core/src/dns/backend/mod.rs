//! The servers a zone's changes go to: RFC 2136 UPDATE signed with TSIG, or the PowerDNS HTTP API.

pub(crate) mod powerdns;
pub(crate) mod rfc2136;
