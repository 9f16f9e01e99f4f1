//! Publishing from the outbox. Derived events (to `events_topic`, keyed by case_id) and
//! per-frame track assignments (to `tracks_topic`, keyed by stream_id) are written into the
//! store's outbox by the transaction that records them, so nothing is published that the
//! record does not hold; they go out after the commit, oldest first, and are deleted once the
//! broker acknowledged them. A crash or a failure in between publishes them again with the
//! same deterministic ids, and consumers deduplicate on `event_id`. A failed round is tried
//! again on a later turn of the loop, after a backoff, so storing never waits on publishing.

use std::borrow::Borrow;
use std::time::{Duration, Instant};

use orstream_bus::{BusError, Producer, Record};
use orstream_proto::{SCHEMA_VERSION, headers};
use orstream_record::store::{OutboxItem, OutboxTopic, Store};

use crate::config::SinkConfig;
use crate::progress::Progress;
use orstream_shell::retry::{Backoff, Streak};

/// Outbox entries published per round.
const PUBLISH_CHUNK: usize = 500;

/// Sends every record, then waits for the broker to acknowledge each; the first failure ends
/// it (records already sent may then be sent again by the caller's next try).
pub(crate) fn send_all<R: Borrow<Record>>(
    producer: &Producer,
    records: impl IntoIterator<Item = R>,
    timeout: Duration,
) -> Result<(), BusError> {
    let handles = records
        .into_iter()
        .map(|record| producer.send(record.borrow(), timeout))
        .collect::<Result<Vec<_>, _>>()?;
    for handle in handles {
        handle.wait(timeout)?;
    }
    Ok(())
}

/// Whether the outbox may hold entries, and when the next round may run after failures.
#[derive(Debug)]
pub(crate) struct Publisher {
    /// Set at start (an earlier run may have left entries) and by every commit that adds some.
    pending: bool,
    after: Instant,
    failures: Streak,
}

impl Publisher {
    pub(crate) fn new() -> Self {
        Self {
            pending: true,
            after: Instant::now(),
            failures: Streak::default(),
        }
    }

    /// A committed batch added entries.
    pub(crate) fn added(&mut self) {
        self.pending = true;
    }

    pub(crate) fn is_pending(&self) -> bool {
        self.pending
    }

    /// Whether a round should run now: entries may wait and no failure's backoff is running.
    pub(crate) fn is_due(&self) -> bool {
        self.pending && Instant::now() >= self.after
    }

    /// Publishes the outbox entries of the input partitions `sources` (those this sink holds)
    /// until none is left, or until a round fails: the entries then stay for a later round,
    /// after a pause.
    pub(crate) fn publish(
        &mut self,
        store: &mut Store,
        producer: &Producer,
        config: &SinkConfig,
        progress: &Progress,
        backoff: Backoff,
        sources: &[(String, i32)],
    ) {
        loop {
            let Some(published) = publish_chunk(store, producer, config, progress, sources) else {
                self.after = Instant::now() + self.failures.failed(backoff);
                return;
            };
            if published < PUBLISH_CHUNK {
                self.pending = false;
                self.failures.reset();
                return;
            }
        }
    }
}

/// Publishes the oldest entries of `sources` and deletes them from the outbox. How many it
/// published, or None when a step failed (logged).
fn publish_chunk(
    store: &mut Store,
    producer: &Producer,
    config: &SinkConfig,
    progress: &Progress,
    sources: &[(String, i32)],
) -> Option<usize> {
    let items = store
        .outbox_of(PUBLISH_CHUNK, Some(sources))
        .inspect_err(|error| tracing::warn!(%error, "reading the event outbox"))
        .ok()?;
    if items.is_empty() {
        return Some(0);
    }
    let positions: Vec<i64> = items.iter().map(|i| i.position).collect();
    let records = items.iter().map(|item| record(item, config));
    send_all(producer, records, config.publish_timeout)
        .inspect_err(|error| tracing::warn!(%error, "publishing events"))
        .ok()?;
    store
        .delete_outbox(&positions)
        .inspect_err(|error| tracing::warn!(%error, "clearing the event outbox"))
        .ok()?;
    let n = items.len() as u64;
    progress.update(|s| s.published += n);
    Some(items.len())
}

fn record(item: &OutboxItem, config: &SinkConfig) -> Record {
    let topic = match item.entry.topic {
        OutboxTopic::Events => &config.events_topic,
        OutboxTopic::Tracks => &config.tracks_topic,
    };
    Record::new(topic.clone(), item.entry.payload.clone())
        .with_key(item.entry.key.clone().into_bytes())
        .with_header(headers::SCHEMA_VERSION, SCHEMA_VERSION)
}
