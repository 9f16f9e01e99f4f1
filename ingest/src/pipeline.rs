//! One stream's GStreamer pipeline and the frames it yields.
//!
//! ```text
//! source [! decodebin] ! (rate cap) videoscale ! videoconvert
//!        ! video/x-raw,width=W,height=H,pixel-aspect-ratio=1/1 ! jpegenc quality=Q ! appsink
//! ```
//!
//! The pipeline is assembled from elements rather than a `gst-launch` string so that a missing
//! plugin is reported as the factory it lacks, and the appsink is the typed object its callbacks
//! need. The rate cap is a buffer probe on videoscale's sink pad (`RateCap`), so dropped frames
//! are never scaled or encoded (`videorate drop-only` would do the same, but GStreamer 1.22's
//! aborts the process on buffers without duration, which RTSP sources deliver); scaling comes
//! before conversion so it runs on the decoder's (usually planar YUV) output, which `jpegenc`
//! takes as it is.
//!
//! Frames leave the streaming thread through a bounded [`FrameReceiver`]: in live mode the
//! appsink callback never blocks and the oldest queued frame makes room for the newest (counted
//! in [`FrameCounts`]); in archive mode the callback waits for room.
//!
//! The callback counts every sample in `orstream.ingest.frames.captured` before it does
//! anything else with it: a frame is captured before it can be queued, so before it can be
//! published, and a scrape never sees more frames published than captured.
//!
//! Each frame carries two clocks: the host's realtime clock mapped from the pipeline running
//! time (`host_time_ns`, always) and the camera's NTP time from RTCP sender reports
//! (`ntp_time_ns`, when the source is RTSP and a sender report has arrived).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use orstream_bus::metrics::{self, Counter, KeyValue, Meter, attr};

use crate::config::{SourceConfig, StreamConfig};
use crate::element::make_element;
use crate::error::{IngestError, redact};
use crate::queue::{self, FrameReceiver, Pushed, Sender};
use crate::source::add_source;

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
const NTP_UNIX_OFFSET_NS: i128 = 2_208_988_800 * 1_000_000_000;

/// Initialises GStreamer once per process; later calls return the first outcome.
///
/// [`FramePipeline::build`] calls it, so callers only need it to use GStreamer directly.
pub fn init() -> Result<(), IngestError> {
    static INIT: OnceLock<Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| gst::init().map_err(|e| e.to_string()))
        .clone()
        .map_err(IngestError::Init)
}

/// One encoded frame as it left the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedFrame {
    /// The JPEG image, from SOI (`FF D8`) to EOI (`FF D9`). Copied out of GStreamer's buffer so
    /// that a frame waiting in a queue holds no pipeline memory.
    pub jpeg: Bytes,
    /// Width in pixels, from the negotiated caps.
    pub width: u32,
    /// Height in pixels, from the negotiated caps.
    pub height: u32,
    /// Frames per second from the negotiated caps (the source's rate, before any rate cap); 0
    /// when unknown or variable.
    pub fps: f64,
    /// Presentation timestamp of the buffer, in nanoseconds of stream time as the source set it.
    pub pts_ns: u64,
    /// The PTS converted to pipeline running time (nanoseconds since the pipeline started
    /// playing, on the pipeline clock); the basis for mapping a frame to the host clock.
    pub running_time_ns: u64,
    /// The running time mapped to the host's realtime clock: nanoseconds since the Unix epoch
    /// (UTC) at which the pipeline clock showed this frame's running time.
    pub host_time_ns: i64,
    /// The camera's wall-clock time of the frame (nanoseconds since the Unix epoch, UTC), from
    /// the RTCP sender reports of an RTSP source; `None` before the first report or for other
    /// sources.
    pub ntp_time_ns: Option<i64>,
}

/// How many frames reached the appsink and what became of them; `total()` equals the number of
/// samples the appsink produced, so every frame is accounted for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameCounts {
    /// Frames handed to the receiver (taken or still queued).
    pub delivered: u64,
    /// Frames dropped because the queue was full: in live mode the oldest queued frame makes
    /// room for the newest.
    pub dropped_full: u64,
    /// Frames dropped because the receiver was gone or the stream had ended; the pipeline is
    /// then told to stop.
    pub dropped_closed: u64,
    /// Samples dropped because they lacked a buffer, caps, timestamp or readable memory.
    pub dropped_invalid: u64,
}

impl FrameCounts {
    /// All samples seen by the appsink, delivered or dropped.
    pub fn total(&self) -> u64 {
        self.delivered + self.dropped_full + self.dropped_closed + self.dropped_invalid
    }

    /// Every frame that will never be received.
    pub fn dropped(&self) -> u64 {
        self.dropped_full + self.dropped_closed + self.dropped_invalid
    }
}

/// State shared by the appsink callback (streaming thread), the bus handler and
/// [`FramePipeline`].
#[derive(Debug)]
struct Outlet {
    sender: Sender<EncodedFrame>,
    /// Samples queued, including those later pushed out by newer ones.
    queued: AtomicU64,
    dropped_full: AtomicU64,
    dropped_closed: AtomicU64,
    dropped_invalid: AtomicU64,
    /// When the appsink last produced a sample, as nanoseconds since `origin` (0: never).
    last_sample_ns: AtomicU64,
    /// `orstream.ingest.frames.captured`, added to as each sample arrives.
    captured: Counter<u64>,
    /// The captured counter's attributes: the source kind.
    attributes: [KeyValue; 1],
    origin: Instant,
    /// Host realtime minus pipeline clock time, measured once at the first sample, so all
    /// frames of the pipeline share one mapping (no jitter between frames).
    clock_offset_ns: OnceLock<i128>,
}

impl Outlet {
    fn new(sender: Sender<EncodedFrame>, meter: &Meter, source_kind: &'static str) -> Self {
        Self {
            sender,
            captured: metrics::INGEST_FRAMES_CAPTURED.build(meter),
            attributes: [KeyValue::new(attr::SOURCE_KIND, source_kind)],
            queued: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            dropped_closed: AtomicU64::new(0),
            dropped_invalid: AtomicU64::new(0),
            last_sample_ns: AtomicU64::new(0),
            origin: Instant::now(),
            clock_offset_ns: OnceLock::new(),
        }
    }

    fn counts(&self) -> FrameCounts {
        let dropped_full = self.dropped_full.load(Ordering::Relaxed);
        FrameCounts {
            delivered: self
                .queued
                .load(Ordering::Relaxed)
                .saturating_sub(dropped_full),
            dropped_full,
            dropped_closed: self.dropped_closed.load(Ordering::Relaxed),
            dropped_invalid: self.dropped_invalid.load(Ordering::Relaxed),
        }
    }

    fn touch(&self) {
        let ns = u64::try_from(self.origin.elapsed().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        self.last_sample_ns.store(ns, Ordering::Relaxed);
    }

    fn last_sample(&self) -> Option<Instant> {
        match self.last_sample_ns.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(self.origin + Duration::from_nanos(ns)),
        }
    }
}

/// A stream's running (or ready to run) GStreamer pipeline.
///
/// Dropping it stops the pipeline (state `Null`) and releases its threads.
#[derive(Debug)]
pub struct FramePipeline {
    stream_id: String,
    pipeline: gst::Pipeline,
    bus: gst::Bus,
    outlet: Arc<Outlet>,
    /// Text that must not leave the process (the source location), hidden in errors.
    secret: Option<String>,
    /// Play the file again when it ends (segment seeks keep running time increasing).
    looping: bool,
}

impl FramePipeline {
    /// Validates `config`, builds the stream's pipeline (not yet playing) and returns it with the
    /// receiving end of its frame queue, which holds at most `config.frame_queue` frames.
    ///
    /// The receiver ends when the stream ends or an element fails, after the frames already in
    /// it have been received; [`FramePipeline::wait_for_eos`] then tells which of the two.
    pub fn build(
        config: &StreamConfig,
    ) -> Result<(Self, FrameReceiver<EncodedFrame>), IngestError> {
        Self::build_on(config, &metrics::meter())
    }

    /// [`FramePipeline::build`], recording the pipeline's metrics on `meter`.
    fn build_on(
        config: &StreamConfig,
        meter: &Meter,
    ) -> Result<(Self, FrameReceiver<EncodedFrame>), IngestError> {
        config.validate()?;
        init()?;
        let stream_id = config.stream_id.as_str();
        let build_err = |cause: String| IngestError::Build {
            stream_id: stream_id.to_owned(),
            cause,
        };

        let pipeline = gst::Pipeline::with_name(stream_id);
        let bus = pipeline
            .bus()
            .ok_or_else(|| build_err("pipeline has no bus".to_owned()))?;

        let scale = make_element(stream_id, "videoscale", "scale")?;
        let convert = make_element(stream_id, "videoconvert", "convert")?;
        let size = make_element(stream_id, "capsfilter", "size")?;
        let encode = make_element(stream_id, "jpegenc", "encode")?;
        let sink = make_element(stream_id, "appsink", "sink")?
            .downcast::<gst_app::AppSink>()
            .map_err(|_| build_err("the `appsink` element is not an AppSink".to_owned()))?;

        // `validate()` has kept both sides within 1..=16384.
        let width = i32::try_from(config.output.width).unwrap_or(i32::MAX);
        let height = i32::try_from(config.output.height).unwrap_or(i32::MAX);
        // Square pixels at a fixed size: videoscale keeps the source's display aspect ratio by
        // adding black borders (letterbox) instead of handing the models stretched images.
        scale.set_property("add-borders", true);
        let caps = gst::Caps::builder("video/x-raw")
            .field("width", width)
            .field("height", height)
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build();
        size.set_property("caps", &caps);
        encode.set_property("quality", i32::from(config.output.jpeg_quality));

        // The callback pulls every sample as it arrives, so the appsink's own queue stays at one.
        // `sync` paces a recorded file at its own rate when asked to; live sources are already
        // paced by their clock and a recorded one otherwise runs as fast as it can.
        let realtime_file = matches!(&config.source, SourceConfig::File(f) if f.realtime);
        sink.set_sync(realtime_file);
        sink.set_max_buffers(1);
        sink.set_property("enable-last-sample", false);

        let (tx, rx) = queue::bounded(config.frame_queue, config.full_policy);
        let outlet = Arc::new(Outlet::new(tx, meter, config.source.kind()));
        let callback_outlet = Arc::clone(&outlet);
        let callback_stream = stream_id.to_owned();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| on_new_sample(sink, &callback_outlet, &callback_stream))
                .build(),
        );

        if let Some(fps) = config.output.max_fps {
            install_rate_cap(stream_id, &scale, fps)?;
        }
        install_encode_timer(&encode, meter, config.source.kind());
        let tail: [&gst::Element; 5] = [&scale, &convert, &size, &encode, sink.upcast_ref()];
        pipeline
            .add_many(tail.iter().copied())
            .map_err(|e| build_err(format!("adding elements: {e}")))?;
        for pair in tail.windows(2) {
            let (from, to) = (pair[0], pair[1]);
            from.link(to).map_err(|_| {
                build_err(format!(
                    "cannot link `{}` to `{}`: no caps both accept (output {}x{})",
                    from.name(),
                    to.name(),
                    config.output.width,
                    config.output.height
                ))
            })?;
        }
        add_source(&pipeline, stream_id, &config.source, tail[0])?;

        let looping = matches!(&config.source, SourceConfig::File(f) if f.looping);
        install_bus_handler(&pipeline, &bus, &outlet, stream_id, looping);

        Ok((
            Self {
                stream_id: stream_id.to_owned(),
                pipeline,
                bus,
                outlet,
                secret: config.source.secret(),
                looping,
            },
            rx,
        ))
    }

    /// The stream this pipeline ingests.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// Sets the pipeline playing. Failures that show up only once data flows (for example caps
    /// that cannot be negotiated, an unreachable camera) arrive later through
    /// [`FramePipeline::wait_for_eos`].
    pub fn start(&self) -> Result<(), IngestError> {
        if self.looping {
            self.start_looping()?;
        }
        if self.pipeline.set_state(gst::State::Playing).is_ok() {
            return Ok(());
        }
        Err(self.state_error(gst::State::Playing))
    }

    /// Prerolls and issues the first segment seek, so that the end of the file posts
    /// `segment-done` (answered by the bus handler with a non-flushing seek back to the start)
    /// instead of end of stream.
    fn start_looping(&self) -> Result<(), IngestError> {
        if self.pipeline.set_state(gst::State::Paused).is_err() {
            return Err(self.state_error(gst::State::Paused));
        }
        let (result, _, _) = self.pipeline.state(gst::ClockTime::from_seconds(30));
        if result.is_err() {
            return Err(self.state_error(gst::State::Paused));
        }
        self.pipeline
            .seek_simple(
                gst::SeekFlags::FLUSH | gst::SeekFlags::SEGMENT,
                gst::ClockTime::ZERO,
            )
            .map_err(|_| IngestError::Build {
                stream_id: self.stream_id.clone(),
                cause: "the file cannot be looped: it does not support seeking".to_owned(),
            })
    }

    fn state_error(&self, state: gst::State) -> IngestError {
        // The element that refused has usually posted the reason.
        match self.bus.pop_filtered(&[gst::MessageType::Error]) {
            Some(message) => self.error_from(&message),
            None => IngestError::StateChange {
                stream_id: self.stream_id.clone(),
                state: format!("{state:?}"),
            },
        }
    }

    /// Asks the sources to end: each sends end of stream, the frames inside the pipeline drain
    /// to the receiver, and [`FramePipeline::wait_for_eos`] then returns `Ok`.
    pub fn request_stop(&self) {
        if !self.pipeline.send_event(gst::event::Eos::new()) {
            tracing::debug!(stream_id = %self.stream_id, "a source ignored end of stream");
        }
    }

    /// Waits up to `timeout` for the stream to end: `Ok` on end of stream, the element's error if
    /// one failed, [`IngestError::Timeout`] if neither happened in time. The outcome is reported
    /// once; a later call waits for a new one.
    pub fn wait_for_eos(&self, timeout: Duration) -> Result<(), IngestError> {
        // `u64::MAX` nanoseconds is GStreamer's "no time", which would mean "wait forever".
        let timeout_ns = u64::try_from(timeout.as_nanos())
            .unwrap_or(u64::MAX)
            .min(u64::MAX - 1);
        let message = self.bus.timed_pop_filtered(
            gst::ClockTime::from_nseconds(timeout_ns),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        match message {
            None => Err(IngestError::Timeout {
                stream_id: self.stream_id.clone(),
                waited: timeout,
            }),
            Some(message) => match message.view() {
                gst::MessageView::Eos(_) => Ok(()),
                _ => Err(self.error_from(&message)),
            },
        }
    }

    /// The underlying GStreamer pipeline, for inspection (queries, debug graphs) and tests.
    /// Changing its elements or links breaks the frame contract of this type.
    pub fn pipeline(&self) -> &gst::Pipeline {
        &self.pipeline
    }

    /// What has become of the frames so far.
    pub fn counts(&self) -> FrameCounts {
        self.outlet.counts()
    }

    /// When the appsink last produced a sample (delivered or dropped); `None` before the first.
    /// The watchdog's measure of a stalled source.
    pub fn last_sample(&self) -> Option<Instant> {
        self.outlet.last_sample()
    }

    fn error_from(&self, message: &gst::Message) -> IngestError {
        let secret = self.secret.as_deref();
        let (text, debug, unusable_input) = match message.view() {
            gst::MessageView::Error(error) => {
                // GStreamer's debug text starts with its source file and function; the cause
                // is on the last line.
                let debug = error
                    .debug()
                    .map(|d| d.lines().last().unwrap_or_default().trim().to_owned())
                    .unwrap_or_default();
                let unusable = is_unusable_input(&error.error(), &debug);
                (error.error().to_string(), debug, unusable)
            }
            _ => (
                format!("unexpected message {:?}", message.type_()),
                String::new(),
                false,
            ),
        };
        IngestError::Pipeline {
            stream_id: self.stream_id.clone(),
            element: redact(&source_path(message), secret),
            message: redact(&text, secret),
            debug: redact(&debug, secret),
            unusable_input,
        }
    }
}

impl Drop for FramePipeline {
    fn drop(&mut self) {
        // Wake a streaming thread that waits for room (archive mode) before stopping it.
        self.outlet.sender.close();
        if self.pipeline.set_state(gst::State::Null).is_err() {
            tracing::warn!(stream_id = %self.stream_id, "pipeline did not stop cleanly");
        }
    }
}

/// Whether a GStreamer error says the input itself cannot be used: no decoder for its codec,
/// not a media type anything recognises, no video, caps nothing downstream accepts. Decode and
/// demux errors are left out: on a network source they can be transient corruption.
fn is_unusable_input(error: &glib::Error, debug: &str) -> bool {
    let stream = error.kind::<gst::StreamError>().is_some_and(|kind| {
        matches!(
            kind,
            gst::StreamError::CodecNotFound
                | gst::StreamError::TypeNotFound
                | gst::StreamError::WrongType
                | gst::StreamError::Format
                | gst::StreamError::NotImplemented
        )
    });
    let core = error.kind::<gst::CoreError>().is_some_and(|kind| {
        matches!(
            kind,
            gst::CoreError::MissingPlugin | gst::CoreError::Negotiation
        )
    });
    stream || core || debug.contains("not-negotiated")
}

/// Keeps only end of stream and errors on the bus for `wait_for_eos` (both end the frame
/// queue); logs warnings; answers `segment-done` when looping; drops everything else as it is
/// posted, so the bus queue cannot grow while nobody reads it.
fn install_bus_handler(
    pipeline: &gst::Pipeline,
    bus: &gst::Bus,
    outlet: &Arc<Outlet>,
    stream_id: &str,
    looping: bool,
) {
    let bus_stream = stream_id.to_owned();
    let bus_outlet = Arc::clone(outlet);
    let pipeline_weak = pipeline.downgrade();
    bus.set_sync_handler(move |_, message| match message.view() {
        gst::MessageView::Eos(_) | gst::MessageView::Error(_) => {
            bus_outlet.sender.close();
            gst::BusSyncReply::Pass
        }
        gst::MessageView::SegmentDone(_) if looping => {
            if let Some(pipeline) = pipeline_weak.upgrade() {
                // Not on the streaming thread that posted this: seeking from it could deadlock.
                pipeline.call_async(|pipeline| {
                    if pipeline
                        .seek_simple(gst::SeekFlags::SEGMENT, gst::ClockTime::ZERO)
                        .is_err()
                    {
                        tracing::warn!(pipeline = %pipeline.name(), "loop seek refused");
                        let _ended = pipeline.send_event(gst::event::Eos::new());
                    }
                });
            }
            gst::BusSyncReply::Drop
        }
        gst::MessageView::Warning(warning) => {
            tracing::warn!(
                stream_id = %bus_stream,
                element = %source_path(message),
                message = %warning.error(),
                "GStreamer warning"
            );
            gst::BusSyncReply::Drop
        }
        _ => gst::BusSyncReply::Drop,
    });
}

/// The path of the object that posted `message`, e.g. `/GstPipeline:or1/GstJpegEnc:encode`.
fn source_path(message: &gst::Message) -> String {
    message.src().map_or_else(
        || "<unknown>".to_owned(),
        |src| src.path_string().to_string(),
    )
}

/// Drops frames to at most `fps` per second, evenly spaced by running time: a frame passes
/// when it reaches the next slot of a grid of `1/fps` steps (less a quarter step, so timestamp
/// jitter does not push a frame into the next slot). 30 -> 10 keeps every third frame.
#[derive(Debug)]
pub(crate) struct RateCap {
    interval_ns: u64,
    next_ns: Option<u64>,
}

impl RateCap {
    pub(crate) fn new(fps: u32) -> Self {
        Self {
            interval_ns: 1_000_000_000 / u64::from(fps.max(1)),
            next_ns: None,
        }
    }

    /// Whether the frame at running time `t_ns` is kept.
    pub(crate) fn keep(&mut self, t_ns: u64) -> bool {
        let interval = self.interval_ns;
        let slack = interval / 4;
        match self.next_ns {
            // Ahead of the next slot: drop, unless time went back by more than a slot (a new
            // segment, a looped file), which starts a new grid.
            Some(next)
                if t_ns + slack < next && t_ns + interval >= next.saturating_sub(interval) =>
            {
                false
            }
            Some(next) if t_ns + slack >= next && t_ns <= next + interval => {
                self.next_ns = Some(next + interval);
                true
            }
            // The first frame, or a jump in time: start the grid here.
            _ => {
                self.next_ns = Some(t_ns + interval);
                true
            }
        }
    }
}

/// Puts a [`RateCap`] on `element`'s sink pad.
fn install_rate_cap(stream_id: &str, element: &gst::Element, fps: u32) -> Result<(), IngestError> {
    let pad = element
        .static_pad("sink")
        .ok_or_else(|| IngestError::Build {
            stream_id: stream_id.to_owned(),
            cause: format!("`{}` has no sink pad for the rate cap", element.name()),
        })?;
    let cap = std::sync::Mutex::new(RateCap::new(fps));
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(pts) = info.buffer().and_then(|b| b.pts()) else {
            return gst::PadProbeReturn::Ok;
        };
        let running = pad
            .sticky_event::<gst::event::Segment>(0)
            .and_then(|e| {
                e.segment()
                    .downcast_ref::<gst::ClockTime>()
                    .and_then(|s| s.to_running_time(pts))
            })
            .unwrap_or(pts);
        let keep = cap
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keep(running.nseconds());
        if keep {
            gst::PadProbeReturn::Ok
        } else {
            // `Handled` with the buffer released here: `Drop` makes GStreamer 1.22 unref a
            // buffer the bindings have already let go of (a CRITICAL per dropped frame).
            info.data.take();
            gst::PadProbeReturn::Handled
        }
    });
    Ok(())
}

/// Times `encode` (the JPEG encoder) per frame into `orstream.ingest.encode.duration`: a probe
/// on its sink pad notes when a raw frame goes in, one on its source pad measures when the
/// encoded frame comes out. `jpegenc` encodes on the streaming thread, one frame at a time,
/// so the two probes pair up.
fn install_encode_timer(encode: &gst::Element, meter: &Meter, source_kind: &'static str) {
    let (Some(sink), Some(src)) = (encode.static_pad("sink"), encode.static_pad("src")) else {
        return;
    };
    let histogram = metrics::INGEST_ENCODE_DURATION.build(meter);
    let entered = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let on_entry = Arc::clone(&entered);
    sink.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        *on_entry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        gst::PadProbeReturn::Ok
    });
    let attributes = [KeyValue::new(attr::SOURCE_KIND, source_kind)];
    src.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        let started = entered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(started) = started {
            histogram.record(started.elapsed().as_secs_f64(), &attributes);
        }
        gst::PadProbeReturn::Ok
    });
}

/// The appsink callback, on the streaming thread: accounts for every sample; in live mode it
/// never waits.
fn on_new_sample(
    sink: &gst_app::AppSink,
    outlet: &Outlet,
    stream_id: &str,
) -> Result<gst::FlowSuccess, gst::FlowError> {
    // Fails only while the sink is shutting down; `Flushing` stops the flow without an error.
    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
    // Counted first, whatever becomes of it: once queued, the frame may be taken and published
    // before this callback returns.
    outlet.captured.add(1, &outlet.attributes);
    outlet.touch();
    let host_base_ns = host_base_ns(sink, outlet);
    let frame = match frame_from_sample(&sample, host_base_ns) {
        Ok(frame) => frame,
        Err(reason) => {
            outlet.dropped_invalid.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(stream_id, reason, "sample dropped");
            return Ok(gst::FlowSuccess::Ok);
        }
    };
    match outlet.sender.push(frame) {
        Pushed::Queued => {
            outlet.queued.fetch_add(1, Ordering::Relaxed);
            Ok(gst::FlowSuccess::Ok)
        }
        Pushed::QueuedDroppedOldest => {
            outlet.queued.fetch_add(1, Ordering::Relaxed);
            outlet.dropped_full.fetch_add(1, Ordering::Relaxed);
            Ok(gst::FlowSuccess::Ok)
        }
        Pushed::Closed => {
            outlet.dropped_closed.fetch_add(1, Ordering::Relaxed);
            // Nobody takes this stream's frames any more (or it has already ended): stop it
            // instead of encoding into the void.
            Err(gst::FlowError::Eos)
        }
    }
}

/// Host realtime (Unix ns) at which the pipeline's running time was zero: realtime minus the
/// clock's current time, plus the base time. Measured once per pipeline.
fn host_base_ns(sink: &gst_app::AppSink, outlet: &Outlet) -> i128 {
    let offset = *outlet.clock_offset_ns.get_or_init(|| {
        let clock_now = sink.clock().map(|clock| clock.time());
        let clock_now = clock_now.map_or(0, |t| i128::from(t.nseconds()));
        realtime_ns() - clock_now
    });
    let base = sink.base_time().map_or(0, |t| i128::from(t.nseconds()));
    offset + base
}

/// Nanoseconds since the Unix epoch on the host's realtime clock.
fn realtime_ns() -> i128 {
    i128::from(orstream_shell::clock::now_ns())
}

/// Extracts an [`EncodedFrame`] from an appsink sample, or says what it lacked.
fn frame_from_sample(
    sample: &gst::Sample,
    host_base_ns: i128,
) -> Result<EncodedFrame, &'static str> {
    let buffer = sample.buffer().ok_or("sample without buffer")?;
    let structure = sample
        .caps()
        .and_then(|caps| caps.structure(0))
        .ok_or("sample without caps")?;
    let dimension = |field: &str| {
        structure
            .get::<i32>(field)
            .ok()
            .and_then(|v| u32::try_from(v).ok())
    };
    let width = dimension("width").ok_or("caps without a valid width")?;
    let height = dimension("height").ok_or("caps without a valid height")?;
    let fps = structure
        .get::<gst::Fraction>("framerate")
        .ok()
        .filter(|f| f.numer() > 0 && f.denom() > 0)
        .map_or(0.0, |f| f64::from(f.numer()) / f64::from(f.denom()));
    let pts = buffer.pts().ok_or("buffer without PTS")?;
    let running_time = sample
        .segment()
        .and_then(|segment| segment.downcast_ref::<gst::ClockTime>())
        .ok_or("sample without a time segment")?
        .to_running_time(pts)
        .ok_or("PTS outside the segment")?;
    let host_time_ns = i64::try_from(host_base_ns + i128::from(running_time.nseconds()))
        .map_err(|_| "host time out of range")?;
    let ntp_time_ns = ntp_time_ns(buffer);
    let map = buffer.map_readable().map_err(|_| "buffer not readable")?;
    Ok(EncodedFrame {
        jpeg: Bytes::copy_from_slice(map.as_slice()),
        width,
        height,
        fps,
        pts_ns: pts.nseconds(),
        running_time_ns: running_time.nseconds(),
        host_time_ns,
        ntp_time_ns,
    })
}

/// The camera's NTP time of `buffer` as Unix nanoseconds, from a reference timestamp meta with
/// `timestamp/x-ntp` caps (rtspsrc `add-reference-timestamp-meta`; NTP-epoch nanoseconds).
fn ntp_time_ns(buffer: &gst::BufferRef) -> Option<i64> {
    buffer
        .iter_meta::<gst::ReferenceTimestampMeta>()
        .find(|meta| {
            meta.reference()
                .structure(0)
                .is_some_and(|s| s.name() == "timestamp/x-ntp")
        })
        .and_then(|meta| {
            // The meta's accessor panics on an undefined timestamp; rtpjitterbuffer never adds
            // one, but a panic must not cross into the streaming thread.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| meta.timestamp())).ok()
        })
        .and_then(|ts| i64::try_from(i128::from(ts.nseconds()) - NTP_UNIX_OFFSET_NS).ok())
        .filter(|ns| *ns > 0)
}

#[cfg(test)]
#[allow(
    clippy::expect_used,
    reason = "a failed expectation is the test failing"
)]
mod tests {
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::SdkMeterProvider;

    use super::*;

    #[test]
    fn a_missing_factory_is_named_in_the_error() {
        init().expect("GStreamer initialises");
        let err = make_element("or-test", "orstream-no-such-element", "x")
            .expect_err("factory must not exist");
        let text = err.to_string();
        assert!(
            matches!(&err, IngestError::MissingElement { factory, stream_id, .. }
                if factory == "orstream-no-such-element" && stream_id == "or-test"),
            "{err:?}"
        );
        assert!(text.contains("orstream-no-such-element"), "{text}");
        assert!(text.contains("or-test"), "{text}");
    }

    /// The value of `orstream.ingest.frames.captured` in a scrape of `registry` now, over
    /// all its labels.
    fn captured_now(registry: &prometheus::Registry) -> u64 {
        let name = format!(
            "{}_total",
            metrics::prometheus_base_name(metrics::INGEST_FRAMES_CAPTURED.name)
        );
        registry
            .gather()
            .iter()
            .filter(|family| family.name() == name)
            .flat_map(|family| family.get_metric())
            .map(|metric| metric.get_counter().get_value() as u64)
            .sum()
    }

    #[test]
    fn every_frame_is_counted_as_captured_before_it_can_be_taken() {
        // A frame can be published as soon as it is taken from the queue: if the captured
        // count lagged behind the queue, a scrape could see published > captured.
        const N: u32 = 40;
        // Read as a scrape reads it.
        let registry = prometheus::Registry::new();
        let reader = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()
            .expect("Prometheus reader");
        let provider = SdkMeterProvider::builder().with_reader(reader).build();
        let meter = provider.meter("ingest-pipeline-test");
        let mut config = StreamConfig::test(
            "captured-first",
            crate::config::TestSourceConfig {
                num_buffers: Some(N),
                is_live: false,
            },
        );
        config.output.width = 64;
        config.output.height = 48;
        // One slot, live mode: the streaming thread hands over each frame the moment the
        // previous one is taken (or pushes the previous one out).
        config.frame_queue = 1;
        let (pipeline, frames) = FramePipeline::build_on(&config, &meter).expect("pipeline builds");
        pipeline.start().expect("pipeline starts");
        let mut taken = 0u64;
        loop {
            match frames.recv_timeout(Duration::from_secs(60)) {
                Ok(_) => {
                    taken += 1;
                    let captured = captured_now(&registry);
                    assert!(
                        captured >= taken,
                        "frame {taken} was taken before it was counted as captured ({captured})"
                    );
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("no frame within 60 s"),
            }
        }
        pipeline
            .wait_for_eos(Duration::from_secs(60))
            .expect("end of stream");
        // Live mode: frames pushed out of the full queue are captured but never taken.
        let counts = pipeline.counts();
        assert_eq!(counts.delivered, taken, "{counts:?}");
        assert_eq!(counts.total(), u64::from(N), "{counts:?}");
        assert_eq!(captured_now(&registry), u64::from(N));
    }

    #[test]
    fn counts_total_adds_every_outcome() {
        let counts = FrameCounts {
            delivered: 5,
            dropped_full: 3,
            dropped_closed: 1,
            dropped_invalid: 2,
        };
        assert_eq!(counts.total(), 11);
        assert_eq!(counts.dropped(), 6);
    }

    fn kept(fps: u32, input_fps: u64, frames: u64, jitter: &[i64]) -> Vec<u64> {
        let mut cap = RateCap::new(fps);
        (0..frames)
            .filter(|i| {
                let j = jitter[(*i as usize) % jitter.len()];
                let t = (i * 1_000_000_000 / input_fps).saturating_add_signed(j);
                cap.keep(t)
            })
            .collect()
    }

    #[test]
    fn rate_cap_keeps_evenly_spaced_frames() {
        // 30 -> 10: every third frame, with or without a millisecond of jitter.
        assert_eq!(kept(10, 30, 12, &[0]), [0, 3, 6, 9]);
        assert_eq!(kept(10, 30, 12, &[0, 1_000_000, -1_000_000]), [0, 3, 6, 9]);
        // 30 -> 15: every other frame; 30 -> 20: two of every three.
        assert_eq!(kept(15, 30, 8, &[0]), [0, 2, 4, 6]);
        assert_eq!(kept(20, 30, 6, &[0]).len(), 4);
        // A cap above the source rate keeps everything.
        assert_eq!(kept(60, 30, 5, &[0]), [0, 1, 2, 3, 4]);
    }

    #[test]
    fn rate_cap_restarts_its_grid_when_time_jumps() {
        let mut cap = RateCap::new(10);
        assert!(cap.keep(5_000_000_000));
        assert!(!cap.keep(5_033_000_000));
        // Time went back (a looped file): keep and start again.
        assert!(cap.keep(0));
        assert!(!cap.keep(33_000_000));
        assert!(cap.keep(100_000_000));
        // A long gap: keep the first frame after it.
        assert!(cap.keep(9_000_000_000));
    }

    #[test]
    fn ntp_meta_is_read_as_unix_time() {
        init().expect("GStreamer initialises");
        let mut buffer = gst::Buffer::new();
        let unix_ns: i64 = 1_795_000_000_123_456_789;
        let ntp_ns = u64::try_from(i128::from(unix_ns) + NTP_UNIX_OFFSET_NS).expect("fits");
        {
            let buffer = buffer.get_mut().expect("fresh buffer is writable");
            let other = gst::Caps::new_empty_simple("timestamp/x-unix");
            gst::ReferenceTimestampMeta::add(buffer, &other, gst::ClockTime::from_seconds(1), None);
            let caps = gst::Caps::new_empty_simple("timestamp/x-ntp");
            gst::ReferenceTimestampMeta::add(
                buffer,
                &caps,
                gst::ClockTime::from_nseconds(ntp_ns),
                None,
            );
        }
        assert_eq!(ntp_time_ns(&buffer), Some(unix_ns));
        assert_eq!(ntp_time_ns(&gst::Buffer::new()), None);
    }
}
