//! One stream's GStreamer pipeline and the frames it yields.
//!
//! ```text
//! source ! videoconvert ! videoscale ! video/x-raw,width=W,height=H,pixel-aspect-ratio=1/1
//!        ! jpegenc quality=Q ! appsink
//! ```
//!
//! The pipeline is assembled from elements rather than a `gst-launch` string so that a missing
//! plugin is reported as the factory it lacks, property types are checked by the compiler's view
//! of the values, and the appsink is the typed object its callbacks need.
//!
//! Frames leave the streaming thread through a bounded channel filled with `try_send`: the
//! appsink callback never blocks, and when the consumer falls behind the newest frame is dropped
//! and counted ([`FrameCounts`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::config::{FullPolicy, StreamConfig};
use crate::error::IngestError;
use crate::source::build_source;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The JPEG image, from SOI (`FF D8`) to EOI (`FF D9`). Copied out of GStreamer's buffer so
    /// that a frame waiting in a queue holds no pipeline memory.
    pub jpeg: Bytes,
    /// Width in pixels, from the negotiated caps.
    pub width: u32,
    /// Height in pixels, from the negotiated caps.
    pub height: u32,
    /// Presentation timestamp of the buffer, in nanoseconds of stream time as the source set it.
    pub pts_ns: u64,
    /// The PTS converted to pipeline running time (nanoseconds since the pipeline started
    /// playing, on the pipeline clock); the basis for mapping a frame to the host clock.
    pub running_time_ns: u64,
}

/// How many frames reached the appsink and what became of them; `total()` equals the number of
/// samples the appsink produced, so every frame is accounted for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameCounts {
    /// Frames handed to the consumer's channel.
    pub delivered: u64,
    /// Frames dropped because the channel was full (the consumer fell behind).
    pub dropped_full: u64,
    /// Frames dropped because the consumer's receiver was gone; the pipeline is then told to stop.
    pub dropped_closed: u64,
    /// Samples dropped because they lacked a buffer, caps, timestamp or readable memory.
    pub dropped_invalid: u64,
}

impl FrameCounts {
    /// All samples seen by the appsink, delivered or dropped.
    pub fn total(&self) -> u64 {
        self.delivered + self.dropped_full + self.dropped_closed + self.dropped_invalid
    }
}

/// The sending side of the frame channel, shared by the appsink callback (streaming thread), the
/// bus handler and [`FramePipeline`].
#[derive(Debug)]
struct Outlet {
    /// Taken (closing the channel) when the stream ends or fails, so a consumer iterating the
    /// receiver stops once it has drained the frames already sent. Only the streaming thread and
    /// the bus handler lock it, never for longer than a `try_send`.
    sender: Mutex<Option<SyncSender<Frame>>>,
    full_policy: FullPolicy,
    delivered: AtomicU64,
    dropped_full: AtomicU64,
    dropped_closed: AtomicU64,
    dropped_invalid: AtomicU64,
}

impl Outlet {
    fn new(sender: SyncSender<Frame>, full_policy: FullPolicy) -> Self {
        Self {
            sender: Mutex::new(Some(sender)),
            full_policy,
            delivered: AtomicU64::new(0),
            dropped_full: AtomicU64::new(0),
            dropped_closed: AtomicU64::new(0),
            dropped_invalid: AtomicU64::new(0),
        }
    }

    fn close(&self) {
        self.sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    fn counts(&self) -> FrameCounts {
        FrameCounts {
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped_full: self.dropped_full.load(Ordering::Relaxed),
            dropped_closed: self.dropped_closed.load(Ordering::Relaxed),
            dropped_invalid: self.dropped_invalid.load(Ordering::Relaxed),
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
}

impl FramePipeline {
    /// Validates `config`, builds the stream's pipeline (not yet playing) and returns it with the
    /// receiving end of its frame channel, which holds at most `config.frame_queue` frames.
    ///
    /// The channel closes when the stream ends or an element fails, after the frames already in
    /// it have been received; [`FramePipeline::wait_for_eos`] then tells which of the two.
    pub fn build(config: &StreamConfig) -> Result<(Self, Receiver<Frame>), IngestError> {
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

        let source = build_source(stream_id, &config.source)?;
        let convert = make_element(stream_id, "videoconvert", "convert")?;
        let scale = make_element(stream_id, "videoscale", "scale")?;
        let size = make_element(stream_id, "capsfilter", "size")?;
        let encode = make_element(stream_id, "jpegenc", "encode")?;
        let sink = make_element(stream_id, "appsink", "sink")?
            .downcast::<gst_app::AppSink>()
            .map_err(|_| build_err("the `appsink` element is not an AppSink".to_owned()))?;

        // `validate()` has checked that both fit in an i32.
        let width = i32::try_from(config.output.width).unwrap_or(i32::MAX);
        let height = i32::try_from(config.output.height).unwrap_or(i32::MAX);
        // Square pixels: videoscale keeps the source's display aspect ratio by adding borders
        // instead of handing the models stretched images.
        let caps = gst::Caps::builder("video/x-raw")
            .field("width", width)
            .field("height", height)
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build();
        size.set_property("caps", &caps);
        encode.set_property("quality", i32::from(config.output.jpeg_quality));

        // The callback pulls every sample as it arrives, so the appsink's own queue stays at one;
        // `sync = false` hands frames over as soon as they are encoded (a live source is already
        // paced by its clock, a recorded one should run as fast as it can).
        sink.set_sync(false);
        sink.set_max_buffers(1);
        sink.set_property("enable-last-sample", false);

        let (tx, rx) = std::sync::mpsc::sync_channel(config.frame_queue);
        let outlet = Arc::new(Outlet::new(tx, config.full_policy));
        let callback_outlet = Arc::clone(&outlet);
        let callback_stream = stream_id.to_owned();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| on_new_sample(sink, &callback_outlet, &callback_stream))
                .build(),
        );

        let elements = [&source, &convert, &scale, &size, &encode, sink.upcast_ref()];
        pipeline
            .add_many(elements)
            .map_err(|e| build_err(format!("adding elements: {e}")))?;
        // Linking checks each pair's possible caps, so an output size an element cannot produce
        // (videoscale stops at 32767 pixels) fails here, before anything runs.
        for pair in elements.windows(2) {
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

        // Only end of stream and errors are kept on the bus for `wait_for_eos`; everything else
        // is dropped as it is posted, so the bus queue cannot grow while nobody reads it. Both
        // end the frame channel: no more frames will come.
        let bus_stream = stream_id.to_owned();
        let bus_outlet = Arc::clone(&outlet);
        bus.set_sync_handler(move |_, message| match message.view() {
            gst::MessageView::Eos(_) | gst::MessageView::Error(_) => {
                bus_outlet.close();
                gst::BusSyncReply::Pass
            }
            gst::MessageView::Warning(warning) => {
                tracing::warn!(
                    stream_id = %bus_stream,
                    element = %source_path(message),
                    message = %warning.error(),
                    debug = ?warning.debug(),
                    "GStreamer warning"
                );
                gst::BusSyncReply::Drop
            }
            _ => gst::BusSyncReply::Drop,
        });

        Ok((
            Self {
                stream_id: stream_id.to_owned(),
                pipeline,
                bus,
                outlet,
            },
            rx,
        ))
    }

    /// The stream this pipeline ingests.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// Sets the pipeline playing. Failures that show up only once data flows (for example caps
    /// that cannot be negotiated) arrive later through [`FramePipeline::wait_for_eos`].
    pub fn start(&self) -> Result<(), IngestError> {
        if self.pipeline.set_state(gst::State::Playing).is_ok() {
            return Ok(());
        }
        // The element that refused has usually posted the reason.
        match self.bus.pop_filtered(&[gst::MessageType::Error]) {
            Some(message) => Err(self.error_from(&message)),
            None => Err(IngestError::StateChange {
                stream_id: self.stream_id.clone(),
                state: format!("{:?}", gst::State::Playing),
            }),
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

    fn error_from(&self, message: &gst::Message) -> IngestError {
        let (text, debug) = match message.view() {
            gst::MessageView::Error(error) => (
                error.error().to_string(),
                error.debug().map(|d| d.to_string()).unwrap_or_default(),
            ),
            _ => (
                format!("unexpected message {:?}", message.type_()),
                String::new(),
            ),
        };
        IngestError::Pipeline {
            stream_id: self.stream_id.clone(),
            element: source_path(message),
            message: text,
            debug,
        }
    }
}

impl Drop for FramePipeline {
    fn drop(&mut self) {
        if self.pipeline.set_state(gst::State::Null).is_err() {
            tracing::warn!(stream_id = %self.stream_id, "pipeline did not stop cleanly");
        }
    }
}

/// Creates element `factory` named `name`, or says which factory is missing.
pub(crate) fn make_element(
    stream_id: &str,
    factory: &str,
    name: &str,
) -> Result<gst::Element, IngestError> {
    gst::ElementFactory::make(factory)
        .name(name)
        .build()
        .map_err(|e| IngestError::MissingElement {
            stream_id: stream_id.to_owned(),
            factory: factory.to_owned(),
            cause: e.to_string(),
        })
}

/// The path of the object that posted `message`, e.g. `/GstPipeline:or1/GstJpegEnc:encode`.
fn source_path(message: &gst::Message) -> String {
    message.src().map_or_else(
        || "<unknown>".to_owned(),
        |src| src.path_string().to_string(),
    )
}

/// The appsink callback, on the streaming thread: never blocks, accounts for every sample.
fn on_new_sample(
    sink: &gst_app::AppSink,
    outlet: &Outlet,
    stream_id: &str,
) -> Result<gst::FlowSuccess, gst::FlowError> {
    // Fails only while the sink is shutting down; `Flushing` stops the flow without an error.
    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
    let frame = match frame_from_sample(&sample) {
        Ok(frame) => frame,
        Err(reason) => {
            outlet.dropped_invalid.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(stream_id, reason, "sample dropped");
            return Ok(gst::FlowSuccess::Ok);
        }
    };
    // Clone the sender out of the lock so a blocking send never holds it: the bus handler
    // must be able to close the outlet while the streaming thread waits for room.
    let sender = outlet
        .sender
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let sent = match (sender, outlet.full_policy) {
        (None, _) => Err(TrySendError::Disconnected(frame)),
        (Some(tx), FullPolicy::DropNewest) => tx.try_send(frame),
        // Backpressure: the streaming thread waits, so upstream (a file demuxer, a test
        // source) slows to the consumer's pace and no frame is lost.
        (Some(tx), FullPolicy::Block) => tx
            .send(frame)
            .map_err(|std::sync::mpsc::SendError(frame)| TrySendError::Disconnected(frame)),
    };
    match sent {
        Ok(()) => {
            outlet.delivered.fetch_add(1, Ordering::Relaxed);
            Ok(gst::FlowSuccess::Ok)
        }
        Err(TrySendError::Full(_)) => {
            outlet.dropped_full.fetch_add(1, Ordering::Relaxed);
            Ok(gst::FlowSuccess::Ok)
        }
        Err(TrySendError::Disconnected(_)) => {
            outlet.dropped_closed.fetch_add(1, Ordering::Relaxed);
            // Nobody consumes this stream any more (or it has already ended): stop it instead of
            // encoding into the void.
            Err(gst::FlowError::Eos)
        }
    }
}

/// Extracts a [`Frame`] from an appsink sample, or says what it lacked.
fn frame_from_sample(sample: &gst::Sample) -> Result<Frame, &'static str> {
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
    let pts = buffer.pts().ok_or("buffer without PTS")?;
    let running_time = sample
        .segment()
        .and_then(|segment| segment.downcast_ref::<gst::ClockTime>())
        .ok_or("sample without a time segment")?
        .to_running_time(pts)
        .ok_or("PTS outside the segment")?;
    let map = buffer.map_readable().map_err(|_| "buffer not readable")?;
    Ok(Frame {
        jpeg: Bytes::copy_from_slice(map.as_slice()),
        width,
        height,
        pts_ns: pts.nseconds(),
        running_time_ns: running_time.nseconds(),
    })
}

#[cfg(test)]
#[allow(
    clippy::expect_used,
    reason = "a failed expectation is the test failing"
)]
mod tests {
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

    #[test]
    fn counts_total_adds_every_outcome() {
        let counts = FrameCounts {
            delivered: 5,
            dropped_full: 3,
            dropped_closed: 1,
            dropped_invalid: 2,
        };
        assert_eq!(counts.total(), 11);
    }
}
