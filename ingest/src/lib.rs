//! orstream-ingest turns video sources into timestamped JPEG frames on the bus.
//!
//! Each stream is one GStreamer pipeline: a source (RTSP camera, file, V4L2 device or
//! `videotestsrc`), decoding where needed, an optional frame-rate cap, scaling to the configured
//! size (letterboxed, aspect kept) and JPEG encoding, ending in an `appsink`. Frames leave the
//! streaming thread through a bounded queue; a thread per stream publishes them as v1 `Frame`s
//! keyed by stream_id, and reports the stream's life (started, discontinuity, dropped frames,
//! errors, ended) as `StreamEvent`s.
//!
//! Guarantees, per stream:
//! - identity: `session_epoch` bumps on every (re)connect; `seq` starts at 0 in each epoch and
//!   is gap-free on the topic (a frame gets its seq only once the bus has taken it; a failed
//!   delivery ends the epoch);
//! - time: `capture_time_ns` is the camera's NTP time from RTCP sender reports when an RTSP
//!   camera sends them, else the host's realtime clock mapped from the pipeline running time;
//!   the frame's `clock_source` says which; capture times increase within an epoch;
//! - live mode never blocks the source: when the bus backs up the oldest queued frames are
//!   dropped, and every drop is counted in a `FramesDropped` event; archive mode keeps every
//!   frame and slows the source instead;
//! - a watchdog tears down a stream that yields no frame for `stall_timeout` (cameras stall
//!   without closing the connection); failed RTSP and V4L2 streams are rebuilt with capped
//!   exponential backoff under a new epoch, with one `StreamDiscontinuity` per interruption;
//! - bad input (an unreachable camera, a missing or corrupt file, no video, caps that cannot be
//!   negotiated, a frame larger than the bus's message size) gives a `StreamError` naming the
//!   stream and the cause, and the other streams go on;
//! - events and logs never carry the source location (RTSP URLs may hold credentials).
//!
//! Telemetry: a `frame capture` span per frame whose W3C trace context goes into the frame's
//! headers, so the frame's trace continues downstream; counts of frames captured, published
//! and dropped (by reason), JPEG encode time, streams per state and rebuilds, through the
//! global OpenTelemetry meter. Spans and metrics carry the source kind, never the stream's
//! location, case id or frame bytes.
//!
//! Modules, in the order data flows through them:
//! - [`config`]: [`IngestConfig`] and [`StreamConfig`] (serde, validated, every problem at once).
//! - `element` (private): elements by factory name, a missing plugin named in the error.
//! - `source` (private): the source elements for each kind and their dynamic linking.
//! - [`pipeline`]: [`FramePipeline`], one stream's pipeline yielding [`EncodedFrame`]s through a
//!   [`FrameReceiver`], counting every frame ([`FrameCounts`]).
//! - [`queue`]: the bounded drop-oldest / blocking queue behind [`FrameReceiver`].
//! - `stream` (private): a stream's sessions, epochs, watchdog, backoff and events, and what
//!   happened to it over the run ([`StreamStats`]).
//! - [`gate`]: the privacy gate: an in-body / out-of-body classifier on a small copy of each
//!   frame, a delay line for the margin before an out-of-body stretch; withheld frames are
//!   published as markers (`Frame.redaction`) without their image; fails closed.
//! - `publish` (private): frames and events onto the bus, deliveries checked in order.
//! - `service`: [`Ingest`], all streams on one producer; [`Stats`]; health reports
//!   ([`Ingest::with_health`]).
//! - `metrics` (private): the stream's instruments from [`orstream_bus::metrics`].
//! - [`site`]: [`Site`], operating rooms with their cameras and at most one open case each,
//!   a model without I/O whose operations give the room's `CaseStarted` / `CaseEnded` events.
//! - [`control`]: [`Controller`], the site at run time over the running cameras: cases
//!   started and ended, cameras added (once they give a frame) and removed.
//! - [`admin`]: the admin API over the controller (HTTP + JSON, bearer tokens, audit log).
//! - `durable` (private): the rooms' state on the compacted site topic (owner, cameras, the
//!   open case and where each camera's part stands), read at start to come back with it.
//! - [`error`]: [`IngestError`], naming the stream and the element or key at fault.
//!
//! In: an [`IngestConfig`] and an [`orstream_bus::Bus`]. Out: `Frame`s on `frames_topic`
//! (default `or.frames.v1`) and `StreamEvent`s on `events_topic` (default `or.streams.v1`).
//!
//! ```no_run
//! use orstream_bus::Bus;
//! use orstream_ingest::{Ingest, IngestConfig, StreamConfig, TestSourceConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! # fn main() -> Result<(), orstream_ingest::IngestError> {
//! let config = IngestConfig {
//!     streams: vec![StreamConfig::test("or1-tower", TestSourceConfig::default())],
//!     ..IngestConfig::default()
//! };
//! let shutdown = CancellationToken::new();
//! let ingest = Ingest::new(config, Bus::memory())?;
//! // Cancel `shutdown` (e.g. on SIGTERM) to stop: sources end, frames drain, producer flushes.
//! let stats = ingest.run(shutdown)?;
//! println!("{} frames published", stats.published());
//! # Ok(())
//! # }
//! ```
//!
//! [`FramePipeline`] can also be used on its own, without a bus:
//!
//! ```no_run
//! use std::time::Duration;
//! use orstream_ingest::{FramePipeline, StreamConfig, TestSourceConfig};
//!
//! # fn main() -> Result<(), orstream_ingest::IngestError> {
//! let config = StreamConfig::test(
//!     "or1-tower",
//!     TestSourceConfig { num_buffers: Some(30), is_live: false },
//! );
//! let (pipeline, frames) = FramePipeline::build(&config)?;
//! pipeline.start()?;
//! // The receiver ends once the stream has ended or failed.
//! for frame in &frames {
//!     println!("{} bytes at {} ns", frame.jpeg.len(), frame.pts_ns);
//! }
//! // End of stream, or the element error that stopped it.
//! pipeline.wait_for_eos(Duration::from_secs(10))?;
//! # Ok(())
//! # }
//! ```

pub mod admin;
pub mod config;
pub mod control;
mod durable;
mod element;
pub mod error;
pub mod gate;
mod metrics;
pub mod pipeline;
mod publish;
pub mod queue;
mod service;
pub mod site;
mod source;
mod stream;

pub use config::{
    AdminConfig, FileSourceConfig, FullPolicy, IngestConfig, OutputConfig, RoomConfig,
    RtspProtocols, RtspSourceConfig, ServiceConfig, SourceConfig, StreamConfig, TestSourceConfig,
    V4l2SourceConfig,
};
pub use control::{ControlError, Controller};
pub use error::IngestError;
pub use pipeline::{EncodedFrame, FrameCounts, FramePipeline, init};
pub use queue::FrameReceiver;
pub use service::{Ingest, Stats};
pub use site::{Site, SiteError};
pub use stream::{CAMERA_ENDED, CameraView, CasePart, StreamStats};
