//! A group's new addresses, decided before anything of it is frozen.
//!
//! One container moving alone learns its new address once the destination started it, and the
//! peers that stay are pointed at it afterwards. A group moves together: each member must be
//! told its peers' new addresses before the freeze (its environment and peer files are rewritten
//! as its destination is created, its sockets' images as they arrive), so the group decides the
//! addresses itself. On every network the destination remaps, each member keeps its host part:
//! `172.20.0.3` in `172.20.0.0/16` becomes `172.31.0.3` in `172.31.0.0/16`. The rule is the
//! one a person would apply, it is the same in both directions (so moving back restores the
//! original addresses when the original subnet is free), and it needs no coordination with
//! Docker's IPAM beyond asking for a fixed address.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::network::cidr::parse_cidr;

/// The address with `old`'s host part (its offset in `old_subnet`) in `new_subnet`; `Err` says
/// why there is none: a malformed input, an offset that does not fit, or one that falls on the
/// new subnet's network, broadcast or gateway address.
pub(crate) fn same_host_part(
    old: &str,
    old_subnet: &str,
    new_subnet: &str,
    new_gateway: Option<&str>,
) -> Result<String, String> {
    let address: Ipv4Addr = old.parse().map_err(|_| format!("`{old}` is not an IPv4 address"))?;
    let (old_base, _) = parse_cidr(old_subnet).ok_or_else(|| format!("`{old_subnet}` is not an IPv4 subnet"))?;
    let (new_base, new_len) = parse_cidr(new_subnet).ok_or_else(|| format!("`{new_subnet}` is not an IPv4 subnet"))?;
    let offset = u32::from(address).wrapping_sub(old_base);
    let size = if new_len == 0 { u64::from(u32::MAX) + 1 } else { 1u64 << (32 - new_len) };
    if u64::from(offset) >= size.saturating_sub(1) || offset == 0 {
        return Err(format!("host part {offset} of `{old}` does not fit in {new_subnet}"));
    }
    let new = Ipv4Addr::from(new_base + offset).to_string();
    if Some(new.as_str()) == new_gateway {
        return Err(format!("`{new}`, `{old}`'s host part in {new_subnet}, is that network's gateway"));
    }
    Ok(new)
}

/// Adds `group_map` (every member's old address -> new) to a member's own `address_map`. The
/// group's addresses win: a caller's entry for a member's old address can only be stale.
pub(crate) fn with_group_map(
    own: &BTreeMap<String, String>,
    group_map: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut merged = own.clone();
    for (old, new) in group_map {
        if let Some(previous) = merged.insert(old.clone(), new.clone()) {
            if &previous != new {
                tracing::warn!(%old, %previous, %new, "address_map entry replaced by the group's own new address");
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Old address, old subnet, new subnet, new gateway, and the new address or a word of why not.
    type Case = (&'static str, &'static str, &'static str, Option<&'static str>, Result<&'static str, &'static str>);

    #[test]
    fn the_host_part_is_kept_in_the_new_subnet() {
        let table: [Case; 7] = [
            ("172.20.0.3", "172.20.0.0/16", "172.31.0.0/16", Some("172.31.0.1"), Ok("172.31.0.3")),
            ("10.0.5.9", "10.0.0.0/16", "192.168.0.0/20", None, Ok("192.168.5.9")),
            ("10.0.5.9", "10.0.0.0/16", "192.168.0.0/24", None, Err("does not fit")),
            ("10.0.0.255", "10.0.0.0/16", "10.9.0.0/24", None, Err("does not fit")),
            ("10.0.0.1", "10.0.0.0/24", "10.9.0.0/24", Some("10.9.0.1"), Err("gateway")),
            ("nonsense", "10.0.0.0/24", "10.9.0.0/24", None, Err("not an IPv4 address")),
            ("10.0.0.7", "10.0.0.0/24", "fd00::/64", None, Err("not an IPv4 subnet")),
        ];
        for (old, from, to, gateway, expected) in table {
            let got = same_host_part(old, from, to, gateway);
            match (got, expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(got), Err(want)) => assert!(got.contains(want), "{got} / {want}"),
                (got, want) => panic!("{old} {from} -> {to}: {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn moving_back_gives_the_original_address() {
        let there = same_host_part("172.20.0.3", "172.20.0.0/16", "172.31.0.0/16", None).unwrap();
        assert_eq!(same_host_part(&there, "172.31.0.0/16", "172.20.0.0/16", None).unwrap(), "172.20.0.3");
    }

    #[test]
    fn the_group_map_wins_over_a_stale_entry() {
        let own = BTreeMap::from([("10.0.0.2".into(), "10.9.9.9".into()), ("192.0.2.1".into(), "192.0.2.2".into())]);
        let group = BTreeMap::from([("10.0.0.2".into(), "10.1.0.2".into())]);
        let merged = with_group_map(&own, &group);
        assert_eq!(merged["10.0.0.2"], "10.1.0.2");
        assert_eq!(merged["192.0.2.1"], "192.0.2.2");
    }
}
