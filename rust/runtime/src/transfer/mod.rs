//! The host-to-host stream of the direct path: the sender on the source ([`send`]), the receiver
//! on the destination ([`receive`]), the frames between them ([`wire`]) inside TLS 1.3 with the
//! migration's pinned certificate ([`tls`]), compressed where that pays ([`compress`]), and post-copy's page traffic after the images
//! ([`page_relay`]).

pub mod compress;
pub mod page_relay;
pub mod receive;
pub mod send;
pub mod tls;
pub mod wire;
