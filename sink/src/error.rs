//! The sink's errors ([`SinkError`]), each saying what failed and on what; the record store's
//! own ([`StoreError`]) come from `orstream_record` and say whether retrying can help.

use orstream_bus::BusError;
use orstream_record::StoreError;

/// Every error the sink returns.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The configuration is invalid; every problem is listed, each naming its key.
    #[error("invalid sink configuration: {}", problems.join("; "))]
    Config {
        /// One line per problem, starting with the key it concerns.
        problems: Vec<String>,
    },
    /// The record store failed in a way that retrying does not fix.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bus failed in a way that retrying does not fix.
    #[error(transparent)]
    Bus(#[from] BusError),
}
