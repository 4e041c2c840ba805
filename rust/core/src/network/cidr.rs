//! IPv4 subnets in CIDR form, as Docker's IPAM reports them.

use std::net::Ipv4Addr;

/// Parses `a.b.c.d/len` into a network address and prefix length.
pub(crate) fn parse_cidr(value: &str) -> Option<(u32, u8)> {
    let (addr, len) = value.split_once('/')?;
    let len: u8 = len.parse().ok().filter(|l| *l <= 32)?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((u32::from(addr) & mask, len))
}

/// Whether two IPv4 subnets share any address.
pub(crate) fn overlaps(a: &str, b: &str) -> bool {
    match (parse_cidr(a), parse_cidr(b)) {
        (Some((na, la)), Some((nb, lb))) => {
            let len = la.min(lb);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            na & mask == nb & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn cidr_parser_never_panics(text in ".{0,24}") {
            let _ = parse_cidr(&text);
            let _ = overlaps(&text, "10.0.0.0/8");
        }

        #[test]
        fn cidr_round_trips(a in 0u8..=255, b in 0u8..=255, len in 0u8..=32) {
            let text = format!("{a}.{b}.0.0/{len}");
            let (network, parsed_len) = parse_cidr(&text).unwrap();
            proptest::prop_assert_eq!(parsed_len, len);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            proptest::prop_assert_eq!(network & !mask, 0);
        }
    }

    #[test]
    fn cidr_overlap() {
        assert!(overlaps("172.29.1.0/24", "172.29.0.0/16"));
        assert!(overlaps("10.0.0.0/8", "10.200.3.0/24"));
        assert!(!overlaps("172.29.1.0/24", "172.29.2.0/24"));
        assert!(!overlaps("bad", "10.0.0.0/8"));
    }
}
