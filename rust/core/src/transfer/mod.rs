//! Moving data between providers through their Docker APIs, with nothing installed on the
//! hosts: tar streams copied from one archive endpoint to another and checked against their
//! manifest ([`archive`]), a container's writable layer in two passes (`layer_sync.rs`), and the
//! tar reading and writing both need ([`tar`]).

pub mod archive;
pub(crate) mod layer_sync;
pub mod tar;
