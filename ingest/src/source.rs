//! The first elements of a stream's pipeline, chosen by [`SourceConfig`], and how they are
//! linked to the shared part downstream (rate cap, scaling, JPEG encoding).
//!
//! RTSP, file and V4L2 sources go through `decodebin`, which picks a depayloader, parser and
//! decoder for whatever the source carries; its pads appear only once data flows, so they are
//! linked from `pad-added`. Only the first video pad is used; anything else (audio, a second
//! video track) goes to a `fakesink` so it cannot stall the demuxer. A source without a video
//! stream is an error naming the cause, not a silent stream without frames.

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::config::{
    FileSourceConfig, RtspProtocols, RtspSourceConfig, SourceConfig, TestSourceConfig,
    V4l2SourceConfig,
};
use crate::element::make_element;
use crate::error::IngestError;

/// Name of the source element inside a stream's pipeline; error messages show it.
pub(crate) const SOURCE_NAME: &str = "source";
/// Name of the decodebin, where a source has one.
pub(crate) const DECODE_NAME: &str = "decode";

/// Adds the source elements for `config` to `pipeline` and links them (now or once their pads
/// appear) to the sink pad of `head`.
pub(crate) fn add_source(
    pipeline: &gst::Pipeline,
    stream_id: &str,
    config: &SourceConfig,
    head: &gst::Element,
) -> Result<(), IngestError> {
    match config {
        SourceConfig::Test(test) => {
            let source = test_source(stream_id, test)?;
            add(pipeline, stream_id, &[&source])?;
            source.link(head).map_err(|_| IngestError::Build {
                stream_id: stream_id.to_owned(),
                cause: "cannot link the test source to the rate/scale stage".to_owned(),
            })
        }
        SourceConfig::File(file) => {
            let source = file_source(stream_id, file)?;
            let decode = decodebin(stream_id, head)?;
            add(pipeline, stream_id, &[&source, &decode])?;
            source.link(&decode).map_err(|_| IngestError::Build {
                stream_id: stream_id.to_owned(),
                cause: "cannot link filesrc to decodebin".to_owned(),
            })
        }
        SourceConfig::V4l2(v4l2) => {
            let source = v4l2_source(stream_id, v4l2)?;
            let decode = decodebin(stream_id, head)?;
            add(pipeline, stream_id, &[&source, &decode])?;
            source.link(&decode).map_err(|_| IngestError::Build {
                stream_id: stream_id.to_owned(),
                cause: "cannot link v4l2src to decodebin".to_owned(),
            })
        }
        SourceConfig::Rtsp(rtsp) => {
            let source = rtsp_source(stream_id, rtsp)?;
            let decode = decodebin(stream_id, head)?;
            add(pipeline, stream_id, &[&source, &decode])?;
            // rtspsrc's pads appear after the DESCRIBE/SETUP exchange; `select-stream` (below)
            // has already refused every non-video stream, so the first pad is the video.
            let decode_weak = decode.downgrade();
            source.connect_pad_added(move |_, pad| {
                let Some(decode) = decode_weak.upgrade() else {
                    return;
                };
                let Some(sink) = decode.static_pad("sink") else {
                    return;
                };
                if sink.is_linked() {
                    return;
                }
                if let Err(error) = pad.link(&sink) {
                    gst::element_error!(
                        decode,
                        gst::StreamError::Failed,
                        ("cannot link the RTSP stream to the decoder: {error:?}")
                    );
                }
            });
            Ok(())
        }
    }
}

fn add(
    pipeline: &gst::Pipeline,
    stream_id: &str,
    elements: &[&gst::Element],
) -> Result<(), IngestError> {
    pipeline
        .add_many(elements.iter().copied())
        .map_err(|e| IngestError::Build {
            stream_id: stream_id.to_owned(),
            cause: format!("adding source elements: {e}"),
        })
}

fn test_source(stream_id: &str, config: &TestSourceConfig) -> Result<gst::Element, IngestError> {
    let source = make_element(stream_id, "videotestsrc", SOURCE_NAME)?;
    // `num-buffers` is a gint where -1 means unlimited; `validate()` has kept the value in range.
    let num_buffers = config
        .num_buffers
        .map_or(-1, |n| i32::try_from(n).unwrap_or(i32::MAX));
    source.set_property("num-buffers", num_buffers);
    source.set_property("is-live", config.is_live);
    Ok(source)
}

fn file_source(stream_id: &str, config: &FileSourceConfig) -> Result<gst::Element, IngestError> {
    let source = make_element(stream_id, "filesrc", SOURCE_NAME)?;
    source.set_property("location", config.path.to_string_lossy().as_ref());
    Ok(source)
}

fn v4l2_source(stream_id: &str, config: &V4l2SourceConfig) -> Result<gst::Element, IngestError> {
    let source = make_element(stream_id, "v4l2src", SOURCE_NAME)?;
    source.set_property("device", config.device.to_string_lossy().as_ref());
    Ok(source)
}

fn rtsp_source(stream_id: &str, config: &RtspSourceConfig) -> Result<gst::Element, IngestError> {
    let source = make_element(stream_id, "rtspsrc", SOURCE_NAME)?;
    source.set_property("location", config.location.as_str());
    if let Some(user) = &config.user {
        source.set_property("user-id", user.as_str());
    }
    // Read at each (re)connection: a rotated password is taken at the next one.
    let password = config.password().map_err(|e| IngestError::Build {
        stream_id: stream_id.to_owned(),
        cause: format!("the camera's password file: {e}"),
    })?;
    if let Some(password) = password {
        source.set_property("user-pw", password.as_str());
    }
    source.set_property_from_str(
        "protocols",
        match config.protocols {
            RtspProtocols::Tcp => "tcp",
            RtspProtocols::Udp => "udp",
        },
    );
    // `validate()` has kept the latency within a u32 of milliseconds.
    let latency_ms = u32::try_from(config.latency.as_millis()).unwrap_or(u32::MAX);
    source.set_property("latency", latency_ms);
    // The camera's NTP time from RTCP sender reports, carried to the appsink on each buffer.
    source.set_property("add-reference-timestamp-meta", true);
    // Only video is ingested: refusing the other streams here means they are never set up.
    source.connect("select-stream", false, |values| {
        let caps = values.get(2).and_then(|v| v.get::<gst::Caps>().ok());
        let is_video = caps
            .as_ref()
            .and_then(|caps| caps.structure(0))
            .and_then(|s| s.get::<&str>("media").ok())
            .is_some_and(|media| media == "video");
        Some(is_video.to_value())
    });
    Ok(source)
}

/// A `decodebin` whose first video pad is linked to `head`; other pads go to fakesinks, and a
/// source that turns out to have no video stream posts an error.
fn decodebin(stream_id: &str, head: &gst::Element) -> Result<gst::Element, IngestError> {
    let decode = make_element(stream_id, "decodebin", DECODE_NAME)?;
    let head_weak = head.downgrade();
    decode.connect_pad_added(move |decode, pad| {
        let Some(head) = head_weak.upgrade() else {
            return;
        };
        let is_video = pad
            .current_caps()
            .or_else(|| Some(pad.query_caps(None)))
            .and_then(|caps| caps.structure(0).map(|s| s.name().starts_with("video/")))
            .unwrap_or(false);
        let head_sink = head.static_pad("sink");
        match head_sink {
            Some(sink) if is_video && !sink.is_linked() => {
                if let Err(error) = pad.link(&sink) {
                    gst::element_error!(
                        decode,
                        gst::StreamError::Format,
                        ("cannot use the decoded video: {error:?}")
                    );
                }
            }
            _ => discard(decode, pad),
        }
    });
    let head_weak = head.downgrade();
    decode.connect_no_more_pads(move |decode| {
        let linked = head_weak
            .upgrade()
            .and_then(|head| head.static_pad("sink"))
            .is_some_and(|sink| sink.is_linked());
        if !linked {
            gst::element_error!(
                decode,
                gst::StreamError::WrongType,
                ("the source has no video stream")
            );
        }
    });
    Ok(decode)
}

/// Links `pad` to a new fakesink so an unused stream flows somewhere instead of stalling its
/// demuxer.
fn discard(decode: &gst::Element, pad: &gst::Pad) {
    let Some(bin) = decode.parent().and_then(|p| p.downcast::<gst::Bin>().ok()) else {
        return;
    };
    let Ok(sink) = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .build()
    else {
        return;
    };
    if bin.add(&sink).is_err() {
        return;
    }
    if let Some(sink_pad) = sink.static_pad("sink") {
        let _linked = pad.link(&sink_pad);
    }
    let _synced = sink.sync_state_with_parent();
}
