//! How the checkpoint moves.

pub(crate) mod direct;
