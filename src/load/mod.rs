//! `orstream load`: a load generator and latency probe for a real deployment.
//!
//! It plays `cameras` streams at `fps` frames per second each into the frames topic of a
//! running deployment (ingest's place; infer and the sink run as they would in production),
//! under its own case, and follows what the deployment makes of them:
//!
//! - **stamped**: capture -> `result_time_ns`, the moment infer stamped the result;
//! - **visible**: capture -> the result received by a read-committed consumer of the results
//!   topic, i.e. after infer's transaction committed (what every downstream reader sees);
//! - **recorded** (with a store URL): capture -> the frame's row committed in the record,
//!   observed by polling the record every `record_poll` (the resolution of that figure).
//!
//! The schedule is open-loop: frame `k` of camera `c` is due at `start + k / fps + c / (cameras
//! * fps)` and carries that instant as its capture time, whether or not the generator kept up,
//! so a stall anywhere (generator, broker, infer, sink) shows in every latency after it and is
//! never hidden by sending late frames as if they were new. The generator's own lateness is
//! reported too (`publish lag`).
//!
//! Every frame published is tallied once: a result (ok, skipped or failed), lost (no result by
//! the end of the drain) or duplicated (a second result for the same frame identity).
//!
//! Modules: [`frames`] (what the cameras show), [`probe`] (the schedule, the publisher and the
//! followers), [`report`] (histograms, the printed table, the JSON).

pub mod frames;
pub mod probe;
pub mod report;

use std::path::PathBuf;
use std::time::Duration;

use orstream_bus::KafkaConfig;
use orstream_proto::topics;
use serde::Deserialize;

pub use probe::{prepare, run};
pub use report::Report;

/// The service name of the load tool's `ORSTREAM_LOAD_<KEY>` variables.
pub const SERVICE: &str = "load";

/// Where the deployment is: the file and variable layers of `orstream load`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Target {
    /// Topic the frames are published to.
    pub frames_topic: String,
    /// Topic stream lifecycle events are published to.
    pub streams_topic: String,
    /// Topic the results are read from (read_committed).
    pub results_topic: String,
    /// The record to watch (postgres://... or sqlite://...); without it, no record figures.
    pub store: Option<String>,
    /// Create the frames, streams and results topics when missing, as ingest and infer do
    /// (their partitions and retention), so the run can start before them.
    pub create_topics: bool,
    /// Partitions of topics it creates.
    pub topic_partitions: u32,
    /// The Kafka connection, security included (as in the services' `[kafka]`).
    pub kafka: KafkaConfig,
}

impl Default for Target {
    fn default() -> Self {
        Self {
            frames_topic: topics::FRAMES.to_owned(),
            streams_topic: topics::STREAMS.to_owned(),
            results_topic: topics::RESULTS.to_owned(),
            store: None,
            create_topics: true,
            topic_partitions: orstream_ingest::IngestConfig::default().topic_partitions,
            kafka: KafkaConfig::default(),
        }
    }
}

/// What to play.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Number of cameras (streams).
    pub cameras: u32,
    /// Frames per second of each camera.
    pub fps: f64,
    /// How long the cameras play.
    pub duration: Duration,
    /// Frame size of synthetic frames.
    pub width: u32,
    /// Frame size of synthetic frames.
    pub height: u32,
    /// JPEG quality of synthetic frames (1..=100).
    pub quality: u8,
    /// JPEG files (a file or a directory of `.jpg`/`.jpeg`) played instead of synthetic frames.
    pub source: Option<PathBuf>,
    /// The case every frame belongs to; unique per run so results are told apart. Stream ids
    /// are `<case_id>-cam<N>`.
    pub case_id: String,
    /// The session epoch of every stream.
    pub session_epoch: u64,
    /// How long to wait after the last frame for the results still due.
    pub drain: Duration,
    /// How often the record is polled for new rows.
    pub record_poll: Duration,
    /// How long to wait for the results consumer to join before playing.
    pub join_timeout: Duration,
}

impl Plan {
    /// Checks the plan; every problem is named.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.cameras == 0 || self.cameras > 1024 {
            problems.push(format!("cameras: {} is not in 1..=1024", self.cameras));
        }
        if !(self.fps.is_finite() && self.fps > 0.0 && self.fps <= 1000.0) {
            problems.push(format!("fps: {} is not in (0, 1000]", self.fps));
        }
        if self.duration.is_zero() {
            problems.push("duration: must be more than 0".to_owned());
        }
        if !(16..=16384).contains(&self.width) || !(16..=16384).contains(&self.height) {
            problems.push(format!(
                "size: {}x{} is not within 16..=16384 on each side",
                self.width, self.height
            ));
        }
        if !(1..=100).contains(&self.quality) {
            problems.push(format!("quality: {} is not in 1..=100", self.quality));
        }
        if !orstream_proto::wire::is_valid_id(&self.case_id)
            || !orstream_proto::wire::is_valid_id(&self.stream_id(self.cameras.saturating_sub(1)))
        {
            problems.push(format!(
                "case: {:?} breaks the id rules (or its stream ids would)",
                self.case_id
            ));
        }
        if self.record_poll.is_zero() {
            problems.push("record_poll: must be more than 0".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// The stream id of camera `camera`.
    pub fn stream_id(&self, camera: u32) -> String {
        format!("{}-cam{camera}", self.case_id)
    }

    /// Frames each camera plays.
    pub fn frames_per_camera(&self) -> u64 {
        // Bounded by validate: at most 1000 fps.
        (self.duration.as_secs_f64() * self.fps).ceil().max(1.0) as u64
    }

    /// When frame `seq` of `camera` is due, after the start.
    pub fn due(&self, camera: u32, seq: u64) -> Duration {
        let period = 1.0 / self.fps;
        let offset = seq as f64 * period + f64::from(camera) * period / f64::from(self.cameras);
        Duration::from_secs_f64(offset)
    }
}
