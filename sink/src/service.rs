//! The sink service: consume -> decode -> derive -> store (one transaction per batch) ->
//! publish. See the crate documentation for the guarantees and the order of steps.
//!
//! Telemetry: each stored result whose headers carry a sampled trace context gets a
//! `store result` span, a child of the result's (and so of its frame's) span, ended when its
//! transaction commits or is given up; the `sink transaction` span of the database
//! transaction is a child of the first such result and links to the others. Counts and
//! latencies go through [`crate::metrics`]. Health ([`Sink::with_health`]): the poll loop beats
//! liveness; readiness is `database` (the last store call or check answered),
//! `broker` (the last poll or metadata check answered) and `partitions_assigned`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use orstream_bus::metrics::{HealthReporter, LagGauge, NoHealth, checks, value};
use orstream_bus::{
    Bus, BusError, Consumer, ErrorKind, Headers, Message, Producer, Record, TopicPartition, trace,
};
use orstream_proto::{
    Category, FrameResult, FrameStatus, SCHEMA_VERSION, StreamEvent, headers, stream_event, topics,
};
use tokio_util::sync::CancellationToken;

use crate::config::SinkConfig;
use crate::decode::{Input, Rejection, Source, decode};
use crate::derive::{Gap, Output, Presence, Rules, StreamState, TrackRecord, event_id};
use crate::error::{SinkError, StoreError};
use crate::metrics::{Committed, SinkMetrics};
use crate::store::{OffsetWrite, Outbox, OutboxTopic, StateWrite, Store, Value, WriteBatch};
use crate::track::TrackPoint;

/// Figures of a sink run. Counts are of work acknowledged (stored), unless named otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages stored (results, lifecycle events and rejected messages).
    pub messages: u64,
    /// Frame results stored.
    pub results: u64,
    /// Lifecycle events stored.
    pub stream_events: u64,
    /// Messages read again below the stored offset and skipped (after a restart or seek).
    pub skipped_replays: u64,
    /// Rows of the record written (cases, streams, lifecycle events, events, gaps, anomalies,
    /// frames).
    pub rows: u64,
    /// Presence intervals closed.
    pub presences: u64,
    /// Gaps closed.
    pub gaps: u64,
    /// Tool tracks ended.
    pub tracks: u64,
    /// Anomalies recorded.
    pub anomalies: u64,
    /// Messages sent to a dead-letter topic.
    pub dead_letters: u64,
    /// Store transactions committed.
    pub transactions: u64,
    /// Transactions rolled back because another writer moved an offset or state.
    pub conflicts: u64,
    /// Store calls retried after a retriable failure.
    pub store_retries: u64,
    /// Derived events and track frames acknowledged by their topics.
    pub published: u64,
    /// Largest lag seen: from a message's timestamp to the commit that stored it, in ms.
    pub max_lag_ms: u64,
}

/// Lags kept for quantiles: one bucket per millisecond up to this, the rest in the last.
const LAG_BUCKETS: usize = 60_001;

/// A live view of a running sink: readiness, figures and the lag distribution. Cheap to clone.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<ProgressInner>,
}

struct ProgressInner {
    ready: AtomicBool,
    stats: Mutex<Stats>,
    lags: Mutex<Vec<u64>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("ready", &self.is_ready())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            inner: Arc::new(ProgressInner {
                ready: AtomicBool::new(false),
                stats: Mutex::new(Stats::default()),
                lags: Mutex::new(vec![0; LAG_BUCKETS]),
            }),
        }
    }
}

impl Progress {
    /// Whether the store is reachable and the sink is consuming. False while the store is
    /// down (nothing is acknowledged then).
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }

    /// A copy of the figures so far.
    pub fn stats(&self) -> Stats {
        self.inner
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The `q` quantile (0..=1) of the per-message lag, in ms (None before the first commit).
    pub fn lag_quantile_ms(&self, q: f64) -> Option<u64> {
        let lags = self
            .inner
            .lags
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let total: u64 = lags.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (ms, n) in lags.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(ms as u64);
            }
        }
        None
    }

    /// Forgets the lag distribution (benchmarks: after warm-up).
    pub fn reset_lags(&self) {
        let mut lags = self
            .inner
            .lags
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        lags.iter_mut().for_each(|n| *n = 0);
    }

    fn set_ready(&self, ready: bool) {
        let was = self.inner.ready.swap(ready, Ordering::SeqCst);
        if was != ready {
            if ready {
                tracing::info!("sink ready");
            } else {
                tracing::warn!("sink not ready: the store is unavailable");
            }
        }
    }

    fn update(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self
            .inner
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner));
    }

    fn record_lags(&self, lags: impl Iterator<Item = u64>) {
        let mut buckets = self
            .inner
            .lags
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for lag in lags {
            let i = usize::try_from(lag)
                .unwrap_or(usize::MAX)
                .min(LAG_BUCKETS - 1);
            buckets[i] += 1;
        }
    }
}

/// The sink: reads results and lifecycle events, derives events, writes the record.
pub struct Sink {
    config: SinkConfig,
    rules: Rules,
    bus: Bus,
    store: Store,
    progress: Progress,
    health: Arc<dyn HealthReporter>,
    metrics: SinkMetrics,
    lag: LagGauge,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("store", &self.store)
            .field("bus", &self.bus)
            .finish_non_exhaustive()
    }
}

/// A stream's state as cached between batches.
struct Cached {
    /// The version in the store (0: not stored yet).
    version: i64,
    state: StreamState,
    /// Changed by the batch being prepared.
    dirty: bool,
}

/// What a running sink keeps between batches.
struct Running {
    consumer: Consumer,
    producer: Producer,
    /// The store's offsets as last read or written: the next offset to read per partition.
    offsets: BTreeMap<TopicPartition, i64>,
    offsets_loaded: bool,
    states: HashMap<String, Cached>,
    /// Known case starts (capture time of the first frame).
    cases: HashMap<String, i64>,
    seen_rebalances: u64,
    /// Assigned partitions not yet moved to the store's offset; their messages are dropped.
    pending_seek: BTreeSet<TopicPartition>,
    outbox_dirty: bool,
    publish_after: Instant,
    publish_failures: u32,
    /// Consecutive failures to load the offsets, for the backoff.
    offset_failures: u32,
    /// When the idle loop next checks the database and the broker.
    next_check: Instant,
}

/// One batch, derived and ready to store.
#[derive(Default)]
struct Prepared {
    batch: WriteBatch,
    dead_letters: Vec<Record>,
    next_offsets: BTreeMap<TopicPartition, i64>,
    timestamps_ms: Vec<i64>,
    messages: u64,
    results: u64,
    stream_events: u64,
    skipped: u64,
    presences: u64,
    gaps: u64,
    tracks: u64,
    anomalies: u64,
    /// Capture time of each result, for the capture-to-record latency.
    capture_ns: Vec<i64>,
    /// (reason, source topic) of each dead letter.
    dead_letter_reasons: Vec<(&'static str, String)>,
    /// Headers of the results whose trace is sampled, in batch order.
    traced: Vec<Headers>,
    /// The `store result` span of each of them.
    spans: Vec<tracing::Span>,
}

impl Prepared {
    /// Records how the batch's transaction ended on its result spans, which end with it.
    fn end_spans(&mut self, outcome: &'static str) {
        for span in self.spans.drain(..) {
            span.record("orstream.transaction.outcome", outcome);
        }
    }
}

/// How long bus admin and seek calls may take.
const BUS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the broker check may take; the broker is counted away when it does not answer.
const BROKER_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Most links from a transaction span to the traces of the results it stores beyond its
/// parent, which keeps the span small; each of those results has its own span anyway.
const MAX_LINKS: usize = 64;
/// Outbox entries published per round.
const PUBLISH_CHUNK: usize = 500;

/// Waits `d`, waking early when `shutdown` is cancelled; false when it was.
fn pause(d: Duration, shutdown: &CancellationToken) -> bool {
    let until = Instant::now() + d;
    while !shutdown.is_cancelled() {
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
    false
}

/// The pause before retry number `attempt` (0-based): `initial` doubling up to `max`.
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    initial
        .checked_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max)
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Sink {
    /// A sink over `bus` writing to `store`. Validates `config` (every problem at once).
    pub fn new(config: SinkConfig, bus: Bus, store: Store) -> Result<Self, SinkError> {
        config.validate()?;
        let lag = LagGauge::new(&config.group_id);
        Ok(Self {
            rules: Rules::from(&config.derive),
            config,
            bus,
            store,
            progress: Progress::default(),
            health: Arc::new(NoHealth),
            metrics: SinkMetrics::new(),
            lag,
        })
    }

    /// Reports liveness and readiness to `health` (see the module documentation); without
    /// it, nothing is reported.
    #[must_use]
    pub fn with_health(mut self, health: Arc<dyn HealthReporter>) -> Self {
        self.health = health;
        self
    }

    /// Whether the store answers: the sink's readiness and the `database` check.
    fn store_ready(&self, ready: bool) {
        self.progress.set_ready(ready);
        self.health.set_ready(checks::DATABASE, ready);
    }

    /// Checks that the database and the broker answer, for readiness while nothing else
    /// would tell (an idle sink makes no store calls).
    fn check_health(&mut self, run: &mut Running) {
        run.next_check = Instant::now() + self.config.health_interval;
        match self.store.ping() {
            Ok(()) => self.health.set_ready(checks::DATABASE, true),
            Err(error) => {
                tracing::warn!(%error, "health check: the store does not answer");
                self.health.set_ready(checks::DATABASE, false);
            }
        }
        // A topic the sink created itself, so it exists whenever the broker answers.
        let topic = topics::dlq(&self.config.results_topic);
        match self.bus.partitions(&topic, BROKER_CHECK_TIMEOUT) {
            Ok(_) => {
                self.health.set_ready(checks::BROKER, true);
                if let Err(error) = self.lag.record(&run.consumer, BROKER_CHECK_TIMEOUT) {
                    tracing::debug!(%error, "consumer lag not measured");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "health check: the broker does not answer");
                self.health.set_ready(checks::BROKER, false);
            }
        }
    }

    /// A live view of readiness and figures, usable from other threads while [`Sink::run`]
    /// runs.
    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// Runs until `shutdown` is cancelled, then stores what it has read, publishes what is
    /// waiting, and returns the figures. Blocks the calling thread (the bus and the store are
    /// blocking clients). Bad input and an unavailable store or broker never end it; a store
    /// or bus error that retrying cannot fix does.
    pub fn run(mut self, shutdown: CancellationToken) -> Result<Stats, SinkError> {
        // The store was opened before the sink was made; the rest comes up below.
        self.health.set_ready(checks::DATABASE, true);
        self.health.set_ready(checks::BROKER, false);
        self.health.set_ready(checks::PARTITIONS_ASSIGNED, false);
        self.prepare_topics(&shutdown)?;
        let consumer = self.bus.consumer(&self.config.group_id)?;
        consumer.subscribe(&[&self.config.results_topic, &self.config.streams_topic])?;
        let producer = self.bus.producer()?;
        let mut run = Running {
            consumer,
            producer,
            offsets: BTreeMap::new(),
            offsets_loaded: false,
            states: HashMap::new(),
            cases: HashMap::new(),
            seen_rebalances: 0,
            pending_seek: BTreeSet::new(),
            outbox_dirty: true,
            publish_after: Instant::now(),
            publish_failures: 0,
            offset_failures: 0,
            next_check: Instant::now(),
        };
        tracing::info!(
            store = %self.store.url(),
            group = %self.config.group_id,
            results = %self.config.results_topic,
            streams = %self.config.streams_topic,
            "sink started"
        );
        while !shutdown.is_cancelled() {
            let messages = self.poll_batch(&mut run, &shutdown)?;
            if !messages.is_empty()
                && let Some(prepared) = self.prepare(&mut run, messages, &shutdown)?
            {
                self.commit(&mut run, prepared, &shutdown)?;
            }
            if run.outbox_dirty && Instant::now() >= run.publish_after {
                self.publish(&mut run);
            }
            if Instant::now() >= run.next_check {
                self.check_health(&mut run);
            }
        }
        // Drain: what is stored is published once more, the producer flushed; the broker's
        // group offsets are only a hint (the store holds the truth), so they are not waited on.
        if run.outbox_dirty {
            self.publish(&mut run);
        }
        if let Err(error) = run.producer.flush(self.config.publish_timeout) {
            tracing::warn!(%error, "flushing the producer at shutdown");
        }
        let stats = self.progress.stats();
        tracing::info!(?stats, "sink stopped");
        Ok(stats)
    }

    /// Creates the topics the sink writes to (idempotent), retrying while the broker is away.
    fn prepare_topics(&self, shutdown: &CancellationToken) -> Result<(), SinkError> {
        let mut wanted = vec![
            topics::dlq(&self.config.results_topic),
            topics::dlq(&self.config.streams_topic),
        ];
        if self.config.publish_events {
            wanted.push(self.config.events_topic.clone());
        }
        if self.config.publish_tracks {
            wanted.push(self.config.tracks_topic.clone());
        }
        for topic in wanted {
            let mut attempt = 0;
            loop {
                match self
                    .bus
                    .create_topic(&topic, self.config.topic_partitions, BUS_TIMEOUT)
                {
                    Ok(()) => break,
                    Err(e) if e.is_retriable() => {
                        // Waiting for the broker is the loop turning, not a hang.
                        self.health.beat();
                        tracing::warn!(error = %e, "creating topic {topic}; retrying");
                        if !pause(self.backoff(attempt), shutdown) {
                            return Ok(());
                        }
                        attempt += 1;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    fn backoff(&self, attempt: u32) -> Duration {
        backoff(attempt, self.config.retry_initial, self.config.retry_max)
    }

    /// Collects up to `batch_max_messages` messages within `batch_max_wait`. A rebalance
    /// drops what was collected: every newly assigned partition is first moved to the offset
    /// the store holds, and read again from there.
    fn poll_batch(
        &mut self,
        run: &mut Running,
        shutdown: &CancellationToken,
    ) -> Result<Vec<Message>, SinkError> {
        let deadline = Instant::now() + self.config.batch_max_wait;
        let mut batch = Vec::new();
        loop {
            if !run.pending_seek.is_empty() {
                self.seek_pending(run, shutdown)?;
            }
            self.health.beat();
            let remaining = deadline.saturating_duration_since(Instant::now());
            let polled = match run.consumer.poll(remaining) {
                Ok(polled) => polled,
                Err(e) if e.kind() != ErrorKind::Fatal => {
                    self.health.set_ready(checks::BROKER, false);
                    tracing::warn!(error = %e, "poll");
                    pause(remaining.min(Duration::from_millis(100)), shutdown);
                    None
                }
                Err(e) => return Err(e.into()),
            };
            if run.consumer.rebalances() != run.seen_rebalances {
                run.seen_rebalances = run.consumer.rebalances();
                let assignment = run.consumer.assignment()?;
                tracing::info!(partitions = assignment.len(), "assignment changed");
                self.health
                    .set_ready(checks::PARTITIONS_ASSIGNED, !assignment.is_empty());
                self.forget(run, assignment);
                batch.clear();
                continue;
            }
            if let Some(message) = polled {
                if run.pending_seek.contains(&message.topic_partition()) {
                    continue;
                }
                batch.push(message);
                if batch.len() >= self.config.batch_max_messages {
                    break;
                }
            }
            if Instant::now() >= deadline || shutdown.is_cancelled() {
                break;
            }
        }
        Ok(batch)
    }

    /// Drops everything cached (another instance may have moved on) and marks `partitions`
    /// to be moved to the store's offsets.
    fn forget(&self, run: &mut Running, partitions: Vec<TopicPartition>) {
        run.states.clear();
        run.cases.clear();
        run.offsets_loaded = false;
        run.pending_seek = partitions.into_iter().collect();
    }

    /// Moves pending partitions to the offsets stored in the database (0 when none: the
    /// record is built from the beginning of the retained log).
    fn seek_pending(
        &mut self,
        run: &mut Running,
        shutdown: &CancellationToken,
    ) -> Result<(), SinkError> {
        if !run.offsets_loaded {
            match self.store.offsets() {
                Ok(offsets) => {
                    run.offsets = offsets;
                    run.offsets_loaded = true;
                    self.store_ready(true);
                }
                Err(e) if e.is_retriable() => {
                    self.store_ready(false);
                    tracing::warn!(error = %e, "loading offsets; retrying");
                    self.progress.update(|s| s.store_retries += 1);
                    // Back to polling between tries, so the group keeps this member;
                    // messages of the pending partitions are dropped meanwhile.
                    pause(self.backoff(run.offset_failures), shutdown);
                    run.offset_failures = run.offset_failures.saturating_add(1);
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            }
        }
        run.offset_failures = 0;
        for tp in run.pending_seek.clone() {
            let offset = run.offsets.get(&tp).copied().unwrap_or(0);
            match run.consumer.seek(&tp, offset, BUS_TIMEOUT) {
                Ok(()) => {
                    tracing::debug!(partition = %tp, offset, "resuming from the store's offset");
                    run.pending_seek.remove(&tp);
                }
                // Right after an assignment the fetcher may not have started; try again after
                // the next poll.
                Err(e) => tracing::debug!(error = %e, "seek; will retry"),
            }
        }
        Ok(())
    }

    /// Decodes and derives a batch. Returns None when shutdown came while the store was away.
    fn prepare(
        &mut self,
        run: &mut Running,
        messages: Vec<Message>,
        shutdown: &CancellationToken,
    ) -> Result<Option<Prepared>, SinkError> {
        let mut prepared = Prepared::default();
        let mut decoded = Vec::with_capacity(messages.len());
        for message in messages {
            let tp = message.topic_partition();
            let stored = run.offsets.get(&tp).copied().unwrap_or(0);
            let next = prepared.next_offsets.get(&tp).copied().unwrap_or(stored);
            if message.offset < next {
                prepared.skipped += 1;
                continue;
            }
            prepared.next_offsets.insert(tp, message.next_offset());
            let source = if message.topic == self.config.results_topic {
                Source::Results
            } else {
                Source::Streams
            };
            let input = decode(&message, source);
            decoded.push((message, input));
        }

        // Load what the batch needs before changing anything, so a store failure here leaves
        // the cache as it was.
        let streams: BTreeSet<String> = decoded
            .iter()
            .filter_map(|(_, i)| i.as_ref().ok())
            .map(|i| i.stream_id().to_owned())
            .filter(|s| !run.states.contains_key(s))
            .collect();
        let cases: BTreeSet<String> = decoded
            .iter()
            .filter_map(|(_, i)| i.as_ref().ok())
            .map(|i| i.case_id().to_owned())
            .filter(|c| !run.cases.contains_key(c))
            .collect();
        let mut attempt = 0;
        loop {
            match self.load(run, &streams, &cases) {
                Ok(()) => break,
                Err(e) if e.is_retriable() => {
                    self.store_ready(false);
                    self.health.beat();
                    self.progress.update(|s| s.store_retries += 1);
                    tracing::warn!(error = %e, "loading derivation state; retrying");
                    if !pause(self.backoff(attempt), shutdown) {
                        return Ok(None);
                    }
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }

        for (message, input) in decoded {
            prepared.messages += 1;
            if let Some(ms) = message.timestamp_ms {
                prepared.timestamps_ms.push(ms);
            }
            match input {
                Err(rejection) => self.reject(&message, &rejection, &mut prepared),
                Ok(Input::Result(result)) => {
                    self.apply_result(run, &message, &result, &mut prepared)
                }
                Ok(Input::Stream(event)) => {
                    self.apply_stream_event(run, &message, &event, &mut prepared)
                }
            }
        }

        for (stream_id, cached) in &mut run.states {
            if !cached.dirty {
                continue;
            }
            let json = serde_json::to_string(&cached.state).map_err(|e| StoreError::State {
                stream_id: stream_id.clone(),
                reason: e.to_string(),
            })?;
            prepared.batch.states.push(StateWrite {
                stream_id: stream_id.clone(),
                expected_version: cached.version,
                json,
            });
            if let Some(row) = stream_row(&cached.state) {
                prepared.batch.streams.push(row);
            }
            if let Some(first) = cached.state.case_first_ns {
                prepared
                    .batch
                    .cases
                    .push((cached.state.case_id.clone(), first));
            }
        }
        prepared.batch.offsets = prepared
            .next_offsets
            .iter()
            .map(|(tp, next)| OffsetWrite {
                partition: tp.clone(),
                expected: run.offsets.get(tp).copied(),
                next: *next,
            })
            .collect();
        Ok(Some(prepared))
    }

    fn load(
        &mut self,
        run: &mut Running,
        streams: &BTreeSet<String>,
        cases: &BTreeSet<String>,
    ) -> Result<(), StoreError> {
        for stream_id in streams {
            if run.states.contains_key(stream_id) {
                continue;
            }
            let (version, state) = self
                .store
                .load_state(stream_id)?
                .unwrap_or_else(|| (0, StreamState::new(stream_id)));
            run.states.insert(
                stream_id.clone(),
                Cached {
                    version,
                    state,
                    dirty: false,
                },
            );
        }
        for case_id in cases {
            if let Some(start) = self.store.case_start(case_id)? {
                run.cases.insert(case_id.clone(), start);
            }
        }
        Ok(())
    }

    fn reject(&self, message: &Message, rejection: &Rejection, prepared: &mut Prepared) {
        tracing::warn!(
            topic = %message.topic,
            partition = message.partition,
            offset = message.offset,
            reason = %rejection.reason,
            "rejected message: to the dead-letter topic"
        );
        let mut record = Record::new(topics::dlq(&message.topic), message.payload.clone())
            .with_headers(message.headers.clone())
            .with_header(headers::DLQ_SOURCE_TOPIC, message.topic.as_str())
            .with_header(headers::DLQ_SOURCE_PARTITION, message.partition.to_string())
            .with_header(headers::DLQ_SOURCE_OFFSET, message.offset.to_string())
            .with_header(headers::DLQ_ERROR, rejection.reason.as_str());
        if let Some(key) = &message.key {
            record = record.with_key(key.clone());
        }
        prepared.dead_letters.push(record);
        prepared
            .dead_letter_reasons
            .push((rejection.kind.as_str(), message.topic.clone()));
        let stream_id = message
            .key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).chars().take(128).collect())
            .unwrap_or_default();
        prepared.batch.anomalies.push(anomaly_row(
            message,
            rejection.kind.as_str(),
            stream_id,
            &rejection.reason,
        ));
        prepared.anomalies += 1;
    }

    fn apply_result(
        &self,
        run: &mut Running,
        message: &Message,
        result: &FrameResult,
        prepared: &mut Prepared,
    ) {
        let Some(cached) = run.states.get_mut(&result.stream_id) else {
            return;
        };
        let before_case = cached.state.case_id.clone();
        let before_first = cached.state.case_first_ns;
        let before_row = stream_row(&cached.state);
        let outputs = cached.state.apply_result(result, &self.rules);
        cached.dirty = true;
        if before_case != cached.state.case_id {
            // The stream moved to another case: keep the old case's final figures.
            if let Some(row) = before_row {
                prepared.batch.streams.push(row);
            }
            if let Some(first) = before_first {
                prepared.batch.cases.push((before_case, first));
            }
        }
        if let Some(first) = cached.state.case_first_ns {
            let start = run
                .cases
                .entry(cached.state.case_id.clone())
                .or_insert(first);
            *start = (*start).min(first);
        }
        prepared.results += 1;
        prepared.capture_ns.push(result.capture_time_ns);
        if trace::span_context(&message.headers).is_some_and(|cx| cx.is_sampled()) {
            // Only allow-listed attributes: the status, never the case, stream or offset.
            let span = tracing::info_span!(
                "store result",
                otel.kind = "consumer",
                orstream.status = FrameStatus::label_of(result.status),
                orstream.transaction.outcome = tracing::field::Empty,
            );
            trace::set_parent(&span, &message.headers);
            prepared.spans.push(span);
            prepared.traced.push(message.headers.clone());
        }
        if self.config.store_frames {
            prepared.batch.frames.push(frame_row(result));
        }
        self.outputs(run, message, outputs, prepared);
    }

    fn apply_stream_event(
        &self,
        run: &mut Running,
        message: &Message,
        event: &StreamEvent,
        prepared: &mut Prepared,
    ) {
        prepared.stream_events += 1;
        prepared.batch.stream_events.push(stream_event_row(event));
        let Some(cached) = run.states.get_mut(&event.stream_id) else {
            return;
        };
        let outputs = cached.state.apply_stream_event(event);
        cached.dirty = true;
        self.outputs(run, message, outputs, prepared);
    }

    fn outputs(
        &self,
        run: &Running,
        message: &Message,
        outputs: Vec<Output>,
        prepared: &mut Prepared,
    ) {
        for output in outputs {
            match output {
                Output::Presence(p) => {
                    let outbox = self.outbox(&p.case_id, &p.event_id(), || {
                        p.to_event(run.cases.get(&p.case_id).copied().unwrap_or(p.start_ns))
                    });
                    prepared.batch.events.push((presence_row(&p), outbox));
                    prepared.presences += 1;
                }
                Output::Gap(g) => {
                    let outbox = self.outbox(&g.case_id, &g.event_id(), || {
                        g.to_event(run.cases.get(&g.case_id).copied().unwrap_or(g.start_ns))
                    });
                    prepared.batch.gaps.push((gap_row(&g), outbox));
                    prepared.gaps += 1;
                }
                Output::Track(t) => {
                    let outbox = self.outbox(&t.case_id, &t.event_id(), || {
                        t.to_event(run.cases.get(&t.case_id).copied().unwrap_or(t.start_ns))
                    });
                    prepared.batch.tracks.push((track_row(&t), outbox));
                    prepared.tracks += 1;
                }
                Output::TrackPoints(stream_id, case_id, points) => {
                    prepared.batch.track_points.extend(
                        points
                            .iter()
                            .map(|p| track_point_row(&stream_id, &case_id, p)),
                    );
                }
                Output::Tracked(frame) => {
                    if self.config.publish_tracks {
                        prepared.batch.track_frames.push(Outbox {
                            event_id: event_id(&[
                                "track-frame",
                                &frame.stream_id,
                                &frame.epoch.to_string(),
                                &frame.seq.to_string(),
                            ]),
                            case_id: frame.case_id.clone(),
                            topic: OutboxTopic::Tracks,
                            key: frame.stream_id.clone(),
                            payload: orstream_proto::encode(&frame.to_message()),
                        });
                    }
                }
                Output::Anomaly(a) => {
                    tracing::info!(
                        kind = a.kind.as_str(),
                        stream_id = %a.stream_id,
                        detail = %a.detail,
                        "anomaly"
                    );
                    prepared.batch.anomalies.push(anomaly_row(
                        message,
                        a.kind.as_str(),
                        a.stream_id,
                        &a.detail,
                    ));
                    prepared.anomalies += 1;
                }
            }
        }
    }

    fn outbox(
        &self,
        case_id: &str,
        event_id: &str,
        event: impl FnOnce() -> orstream_proto::SurgicalEvent,
    ) -> Option<Outbox> {
        self.config.publish_events.then(|| Outbox {
            event_id: event_id.to_owned(),
            case_id: case_id.to_owned(),
            topic: OutboxTopic::Events,
            key: case_id.to_owned(),
            payload: orstream_proto::encode(&event()),
        })
    }

    /// Sends dead letters, then stores the batch, retrying while the store is away. Nothing
    /// read is acknowledged (offsets stored) before its rows and dead letters are.
    fn commit(
        &mut self,
        run: &mut Running,
        mut prepared: Prepared,
        shutdown: &CancellationToken,
    ) -> Result<(), SinkError> {
        if !self.send_dead_letters(run, &prepared.dead_letters, shutdown) {
            prepared.end_spans(value::ABORTED);
            return Ok(());
        }
        let span = match prepared.traced.split_first() {
            Some((first, rest)) => {
                let span = tracing::info_span!(
                    "sink transaction",
                    orstream.transaction.outcome = tracing::field::Empty,
                );
                trace::set_parent(&span, first);
                for headers in rest.iter().take(MAX_LINKS) {
                    trace::add_link(&span, headers);
                }
                span
            }
            None => tracing::Span::none(),
        };
        let mut attempt = 0;
        let took = loop {
            let started = Instant::now();
            let written = span.in_scope(|| self.store.write(&prepared.batch));
            match written {
                Ok(()) => break started.elapsed(),
                Err(StoreError::Conflict { what }) => {
                    self.metrics.aborted(started.elapsed());
                    span.record("orstream.transaction.outcome", value::ABORTED);
                    prepared.end_spans(value::ABORTED);
                    tracing::warn!(%what, "store conflict: reloading offsets and state");
                    self.progress.update(|s| s.conflicts += 1);
                    let assignment = run.consumer.assignment()?;
                    self.forget(run, assignment);
                    return Ok(());
                }
                Err(e) if e.is_retriable() => {
                    self.metrics.aborted(started.elapsed());
                    self.store_ready(false);
                    self.health.beat();
                    self.progress.update(|s| s.store_retries += 1);
                    tracing::warn!(error = %e, attempt, "storing a batch; retrying");
                    if !pause(self.backoff(attempt), shutdown) {
                        // Stopping: nothing of this batch is acknowledged; it is read again on
                        // the next start.
                        span.record("orstream.transaction.outcome", value::ABORTED);
                        prepared.end_spans(value::ABORTED);
                        return Ok(());
                    }
                    attempt += 1;
                }
                Err(e) => {
                    self.metrics.aborted(started.elapsed());
                    span.record("orstream.transaction.outcome", value::ABORTED);
                    prepared.end_spans(value::ABORTED);
                    return Err(e.into());
                }
            }
        };
        self.store_ready(true);
        let committed_ms = now_ms();
        self.metrics.committed(
            took,
            now_ns(),
            &Committed {
                results: prepared.results,
                presences: prepared.presences,
                gaps: prepared.gaps,
                tracks: prepared.tracks,
                anomalies: prepared.anomalies,
                capture_ns: &prepared.capture_ns,
                dead_letters: &prepared.dead_letter_reasons,
            },
        );
        span.record("orstream.transaction.outcome", value::COMMITTED);
        prepared.end_spans(value::COMMITTED);
        drop(span);
        for (tp, next) in &prepared.next_offsets {
            run.offsets.insert(tp.clone(), *next);
        }
        for cached in run.states.values_mut() {
            if cached.dirty {
                cached.version += 1;
                cached.dirty = false;
            }
        }
        if (self.config.publish_events
            && (!prepared.batch.events.is_empty()
                || !prepared.batch.gaps.is_empty()
                || !prepared.batch.tracks.is_empty()))
            || !prepared.batch.track_frames.is_empty()
        {
            run.outbox_dirty = true;
        }
        let max_lag = prepared
            .timestamps_ms
            .iter()
            .map(|t| u64::try_from(committed_ms.saturating_sub(*t)).unwrap_or(0))
            .max()
            .unwrap_or(0);
        self.progress.record_lags(
            prepared
                .timestamps_ms
                .iter()
                .map(|t| u64::try_from(committed_ms.saturating_sub(*t)).unwrap_or(0)),
        );
        let rows = prepared.batch.rows() as u64;
        self.progress.update(|s| {
            s.messages += prepared.messages;
            s.results += prepared.results;
            s.stream_events += prepared.stream_events;
            s.skipped_replays += prepared.skipped;
            s.rows += rows;
            s.presences += prepared.presences;
            s.gaps += prepared.gaps;
            s.tracks += prepared.tracks;
            s.anomalies += prepared.anomalies;
            s.dead_letters += prepared.dead_letters.len() as u64;
            s.transactions += 1;
            s.max_lag_ms = s.max_lag_ms.max(max_lag);
        });
        // The group's offsets are a hint for tools (lag dashboards); resuming uses the store.
        let assigned: BTreeSet<TopicPartition> = run
            .consumer
            .assignment()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let hint: orstream_bus::Offsets = prepared
            .next_offsets
            .into_iter()
            .filter(|(tp, _)| assigned.contains(tp))
            .collect();
        // Asynchronous: a synchronous commit waits as long as the broker is away, and the
        // loop must go on turning (health, retries) meanwhile.
        if let Err(error) = run.consumer.commit_async(&hint) {
            tracing::debug!(%error, "committing the group offsets hint");
        }
        Ok(())
    }

    /// Sends dead letters and waits for the broker to take them. False when shutdown came
    /// first (the batch is then not stored; it is read again on the next start).
    fn send_dead_letters(
        &self,
        run: &Running,
        records: &[Record],
        shutdown: &CancellationToken,
    ) -> bool {
        let mut attempt = 0;
        'retry: loop {
            let mut handles = Vec::with_capacity(records.len());
            for record in records {
                match run.producer.send(record, self.config.publish_timeout) {
                    Ok(h) => handles.push(h),
                    Err(e) => {
                        if !self.dead_letter_failed(&e, attempt, shutdown) {
                            return false;
                        }
                        attempt += 1;
                        continue 'retry;
                    }
                }
            }
            for handle in handles {
                if let Err(e) = handle.wait(self.config.publish_timeout) {
                    if !self.dead_letter_failed(&e, attempt, shutdown) {
                        return false;
                    }
                    attempt += 1;
                    continue 'retry;
                }
            }
            return true;
        }
    }

    fn dead_letter_failed(&self, e: &BusError, attempt: u32, shutdown: &CancellationToken) -> bool {
        self.health.beat();
        self.health.set_ready(checks::BROKER, false);
        tracing::warn!(error = %e, attempt, "sending dead letters; retrying");
        pause(self.backoff(attempt), shutdown)
    }

    /// Publishes the outbox, oldest first, and deletes what the broker acknowledged. A failure
    /// leaves the entries for the next round (after a pause): events may then go out twice,
    /// with the same ids.
    fn publish(&mut self, run: &mut Running) {
        loop {
            let items = match self.store.outbox(PUBLISH_CHUNK) {
                Ok(items) => items,
                Err(error) => {
                    tracing::warn!(%error, "reading the event outbox");
                    self.publish_failed(run);
                    return;
                }
            };
            let Some(last) = items.last().map(|i| i.position) else {
                run.outbox_dirty = false;
                run.publish_failures = 0;
                return;
            };
            let mut handles = Vec::with_capacity(items.len());
            for item in &items {
                let topic = match item.entry.topic {
                    OutboxTopic::Events => &self.config.events_topic,
                    OutboxTopic::Tracks => &self.config.tracks_topic,
                };
                let record = Record::new(topic.clone(), item.entry.payload.clone())
                    .with_key(item.entry.key.clone().into_bytes())
                    .with_header(headers::SCHEMA_VERSION, SCHEMA_VERSION);
                match run.producer.send(&record, self.config.publish_timeout) {
                    Ok(h) => handles.push(h),
                    Err(error) => {
                        tracing::warn!(%error, "publishing events");
                        self.publish_failed(run);
                        return;
                    }
                }
            }
            for handle in handles {
                if let Err(error) = handle.wait(self.config.publish_timeout) {
                    tracing::warn!(%error, "publishing events");
                    self.publish_failed(run);
                    return;
                }
            }
            if let Err(error) = self.store.delete_outbox(last) {
                tracing::warn!(%error, "clearing the event outbox");
                self.publish_failed(run);
                return;
            }
            let n = items.len() as u64;
            self.progress.update(|s| s.published += n);
            if items.len() < PUBLISH_CHUNK {
                run.outbox_dirty = false;
                run.publish_failures = 0;
                return;
            }
        }
    }

    fn publish_failed(&self, run: &mut Running) {
        run.publish_after = Instant::now() + self.backoff(run.publish_failures);
        run.publish_failures = run.publish_failures.saturating_add(1);
    }
}

fn anomaly_row(message: &Message, kind: &str, stream_id: String, detail: &str) -> Vec<Value> {
    vec![
        message.topic.as_str().into(),
        message.partition.into(),
        message.offset.into(),
        kind.into(),
        stream_id.into(),
        detail.into(),
    ]
}

fn stream_row(state: &StreamState) -> Option<Vec<Value>> {
    let first = state.case_first_ns?;
    let last = state.position?;
    Some(vec![
        state.case_id.as_str().into(),
        state.stream_id.as_str().into(),
        first.into(),
        last.capture_ns.into(),
        state.case_results.into(),
    ])
}

fn presence_row(p: &Presence) -> Vec<Value> {
    vec![
        p.event_id().into(),
        p.case_id.as_str().into(),
        p.stream_id.as_str().into(),
        p.class_id.into(),
        p.label.as_str().into(),
        Category::name_of(p.category).into(),
        p.start_ns.into(),
        p.end_ns.into(),
        p.epoch.into(),
        p.first_seq.into(),
        p.last_seq.into(),
        p.frames_seen.into(),
        p.peak.into(),
        p.mean.into(),
        p.model.name.as_str().into(),
        p.model.version.as_str().into(),
        p.model.digest.as_str().into(),
        p.track_ids
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" ")
            .into(),
    ]
}

fn track_row(t: &TrackRecord) -> Vec<Value> {
    let m = &t.motion;
    vec![
        t.event_id().into(),
        t.case_id.as_str().into(),
        t.stream_id.as_str().into(),
        m.track_id.into(),
        t.class_id.into(),
        t.label.as_str().into(),
        t.epoch.into(),
        t.first_seq.into(),
        t.last_seq.into(),
        t.start_ns.into(),
        t.end_ns.into(),
        m.frames_seen.into(),
        Value::Real(m.path_length),
        Value::Real(m.mean_speed),
        Value::Real(m.peak_speed),
        m.idle_ns.into(),
        m.reentries.into(),
        t.peak_score.into(),
        t.model.name.as_str().into(),
        t.model.version.as_str().into(),
        t.model.digest.as_str().into(),
    ]
}

fn track_point_row(stream_id: &str, case_id: &str, p: &TrackPoint) -> Vec<Value> {
    vec![
        stream_id.into(),
        p.track_id.into(),
        p.seq.into(),
        case_id.into(),
        p.ns.into(),
        Value::Real(p.cx),
        Value::Real(p.cy),
        Value::Real(p.bbox[0]),
        Value::Real(p.bbox[1]),
        Value::Real(p.bbox[2]),
        Value::Real(p.bbox[3]),
        Value::Real(p.speed),
    ]
}

fn gap_row(g: &Gap) -> Vec<Value> {
    vec![
        g.event_id().into(),
        g.case_id.as_str().into(),
        g.stream_id.as_str().into(),
        g.kind.as_str().into(),
        g.epoch.into(),
        g.first_seq.into(),
        g.last_seq.into(),
        g.start_ns.into(),
        g.end_ns.into(),
        g.frames.into(),
        g.reason.as_str().into(),
    ]
}

fn frame_row(r: &FrameResult) -> Vec<Value> {
    let instances: Vec<serde_json::Value> = r
        .instances
        .iter()
        .map(|i| {
            serde_json::json!({
                "class_id": i.class_id,
                "label": i.label,
                "category": Category::name_of(i.category),
                "score": i.score,
                "area": i.area,
            })
        })
        .collect();
    vec![
        r.stream_id.as_str().into(),
        r.session_epoch.into(),
        r.seq.into(),
        r.case_id.as_str().into(),
        r.capture_time_ns.into(),
        FrameStatus::name_of(r.status).into(),
        r.model.as_ref().map_or("", |m| m.version.as_str()).into(),
        serde_json::Value::Array(instances).to_string().into(),
    ]
}

fn stream_event_row(e: &StreamEvent) -> Vec<Value> {
    use stream_event::Kind;
    let (kind, detail) = match &e.kind {
        Some(Kind::Started(s)) => (
            "started",
            serde_json::json!({
                "source_kind": s.source_kind, "width": s.width, "height": s.height, "fps": s.fps,
            }),
        ),
        Some(Kind::Discontinuity(d)) => (
            "discontinuity",
            serde_json::json!({
                "previous_epoch": d.previous_epoch,
                "previous_last_seq": d.previous_last_seq,
                "gap_start_ns": d.gap_start_ns,
                "gap_end_ns": d.gap_end_ns,
                "reason": d.reason,
            }),
        ),
        Some(Kind::Ended(x)) => (
            "ended",
            serde_json::json!({
                "reason": x.reason,
                "frames_published": x.frames_published,
                "frames_dropped": x.frames_dropped,
                "detail": x.detail,
            }),
        ),
        Some(Kind::Dropped(x)) => (
            "dropped",
            serde_json::json!({ "count": x.count, "total": x.total, "reason": x.reason }),
        ),
        Some(Kind::Error(x)) => (
            "error",
            serde_json::json!({ "message": x.message, "fatal": x.fatal }),
        ),
        None => ("unknown", serde_json::json!({})),
    };
    vec![
        e.stream_id.as_str().into(),
        e.case_id.as_str().into(),
        e.session_epoch.into(),
        e.time_ns.into(),
        kind.into(),
        detail.to_string().into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(1));
        let got: Vec<u128> = (0..6).map(|a| backoff(a, i, m).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(200, i, m), m);
    }

    #[test]
    fn pause_wakes_on_shutdown() {
        let token = CancellationToken::new();
        token.cancel();
        assert!(!pause(Duration::from_secs(3600), &token));
    }
}
