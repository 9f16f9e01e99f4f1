//! Writing a topic and reading it back, on either bus.

use std::time::{Duration, Instant};

use orstream_bus::{Bus, Consumer, Delivery, Message, Record};
use orstream_proto::{FrameResult, SCHEMA_VERSION, StreamEvent, Wire, headers};

use crate::names::unique;

/// How long a send, a delivery or a read may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(180);

/// How long one poll waits.
const POLL: Duration = Duration::from_millis(200);

/// Sends every record, flushes, and waits for each delivery; where each landed, in order.
pub fn publish(bus: &Bus, records: &[Record]) -> Vec<Delivery> {
    let producer = bus.producer().unwrap();
    let handles: Vec<_> = records
        .iter()
        .map(|r| producer.send(r, PATIENCE).unwrap())
        .collect();
    producer.flush(PATIENCE).unwrap();
    handles
        .into_iter()
        .map(|h| h.wait(PATIENCE).unwrap())
        .collect()
}

/// A record on `topic` keyed `key` with the schema-version header every producer of the
/// contract sets: for a payload a test wants refused for what it holds, not for a missing header.
pub fn versioned(topic: &str, key: &str, payload: Vec<u8>) -> Record {
    Record::new(topic, payload)
        .with_key(key.to_owned())
        .with_header(headers::SCHEMA_VERSION, SCHEMA_VERSION)
}

/// A message of the results topic as the inference service publishes it.
pub fn result_record(topic: &str, result: &FrameResult) -> Record {
    versioned(topic, &result.stream_id, orstream_proto::encode(result))
}

/// A message of the streams topic as the ingest service publishes it.
pub fn stream_record(topic: &str, event: &StreamEvent) -> Record {
    versioned(topic, &event.stream_id, orstream_proto::encode(event))
}

/// A consumer in a fresh group, subscribed to `topic`: it reads from the beginning.
pub fn reader(bus: &Bus, topic: &str) -> Consumer {
    let consumer = bus.consumer(&unique("test-reader")).unwrap();
    consumer.subscribe(&[topic]).unwrap();
    consumer
}

/// Reads `topic` from the beginning (read_committed, a fresh group) until at least `at_least`
/// messages came and then nothing new for `quiet`, so duplicates past `at_least` are read too.
/// Fails when fewer than `at_least` came within [`PATIENCE`]; with that many, it stops there
/// even if messages keep coming.
pub fn read_until_quiet(bus: &Bus, topic: &str, at_least: usize, quiet: Duration) -> Vec<Message> {
    let consumer = reader(bus, topic);
    let deadline = Instant::now() + PATIENCE;
    let mut out = Vec::new();
    let mut last = Instant::now();
    while out.len() < at_least || last.elapsed() < quiet {
        if Instant::now() >= deadline {
            assert!(
                out.len() >= at_least,
                "read {} of {at_least} messages from {topic} in {PATIENCE:?}",
                out.len()
            );
            break;
        }
        if let Some(message) = consumer.poll(POLL).unwrap() {
            out.push(message);
            last = Instant::now();
        }
    }
    out
}

/// Every message's payload decoded as `M` (validated as a consumer would); fails on the first
/// that does not decode, naming its place.
pub fn decode_all<M: Wire>(messages: &[Message]) -> Vec<M> {
    messages
        .iter()
        .map(|m| {
            orstream_proto::decode(&m.payload)
                .unwrap_or_else(|e| panic!("{}/{}@{}: {e}", m.topic, m.partition, m.offset))
        })
        .collect()
}
