//! Dead letters: a message the sink rejects goes, unchanged, to `<topic>.dlq` with headers
//! naming its source topic, partition, offset and the reason, so it can be inspected and
//! replayed. They are sent and acknowledged before the transaction that stores the rejected
//! message's offset: a crash in between sends one twice (at least once), never zero times.

use std::time::Duration;

use orstream_bus::metrics::{HealthReporter, checks};
use orstream_bus::{BusError, Message, Producer, Record};
use orstream_proto::{headers, topics};
use tokio_util::sync::CancellationToken;

use crate::decode::Rejection;
use crate::publish::send_all;
use orstream_shell::retry::{Backoff, retry};

/// The dead letter of `message`: its key, payload and headers, plus where it came from and
/// why it was rejected.
pub(crate) fn record(message: &Message, rejection: &Rejection) -> Record {
    let mut record = Record::new(topics::dlq(&message.topic), message.payload.clone())
        .with_headers(message.headers.clone())
        .with_header(headers::DLQ_SOURCE_TOPIC, message.topic.as_str())
        .with_header(headers::DLQ_SOURCE_PARTITION, message.partition.to_string())
        .with_header(headers::DLQ_SOURCE_OFFSET, message.offset.to_string())
        .with_header(headers::DLQ_ERROR, rejection.reason.as_str());
    if let Some(key) = &message.key {
        record = record.with_key(key.clone());
    }
    record
}

/// Sends `records` and waits for the broker to take each, all again after any failure
/// (the broker away is waited out). False when shutdown came first: the batch is then not
/// stored, and read again on the next start.
pub(crate) fn send(
    producer: &Producer,
    records: &[Record],
    timeout: Duration,
    health: &dyn HealthReporter,
    backoff: Backoff,
    shutdown: &CancellationToken,
) -> bool {
    let sent = retry(
        backoff,
        shutdown,
        || send_all(producer, records, timeout),
        |_| true,
        |e: &BusError, attempt| {
            health.beat();
            health.set_ready(checks::BROKER, false);
            tracing::warn!(error = %e, attempt, "sending dead letters; retrying");
        },
    );
    matches!(sent, Ok(Some(())))
}
