//! One DNS exchange with a server: UDP, retried over TCP when the answer is truncated, bounded
//! by a timeout; and the plain query that reads what clients see.

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType as WireType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::dns::error::DnsError;
use crate::dns::record::RecordType;

/// Where an exchange goes and what it is for, for error messages.
pub(crate) struct Target<'a> {
    /// `host:port`.
    pub server: &'a str,
    /// The step, e.g. "lookup of web.vi.test. A".
    pub step: &'a str,
    /// Bound on the whole exchange.
    pub timeout: Duration,
}

impl Target<'_> {
    fn unreachable(&self, source: std::io::Error) -> DnsError {
        DnsError::Unreachable { server: self.server.to_string(), step: self.step.to_string(), source }
    }

    /// A malformed-message error for this exchange.
    pub(crate) fn protocol(&self, source: hickory_proto::ProtoError) -> DnsError {
        DnsError::Protocol { server: self.server.to_string(), step: self.step.to_string(), source }
    }

    /// An error for a response code other than NOERROR.
    pub(crate) fn rcode(&self, code: ResponseCode) -> DnsError {
        let (server, step) = (self.server.to_string(), self.step.to_string());
        match code {
            ResponseCode::NotAuth | ResponseCode::BADSIG | ResponseCode::BADKEY | ResponseCode::BADTIME => {
                DnsError::Denied {
                    server,
                    step,
                    reason: format!(
                        "{}: the TSIG key name, algorithm or secret does not match the server's (or the clocks differ)",
                        rcode_name(code)
                    ),
                }
            }
            ResponseCode::Refused => DnsError::Refused {
                server,
                step,
                reason:
                    "the server's policy does not allow it (unsigned, wrong key for this zone, or not authoritative)"
                        .into(),
            },
            other => DnsError::Rcode { server, step, rcode: rcode_name(other) },
        }
    }
}

fn rcode_name(code: ResponseCode) -> String {
    let name = match code {
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::YXDomain => "YXDOMAIN",
        ResponseCode::YXRRSet => "YXRRSET",
        ResponseCode::NXRRSet => "NXRRSET",
        ResponseCode::NotAuth => "NOTAUTH",
        ResponseCode::NotZone => "NOTZONE",
        ResponseCode::BADSIG => "BADSIG",
        ResponseCode::BADKEY => "BADKEY",
        ResponseCode::BADTIME => "BADTIME",
        other => return format!("rcode {}", u16::from(other)),
    };
    name.to_string()
}

/// A fresh message id, from the standard library's randomly seeded hasher.
pub(crate) fn new_id() -> u16 {
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64),
    );
    hasher.finish() as u16
}

/// Sends `request` and returns the raw answer with the same id.
pub(crate) async fn exchange(target: &Target<'_>, request: &[u8]) -> Result<Vec<u8>, DnsError> {
    let secs = target.timeout.as_secs();
    match tokio::time::timeout(target.timeout, exchange_inner(target, request)).await {
        Ok(result) => result,
        Err(_) => Err(DnsError::Timeout { server: target.server.to_string(), step: target.step.to_string(), secs }),
    }
}

async fn exchange_inner(target: &Target<'_>, request: &[u8]) -> Result<Vec<u8>, DnsError> {
    let addr = resolve(target).await?;
    let id = request.get(..2).map(|b| [b[0], b[1]]).unwrap_or_default();
    let local: SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(local).await.map_err(|e| target.unreachable(e))?;
    socket.connect(addr).await.map_err(|e| target.unreachable(e))?;
    socket.send(request).await.map_err(|e| target.unreachable(e))?;
    let mut buf = vec![0u8; 65535];
    loop {
        let len = socket.recv(&mut buf).await.map_err(|e| target.unreachable(e))?;
        // Ignore stray datagrams: too short or for another id.
        if len < 12 || buf[..2] != id {
            continue;
        }
        let truncated = buf[2] & 0x02 != 0;
        if !truncated {
            buf.truncate(len);
            return Ok(buf);
        }
        tracing::debug!(server = target.server, step = target.step, "truncated UDP answer; retrying over TCP");
        return exchange_tcp(target, addr, request).await;
    }
}

async fn exchange_tcp(target: &Target<'_>, addr: SocketAddr, request: &[u8]) -> Result<Vec<u8>, DnsError> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| target.unreachable(e))?;
    let len = u16::try_from(request.len())
        .map_err(|_| target.unreachable(std::io::Error::new(std::io::ErrorKind::InvalidInput, "message too long")))?;
    let mut framed = Vec::with_capacity(request.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(request);
    stream.write_all(&framed).await.map_err(|e| target.unreachable(e))?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.map_err(|e| target.unreachable(e))?;
    let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
    stream.read_exact(&mut answer).await.map_err(|e| target.unreachable(e))?;
    Ok(answer)
}

async fn resolve(target: &Target<'_>) -> Result<SocketAddr, DnsError> {
    if let Ok(addr) = target.server.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let mut addrs = tokio::net::lookup_host(target.server).await.map_err(|e| target.unreachable(e))?;
    addrs.next().ok_or_else(|| {
        target.unreachable(std::io::Error::new(std::io::ErrorKind::NotFound, "the host name has no address"))
    })
}

/// The wire type of a record type.
pub(crate) fn wire_type(rtype: RecordType) -> WireType {
    match rtype {
        RecordType::A => WireType::A,
        RecordType::AAAA => WireType::AAAA,
        RecordType::CNAME => WireType::CNAME,
    }
}

/// Parses a validated fully qualified name.
pub(crate) fn wire_name(target: &Target<'_>, name: &str) -> Result<Name, DnsError> {
    Name::from_ascii(name).map_err(|e| target.protocol(e))
}

/// The values and TTLs the server answers for `name` and `rtype` (empty when there are none),
/// asked without recursion, as the authoritative answer clients get.
pub(crate) async fn query(target: &Target<'_>, name: &str, rtype: RecordType) -> Result<Vec<(String, u32)>, DnsError> {
    let qname = wire_name(target, name)?;
    let mut message = Message::new();
    message
        .set_id(new_id())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(false);
    message.add_query(Query::query(qname.clone(), wire_type(rtype)));
    let request = message.to_vec().map_err(|e| target.protocol(e))?;
    let answer = Message::from_vec(&exchange(target, &request).await?).map_err(|e| target.protocol(e))?;
    match answer.response_code() {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        other => return Err(target.rcode(other)),
    }
    let mut found: Vec<(String, u32)> = answer
        .answers()
        .iter()
        .filter(|r| r.name() == &qname)
        .filter_map(|r| {
            let value = match r.data() {
                RData::A(a) if rtype == RecordType::A => a.0.to_string(),
                RData::AAAA(a) if rtype == RecordType::AAAA => a.0.to_string(),
                RData::CNAME(c) if rtype == RecordType::CNAME => c.0.to_ascii().to_ascii_lowercase(),
                _ => return None,
            };
            Some((value, r.ttl()))
        })
        .collect();
    found.sort();
    Ok(found)
}
