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
//! - poll and decode (`worker::poll`): the only caller of `Consumer::poll`; never waits on
//!   inference, only on the in-flight credits (which every answered frame returns) and on the
//!   decode queue. It tags each message with its intake ticket and the consumer epoch, and
//!   serves rewind requests. The decode pool turns a message into a prepared frame or a
//!   rejection.
//! - batch (`worker::batch`): restores intake order, then [`Batcher`](crate::batcher::Batcher)
//!   forms batches when a replica is free.
//! - replicas (`worker::replica`): one OS thread and one module copy each; checked and warmed up
//!   before the worker joins its group. Each has a postprocessing thread (class maps ->
//!   instances) so the device never waits for the host's connected components.
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

mod batch;
mod poll;
mod replica;

use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, bounded};
use orstream_bus::metrics::{self, HealthReporter, LagGauge, NoHealth, checks};
use orstream_bus::{Backend, Bus, BusError, Consumer};
use orstream_shell::retry::{Backoff, retry};
use tokio_util::sync::CancellationToken;

use crate::config::{DeliveryGuarantee, InferConfig, Mode};
use crate::decode::DecodeContext;
use crate::error::InferError;
use crate::model::parse_device;
use crate::preprocess::PixelFormat;
use crate::produce::{Answer, OutputSettings, OutputStage, RewindControl};
use crate::runner::Model;
use crate::stats::{Counters, Stats};
use crate::telemetry::{BROKER_CHECK_INTERVAL, BrokerCheck, Instruments};

use batch::{BatchLinks, BatchStage};
use poll::{DecodeLinks, DecodePool, Newest, PollContext, PollLinks};
use replica::{ReplicaLinks, Replicas};

/// Bound on admin calls at start (partitions, topic creation) and on a rewind's seeks.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Between the bus's client id and the transactional id in the client id a worker's consumer
/// reports under exactly-once (`orstream/transactional-id=orstream-infer-0`).
const TRANSACTIONAL_ID_MARK: &str = "/transactional-id=";

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
    /// producer registers; only then does the consumer join its group. Stopping follows the
    /// channels: poll stops reading, each stage drains what it holds and closes the next, and
    /// the output commits last.
    pub fn run(self, shutdown: CancellationToken) -> Result<Stats, InferError> {
        let instruments = self.start_telemetry();
        let mut stages = Stages::new(shutdown.child_token());
        if !self.wait_for_topics(&shutdown)? || !self.transactional_id_free(&shutdown)? {
            self.health.set_ready(checks::RUNNING, false);
            return Ok(self.counters.snapshot());
        }
        let format = self.configure_torch()?;
        let links = Links::new(&self.config);

        // Replicas first: the worker joins its group only if every one is ready.
        let ready = replica::spawn(self.replicas(links.replicas, &instruments), &mut stages)?;
        let warm_latency = match ready.wait() {
            Ok(latency) => latency,
            Err(err) => return Err(stages.abandon(links.batch, err)),
        };
        self.report_model_warm(warm_latency);
        let consumer = Arc::new(
            self.bus
                .consumer_as(&self.config.group_id, &self.member_client_id())?,
        );
        let rewind = Arc::new(RewindControl::default());
        let output = match self.output(&consumer, &rewind, &instruments) {
            Ok(output) => output,
            Err(err) => return Err(stages.abandon(links.batch, err)),
        };

        let OutputLinks { answers, credits } = links.output;
        stages.spawn_fallible("output", move || output.run(&answers, &credits))?;
        let batcher = BatchStage::new(&self.config, warm_latency, links.batch);
        stages.spawn("batcher", move || batcher.run())?;
        let newest = Newest::for_config(&self.config);
        self.decode_pool(format, newest.clone(), links.decode, &instruments)
            .spawn(self.config.decode.workers, &mut stages)?;
        let check = self.broker_check(consumer.clone(), stages.stop());
        stages.spawn("broker-check", move || check.run())?;
        // Poll, last: joining the group starts the flow.
        let poll = PollContext {
            consumer,
            topic: self.config.frames_topic.clone(),
            stop: stages.stop(),
            links: links.poll,
            rewind,
            newest,
            counters: self.counters.clone(),
            instruments,
            // Kafka runs rebalances inside `poll`, on this thread, and a message returned
            // after one belongs to the new assignment; the in-process bus rebalances from the
            // joining member's thread, so a message polled meanwhile may predate the reset.
            ambiguous_rebalances: self.bus.backend() == Backend::Memory,
        };
        stages.spawn_fallible("poll", move || poll::poll_loop(&poll))?;

        let failure = stages.failure.clone();
        let drained = stages.wait(self.config.drain_timeout);
        self.health.set_ready(checks::RUNNING, false);
        drained?;
        match failure.take() {
            Some(err) => Err(err),
            None => Ok(self.counters.snapshot()),
        }
    }

    /// The instruments, with readiness reset to "running, nothing else yet".
    fn start_telemetry(&self) -> Arc<Instruments> {
        let instruments = Arc::new(Instruments::new(
            &self.model.card.name,
            self.health.clone(),
            self.config.model.forward_deadline,
        ));
        self.health.set_ready(checks::RUNNING, true);
        self.health.set_ready(checks::MODEL_WARM, false);
        self.health.set_ready(checks::PARTITIONS_ASSIGNED, false);
        self.health.set_ready(checks::BROKER, false);
        instruments
    }

    /// The client id the worker's consumer reports to its group: the bus's, marked with the
    /// transactional id under exactly-once, so a second worker can see the id is taken.
    fn member_client_id(&self) -> String {
        let client_id = &self.config.kafka.client_id;
        match self.config.delivery {
            DeliveryGuarantee::ExactlyOnce => format!(
                "{client_id}{TRANSACTIONAL_ID_MARK}{}",
                self.config.transactional_id
            ),
            DeliveryGuarantee::AtLeastOnce => client_id.clone(),
        }
    }

    /// Under exactly-once, before anything fences anyone: whether a member of the group
    /// already holds this worker's transactional id. A holder that is still listed after the
    /// session timeout (and 5 s) heartbeats, so it is alive: the worker refuses to start.
    /// One that is gone by then was a crashed predecessor whose membership ran out. False
    /// when shutdown came first. Two workers starting at the same moment both see none;
    /// repeated fencing stops one of them later ([`InferError::TransactionalIdInUse`]).
    fn transactional_id_free(&self, shutdown: &CancellationToken) -> Result<bool, InferError> {
        if self.config.delivery != DeliveryGuarantee::ExactlyOnce {
            return Ok(true);
        }
        let mark = format!("{TRANSACTIONAL_ID_MARK}{}", self.config.transactional_id);
        let group = &self.config.group_id;
        let patience = self.config.kafka.session_timeout + Duration::from_secs(5);
        let started = Instant::now();
        loop {
            let members = self.bus.group_members(group, Duration::from_secs(10))?;
            let Some(holder) = members.into_iter().find(|m| m.client_id.ends_with(&mark)) else {
                return Ok(true);
            };
            if started.elapsed() >= patience {
                return Err(InferError::TransactionalIdHeld {
                    transactional_id: self.config.transactional_id.clone(),
                    group: group.clone(),
                    client_id: holder.client_id,
                    host: holder.host,
                    waited: started.elapsed(),
                });
            }
            tracing::warn!(client_id = %holder.client_id, host = %holder.host, %group,
                "a member of the group holds this worker's transactional id; waiting up to \
                 the session timeout for it to leave");
            if !orstream_shell::pause_while(Duration::from_secs(1), shutdown, || self.health.beat())
            {
                return Ok(false);
            }
        }
    }

    /// Waits, for as long as it takes, for the broker to answer and the frames topic to
    /// exist, then creates the results and dead-letter topics with as many partitions, so
    /// results keep the frames' per-stream spread. Not ready meanwhile (`broker`), alive (the
    /// wait is the worker doing what it should). False when shutdown came first.
    fn wait_for_topics(&self, shutdown: &CancellationToken) -> Result<bool, InferError> {
        let backoff = Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(5),
        };
        let created = retry(
            backoff,
            shutdown,
            || self.create_topics(),
            BusError::is_retriable,
            |err, attempt| {
                self.health.beat();
                self.health.set_ready(checks::BROKER, false);
                if attempt % 10 == 0 {
                    tracing::warn!(
                        %err,
                        frames = %self.config.frames_topic,
                        "waiting for the broker and the frames topic"
                    );
                }
            },
        )?;
        Ok(created.is_some())
    }

    fn create_topics(&self) -> Result<(), BusError> {
        let config = &self.config;
        let partitions = self.bus.partitions(&config.frames_topic, ADMIN_TIMEOUT)?;
        let count = u32::try_from(partitions.len()).unwrap_or(1).max(1);
        for topic in [&config.results_topic, &config.dlq_topic] {
            self.bus.create_topic_retained(
                topic,
                count,
                Some(orstream_proto::topics::RETENTION),
                ADMIN_TIMEOUT,
            )?;
        }
        Ok(())
    }

    /// Sets libtorch's thread count and picks the pixels the decode pool makes: normalised
    /// floats for the CPU, bytes for a GPU (normalised there, a quarter of the upload).
    fn configure_torch(&self) -> Result<PixelFormat, InferError> {
        let model = &self.config.model;
        if model.torch_threads > 0 {
            tch::set_num_threads(i32::try_from(model.torch_threads).unwrap_or(1));
        }
        let device = parse_device(&model.device)?;
        Ok(if device == tch::Device::Cpu {
            PixelFormat::Normalized
        } else {
            PixelFormat::Rgb8
        })
    }

    fn replicas(&self, links: ReplicaLinks, instruments: &Arc<Instruments>) -> Replicas {
        Replicas {
            model: self.model.clone(),
            config: self.config.clone(),
            links,
            counters: self.counters.clone(),
            instruments: instruments.clone(),
        }
    }

    fn report_model_warm(&self, warm_latency: Duration) {
        tracing::info!(
            replicas = self.config.model.replicas,
            warm_batch_ms = warm_latency.as_secs_f64() * 1e3,
            model = %self.model.card.name,
            "model ready"
        );
        self.health.set_ready(checks::MODEL_WARM, true);
    }

    /// The output stage, its producer registered (which fences an earlier one with the same
    /// transactional id).
    fn output(
        &self,
        consumer: &Arc<Consumer>,
        rewind: &Arc<RewindControl>,
        instruments: &Arc<Instruments>,
    ) -> Result<OutputStage, InferError> {
        let config = &self.config;
        let message_max = usize::try_from(config.kafka.message_max_bytes).unwrap_or(usize::MAX);
        let output = OutputStage::new(
            OutputSettings {
                delivery: config.delivery,
                frames_topic: config.frames_topic.clone(),
                results_topic: config.results_topic.clone(),
                dlq_topic: config.dlq_topic.clone(),
                transactional_id: config.transactional_id.clone(),
                commit_policy: config.commit_policy,
                commit_interval: config.commit_interval,
                commit_linger: config.commit_linger,
                // Room for the headers and the record framing.
                max_dlq_payload: message_max.saturating_sub(64 * 1024),
            },
            self.bus.clone(),
            consumer.clone(),
            rewind.clone(),
            self.counters.clone(),
            instruments.clone(),
        )?;
        if config.delivery == DeliveryGuarantee::AtLeastOnce {
            tracing::info!("at-least-once delivery: a crash may repeat results");
        }
        Ok(output)
    }

    fn decode_pool(
        &self,
        format: PixelFormat,
        newest: Option<Arc<Newest>>,
        links: DecodeLinks,
        instruments: &Arc<Instruments>,
    ) -> DecodePool {
        let config = &self.config;
        DecodePool {
            ctx: DecodeContext {
                card: self.model.card.clone(),
                identity: self.model.identity(),
                format,
                max_pixels: config.decode.max_pixels,
            },
            budget: (config.mode == Mode::Live).then_some(config.latency_budget),
            newest,
            links,
            instruments: instruments.clone(),
        }
    }

    fn broker_check(&self, consumer: Arc<Consumer>, stop: CancellationToken) -> BrokerCheck {
        BrokerCheck {
            check: metrics::BrokerCheck {
                bus: self.bus.clone(),
                topic: self.config.frames_topic.clone(),
                health: self.health.clone(),
                interval: BROKER_CHECK_INTERVAL,
                timeout: BROKER_CHECK_INTERVAL,
            },
            gauge: LagGauge::new(&self.config.group_id),
            consumer,
            stop,
        }
    }
}

/// Each stage's ends of the bounded channels that join the stages (the picture in the
/// module doc). A stage owns its ends, so a stage that ends closes its outputs and the next
/// one drains and ends in turn.
struct Links {
    poll: PollLinks,
    decode: DecodeLinks,
    batch: BatchLinks,
    replicas: ReplicaLinks,
    output: OutputLinks,
}

/// The output stage's ends.
struct OutputLinks {
    answers: Receiver<Answer>,
    /// Each emitted answer gives one credit back to the poll loop.
    credits: Receiver<()>,
}

impl Links {
    fn new(config: &InferConfig) -> Self {
        // An answer is of a frame that holds a credit, so the answers never outnumber the
        // credits.
        let (answer_tx, answer_rx) = bounded(config.max_in_flight);
        let (credit_tx, credit_rx) = bounded(config.max_in_flight);
        let (polled_tx, polled_rx) = bounded(config.decode.queue);
        let (staged_tx, staged_rx) = bounded(config.decode.queue);
        let (batch_tx, batch_rx) = bounded(batch::handoff_capacity(config.mode));
        let (feedback_tx, feedback_rx) = bounded(batch::FEEDBACK_CAPACITY);
        Self {
            poll: PollLinks {
                polled: polled_tx,
                credits: credit_tx,
            },
            decode: DecodeLinks {
                polled: polled_rx,
                staged: staged_tx,
                answers: answer_tx.clone(),
            },
            batch: BatchLinks {
                staged: staged_rx,
                batches: batch_tx,
                feedback: feedback_rx,
                answers: answer_tx.clone(),
            },
            replicas: ReplicaLinks {
                batches: batch_rx,
                feedback: feedback_tx,
                answers: answer_tx,
            },
            output: OutputLinks {
                answers: answer_rx,
                credits: credit_rx,
            },
        }
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

/// The stage threads by name, and where they report a fatal error.
struct Stages {
    threads: Vec<(String, JoinHandle<()>)>,
    failure: Failure,
}

impl Stages {
    fn new(stop: CancellationToken) -> Self {
        Self {
            threads: Vec::new(),
            failure: Failure {
                first: Arc::new(Mutex::new(None)),
                stop,
            },
        }
    }

    /// The token that stops every stage.
    fn stop(&self) -> CancellationToken {
        self.failure.stop.clone()
    }

    fn spawn(
        &mut self,
        name: &str,
        body: impl FnOnce() + Send + 'static,
    ) -> Result<(), InferError> {
        let handle = std::thread::Builder::new()
            .name(format!("infer-{name}"))
            .spawn(body)
            .map_err(|e| InferError::Stage {
                stage: name.to_owned(),
                reason: format!("cannot start its thread: {e}"),
            })?;
        self.threads.push((name.to_owned(), handle));
        Ok(())
    }

    /// Spawns a stage whose error stops the whole worker.
    fn spawn_fallible(
        &mut self,
        name: &str,
        body: impl FnOnce() -> Result<(), InferError> + Send + 'static,
    ) -> Result<(), InferError> {
        let failure = self.failure.clone();
        self.spawn(name, move || {
            if let Err(err) = body() {
                failure.report(err);
            }
        })
    }

    /// Ends a start that failed after some stages run: drops `upstream`, the channel end whose
    /// closing lets them finish, joins them and gives `error` back.
    fn abandon<T>(self, upstream: T, error: InferError) -> InferError {
        drop(upstream);
        for (name, handle) in self.threads {
            if handle.join().is_err() {
                tracing::error!(stage = %name, "stage thread panicked");
            }
        }
        error
    }

    /// Joins the stages; once the stop token is cancelled they have `drain` to finish.
    fn wait(self, drain: Duration) -> Result<(), InferError> {
        let stop = self.failure.stop;
        let mut stopped_at: Option<Instant> = None;
        let mut pending = self.threads;
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
                    // The stages keep running detached; whatever they did not commit is redone
                    // by the next worker from the committed offsets.
                    return Err(InferError::DrainTimeout {
                        timeout: drain,
                        running: pending.iter().map(|(name, _)| name.clone()).collect(),
                    });
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
