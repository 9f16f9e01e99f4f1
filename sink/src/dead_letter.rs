//! Dead letters: a message the sink rejects goes to `<topic>.dlq` with headers naming its
//! source topic, partition, offset and the reason, so it can be inspected and replayed; its
//! payload goes unchanged up to a cap that keeps the record under the broker's message limit
//! (a longer one is cut, and a header gives its full length). They are sent and acknowledged
//! before the transaction that stores the rejected message's offset: a crash in between sends
//! one twice (at least once), never zero times. A topic that cannot be written is tried a few
//! times; then the batch is given up unstored (nothing is committed past a message that has
//! not gone somewhere) and the service holds its consumer (see [`Sent::Failed`]).

use std::time::Duration;

use orstream_bus::metrics::{HealthReporter, checks};
use orstream_bus::{BusError, Message, Producer, Record};
use orstream_proto::{headers, topics};
use tokio_util::sync::CancellationToken;

use crate::decode::Rejection;
use crate::publish::send_all;
use orstream_shell::retry::{Backoff, retry_at_most};

/// Tries at sending a batch's dead letters before the batch is given up for now.
pub(crate) const ATTEMPTS: u32 = 5;

/// Room left for a dead letter's key and headers under the broker's message limit.
const HEADER_ROOM: usize = 64 << 10;

/// The largest dead-letter payload for a broker that takes messages of up to
/// `message_max_bytes`.
pub(crate) fn payload_cap(message_max_bytes: usize) -> usize {
    message_max_bytes.saturating_sub(HEADER_ROOM).max(1 << 10)
}

/// The dead letter of `message`: its key, payload (up to `max_payload` bytes) and headers,
/// plus where it came from and why it was rejected.
pub(crate) fn record(message: &Message, rejection: &Rejection, max_payload: usize) -> Record {
    let mut payload = message.payload.clone();
    let mut headers = message.headers.clone();
    if payload.len() > max_payload {
        headers.push(
            headers::DLQ_ORIGINAL_LENGTH,
            payload.len().to_string().into_bytes(),
        );
        payload.truncate(max_payload);
    }
    let mut record = Record::new(topics::dlq(&message.topic), payload)
        .with_headers(headers)
        .with_header(headers::DLQ_SOURCE_TOPIC, message.topic.as_str())
        .with_header(headers::DLQ_SOURCE_PARTITION, message.partition.to_string())
        .with_header(headers::DLQ_SOURCE_OFFSET, message.offset.to_string())
        .with_header(headers::DLQ_ERROR, rejection.reason.as_str());
    if let Some(key) = &message.key {
        record = record.with_key(key.clone());
    }
    record
}

/// How sending a batch's dead letters ended.
#[derive(Debug)]
pub(crate) enum Sent {
    /// Every one is on its topic (or there were none).
    Yes,
    /// Shutdown came first: the batch is not stored, and read again on the next start.
    Stopped,
    /// The topic could not be written after [`ATTEMPTS`] tries (or refused for good): the
    /// batch is not stored, and the service stops consuming for a while.
    Failed(BusError),
}

/// Sends `records` and waits for the broker to take each, all again after a failure, up to
/// [`ATTEMPTS`] tries with the backoff between them.
pub(crate) fn send(
    producer: &Producer,
    records: &[Record],
    timeout: Duration,
    health: &dyn HealthReporter,
    backoff: Backoff,
    shutdown: &CancellationToken,
) -> Sent {
    if records.is_empty() {
        return Sent::Yes;
    }
    let sent = retry_at_most(
        ATTEMPTS,
        backoff,
        shutdown,
        || send_all(producer, records, timeout),
        BusError::is_retriable,
        |e: &BusError, attempt| {
            health.beat();
            tracing::warn!(error = %e, attempt, "sending dead letters; retrying");
        },
    );
    match sent {
        Ok(Some(())) => {
            health.set_ready(checks::DEAD_LETTERS, true);
            Sent::Yes
        }
        Ok(None) => Sent::Stopped,
        Err(error) => {
            health.set_ready(checks::DEAD_LETTERS, false);
            Sent::Failed(error)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use orstream_bus::{Bus, Headers};

    use super::*;
    use crate::derive::AnomalyKind;

    fn message(payload: Vec<u8>) -> Message {
        Message {
            topic: "or.results.v1".into(),
            partition: 2,
            offset: 41,
            key: Some(b"cam-1".to_vec().into()),
            payload: payload.into(),
            headers: Headers::new(),
            timestamp_ms: None,
        }
    }

    fn rejection() -> Rejection {
        Rejection {
            kind: AnomalyKind::InvalidValue,
            reason: "FrameResult: invalid field instances: 5000 entries, more than 1024".into(),
        }
    }

    #[test]
    fn a_payload_over_the_cap_is_cut_and_its_length_kept() {
        let cap = payload_cap(1 << 20);
        assert_eq!(cap, (1 << 20) - (64 << 10));
        let whole = record(&message(vec![7; 100]), &rejection(), cap);
        assert_eq!(whole.payload.len(), 100);
        assert!(whole.headers.get(headers::DLQ_ORIGINAL_LENGTH).is_none());

        let cut = record(&message(vec![7; cap + 5]), &rejection(), cap);
        assert_eq!(cut.payload.len(), cap);
        assert_eq!(
            cut.headers.get(headers::DLQ_ORIGINAL_LENGTH),
            Some((cap + 5).to_string().as_bytes())
        );
        assert_eq!(cut.topic, "or.results.v1.dlq");
        assert_eq!(
            cut.headers.get(headers::DLQ_SOURCE_OFFSET),
            Some(&b"41"[..])
        );
        assert_eq!(payload_cap(10), 1 << 10, "a floor for absurd limits");
    }

    /// Readiness reports, in order.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<(String, bool)>>);

    impl HealthReporter for Recorded {
        fn beat(&self) {}
        fn set_ready(&self, check: &str, ready: bool) {
            self.0.lock().unwrap().push((check.to_owned(), ready));
        }
    }

    #[test]
    fn a_topic_that_cannot_be_written_is_tried_a_few_times_then_given_up() {
        let bus = Bus::memory();
        let producer = bus.producer().unwrap();
        // The dead-letter topic does not exist: every send fails, retriably.
        let letters = vec![record(&message(vec![1, 2, 3]), &rejection(), 1 << 10)];
        let health = Recorded::default();
        let backoff = Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(5),
        };
        let attempt = || {
            send(
                &producer,
                &letters,
                Duration::from_millis(100),
                &health,
                backoff,
                &CancellationToken::new(),
            )
        };
        let sent = attempt();
        assert!(matches!(sent, Sent::Failed(_)), "{sent:?}");
        assert_eq!(
            health.0.lock().unwrap().last(),
            Some(&(checks::DEAD_LETTERS.to_owned(), false))
        );

        bus.create_topic("or.results.v1.dlq", 1, Duration::from_secs(1))
            .unwrap();
        let sent = attempt();
        assert!(matches!(sent, Sent::Yes), "{sent:?}");
        assert_eq!(
            health.0.lock().unwrap().last(),
            Some(&(checks::DEAD_LETTERS.to_owned(), true))
        );
    }
}
