//! The sink service: the loop that takes each batch through its steps, [`consume`] ->
//! [`prepare`] -> [`dead_letter`] -> [`commit`] -> [`publish`], and keeps the sink's health.
//! See the crate documentation for the guarantees the order of the steps gives.
//!
//! Health ([`Sink::with_health`]): the poll loop beats liveness; readiness is `database` (the
//! last store call or check answered), `broker` (the last poll or metadata check answered)
//! and `partitions_assigned`. Spans and counts: see [`commit`] and [`crate::metrics`].
//!
//! [`consume`]: crate::consume
//! [`prepare`]: crate::prepare
//! [`dead_letter`]: crate::dead_letter
//! [`commit`]: crate::commit
//! [`publish`]: crate::publish

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use orstream_bus::metrics::{self, HealthReporter, LagGauge, NoHealth, checks, value};
use orstream_bus::{Bus, Consumer, Message, Producer};
use orstream_proto::topics;
use orstream_record::StoreError;
use orstream_record::store::Store;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::commit::{self, Outcome, ResultSpans};
use crate::config::SinkConfig;
use crate::consume::{BUS_TIMEOUT, Intake};
use crate::dead_letter::{self, Sent};
use crate::derive::Rules;
use crate::error::SinkError;
use crate::metrics::SinkMetrics;
use crate::prepare::{self, Decoded, Prepared};
use crate::progress::{Progress, Reporter, Stats};
use crate::publish::Publisher;
use orstream_shell::retry::{Backoff, Streak, retry};

/// How long the broker check may take; the broker is counted away when it does not answer.
const BROKER_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The sink: reads results and lifecycle events, derives events, writes the record.
pub struct Sink {
    config: SinkConfig,
    rules: Rules,
    backoff: Backoff,
    bus: Bus,
    store: Store,
    report: Reporter,
    metrics: SinkMetrics,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("store", &self.store)
            .field("bus", &self.bus)
            .finish_non_exhaustive()
    }
}

/// What a running sink keeps between batches.
struct Running {
    intake: Intake,
    producer: Producer,
    cache: Cache,
    publisher: Publisher,
    /// When the idle loop next checks the database.
    next_check: Instant,
    /// Whether the broker answered the last check (made on a thread of its own, which also
    /// measures the consumer lag, so the loop never waits on either): the outbox round waits
    /// for it, rather than waiting out the publish timeout on every send while the broker is
    /// away.
    broker_answers: Arc<AtomicBool>,
    /// Stops the broker check's thread.
    stop_check: Arc<AtomicBool>,
    broker_check: Option<std::thread::JoinHandle<()>>,
    /// Batches given up in a row because their dead letters could not be written.
    dead_letter_failures: Streak,
}

impl Sink {
    /// A sink over `bus` writing to `store`. Validates `config` (every problem at once).
    pub fn new(config: SinkConfig, bus: Bus, store: Store) -> Result<Self, SinkError> {
        config.validate()?;
        Ok(Self {
            rules: Rules::from(&config.derive),
            backoff: Backoff {
                initial: config.retry_initial,
                max: config.retry_max,
            },
            config,
            bus,
            store,
            report: Reporter::new(Progress::default(), Arc::new(NoHealth)),
            metrics: SinkMetrics::new(),
        })
    }

    /// Reports liveness and readiness to `health` (see the module documentation); without
    /// it, nothing is reported.
    #[must_use]
    pub fn with_health(mut self, health: Arc<dyn HealthReporter>) -> Self {
        self.report = Reporter::new(self.report.progress.clone(), health);
        self
    }

    /// A live view of readiness and figures, usable from other threads while [`Sink::run`]
    /// runs.
    pub fn progress(&self) -> Progress {
        self.report.progress.clone()
    }

    /// Runs until `shutdown` is cancelled, then stores what it has read, publishes what is
    /// waiting, and returns the figures. Blocks the calling thread (the bus and the store are
    /// blocking clients). Bad input and an unavailable store or broker never end it; a store
    /// or bus error that retrying cannot fix does.
    pub fn run(mut self, shutdown: CancellationToken) -> Result<Stats, SinkError> {
        let mut run = self.start(&shutdown)?;
        while !shutdown.is_cancelled() {
            self.turn(&mut run, &shutdown)?;
        }
        self.drain(&mut run);
        let stats = self.report.progress.stats();
        tracing::info!(?stats, "sink stopped");
        Ok(stats)
    }

    /// One turn of the loop: a batch through its steps, then the upkeep.
    fn turn(&mut self, run: &mut Running, shutdown: &CancellationToken) -> Result<(), SinkError> {
        let messages = self.consume(run, shutdown)?;
        if !messages.is_empty() {
            let began = Instant::now();
            let consumed = self.metrics.consumed(&messages);
            if let Some(prepared) = self.prepare(run, messages, shutdown)? {
                self.store(run, prepared, shutdown)?;
            }
            self.metrics.processed(&consumed, began.elapsed());
        }
        // Partitions newly assigned may hold entries their former owner left.
        if run.intake.take_reassigned() {
            run.publisher.added();
        }
        if run.publisher.is_due() && run.broker_answers.load(Ordering::Acquire) {
            self.publish(run);
        }
        if Instant::now() >= run.next_check {
            self.check_health(run);
        }
        Ok(())
    }

    /// Creates the topics the sink writes to, joins the group and makes the producer.
    fn start(&mut self, shutdown: &CancellationToken) -> Result<Running, SinkError> {
        // The store was opened before the sink was made; the rest comes up below.
        let health = &self.report.health;
        health.set_ready(checks::DATABASE, true);
        health.set_ready(checks::BROKER, false);
        health.set_ready(checks::PARTITIONS_ASSIGNED, false);
        health.set_ready(checks::DEAD_LETTERS, true);
        self.create_topics(shutdown)?;
        let intake = Intake::subscribe(&self.bus, &self.config, self.backoff)?;
        let producer = self.bus.producer()?;
        // The store's address stays out of the info log (it names the database host); the
        // debug log has it, its secrets redacted.
        tracing::debug!(store = %self.store.url(), "the record store");
        tracing::info!(
            store = ?self.store.backend(),
            group = %self.config.group_id,
            results = %self.config.results_topic,
            streams = %self.config.streams_topic,
            "sink started"
        );
        let broker_answers = Arc::new(AtomicBool::new(true));
        let stop_check = Arc::new(AtomicBool::new(false));
        let broker_check = self.spawn_broker_check(
            intake.shared_consumer(),
            broker_answers.clone(),
            stop_check.clone(),
        )?;
        Ok(Running {
            intake,
            producer,
            cache: Cache::default(),
            publisher: Publisher::new(),
            next_check: Instant::now(),
            broker_answers,
            stop_check,
            broker_check: Some(broker_check),
            dead_letter_failures: Streak::default(),
        })
    }

    /// Starts the thread that asks the broker every `health_interval` whether it answers
    /// (readiness, and `answers` for the outbox) and then measures the consumer's lag. Both
    /// ask the broker, the lag once per partition, which took a few hundred milliseconds a
    /// round on a loaded machine: on the message loop, every record row waited for them.
    fn spawn_broker_check(
        &self,
        consumer: Arc<Consumer>,
        answers: Arc<AtomicBool>,
        stop: Arc<AtomicBool>,
    ) -> Result<std::thread::JoinHandle<()>, SinkError> {
        let check = metrics::BrokerCheck {
            bus: self.bus.clone(),
            // A topic the sink created itself, so it exists whenever the broker answers.
            topic: topics::dlq(&self.config.results_topic),
            health: self.report.health.clone(),
            interval: self.config.health_interval,
            timeout: BROKER_CHECK_TIMEOUT,
        };
        let lag = LagGauge::new(&self.config.group_id);
        std::thread::Builder::new()
            .name("sink-broker-check".into())
            .spawn(move || {
                check.run(
                    || stop.load(Ordering::Acquire),
                    |answered| {
                        answers.store(answered, Ordering::Release);
                        if answered && let Err(error) = lag.record(&consumer, BROKER_CHECK_TIMEOUT)
                        {
                            tracing::debug!(%error, "consumer lag not measured");
                        }
                    },
                );
            })
            .map_err(|e| SinkError::Thread(e.to_string()))
    }

    /// Creates the topics the sink writes to (idempotent), retrying while the broker is away.
    fn create_topics(&self, shutdown: &CancellationToken) -> Result<(), SinkError> {
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
        let wanted: Vec<(&str, Option<Duration>)> = wanted
            .iter()
            .map(|topic| (topic.as_str(), Some(topics::RETENTION)))
            .collect();
        // False (shutdown came first) needs nothing more: the caller sees the shutdown.
        self.bus.create_topics_waiting(
            &wanted,
            self.config.topic_partitions,
            BUS_TIMEOUT,
            self.backoff,
            shutdown,
            |topic, e, _| {
                // Waiting for the broker is the loop turning, not a hang.
                self.report.health.beat();
                tracing::warn!(error = %e, "creating topic {topic}; retrying");
            },
        )?;
        Ok(())
    }

    fn consume(
        &mut self,
        run: &mut Running,
        shutdown: &CancellationToken,
    ) -> Result<Vec<Message>, SinkError> {
        run.intake
            .poll_batch(&mut self.store, &mut run.cache, &self.report, shutdown)
    }

    /// Decodes and derives a batch. None when shutdown came while the store was away.
    fn prepare(
        &mut self,
        run: &mut Running,
        messages: Vec<Message>,
        shutdown: &CancellationToken,
    ) -> Result<Option<Prepared>, SinkError> {
        let decoded =
            prepare::decode_batch(messages, &run.cache.offsets, &self.config.results_topic);
        // Load what the batch needs before changing anything, so a store failure here leaves
        // the cache as it was.
        if !self.load(&mut run.cache, &decoded, shutdown)? {
            return Ok(None);
        }
        let prepared = prepare::prepare_batch(decoded, &mut run.cache, &self.config, &self.rules)?;
        Ok(Some(prepared))
    }

    /// Loads the states and case starts `decoded` needs, retrying while the store is away.
    /// False when shutdown came first.
    fn load(
        &mut self,
        cache: &mut Cache,
        decoded: &Decoded,
        shutdown: &CancellationToken,
    ) -> Result<bool, SinkError> {
        let (streams, cases) = decoded.missing(cache);
        let report = &self.report;
        let loaded = retry(
            self.backoff,
            shutdown,
            || report.store_call(|| cache.load(&mut self.store, &streams, &cases)),
            StoreError::is_retriable,
            |e, _| {
                report.store_retry();
                tracing::warn!(error = %e, "loading derivation state; retrying");
            },
        )?;
        Ok(loaded.is_some())
    }

    /// Sends dead letters, then stores the batch. Nothing read is acknowledged (offsets
    /// stored) before its rows and dead letters are.
    fn store(
        &mut self,
        run: &mut Running,
        prepared: Prepared,
        shutdown: &CancellationToken,
    ) -> Result<(), SinkError> {
        let spans = ResultSpans::open(&prepared.traced);
        match dead_letter::send(
            &run.producer,
            &prepared.dead_letters,
            self.config.publish_timeout,
            &*self.report.health,
            self.backoff,
            shutdown,
        ) {
            Sent::Yes => run.dead_letter_failures.reset(),
            Sent::Stopped => {
                spans.end(value::ABORTED);
                return Ok(());
            }
            Sent::Failed(error) => {
                // Nothing of the batch is stored: its rejected messages have gone nowhere yet.
                // It is read again from the stored offsets once the hold is over.
                spans.end(value::ABORTED);
                let hold = run.dead_letter_failures.failed(self.backoff);
                tracing::error!(
                    %error,
                    letters = prepared.dead_letters.len(),
                    hold_ms = hold.as_millis() as u64,
                    "dead letters cannot be written: consuming stops until they can"
                );
                run.intake.reload(&mut run.cache)?;
                run.intake.hold(hold);
                return Ok(());
            }
        }
        let outcome = commit::store_batch(
            &mut self.store,
            &prepared,
            spans,
            &self.metrics,
            &self.report,
            self.backoff,
            shutdown,
        )?;
        match outcome {
            Outcome::Committed { committed_ms } => self.acknowledge(run, prepared, committed_ms),
            Outcome::Conflict => run.intake.reload(&mut run.cache)?,
            Outcome::Stopped => {}
        }
        Ok(())
    }

    /// After the commit: the cache matches the store, the outbox has work, the figures and
    /// the group's offsets move on.
    fn acknowledge(&self, run: &mut Running, prepared: Prepared, committed_ms: i64) {
        run.cache.committed(&prepared.next_offsets);
        if prepared.fills_outbox(self.config.publish_events) {
            run.publisher.added();
        }
        commit::count(&self.report.progress, &prepared, committed_ms);
        run.intake.commit_hint(prepared.next_offsets);
    }

    fn publish(&mut self, run: &mut Running) {
        // The outbox entries of the partitions this sink holds: with several sinks on one
        // database, each publishes its own partitions' entries, never another's.
        let sources: Vec<(String, i32)> = match run.intake.consumer().assignment() {
            Ok(assigned) => assigned
                .into_iter()
                .map(|tp| (tp.topic, tp.partition))
                .collect(),
            Err(error) => {
                tracing::debug!(%error, "assignment unknown: publishing later");
                return;
            }
        };
        let store = &mut self.store;
        // The outbox round's store calls are the ones that can hang; its sends are bounded by
        // the publish timeout.
        self.report.store_wait(|| {
            run.publisher.publish(
                store,
                &run.producer,
                &self.config,
                &self.report.progress,
                self.backoff,
                &sources,
            );
        });
    }

    /// Checks that the database and the broker answer, for readiness while nothing else
    /// would tell (an idle sink makes no store calls).
    fn check_health(&mut self, run: &mut Running) {
        run.next_check = Instant::now() + self.config.health_interval;
        let health = &self.report.health;
        let store = &mut self.store;
        match self.report.store_call(|| store.ping()) {
            Ok(()) => health.set_ready(checks::DATABASE, true),
            Err(error) => {
                tracing::warn!(%error, "health check: the store does not answer");
                health.set_ready(checks::DATABASE, false);
            }
        }
    }

    /// At shutdown: what is stored is published once more and the producer flushed; the
    /// broker's group offsets are only a hint (the store holds the truth), so they are not
    /// waited on.
    fn drain(&mut self, run: &mut Running) {
        run.stop_check.store(true, Ordering::Release);
        if let Some(check) = run.broker_check.take()
            && check.join().is_err()
        {
            tracing::warn!("the broker check's thread panicked");
        }
        if run.publisher.is_pending() {
            self.publish(run);
        }
        if let Err(error) = run.producer.flush(self.config.publish_timeout) {
            tracing::warn!(%error, "flushing the producer at shutdown");
        }
    }
}
