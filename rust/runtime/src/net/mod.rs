//! The network on the destination: the namespace prepared before the freeze and joined by the
//! restore ([`prepared_netns`]), the addresses the restored sockets need held there while Docker
//! has not wired it yet ([`restore_addresses`]), and the restored addresses announced by
//! gratuitous ARP ([`announce`]); inbound TCP dropped while the destination waits
//! ([`inbound_hold`]).

pub mod announce;
pub mod inbound_hold;
pub mod prepared_netns;
pub mod restore_addresses;
