//! Bad input in one process: an unreachable camera, a missing file, a corrupt file and a stream
//! whose frames exceed the message size each produce a `StreamError` naming the stream and the
//! cause, while a good stream in the same process keeps publishing.
//!
//! Needs the Kafka broker (`scripts/kafka.sh start`); fails when it is down.

mod common;

use std::time::Duration;

use common::{Observed, check_identity, topics};
use orstream_ingest::{
    FileSourceConfig, Ingest, IngestConfig, RtspSourceConfig, SourceConfig, StreamConfig,
    TestSourceConfig,
};
use orstream_proto::{EndReason, StreamError, stream_event::Kind};
use orstream_test_support::kafka;
use orstream_test_support::names::unique;
use tokio_util::sync::CancellationToken;

fn errors<'a>(seen: &'a Observed, stream_id: &str) -> Vec<&'a StreamError> {
    seen.events
        .iter()
        .filter(|e| e.stream_id == stream_id)
        .filter_map(|e| match &e.kind {
            Some(Kind::Error(error)) => Some(error),
            _ => None,
        })
        .collect()
}

fn ended(seen: &Observed, stream_id: &str) -> Option<EndReason> {
    seen.events_of(stream_id).into_iter().find_map(|k| match k {
        Kind::Ended(e) => EndReason::try_from(e.reason).ok(),
        _ => None,
    })
}

#[test]
fn bad_sources_are_reported_while_a_good_stream_keeps_flowing() {
    let bus = kafka::bus();
    let dir = std::env::temp_dir().join(unique("ingest-bad"));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("patient-name-missing.mp4");
    let corrupt = dir.join("patient-name-corrupt.mp4");
    // Not any media format: typefinding fails.
    std::fs::write(
        &corrupt,
        (0..64 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    // A file GStreamer plays, but without video: unsupported input.
    let audio_only = dir.join("audio-only.wav");
    common::write_with(&audio_only, "audiotestsrc num-buffers=20 ! wavenc");
    // Nothing listens on port 9 (discard) of the loopback: the connection is refused.
    let unreachable = "rtsp://operator:hunter2@127.0.0.1:9/or1";

    let mut good = StreamConfig::test("good", TestSourceConfig::default());
    good.output.width = 64;
    good.output.height = 48;
    let mut camera = StreamConfig::new(
        "bad-url",
        SourceConfig::Rtsp(RtspSourceConfig {
            location: unreachable.to_owned(),
            ..RtspSourceConfig::default()
        }),
    );
    camera.backoff_initial = Duration::from_millis(200);
    camera.backoff_max = Duration::from_millis(500);
    let file = |id: &str, path: &std::path::Path| {
        StreamConfig::new(
            id,
            SourceConfig::File(FileSourceConfig {
                path: path.to_owned(),
                ..FileSourceConfig::default()
            }),
        )
    };
    let mut big = StreamConfig::test("oversized", TestSourceConfig::default());
    big.output.width = 1280;
    big.output.height = 720;
    big.output.jpeg_quality = 100;

    let (frames_topic, events_topic) = topics(&bus, "bad-input");
    let config = IngestConfig {
        frames_topic: frames_topic.clone(),
        events_topic: events_topic.clone(),
        topic_partitions: 1,
        // Ample for a 64x48 frame, far too small for a 1280x720 one at quality 100.
        max_message_bytes: 24 * 1024,
        streams: vec![
            good,
            camera,
            file("missing", &missing),
            file("corrupt", &corrupt),
            file("audio-only", &audio_only),
            big,
        ],
        ..IngestConfig::default()
    };
    let ingest = Ingest::new(config, bus.clone()).unwrap();
    let token = CancellationToken::new();
    let run_token = token.clone();
    let running = std::thread::spawn(move || ingest.run(run_token));

    let mut seen = Observed::new(&bus, &frames_topic, &events_topic);
    seen.until(
        Duration::from_secs(90),
        "an error from every bad stream",
        |s| {
            ["missing", "corrupt", "audio-only", "oversized"]
                .iter()
                .all(|id| !errors(s, id).is_empty())
                && errors(s, "bad-url").len() >= 2
        },
    );
    // The good stream must go on after all of that.
    let before = seen.frames_of("good").len();
    seen.until(
        Duration::from_secs(60),
        "good frames after the errors",
        |s| s.frames_of("good").len() >= before + 30,
    );
    token.cancel();
    let stats = running.join().unwrap().unwrap();
    seen.drain(Duration::from_secs(3));

    let good_frames = seen.frames_of("good");
    check_identity(&good_frames);
    assert_eq!(ended(&seen, "good"), Some(EndReason::Shutdown));
    for id in ["bad-url", "missing", "corrupt", "audio-only", "oversized"] {
        assert!(seen.frames_of(id).is_empty(), "{id} published frames");
    }

    let camera_errors = errors(&seen, "bad-url");
    assert!(
        camera_errors.iter().all(|e| !e.fatal),
        "a camera is retried"
    );
    assert!(
        camera_errors[0].message.contains("stream bad-url"),
        "{}",
        camera_errors[0].message
    );
    assert_eq!(ended(&seen, "bad-url"), Some(EndReason::Shutdown));

    for id in ["missing", "corrupt", "audio-only"] {
        let errors = errors(&seen, id);
        assert_eq!(errors.len(), 1, "{}", seen.describe_events());
        assert!(errors[0].fatal, "a bad file is not retried");
        assert!(
            errors[0].message.contains(&format!("stream {id}")),
            "{}",
            errors[0].message
        );
        assert_eq!(ended(&seen, id), Some(EndReason::Failed));
    }
    let missing_error = &errors(&seen, "missing")[0].message;
    assert!(
        missing_error.contains("not found") || missing_error.contains("No such file"),
        "{missing_error}"
    );

    let audio = &errors(&seen, "audio-only")[0].message;
    assert!(audio.contains("no video stream"), "{audio}");

    let oversized = errors(&seen, "oversized");
    assert!(!oversized[0].fatal);
    assert!(
        oversized[0].message.contains("max_message_bytes"),
        "{}",
        oversized[0].message
    );
    assert!(
        seen.events_of("oversized").iter().any(|k| matches!(k,
            Kind::Dropped(d) if d.reason.contains("max_message_bytes") && d.count > 0)),
        "{}",
        seen.describe_events()
    );

    // Neither the camera's credentials nor the file names reach the bus.
    for raw in &seen.raw_events {
        let text = String::from_utf8_lossy(raw);
        for secret in ["hunter2", "operator", "patient-name"] {
            assert!(
                !text.contains(secret),
                "an event carries `{secret}`: {text}"
            );
        }
    }
    let by_id = |id: &str| stats.streams.iter().find(|s| s.stream_id == id).unwrap();
    assert_eq!(by_id("good").published, good_frames.len() as u64);
    assert_eq!(by_id("missing").end, EndReason::Failed);
    assert!(by_id("oversized").dropped > 0);
    eprintln!("bad-input: missing file -> {missing_error}");
    eprintln!(
        "bad-input: corrupt file -> {}",
        errors(&seen, "corrupt")[0].message
    );
    eprintln!(
        "bad-input: unreachable camera -> {}",
        camera_errors[0].message
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
