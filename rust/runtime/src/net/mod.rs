//! The network on the destination: the namespace prepared before the freeze and joined by the
//! restore ([`prepared_netns`]), and the restored addresses announced by gratuitous ARP
//! ([`announce`]).

pub mod announce;
pub mod prepared_netns;
