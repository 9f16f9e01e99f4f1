//! [`InferConfig`]: everything `orstream infer` and the embedded demo can set, with defaults
//! and [`InferConfig::validate`]. The file and the `ORSTREAM_INFER_<KEY>` variables are layered
//! by [`orstream_shell::config::Layers`], as for every service.

use std::path::{Path, PathBuf};
use std::time::Duration;

use orstream_bus::{BusError, KafkaConfig, validate_topic_name};
use orstream_proto::topics;
use orstream_shell::config::{ConfigError, Layers};
use serde::Deserialize;

use crate::error::InferError;

/// The `<SERVICE>` of infer's `ORSTREAM_INFER_<KEY>` variables.
pub const SERVICE: &str = "infer";

/// Largest batch any configuration may ask for; beyond it a batch of JPEG frames would hold
/// more memory than a worker should.
pub const MAX_BATCH_SIZE: usize = 256;

/// How results reach the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryGuarantee {
    /// Results and the consumed offsets commit together in one Kafka transaction: after any
    /// crash, read_committed readers see exactly one result per frame.
    ExactlyOnce,
    /// Results are produced, flushed, then offsets committed: a crash may repeat results (never
    /// lose them). For brokers without transactions.
    AtLeastOnce,
}

/// When the output stage commits (see `produce` for the reasoning).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitPolicy {
    /// Commit as soon as no further result is due soon: at once when nothing else is in
    /// flight, else once no result came for `commit_linger`; a transaction stays open at most
    /// `commit_interval`. Results become visible one commit after they are produced, and
    /// under load each commit takes every result produced while the previous one ran.
    Adaptive,
    /// Commit every `commit_interval`, whatever the load (Kafka Streams' way): fewer,
    /// larger transactions, and up to that interval more latency for read_committed readers.
    Interval,
}

/// What to favour when frames arrive faster than the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Live video: a frame that cannot meet its deadline (capture time + `latency_budget`) is
    /// answered `SKIPPED_STALE` without running; under overload the newest frame of a stream
    /// supersedes older waiting ones (`SKIPPED_OVERLOAD`).
    Live,
    /// Recorded video: every frame runs, as fast as the hardware allows.
    Archive,
}

/// Configuration of the inference worker. Every duration is written like `"100ms"` or `"2s"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InferConfig {
    /// Topic the frames are read from.
    pub frames_topic: String,
    /// Topic the results are written to, keyed by stream_id.
    pub results_topic: String,
    /// Dead-letter topic for frames that cannot be processed.
    pub dlq_topic: String,
    /// Consumer group shared by every worker of one deployment; they split the partitions.
    pub group_id: String,
    /// Transactional id of this worker process: unique among the workers, and the same after
    /// a restart, so the restarted process fences its predecessor and aborts what it left open.
    /// A worker refuses to start while a live member of its group holds the same id.
    pub transactional_id: String,
    /// `exactly_once` (Kafka transactions) or `at_least_once` (no transactions).
    pub delivery: DeliveryGuarantee,
    /// When results and offsets are committed: `adaptive` (as soon as no more results are
    /// due soon) or `interval` (every `commit_interval`).
    pub commit_policy: CommitPolicy,
    /// `interval`: how often results and offsets are committed. `adaptive`: the longest a
    /// transaction stays open while results keep coming. Longer means fewer transactions and
    /// more latency for read_committed readers.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// `adaptive`: while other frames are in flight, how long the output stage waits for the
    /// next result before it commits those it has (never past `commit_interval`).
    #[serde(with = "humantime_serde")]
    pub commit_linger: Duration,
    /// `live` (freshness first) or `archive` (every frame runs).
    pub mode: Mode,
    /// Live mode: a frame's deadline is its capture time plus this.
    #[serde(with = "humantime_serde")]
    pub latency_budget: Duration,
    /// Live mode: frames of one stream that may wait for a batch; a newer one supersedes the
    /// oldest beyond this.
    pub max_pending_per_stream: usize,
    /// Frames read from the bus and not yet answered, over all stages; the poll loop waits
    /// when it is reached, which bounds memory.
    pub max_in_flight: usize,
    /// How long a stop request may take to drain the stages and commit.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// The model and where it runs.
    pub model: ModelConfig,
    /// The micro-batcher.
    pub batch: BatchConfig,
    /// JPEG decoding and preprocessing.
    pub decode: DecodeConfig,
    /// Turning model output into instances.
    pub postprocess: PostprocessConfig,
    /// The Kafka connection (ignored on the in-process bus).
    pub kafka: KafkaConfig,
}

impl Default for InferConfig {
    fn default() -> Self {
        Self {
            frames_topic: topics::FRAMES.to_owned(),
            results_topic: topics::RESULTS.to_owned(),
            dlq_topic: topics::dlq(topics::FRAMES),
            group_id: "orstream-infer".to_owned(),
            transactional_id: "orstream-infer-0".to_owned(),
            delivery: DeliveryGuarantee::ExactlyOnce,
            commit_policy: CommitPolicy::Adaptive,
            commit_interval: Duration::from_millis(100),
            commit_linger: Duration::from_millis(2),
            mode: Mode::Live,
            latency_budget: Duration::from_secs(1),
            max_pending_per_stream: 2,
            max_in_flight: 256,
            drain_timeout: Duration::from_secs(20),
            model: ModelConfig::default(),
            batch: BatchConfig::default(),
            decode: DecodeConfig::default(),
            postprocess: PostprocessConfig::default(),
            kafka: KafkaConfig::default(),
        }
    }
}

/// The model and where it runs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// The TorchScript file.
    pub path: PathBuf,
    /// Its model card; by default the model's path with `.toml`.
    pub card: Option<PathBuf>,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Run in half precision (CUDA only): module and input are cast to f16.
    pub fp16: bool,
    /// Model replicas on the device, each on its own OS thread with its own module copy.
    pub replicas: usize,
    /// libtorch intra-op threads for the whole process; 0 leaves libtorch's default (one per
    /// core). With several CPU replicas, cores / replicas avoids oversubscription.
    pub torch_threads: usize,
    /// Forward passes each replica runs on a blank batch before the worker joins its group.
    pub warmup_runs: u32,
    /// Longest a forward pass may take: past it the worker stops beating liveness, so an
    /// orchestrator restarts a worker whose device or model hangs (a forward cannot be
    /// interrupted from outside). Far above any healthy batch.
    #[serde(with = "humantime_serde")]
    pub forward_deadline: Duration,
    /// torchvision's operator library (`torchvision/_C.so`), needed by `maskrcnn` models.
    pub torchvision_ops: Option<PathBuf>,
    /// The libpython that torchvision's library was built against (e.g.
    /// `libpython3.11.so.1.0`), loaded first so its symbols resolve.
    pub libpython: Option<PathBuf>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("models/demo/seg.pt"),
            card: None,
            device: "cpu".to_owned(),
            fp16: false,
            replicas: 1,
            torch_threads: 0,
            warmup_runs: 2,
            forward_deadline: Duration::from_secs(60),
            torchvision_ops: None,
            libpython: None,
        }
    }
}

impl ModelConfig {
    /// The card file: `card` if set, else the model path with `.toml`.
    pub fn card_path(&self) -> PathBuf {
        self.card
            .clone()
            .unwrap_or_else(|| crate::card::card_path_for(&self.path))
    }
}

/// The micro-batcher.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Largest batch handed to a replica (across streams).
    pub max_batch_size: usize,
    /// Longest a frame waits for others to fill its batch.
    #[serde(with = "humantime_serde")]
    pub max_linger: Duration,
    /// Grow the batch size while the measured batch latency stays under `target_latency`,
    /// shrink it (halve) when it does not (AIMD), between 1 and `max_batch_size`.
    pub adaptive: bool,
    /// Adaptive batching: the batch latency (forward + postprocess) to stay under.
    #[serde(with = "humantime_serde")]
    pub target_latency: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 8,
            max_linger: Duration::from_millis(5),
            adaptive: false,
            target_latency: Duration::from_millis(100),
        }
    }
}

/// JPEG decoding and preprocessing.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeConfig {
    /// Decode and preprocess threads.
    pub workers: usize,
    /// Messages waiting for a decode thread.
    pub queue: usize,
    /// Largest decoded image accepted, in pixels (width x height), checked from the JPEG
    /// header before anything is allocated.
    pub max_pixels: u64,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            workers: 2,
            queue: 32,
            // 8K UHD.
            max_pixels: 7680 * 4320,
        }
    }
}

/// Turning model output into instances.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostprocessConfig {
    /// Width of every instance mask, in cells covering the whole image.
    pub mask_width: u32,
    /// Height of every instance mask, in cells covering the whole image.
    pub mask_height: u32,
    /// Smallest instance kept, as a fraction of the image area (semantic blobs and masks).
    pub min_area: f32,
    /// Smallest detection score kept (maskrcnn).
    pub min_score: f32,
    /// Mask probability above which a pixel belongs to a detection (maskrcnn).
    pub mask_threshold: f32,
    /// Most instances per frame, largest first; bounds the result size.
    pub max_instances: usize,
}

impl Default for PostprocessConfig {
    fn default() -> Self {
        Self {
            mask_width: 80,
            mask_height: 48,
            min_area: 0.001,
            min_score: 0.5,
            mask_threshold: 0.5,
            max_instances: 32,
        }
    }
}

impl InferConfig {
    /// Parses a configuration file's text over the defaults (no variables applied; unknown
    /// keys are errors); `path` is only named in errors. The file's `[telemetry]` table belongs
    /// to the process that runs the worker (the `orstream` command reads and checks it) and is
    /// skipped here.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let mut layers = Layers::from_sources(SERVICE, Some((path, text)), [])?;
        layers.split("telemetry");
        layers.extract()
    }

    /// Checks every field and cross-field rule and reports all problems at once, each naming
    /// its key.
    pub fn validate(&self) -> Result<(), InferError> {
        let mut problems = Vec::new();
        for (key, topic) in [
            ("frames_topic", &self.frames_topic),
            ("results_topic", &self.results_topic),
            ("dlq_topic", &self.dlq_topic),
        ] {
            if let Err(err) = validate_topic_name(topic) {
                problems.push(format!("{key}: {err}"));
            }
        }
        if self.results_topic == self.frames_topic || self.dlq_topic == self.frames_topic {
            problems.push(
                "results_topic, dlq_topic: must differ from frames_topic (a worker would read \
                 its own output)"
                    .to_owned(),
            );
        }
        if self.group_id.trim().is_empty() {
            problems.push("group_id: must not be empty".to_owned());
        }
        if self.delivery == DeliveryGuarantee::ExactlyOnce
            && self.transactional_id.trim().is_empty()
        {
            problems
                .push("transactional_id: must not be empty with delivery = exactly_once".into());
        }
        if self.commit_interval.is_zero() {
            problems.push("commit_interval: must be more than 0".to_owned());
        }
        if self.delivery == DeliveryGuarantee::ExactlyOnce
            && self.commit_interval >= self.kafka.transaction_timeout
        {
            problems.push(format!(
                "commit_interval: {:?} must be shorter than kafka.transaction_timeout ({:?}), \
                 or every transaction times out",
                self.commit_interval, self.kafka.transaction_timeout
            ));
        }
        if self.mode == Mode::Live {
            if self.latency_budget.is_zero() {
                problems.push("latency_budget: must be more than 0 in live mode".to_owned());
            }
            if self.batch.max_linger >= self.latency_budget {
                problems.push(format!(
                    "batch.max_linger: {:?} must be shorter than latency_budget ({:?}), or \
                     waiting for a batch alone makes frames stale",
                    self.batch.max_linger, self.latency_budget
                ));
            }
            if self.max_pending_per_stream == 0 {
                problems.push("max_pending_per_stream: must be at least 1".to_owned());
            }
        }
        if !(1..=MAX_BATCH_SIZE).contains(&self.batch.max_batch_size) {
            problems.push(format!(
                "batch.max_batch_size: {} is outside 1..={MAX_BATCH_SIZE}",
                self.batch.max_batch_size
            ));
        }
        if self.batch.adaptive && self.batch.target_latency.is_zero() {
            problems.push("batch.target_latency: must be more than 0 when adaptive".to_owned());
        }
        if self.max_in_flight < self.batch.max_batch_size {
            problems.push(format!(
                "max_in_flight: {} must be at least batch.max_batch_size ({}), or no batch \
                 ever fills",
                self.max_in_flight, self.batch.max_batch_size
            ));
        }
        if self.drain_timeout.is_zero() {
            problems.push("drain_timeout: must be more than 0".to_owned());
        }
        if self.drain_timeout >= self.kafka.session_timeout {
            problems.push(format!(
                "drain_timeout: {:?} must be shorter than kafka.session_timeout ({:?}), so a \
                 draining worker still owns its partitions when it commits",
                self.drain_timeout, self.kafka.session_timeout
            ));
        }
        self.model_problems(&mut problems);
        if !(1..=64).contains(&self.decode.workers) {
            problems.push(format!(
                "decode.workers: {} is outside 1..=64",
                self.decode.workers
            ));
        }
        if self.decode.queue == 0 {
            problems.push("decode.queue: must be at least 1".to_owned());
        }
        if self.decode.max_pixels == 0 {
            problems.push("decode.max_pixels: must be more than 0".to_owned());
        }
        let post = &self.postprocess;
        for (key, side) in [
            ("postprocess.mask_width", post.mask_width),
            ("postprocess.mask_height", post.mask_height),
        ] {
            if !(1..=4096).contains(&side) {
                problems.push(format!("{key}: {side} is outside 1..=4096"));
            }
        }
        for (key, value) in [
            ("postprocess.min_area", post.min_area),
            ("postprocess.min_score", post.min_score),
            ("postprocess.mask_threshold", post.mask_threshold),
        ] {
            if !(0.0..=1.0).contains(&value) {
                problems.push(format!("{key}: {value} is outside 0..=1"));
            }
        }
        if !(1..=orstream_proto::wire::MAX_INSTANCES).contains(&post.max_instances) {
            problems.push(format!(
                "postprocess.max_instances: {} is outside 1..={} (the contract's cap per result)",
                post.max_instances,
                orstream_proto::wire::MAX_INSTANCES
            ));
        }
        if let Err(BusError::Config { problems: kafka }) = self.kafka.validate() {
            problems.extend(kafka.into_iter().map(|p| format!("kafka.{p}")));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InferError::Config { problems })
        }
    }

    fn model_problems(&self, problems: &mut Vec<String>) {
        let model = &self.model;
        if model.path.as_os_str().is_empty() {
            problems.push("model.path: must name a TorchScript file".to_owned());
        }
        match crate::model::parse_device(&model.device) {
            Ok(tch::Device::Cpu) if model.fp16 => {
                problems.push("model.fp16: needs a cuda:N device (CPU runs f32)".to_owned());
            }
            Ok(_) => {}
            Err(err) => problems.push(format!("model.device: {err}")),
        }
        if model.forward_deadline.is_zero() {
            problems.push("model.forward_deadline: must be more than 0".to_owned());
        }
        if !(1..=64).contains(&model.replicas) {
            problems.push(format!(
                "model.replicas: {} is outside 1..=64",
                model.replicas
            ));
        }
        if model.torch_threads > 1024 {
            problems.push(format!(
                "model.torch_threads: {} is more than 1024",
                model.torch_threads
            ));
        }
        if model.libpython.is_some() && model.torchvision_ops.is_none() {
            problems.push(
                "model.libpython: only used to load model.torchvision_ops, which is not set"
                    .to_owned(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        InferConfig::default().validate().unwrap();
    }

    #[test]
    fn durations_and_sections_parse() {
        let text = r#"
            mode = "archive"
            delivery = "at_least_once"
            commit_interval = "250ms"
            [batch]
            max_batch_size = 4
            max_linger = "2ms"
            [model]
            path = "m.pt"
            replicas = 2
            [kafka]
            bootstrap_servers = "k:9092"
        "#;
        let config = InferConfig::from_toml(text, Path::new("x.toml")).unwrap();
        assert_eq!(config.mode, Mode::Archive);
        assert_eq!(config.delivery, DeliveryGuarantee::AtLeastOnce);
        assert_eq!(config.commit_interval, Duration::from_millis(250));
        assert_eq!(config.batch.max_linger, Duration::from_millis(2));
        assert_eq!(config.model.card_path(), PathBuf::from("m.toml"));
        assert_eq!(config.kafka.bootstrap_servers, "k:9092");
        config.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let err = InferConfig::from_toml("[batch]\nmax_size = 3", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_size"), "{err}");
    }

    #[test]
    fn variables_override_the_file() {
        let layers = Layers::from_sources(
            SERVICE,
            Some((
                Path::new("infer.toml"),
                "group_id = \"g\"\n[model]\ndevice = \"cpu\"\n",
            )),
            [
                ("ORSTREAM_INFER_KAFKA__BOOTSTRAP_SERVERS", "b:1"),
                ("ORSTREAM_INFER_MODEL__DEVICE", "cuda:1"),
                ("ORSTREAM_INFER_BATCH__MAX_BATCH_SIZE", "4"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .unwrap();
        let config: InferConfig = layers.extract().unwrap();
        assert_eq!(config.kafka.bootstrap_servers, "b:1");
        assert_eq!(config.model.device, "cuda:1");
        assert_eq!(config.batch.max_batch_size, 4);
        assert_eq!(config.group_id, "g");
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_its_key() {
        let mut config = InferConfig::default();
        config.batch.max_linger = Duration::from_secs(2);
        config.batch.max_batch_size = 0;
        config.model.device = "gpu".to_owned();
        config.model.fp16 = true;
        config.results_topic = "or.frames.v1".to_owned();
        config.postprocess.min_area = 2.0;
        config.kafka.client_id = String::new();
        let Err(InferError::Config { problems }) = config.validate() else {
            panic!("expected a configuration error");
        };
        let all = problems.join("\n");
        for needle in [
            "batch.max_linger: 2s must be shorter than latency_budget",
            "batch.max_batch_size",
            "model.device: invalid device `gpu`",
            "results_topic, dlq_topic",
            "postprocess.min_area",
            "kafka.client_id",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
    }
}
