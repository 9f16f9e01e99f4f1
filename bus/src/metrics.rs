//! The metrics every orstream service records, in one place: names, units, descriptions,
//! histogram buckets and the attribute keys allowed on them; and the health reports a service's
//! loops make ([`HealthReporter`]).
//!
//! Services record through the OpenTelemetry global meter ([`meter`]); the process that runs
//! them decides where the numbers go (a Prometheus scrape endpoint, OTLP, or nowhere when no
//! meter provider is installed, which makes recording free of cost and effect). An instrument
//! is built once from its spec and kept:
//!
//! ```
//! use opentelemetry::KeyValue;
//! use orstream_bus::metrics::{self, attr, value};
//!
//! let meter = metrics::meter();
//! let published = metrics::INGEST_FRAMES_PUBLISHED.build(&meter);
//! let dropped = metrics::INGEST_FRAMES_DROPPED.build(&meter);
//! published.add(1, &[]);
//! dropped.add(1, &[KeyValue::new(attr::REASON, value::QUEUE_FULL)]);
//! ```
//!
//! Names follow the OpenTelemetry semantic conventions where one exists (the `messaging.*`
//! metrics and attributes); the rest live under `orstream.`. Durations are in seconds
//! (`s`), counts use `{thing}` units. Exported to Prometheus, dots become underscores, counters
//! gain `_total` and second-histograms `_seconds`: `orstream.ingest.frames.published` is
//! scraped as `orstream_ingest_frames_published_total`.
//!
//! Labels stay low-cardinality and free of case data: only the keys in [`attr`] (listed in
//! [`ALLOWED_ATTRIBUTES`]) are used, never a frame id, offset, sequence number, case id or
//! stream URI.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use opentelemetry::KeyValue;
pub use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter};

/// Name of the instrumentation scope every orstream instrument belongs to.
pub const METER_NAME: &str = "orstream";

/// The meter services record with: the global meter provider's meter for [`METER_NAME`].
pub fn meter() -> Meter {
    opentelemetry::global::meter(METER_NAME)
}

/// A monotonic count (`u64`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CounterSpec {
    /// The exported name: a constant, so services, dashboards and tests agree on it.
    pub name: &'static str,
    /// UCUM unit, `{thing}` for counts.
    pub unit: &'static str,
    /// What it counts; the Prometheus `# HELP` text.
    pub description: &'static str,
}

impl CounterSpec {
    /// Builds the instrument on `meter`.
    pub fn build(&self, meter: &Meter) -> Counter<u64> {
        meter
            .u64_counter(self.name)
            .with_unit(self.unit)
            .with_description(self.description)
            .build()
    }
}

/// A count that goes up and down (`i64`), e.g. streams per state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpDownCounterSpec {
    /// The exported name: a constant, so services, dashboards and tests agree on it.
    pub name: &'static str,
    /// UCUM unit, `{thing}` for counts.
    pub unit: &'static str,
    /// What it counts; the Prometheus `# HELP` text.
    pub description: &'static str,
}

impl UpDownCounterSpec {
    /// Builds the instrument on `meter`.
    pub fn build(&self, meter: &Meter) -> UpDownCounter<i64> {
        meter
            .i64_up_down_counter(self.name)
            .with_unit(self.unit)
            .with_description(self.description)
            .build()
    }
}

/// A value sampled now and then (`i64`), e.g. consumer lag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaugeSpec {
    /// The exported name: a constant, so services, dashboards and tests agree on it.
    pub name: &'static str,
    /// UCUM unit, `{thing}` for counts.
    pub unit: &'static str,
    /// What it measures; the Prometheus `# HELP` text.
    pub description: &'static str,
}

impl GaugeSpec {
    /// Builds the instrument on `meter`.
    pub fn build(&self, meter: &Meter) -> Gauge<i64> {
        meter
            .i64_gauge(self.name)
            .with_unit(self.unit)
            .with_description(self.description)
            .build()
    }
}

/// A distribution (`f64`) with explicit bucket boundaries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HistogramSpec {
    /// The exported name: a constant, so services, dashboards and tests agree on it.
    pub name: &'static str,
    /// UCUM unit: `s` for durations.
    pub unit: &'static str,
    /// What it measures; the Prometheus `# HELP` text.
    pub description: &'static str,
    /// Upper bucket boundaries, increasing.
    pub boundaries: &'static [f64],
}

impl HistogramSpec {
    /// Builds the instrument on `meter`.
    pub fn build(&self, meter: &Meter) -> Histogram<f64> {
        meter
            .f64_histogram(self.name)
            .with_unit(self.unit)
            .with_description(self.description)
            .with_boundaries(self.boundaries.to_vec())
            .build()
    }
}

/// Buckets for latencies, in seconds: 0.5 ms to 10 s, dense around a frame interval
/// (33 ms at 30 fps) and the default live latency budget (1 s).
pub const LATENCY_BOUNDARIES: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.033, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 10.0,
];

/// Buckets for batch sizes, in frames.
pub const BATCH_SIZE_BOUNDARIES: &[f64] =
    &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0, 64.0];

const SECONDS: &str = "s";

// ---------------------------------------------------------------------------------------------
// OpenTelemetry semantic conventions: messaging.
// ---------------------------------------------------------------------------------------------

/// Messages a producer sent and the broker acknowledged (or failed: `error.type` set).
/// Attributes: `messaging.system`, `messaging.destination.name`, `error.type`.
pub const MESSAGING_SENT: CounterSpec = CounterSpec {
    name: "messaging.client.sent.messages",
    unit: "{message}",
    description: "Messages a producer attempted to send to the broker.",
};

/// Messages a consumer received.
/// Attributes: `messaging.system`, `messaging.destination.name`,
/// `messaging.consumer.group.name`, `messaging.destination.partition.id`.
pub const MESSAGING_CONSUMED: CounterSpec = CounterSpec {
    name: "messaging.client.consumed.messages",
    unit: "{message}",
    description: "Messages delivered to a consumer.",
};

/// Duration of one client operation against the broker (`send`, `receive`, `commit`...).
/// Attributes: `messaging.system`, `messaging.operation.name`, `error.type`.
pub const MESSAGING_OPERATION_DURATION: HistogramSpec = HistogramSpec {
    name: "messaging.client.operation.duration",
    unit: SECONDS,
    description: "Duration of a messaging operation initiated by a producer or consumer client.",
    boundaries: LATENCY_BOUNDARIES,
};

/// Time a consumer spent processing one message (decode to result, result to row).
/// Attributes: `messaging.system`, `messaging.destination.name`, `error.type`.
pub const MESSAGING_PROCESS_DURATION: HistogramSpec = HistogramSpec {
    name: "messaging.process.duration",
    unit: SECONDS,
    description: "Duration of processing operation.",
    boundaries: LATENCY_BOUNDARIES,
};

// ---------------------------------------------------------------------------------------------
// orstream: shared by the services.
// ---------------------------------------------------------------------------------------------

/// Messages the consumer group has yet to read on a partition (high watermark minus position).
/// Attributes: `messaging.destination.name`, `messaging.destination.partition.id`,
/// `messaging.consumer.group.name`.
pub const CONSUMER_LAG: GaugeSpec = GaugeSpec {
    name: "orstream.consumer.lag",
    unit: "{message}",
    description: "Messages not yet consumed by the group, per partition.",
};

/// [`CONSUMER_LAG`] of one consumer, recorded from [`Consumer::lag`](crate::Consumer::lag)
/// now and then (each call asks the broker for every assigned partition's end).
pub struct LagGauge {
    gauge: Gauge<i64>,
    group: KeyValue,
}

impl std::fmt::Debug for LagGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LagGauge")
            .field("group", &self.group.value)
            .finish_non_exhaustive()
    }
}

impl LagGauge {
    /// The gauge for the consumers of `group`.
    pub fn new(group: &str) -> Self {
        Self {
            gauge: CONSUMER_LAG.build(&meter()),
            group: KeyValue::new(attr::MESSAGING_CONSUMER_GROUP_NAME, group.to_owned()),
        }
    }

    /// Records `consumer`'s lag on each partition it has read from.
    pub fn record(
        &self,
        consumer: &crate::Consumer,
        timeout: std::time::Duration,
    ) -> Result<(), crate::BusError> {
        for (tp, lag) in consumer.lag(timeout)? {
            self.gauge.record(
                lag,
                &[
                    KeyValue::new(attr::MESSAGING_DESTINATION_NAME, tp.topic.clone()),
                    KeyValue::new(attr::MESSAGING_PARTITION_ID, tp.partition.to_string()),
                    self.group.clone(),
                ],
            );
        }
        Ok(())
    }
}

/// Transactions ended, Kafka (infer) or database (sink). Attributes:
/// `orstream.transaction.outcome` (`committed` / `aborted`).
pub const TRANSACTIONS: CounterSpec = CounterSpec {
    name: "orstream.transactions",
    unit: "{transaction}",
    description: "Transactions ended, by outcome (committed or aborted).",
};

/// Time from beginning a transaction to its commit or abort. Attributes:
/// `orstream.transaction.outcome`.
pub const TRANSACTION_DURATION: HistogramSpec = HistogramSpec {
    name: "orstream.transaction.duration",
    unit: SECONDS,
    description: "Duration of a transaction from begin to commit or abort.",
    boundaries: LATENCY_BOUNDARIES,
};

/// Time the commit step of infer's transaction takes: the consumed offsets added and the
/// transaction ended (at-least-once: the flush and the offset commit). What a result's
/// visibility waits for after it is produced, and what a commit policy trades against.
/// Attributes: `orstream.transaction.outcome`.
pub const COMMIT_DURATION: HistogramSpec = HistogramSpec {
    name: "orstream.transaction.commit.duration",
    unit: SECONDS,
    description: "Duration of a transaction's commit step (offsets added and transaction ended).",
    boundaries: LATENCY_BOUNDARIES,
};

/// Messages sent to a dead-letter topic. Attributes: `orstream.reason`,
/// `messaging.destination.name` (the source topic).
pub const DEAD_LETTERS: CounterSpec = CounterSpec {
    name: "orstream.dead_letters",
    unit: "{message}",
    description: "Messages sent to a dead-letter topic, by reason.",
};

// ---------------------------------------------------------------------------------------------
// orstream: ingest.
// ---------------------------------------------------------------------------------------------

/// Frames that came out of the GStreamer pipelines (before any drop). Attributes:
/// `orstream.source.kind`.
pub const INGEST_FRAMES_CAPTURED: CounterSpec = CounterSpec {
    name: "orstream.ingest.frames.captured",
    unit: "{frame}",
    description: "Frames captured from sources.",
};

/// Frames published to the frames topic and acknowledged by the broker.
pub const INGEST_FRAMES_PUBLISHED: CounterSpec = CounterSpec {
    name: "orstream.ingest.frames.published",
    unit: "{frame}",
    description: "Frames published and acknowledged.",
};

/// Frames dropped before publishing. Attributes: `orstream.reason` (`queue_full`,
/// `oversized`, `publish_failed`, ...).
pub const INGEST_FRAMES_DROPPED: CounterSpec = CounterSpec {
    name: "orstream.ingest.frames.dropped",
    unit: "{frame}",
    description: "Frames dropped before publishing, by reason.",
};

/// Frames a room's camera captured while its room had no open case: never published.
pub const INGEST_FRAMES_OUTSIDE_CASE: CounterSpec = CounterSpec {
    name: "orstream.ingest.frames.outside_case",
    unit: "{frame}",
    description: "Frames captured while the camera's room had no open case, not published.",
};

/// Frames the privacy gate withheld: published as markers without their image. Attributes:
/// `orstream.reason` (`out_of_body`, `margin`, `gate_unavailable`).
pub const INGEST_FRAMES_WITHHELD: CounterSpec = CounterSpec {
    name: "orstream.ingest.frames.withheld",
    unit: "{frame}",
    description: "Frames the privacy gate withheld (published without their image), by reason.",
};

/// Time the privacy gate took to judge one frame (thumbnail and forward pass).
pub const INGEST_GATE_DURATION: HistogramSpec = HistogramSpec {
    name: "orstream.ingest.gate.duration",
    unit: SECONDS,
    description: "Time the privacy gate took to judge one frame.",
    boundaries: LATENCY_BOUNDARIES,
};

/// Time to encode one frame to JPEG.
pub const INGEST_ENCODE_DURATION: HistogramSpec = HistogramSpec {
    name: "orstream.ingest.encode.duration",
    unit: SECONDS,
    description: "Time to encode one frame to JPEG.",
    boundaries: LATENCY_BOUNDARIES,
};

/// Streams per state; a stream moves by adding -1 to its old state and +1 to its new one.
/// Attributes: `orstream.stream.state` (`connecting`, `live`, `stalled`, `reconnecting`).
pub const INGEST_STREAMS: UpDownCounterSpec = UpDownCounterSpec {
    name: "orstream.ingest.streams",
    unit: "{stream}",
    description: "Streams per state.",
};

/// Source rebuilds after a failure or a stall (each one records a discontinuity).
/// Attributes: `orstream.reason` (`stalled`, `error`, `eos`).
pub const INGEST_RECONNECTS: CounterSpec = CounterSpec {
    name: "orstream.ingest.reconnects",
    unit: "{reconnect}",
    description: "Source rebuilds after a failure or a stall, by reason.",
};

// ---------------------------------------------------------------------------------------------
// orstream: infer.
// ---------------------------------------------------------------------------------------------

/// Results produced, one per frame consumed. Attributes: `orstream.status` (`ok`,
/// `skipped_stale`, `skipped_overload`, `decode_error`, `invalid`, `model_error`, `redacted`).
pub const INFER_RESULTS: CounterSpec = CounterSpec {
    name: "orstream.infer.results",
    unit: "{result}",
    description: "Frame results produced, by status.",
};

/// Frames per model forward pass.
pub const INFER_BATCH_SIZE: HistogramSpec = HistogramSpec {
    name: "orstream.infer.batch.size",
    unit: "{frame}",
    description: "Frames per model forward pass.",
    boundaries: BATCH_SIZE_BOUNDARIES,
};

/// Time a frame waited between being consumed and its batch starting.
pub const INFER_QUEUE_DURATION: HistogramSpec = HistogramSpec {
    name: "orstream.infer.queue.duration",
    unit: SECONDS,
    description: "Time a frame waited from consume to the start of its batch.",
    boundaries: LATENCY_BOUNDARIES,
};

/// Time to decode one frame's JPEG and prepare its model input (the decode pool).
pub const INFER_PREPROCESS_DURATION: HistogramSpec = HistogramSpec {
    name: "orstream.infer.preprocess.duration",
    unit: SECONDS,
    description: "Time to decode one frame and prepare its model input.",
    boundaries: LATENCY_BOUNDARIES,
};

/// Time of one model forward pass (one batch). Attributes: `orstream.model.name`.
pub const INFER_FORWARD_DURATION: HistogramSpec = HistogramSpec {
    name: "orstream.infer.forward.duration",
    unit: SECONDS,
    description: "Time of one model forward pass.",
    boundaries: LATENCY_BOUNDARIES,
};

/// Time to turn one batch's output into instances.
pub const INFER_POSTPROCESS_DURATION: HistogramSpec = HistogramSpec {
    name: "orstream.infer.postprocess.duration",
    unit: SECONDS,
    description: "Time to turn one batch's model output into instances.",
    boundaries: LATENCY_BOUNDARIES,
};

/// From a frame's capture time to its result being produced. Attributes: `orstream.status`.
pub const INFER_CAPTURE_TO_RESULT: HistogramSpec = HistogramSpec {
    name: "orstream.infer.capture_to_result.duration",
    unit: SECONDS,
    description: "Time from frame capture to its result being produced.",
    boundaries: LATENCY_BOUNDARIES,
};

// ---------------------------------------------------------------------------------------------
// orstream: sink.
// ---------------------------------------------------------------------------------------------

/// Frame results stored in the record.
pub const SINK_RESULTS_STORED: CounterSpec = CounterSpec {
    name: "orstream.sink.results.stored",
    unit: "{result}",
    description: "Frame results stored in the record.",
};

/// Surgical events written to the record. Attributes: `orstream.event.kind` (`presence`,
/// `gap`, `anomaly`).
pub const SINK_EVENTS_WRITTEN: CounterSpec = CounterSpec {
    name: "orstream.sink.events.written",
    unit: "{event}",
    description: "Surgical events written to the record, by kind.",
};

/// From a frame's capture time to its result's row being committed.
pub const SINK_CAPTURE_TO_RECORD: HistogramSpec = HistogramSpec {
    name: "orstream.sink.capture_to_record.duration",
    unit: SECONDS,
    description: "Time from frame capture to its result committed in the record.",
    boundaries: LATENCY_BOUNDARIES,
};

/// Each readiness check of a service (the checks `/readyz` reports, [`checks`]): 1 while it
/// passes, 0 while it fails. Attributes: `orstream.check`. Observed at each collection, so an
/// alert can tell a process that answers its scrape but is not ready, and which check fails.
pub const READY: GaugeSpec = GaugeSpec {
    name: "orstream.ready",
    unit: "{check}",
    description: "Readiness checks of the service: 1 passing, 0 failing.",
};

/// Every metric name above, for checks (unique, well-formed) and documentation.
pub const ALL_NAMES: &[&str] = &[
    MESSAGING_SENT.name,
    MESSAGING_CONSUMED.name,
    MESSAGING_OPERATION_DURATION.name,
    MESSAGING_PROCESS_DURATION.name,
    CONSUMER_LAG.name,
    TRANSACTIONS.name,
    TRANSACTION_DURATION.name,
    COMMIT_DURATION.name,
    DEAD_LETTERS.name,
    INGEST_FRAMES_CAPTURED.name,
    INGEST_FRAMES_PUBLISHED.name,
    INGEST_FRAMES_DROPPED.name,
    INGEST_FRAMES_OUTSIDE_CASE.name,
    INGEST_FRAMES_WITHHELD.name,
    INGEST_GATE_DURATION.name,
    INGEST_ENCODE_DURATION.name,
    INGEST_STREAMS.name,
    INGEST_RECONNECTS.name,
    INFER_RESULTS.name,
    INFER_BATCH_SIZE.name,
    INFER_QUEUE_DURATION.name,
    INFER_PREPROCESS_DURATION.name,
    INFER_FORWARD_DURATION.name,
    INFER_POSTPROCESS_DURATION.name,
    INFER_CAPTURE_TO_RESULT.name,
    SINK_RESULTS_STORED.name,
    SINK_EVENTS_WRITTEN.name,
    SINK_CAPTURE_TO_RECORD.name,
    READY.name,
];

/// Attribute (label) keys. Values come from small closed sets ([`value`]) or bounded
/// configuration (topic and group names, partition numbers, model names).
pub mod attr {
    /// Semantic convention: the messaging system, [`super::value::KAFKA`] or
    /// [`super::value::IN_PROCESS`].
    pub const MESSAGING_SYSTEM: &str = "messaging.system";
    /// Semantic convention: the topic.
    pub const MESSAGING_DESTINATION_NAME: &str = "messaging.destination.name";
    /// Semantic convention: the partition number, as a string.
    pub const MESSAGING_PARTITION_ID: &str = "messaging.destination.partition.id";
    /// Semantic convention: the consumer group.
    pub const MESSAGING_CONSUMER_GROUP_NAME: &str = "messaging.consumer.group.name";
    /// Semantic convention: the operation (`send`, `receive`, `commit`, ...).
    pub const MESSAGING_OPERATION_NAME: &str = "messaging.operation.name";
    /// Semantic convention: the class of error that ended an operation (a short fixed
    /// word such as `timeout` or `fenced`, never an error message).
    pub const ERROR_TYPE: &str = "error.type";
    /// Why a frame or message was dropped or dead-lettered, or a source rebuilt.
    pub const REASON: &str = "orstream.reason";
    /// A frame result's status, lower snake case (`ok`, `skipped_stale`, ...).
    pub const STATUS: &str = "orstream.status";
    /// The state an ingest stream is counted in (the streams gauge), from `value`.
    pub const STREAM_STATE: &str = "orstream.stream.state";
    /// A source's kind (`rtsp`, `file`, `v4l2`, `test`); never its location.
    pub const SOURCE_KIND: &str = "orstream.source.kind";
    /// How a transaction ended.
    pub const TRANSACTION_OUTCOME: &str = "orstream.transaction.outcome";
    /// What the sink wrote: `presence`, `gap`, `track` or `anomaly` (from `value`).
    pub const EVENT_KIND: &str = "orstream.event.kind";
    /// The model's name from its card.
    pub const MODEL_NAME: &str = "orstream.model.name";
    /// A readiness check's name ([`checks`](super::checks)).
    pub const CHECK: &str = "orstream.check";
}

/// The only attribute keys orstream metrics carry.
pub const ALLOWED_ATTRIBUTES: &[&str] = &[
    attr::MESSAGING_SYSTEM,
    attr::MESSAGING_DESTINATION_NAME,
    attr::MESSAGING_PARTITION_ID,
    attr::MESSAGING_CONSUMER_GROUP_NAME,
    attr::MESSAGING_OPERATION_NAME,
    attr::ERROR_TYPE,
    attr::REASON,
    attr::STATUS,
    attr::STREAM_STATE,
    attr::SOURCE_KIND,
    attr::TRANSACTION_OUTCOME,
    attr::EVENT_KIND,
    attr::MODEL_NAME,
    attr::CHECK,
];

/// Attribute values from the closed sets above.
pub mod value {
    /// `messaging.system` of the Kafka backend (semantic convention value).
    pub const KAFKA: &str = "kafka";
    /// `messaging.system` of the in-process backend.
    pub const IN_PROCESS: &str = "orstream_in_process";
    /// `orstream.transaction.outcome`: committed.
    pub const COMMITTED: &str = "committed";
    /// `orstream.transaction.outcome`: aborted.
    pub const ABORTED: &str = "aborted";
    /// `orstream.reason`: a bounded queue was full and the frame was dropped.
    pub const QUEUE_FULL: &str = "queue_full";
    /// `orstream.reason`: the message would exceed the bus's size limit.
    pub const OVERSIZED: &str = "oversized";
    /// `orstream.reason`: the broker did not take the message.
    pub const PUBLISH_FAILED: &str = "publish_failed";
    /// `orstream.reason`: a sample without buffer, caps, timestamp or readable memory.
    pub const INVALID_SAMPLE: &str = "invalid_sample";
    /// `orstream.reason`: the frame was still queued when its session ended.
    pub const SESSION_ENDED: &str = "session_ended";
    /// `orstream.reason` of a rebuild: the source failed.
    pub const ERROR: &str = "error";
    /// `orstream.reason` of a rebuild: the source reached its end and is read again.
    pub const EOS: &str = "eos";
    /// `orstream.event.kind`: a presence interval.
    pub const PRESENCE: &str = "presence";
    /// `orstream.event.kind`: a gap in a stream.
    pub const GAP: &str = "gap";
    /// `orstream.event.kind`: a tool track that ended.
    pub const TRACK: &str = "track";
    /// `orstream.event.kind`: an anomaly (bad input, out-of-order data).
    pub const ANOMALY: &str = "anomaly";
    /// `orstream.stream.state`: building the pipeline, waiting for the first frame.
    pub const CONNECTING: &str = "connecting";
    /// `orstream.stream.state`: frames are flowing.
    pub const LIVE: &str = "live";
    /// `orstream.stream.state`: the watchdog saw no frame within the stall timeout.
    pub const STALLED: &str = "stalled";
    /// `orstream.stream.state`: waiting out the backoff before a rebuild.
    pub const RECONNECTING: &str = "reconnecting";
}

/// Where a service's loops report liveness and readiness. The process that runs the service
/// serves them (`/healthz`, `/readyz`); libraries take an implementation and call it, and
/// [`NoHealth`] ignores the reports where nothing serves them.
pub trait HealthReporter: Send + Sync {
    /// The loop that must keep turning (the consumer's poll loop) went round once more.
    fn beat(&self);
    /// Sets one named readiness check; the service is ready when every check it set is true.
    /// Names come from [`checks`].
    fn set_ready(&self, check: &str, ready: bool);
}

/// A [`HealthReporter`] that ignores every report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoHealth;

impl HealthReporter for NoHealth {
    fn beat(&self) {}
    fn set_ready(&self, _check: &str, _ready: bool) {}
}

/// Asks, now and then and off the service's own threads, whether the broker answers, and
/// reports it as the [`checks::BROKER`] readiness check. A poll or a send cannot tell:
/// librdkafka retries behind them, so a broker that is away looks like a quiet one.
pub struct BrokerCheck {
    /// The bus whose broker is asked.
    pub bus: crate::Bus,
    /// A topic that exists whenever the broker answers; its partitions are asked for.
    pub topic: String,
    /// Where the answer goes.
    pub health: Arc<dyn HealthReporter>,
    /// Time between two questions.
    pub interval: Duration,
    /// How long one question may wait for its answer.
    pub timeout: Duration,
}

impl BrokerCheck {
    /// Asks every `interval` until `stopped` says so (looked at every 50 ms); `answered` runs
    /// after each question with whether the broker answered (the services measure their
    /// consumer lag there, which asks the broker too, off their message loops).
    pub fn run(self, stopped: impl Fn() -> bool, mut answered: impl FnMut(bool)) {
        const TICK: Duration = Duration::from_millis(50);
        while !stopped() {
            match self.bus.partitions(&self.topic, self.timeout) {
                Ok(_) => {
                    self.health.set_ready(checks::BROKER, true);
                    answered(true);
                }
                Err(error) => {
                    tracing::warn!(%error, "the broker does not answer");
                    self.health.set_ready(checks::BROKER, false);
                    answered(false);
                }
            }
            let next = Instant::now() + self.interval;
            while !stopped() && Instant::now() < next {
                std::thread::sleep(TICK);
            }
        }
    }
}

/// How long a call to a dependency may take before the dependency counts as not answering:
/// readiness turns false within a second after this, while the call still waits.
pub const DEPENDENCY_PATIENCE: Duration = Duration::from_secs(5);

/// How often a [`DependencyWatch`] looks at the calls in progress.
const WATCH_TICK: Duration = Duration::from_millis(250);

/// Tells a dependency that hangs from a process that hangs. A service runs each call to a
/// dependency (a database transaction, a broker flush) through [`call`](Self::call); while
/// one is in progress a thread of the watch beats liveness for it (the process is waiting,
/// not stuck: restarting it cannot help a hung database), and once it has taken longer than
/// the patience the call's readiness check turns false (an orchestrator stops routing to a
/// service that cannot answer). When the call returns `Ok` the check turns true again; an
/// `Err` leaves readiness to the caller's handling of it. Cheap to clone; the thread ends with
/// the last clone.
#[derive(Clone)]
pub struct DependencyWatch {
    inner: Arc<WatchInner>,
}

struct WatchInner {
    health: Arc<dyn HealthReporter>,
    patience: Duration,
    calls: Mutex<Vec<Call>>,
    next_id: AtomicU64,
}

/// A call in progress under the watch.
struct Call {
    id: u64,
    /// The readiness check of the dependency it waits on.
    check: &'static str,
    started: Instant,
    /// Whether its hang was reported already (once per call).
    told: bool,
}

impl std::fmt::Debug for DependencyWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DependencyWatch")
            .field("patience", &self.inner.patience)
            .finish_non_exhaustive()
    }
}

impl DependencyWatch {
    /// A watch reporting to `health`, calling a dependency hung after `patience`.
    pub fn new(health: Arc<dyn HealthReporter>, patience: Duration) -> Self {
        let inner = Arc::new(WatchInner {
            health,
            patience,
            calls: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&inner);
        let spawned = std::thread::Builder::new()
            .name("dependency-watch".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(WATCH_TICK);
                    match weak.upgrade() {
                        Some(inner) => inner.look(),
                        None => return,
                    }
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the dependency watch; hangs show as stalls");
        }
        Self { inner }
    }

    /// Runs `f`, a call to the dependency behind readiness check `check`, under the watch;
    /// `Ok` sets the check ready.
    pub fn call<T, E>(
        &self,
        check: &'static str,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let result = self.wait_on(check, f);
        if result.is_ok() {
            self.inner.health.set_ready(check, true);
        }
        result
    }

    /// Runs `f`, work that waits on the dependency behind `check` and reports its own
    /// failures, under the watch; readiness after it is left to the caller.
    pub fn wait_on<T>(&self, check: &'static str, f: impl FnOnce() -> T) -> T {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.inner.lock().push(Call {
            id,
            check,
            started: Instant::now(),
            told: false,
        });
        let _done = CallDone {
            inner: &self.inner,
            id,
        };
        f()
    }
}

/// Takes a call off the watch's list however it ends (a panic included).
struct CallDone<'a> {
    inner: &'a WatchInner,
    id: u64,
}

impl Drop for CallDone<'_> {
    fn drop(&mut self) {
        self.inner.lock().retain(|call| call.id != self.id);
    }
}

impl WatchInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Call>> {
        self.calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn look(&self) {
        let overdue: Vec<(&'static str, Duration, bool)> = {
            let mut calls = self.lock();
            if calls.is_empty() {
                return;
            }
            calls
                .iter_mut()
                .filter(|call| call.started.elapsed() >= self.patience)
                .map(|call| {
                    let first = !call.told;
                    call.told = true;
                    (call.check, call.started.elapsed(), first)
                })
                .collect()
        };
        self.health.beat();
        for (check, waited, first) in overdue {
            if first {
                tracing::warn!(
                    check,
                    waited_s = waited.as_secs(),
                    "a dependency does not answer: not ready until it does"
                );
            }
            self.health.set_ready(check, false);
        }
    }
}

/// Names of readiness checks.
pub mod checks {
    /// The consumer has partitions assigned (or the group has fewer partitions than members,
    /// which the service decides to call ready).
    pub const PARTITIONS_ASSIGNED: &str = "partitions_assigned";
    /// The model is loaded, checked against its card and warmed up.
    pub const MODEL_WARM: &str = "model_warm";
    /// The record's database answers.
    pub const DATABASE: &str = "database";
    /// The broker answers.
    pub const BROKER: &str = "broker";
    /// Rejected messages can be written to their dead-letter topic.
    pub const DEAD_LETTERS: &str = "dead_letters";
    /// The service is running and not draining for shutdown.
    pub const RUNNING: &str = "running";
    /// Ingest's privacy gate can judge frames (its model is loaded); failing, the gate
    /// withholds every frame.
    pub const GATE: &str = "gate";
}

/// A metric name as Prometheus shows it (dots to underscores, no unit or `_total` suffix),
/// for tests and dashboards that look a metric up in scraped text.
pub fn prometheus_base_name(name: &str) -> Cow<'_, str> {
    if name.contains(['.', '-']) {
        Cow::Owned(name.replace(['.', '-'], "_"))
    } else {
        Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every report, in order.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<String>>);

    impl HealthReporter for Recorded {
        fn beat(&self) {
            self.0.lock().unwrap().push("beat".into());
        }
        fn set_ready(&self, check: &str, ready: bool) {
            self.0.lock().unwrap().push(format!("{check}={ready}"));
        }
    }

    #[test]
    fn a_hung_call_is_not_ready_but_alive_and_ready_again_once_it_answers() {
        let recorded = Arc::new(Recorded::default());
        let watch = DependencyWatch::new(recorded.clone(), Duration::from_millis(300));
        let answered: Result<u32, ()> = watch.call(checks::DATABASE, || {
            std::thread::sleep(Duration::from_millis(1_200));
            Ok(7)
        });
        assert_eq!(answered, Ok(7));
        let reports = recorded.0.lock().unwrap().clone();
        let not_ready = reports
            .iter()
            .position(|r| r == "database=false")
            .expect("the hang turns readiness false");
        assert!(
            reports[..not_ready].iter().any(|r| r == "beat"),
            "liveness beats while the call waits: {reports:?}"
        );
        assert_eq!(reports.last().map(String::as_str), Some("database=true"));

        // A quick call, a failed one: neither is reported as a hang, the failure leaves
        // readiness to the caller.
        recorded.0.lock().unwrap().clear();
        let failed: Result<(), &str> = watch.call(checks::DATABASE, || Err("refused"));
        assert_eq!(failed, Err("refused"));
        std::thread::sleep(Duration::from_millis(600));
        assert!(recorded.0.lock().unwrap().is_empty());
    }

    fn well_formed(name: &str) -> bool {
        !name.is_empty()
            && name.split('.').all(|part| {
                !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
    }

    #[test]
    fn names_are_unique_and_well_formed() {
        let unique: BTreeSet<&str> = ALL_NAMES.iter().copied().collect();
        assert_eq!(unique.len(), ALL_NAMES.len());
        for name in ALL_NAMES {
            assert!(well_formed(name), "{name}");
            assert!(
                name.starts_with("orstream.") || name.starts_with("messaging."),
                "{name}"
            );
        }
    }

    #[test]
    fn attribute_keys_are_unique_and_carry_no_identifiers() {
        let unique: BTreeSet<&str> = ALLOWED_ATTRIBUTES.iter().copied().collect();
        assert_eq!(unique.len(), ALLOWED_ATTRIBUTES.len());
        for key in ALLOWED_ATTRIBUTES {
            assert!(well_formed(key), "{key}");
            for banned in ["offset", "case", "frame", "seq", "uri", "location", "path"] {
                assert!(!key.contains(banned), "{key} looks like an identifier");
            }
        }
    }

    #[test]
    fn boundaries_increase() {
        for boundaries in [LATENCY_BOUNDARIES, BATCH_SIZE_BOUNDARIES] {
            assert!(boundaries.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn prometheus_names() {
        assert_eq!(
            prometheus_base_name(INGEST_FRAMES_PUBLISHED.name),
            "orstream_ingest_frames_published"
        );
        assert_eq!(
            prometheus_base_name(MESSAGING_CONSUMED.name),
            "messaging_client_consumed_messages"
        );
    }

    #[test]
    fn instruments_build_without_a_provider() {
        // No meter provider installed: recording is a no-op, never a panic.
        let meter = meter();
        INGEST_FRAMES_PUBLISHED.build(&meter).add(1, &[]);
        INGEST_STREAMS.build(&meter).add(1, &[]);
        CONSUMER_LAG.build(&meter).record(3, &[]);
        INFER_BATCH_SIZE.build(&meter).record(8.0, &[]);
        let health: &dyn HealthReporter = &NoHealth;
        health.beat();
        health.set_ready(checks::MODEL_WARM, true);
    }
}
