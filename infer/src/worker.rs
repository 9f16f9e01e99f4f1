//! The worker: the stages on their threads, joined by bounded channels.
//!
//! ```text
//!  poll ──Polled──► decode ×N ──Staged──► batcher ──Batch──► replica ×R ──► post ×R ──┐
//!   ▲  (bounded,      │  (bounded)          │  (rendezvous /   (device)   (1)  (host)   │
//!   │   blocks)       │                     │   1 per replica)                          ▼
//!   │                 └──────── rejections ─┴── skipped ────────────────► Answer channel ──► output
//!   └───────────────────── in-flight credits (max_in_flight) ◄──────────────────────────┘
//! ```
//!
//! - poll: the only caller of `Consumer::poll`; never waits on inference, only on the
//!   in-flight credits (which every answered frame returns) and on the decode queue. It tags
//!   each message with its intake ticket and the consumer epoch, and serves rewind requests.
//! - decode: a pool of threads; a message becomes a prepared frame or a rejection.
//! - batcher: restores intake order, then [`Batcher`] forms batches when a replica is free.
//! - replicas: one OS thread and one module copy each; checked and warmed up before the
//!   worker joins its group. Each has a postprocessing thread (class maps -> instances) so
//!   the device never waits for the host's connected components.
//! - output: [`crate::produce`]: results and dead letters in intake order, transactions with
//!   the offsets.
//!
//! Stopping (the token is cancelled): poll stops reading and closes its channel; each stage
//! drains what it holds and closes the next; the output commits last. Any stage's fatal
//! error cancels the others the same way.
//!
//! Flow control: while all `max_in_flight` credits are taken the poll loop pauses the
//! consumer and goes on polling, so group membership and rebalances are served however long
//! the frames in flight take; the first returned credit resumes it, from the next message not
//! yet read.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Select, Sender, bounded};
use orstream_bus::metrics::{HealthReporter, LagGauge, NoHealth, checks};
use orstream_bus::{Backend, Bus, Consumer, ErrorKind, Message, TopicPartition};
use orstream_proto::{FrameResult, FrameStatus, Timings};
use tokio_util::sync::CancellationToken;

use crate::batcher::{Batcher, BatcherSettings, Pending, Skip};
use crate::config::{Delivery, InferConfig, Mode};
use crate::decode::{
    DecodeContext, Incoming, Prepared, dead_letter_headers, micros, prepare_frame, read_message,
};
use crate::error::InferError;
use crate::model::parse_device;
use crate::preprocess::PixelFormat;
use crate::produce::{Answer, DeadLetter, Origin, Output, OutputSettings, RewindControl};
use crate::runner::{self, Input, Model, Postprocessor, Runner};
use crate::stats::{Counters, Stats};
use crate::telemetry::{Instruments, batch_span, frame_span, result_traceparent};

/// The detail of a SKIPPED_STALE result.
const STALE_DETAIL: &str = "could not meet its deadline (capture time + latency budget)";
/// The detail of a SKIPPED_OVERLOAD result.
const OVERLOAD_DETAIL: &str = "superseded by a newer frame of its stream under overload";

/// Live mode: the intake ticket of the newest message read per stream (message key), so the
/// decode pool can answer a frame that newer ones of its stream will supersede at the batcher
/// anyway without decoding it. Under overload that keeps the CPU for frames that will run.
#[derive(Debug)]
struct Newest {
    by_key: Mutex<HashMap<Bytes, u64>>,
    /// Newer frames of a stream that make an older one superseded: `max_pending_per_stream`,
    /// at least a full batch.
    keep: u64,
}

impl Newest {
    /// Notes that the poll loop read `ticket` (tickets only grow) of the message's stream.
    fn read(&self, key: Option<&Bytes>, ticket: u64) {
        if let Some(key) = key {
            self.by_key
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key.clone(), ticket);
        }
    }

    /// Whether at least `keep` newer frames of the message's stream have been read.
    fn superseded(&self, key: Option<&Bytes>, ticket: u64) -> bool {
        let Some(key) = key else { return false };
        let by_key = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        by_key
            .get(key)
            .is_some_and(|&newest| newest >= ticket.saturating_add(self.keep))
    }
}
/// How long a blocking poll or channel wait lasts before the loop looks at the stop token.
const TICK: Duration = Duration::from_millis(50);
/// How often the broker is checked and the consumer lag measured (and the bound on each).
const BROKER_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Bound on admin calls at start (partitions, topic creation).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Tries at seeking a partition back during a rewind before giving up on it.
const SEEK_TRIES: u32 = 20;

/// A message on its way to a decode thread.
struct Polled {
    origin: Origin,
    message: Message,
}

/// What the decode pool hands the batcher, for every ticket: the frame, or a note that the
/// ticket was answered already (so the batcher's reordering does not wait for it).
enum Staged {
    Frame(Origin, Box<Prepared>, Option<Instant>),
    Answered(u64),
}

/// A frame in the batcher.
struct Job {
    origin: Origin,
    prepared: Box<Prepared>,
}

/// The inference worker. See the crate documentation for the whole picture.
pub struct Worker {
    config: InferConfig,
    bus: Bus,
    model: Model,
    counters: Arc<Counters>,
    health: Arc<dyn HealthReporter>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("model", &self.model.path)
            .field("group", &self.config.group_id)
            .finish_non_exhaustive()
    }
}

/// Shared by the stages: the first fatal error, and the token that stops them all.
#[derive(Clone)]
struct Failure {
    first: Arc<Mutex<Option<InferError>>>,
    stop: CancellationToken,
}

impl Failure {
    fn report(&self, error: InferError) {
        tracing::error!(%error, "stage failed; stopping the worker");
        let mut first = self.first.lock().unwrap_or_else(PoisonError::into_inner);
        if first.is_none() {
            *first = Some(error);
        }
        self.stop.cancel();
    }

    fn take(&self) -> Option<InferError> {
        self.first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

impl Worker {
    /// A worker for `model` on `bus`; checks the configuration (every problem at once).
    pub fn new(config: InferConfig, bus: Bus, model: Model) -> Result<Self, InferError> {
        config.validate()?;
        Ok(Self {
            config,
            bus,
            model,
            counters: Arc::new(Counters::default()),
            health: Arc::new(NoHealth),
        })
    }

    /// Reports liveness (the poll loop turning) and readiness (model warm, group joined,
    /// broker answering, not stopping) to `health`.
    pub fn with_health(mut self, health: Arc<dyn HealthReporter>) -> Self {
        self.health = health;
        self
    }

    /// The live counters, readable while [`run`](Self::run) runs.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }

    /// Runs until `shutdown` is cancelled (then drains and commits) or a stage fails.
    ///
    /// Order: model replicas load, are checked against the card and warm up; the output
    /// producer registers; only then does the consumer join its group.
    pub fn run(self, shutdown: CancellationToken) -> Result<Stats, InferError> {
        let config = &self.config;
        let stop = shutdown.child_token();
        let instruments = Arc::new(Instruments::new(&self.model.card.name, self.health.clone()));
        self.health.set_ready(checks::RUNNING, true);
        self.health.set_ready(checks::MODEL_WARM, false);
        self.health.set_ready(checks::PARTITIONS_ASSIGNED, false);
        self.health.set_ready(checks::BROKER, false);
        let failure = Failure {
            first: Arc::new(Mutex::new(None)),
            stop: stop.clone(),
        };
        let partitions = self
            .bus
            .partitions(&config.frames_topic, ADMIN_TIMEOUT)
            .map_err(|err| InferError::Stage {
                stage: "start".to_owned(),
                reason: format!(
                    "frames topic {} is not usable (create it first): {err}",
                    config.frames_topic
                ),
            })?;
        let count = u32::try_from(partitions.len()).unwrap_or(1).max(1);
        for topic in [&config.results_topic, &config.dlq_topic] {
            self.bus.create_topic(topic, count, ADMIN_TIMEOUT)?;
        }
        if config.model.torch_threads > 0 {
            tch::set_num_threads(i32::try_from(config.model.torch_threads).unwrap_or(1));
        }
        let device = parse_device(&config.model.device)?;
        let format = if device == tch::Device::Cpu {
            PixelFormat::Normalized
        } else {
            PixelFormat::Rgb8
        };

        let mut threads: Vec<(String, JoinHandle<()>)> = Vec::new();
        let (answer_tx, answer_rx) = bounded::<Answer>(config.max_in_flight);
        let batch_capacity = match config.mode {
            Mode::Live => 0,
            Mode::Archive => 1,
        };
        let (batch_tx, batch_rx) = bounded::<Vec<Job>>(batch_capacity);
        let (feedback_tx, feedback_rx) = bounded::<(usize, Duration)>(64);

        // Replicas first: load, check, warm up; the worker joins its group only if all are ready.
        let (ready_tx, ready_rx) = bounded::<Result<Duration, InferError>>(config.model.replicas);
        for index in 0..config.model.replicas {
            let name = format!("replica-{index}");
            let runner_args = (self.model.clone(), config.clone());
            let batches = batch_rx.clone();
            let feedback = feedback_tx.clone();
            // One batch may wait for postprocessing while the replica runs the next.
            let (forwarded_tx, forwarded_rx) = bounded::<Forwarded>(1);
            {
                let post = Postprocessor::new(self.model.card.clone(), config.postprocess.clone());
                let answers = answer_tx.clone();
                let name = format!("post-{index}");
                let instruments = instruments.clone();
                let handle = spawn(&name, move || {
                    postprocess_loop(&post, &forwarded_rx, &answers, &instruments);
                })?;
                threads.push((name, handle));
            }
            let ready = ready_tx.clone();
            let counters = self.counters.clone();
            let instruments = instruments.clone();
            let handle = spawn(&name, move || {
                let (model, config) = runner_args;
                let runner =
                    Runner::load(&model, &config.model, &config.postprocess).and_then(|runner| {
                        let warm = runner.check_and_warm_up(
                            config.batch.max_batch_size,
                            config.model.warmup_runs,
                        )?;
                        Ok((runner, warm))
                    });
                let runner = match runner {
                    Ok((runner, warm)) => {
                        let _ = ready.send(Ok(warm));
                        runner
                    }
                    Err(err) => {
                        let _ = ready.send(Err(err));
                        return;
                    }
                };
                drop(ready);
                replica_loop(
                    &runner,
                    &batches,
                    &forwarded_tx,
                    &feedback,
                    &counters,
                    &instruments,
                );
            })?;
            threads.push((name, handle));
        }
        drop(ready_tx);
        drop(batch_rx);
        drop(feedback_tx);
        let mut warm_latency = Duration::ZERO;
        for _ in 0..config.model.replicas {
            match ready_rx.recv() {
                Ok(Ok(latency)) => warm_latency = warm_latency.max(latency),
                Ok(Err(err)) => {
                    drop(batch_tx);
                    join_all(threads);
                    return Err(err);
                }
                Err(_) => {
                    drop(batch_tx);
                    join_all(threads);
                    return Err(InferError::Stage {
                        stage: "replica".to_owned(),
                        reason: "a replica thread ended before it was ready".to_owned(),
                    });
                }
            }
        }
        tracing::info!(
            replicas = config.model.replicas,
            warm_batch_ms = warm_latency.as_secs_f64() * 1e3,
            model = %self.model.card.name,
            "model ready"
        );
        self.health.set_ready(checks::MODEL_WARM, true);

        let consumer = Arc::new(self.bus.consumer(&config.group_id)?);
        let rewind = Arc::new(RewindControl::default());
        let message_max = usize::try_from(config.kafka.message_max_bytes).unwrap_or(usize::MAX);
        let output = Output::new(
            OutputSettings {
                delivery: config.delivery,
                frames_topic: config.frames_topic.clone(),
                results_topic: config.results_topic.clone(),
                dlq_topic: config.dlq_topic.clone(),
                transactional_id: config.transactional_id.clone(),
                commit_interval: config.commit_interval,
                // Room for the headers and the record framing.
                max_dlq_payload: message_max.saturating_sub(64 * 1024),
            },
            self.bus.clone(),
            consumer.clone(),
            rewind.clone(),
            self.counters.clone(),
            instruments.clone(),
        );
        let output = match output {
            Ok(output) => output,
            Err(err) => {
                drop(batch_tx);
                join_all(threads);
                return Err(err);
            }
        };
        if config.delivery == Delivery::AtLeastOnce {
            tracing::info!("at-least-once delivery: a crash may repeat results");
        }

        let (credit_tx, credit_rx) = bounded::<()>(config.max_in_flight);
        let (polled_tx, polled_rx) = bounded::<Polled>(config.decode.queue);
        let (staged_tx, staged_rx) = bounded::<Staged>(config.decode.queue);

        // Output.
        {
            let answers = answer_rx;
            let failure = failure.clone();
            let handle = spawn("output", move || {
                if let Err(err) = output_loop(output, &answers, &credit_rx) {
                    failure.report(err);
                }
            })?;
            threads.push(("output".to_owned(), handle));
        }

        // Batcher.
        {
            let settings = BatcherSettings {
                max_batch_size: config.batch.max_batch_size,
                max_linger: config.batch.max_linger,
                max_pending_per_stream: (config.mode == Mode::Live)
                    .then_some(config.max_pending_per_stream),
                target_latency: config.batch.adaptive.then_some(config.batch.target_latency),
            };
            let answers = answer_tx.clone();
            let archive_capacity = config.batch.max_batch_size * 2;
            let mode = config.mode;
            let handle = spawn("batcher", move || {
                let mut batcher = Batcher::new(settings);
                batcher.set_expected_latency(warm_latency);
                batcher_loop(
                    batcher,
                    mode,
                    archive_capacity,
                    &staged_rx,
                    &batch_tx,
                    &feedback_rx,
                    &answers,
                );
            })?;
            threads.push(("batcher".to_owned(), handle));
        }

        let newest = (config.mode == Mode::Live).then(|| {
            Arc::new(Newest {
                by_key: Mutex::new(HashMap::new()),
                // The batcher supersedes only past a full batch; so does this, or the
                // burst a consumer finds when it joins would lose its first frames.
                keep: config
                    .max_pending_per_stream
                    .max(config.batch.max_batch_size) as u64,
            })
        });

        // Decode pool.
        let ctx = DecodeContext {
            card: self.model.card.clone(),
            identity: self.model.identity(),
            format,
            max_pixels: config.decode.max_pixels,
        };
        for index in 0..config.decode.workers {
            let name = format!("decode-{index}");
            let polled = polled_rx.clone();
            let staged = staged_tx.clone();
            let answers = answer_tx.clone();
            let ctx = ctx.clone();
            let budget = (config.mode == Mode::Live).then_some(config.latency_budget);
            let instruments = instruments.clone();
            let newest = newest.clone();
            let handle = spawn(&name, move || {
                decode_loop(
                    &ctx,
                    budget,
                    newest.as_deref(),
                    &polled,
                    &staged,
                    &answers,
                    &instruments,
                );
            })?;
            threads.push((name, handle));
        }
        drop(polled_rx);
        drop(staged_tx);
        drop(answer_tx);

        // Now and then, off the poll thread (both ask the broker): whether the broker answers
        // (a poll does not say: librdkafka retries behind it), and the consumer lag.
        {
            let consumer = consumer.clone();
            let stop = stop.clone();
            let gauge = LagGauge::new(&config.group_id);
            let bus = self.bus.clone();
            let topic = config.frames_topic.clone();
            let health = self.health.clone();
            let handle = spawn("broker-check", move || {
                while !stop.is_cancelled() {
                    match bus.partitions(&topic, BROKER_CHECK_INTERVAL) {
                        Ok(_) => {
                            health.set_ready(checks::BROKER, true);
                            if let Err(error) = gauge.record(&consumer, BROKER_CHECK_INTERVAL) {
                                tracing::debug!(%error, "consumer lag not measured");
                            }
                        }
                        Err(error) => {
                            tracing::warn!(%error, "the broker does not answer");
                            health.set_ready(checks::BROKER, false);
                        }
                    }
                    let next = Instant::now() + BROKER_CHECK_INTERVAL;
                    while !stop.is_cancelled() && Instant::now() < next {
                        std::thread::sleep(TICK);
                    }
                }
            })?;
            threads.push(("broker-check".to_owned(), handle));
        }

        // Poll, last: joining the group starts the flow.
        {
            let consumer = consumer.clone();
            let failure = failure.clone();
            let stop = stop.clone();
            let topic = config.frames_topic.clone();
            let counters = self.counters.clone();
            let instruments = instruments.clone();
            // Kafka runs rebalances inside `poll`, on this thread, and a message returned after
            // one belongs to the new assignment; the in-process bus rebalances from the
            // joining member's thread, so a message polled meanwhile may predate the reset.
            let ambiguous = self.bus.backend() == Backend::Memory;
            let handle = spawn("poll", move || {
                let result = poll_loop(
                    &consumer,
                    &topic,
                    &stop,
                    &polled_tx,
                    &credit_tx,
                    &rewind,
                    &counters,
                    &instruments,
                    newest.as_deref(),
                    ambiguous,
                );
                if let Err(err) = result {
                    failure.report(err);
                }
            })?;
            threads.push(("poll".to_owned(), handle));
        }
        drop(consumer);

        let drained = wait_for(threads, &stop, config.drain_timeout);
        self.health.set_ready(checks::RUNNING, false);
        drained?;
        match failure.take() {
            Some(err) => Err(err),
            None => Ok(self.counters.snapshot()),
        }
    }
}

fn spawn(name: &str, body: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, InferError> {
    std::thread::Builder::new()
        .name(format!("infer-{name}"))
        .spawn(body)
        .map_err(|e| InferError::Stage {
            stage: name.to_owned(),
            reason: format!("cannot start its thread: {e}"),
        })
}

fn join_all(threads: Vec<(String, JoinHandle<()>)>) {
    for (name, handle) in threads {
        if handle.join().is_err() {
            tracing::error!(stage = %name, "stage thread panicked");
        }
    }
}

/// Joins the stages; once `stop` is cancelled they have `drain` to finish.
fn wait_for(
    threads: Vec<(String, JoinHandle<()>)>,
    stop: &CancellationToken,
    drain: Duration,
) -> Result<(), InferError> {
    let mut stopped_at: Option<Instant> = None;
    let mut pending = threads;
    loop {
        let (finished, running): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|(_, h)| h.is_finished());
        for (name, handle) in finished {
            if stop.is_cancelled() {
                tracing::debug!(stage = %name, "stage finished");
            }
            if handle.join().is_err() {
                return Err(InferError::Stage {
                    stage: name,
                    reason: "the thread panicked".to_owned(),
                });
            }
        }
        if running.is_empty() {
            return Ok(());
        }
        pending = running;
        if stop.is_cancelled() {
            let since = *stopped_at.get_or_insert_with(Instant::now);
            if since.elapsed() > drain {
                // The stages keep running detached; whatever they did not commit is redone by
                // the next worker from the committed offsets.
                return Err(InferError::DrainTimeout {
                    timeout: drain,
                    running: pending.iter().map(|(name, _)| name.clone()).collect(),
                });
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[allow(clippy::too_many_arguments)]
fn poll_loop(
    consumer: &Consumer,
    topic: &str,
    stop: &CancellationToken,
    polled: &Sender<Polled>,
    credits: &Sender<()>,
    rewind: &RewindControl,
    counters: &Counters,
    instruments: &Instruments,
    newest: Option<&Newest>,
    ambiguous_rebalances: bool,
) -> Result<(), InferError> {
    let health = &instruments.health;
    consumer.subscribe(&[topic])?;
    let mut ticket = 0u64;
    let mut epoch = 0u64;
    let mut seen_rebalances = consumer.rebalances();
    let mut holding_credit = false;
    let mut served = 0u64;
    // Set when this loop wants a rewind: nothing is read until the output stage asked for it
    // and it is done, or a message read meanwhile could be committed past the one dropped.
    let mut want_rewind = false;
    while !stop.is_cancelled() {
        health.beat();
        let requested = rewind.requested.load(Ordering::Acquire);
        if requested > served {
            // Seek unpaused: a resume then starts from the sought offsets for sure.
            if consumer.is_paused() {
                consumer.resume()?;
            }
            rewind_to_committed(consumer, topic)?;
            epoch += 1;
            seen_rebalances = consumer.rebalances();
            rewind.served_epoch.store(epoch, Ordering::Release);
            rewind.served.store(requested, Ordering::Release);
            served = requested;
            want_rewind = false;
        }
        if want_rewind {
            // Still served: polling a paused consumer keeps it in its group.
            if consumer.is_paused() {
                consumer.poll(TICK / 5)?;
            } else {
                std::thread::sleep(TICK / 5);
            }
            continue;
        }
        if !holding_credit {
            match credits.try_send(()) {
                Ok(()) => {
                    holding_credit = true;
                    if consumer.is_paused() {
                        consumer.resume()?;
                    }
                }
                // Every credit is out: pause and go on polling, so the group keeps this
                // member however long the frames in flight take.
                Err(crossbeam_channel::TrySendError::Full(())) => {
                    if !consumer.is_paused() {
                        consumer.pause()?;
                        counters.pauses.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(crossbeam_channel::TrySendError::Disconnected(())) => break,
            }
        }
        let before = consumer.rebalances();
        let polled_message = consumer.poll(TICK);
        let after = consumer.rebalances();
        if after != seen_rebalances {
            // Every partition restarts from the committed offsets: a new epoch.
            epoch += 1;
            seen_rebalances = after;
            // Joined the group: ready, also with no partition (more members than partitions).
            health.set_ready(checks::PARTITIONS_ASSIGNED, true);
        }
        match polled_message {
            Ok(Some(message)) => {
                counters.consumed.fetch_add(1, Ordering::Relaxed);
                instruments.consumed(topic);
                if before != after && ambiguous_rebalances {
                    // Read while the group changed: it may come from before the reset (to be
                    // read again) or after it. Drop it and have everything since the last
                    // commit read again, so it is answered once, for sure. The output stage
                    // decides the rewind, so no commit of its can race the seek.
                    tracing::debug!(
                        partition = message.partition,
                        offset = message.offset,
                        "message read during a rebalance; rewinding"
                    );
                    rewind.wanted.fetch_add(1, Ordering::AcqRel);
                    want_rewind = true;
                    continue;
                }
                // A paused consumer delivers nothing, but should one come anyway it waits
                // for a credit here; dropping it would leave a hole under later commits.
                if !holding_credit && !wait_for_credit(credits, stop) {
                    break;
                }
                holding_credit = false;
                let origin = Origin {
                    ticket,
                    epoch,
                    rebalances: after,
                    partition: message.partition,
                    offset: message.offset,
                    polled_at: Instant::now(),
                };
                if let Some(newest) = newest {
                    newest.read(message.key.as_ref(), ticket);
                }
                ticket += 1;
                if polled.send(Polled { origin, message }).is_err() {
                    break;
                }
            }
            Ok(None) => {}
            Err(err) if err.kind() == ErrorKind::Fatal => return Err(err.into()),
            Err(err) => {
                tracing::warn!(%err, "poll failed; retrying");
                std::thread::sleep(TICK);
            }
        }
    }
    Ok(())
}

/// Takes an in-flight credit, waiting as long as it takes; `false` when the worker stops or
/// the output stage is gone first.
fn wait_for_credit(credits: &Sender<()>, stop: &CancellationToken) -> bool {
    while !stop.is_cancelled() {
        match credits.send_timeout((), TICK) {
            Ok(()) => return true,
            Err(crossbeam_channel::SendTimeoutError::Timeout(())) => {}
            Err(crossbeam_channel::SendTimeoutError::Disconnected(())) => return false,
        }
    }
    false
}

/// Seeks every assigned partition of `topic` back to the group's committed offset (or the
/// start, without one). A partition that cannot be sought and is still assigned is a fatal
/// error: reading on from where it is would skip the work being redone.
fn rewind_to_committed(consumer: &Consumer, topic: &str) -> Result<(), InferError> {
    let assigned: Vec<TopicPartition> = consumer
        .assignment()?
        .into_iter()
        .filter(|tp| tp.topic == topic)
        .collect();
    let committed = consumer.committed(&assigned, ADMIN_TIMEOUT)?;
    for tp in &assigned {
        let offset = committed.get(tp).copied().unwrap_or(0);
        let mut tries = 0;
        loop {
            match consumer.seek(tp, offset, ADMIN_TIMEOUT) {
                Ok(()) => break,
                Err(err) if err.kind() == ErrorKind::Fatal => return Err(err.into()),
                Err(err) => {
                    tries += 1;
                    if tries < SEEK_TRIES {
                        // Right after an assignment the partition's fetcher may not run yet.
                        std::thread::sleep(TICK);
                        continue;
                    }
                    if consumer.assignment()?.contains(tp) {
                        return Err(err.into());
                    }
                    // No longer ours: its new owner starts from the committed offset anyway.
                    tracing::info!(partition = %tp, "not assigned any more; no rewind needed");
                    break;
                }
            }
        }
    }
    Ok(())
}

fn decode_loop(
    ctx: &DecodeContext,
    budget: Option<Duration>,
    newest: Option<&Newest>,
    polled: &Receiver<Polled>,
    staged: &Sender<Staged>,
    answers: &Sender<Answer>,
    instruments: &Instruments,
) {
    for Polled { origin, message } in polled.iter() {
        let span = frame_span(&message.headers);
        let read = read_message(&message, ctx).and_then(|mut incoming| {
            incoming.traceparent = result_traceparent(&span, incoming.traceparent.take());
            let deadline =
                budget.map(|budget| deadline_instant(incoming.frame.capture_time_ns, budget));
            if deadline.is_some_and(|d| d <= Instant::now()) {
                // Past its deadline already (read from a backlog): answered without
                // decoding its image, so catching up on stale frames is cheap.
                let answer = early_answer(origin, &incoming, ctx, span.clone(), Skip::Stale);
                return Ok(Decoded::Answered(Box::new(answer)));
            }
            if newest.is_some_and(|n| n.superseded(message.key.as_ref(), origin.ticket)) {
                // Newer frames of its stream are on their way to the batcher, which would keep
                // them and drop this one: answered now, without decoding its image.
                let answer = early_answer(origin, &incoming, ctx, span.clone(), Skip::Overload);
                return Ok(Decoded::Answered(Box::new(answer)));
            }
            prepare_frame(incoming, ctx)
                .map(|prepared| Decoded::Ready(Box::new(prepared), deadline))
        });
        let answer = match read {
            Ok(Decoded::Ready(mut prepared, deadline)) => {
                instruments.preprocessed(Duration::from_micros(prepared.preprocess_us));
                prepared.span = span;
                if staged
                    .send(Staged::Frame(origin, prepared, deadline))
                    .is_err()
                {
                    return;
                }
                continue;
            }
            Ok(Decoded::Answered(stale)) => *stale,
            Err(rejected) => {
                tracing::warn!(
                    topic = %message.topic,
                    partition = message.partition,
                    offset = message.offset,
                    reason = %rejected.reason,
                    "frame rejected to the dead-letter topic"
                );
                Answer {
                    origin,
                    result: rejected.result,
                    dead_letter: Some(DeadLetter {
                        key: message.key.clone(),
                        payload: message.payload.clone(),
                        headers: dead_letter_headers(&message, &rejected.reason),
                    }),
                    traceparent: result_traceparent(&span, rejected.traceparent),
                    span,
                }
            }
        };
        if answers.send(answer).is_err() || staged.send(Staged::Answered(origin.ticket)).is_err() {
            return;
        }
    }
}

/// What the decode pool makes of a frame it read.
enum Decoded {
    /// Ready for the batcher, with its deadline in live mode.
    Ready(Box<Prepared>, Option<Instant>),
    /// Answered without running.
    Answered(Box<Answer>),
}

/// The answer of a frame skipped before decoding: past its deadline, or superseded.
fn early_answer(
    origin: Origin,
    incoming: &Incoming,
    ctx: &DecodeContext,
    span: tracing::Span,
    skip: Skip,
) -> Answer {
    let result = incoming.result(ctx);
    let traceparent = incoming.traceparent.clone();
    skipped(
        origin,
        result,
        incoming.elapsed_us(),
        traceparent,
        span,
        skip,
    )
}

/// The monotonic instant of `capture_time_ns + budget` (wall clock), for deadline checks.
fn deadline_instant(capture_time_ns: i64, budget: Duration) -> Instant {
    let budget_ns = i64::try_from(budget.as_nanos()).unwrap_or(i64::MAX);
    let due_ns = capture_time_ns.saturating_add(budget_ns);
    let left_ns = due_ns.saturating_sub(crate::clock::now_ns());
    let now = Instant::now();
    if left_ns >= 0 {
        now + Duration::from_nanos(left_ns.unsigned_abs())
    } else {
        now.checked_sub(Duration::from_nanos(left_ns.unsigned_abs()))
            .unwrap_or(now)
    }
}

fn skip_answer(pending: Pending<Job>, skip: Skip) -> Answer {
    let Job { origin, prepared } = pending.item;
    let Prepared {
        result,
        preprocess_us,
        traceparent,
        span,
        ..
    } = *prepared;
    skipped(origin, result, preprocess_us, traceparent, span, skip)
}

/// The answer of a frame that is not run: `result` marked with `skip`'s status and detail.
fn skipped(
    origin: Origin,
    mut result: FrameResult,
    preprocess_us: u64,
    traceparent: Option<Vec<u8>>,
    span: tracing::Span,
    skip: Skip,
) -> Answer {
    let (status, detail) = match skip {
        Skip::Stale => (FrameStatus::SkippedStale, STALE_DETAIL),
        Skip::Overload => (FrameStatus::SkippedOverload, OVERLOAD_DETAIL),
    };
    result.status = status as i32;
    result.status_detail = detail.to_owned();
    result.timings = Some(Timings {
        queue_wait_us: micros(origin.polled_at.elapsed()),
        preprocess_us,
        ..Timings::default()
    });
    Answer {
        origin,
        result: Some(result),
        dead_letter: None,
        traceparent,
        span,
    }
}

fn batcher_loop(
    mut batcher: Batcher<Job>,
    mode: Mode,
    archive_capacity: usize,
    staged: &Receiver<Staged>,
    batches: &Sender<Vec<Job>>,
    feedback: &Receiver<(usize, Duration)>,
    answers: &Sender<Answer>,
) {
    let mut reorder: BTreeMap<u64, Staged> = BTreeMap::new();
    let mut next_ticket = 0u64;
    let mut input_open = true;
    loop {
        let now = Instant::now();
        while let Some(entry) = reorder.remove(&next_ticket) {
            next_ticket += 1;
            if let Staged::Frame(origin, prepared, deadline) = entry {
                let stream: Arc<str> = Arc::from(prepared.result.stream_id.as_str());
                batcher.push(
                    Pending {
                        ticket: origin.ticket,
                        stream,
                        arrived: now,
                        deadline,
                        item: Job { origin, prepared },
                    },
                    now,
                );
            }
        }
        while let Ok((len, latency)) = feedback.try_recv() {
            batcher.record_latency(len, latency);
        }
        for (pending, skip) in batcher.take_skipped() {
            if answers.send(skip_answer(pending, skip)).is_err() {
                return;
            }
        }
        if !input_open && reorder.is_empty() && batcher.is_empty() {
            return;
        }
        let due = batcher.is_due(now) || (!input_open && !batcher.is_empty());
        // Only frames released in order count against the archive cap: the reorder buffer
        // must always take input, or a missing ticket stuck behind later ones in the channel
        // would never come. It is bounded by the in-flight credits anyway.
        let accepting = input_open && (mode == Mode::Live || batcher.len() < archive_capacity);
        let mut select = Select::new();
        let recv_index = accepting.then(|| select.recv(staged));
        let send_index = due.then(|| select.send(batches));
        let wake = if due {
            now + TICK
        } else {
            batcher.next_due().unwrap_or(now + TICK).min(now + TICK)
        };
        if recv_index.is_none() && send_index.is_none() {
            std::thread::sleep(wake.saturating_duration_since(now));
            continue;
        }
        let Ok(operation) = select.select_deadline(wake) else {
            continue;
        };
        if Some(operation.index()) == recv_index {
            match operation.recv(staged) {
                Ok(entry) => {
                    let ticket = match &entry {
                        Staged::Frame(origin, _, _) => origin.ticket,
                        Staged::Answered(ticket) => *ticket,
                    };
                    reorder.insert(ticket, entry);
                }
                Err(_) => input_open = false,
            }
        } else if Some(operation.index()) == send_index {
            // Formed only now that a replica takes it, so the stale check is as late as can be.
            let batch: Vec<Job> = batcher
                .take_batch(Instant::now())
                .into_iter()
                .map(|p| p.item)
                .collect();
            if operation.send(batches, batch).is_err() {
                return;
            }
        }
    }
}

/// A batch whose device step is done, on its way to the host postprocessing.
struct Forwarded {
    batch: Vec<Job>,
    outcome: Result<runner::Forwarded, String>,
    started: Instant,
    latency: Duration,
}

/// The replica: device work only, so it starts the next batch while its postprocessing
/// thread turns the last one into instances.
fn replica_loop(
    runner: &Runner,
    batches: &Receiver<Vec<Job>>,
    forwarded: &Sender<Forwarded>,
    feedback: &Sender<(usize, Duration)>,
    counters: &Counters,
    instruments: &Instruments,
) {
    for batch in batches.iter() {
        if batch.is_empty() {
            continue;
        }
        let span = batch_span(batch.len(), batch.iter().map(|job| &job.prepared.span));
        let entered = span.enter();
        let started = Instant::now();
        let inputs: Vec<Input<'_>> = batch
            .iter()
            .map(|job| Input {
                pixels: &job.prepared.pixels,
                placement: job.prepared.placement,
            })
            .collect();
        let outcome = runner.forward(&inputs).map_err(|err| {
            tracing::warn!(%err, batch = batch.len(), "batch failed; answering MODEL_ERROR");
            err.to_string()
        });
        drop(inputs);
        let latency = started.elapsed();
        drop(entered);
        instruments.forwarded(batch.len(), latency);
        let _ = feedback.try_send((batch.len(), latency));
        counters.batches.fetch_add(1, Ordering::Relaxed);
        counters
            .batched_frames
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        let done = Forwarded {
            batch,
            outcome,
            started,
            latency,
        };
        if forwarded.send(done).is_err() {
            return;
        }
    }
}

/// A replica's host half: instances, timings and answers.
fn postprocess_loop(
    post: &Postprocessor,
    forwarded: &Receiver<Forwarded>,
    answers: &Sender<Answer>,
    instruments: &Instruments,
) {
    for Forwarded {
        batch,
        outcome,
        started,
        latency,
    } in forwarded.iter()
    {
        let size = u32::try_from(batch.len()).unwrap_or(u32::MAX);
        let placements: Vec<_> = batch.iter().map(|job| job.prepared.placement).collect();
        let (mut instances, forward, post_times) = match outcome {
            Ok(device) => {
                let out = post.finish(device, &placements);
                let instances = match out.failure {
                    Some(failure) => {
                        tracing::warn!(%failure, batch = batch.len(), "answering MODEL_ERROR");
                        batch.iter().map(|_| Err(failure.clone())).collect()
                    }
                    None => out.instances.into_iter().map(Ok).collect::<Vec<_>>(),
                };
                (instances, out.forward, out.postprocess)
            }
            Err(message) => (
                batch.iter().map(|_| Err(message.clone())).collect(),
                latency,
                Vec::new(),
            ),
        };
        instances.resize_with(batch.len(), || Err("no output for this frame".to_owned()));
        instruments.postprocessed(
            post_times.iter().sum(),
            batch
                .iter()
                .map(|job| started.saturating_duration_since(job.origin.polled_at)),
        );
        for (i, (job, found)) in batch.into_iter().zip(instances).enumerate() {
            let Job { origin, prepared } = job;
            let mut result = prepared.result;
            match found {
                Ok(list) => {
                    result.status = FrameStatus::Ok as i32;
                    result.instances = list;
                }
                Err(message) => {
                    result.status = FrameStatus::ModelError as i32;
                    result.status_detail = message;
                }
            }
            result.timings = Some(Timings {
                queue_wait_us: micros(started.saturating_duration_since(origin.polled_at)),
                batch_size: size,
                preprocess_us: prepared.preprocess_us,
                forward_us: micros(forward),
                postprocess_us: post_times.get(i).copied().map(micros).unwrap_or(0),
            });
            let answer = Answer {
                origin,
                result: Some(result),
                dead_letter: None,
                traceparent: prepared.traceparent,
                span: prepared.span,
            };
            if answers.send(answer).is_err() {
                return;
            }
        }
    }
}

fn output_loop(
    mut output: Output,
    answers: &Receiver<Answer>,
    credits: &Receiver<()>,
) -> Result<(), InferError> {
    loop {
        output.serve_wanted_rewind()?;
        let wake = output
            .commit_due()
            .unwrap_or_else(|| Instant::now() + TICK)
            .min(Instant::now() + TICK);
        match answers.recv_deadline(wake) {
            Ok(answer) => {
                let emitted = output.accept(answer)?;
                for _ in 0..emitted {
                    // Every ticket took a credit before it was read, so one is there.
                    let _ = credits.try_recv();
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if output.commit_due().is_some_and(|due| Instant::now() >= due) {
            output.commit()?;
        }
    }
    if output.waiting() > 0 {
        tracing::warn!(
            waiting = output.waiting(),
            "answers left without their predecessors at shutdown; they are redone after a restart"
        );
    }
    output.commit()
}
