//! The files the wrapper writes: inside a container's root without following its links ([`safe`]),
//! the writable layer's changes against the destination's baseline ([`layer_delta`]), and the
//! directive and status files it shares with the broker ([`state_files`]).

pub mod layer_delta;
pub mod safe;
pub mod state_files;
