//! The bus's one error type, and how callers should react to each error.

use std::time::Duration;

/// What a caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Transient (broker unreachable, leader moving, queue full, timeout of a non-final step):
    /// retry the same call, with backoff.
    Retriable,
    /// The current transaction cannot commit: abort it, seek the consumer back to its
    /// committed offsets and redo the work in a new transaction.
    Abortable,
    /// Retrying cannot help. Either the client is unusable and must be recreated (fenced by a
    /// newer producer with the same transactional id, a commit or abort that timed out, a fatal
    /// librdkafka error), or the request itself can never succeed (invalid configuration, an
    /// oversized message, a client of the other backend).
    Fatal,
}

/// Every error of the bus. Messages name the topic, partition, offset, group or transactional
/// id involved; [`BusError::kind`] classifies them.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The configuration is invalid; every problem is listed, each naming its key.
    #[error("invalid bus configuration: {}", problems.join("; "))]
    Config {
        /// One line per problem, starting with the key it concerns.
        problems: Vec<String>,
    },
    /// librdkafka refused to create a client.
    #[error("could not create the Kafka {client}: {reason}")]
    Client {
        /// Which client: "producer", "consumer of group x", "admin client".
        client: String,
        /// librdkafka's explanation.
        reason: String,
    },
    /// A topic name Kafka would refuse.
    #[error("invalid topic name {topic:?}: {reason}")]
    InvalidTopic {
        /// The name as given.
        topic: String,
        /// The rule it breaks.
        reason: String,
    },
    /// Creating or describing a topic failed.
    #[error("topic {topic}: {op} failed: {reason}")]
    Admin {
        /// The topic being created or described; the message names it.
        topic: String,
        /// "create" or "list partitions".
        op: &'static str,
        /// For people: librdkafka's error text, or the backend's own account of what failed.
        reason: String,
        /// Decided where the error arose, from what the backend reported; [`BusError::kind`]
        /// returns it.
        kind: ErrorKind,
    },
    /// A message could not be enqueued or was not delivered.
    #[error("produce to topic {topic}{}: {reason}", partition.map(|p| format!(" partition {p}")).unwrap_or_default())]
    Produce {
        /// Destination topic.
        topic: String,
        /// Destination partition, when it was known.
        partition: Option<i32>,
        /// For people: librdkafka's error text, or the backend's own account of what failed.
        reason: String,
        /// Decided where the error arose, from what the backend reported; [`BusError::kind`]
        /// returns it.
        kind: ErrorKind,
    },
    /// Flushing the producer did not deliver everything in time.
    #[error("flush of producer {producer}: {reason}")]
    Flush {
        /// The producer's client or transactional id.
        producer: String,
        /// What went wrong (with the number of messages still queued).
        reason: String,
        /// Decided where the error arose, from what the backend reported; [`BusError::kind`]
        /// returns it.
        kind: ErrorKind,
    },
    /// A consumer operation (subscribe, poll, assignment, committed offsets, group metadata)
    /// failed.
    #[error("consumer group {group}: {op} failed: {reason}")]
    Consumer {
        /// The consumer's group.
        group: String,
        /// Which operation.
        op: &'static str,
        /// For people: librdkafka's error text, or the backend's own account of what failed.
        reason: String,
        /// Decided where the error arose, from what the backend reported; [`BusError::kind`]
        /// returns it.
        kind: ErrorKind,
    },
    /// Committing offsets failed.
    #[error("consumer group {group}: commit of offsets {offsets} failed: {reason}")]
    Commit {
        /// The consumer's group.
        group: String,
        /// The offsets, as `topic/partition@offset` items.
        offsets: String,
        /// For people: librdkafka's error text, or the backend's own account of what failed.
        reason: String,
        /// Decided where the error arose, from what the backend reported; [`BusError::kind`]
        /// returns it.
        kind: ErrorKind,
    },
    /// Seeking a partition failed.
    #[error(
        "consumer group {group}: seek of {topic}/{partition} to offset {offset} failed: {reason}"
    )]
    Seek {
        /// The consumer's group.
        group: String,
        /// Topic of the partition.
        topic: String,
        /// The partition whose read position was being moved.
        partition: i32,
        /// The offset asked for.
        offset: i64,
        /// For people: librdkafka's error text, or the backend's own account of what failed.
        reason: String,
        /// Decided where the error arose, from what the backend reported; [`BusError::kind`]
        /// returns it.
        kind: ErrorKind,
    },
    /// A transaction step failed.
    #[error("transactional id {transactional_id}: {op} failed: {reason}")]
    Transaction {
        /// The producer's transactional id.
        transactional_id: String,
        /// "init", "begin", "send_offsets_to_transaction", "commit", "abort", "produce".
        op: &'static str,
        /// For people: librdkafka's error text, or the backend's own account of what failed.
        reason: String,
        /// Decided where the error arose, from what the backend reported; [`BusError::kind`]
        /// returns it.
        kind: ErrorKind,
    },
    /// Waiting for a result took longer than the caller allowed.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The limit that passed.
        timeout: Duration,
    },
    /// A value made by one backend was handed to a client of the other.
    #[error("{what} comes from the {given} backend but the client is a {expected} client")]
    BackendMismatch {
        /// The value handed over.
        what: &'static str,
        /// The backend that made it.
        given: &'static str,
        /// The backend of the client.
        expected: &'static str,
    },
}

impl BusError {
    /// How the caller should react to this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            BusError::Config { .. }
            | BusError::Client { .. }
            | BusError::InvalidTopic { .. }
            | BusError::BackendMismatch { .. } => ErrorKind::Fatal,
            BusError::Timeout { .. } => ErrorKind::Retriable,
            BusError::Admin { kind, .. }
            | BusError::Produce { kind, .. }
            | BusError::Flush { kind, .. }
            | BusError::Consumer { kind, .. }
            | BusError::Commit { kind, .. }
            | BusError::Seek { kind, .. }
            | BusError::Transaction { kind, .. } => *kind,
        }
    }

    /// Whether retrying the same call may succeed.
    pub fn is_retriable(&self) -> bool {
        self.kind() == ErrorKind::Retriable
    }
    /// Whether a newer producer with the same transactional id took it over: both buses say
    /// "fenced" for it (librdkafka's `_FENCED` and `PRODUCER_FENCED`, the in-process bus's own
    /// text), and it is always fatal for the producer that gets it.
    pub fn is_fenced(&self) -> bool {
        self.kind() == ErrorKind::Fatal && self.to_string().to_ascii_lowercase().contains("fenced")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_failed() {
        let err = BusError::Produce {
            topic: "or.frames.v1".into(),
            partition: Some(3),
            reason: "Broker: Message size too large".into(),
            kind: ErrorKind::Fatal,
        };
        assert_eq!(
            err.to_string(),
            "produce to topic or.frames.v1 partition 3: Broker: Message size too large"
        );
        let err = BusError::Seek {
            group: "infer".into(),
            topic: "or.frames.v1".into(),
            partition: 2,
            offset: 41,
            reason: "not assigned".into(),
            kind: ErrorKind::Retriable,
        };
        assert!(err.to_string().contains("group infer"));
        assert!(err.to_string().contains("or.frames.v1/2 to offset 41"));
        assert!(err.is_retriable());
    }
}
