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

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use orstream_bus::Bus;
use orstream_bus::metrics::{BrokerCheck, HealthReporter, NoHealth, checks};
use orstream_proto::EndReason;
use orstream_shell::Backoff;
use tokio_util::sync::CancellationToken;

use crate::config::{FullPolicy, IngestConfig};
use crate::error::IngestError;
use crate::metrics::StreamMetrics;
use crate::pipeline::init;
use crate::publish::{Publisher, Reports, Topics};
use crate::stream::{Settings, StreamRunner, StreamStats};

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
        })
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
        let producer = Arc::new(self.bus.producer().map_err(|source| IngestError::Bus {
            what: "creating the producer".to_owned(),
            source,
        })?);
        // Archive streams lose nothing: their frames wait for the broker however long it is
        // away, on a producer whose messages never time out.
        let patient = if config
            .streams
            .iter()
            .any(|stream| stream.full_policy == FullPolicy::Block)
        {
            Some(Arc::new(self.bus.patient_producer().map_err(|source| {
                IngestError::Bus {
                    what: "creating the archive streams' producer".to_owned(),
                    source,
                }
            })?))
        } else {
            None
        };
        health.set_ready(checks::BROKER, true);
        let checking = Arc::new(AtomicBool::new(true));
        let broker_check = self.broker_check(&checking);
        let settings = Settings {
            drop_report_interval: config.drop_report_interval,
            drain_timeout: config.drain_timeout,
        };
        let mut handles = Vec::with_capacity(config.streams.len());
        for stream in &config.streams {
            let metrics = StreamMetrics::new(stream.source.kind());
            let stream_producer = match (&patient, stream.full_policy) {
                (Some(patient), FullPolicy::Block) => patient,
                _ => &producer,
            };
            let publisher = Publisher::new(
                Arc::clone(stream_producer),
                &Topics {
                    frames: &config.frames_topic,
                    events: &config.events_topic,
                },
                &stream.stream_id,
                stream.full_policy,
                config.max_message_bytes,
                Reports {
                    metrics: metrics.clone(),
                    health: Arc::clone(health),
                },
            );
            let runner = StreamRunner::new(
                stream.clone(),
                settings.clone(),
                publisher,
                shutdown.child_token(),
                metrics,
                Arc::clone(health),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("ingest-{}", stream.stream_id))
                .spawn(move || runner.run());
            match spawned {
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
            let joined = handle.map(std::thread::JoinHandle::join);
            stats.streams.push(match joined {
                Some(Ok(stream_stats)) => stream_stats,
                Some(Err(_)) | None => {
                    let error = IngestError::Panicked {
                        stream_id: stream_id.clone(),
                    };
                    tracing::error!(%error, "stream lost");
                    StreamStats {
                        end: EndReason::Failed,
                        detail: error.to_string(),
                        ..StreamStats::new(&stream_id)
                    }
                }
            });
        }
        health.set_ready(checks::RUNNING, false);
        checking.store(false, Ordering::Relaxed);
        if let Some(Err(_)) = broker_check.map(std::thread::JoinHandle::join) {
            tracing::error!("the broker check panicked");
        }
        for producer in std::iter::once(&producer).chain(&patient) {
            producer
                .flush(config.flush_timeout)
                .map_err(|source| IngestError::Bus {
                    what: format!(
                        "flushing the producer ({} frames published)",
                        stats.published()
                    ),
                    source,
                })?;
        }
        Ok(stats)
    }
}
