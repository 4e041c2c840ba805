//! Moving data between providers through their Docker APIs: tar streams copied with a manifest, the writable layer in two passes.

pub mod archive;
pub(crate) mod layer_sync;
pub mod tar;
