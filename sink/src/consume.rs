//! Consuming: one batch of messages per turn of the loop, up to `batch_max_messages` within
//! `batch_max_wait`, ended early once `batch_linger` passes without a message, from the
//! results and streams topics as one read_committed group.
//!
//! Where to read is the store's to say, never the group's: after every rebalance (and after a
//! store conflict) each assigned partition is moved (seek) to the offset stored with the
//! record before anything from it is kept, and what was collected is dropped, since another
//! instance may have stored more meanwhile. The group's offsets are only committed as a hint
//! for lag dashboards, asynchronously, so a broker outage never stops the loop.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orstream_bus::metrics::{HealthReporter, checks};
use orstream_bus::{Bus, Consumer, ErrorKind, Message, Offsets, TopicPartition};
use orstream_record::store::Store;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::config::SinkConfig;
use crate::error::SinkError;
use crate::progress::Reporter;
use orstream_shell::retry::{Backoff, Streak, pause};

/// How long bus admin and seek calls may take.
pub(crate) const BUS_TIMEOUT: Duration = Duration::from_secs(10);

/// Seeks to the store's offsets failing this long are said at warn (and again as often).
const SEEK_WARN_AFTER: Duration = Duration::from_secs(10);

/// The sink's consumer and what it must do before its messages can be used.
pub(crate) struct Intake {
    consumer: Arc<Consumer>,
    seen_rebalances: u64,
    /// The assignment changed since [`take_reassigned`](Self::take_reassigned) last asked.
    reassigned: bool,
    /// Assigned partitions not yet moved to the store's offset; their messages are dropped.
    pending_seek: BTreeSet<TopicPartition>,
    /// Consecutive failures to load the offsets, for the backoff.
    offset_failures: Streak,
    /// Since when seeks of pending partitions fail, and when that was last said at warn.
    seek_failing_since: Option<Instant>,
    seek_warned: Option<Instant>,
    max_messages: usize,
    max_wait: Duration,
    linger: Duration,
    backoff: Backoff,
    /// Consuming is held (the consumer paused, still polled so the group keeps this member)
    /// until then.
    held_until: Option<Instant>,
}

impl Intake {
    /// Joins the sink's group on the results and streams topics.
    pub(crate) fn subscribe(
        bus: &Bus,
        config: &SinkConfig,
        backoff: Backoff,
    ) -> Result<Self, SinkError> {
        let consumer = bus.consumer(&config.group_id)?;
        consumer.subscribe(&[&config.results_topic, &config.streams_topic])?;
        Ok(Self {
            consumer: Arc::new(consumer),
            seen_rebalances: 0,
            reassigned: false,
            pending_seek: BTreeSet::new(),
            offset_failures: Streak::default(),
            seek_failing_since: None,
            seek_warned: None,
            max_messages: config.batch_max_messages,
            max_wait: config.batch_max_wait,
            linger: config.batch_linger,
            backoff,
            held_until: None,
        })
    }

    pub(crate) fn consumer(&self) -> &Consumer {
        &self.consumer
    }

    /// The consumer, shared with the broker check's thread (which measures its lag).
    pub(crate) fn shared_consumer(&self) -> Arc<Consumer> {
        self.consumer.clone()
    }

    /// Collects the next batch. A rebalance drops what was collected: every newly assigned
    /// partition is first moved to the offset the store holds, and read again from there.
    pub(crate) fn poll_batch(
        &mut self,
        store: &mut Store,
        cache: &mut Cache,
        report: &Reporter,
        shutdown: &CancellationToken,
    ) -> Result<Vec<Message>, SinkError> {
        let deadline = Instant::now() + self.max_wait;
        let mut batch = Vec::new();
        self.release_if_due()?;
        loop {
            if !self.pending_seek.is_empty() {
                self.seek_pending(store, cache, report, shutdown)?;
            }
            report.health.beat();
            let remaining = deadline.saturating_duration_since(Instant::now());
            // The first message may be waited for up to the batch's deadline; after it, the
            // batch takes what keeps coming and is stored once a `linger` passes without any
            // (a transaction's results arrive together), so waiting never adds more latency
            // than that while the sink keeps up.
            let timeout = if batch.is_empty() {
                remaining
            } else {
                remaining.min(self.linger)
            };
            let polled = self.poll(timeout, &*report.health, shutdown)?;
            if self.rebalanced(cache, &*report.health)? {
                batch.clear();
                continue;
            }
            if let Some(message) = polled {
                if self.pending_seek.contains(&message.topic_partition()) {
                    continue;
                }
                batch.push(message);
                if batch.len() >= self.max_messages {
                    break;
                }
            } else if !batch.is_empty() {
                break;
            }
            if Instant::now() >= deadline || shutdown.is_cancelled() {
                break;
            }
        }
        Ok(batch)
    }

    /// One message, or none within `timeout`. The broker away is waited out briefly and
    /// counted against readiness; only a fatal consumer error ends the sink.
    fn poll(
        &self,
        timeout: Duration,
        health: &dyn HealthReporter,
        shutdown: &CancellationToken,
    ) -> Result<Option<Message>, SinkError> {
        match self.consumer.poll(timeout) {
            Ok(polled) => Ok(polled),
            Err(e) if e.kind() != ErrorKind::Fatal => {
                health.set_ready(checks::BROKER, false);
                tracing::warn!(error = %e, "poll");
                pause(timeout.min(Duration::from_millis(100)), shutdown);
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the assignment changed since the last look; if so, the new one is to be read
    /// from the store's offsets.
    fn rebalanced(
        &mut self,
        cache: &mut Cache,
        health: &dyn HealthReporter,
    ) -> Result<bool, SinkError> {
        let rebalances = self.consumer.rebalances();
        if rebalances == self.seen_rebalances {
            return Ok(false);
        }
        self.seen_rebalances = rebalances;
        self.reassigned = true;
        let assignment = self.consumer.assignment()?;
        tracing::info!(partitions = assignment.len(), "assignment changed");
        health.set_ready(checks::PARTITIONS_ASSIGNED, !assignment.is_empty());
        self.forget(cache, assignment);
        Ok(true)
    }

    /// Whether the assignment changed since the last call (partitions newly held may have
    /// outbox entries their former holder left).
    pub(crate) fn take_reassigned(&mut self) -> bool {
        std::mem::take(&mut self.reassigned)
    }

    /// Stops delivering messages for `pause`: polling goes on (membership, rebalances), the
    /// batches it returns are empty.
    pub(crate) fn hold(&mut self, pause: Duration) {
        if let Err(error) = self.consumer.pause() {
            tracing::warn!(%error, "pausing the consumer");
        }
        self.held_until = Some(Instant::now() + pause);
    }

    /// Ends a hold whose time is over.
    fn release_if_due(&mut self) -> Result<(), SinkError> {
        if self.held_until.is_some_and(|until| Instant::now() >= until) {
            self.held_until = None;
            self.consumer.resume()?;
            tracing::info!("consuming again");
        }
        Ok(())
    }

    /// After a store conflict: another writer moved on, so everything is read again from the
    /// store.
    pub(crate) fn reload(&mut self, cache: &mut Cache) -> Result<(), SinkError> {
        let assignment = self.consumer.assignment()?;
        self.forget(cache, assignment);
        Ok(())
    }

    /// Drops everything cached (another instance may have moved on) and marks `partitions`
    /// to be moved to the store's offsets.
    fn forget(&mut self, cache: &mut Cache, partitions: Vec<TopicPartition>) {
        cache.clear();
        self.pending_seek = partitions.into_iter().collect();
    }

    /// Moves pending partitions to the offsets stored in the database (0 when none: the
    /// record is built from the beginning of the retained log).
    fn seek_pending(
        &mut self,
        store: &mut Store,
        cache: &mut Cache,
        report: &Reporter,
        shutdown: &CancellationToken,
    ) -> Result<(), SinkError> {
        if !cache.offsets_loaded {
            match report.store_call(|| cache.load_offsets(store)) {
                Ok(()) => report.store_ready(true),
                Err(e) if e.is_retriable() => {
                    report.store_retry();
                    tracing::warn!(error = %e, "loading offsets: the store does not answer; retrying");
                    // Back to polling between tries, so the group keeps this member;
                    // messages of the pending partitions are dropped meanwhile.
                    pause(self.offset_failures.failed(self.backoff), shutdown);
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
        self.offset_failures.reset();
        let (consumer, offsets) = (&self.consumer, &cache.offsets);
        let mut checked = Vec::new();
        for tp in &self.pending_seek {
            let offset = offsets.get(tp).copied().unwrap_or(0);
            if not_ahead(consumer, tp, offset)? {
                checked.push((tp.clone(), offset));
            }
        }
        for (tp, offset) in checked {
            match consumer.seek(&tp, offset, BUS_TIMEOUT) {
                Ok(()) => {
                    tracing::debug!(partition = %tp, offset, "resuming from the store's offset");
                    self.pending_seek.remove(&tp);
                }
                // Right after an assignment the fetcher may not have started; try again after
                // the next poll. Still failing after a while: said at warn, now and then.
                Err(e) => {
                    let since = *self.seek_failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= SEEK_WARN_AFTER
                        && self
                            .seek_warned
                            .is_none_or(|at| at.elapsed() >= SEEK_WARN_AFTER)
                    {
                        self.seek_warned = Some(Instant::now());
                        tracing::warn!(
                            error = %e,
                            partition = %tp,
                            failing_for = ?since.elapsed(),
                            "moving to the store's offset keeps failing; the partition's \
                             messages are dropped until it succeeds"
                        );
                    } else {
                        tracing::debug!(error = %e, "seek; will retry");
                    }
                }
            }
        }
        if self.pending_seek.is_empty() {
            self.seek_failing_since = None;
        }
        Ok(())
    }

    /// Commits `next_offsets` of the partitions still assigned as the group's offsets: a hint
    /// for tools (lag dashboards); resuming uses the store.
    pub(crate) fn commit_hint(&self, next_offsets: BTreeMap<TopicPartition, i64>) {
        let assigned: BTreeSet<TopicPartition> = self
            .consumer
            .assignment()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let hint: Offsets = next_offsets
            .into_iter()
            .filter(|(tp, _)| assigned.contains(tp))
            .collect();
        // Asynchronous: a synchronous commit waits as long as the broker is away, and the
        // loop must go on turning (health, retries) meanwhile.
        if let Err(error) = self.consumer.commit_async(&hint) {
            tracing::debug!(%error, "committing the group offsets hint");
        }
    }
}

/// Whether the stored position `stored` of `tp` is within the partition; an error (see
/// [`SinkError::OffsetsAhead`]) when it is beyond its end. Checked on every assignment, before
/// the seek: a topic recreated while the sink ran is found at the rebalance that follows.
/// `false` while the broker cannot say: the partition stays pending (its messages dropped)
/// and is checked again after the next poll.
fn not_ahead(consumer: &Consumer, tp: &TopicPartition, stored: i64) -> Result<bool, SinkError> {
    if stored == 0 {
        return Ok(true);
    }
    match consumer.end_offset(tp, BUS_TIMEOUT) {
        Ok(end) if stored > end => Err(SinkError::OffsetsAhead {
            topic: tp.topic.clone(),
            partition: tp.partition,
            stored,
            end,
        }),
        Ok(_) => Ok(true),
        Err(error) if error.kind() == ErrorKind::Retriable => {
            tracing::debug!(%error, partition = %tp, "end offset; will retry");
            Ok(false)
        }
        Err(error) => Err(error.into()),
    }
}
