//! What the sink counts and times, recorded through the global meter
//! ([`orstream_bus::metrics`]): results stored, events written (by kind), capture-to-record
//! latency, database transactions (by outcome) and their duration, dead letters (by reason and
//! source topic), and the messaging conventions' messages consumed and their processing time. Labels come from closed sets and the configured topic names only.

use std::time::Duration;

use orstream_bus::metrics::{self, Counter, Histogram, KeyValue, attr, value};

/// The sink's instruments. Cheap to clone.
#[derive(Clone)]
pub(crate) struct SinkMetrics {
    results_stored: Counter<u64>,
    events_written: Counter<u64>,
    capture_to_record: Histogram<f64>,
    transactions: Counter<u64>,
    transaction_duration: Histogram<f64>,
    dead_letters: Counter<u64>,
    consumed: Counter<u64>,
    process: Histogram<f64>,
}

impl std::fmt::Debug for SinkMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkMetrics").finish_non_exhaustive()
    }
}

/// What one committed transaction stored, for [`SinkMetrics::committed`].
#[derive(Debug, Default)]
pub(crate) struct Committed<'a> {
    pub(crate) results: u64,
    pub(crate) presences: u64,
    pub(crate) gaps: u64,
    pub(crate) tracks: u64,
    pub(crate) anomalies: u64,
    /// Capture time (Unix ns) of each stored result.
    pub(crate) capture_ns: &'a [i64],
    /// (reason, source topic) of each dead letter the transaction accounts for.
    pub(crate) dead_letters: &'a [(&'static str, String)],
}

impl SinkMetrics {
    pub(crate) fn new() -> Self {
        let meter = metrics::meter();
        Self {
            results_stored: metrics::SINK_RESULTS_STORED.build(&meter),
            events_written: metrics::SINK_EVENTS_WRITTEN.build(&meter),
            capture_to_record: metrics::SINK_CAPTURE_TO_RECORD.build(&meter),
            transactions: metrics::TRANSACTIONS.build(&meter),
            transaction_duration: metrics::TRANSACTION_DURATION.build(&meter),
            dead_letters: metrics::DEAD_LETTERS.build(&meter),
            consumed: metrics::MESSAGING_CONSUMED.build(&meter),
            process: metrics::MESSAGING_PROCESS_DURATION.build(&meter),
        }
    }

    /// Counts a batch's messages by topic as consumed; returns the counts for
    /// [`processed`](Self::processed).
    pub(crate) fn consumed(&self, messages: &[orstream_bus::Message]) -> Vec<(String, u64)> {
        let mut by_topic: Vec<(String, u64)> = Vec::new();
        for message in messages {
            match by_topic.iter_mut().find(|(t, _)| *t == message.topic) {
                Some((_, n)) => *n += 1,
                None => by_topic.push((message.topic.clone(), 1)),
            }
        }
        for (topic, n) in &by_topic {
            self.consumed.add(
                *n,
                &[KeyValue::new(
                    attr::MESSAGING_DESTINATION_NAME,
                    topic.clone(),
                )],
            );
        }
        by_topic
    }

    /// The batch of `consumed` messages took `took` from being read to being stored (or given
    /// up): each message's processing time.
    pub(crate) fn processed(&self, consumed: &[(String, u64)], took: Duration) {
        for (topic, n) in consumed {
            let attributes = [KeyValue::new(
                attr::MESSAGING_DESTINATION_NAME,
                topic.clone(),
            )];
            for _ in 0..*n {
                self.process.record(took.as_secs_f64(), &attributes);
            }
        }
    }

    /// A transaction committed after `took`, at `committed_ns` (Unix ns), storing `what`.
    pub(crate) fn committed(&self, took: Duration, committed_ns: i64, what: &Committed<'_>) {
        self.transaction(value::COMMITTED, took);
        // Latencies first: a scrape that sees the results stored sees their latencies too.
        for capture in what.capture_ns {
            let ns = committed_ns.saturating_sub(*capture).max(0);
            self.capture_to_record.record(ns as f64 / 1e9, &[]);
        }
        self.results_stored.add(what.results, &[]);
        for (kind, n) in [
            (value::PRESENCE, what.presences),
            (value::GAP, what.gaps),
            (value::TRACK, what.tracks),
            (value::ANOMALY, what.anomalies),
        ] {
            if n > 0 {
                self.events_written
                    .add(n, &[KeyValue::new(attr::EVENT_KIND, kind)]);
            }
        }
        for (reason, topic) in what.dead_letters {
            self.dead_letters.add(
                1,
                &[
                    KeyValue::new(attr::REASON, *reason),
                    KeyValue::new(attr::MESSAGING_DESTINATION_NAME, topic.clone()),
                ],
            );
        }
    }

    /// A transaction was rolled back (conflict, or the database failed) after `took`.
    pub(crate) fn aborted(&self, took: Duration) {
        self.transaction(value::ABORTED, took);
    }

    fn transaction(&self, outcome: &'static str, took: Duration) {
        let outcome = [KeyValue::new(attr::TRANSACTION_OUTCOME, outcome)];
        self.transactions.add(1, &outcome);
        self.transaction_duration
            .record(took.as_secs_f64(), &outcome);
    }
}
