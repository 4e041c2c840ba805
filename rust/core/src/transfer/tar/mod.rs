//! Tar streams: read into a manifest as they pass, and written for small files.

pub mod manifest;
pub(crate) mod writer;
