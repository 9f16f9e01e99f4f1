//! Configuration: the service ([`IngestConfig`]: topics, message size, the streams) and each
//! stream ([`StreamConfig`]: source, output frames, mode, watchdog and reconnect timing).
//!
//! Every struct denies unknown keys, documents each field and has its defaults next to it;
//! durations are strings such as `"500ms"` or `"5s"`. [`IngestConfig::validate`] checks the rules
//! that cross fields and reports every problem at once, each naming its key (for streams:
//! `streams[2].output.width`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use orstream_shell::config::{ConfigError, Layers};
use serde::{Deserialize, Serialize};

use crate::error::IngestError;

/// The `<SERVICE>` of ingest's `ORSTREAM_INGEST_<KEY>` variables.
pub const SERVICE: &str = "ingest";

/// Default width of the JPEG frames, in pixels.
pub const DEFAULT_WIDTH: u32 = 640;
/// Default height of the JPEG frames, in pixels.
pub const DEFAULT_HEIGHT: u32 = 480;
/// Default JPEG quality (libjpeg scale, 0..=100); 85 is `jpegenc`'s own default.
pub const DEFAULT_JPEG_QUALITY: u8 = 85;
/// Default number of frames held between the GStreamer streaming thread and the publisher.
pub const DEFAULT_FRAME_QUEUE: usize = 8;
/// Largest frame side the v1 contract accepts (`orstream_proto::wire::MAX_FRAME_SIDE`).
pub const MAX_SIDE: u32 = orstream_proto::wire::MAX_FRAME_SIDE;
/// Default largest bus message, matching the bus's default `message_max_bytes`.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// The ingest service: where frames and events go, and the streams to ingest.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    /// Topic the frames are published to, keyed by stream_id.
    #[serde(default = "default_frames_topic")]
    pub frames_topic: String,
    /// Topic the stream lifecycle events are published to, keyed by stream_id.
    #[serde(default = "default_events_topic")]
    pub events_topic: String,
    /// Create both topics at start when they do not exist (an existing topic is left as it is).
    #[serde(default = "default_true")]
    pub create_topics: bool,
    /// Partitions of topics this service creates. Streams spread over partitions by key, so this
    /// bounds how many inference workers can share the frames.
    #[serde(default = "default_topic_partitions")]
    pub topic_partitions: u32,
    /// How long the frames topic this service creates keeps its frames (Kafka's
    /// `retention.ms`): an hour by default. Frames are raw video of the operating room and
    /// worth nothing once inferred; an inference outage longer than this loses the frames of
    /// its start. Set at creation only: an existing topic keeps its own retention. The events
    /// topic keeps its events a week.
    #[serde(default = "default_frames_retention", with = "humantime_serde")]
    pub frames_retention: Duration,
    /// Largest message the bus accepts, in bytes (Kafka's `message.max.bytes`). A frame whose
    /// message would be larger is dropped, counted and reported as a stream error instead of
    /// being refused by the broker.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// How often dropped-frame counts are published as `FramesDropped` events (only when frames
    /// were dropped since the last report).
    #[serde(default = "default_drop_report_interval", with = "humantime_serde")]
    pub drop_report_interval: Duration,
    /// At shutdown, how long a stream may take to drain the frames inside its pipeline before it
    /// is stopped hard.
    #[serde(default = "default_drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// At shutdown, how long to wait for the bus to acknowledge every queued message.
    #[serde(default = "default_flush_timeout", with = "humantime_serde")]
    pub flush_timeout: Duration,
    /// The streams; stream ids must be unique.
    #[serde(default)]
    pub streams: Vec<StreamConfig>,
    /// Operating rooms: their cameras run all day but publish only inside the room's open
    /// case, which the admin API starts and ends; cameras are added and removed there too.
    #[serde(default)]
    pub rooms: Vec<RoomConfig>,
    /// The admin API: cases and cameras at run time.
    #[serde(default)]
    pub admin: AdminConfig,
    /// This ingest process's name, unique among the site's ingest processes (1 to 64 of
    /// `A-Z a-z 0-9 _ -`): the owner of its rooms. Needed with rooms.
    #[serde(default)]
    pub instance: Option<String>,
    /// The compacted topic holding each room's state (owner, cameras added and removed at run
    /// time, the open case), keyed by room, so a restarted ingest comes back with it.
    #[serde(default = "default_site_topic")]
    pub site_topic: String,
    /// The privacy gate (see the `gate` module): when set, every stream whose `gate` is not
    /// turned off publishes frames filmed out of the body as markers without their image.
    /// Configured and unable to judge (model missing or failing), it withholds every frame.
    #[serde(default)]
    pub gate: Option<GateConfig>,
}

/// The privacy gate: an in-body / out-of-body classifier and its margins.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateConfig {
    /// The TorchScript classifier (`[B, 3, H, W]` -> logits `[B, C]`).
    pub model: PathBuf,
    /// Its card; by default the model's path with `.toml`.
    #[serde(default)]
    pub card: Option<PathBuf>,
    /// Frames withheld before each out-of-body frame. Every frame waits for this many later
    /// frames to be judged before it is published: the latency cost is this many frame
    /// intervals (6 at 12 fps: 500 ms; 0: no delay, and no margin before). Six, because a
    /// classifier calls the first frames inside the trocar late (the demo's by two frames):
    /// the margin must cover that lag and still reach before the withdrawal.
    #[serde(default = "default_margin_before")]
    pub margin_before: usize,
    /// Frames withheld after each out-of-body frame.
    #[serde(default = "default_margin_after")]
    pub margin_after: usize,
    /// Overrides the card's threshold (probability of out of body at or above which a frame
    /// is withheld); lower is more private.
    #[serde(default)]
    pub threshold: Option<f32>,
}

/// Most frames a margin may hold (a minute at 30 fps).
pub const MAX_GATE_MARGIN: usize = 1800;

fn default_margin_before() -> usize {
    6
}
fn default_margin_after() -> usize {
    8
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::from("models/demo/gate.pt"),
            card: None,
            margin_before: default_margin_before(),
            margin_after: default_margin_after(),
            threshold: None,
        }
    }
}

impl GateConfig {
    /// The card's path: `card`, or the model's path with `.toml`.
    pub fn card_path(&self) -> PathBuf {
        self.card
            .clone()
            .unwrap_or_else(|| self.model.with_extension("toml"))
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, margin) in [
            ("gate.margin_before", self.margin_before),
            ("gate.margin_after", self.margin_after),
        ] {
            if margin > MAX_GATE_MARGIN {
                problems.push(format!(
                    "{key}: {margin} frames, more than {MAX_GATE_MARGIN}"
                ));
            }
        }
        if let Some(t) = self.threshold
            && !(t.is_finite() && t > 0.0 && t <= 1.0)
        {
            problems.push(format!("gate.threshold: {t} is outside (0, 1]"));
        }
        problems
    }
}

/// The default [`IngestConfig::site_topic`].
pub const SITE_TOPIC: &str = "or.ingest.site.v1";

fn default_site_topic() -> String {
    SITE_TOPIC.to_owned()
}

/// An operating room and the cameras it starts with.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomConfig {
    /// The room's name: 1 to 64 of `A-Z a-z 0-9 _ -`.
    pub name: String,
    /// Its cameras, each a stream whose `name` (1 to 64 of `A-Z a-z 0-9 _ -`) makes its
    /// stream id `<room>/<name>`; no `case_id` (the room's case gives it).
    #[serde(default)]
    pub cameras: Vec<StreamConfig>,
}

impl RoomConfig {
    /// The room's cameras as streams, with their stream ids.
    pub fn streams(&self) -> impl Iterator<Item = StreamConfig> + '_ {
        self.cameras.iter().map(|camera| StreamConfig {
            stream_id: crate::site::stream_id(&self.name, &camera.stream_id),
            ..camera.clone()
        })
    }
}

/// The admin API on ingest: HTTP + JSON, every request authenticated by a bearer token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address to serve it on (e.g. `127.0.0.1:9465`); absent: no admin API.
    pub listen: Option<std::net::SocketAddr>,
    /// The tokens' file: one `NAME TOKEN` per line (the name is who the audit log names), or a
    /// single token alone (named `admin`); `#` starts a comment. Read at start.
    pub token_file: Option<PathBuf>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            frames_topic: default_frames_topic(),
            events_topic: default_events_topic(),
            create_topics: true,
            topic_partitions: default_topic_partitions(),
            frames_retention: default_frames_retention(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            drop_report_interval: default_drop_report_interval(),
            drain_timeout: default_drain_timeout(),
            flush_timeout: default_flush_timeout(),
            streams: Vec::new(),
            rooms: Vec::new(),
            admin: AdminConfig::default(),
            instance: None,
            site_topic: default_site_topic(),
            gate: None,
        }
    }
}

fn default_frames_topic() -> String {
    orstream_proto::topics::FRAMES.to_owned()
}
fn default_events_topic() -> String {
    orstream_proto::topics::STREAMS.to_owned()
}
fn default_true() -> bool {
    true
}
fn default_frames_retention() -> Duration {
    orstream_proto::topics::FRAMES_RETENTION
}
fn default_topic_partitions() -> u32 {
    6
}
fn default_max_message_bytes() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}
fn default_drop_report_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_drain_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_flush_timeout() -> Duration {
    Duration::from_secs(30)
}

/// One stream: a source, the frames it yields, how it behaves when the bus backs up, and how
/// failures are detected and retried.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Stable identifier of the stream (a camera, a file): the Kafka key of its frames and
    /// events, and named in every error and log line about it. Opaque, never patient data; at
    /// most 128 bytes, no control characters. A room's camera gives its `name` here instead.
    #[serde(alias = "name")]
    pub stream_id: String,
    /// The case the stream belongs to, copied into every frame and event. Opaque, never patient
    /// data; may be empty.
    #[serde(default)]
    pub case_id: String,
    /// Where the video comes from.
    pub source: SourceConfig,
    /// Size, rate and quality of the JPEG frames.
    #[serde(default)]
    pub output: OutputConfig,
    /// `live` (default): never stall the source; when the bus backs up the oldest queued frames
    /// are dropped and counted. `archive`: every frame, the source waits for the bus.
    #[serde(default, rename = "mode")]
    pub full_policy: FullPolicy,
    /// Frames held between the GStreamer streaming thread and the publisher.
    #[serde(default = "default_frame_queue")]
    pub frame_queue: usize,
    /// The watchdog: a running stream that yields no frame for this long is torn down and
    /// rebuilt (cameras often stall without closing the connection).
    #[serde(default = "default_stall_timeout", with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// How long a (re)connected source may take to yield its first frame.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// First wait before rebuilding a failed stream; doubles after each failure that yielded no
    /// frame.
    #[serde(default = "default_backoff_initial", with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// Longest wait between rebuilds.
    #[serde(default = "default_backoff_max", with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Whether the privacy gate (`[gate]`, when configured) judges this stream's frames. On by
    /// default; turn it off only for a camera meant to film the room.
    #[serde(default = "default_true")]
    pub gate: bool,
}

/// What happens to a frame when the queue between GStreamer and the publisher is full; the
/// stream's `mode` in configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum FullPolicy {
    /// Live (`mode = "live"`): the oldest queued frame is dropped and counted, so the source
    /// is never stalled and what gets published is as fresh as possible.
    #[default]
    #[serde(rename = "live")]
    DropOldest,
    /// Archive (`mode = "archive"`): the streaming thread waits for room, so the source slows
    /// to the bus's pace and no frame is lost.
    #[serde(rename = "archive")]
    Block,
}

fn default_frame_queue() -> usize {
    DEFAULT_FRAME_QUEUE
}
fn default_stall_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_backoff_initial() -> Duration {
    Duration::from_millis(500)
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(30)
}

/// The kinds of video source; the `kind` key selects one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceConfig {
    /// An RTSP camera (`rtspsrc`), decoded by whatever decoder is installed for its codec.
    Rtsp(RtspSourceConfig),
    /// A file that `decodebin` plays: MP4, MKV, raw H.264/H.265, MJPEG, ...
    File(FileSourceConfig),
    /// A V4L2 capture device (`v4l2src`): raw or MJPEG.
    V4l2(V4l2SourceConfig),
    /// GStreamer's `videotestsrc`: synthetic frames, for tests, demos and benchmarks.
    Test(TestSourceConfig),
}

impl SourceConfig {
    /// The kind's name as configured and as reported in `StreamStarted.source_kind`; never the
    /// location (it may hold credentials).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Rtsp(_) => "rtsp",
            Self::File(_) => "file",
            Self::V4l2(_) => "v4l2",
            Self::Test(_) => "test",
        }
    }

    /// Whether a failed source is rebuilt (cameras come back) or ends the stream (a file that
    /// is missing or corrupt stays so; a test source is deterministic).
    pub fn retries(&self) -> bool {
        matches!(self, Self::Rtsp(_) | Self::V4l2(_))
    }

    /// The text that must never appear in events or logs: the RTSP URL (credentials) or the
    /// file path (file names of recordings may name people).
    pub(crate) fn secret(&self) -> Option<String> {
        match self {
            Self::Rtsp(rtsp) => Some(rtsp.location.clone()),
            Self::File(file) => Some(file.path.to_string_lossy().into_owned()),
            Self::V4l2(_) | Self::Test(_) => None,
        }
    }

    /// Parses the `URI` of `--stream ID=URI`: `rtsp://...` or `rtsps://...` (TCP, default
    /// latency), `file:PATH` or a plain path, `v4l2:DEVICE`, `test:` (a live test pattern).
    pub fn from_uri(uri: &str) -> Result<Self, String> {
        let uri = uri.trim();
        if uri.starts_with("rtsp://") || uri.starts_with("rtsps://") {
            return Ok(Self::Rtsp(RtspSourceConfig {
                location: uri.to_owned(),
                ..RtspSourceConfig::default()
            }));
        }
        if let Some(rest) = uri.strip_prefix("v4l2:") {
            let device = rest.trim_start_matches("//");
            return Ok(Self::V4l2(V4l2SourceConfig {
                device: if device.is_empty() {
                    V4l2SourceConfig::default().device
                } else {
                    PathBuf::from(device)
                },
            }));
        }
        if uri == "test:" || uri == "test://" {
            return Ok(Self::Test(TestSourceConfig::default()));
        }
        let path = match uri.strip_prefix("file://") {
            Some(rest) => rest,
            None => uri.strip_prefix("file:").unwrap_or(uri),
        };
        if path.is_empty() {
            return Err("empty source".to_owned());
        }
        if path.contains("://") {
            let scheme = path.split("://").next().unwrap_or_default();
            return Err(format!(
                "unsupported scheme `{scheme}` (use rtsp://, rtsps://, file:, v4l2: or test:)"
            ));
        }
        Ok(Self::File(FileSourceConfig {
            path: PathBuf::from(path),
            ..FileSourceConfig::default()
        }))
    }
}

/// Which transports `rtspsrc` may use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RtspProtocols {
    /// RTP interleaved in the RTSP TCP connection: works through NAT and firewalls, no packet
    /// loss; the usual choice for OR cameras.
    #[default]
    Tcp,
    /// RTP over UDP: lower latency on a clean network, lost packets show up as damaged frames.
    Udp,
}

/// Settings of an RTSP source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RtspSourceConfig {
    /// `rtsp://[user:password@]host[:port]/path`. Never logged or published.
    pub location: String,
    /// Transport: `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocols: RtspProtocols,
    /// Jitter buffer latency: how long packets are held to be reordered.
    #[serde(default = "default_rtsp_latency", with = "humantime_serde")]
    pub latency: Duration,
    /// The camera's user, given apart from the location (rtspsrc `user-id`).
    #[serde(default)]
    pub user: Option<String>,
    /// A file holding the camera's password (its final line end dropped), read at each
    /// connection, so the password is in no configuration, variable or command line and a
    /// rotated one is taken at the next reconnect (rtspsrc `user-pw`).
    #[serde(default)]
    pub password_file: Option<std::path::PathBuf>,
}

impl RtspSourceConfig {
    /// The password of `password_file`, if one is given (the configuration's `_FILE` rule):
    /// at most [`MAX_CREDENTIAL_LEN`] bytes, without control characters.
    pub(crate) fn password(&self) -> Result<Option<String>, String> {
        let Some(path) = self.password_file.as_deref() else {
            return Ok(None);
        };
        let password = orstream_shell::config::read_secret(path).map_err(|e| e.to_string())?;
        credential_problem(&password).map_or(Ok(Some(password)), |problem| {
            Err(format!("{}: the password {problem}", path.display()))
        })
    }
}

/// The longest camera user or password taken.
pub const MAX_CREDENTIAL_LEN: usize = 1024;

/// What is wrong with a camera user or password, if anything: empty, too long, or holding a
/// control character (GStreamer takes it as a C string).
fn credential_problem(value: &str) -> Option<String> {
    if value.is_empty() {
        Some("is empty".to_owned())
    } else if value.len() > MAX_CREDENTIAL_LEN {
        Some(format!("is longer than {MAX_CREDENTIAL_LEN} bytes"))
    } else if value.chars().any(char::is_control) {
        Some("holds a control character".to_owned())
    } else {
        None
    }
}

fn default_rtsp_latency() -> Duration {
    Duration::from_millis(200)
}

impl Default for RtspSourceConfig {
    fn default() -> Self {
        Self {
            location: String::new(),
            protocols: RtspProtocols::default(),
            latency: default_rtsp_latency(),
            user: None,
            password_file: None,
        }
    }
}

/// Settings of a file source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Path of the file. Never published (file names of recordings may name people).
    pub path: PathBuf,
    /// Play the file again from the start when it ends, seamlessly: one session epoch, seq and
    /// capture times keep increasing.
    #[serde(default, rename = "loop")]
    pub looping: bool,
    /// Pace frames at the file's own rate, as a camera would deliver them; otherwise as fast as
    /// the machine (or, in archive mode, the bus) allows.
    #[serde(default)]
    pub realtime: bool,
}

impl Default for FileSourceConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::new(),
            looping: false,
            realtime: false,
        }
    }
}

/// Settings of a V4L2 source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct V4l2SourceConfig {
    /// The capture device.
    #[serde(default = "default_v4l2_device")]
    pub device: PathBuf,
}

fn default_v4l2_device() -> PathBuf {
    PathBuf::from("/dev/video0")
}

impl Default for V4l2SourceConfig {
    fn default() -> Self {
        Self {
            device: default_v4l2_device(),
        }
    }
}

/// Settings of the `videotestsrc` source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestSourceConfig {
    /// Frames to produce before end of stream; absent means run until stopped.
    pub num_buffers: Option<u32>,
    /// Produce frames at the pace of the pipeline clock, like a camera (true), or as fast as the
    /// pipeline accepts them, like a recorded file (false).
    pub is_live: bool,
}

impl Default for TestSourceConfig {
    fn default() -> Self {
        Self {
            num_buffers: None,
            is_live: true,
        }
    }
}

/// The JPEG frames a stream yields.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Frame width in pixels. The picture is scaled to fit inside `width` x `height` keeping
    /// its display aspect ratio; the rest is filled with black bars (letterbox), so every frame
    /// of a stream has exactly this size and square pixels.
    pub width: u32,
    /// Frame height in pixels (see `width`).
    pub height: u32,
    /// JPEG quality, 0..=100.
    pub jpeg_quality: u8,
    /// Cap on frames per second, by dropping frames before they are scaled and encoded, evenly
    /// spaced by timestamp (30 -> 10 keeps every third). Absent: the source's own rate.
    pub max_fps: Option<u32>,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            width: DEFAULT_WIDTH,
            height: DEFAULT_HEIGHT,
            jpeg_quality: DEFAULT_JPEG_QUALITY,
            max_fps: None,
        }
    }
}

impl StreamConfig {
    /// A stream from `source` with default settings.
    pub fn new(stream_id: impl Into<String>, source: SourceConfig) -> Self {
        Self {
            stream_id: stream_id.into(),
            case_id: String::new(),
            source,
            output: OutputConfig::default(),
            full_policy: FullPolicy::default(),
            frame_queue: DEFAULT_FRAME_QUEUE,
            stall_timeout: default_stall_timeout(),
            connect_timeout: default_connect_timeout(),
            backoff_initial: default_backoff_initial(),
            backoff_max: default_backoff_max(),
            gate: true,
        }
    }

    /// A stream from `videotestsrc` with default settings.
    pub fn test(stream_id: impl Into<String>, source: TestSourceConfig) -> Self {
        Self::new(stream_id, SourceConfig::Test(source))
    }

    /// Checks this stream alone and reports every problem at once, each naming its key.
    pub fn validate(&self) -> Result<(), IngestError> {
        let problems = self.problems("");
        if problems.is_empty() {
            Ok(())
        } else {
            Err(IngestError::InvalidConfig {
                stream_id: self.stream_id.clone(),
                problems,
            })
        }
    }

    /// The problems of a room's camera, whose `stream_id` holds its name: the name's rules,
    /// no `case_id` (the room's case gives it), and the stream's other rules; each key prefixed
    /// with `prefix`. The same for a camera configured, added over the admin API or read back
    /// from the site topic.
    pub(crate) fn camera_problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = crate::site::check_name("camera", &self.stream_id) {
            problems.push(format!("{prefix}name: {e}"));
        }
        if !self.case_id.is_empty() {
            problems.push(format!(
                "{prefix}case_id: a room's camera takes the room's case; remove it"
            ));
        }
        let id_key = format!("{prefix}stream_id");
        problems.extend(
            self.problems(prefix)
                .into_iter()
                .filter(|p| !p.starts_with(&id_key)),
        );
        problems
    }

    /// The problems of this stream, each key prefixed with `prefix` (e.g. `streams[1].`).
    fn problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, what: String| problems.push(format!("{prefix}{key}: {what}"));
        if let Err(why) = check_id(&self.stream_id, true) {
            problem("stream_id", why);
        }
        if let Err(why) = check_id(&self.case_id, false) {
            problem("case_id", why);
        }
        for (key, value) in [
            ("output.width", self.output.width),
            ("output.height", self.output.height),
        ] {
            if !(1..=MAX_SIDE).contains(&value) {
                problem(
                    key,
                    format!("must be between 1 and {MAX_SIDE}, got {value}"),
                );
            }
        }
        if self.output.jpeg_quality > 100 {
            problem(
                "output.jpeg_quality",
                format!(
                    "must be between 0 and 100, got {}",
                    self.output.jpeg_quality
                ),
            );
        }
        if let Some(fps) = self.output.max_fps {
            if !(1..=1000).contains(&fps) {
                problem(
                    "output.max_fps",
                    format!("must be between 1 and 1000, got {fps}"),
                );
            } else if self.stall_timeout < Duration::from_secs(2) / fps {
                // Two frame intervals: a capped stream must not look stalled between frames.
                problem(
                    "stall_timeout",
                    format!(
                        "{:?} is shorter than two frame intervals at output.max_fps = {fps}",
                        self.stall_timeout
                    ),
                );
            }
        }
        if self.frame_queue == 0 {
            problem("frame_queue", "must be at least 1".to_owned());
        }
        for (key, value) in [
            ("stall_timeout", self.stall_timeout),
            ("connect_timeout", self.connect_timeout),
            ("backoff_initial", self.backoff_initial),
            ("backoff_max", self.backoff_max),
        ] {
            if value.is_zero() {
                problem(key, "must be longer than zero".to_owned());
            }
        }
        if self.backoff_initial > self.backoff_max {
            problem(
                "backoff_initial",
                format!(
                    "{:?} exceeds backoff_max ({:?})",
                    self.backoff_initial, self.backoff_max
                ),
            );
        }
        match &self.source {
            SourceConfig::Rtsp(rtsp) => {
                if !(rtsp.location.starts_with("rtsp://") || rtsp.location.starts_with("rtsps://"))
                {
                    // The location itself is not repeated: it may hold credentials.
                    problem(
                        "source.location",
                        "must start with rtsp:// or rtsps://".to_owned(),
                    );
                }
                if rtsp.latency.as_millis() > u128::from(u32::MAX) {
                    problem("source.latency", "is too long".to_owned());
                }
                if rtsp.password_file.is_some() && rtsp.user.is_none() {
                    problem("source.password_file", "set without source.user".to_owned());
                }
                if let Err(e) = rtsp.password() {
                    problem("source.password_file", e);
                }
                if let Some(user_problem) = rtsp.user.as_deref().and_then(credential_problem) {
                    problem("source.user", user_problem);
                }
            }
            SourceConfig::File(file) => {
                if file.path.as_os_str().is_empty() {
                    problem("source.path", "must not be empty".to_owned());
                }
            }
            SourceConfig::V4l2(v4l2) => {
                if v4l2.device.as_os_str().is_empty() {
                    problem("source.device", "must not be empty".to_owned());
                }
            }
            SourceConfig::Test(test) => {
                if test.num_buffers.is_some_and(|n| i32::try_from(n).is_err()) {
                    problem(
                        "source.num_buffers",
                        format!("must be at most {}", i32::MAX),
                    );
                }
            }
        }
        problems
    }
}

/// The contract's rule for ids (`orstream_proto::wire`): bounded, free of control characters.
fn check_id(value: &str, required: bool) -> Result<(), String> {
    if value.is_empty() {
        return if required {
            Err("must not be empty".to_owned())
        } else {
            Ok(())
        };
    }
    if value.trim().is_empty() {
        return Err("must not be blank".to_owned());
    }
    if value.len() > orstream_proto::wire::MAX_ID_LEN {
        return Err(format!(
            "{} bytes, longer than {}",
            value.len(),
            orstream_proto::wire::MAX_ID_LEN
        ));
    }
    if value.chars().any(char::is_control) {
        return Err("contains control characters".to_owned());
    }
    Ok(())
}

/// Bytes a frame message may take beyond its payload: key, headers and Kafka's record
/// overhead. Generous, so a frame accepted here is never refused by the broker.
pub(crate) const MESSAGE_OVERHEAD: usize = 1024;

impl IngestConfig {
    /// The rooms' and the admin API's problems.
    fn room_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, room) in self.rooms.iter().enumerate() {
            if let Err(e) = crate::site::check_name("room", &room.name) {
                problems.push(format!("rooms[{i}].name: {e}"));
            }
            if self.rooms[..i].iter().any(|other| other.name == room.name) {
                problems.push(format!(
                    "rooms[{i}].name: `{}` is used by an earlier room",
                    room.name
                ));
            }
            if room.cameras.len() > orstream_proto::wire::MAX_CASE_CAMERAS {
                problems.push(format!(
                    "rooms[{i}].cameras: more than {} cameras",
                    orstream_proto::wire::MAX_CASE_CAMERAS
                ));
            }
            for (j, camera) in room.cameras.iter().enumerate() {
                let prefix = format!("rooms[{i}].cameras[{j}].");
                problems.extend(camera.camera_problems(&prefix));
                if room.cameras[..j]
                    .iter()
                    .any(|other| other.stream_id == camera.stream_id)
                {
                    problems.push(format!(
                        "{prefix}name: `{}` is used by an earlier camera of the room",
                        camera.stream_id
                    ));
                }
            }
            for stream in room.streams() {
                if self.streams.iter().any(|s| s.stream_id == stream.stream_id) {
                    problems.push(format!(
                        "rooms[{i}]: camera stream id `{}` is also a stream's id",
                        stream.stream_id
                    ));
                }
            }
        }
        if !self.rooms.is_empty() {
            match &self.instance {
                None => problems.push(
                    "instance: rooms need this ingest's name, the owner of its rooms".to_owned(),
                ),
                Some(instance) => {
                    if let Err(e) = crate::site::check_name("instance", instance) {
                        problems.push(format!("instance: {e}"));
                    }
                }
            }
            if let Err(err) = orstream_bus::validate_topic_name(&self.site_topic) {
                problems.push(format!("site_topic: {err}"));
            }
            if self.site_topic == self.frames_topic || self.site_topic == self.events_topic {
                problems
                    .push("site_topic: must differ from the frames and events topics".to_owned());
            }
        }
        if !self.rooms.is_empty() && self.admin.listen.is_none() {
            problems.push(
                "admin.listen: rooms need the admin API, which starts and ends their cases"
                    .to_owned(),
            );
        }
        if self.admin.listen.is_some() && self.admin.token_file.is_none() {
            problems.push(
                "admin.token_file: the admin API needs its tokens' file (no API without them)"
                    .to_owned(),
            );
        }
        problems
    }

    /// Checks every stream and the service settings, and reports every problem at once, each
    /// naming its key.
    pub fn validate(&self) -> Result<(), IngestError> {
        let mut problems = Vec::new();
        for (key, topic) in [
            ("frames_topic", &self.frames_topic),
            ("events_topic", &self.events_topic),
        ] {
            if let Err(err) = orstream_bus::validate_topic_name(topic) {
                problems.push(format!("{key}: {err}"));
            }
        }
        if self.frames_topic == self.events_topic {
            problems.push("events_topic: must differ from frames_topic".to_owned());
        }
        if self.topic_partitions == 0 {
            problems.push("topic_partitions: must be at least 1".to_owned());
        }
        if self.frames_retention < Duration::from_secs(60) {
            problems.push(format!(
                "frames_retention: {:?} is shorter than a minute; inference could not keep up",
                self.frames_retention
            ));
        }
        if self.max_message_bytes <= MESSAGE_OVERHEAD * 2 {
            problems.push(format!(
                "max_message_bytes: {} leaves no room for a frame (at least {} needed)",
                self.max_message_bytes,
                MESSAGE_OVERHEAD * 2 + 1
            ));
        }
        for (key, value) in [
            ("drop_report_interval", self.drop_report_interval),
            ("drain_timeout", self.drain_timeout),
            ("flush_timeout", self.flush_timeout),
        ] {
            if value.is_zero() {
                problems.push(format!("{key}: must be longer than zero"));
            }
        }
        if self.streams.is_empty() && self.rooms.is_empty() {
            problems.push("streams: at least one stream or room is needed".to_owned());
        }
        problems.extend(self.room_problems());
        if let Some(gate) = &self.gate {
            problems.extend(gate.problems());
        }
        for (i, stream) in self.streams.iter().enumerate() {
            problems.extend(stream.problems(&format!("streams[{i}].")));
            if self.streams[..i]
                .iter()
                .any(|other| other.stream_id == stream.stream_id)
            {
                problems.push(format!(
                    "streams[{i}].stream_id: `{}` is used by an earlier stream",
                    stream.stream_id
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(IngestError::InvalidConfig {
                stream_id: "*".to_owned(),
                problems,
            })
        }
    }
}

/// What `orstream ingest --config FILE` reads: the [`IngestConfig`] keys at the top level and an
/// optional `[kafka]` table ([`orstream_bus::KafkaConfig`]) for the bus the service publishes to.
/// The file's `[telemetry]` table belongs to the process that runs the service (the `orstream`
/// command reads and checks it) and is skipped here.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    /// The ingest settings and streams.
    pub ingest: IngestConfig,
    /// How to reach Kafka.
    pub kafka: orstream_bus::KafkaConfig,
}

impl ServiceConfig {
    /// Parses a configuration file's text (no variables applied). Unknown keys are errors, in
    /// both parts; the `[telemetry]` table is skipped.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let mut layers = Layers::from_sources(SERVICE, Some((Path::new("ingest.toml"), text)), [])?;
        layers.split("telemetry");
        Self::from_layers(layers)
    }

    /// Types the layers of a service's settings (file and variables, the `[telemetry]` table
    /// already set apart): the `[kafka]` table, then the rest. Unknown keys are errors, in both
    /// parts.
    pub fn from_layers(mut layers: Layers) -> Result<Self, ConfigError> {
        let kafka = layers.split("kafka").extract()?;
        let ingest = layers.extract()?;
        Ok(Self { ingest, kafka })
    }

    /// Checks both parts and that they agree, reporting every problem at once.
    pub fn validate(&self) -> Result<(), IngestError> {
        let mut problems = match self.ingest.validate() {
            Ok(()) => Vec::new(),
            Err(IngestError::InvalidConfig { problems, .. }) => problems,
            Err(other) => vec![other.to_string()],
        };
        if let Err(error) = self.kafka.validate() {
            problems.push(format!("kafka: {error}"));
        }
        let kafka_max = usize::try_from(self.kafka.message_max_bytes).unwrap_or(usize::MAX);
        if self.ingest.max_message_bytes > kafka_max {
            problems.push(format!(
                "max_message_bytes: {} exceeds kafka.message_max_bytes ({kafka_max}); the \
                 broker would refuse such frames",
                self.ingest.max_message_bytes
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(IngestError::InvalidConfig {
                stream_id: "*".to_owned(),
                problems,
            })
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::expect_used,
    reason = "a failed expectation is the test failing"
)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn parses_every_source_kind_from_toml() {
        let config: IngestConfig = toml::from_str(
            r#"
            max_message_bytes = 1000000
            drop_report_interval = "2s"

            [[streams]]
            stream_id = "or1-lap"
            case_id = "case-7"
            mode = "live"
            stall_timeout = "3s"
            source = { kind = "rtsp", location = "rtsp://cam/1", protocols = "udp", latency = "100ms" }
            output = { width = 1280, height = 720, max_fps = 10, jpeg_quality = 80 }

            [[streams]]
            stream_id = "replay"
            mode = "archive"
            source = { kind = "file", path = "case.mp4", loop = true, realtime = true }

            [[streams]]
            stream_id = "room"
            source = { kind = "v4l2", device = "/dev/video2" }

            [[streams]]
            stream_id = "bars"
            source = { kind = "test", is_live = false }
            "#,
        )
        .expect("valid config");
        config.validate().expect("valid");
        let [lap, replay, room, bars] = &config.streams[..] else {
            panic!("four streams expected");
        };
        assert_eq!(
            lap.source,
            SourceConfig::Rtsp(RtspSourceConfig {
                location: "rtsp://cam/1".into(),
                protocols: RtspProtocols::Udp,
                latency: Duration::from_millis(100),
                ..RtspSourceConfig::default()
            })
        );
        assert_eq!(lap.output.max_fps, Some(10));
        assert_eq!(lap.stall_timeout, Duration::from_secs(3));
        assert_eq!(lap.full_policy, FullPolicy::DropOldest);
        assert_eq!(replay.full_policy, FullPolicy::Block);
        assert!(matches!(&replay.source, SourceConfig::File(f) if f.looping && f.realtime));
        assert!(
            matches!(&room.source, SourceConfig::V4l2(v) if v.device == Path::new("/dev/video2"))
        );
        assert!(matches!(&bars.source, SourceConfig::Test(t) if !t.is_live));
        assert_eq!(config.drop_report_interval, Duration::from_secs(2));
        assert_eq!(config.frames_topic, "or.frames.v1");
    }

    #[test]
    fn a_service_file_splits_into_ingest_and_kafka() {
        let file = ServiceConfig::from_toml(
            r#"
            frames_topic = "or.frames.v1"
            [kafka]
            bootstrap_servers = "broker:9092"
            [[streams]]
            stream_id = "a"
            source = { kind = "test" }
            "#,
        )
        .expect("valid file");
        assert_eq!(file.kafka.bootstrap_servers, "broker:9092");
        assert_eq!(file.ingest.streams.len(), 1);
        file.validate().expect("valid");

        let err = ServiceConfig::from_toml("[kafka]\nbootstrap = \"x\"\n").expect_err("typo");
        assert!(
            err.to_string()
                .contains("kafka.bootstrap: unknown field `bootstrap`"),
            "{err}"
        );
        let mut big = file.clone();
        big.ingest.max_message_bytes = 64 << 20;
        let err = big
            .validate()
            .expect_err("larger than Kafka's limit")
            .to_string();
        assert!(err.contains("kafka.message_max_bytes"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<StreamConfig>(
            r#"
            stream_id = "s"
            [source]
            kind = "test"
            num_bufers = 3
            "#,
        )
        .expect_err("typo must be rejected");
        assert!(err.to_string().contains("num_bufers"), "{err}");
    }

    #[test]
    fn a_camera_password_comes_from_a_file_and_a_missing_one_is_named() {
        let dir = std::env::temp_dir().join(format!("orstream-cam-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cam-or3");
        std::fs::write(&file, "p@ss word\n").unwrap();
        let config: RtspSourceConfig = toml::from_str(&format!(
            "location = \"rtsp://cam-or3.lan/stream1\"\nuser = \"orcam\"\n\
             password_file = \"{}\"",
            file.display()
        ))
        .unwrap();
        assert_eq!(config.password().unwrap().as_deref(), Some("p@ss word"));
        let stream = StreamConfig::new("cam", SourceConfig::Rtsp(config.clone()));
        stream.validate().unwrap();

        let missing = RtspSourceConfig {
            password_file: Some(dir.join("absent")),
            user: None,
            ..config
        };
        let Err(IngestError::InvalidConfig { problems, .. }) =
            StreamConfig::new("cam", SourceConfig::Rtsp(missing)).validate()
        else {
            panic!("expected InvalidConfig");
        };
        let all = problems.join("\n");
        assert!(
            all.contains("source.password_file: set without source.user"),
            "{all}"
        );
        assert!(all.contains("absent: cannot read"), "{all}");

        std::fs::write(&file, "p\u{0}w\n").unwrap();
        let hostile = RtspSourceConfig {
            user: Some("or\ncam".into()),
            password_file: Some(file.clone()),
            ..RtspSourceConfig::default()
        };
        let Err(IngestError::InvalidConfig { problems, .. }) = StreamConfig::new(
            "cam",
            SourceConfig::Rtsp(RtspSourceConfig {
                location: "rtsp://cam-or3.lan/stream1".into(),
                ..hostile
            }),
        )
        .validate() else {
            panic!("expected InvalidConfig");
        };
        let all = problems.join("\n");
        assert!(
            all.contains("source.user: holds a control character"),
            "{all}"
        );
        assert!(
            all.contains("the password holds a control character"),
            "{all}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn validate_reports_every_problem_naming_the_key() {
        let mut bad = StreamConfig::new(
            "",
            SourceConfig::Rtsp(RtspSourceConfig {
                location: "http://user:secret@cam".into(),
                ..RtspSourceConfig::default()
            }),
        );
        bad.output.width = 0;
        bad.output.height = MAX_SIDE + 1;
        bad.output.jpeg_quality = 101;
        bad.frame_queue = 0;
        bad.backoff_initial = Duration::from_secs(60);
        let mut dup = StreamConfig::test("a", TestSourceConfig::default());
        dup.output.max_fps = Some(1);
        dup.stall_timeout = Duration::from_secs(1);
        let config = IngestConfig {
            topic_partitions: 0,
            frames_retention: Duration::from_secs(1),
            events_topic: "or.frames.v1".into(),
            streams: vec![bad, dup.clone(), dup],
            ..IngestConfig::default()
        };
        let Err(IngestError::InvalidConfig { problems, .. }) = config.validate() else {
            panic!("expected InvalidConfig");
        };
        let all = problems.join("\n");
        for key in [
            "topic_partitions",
            "frames_retention",
            "events_topic",
            "streams[0].stream_id",
            "streams[0].output.width",
            "streams[0].output.height",
            "streams[0].output.jpeg_quality",
            "streams[0].frame_queue",
            "streams[0].backoff_initial",
            "streams[0].source.location",
            "streams[1].stall_timeout",
            "streams[2].stream_id: `a` is used",
        ] {
            assert!(all.contains(key), "{key} missing from:\n{all}");
        }
        assert!(!all.contains("secret"), "the location leaked:\n{all}");
    }

    #[test]
    fn stream_uris_parse_to_sources() {
        assert!(matches!(
            SourceConfig::from_uri("rtsp://u:p@cam:554/s").expect("rtsp"),
            SourceConfig::Rtsp(r) if r.location == "rtsp://u:p@cam:554/s"
                && r.protocols == RtspProtocols::Tcp
        ));
        for uri in ["file:///data/a.mp4", "file:/data/a.mp4", "/data/a.mp4"] {
            assert!(
                matches!(SourceConfig::from_uri(uri).expect("file"),
                    SourceConfig::File(f) if f.path == Path::new("/data/a.mp4")),
                "{uri}"
            );
        }
        assert!(matches!(
            SourceConfig::from_uri("v4l2:/dev/video3").expect("v4l2"),
            SourceConfig::V4l2(v) if v.device == Path::new("/dev/video3")
        ));
        assert!(matches!(
            SourceConfig::from_uri("test:").expect("test"),
            SourceConfig::Test(_)
        ));
        let err = SourceConfig::from_uri("http://cam/x").expect_err("http is not a source");
        assert!(err.contains("http"), "{err}");
    }
}
