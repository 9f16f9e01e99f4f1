//! The record's one error type, [`StoreError`]: what failed on which backend, and whether
//! retrying can help (the sink retries, the CLI reports).

/// Errors of the record store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL names no supported backend.
    #[error(
        "unsupported store URL {url:?}: expected sqlite://PATH, sqlite::memory: or postgres://..."
    )]
    Url {
        /// The URL with any password removed.
        url: String,
    },
    /// The database refused or failed a statement, or the connection broke.
    #[error("{backend} store: {op}: {reason}")]
    Database {
        /// "PostgreSQL" or "SQLite".
        backend: &'static str,
        /// What was being done ("connect", "write batch", "load offsets", ...).
        op: String,
        /// The driver's explanation.
        reason: String,
        /// Whether the same call may succeed later (connection lost, server shutting down,
        /// database busy, serialization failure).
        retriable: bool,
    },
    /// Another writer moved a consumer offset or a stream's derivation state since this sink
    /// read it (a rebalance handed the partition elsewhere, or an earlier commit whose
    /// acknowledgement was lost did land). The transaction was rolled back; reload from the
    /// store and go on from there.
    #[error("store conflict: {what} was changed by another writer; reloading from the store")]
    Conflict {
        /// The row that moved, e.g. "offset of or.results.v1/2" or "state of stream cam-1".
        what: String,
    },
    /// A stored derivation state could not be read back.
    #[error("derivation state of stream {stream_id} is unreadable: {reason}")]
    State {
        /// The stream whose state is unreadable.
        stream_id: String,
        /// The JSON error.
        reason: String,
    },
    /// A stored JSON detail (of a stream event) could not be read back.
    #[error("{what} is unreadable: {reason}")]
    Detail {
        /// Which row, e.g. "the end event of stream cam-1".
        what: String,
        /// The JSON error.
        reason: String,
    },
    /// The database holds a schema newer than this build knows.
    #[error("{backend} store: schema version {found} is newer than this build's {known}")]
    SchemaTooNew {
        /// "PostgreSQL" or "SQLite".
        backend: &'static str,
        /// The newest migration recorded in the database.
        found: i64,
        /// The newest migration this build has.
        known: i64,
    },
}

impl StoreError {
    /// Whether retrying (after a pause and, for a lost connection, a reconnect) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            StoreError::Database { retriable, .. } => *retriable,
            StoreError::Conflict { .. } => true,
            StoreError::Url { .. }
            | StoreError::State { .. }
            | StoreError::Detail { .. }
            | StoreError::SchemaTooNew { .. } => false,
        }
    }
}
