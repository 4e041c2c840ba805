//! Tar streams: read into a manifest as they pass, and written for small files.

pub mod manifest;
pub mod reader;
#[cfg(test)]
pub(crate) mod tests;
pub(crate) mod writer;
