//! The two ends of a migration.

use std::fmt;

/// Which end of a migration something is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Side {
    /// The provider the container runs on before the migration.
    Source,
    /// The provider it moves to.
    Destination,
}

impl Side {
    /// Of `(source, destination)`, the one on this side.
    pub(crate) fn of<T>(self, (source, destination): (T, T)) -> T {
        match self {
            Side::Source => source,
            Side::Destination => destination,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
        })
    }
}
