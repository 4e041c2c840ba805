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

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::criu_stats::CriuImageError;
use crate::protobuf::{for_each_field, for_each_field_raw, put_bytes_field, put_varint_field, Value};

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

/// `IPPROTO_TCP`.
const PROTO_TCP: u64 = 6;
/// The kernel's `TCP_CLOSE` and `TCP_LISTEN`: the states of a TCP socket without a connection.
const TCP_CLOSE: u64 = 7;
const TCP_LISTEN: u64 = 10;

/// What [`rewrite_socket_addresses`] changed in one dump.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketRewrite {
    /// Connections whose both ends are in the map: restored on the new addresses, their
    /// sequence numbers and queues as dumped.
    pub kept: usize,
    /// Connections to a peer outside the map whose own address changed: restored closed
    /// (the peer cannot reach the new address), as `tcp-close` restores them.
    pub closed: usize,
    /// Sockets without a connection (listeners, UDP) bound to an address that changed.
    pub rebound: usize,
}

/// Rewrites the IPv4 addresses of `files.img`'s inet sockets by `map` (old -> new; an
/// IPv4-mapped IPv6 address counts as its IPv4 address), both ends of each connection, so
/// that CRIU restores them on the new addresses (see [`SocketRewrite`] for what becomes of
/// each). Every other byte of the image is kept as it was.
pub fn rewrite_socket_addresses(
    bytes: &[u8],
    map: &BTreeMap<Ipv4Addr, Ipv4Addr>,
) -> Result<(Vec<u8>, SocketRewrite), CriuImageError> {
    let fail = |detail: String| CriuImageError { file: FILES_IMAGE.to_string(), detail };
    check_magic(bytes).map_err(fail)?;
    let word = |at: usize| bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    let mut out = bytes[..8].to_vec();
    let mut done = SocketRewrite::default();
    let mut at = 8;
    while at < bytes.len() {
        let len = word(at).ok_or_else(|| fail(format!("truncated entry length at byte {at}")))? as usize;
        let entry = bytes
            .get(at + 4..at + 4 + len)
            .ok_or_else(|| fail(format!("truncated: the entry at byte {at} declares {len} bytes")))?;
        let rewritten = rewrite_entry(entry, map, &mut done).map_err(|e| fail(format!("entry at byte {at}: {e}")))?;
        let new_len = u32::try_from(rewritten.len()).map_err(|_| fail(format!("entry at byte {at} grew too large")))?;
        out.extend_from_slice(&new_len.to_le_bytes());
        out.extend_from_slice(&rewritten);
        at += 4 + len;
    }
    Ok((out, done))
}

/// The magic words of `files.img`, or why they are not.
fn check_magic(bytes: &[u8]) -> Result<(), String> {
    let word = |at: usize| bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    match (word(0), word(4)) {
        (Some(IMG_COMMON_MAGIC), Some(FILES_MAGIC)) => Ok(()),
        (Some(a), Some(b)) => {
            let expected = format!("{IMG_COMMON_MAGIC:#010x} {FILES_MAGIC:#010x}");
            Err(format!("not CRIU's files image: magic {a:#010x} {b:#010x}, expected {expected}"))
        }
        _ => Err(format!("truncated: {} bytes, no room for the magic", bytes.len())),
    }
}

/// One `file_entry`, its inet socket rewritten (any other entry as it was).
fn rewrite_entry(
    entry: &[u8],
    map: &BTreeMap<Ipv4Addr, Ipv4Addr>,
    done: &mut SocketRewrite,
) -> Result<Vec<u8>, String> {
    let mut kind = None;
    for_each_field(entry, |number, value| {
        if number == 1 {
            kind = Some(value.varint(number)?);
        }
        Ok(())
    })?;
    if kind != Some(FD_TYPE_INETSK) {
        return Ok(entry.to_vec());
    }
    let mut out = Vec::with_capacity(entry.len());
    for_each_field_raw(entry, |number, value, raw| {
        match (number, value) {
            (4, Value::Bytes(socket)) => put_bytes_field(&mut out, 4, &rewrite_inet(socket, map, done)?),
            _ => out.extend_from_slice(raw),
        }
        Ok(())
    })?;
    Ok(out)
}

/// The address words of an inet socket's end as IPv4, when it is one (or IPv4-mapped).
fn as_ipv4(words: &[u32]) -> Option<Ipv4Addr> {
    match words {
        [w] => Some(Ipv4Addr::from(w.to_ne_bytes())),
        [0, 0, mapped, w] if mapped.to_ne_bytes() == [0, 0, 0xff, 0xff] => Some(Ipv4Addr::from(w.to_ne_bytes())),
        _ => None,
    }
}

/// `words` with their IPv4 address replaced by `new`, in the same form.
fn with_ipv4(words: &[u32], new: Ipv4Addr) -> Vec<u32> {
    let mut out = words.to_vec();
    if let Some(last) = out.last_mut() {
        *last = u32::from_ne_bytes(new.octets());
    }
    out
}

/// One `inet_sk_entry`, its addresses rewritten (see [`rewrite_socket_addresses`]).
fn rewrite_inet(
    socket: &[u8],
    map: &BTreeMap<Ipv4Addr, Ipv4Addr>,
    done: &mut SocketRewrite,
) -> Result<Vec<u8>, String> {
    let (mut proto, mut state) = (None, None);
    let (mut src, mut dst) = (Vec::new(), Vec::new());
    for_each_field(socket, |number, value| {
        match (number, value) {
            (5, v) => proto = Some(v.varint(number)?),
            (6, v) => state = Some(v.varint(number)?),
            (11, Value::Varint(v)) => src.push(u32::try_from(v).map_err(|_| "src_addr word out of range")?),
            (11, Value::Bytes(packed)) => src.extend(packed_words(packed)?),
            (12, Value::Varint(v)) => dst.push(u32::try_from(v).map_err(|_| "dst_addr word out of range")?),
            (12, Value::Bytes(packed)) => dst.extend(packed_words(packed)?),
            _ => {}
        }
        Ok(())
    })?;
    let new_src = as_ipv4(&src).and_then(|a| map.get(&a)).copied();
    let dst_v4 = as_ipv4(&dst);
    let new_dst = dst_v4.and_then(|a| map.get(&a)).copied();
    if new_src.is_none() && new_dst.is_none() {
        return Ok(socket.to_vec());
    }
    let connected = proto == Some(PROTO_TCP) && !matches!(state, Some(TCP_CLOSE | TCP_LISTEN) | None);
    let outside = dst_v4.is_some_and(|a| !a.is_unspecified() && !a.is_loopback()) && new_dst.is_none();
    let close = connected && new_src.is_some() && outside;
    match (connected, close) {
        (true, false) => done.kept += 1,
        (_, true) => done.closed += 1,
        (false, _) => done.rebound += 1,
    }
    let src = match new_src {
        Some(a) => with_ipv4(&src, a),
        None => src,
    };
    let dst = match new_dst {
        Some(a) => with_ipv4(&dst, a),
        None => dst,
    };
    let mut out = Vec::with_capacity(socket.len() + 8);
    let (mut wrote_src, mut wrote_dst) = (false, false);
    for_each_field_raw(socket, |number, _, raw| {
        match number {
            6 if close => put_varint_field(&mut out, 6, TCP_CLOSE),
            11 | 12 => {
                let (words, wrote) = if number == 11 { (&src, &mut wrote_src) } else { (&dst, &mut wrote_dst) };
                if !std::mem::replace(wrote, true) {
                    for w in words {
                        put_varint_field(&mut out, number, u64::from(*w));
                    }
                }
            }
            _ => out.extend_from_slice(raw),
        }
        Ok(())
    })?;
    Ok(out)
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

    fn v4(a: &str) -> Ipv4Addr {
        a.parse().unwrap()
    }

    /// A `files.img` of one IPv4 TCP socket from `src` to `dst` in `state`.
    fn one_socket(src: &str, dst: &str, state: u64) -> Vec<u8> {
        let mut inet = Vec::new();
        for (n, v) in [(1, 1), (2, 99), (3, AF_INET), (4, 1), (5, PROTO_TCP), (6, state), (7, 40000), (8, 6379)] {
            put_varint_field(&mut inet, n, v);
        }
        put_varint_field(&mut inet, 11, u64::from(u32::from_ne_bytes(v4(src).octets())));
        put_varint_field(&mut inet, 12, u64::from(u32::from_ne_bytes(v4(dst).octets())));
        let mut entry = Vec::new();
        put_varint_field(&mut entry, 1, FD_TYPE_INETSK);
        put_varint_field(&mut entry, 2, 1);
        put_bytes_field(&mut entry, 4, &inet);
        let mut image = [IMG_COMMON_MAGIC.to_le_bytes(), FILES_MAGIC.to_le_bytes()].concat();
        image.extend_from_slice(&(entry.len() as u32).to_le_bytes());
        image.extend_from_slice(&entry);
        image
    }

    /// The (src, dst, state) of each inet socket of `files`.
    fn sockets(files: &[u8]) -> Vec<(Ipv4Addr, Ipv4Addr, u64)> {
        let mut found = Vec::new();
        let mut at = 8;
        while at < files.len() {
            let len = u32::from_le_bytes(files[at..at + 4].try_into().unwrap()) as usize;
            for_each_field(&files[at + 4..at + 4 + len], |n, v| {
                if let (4, Value::Bytes(sk)) = (n, v) {
                    let (mut src, mut dst, mut state) = (Vec::new(), Vec::new(), 0);
                    for_each_field(sk, |n, v| {
                        match (n, v) {
                            (6, Value::Varint(s)) => state = s,
                            (11, Value::Varint(w)) => src.push(w as u32),
                            (12, Value::Varint(w)) => dst.push(w as u32),
                            _ => {}
                        }
                        Ok(())
                    })?;
                    if let (Some(s), Some(d)) = (as_ipv4(&src), as_ipv4(&dst)) {
                        found.push((s, d, state));
                    }
                }
                Ok(())
            })
            .unwrap();
            at += 4 + len;
        }
        found
    }

    #[test]
    fn rewriting_moves_both_ends_and_keeps_every_other_byte() {
        let untouched = rewrite_socket_addresses(FILES, &BTreeMap::new()).unwrap();
        assert_eq!(untouched.0, FILES, "an empty map changes nothing, byte for byte");
        assert_eq!(untouched.1, SocketRewrite::default());
        // The real image's connection runs between two processes on 10.77.0.5.
        let (old, new) = (v4("10.77.0.5"), v4("10.88.0.5"));
        let (moved, done) = rewrite_socket_addresses(FILES, &BTreeMap::from([(old, new)])).unwrap();
        assert_eq!(done, SocketRewrite { kept: 1, closed: 0, rebound: 0 }, "{done:?}");
        let found = socket_addresses(&moved).unwrap();
        assert!(found.bound.contains(&IpAddr::V4(new)) && !found.bound.contains(&IpAddr::V4(old)), "{found:?}");
        assert!(found.bound.contains(&"fd00:77::5".parse::<IpAddr>().unwrap()), "IPv6 stays: {found:?}");
        assert_eq!(sockets(&moved).iter().filter(|(s, d, st)| *s == new && *d == new && *st == 1).count(), 1);
        let (back, _) = rewrite_socket_addresses(&moved, &BTreeMap::from([(new, old)])).unwrap();
        assert_eq!(back, FILES, "moving back gives the original image, byte for byte");
    }

    #[test]
    fn a_connection_between_members_is_kept_and_one_to_outside_closes() {
        let group = BTreeMap::from([(v4("172.20.0.3"), v4("172.31.0.3")), (v4("172.20.0.2"), v4("172.31.0.2"))]);
        let (between, done) = rewrite_socket_addresses(&one_socket("172.20.0.3", "172.20.0.2", 1), &group).unwrap();
        assert_eq!(done, SocketRewrite { kept: 1, ..SocketRewrite::default() });
        assert_eq!(sockets(&between), vec![(v4("172.31.0.3"), v4("172.31.0.2"), 1)]);
        let (outside, done) = rewrite_socket_addresses(&one_socket("172.20.0.3", "10.231.0.1", 1), &group).unwrap();
        assert_eq!(done, SocketRewrite { closed: 1, ..SocketRewrite::default() });
        assert_eq!(sockets(&outside), vec![(v4("172.31.0.3"), v4("10.231.0.1"), TCP_CLOSE)]);
        let (listener, done) =
            rewrite_socket_addresses(&one_socket("172.20.0.3", "0.0.0.0", TCP_LISTEN), &group).unwrap();
        assert_eq!(done, SocketRewrite { rebound: 1, ..SocketRewrite::default() });
        assert_eq!(sockets(&listener), vec![(v4("172.31.0.3"), v4("0.0.0.0"), TCP_LISTEN)]);
        let other = one_socket("192.0.2.1", "192.0.2.2", 1);
        assert_eq!(rewrite_socket_addresses(&other, &group).unwrap().0, other, "not in the map: untouched");
    }

    #[test]
    fn a_rewrite_refuses_what_is_not_a_files_image() {
        let map = BTreeMap::from([("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())]);
        assert!(rewrite_socket_addresses(&FILES[..6], &map).unwrap_err().detail.contains("truncated"));
        assert!(rewrite_socket_addresses(&FILES[..FILES.len() - 3], &map).unwrap_err().detail.contains("declares"));
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
