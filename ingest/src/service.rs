//! The ingest service: every configured stream on its own thread, one producer shared by all,
//! one shutdown token.
//!
//! Shutdown order: the token is cancelled -> each stream asks its source for end of stream and
//! publishes what drains out of its pipeline (bounded by `drain_timeout`) -> it publishes
//! `StreamEnded` and waits for its deliveries -> once every stream is done the producer is
//! flushed (bounded by `flush_timeout`) and [`Ingest::run`] returns.
//!
//! Health ([`Ingest::with_health`]): the stream loops beat liveness, also while they wait for
//! the broker; readiness has two checks, `broker` (the broker answered its last question,
//! asked every 2 s, and the last delivery was acknowledged) and `running` (every stream's thread
//! started; false again once the service is draining).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use orstream_bus::metrics::{BrokerCheck, HealthReporter, NoHealth, checks};
use orstream_bus::{Bus, Producer};
use orstream_proto::EndReason;
use orstream_shell::Backoff;
use tokio_util::sync::CancellationToken;

use crate::admin::AdminServer;
use crate::config::{FullPolicy, IngestConfig, StreamConfig};
use crate::control::Controller;
use crate::error::IngestError;
use crate::metrics::StreamMetrics;
use crate::pipeline::init;
use crate::publish::{Publisher, Reports, Topics};
use crate::stream::{RoomLink, Settings, StreamRunner, StreamStats};

/// How often the broker is asked whether it answers (and how long an answer may take).
const BROKER_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How long topic creation may take.
const TOPIC_TIMEOUT: Duration = Duration::from_secs(10);
/// Pauses between tries at creating the topics while the broker is away.
const TOPIC_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(200),
    max: Duration::from_secs(5),
};

/// What happened over a run of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// One entry per configured stream, in configuration order; none when shutdown came
    /// while the broker was still away at the start.
    pub streams: Vec<StreamStats>,
}

impl Stats {
    /// Frames published over all streams.
    pub fn published(&self) -> u64 {
        self.streams.iter().map(|s| s.published).sum()
    }

    /// Frames dropped over all streams.
    pub fn dropped(&self) -> u64 {
        self.streams.iter().map(|s| s.dropped).sum()
    }
}

/// The ingest service over a bus. See the crate documentation for an example.
pub struct Ingest {
    config: IngestConfig,
    bus: Bus,
    health: Arc<dyn HealthReporter>,
    /// Told the admin API's address once it is bound.
    admin_bound: Option<mpsc::Sender<SocketAddr>>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("config", &self.config)
            .field("bus", &self.bus)
            .finish_non_exhaustive()
    }
}

impl Ingest {
    /// Checks `config` (every problem at once) and GStreamer; nothing runs yet.
    pub fn new(config: IngestConfig, bus: Bus) -> Result<Self, IngestError> {
        config.validate()?;
        init()?;
        Ok(Self {
            config,
            bus,
            health: Arc::new(NoHealth),
            admin_bound: None,
        })
    }

    /// Sends the admin API's address to `bound` once it is bound (with port 0 configured,
    /// the port the system chose).
    #[must_use]
    pub fn with_admin_bound(mut self, bound: mpsc::Sender<SocketAddr>) -> Self {
        self.admin_bound = Some(bound);
        self
    }

    /// Reports liveness and readiness to `health` (see the module documentation); without
    /// it, nothing is reported.
    #[must_use]
    pub fn with_health(mut self, health: Arc<dyn HealthReporter>) -> Self {
        self.health = health;
        self
    }

    /// Starts asking the broker every [`BROKER_CHECK_INTERVAL`] whether it answers (a send
    /// does not tell: librdkafka queues and retries behind it), until `checking` turns false.
    fn broker_check(&self, checking: &Arc<AtomicBool>) -> Option<std::thread::JoinHandle<()>> {
        let check = BrokerCheck {
            bus: self.bus.clone(),
            topic: self.config.frames_topic.clone(),
            health: Arc::clone(&self.health),
            interval: BROKER_CHECK_INTERVAL,
            timeout: BROKER_CHECK_INTERVAL,
        };
        let checking = Arc::clone(checking);
        std::thread::Builder::new()
            .name("ingest-broker-check".to_owned())
            .spawn(move || check.run(|| !checking.load(Ordering::Relaxed), |_| {}))
            .map_err(|error| {
                tracing::error!(%error, "cannot start the broker check; readiness follows deliveries only");
            })
            .ok()
    }

    /// Creates the frames and events topics (idempotent) with their partitions and retention,
    /// waiting for as long as it takes while the broker is away (not ready meanwhile, alive:
    /// the wait is the service doing what it should), so a stack whose services start before
    /// the broker answers comes up in any order. False when shutdown came first.
    fn create_topics(&self, shutdown: &CancellationToken) -> Result<bool, IngestError> {
        let config = &self.config;
        let topics = [
            (config.frames_topic.as_str(), Some(config.frames_retention)),
            (
                config.events_topic.as_str(),
                Some(orstream_proto::topics::RETENTION),
            ),
        ];
        self.bus
            .create_topics_waiting(
                &topics,
                config.topic_partitions,
                TOPIC_TIMEOUT,
                TOPIC_BACKOFF,
                shutdown,
                |topic, error, attempt| {
                    self.health.beat();
                    if attempt % 10 == 0 {
                        tracing::warn!(%error, "creating topic {topic}: the broker does not answer yet; retrying");
                    }
                },
            )
            .map_err(|source| IngestError::Bus {
                what: "creating the frames and events topics".to_owned(),
                source,
            })
    }

    /// Runs every stream until its source ends for good (a file's end, a fatal error) or
    /// `shutdown` is cancelled, then flushes the producer. Blocks the calling thread; GStreamer
    /// and one thread per stream do the work.
    ///
    /// Waits for the broker at the start when it creates the topics (see `create_topics`).
    /// Errors only when the service cannot start (topics refused, producer) or the final flush fails;
    /// a failing stream is reported in its [`StreamStats`] and its events, never here.
    pub fn run(self, shutdown: CancellationToken) -> Result<Stats, IngestError> {
        let config = &self.config;
        let health = &self.health;
        health.set_ready(checks::BROKER, false);
        health.set_ready(checks::RUNNING, false);
        if config.create_topics && !self.create_topics(&shutdown)? {
            return Ok(Stats {
                streams: Vec::new(),
            });
        }
        let launcher = Arc::new(Launcher::new(config, &self.bus, health, &shutdown)?);
        health.set_ready(checks::BROKER, true);
        let rooms = if config.rooms.is_empty() {
            None
        } else {
            let controller = Arc::new(Controller::new(config, Arc::clone(&launcher))?);
            let admin = match (&config.admin.listen, &config.admin.token_file) {
                (Some(listen), Some(tokens)) => Some(AdminServer::start(
                    *listen,
                    tokens,
                    Arc::clone(&controller),
                )?),
                _ => None,
            };
            if let (Some(admin), Some(bound)) = (&admin, &self.admin_bound) {
                // The receiver gone is no reason to stop.
                let _ = bound.send(admin.local_addr());
            }
            controller.launch_configured();
            Some((controller, admin))
        };
        let checking = Arc::new(AtomicBool::new(true));
        let broker_check = self.broker_check(&checking);
        let mut handles = Vec::with_capacity(config.streams.len());
        for stream in &config.streams {
            let launched = launcher.launch(stream, None, shutdown.child_token());
            match launched {
                Ok(handle) => handles.push((stream.stream_id.clone(), Some(handle))),
                Err(error) => {
                    tracing::error!(stream_id = %stream.stream_id, %error,
                        "cannot start the stream's thread");
                    handles.push((stream.stream_id.clone(), None));
                }
            }
        }
        health.set_ready(
            checks::RUNNING,
            handles.iter().all(|(_, handle)| handle.is_some()),
        );
        let mut stats = Stats {
            streams: Vec::with_capacity(handles.len()),
        };
        for (stream_id, handle) in handles {
            stats.streams.push(joined(&stream_id, handle));
        }
        if let Some((controller, admin)) = rooms {
            // Rooms run until shutdown; then the API goes first (no change while stopping),
            // then every camera ends.
            while !shutdown.is_cancelled() {
                std::thread::sleep(Duration::from_millis(100));
            }
            drop(admin);
            stats.streams.extend(controller.join());
        }
        health.set_ready(checks::RUNNING, false);
        checking.store(false, Ordering::Relaxed);
        if let Some(Err(_)) = broker_check.map(std::thread::JoinHandle::join) {
            tracing::error!("the broker check panicked");
        }
        launcher.flush(config.flush_timeout, stats.published())?;
        Ok(stats)
    }
}

/// What happened to a stream whose thread was `handle` (None: it never started), once it ended.
pub(crate) fn joined(stream_id: &str, handle: Option<JoinHandle<StreamStats>>) -> StreamStats {
    match handle.map(JoinHandle::join) {
        Some(Ok(stream_stats)) => stream_stats,
        Some(Err(_)) | None => {
            let error = IngestError::Panicked {
                stream_id: stream_id.to_owned(),
            };
            tracing::error!(%error, "stream lost");
            StreamStats {
                end: EndReason::Failed,
                detail: error.to_string(),
                ..StreamStats::new(stream_id)
            }
        }
    }
}

/// Starts streams on the service's producers: the configured ones at start, a room's cameras
/// whenever the controller adds them.
pub(crate) struct Launcher {
    bus: Bus,
    producer: Arc<Producer>,
    /// For archive streams, made when the first one starts.
    patient: Mutex<Option<Arc<Producer>>>,
    frames_topic: String,
    events_topic: String,
    max_message_bytes: usize,
    settings: Settings,
    health: Arc<dyn HealthReporter>,
    shutdown: CancellationToken,
}

impl Launcher {
    fn new(
        config: &IngestConfig,
        bus: &Bus,
        health: &Arc<dyn HealthReporter>,
        shutdown: &CancellationToken,
    ) -> Result<Self, IngestError> {
        let producer = Arc::new(bus.producer().map_err(|source| IngestError::Bus {
            what: "creating the producer".to_owned(),
            source,
        })?);
        let launcher = Self {
            bus: bus.clone(),
            producer,
            patient: Mutex::new(None),
            frames_topic: config.frames_topic.clone(),
            events_topic: config.events_topic.clone(),
            max_message_bytes: config.max_message_bytes,
            settings: Settings {
                drop_report_interval: config.drop_report_interval,
                drain_timeout: config.drain_timeout,
                gate: config.gate.clone(),
            },
            health: Arc::clone(health),
            shutdown: shutdown.clone(),
        };
        // Archive streams lose nothing: their frames wait for the broker however long it is
        // away, on a producer whose messages never time out. Made now when configured, so a
        // failure to make it stops the start.
        let streams = config.streams.iter();
        let cameras = config.rooms.iter().flat_map(|room| &room.cameras);
        if streams
            .chain(cameras)
            .any(|stream| stream.full_policy == FullPolicy::Block)
        {
            launcher.producer_for(FullPolicy::Block)?;
        }
        Ok(launcher)
    }

    /// The producer for a stream of `policy`.
    fn producer_for(&self, policy: FullPolicy) -> Result<Arc<Producer>, IngestError> {
        if policy == FullPolicy::DropOldest {
            return Ok(Arc::clone(&self.producer));
        }
        let mut patient = self.patient.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(made) = &*patient {
            return Ok(Arc::clone(made));
        }
        let made = Arc::new(
            self.bus
                .patient_producer()
                .map_err(|source| IngestError::Bus {
                    what: "creating the archive streams' producer".to_owned(),
                    source,
                })?,
        );
        *patient = Some(Arc::clone(&made));
        Ok(made)
    }

    /// The bus the service runs on.
    pub(crate) fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The topic of the frames.
    pub(crate) fn frames_topic(&self) -> &str {
        &self.frames_topic
    }

    /// The producer the controller publishes the rooms' case events on.
    pub(crate) fn producer(&self) -> &Producer {
        &self.producer
    }

    /// The topic of stream and case events.
    pub(crate) fn events_topic(&self) -> &str {
        &self.events_topic
    }

    /// The service's shutdown: a room's camera stops with it.
    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// How long a stream may take to drain at its end.
    pub(crate) fn drain_timeout(&self) -> Duration {
        self.settings.drain_timeout
    }

    /// Starts `stream` on its own thread until `token` is cancelled or its source ends for
    /// good; a room's camera (`room`) takes the controller's commands.
    pub(crate) fn launch(
        &self,
        stream: &StreamConfig,
        room: Option<(&str, RoomLink)>,
        token: CancellationToken,
    ) -> Result<JoinHandle<StreamStats>, IngestError> {
        let metrics = StreamMetrics::new(stream.source.kind());
        let mut publisher = Publisher::new(
            self.producer_for(stream.full_policy)?,
            &Topics {
                frames: &self.frames_topic,
                events: &self.events_topic,
            },
            &stream.stream_id,
            stream.full_policy,
            self.max_message_bytes,
            Reports {
                metrics: metrics.clone(),
                health: Arc::clone(&self.health),
            },
        );
        if let Some((room, _)) = &room {
            publisher = publisher.in_room(room);
        }
        let mut runner = StreamRunner::new(
            stream.clone(),
            self.settings.clone(),
            publisher,
            token,
            metrics,
            Arc::clone(&self.health),
        );
        if let Some((_, link)) = room {
            runner = runner.in_room(link);
        }
        std::thread::Builder::new()
            .name(format!("ingest-{}", stream.stream_id))
            .spawn(move || runner.run())
            .map_err(|error| IngestError::Thread {
                stream_id: stream.stream_id.clone(),
                reason: error.to_string(),
            })
    }

    /// Flushes the producers, waiting at most `timeout` each.
    fn flush(&self, timeout: Duration, published: u64) -> Result<(), IngestError> {
        let patient = self
            .patient
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for producer in std::iter::once(&self.producer).chain(&patient) {
            producer.flush(timeout).map_err(|source| IngestError::Bus {
                what: format!("flushing the producer ({published} frames published)"),
                source,
            })?;
        }
        Ok(())
    }
}
