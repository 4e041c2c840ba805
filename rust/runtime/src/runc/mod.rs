//! What the wrapper reads of runc's world: its command line as the shim passes it ([`args`]),
//! the log format it writes ([`log`]), the container's OCI spec and runc's state ([`spec`]).

pub mod args;
pub mod log;
pub mod spec;
