//! Runs real GStreamer pipelines from `videotestsrc` to the appsink.
//!
//! Waits are bounded so a broken pipeline fails the test instead of hanging it; nothing here
//! asserts on timings.

#![allow(
    clippy::expect_used,
    reason = "a failed expectation is the test failing"
)]

use std::sync::mpsc::RecvTimeoutError;

use gstreamer::prelude::*;
use std::time::Duration;

use orstream_ingest::{
    EncodedFrame, FramePipeline, FrameReceiver, IngestError, OutputConfig, StreamConfig,
    TestSourceConfig,
};

/// Generous bound for a few dozen small frames on a slow, shared machine.
const WAIT: Duration = Duration::from_secs(60);

fn test_stream(stream_id: &str, frames: u32, width: u32, height: u32) -> StreamConfig {
    let mut config = StreamConfig::test(
        stream_id,
        TestSourceConfig {
            num_buffers: Some(frames),
            is_live: false,
        },
    );
    config.output = OutputConfig {
        width,
        height,
        jpeg_quality: 80,
        max_fps: None,
    };
    config
}

/// Receives until the channel closes (end of stream or failure), bounded by `WAIT` per frame.
fn drain(frames: &FrameReceiver<EncodedFrame>) -> Vec<EncodedFrame> {
    let mut received = Vec::new();
    loop {
        match frames.recv_timeout(WAIT) {
            Ok(frame) => received.push(frame),
            Err(RecvTimeoutError::Disconnected) => return received,
            Err(RecvTimeoutError::Timeout) => panic!(
                "no frame and no end of stream within {WAIT:?} after {} frames",
                received.len()
            ),
        }
    }
}

#[test]
fn test_source_delivers_exactly_n_jpeg_frames() {
    const N: u32 = 30;
    let mut config = test_stream("smoke-exact", N, 320, 240);
    // Room for the whole stream, so the count is exact however slowly this thread reads.
    config.frame_queue = N as usize;
    let (pipeline, frames) = FramePipeline::build(&config).expect("pipeline builds");
    pipeline.start().expect("pipeline starts");

    let received = drain(&frames);
    pipeline.wait_for_eos(WAIT).expect("end of stream");

    assert_eq!(received.len(), N as usize);
    let counts = pipeline.counts();
    assert_eq!(counts.delivered, u64::from(N), "{counts:?}");
    assert_eq!(counts.total(), u64::from(N), "{counts:?}");

    for (i, frame) in received.iter().enumerate() {
        let jpeg = &frame.jpeg;
        assert!(jpeg.len() > 4, "frame {i} is {} bytes", jpeg.len());
        assert_eq!(jpeg[..2], [0xFF, 0xD8], "frame {i} lacks the SOI marker");
        assert_eq!(
            jpeg[jpeg.len() - 2..],
            [0xFF, 0xD9],
            "frame {i} lacks the EOI marker"
        );
        assert_eq!((frame.width, frame.height), (320, 240), "frame {i}");
    }
    // videotestsrc stamps frame k at k/30 s and the segment starts at the first frame.
    assert_eq!(received[0].pts_ns, 0);
    assert_eq!(received[0].running_time_ns, 0);
    for pair in received.windows(2) {
        assert!(
            pair[1].pts_ns > pair[0].pts_ns,
            "PTS not increasing: {} then {}",
            pair[0].pts_ns,
            pair[1].pts_ns
        );
        assert!(
            pair[1].running_time_ns > pair[0].running_time_ns,
            "running time not increasing: {} then {}",
            pair[0].running_time_ns,
            pair[1].running_time_ns
        );
    }
}

#[test]
fn a_full_live_queue_drops_the_oldest_frames_and_counts_them() {
    const N: u32 = 30;
    let mut config = test_stream("smoke-overload", N, 160, 120);
    config.frame_queue = 2;
    let (pipeline, frames) = FramePipeline::build(&config).expect("pipeline builds");
    pipeline.start().expect("pipeline starts");
    // A consumer that does not read at all: the callback must neither block nor lose count.
    pipeline
        .wait_for_eos(WAIT)
        .expect("end of stream despite a stalled consumer");

    let received = drain(&frames);
    let counts = pipeline.counts();
    assert_eq!(received.len(), 2);
    assert_eq!(counts.delivered, 2, "{counts:?}");
    assert_eq!(counts.dropped_full, u64::from(N) - 2, "{counts:?}");
    assert_eq!(counts.total(), u64::from(N), "{counts:?}");
    // Drop-oldest keeps the freshest frames: the last two of the stream.
    let frame_ns = 1_000_000_000 / 30;
    assert_eq!(received[1].pts_ns / frame_ns, u64::from(N) - 1);
    assert_eq!(received[0].pts_ns / frame_ns, u64::from(N) - 2);
}

#[test]
fn invalid_configuration_is_rejected_before_building() {
    let config = test_stream("smoke-invalid", 5, 0, 240);
    match FramePipeline::build(&config) {
        Err(err @ IngestError::InvalidConfig { .. }) => {
            let text = err.to_string();
            assert!(text.contains("smoke-invalid"), "{text}");
            assert!(text.contains("output.width"), "{text}");
        }
        Err(other) => panic!("expected InvalidConfig, got {other:?}"),
        Ok(_) => panic!("a zero width must be rejected"),
    }
}

#[test]
fn an_output_size_beyond_the_contract_is_rejected() {
    // The v1 contract accepts frame sides up to 16384 pixels.
    let config = test_stream("smoke-oversize", 5, 70_000, 16);
    match FramePipeline::build(&config) {
        Err(err @ IngestError::InvalidConfig { .. }) => {
            let text = err.to_string();
            assert!(text.contains("smoke-oversize"), "{text}");
            assert!(text.contains("output.width"), "{text}");
            assert!(text.contains("70000"), "{text}");
            assert!(!err.is_retriable());
        }
        Err(other) => panic!("expected a configuration error, got {other:?}"),
        Ok(_) => panic!("a 70000-pixel-wide frame must be refused"),
    }
}

#[test]
fn caps_that_fail_at_run_time_end_the_stream_with_an_error_naming_the_element() {
    let config = test_stream("smoke-unnegotiable", 5, 160, 120);
    let (pipeline, frames) = FramePipeline::build(&config).expect("pipeline builds");
    // After linking, demand caps nothing upstream can produce, as when a source's format changes
    // mid-stream: only negotiation in the streaming thread finds out.
    let size = pipeline
        .pipeline()
        .by_name("size")
        .expect("the capsfilter is named `size`");
    size.set_property("caps", gstreamer::Caps::new_empty_simple("audio/x-raw"));

    let result = pipeline.start().and_then(|()| pipeline.wait_for_eos(WAIT));
    let err = result.expect_err("negotiation must fail");
    match &err {
        IngestError::Pipeline {
            stream_id,
            element,
            debug,
            ..
        } => {
            assert_eq!(stream_id, "smoke-unnegotiable");
            assert!(element.contains("smoke-unnegotiable"), "{element}");
            assert!(debug.contains("not-negotiated"), "{debug}");
        }
        other => panic!("expected a pipeline error, got {other:?}"),
    }
    // Caps nothing accepts will not be accepted on a retry either.
    assert!(!err.is_retriable());
    // The failure also closes the frame channel, so a consumer loop ends instead of hanging.
    assert!(drain(&frames).is_empty());
}

#[test]
fn a_stream_that_does_not_end_times_out() {
    let mut config = StreamConfig::test(
        "smoke-endless",
        TestSourceConfig {
            num_buffers: None,
            is_live: true,
        },
    );
    config.output.width = 64;
    config.output.height = 48;
    let (pipeline, frames) = FramePipeline::build(&config).expect("pipeline builds");
    pipeline.start().expect("pipeline starts");
    // The first frame proves the live pipeline runs; then a short wait must time out.
    frames.recv_timeout(WAIT).expect("a live frame");
    let err = pipeline
        .wait_for_eos(Duration::from_millis(100))
        .expect_err("a live source without num_buffers never ends");
    assert!(matches!(err, IngestError::Timeout { .. }), "{err:?}");
    drop(pipeline);
}

#[test]
fn dropping_the_receiver_ends_an_endless_stream() {
    let mut config = StreamConfig::test(
        "smoke-abandoned",
        TestSourceConfig {
            num_buffers: None,
            is_live: true,
        },
    );
    config.output.width = 64;
    config.output.height = 48;
    let (pipeline, frames) = FramePipeline::build(&config).expect("pipeline builds");
    pipeline.start().expect("pipeline starts");
    frames.recv_timeout(WAIT).expect("a live frame");
    drop(frames);
    // The next frame finds nobody to take it and ends the stream instead of encoding forever.
    pipeline
        .wait_for_eos(WAIT)
        .expect("end of stream once the consumer is gone");
    let counts = pipeline.counts();
    assert_eq!(counts.dropped_closed, 1, "{counts:?}");
    assert_eq!(counts.total(), counts.delivered + 1, "{counts:?}");
}

/// With `block`, a consumer slower than the source loses nothing: the source waits.
#[test]
fn blocking_policy_keeps_every_frame_for_a_slow_consumer() {
    let mut config = StreamConfig::test(
        "slow-consumer",
        TestSourceConfig {
            num_buffers: Some(20),
            is_live: false,
        },
    );
    config.output.width = 160;
    config.output.height = 120;
    config.frame_queue = 1;
    config.full_policy = orstream_ingest::FullPolicy::Block;
    let (pipeline, frames) = FramePipeline::build(&config).unwrap();
    pipeline.start().unwrap();
    let mut received = 0;
    for _frame in &frames {
        std::thread::sleep(std::time::Duration::from_millis(5));
        received += 1;
    }
    pipeline
        .wait_for_eos(std::time::Duration::from_secs(10))
        .unwrap();
    let counts = pipeline.counts();
    assert_eq!(received, 20);
    assert_eq!(counts.delivered, 20, "{counts:?}");
    assert_eq!(counts.total(), 20, "{counts:?}");
}

/// The rate cap keeps evenly spaced frames: 30 fps in, every third frame out.
#[test]
fn the_rate_cap_keeps_every_third_frame_of_a_30_fps_source() {
    let mut config = test_stream("smoke-capped", 30, 160, 120);
    config.output.max_fps = Some(10);
    config.frame_queue = 30;
    let (pipeline, frames) = FramePipeline::build(&config).expect("pipeline builds");
    pipeline.start().expect("pipeline starts");
    let received = drain(&frames);
    pipeline.wait_for_eos(WAIT).expect("end of stream");
    let frame_ns = 1_000_000_000 / 30;
    let indices: Vec<u64> = received
        .iter()
        .map(|f| (f.pts_ns + frame_ns / 2) / frame_ns)
        .collect();
    assert_eq!(indices, (0..30).step_by(3).collect::<Vec<u64>>());
}
