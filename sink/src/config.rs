//! Settings of the sink: where the record lives, which topics it reads and writes, how events
//! are derived, and how it batches and retries.
//!
//! Layers: built-in defaults, then a TOML file, then the `ORSTREAM_SINK_<KEY>` variables, put
//! together by [`orstream_shell::config::Layers`] as for every service.
//! [`SinkConfig::validate`] reports every problem at once, each naming its key.

use std::path::Path;
use std::time::Duration;

use orstream_bus::KafkaConfig;
use orstream_proto::{Category, topics};
use orstream_shell::config::{ConfigError, Layers};
use serde::{Deserialize, Serialize};

use crate::derive::Rules;
use crate::error::SinkError;
use crate::track::{TrackRules, nanos};

/// The `<SERVICE>` of the sink's `ORSTREAM_SINK_<KEY>` variables.
pub const SERVICE: &str = "sink";

/// Everything the sink needs to know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SinkConfig {
    /// Where the record is stored: `sqlite://PATH` (the embedded default), `sqlite::memory:`
    /// (tests) or a `postgres://user:password@host:port/database` URL.
    pub store: String,
    /// Kafka consumer group of the sink. The group only spreads partitions over sink
    /// instances: where to resume is read from the store, never from the group's offsets.
    pub group_id: String,
    /// Topic of the per-frame results (`FrameResult`, keyed by stream_id).
    pub results_topic: String,
    /// Topic of stream lifecycle events (`StreamEvent`, keyed by stream_id).
    pub streams_topic: String,
    /// Topic the derived `SurgicalEvent`s are published to, keyed by case_id.
    pub events_topic: String,
    /// Publish derived events to `events_topic` (through the store's outbox, after the
    /// transaction that recorded them commits).
    pub publish_events: bool,
    /// Topic the per-frame tool track assignments (`TrackFrame`, keyed by stream_id) are
    /// published to.
    pub tracks_topic: String,
    /// Publish per-frame track assignments to `tracks_topic` (through the outbox, like events).
    pub publish_tracks: bool,
    /// Keep one row per frame result (status, model, detected classes) in the `frames`
    /// table. Costs the most rows; events and gaps do not need it.
    pub store_frames: bool,
    /// Partitions given to the topics the sink creates when they do not exist yet
    /// (`events_topic` and the two dead-letter topics).
    pub topic_partitions: u32,
    /// Most messages stored in one database transaction.
    pub batch_max_messages: usize,
    /// Longest wait for a batch to fill before it is stored anyway. Bounds the lag added by
    /// batching.
    #[serde(with = "humantime_serde")]
    pub batch_max_wait: Duration,
    /// After a batch's first message, how long without a further one ends the batch (never
    /// past `batch_max_wait`): results committed together arrive together, and the batch is
    /// stored as soon as they are in.
    #[serde(with = "humantime_serde")]
    pub batch_linger: Duration,
    /// First pause after a failed database or bus call; it doubles on each further failure.
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest pause between retries.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// How long to wait for the broker to acknowledge published events and dead letters.
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// How often the idle sink checks that the database and the broker answer, for its
    /// readiness (`/readyz`); a failed store call turns it not ready at once either way.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
    /// Event derivation rules.
    pub derive: DeriveConfig,
    /// The Kafka cluster (ignored when the sink runs on the in-process bus).
    pub kafka: KafkaConfig,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            store: "sqlite://orstream-record.db".to_owned(),
            group_id: "orstream-sink".to_owned(),
            results_topic: topics::RESULTS.to_owned(),
            streams_topic: topics::STREAMS.to_owned(),
            events_topic: topics::EVENTS.to_owned(),
            publish_events: true,
            tracks_topic: topics::TRACKS.to_owned(),
            publish_tracks: true,
            store_frames: true,
            topic_partitions: 3,
            batch_max_messages: 1_000,
            batch_max_wait: Duration::from_millis(100),
            batch_linger: Duration::from_millis(2),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(30),
            health_interval: Duration::from_secs(2),
            derive: DeriveConfig::default(),
            kafka: KafkaConfig::default(),
        }
    }
}

/// How per-frame detections become presence intervals (see the `derive` module).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeriveConfig {
    /// A class becomes present when it is seen in at least this many of the last
    /// `window_frames` usable frames (k of k-of-n). At least 2, so a one-frame flicker is
    /// never an event.
    pub enter_frames: u32,
    /// The window of the enter rule, in frames (n of k-of-n).
    pub window_frames: u32,
    /// A present class becomes absent once it has not been seen for longer than this
    /// (capture time); the interval ends at the last frame that saw it.
    #[serde(with = "humantime_serde")]
    pub absent_after: Duration,
    /// Instances scoring below this do not count as seeing their class.
    pub min_score: f32,
    /// Categories that produce presence intervals.
    pub categories: Vec<CategoryName>,
    /// How tool instances are followed one by one (`[derive.tracking]`).
    pub tracking: TrackingConfig,
}

/// How the instances of tool classes become tracks with motion (see the `track` module).
/// Positions and distances are in normalized image units: x / width, y / height.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackingConfig {
    /// Track tool instances (needs `tool` among `derive.categories`).
    pub enabled: bool,
    /// Frames in a row that confirm a new track (a shorter flicker never becomes one).
    pub confirm_frames: u32,
    /// A track unseen for longer than this ends (capture time); a tool back within it keeps
    /// its track.
    #[serde(with = "humantime_serde")]
    pub lost_after: Duration,
    /// Seen again after at least one missed frame and at least this long unseen: a re-entry.
    #[serde(with = "humantime_serde")]
    pub reentry_after: Duration,
    /// Box overlap (IoU) between a track's predicted box and an instance that lets them pair.
    pub min_iou: f64,
    /// Distance between a track's predicted centroid and an instance's that lets them pair.
    pub max_distance: f64,
    /// Pieces of one tool's mask whose boxes are at most this far apart are one instance.
    pub fragment_margin: f64,
    /// Filtered speed (per second) under which a tool counts as idle.
    pub idle_speed: f64,
    /// Time between the trajectory points kept per track.
    #[serde(with = "humantime_serde")]
    pub trajectory_interval: Duration,
    /// Kalman filter: standard deviation of a measured centroid.
    pub measurement_noise: f64,
    /// Kalman filter: standard deviation of the acceleration (per second squared).
    pub acceleration_noise: f64,
}

impl Default for TrackingConfig {
    fn default() -> Self {
        let r = TrackRules::default();
        Self {
            enabled: r.enabled,
            confirm_frames: r.confirm_frames as u32,
            lost_after: Duration::from_nanos(r.lost_after_ns as u64),
            reentry_after: Duration::from_nanos(r.reentry_after_ns as u64),
            min_iou: r.min_iou,
            max_distance: r.max_distance,
            fragment_margin: r.fragment_margin,
            idle_speed: r.idle_speed,
            trajectory_interval: Duration::from_nanos(r.trajectory_interval_ns as u64),
            measurement_noise: r.measurement_noise,
            acceleration_noise: r.acceleration_noise,
        }
    }
}

// The conversions into the rules of `derive` and `track` live here, so those pure modules
// never depend on the configuration (config -> store -> derive -> track, never back).
impl From<&TrackingConfig> for TrackRules {
    fn from(c: &TrackingConfig) -> Self {
        Self {
            enabled: c.enabled,
            confirm_frames: u64::from(c.confirm_frames),
            lost_after_ns: nanos(c.lost_after),
            reentry_after_ns: nanos(c.reentry_after),
            min_iou: c.min_iou,
            max_distance: c.max_distance,
            fragment_margin: c.fragment_margin,
            idle_speed: c.idle_speed,
            trajectory_interval_ns: nanos(c.trajectory_interval),
            measurement_noise: c.measurement_noise,
            acceleration_noise: c.acceleration_noise,
        }
    }
}

impl From<&DeriveConfig> for Rules {
    fn from(c: &DeriveConfig) -> Self {
        Self {
            enter_frames: c.enter_frames as usize,
            window_frames: u64::from(c.window_frames),
            absent_after_ns: i64::try_from(c.absent_after.as_nanos()).unwrap_or(i64::MAX),
            min_score: c.min_score,
            categories: c.categories.iter().map(|c| c.category() as i32).collect(),
            tracking: TrackRules::from(&c.tracking),
        }
    }
}

impl Default for DeriveConfig {
    fn default() -> Self {
        Self {
            enter_frames: 3,
            window_frames: 5,
            absent_after: Duration::from_millis(500),
            min_score: 0.5,
            categories: vec![CategoryName::Tool, CategoryName::Organ],
            tracking: TrackingConfig::default(),
        }
    }
}

/// A class category as written in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CategoryName {
    /// Surgical instruments.
    Tool,
    /// Anatomy.
    Organ,
    /// The model's background class.
    Background,
    /// Anything else the model card names.
    Other,
}

impl CategoryName {
    /// The contract's value.
    pub fn category(self) -> Category {
        match self {
            CategoryName::Tool => Category::Tool,
            CategoryName::Organ => Category::Organ,
            CategoryName::Background => Category::Background,
            CategoryName::Other => Category::Other,
        }
    }
}

/// Largest accepted `derive.window_frames`: the window is kept per class in the state.
const MAX_WINDOW: u32 = 1_000;

impl SinkConfig {
    /// Parses a configuration file's text over the defaults (no variables applied; unknown keys
    /// are errors). Does not validate. The file's `[telemetry]` table belongs to the process
    /// that runs the sink (the `orstream` command reads and checks it) and is skipped here.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let mut layers = Layers::from_sources(SERVICE, Some((Path::new("sink.toml"), text)), [])?;
        layers.split("telemetry");
        layers.extract()
    }

    /// Checks every field and cross-field rule and reports all problems at once, each naming
    /// its key. The Kafka settings are checked too, under `kafka.`.
    pub fn validate(&self) -> Result<(), SinkError> {
        let mut problems = Vec::new();
        if !(self.store.starts_with("sqlite:")
            || self.store.starts_with("postgres://")
            || self.store.starts_with("postgresql://"))
        {
            problems.push(format!(
                "store: {:?} is not sqlite://PATH, sqlite::memory: or postgres://...",
                orstream_record::store::redact(&self.store)
            ));
        }
        if self.group_id.trim().is_empty() {
            problems.push("group_id: must not be empty".to_owned());
        }
        for (key, topic) in [
            ("results_topic", &self.results_topic),
            ("streams_topic", &self.streams_topic),
            ("events_topic", &self.events_topic),
            ("tracks_topic", &self.tracks_topic),
        ] {
            if let Err(e) = orstream_bus::validate_topic_name(topic) {
                problems.push(format!("{key}: {e}"));
            }
        }
        if self.results_topic == self.streams_topic {
            problems.push(format!(
                "streams_topic: must differ from results_topic ({})",
                self.results_topic
            ));
        }
        if self.events_topic == self.results_topic || self.events_topic == self.streams_topic {
            problems.push(format!(
                "events_topic: {} must differ from the topics the sink reads",
                self.events_topic
            ));
        }
        if [&self.results_topic, &self.streams_topic, &self.events_topic]
            .contains(&&self.tracks_topic)
        {
            problems.push(format!(
                "tracks_topic: {} must differ from the other topics",
                self.tracks_topic
            ));
        }
        if self.topic_partitions == 0 {
            problems.push("topic_partitions: must be at least 1".to_owned());
        }
        if self.batch_max_messages == 0 {
            problems.push("batch_max_messages: must be at least 1".to_owned());
        }
        if self.batch_max_wait.is_zero() {
            problems.push("batch_max_wait: must be longer than 0".to_owned());
        }
        if self.batch_linger.is_zero() {
            problems.push("batch_linger: must be longer than 0".to_owned());
        }
        if self.batch_max_wait >= self.kafka.max_poll_interval {
            problems.push(format!(
                "batch_max_wait: {:?} must be shorter than kafka.max_poll_interval ({:?})",
                self.batch_max_wait, self.kafka.max_poll_interval
            ));
        }
        if self.retry_initial.is_zero() {
            problems.push("retry_initial: must be longer than 0".to_owned());
        }
        if self.retry_initial > self.retry_max {
            problems.push(format!(
                "retry_initial: {:?} must not exceed retry_max ({:?})",
                self.retry_initial, self.retry_max
            ));
        }
        if self.publish_timeout.is_zero() {
            problems.push("publish_timeout: must be longer than 0".to_owned());
        }
        if self.health_interval.is_zero() {
            problems.push("health_interval: must be longer than 0".to_owned());
        }
        let d = &self.derive;
        if d.enter_frames < 2 {
            problems.push(format!(
                "derive.enter_frames: {} must be at least 2, so a one-frame flicker is never an event",
                d.enter_frames
            ));
        }
        if d.window_frames < d.enter_frames {
            problems.push(format!(
                "derive.window_frames: {} must be at least derive.enter_frames ({})",
                d.window_frames, d.enter_frames
            ));
        }
        if d.window_frames > MAX_WINDOW {
            problems.push(format!(
                "derive.window_frames: {} exceeds {MAX_WINDOW}",
                d.window_frames
            ));
        }
        if d.absent_after.is_zero() {
            problems.push("derive.absent_after: must be longer than 0".to_owned());
        }
        if i64::try_from(d.absent_after.as_nanos()).is_err() {
            problems.push("derive.absent_after: too long".to_owned());
        }
        if !(0.0..=1.0).contains(&d.min_score) {
            problems.push(format!(
                "derive.min_score: {} is outside 0..=1",
                d.min_score
            ));
        }
        if d.categories.is_empty() {
            problems.push("derive.categories: name at least one category".to_owned());
        }
        let t = &d.tracking;
        if t.confirm_frames == 0 {
            problems.push("derive.tracking.confirm_frames: must be at least 1".to_owned());
        }
        for (key, value) in [
            ("lost_after", t.lost_after),
            ("reentry_after", t.reentry_after),
            ("trajectory_interval", t.trajectory_interval),
        ] {
            if value.is_zero() || i64::try_from(value.as_nanos()).is_err() {
                problems.push(format!(
                    "derive.tracking.{key}: {value:?} must be longer than 0 and at most 292 years"
                ));
            }
        }
        for (key, value, range) in [
            ("min_iou", t.min_iou, 0.0..=1.0),
            ("max_distance", t.max_distance, f64::MIN_POSITIVE..=2.0),
            ("fragment_margin", t.fragment_margin, 0.0..=1.0),
            ("idle_speed", t.idle_speed, 0.0..=100.0),
            (
                "measurement_noise",
                t.measurement_noise,
                f64::MIN_POSITIVE..=1.0,
            ),
            (
                "acceleration_noise",
                t.acceleration_noise,
                f64::MIN_POSITIVE..=100.0,
            ),
        ] {
            if !range.contains(&value) {
                problems.push(format!(
                    "derive.tracking.{key}: {value} is outside {}..={}",
                    range.start(),
                    range.end()
                ));
            }
        }
        if let Err(orstream_bus::BusError::Config { problems: kafka }) = self.kafka.validate() {
            problems.extend(kafka.into_iter().map(|p| format!("kafka.{p}")));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SinkError::Config { problems })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        SinkConfig::default().validate().unwrap();
    }

    #[test]
    fn tracking_defaults_are_the_trackers() {
        assert_eq!(
            TrackRules::from(&TrackingConfig::default()),
            TrackRules::default()
        );
    }

    #[test]
    fn durations_and_sections_parse() {
        let config = SinkConfig::from_toml(
            r#"
            store = "postgres://orstream@127.0.0.1:5432/orstream"
            batch_max_wait = "250ms"
            [derive]
            enter_frames = 4
            window_frames = 6
            absent_after = "1s 500ms"
            categories = ["tool"]
            [kafka]
            bootstrap_servers = "broker:9092"
            [telemetry]
            metrics_listen = "0.0.0.0:9464"
            "#,
        )
        .unwrap();
        assert_eq!(config.batch_max_wait, Duration::from_millis(250));
        assert_eq!(config.derive.absent_after, Duration::from_millis(1_500));
        assert_eq!(config.derive.categories, vec![CategoryName::Tool]);
        assert_eq!(config.kafka.bootstrap_servers, "broker:9092");
        config.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = SinkConfig::from_toml("[derive]\nenter = 3").unwrap_err();
        assert!(
            err.to_string().contains("derive.enter: unknown field"),
            "{err}"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_its_key() {
        let mut config = SinkConfig {
            store: "mysql://x".into(),
            group_id: " ".into(),
            streams_topic: topics::RESULTS.into(),
            batch_max_messages: 0,
            retry_initial: Duration::from_secs(60),
            ..SinkConfig::default()
        };
        config.derive.enter_frames = 1;
        config.derive.min_score = 1.5;
        config.kafka.client_id = String::new();
        let Err(SinkError::Config { problems }) = config.validate() else {
            panic!("expected a configuration error");
        };
        let text = problems.join("\n");
        for key in [
            "store:",
            "group_id:",
            "streams_topic:",
            "batch_max_messages:",
            "retry_initial:",
            "derive.enter_frames: 1 must be at least 2",
            "derive.min_score:",
            "kafka.client_id:",
        ] {
            assert!(text.contains(key), "missing {key:?} in:\n{text}");
        }
        assert_eq!(problems.len(), 8, "{text}");
    }

    #[test]
    fn the_committed_example_parses_and_is_valid() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/sink.example.toml");
        let config = SinkConfig::from_toml(&std::fs::read_to_string(path).unwrap()).unwrap();
        config.validate().unwrap();
        assert!(config.store.starts_with("postgres://"));
        // The values shown are the defaults.
        assert_eq!(config.derive, DeriveConfig::default());
        assert_eq!(config.tracks_topic, topics::TRACKS);
    }

    #[test]
    fn bad_tracking_settings_are_named() {
        let mut config = SinkConfig::default();
        config.derive.tracking.confirm_frames = 0;
        config.derive.tracking.lost_after = Duration::ZERO;
        config.derive.tracking.min_iou = 1.5;
        config.derive.tracking.max_distance = 0.0;
        config.tracks_topic = config.events_topic.clone();
        let err = config.validate().unwrap_err().to_string();
        for key in [
            "derive.tracking.confirm_frames",
            "derive.tracking.lost_after",
            "derive.tracking.min_iou: 1.5",
            "derive.tracking.max_distance: 0",
            "tracks_topic: or.events.v1 must differ",
        ] {
            assert!(err.contains(key), "{key} not in: {err}");
        }
        let err = SinkConfig::from_toml("[derive.tracking]\nlost = \"1s\"").unwrap_err();
        assert!(err.to_string().contains("lost"), "{err}");
    }
}
