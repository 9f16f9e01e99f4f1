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
    /// A thread of the sink could not be started (the system is out of threads or memory).
    #[error("starting a thread of the sink: {0}")]
    Thread(String),
    /// The bus failed in a way that retrying does not fix.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The record's position on a partition is beyond the partition's end: the topic is not
    /// the one the record was read from (it was deleted and created again, or the database
    /// belongs to another cluster). Going on would skip every message up to the stored offset.
    #[error(
        "the record's position on {topic}[{partition}] is offset {stored}, but the partition \
         ends at offset {end}: the topic was recreated or the database belongs to another \
         cluster, and resuming would skip every message before offset {stored}; the sink \
         stops (see \"Offsets ahead of the topic\" in the README for the way out)"
    )]
    OffsetsAhead {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The next offset the record says to read.
        stored: i64,
        /// The partition's end offset on the broker.
        end: i64,
    },
}
