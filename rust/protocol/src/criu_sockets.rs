//! The addresses a dump's inet sockets are bound to, read from CRIU's `files.img`.
//!
//! CRIU restores a socket by binding it again to the address it had, and an established TCP
//! connection by also connecting it (in repair mode, no packet sent), which needs a route to the
//! peer. Both fail while the container's network namespace lacks the address ("Can't bind inet
//! socket back: Cannot assign requested address"). From Docker 28 on that is the case at every
//! restore of the direct path: the daemon moves the container's interface in only once the
//! task exists, that is after `runc restore` returned. So the destination's runtime reads here
//! which addresses the restore needs and holds them in the namespace for the time of the
//! restore (`vimigrate-runtime`'s `net::restore_addresses`).
//!
//! `files.img` is a CRIU image: two little-endian u32 magic words (`IMG_COMMON_MAGIC`, then
//! `FILES_MAGIC`), then entries, each a little-endian u32 length and a protobuf `file_entry`
//! (images/fdinfo.proto). An inet socket's entry carries an `inet_sk_entry` (images/sk-inet.proto)
//! whose `src_addr` holds the address as the kernel stores it: one u32 for IPv4, four for IPv6,
//! in network byte order in memory.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::criu_stats::CriuImageError;
use crate::protobuf::{for_each_field, Value};

/// File name of CRIU's image of the dumped files (sockets included).
pub const FILES_IMAGE: &str = "files.img";

/// First magic word of CRIU's regular images.
const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
/// Second magic word of `files.img`.
const FILES_MAGIC: u32 = 0x5630_3138;
/// `fd_types.INETSK`.
const FD_TYPE_INETSK: u64 = 4;
const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;

/// What the sockets of a dump need of their network namespace at the restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketAddresses {
    /// Addresses sockets are bound to, other than the wildcard, loopback and link-local ones
    /// (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub bound: BTreeSet<IpAddr>,
    /// Whether a socket is bound to a loopback address (the loopback interface must be up).
    pub loopback: bool,
}

/// Decodes `files.img` and collects the addresses its inet sockets are bound to.
pub fn socket_addresses(bytes: &[u8]) -> Result<SocketAddresses, CriuImageError> {
    let fail = |detail: String| CriuImageError { file: FILES_IMAGE.to_string(), detail };
    let word = |at: usize| bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    match (word(0), word(4)) {
        (Some(IMG_COMMON_MAGIC), Some(FILES_MAGIC)) => {}
        (Some(a), Some(b)) => {
            let expected = format!("{IMG_COMMON_MAGIC:#010x} {FILES_MAGIC:#010x}");
            return Err(fail(format!("not CRIU's files image: magic {a:#010x} {b:#010x}, expected {expected}")));
        }
        _ => return Err(fail(format!("truncated: {} bytes, no room for the magic", bytes.len()))),
    }
    let mut found = SocketAddresses::default();
    let mut at = 8;
    while at < bytes.len() {
        let len = word(at).ok_or_else(|| fail(format!("truncated entry length at byte {at}")))? as usize;
        let entry = bytes
            .get(at + 4..at + 4 + len)
            .ok_or_else(|| fail(format!("truncated: the entry at byte {at} declares {len} bytes")))?;
        inet_socket_of(entry, &mut found).map_err(|e| fail(format!("entry at byte {at}: {e}")))?;
        at += 4 + len;
    }
    Ok(found)
}

/// Adds the bound address of `entry` (a `file_entry`) when it is an inet socket.
fn inet_socket_of(entry: &[u8], found: &mut SocketAddresses) -> Result<(), String> {
    let mut kind = None;
    let mut socket = None;
    for_each_field(entry, |number, value| {
        match (number, value) {
            (1, v) => kind = Some(v.varint(number)?),
            (4, Value::Bytes(b)) => socket = Some(b),
            _ => {}
        }
        Ok(())
    })?;
    let (Some(FD_TYPE_INETSK), Some(socket)) = (kind, socket) else { return Ok(()) };
    let mut family = None;
    let mut words = Vec::new();
    for_each_field(socket, |number, value| {
        match (number, value) {
            (3, v) => family = Some(v.varint(number)?),
            (11, Value::Varint(v)) => words.push(u32::try_from(v).map_err(|_| "src_addr word out of range")?),
            // A packed encoding, which proto2 parsers must accept too.
            (11, Value::Bytes(packed)) => words.extend(packed_words(packed)?),
            _ => {}
        }
        Ok(())
    })?;
    let address = match (family, words.as_slice()) {
        (Some(AF_INET), [w]) => IpAddr::V4(Ipv4Addr::from(w.to_ne_bytes())),
        (Some(AF_INET6), [a, b, c, d]) => {
            let mut octets = [0u8; 16];
            for (chunk, w) in octets.chunks_exact_mut(4).zip([a, b, c, d]) {
                chunk.copy_from_slice(&w.to_ne_bytes());
            }
            let v6 = Ipv6Addr::from(octets);
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        (Some(AF_INET | AF_INET6), other) => return Err(format!("src_addr has {} words", other.len())),
        _ => return Ok(()),
    };
    if address.is_loopback() {
        found.loopback = true;
    } else if !address.is_unspecified() && !is_link_local(&address) {
        found.bound.insert(address);
    }
    Ok(())
}

/// Link-local IPv6 addresses belong to an interface (CRIU binds them by the interface's name),
/// which the restore cannot stand in for.
fn is_link_local(address: &IpAddr) -> bool {
    matches!(address, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

fn packed_words(packed: &[u8]) -> Result<Vec<u32>, String> {
    let mut words = Vec::new();
    let mut value = 0u64;
    let mut shift = 0;
    for &byte in packed {
        if shift > 28 {
            return Err("packed src_addr word overflows 32 bits".into());
        }
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            words.push(u32::try_from(value).map_err(|_| "packed src_addr word out of range")?);
            value = 0;
            shift = 0;
        } else {
            shift += 7;
        }
    }
    if shift != 0 {
        return Err("truncated packed src_addr".into());
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real `files.img` (CRIU 4.2.1, `--tcp-established`) of a process holding: an IPv4 TCP
    /// connection from 10.77.0.5, an IPv6 listener on fd00:77::5, a UDP socket on 127.0.0.1 and
    /// a listener on 0.0.0.0.
    const FILES: &[u8] = include_bytes!("../tests/fixtures/files.img");

    #[test]
    fn a_real_image_gives_the_bound_addresses() {
        let found = socket_addresses(FILES).unwrap();
        let expected: BTreeSet<IpAddr> = ["10.77.0.5", "fd00:77::5"].iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(found.bound, expected);
        assert!(found.loopback, "the UDP socket on 127.0.0.1");
    }

    #[test]
    fn another_image_or_a_truncated_one_is_refused() {
        let err = socket_addresses(&FILES[..6]).unwrap_err();
        assert!(err.detail.contains("truncated"), "{err}");
        let mut other = FILES.to_vec();
        other[4] ^= 0xff;
        assert!(socket_addresses(&other).unwrap_err().detail.contains("not CRIU's files image"));
        let cut = &FILES[..FILES.len() - 3];
        assert!(socket_addresses(cut).unwrap_err().detail.contains("declares"));
    }

    #[test]
    fn packed_addresses_decode_like_repeated_ones() {
        // 10.77.0.5 as the kernel stores it, varint-encoded.
        let word = u32::from_ne_bytes([10, 77, 0, 5]);
        let mut packed = Vec::new();
        let mut v = u64::from(word);
        while v >= 0x80 {
            packed.push((v as u8) | 0x80);
            v >>= 7;
        }
        packed.push(v as u8);
        assert_eq!(packed_words(&packed).unwrap(), vec![word]);
        assert!(packed_words(&packed[..1]).is_err());
    }
}
