//! File sources end to end through Kafka: archive mode delivers every frame of a generated
//! clip in order; a looped file stays one epoch with increasing capture times; the topics
//! ingest creates keep frames an hour and events a week.
//!
//! Needs the Kafka broker (`scripts/kafka.sh start`); fails when it is down.

mod common;

use std::time::Duration;

use common::{Observed, check_identity, make_clip, topics};
use orstream_ingest::{
    FileSourceConfig, FullPolicy, Ingest, IngestConfig, SourceConfig, StreamConfig,
    TestSourceConfig,
};
use orstream_proto::{EndReason, stream_event::Kind};
use orstream_test_support::kafka;
use orstream_test_support::names::unique;
use tokio_util::sync::CancellationToken;

fn file_stream(stream_id: &str, source: FileSourceConfig) -> StreamConfig {
    let mut stream = StreamConfig::new(stream_id, SourceConfig::File(source));
    stream.full_policy = FullPolicy::Block;
    stream.output.width = 160;
    stream.output.height = 120;
    // A tiny queue: the pipeline must wait for the bus, never drop.
    stream.frame_queue = 2;
    stream
}

fn config(frames: &str, events: &str, stream: StreamConfig) -> IngestConfig {
    IngestConfig {
        frames_topic: frames.to_owned(),
        events_topic: events.to_owned(),
        topic_partitions: 1,
        streams: vec![stream],
        ..IngestConfig::default()
    }
}

#[test]
fn archive_mode_delivers_every_frame_of_a_clip_in_order() {
    const N: u64 = 90;
    let bus = kafka::bus();
    let dir = std::env::temp_dir().join(unique("ingest-clip"));
    std::fs::create_dir_all(&dir).unwrap();
    let clip = dir.join("clip.mp4");
    make_clip(&clip, N as u32, 320, 240);

    let (frames_topic, events_topic) = topics(&bus, "file-archive");
    let stream = file_stream(
        "replay",
        FileSourceConfig {
            path: clip.clone(),
            ..FileSourceConfig::default()
        },
    );
    let ingest = Ingest::new(config(&frames_topic, &events_topic, stream), bus.clone()).unwrap();
    // Runs to the end of the file by itself.
    let stats = ingest.run(CancellationToken::new()).unwrap();
    let replay = &stats.streams[0];
    assert_eq!(replay.published, N, "{stats:?}");
    assert_eq!(replay.dropped, 0, "{stats:?}");
    assert_eq!(replay.end, EndReason::Eos, "{stats:?}");

    let mut seen = Observed::new(&bus, &frames_topic, &events_topic);
    seen.until(Duration::from_secs(60), "every frame", |s| {
        s.frames.len() as u64 >= N && s.events.len() >= 2
    });
    seen.drain(Duration::from_secs(2));
    let frames = seen.frames_of("replay");
    assert_eq!(frames.len() as u64, N);
    check_identity(&frames);
    // In file order: the PTS grows by one frame interval each time.
    for (i, frame) in frames.iter().enumerate() {
        let expected = i as i64 * 1_000_000_000 / 30;
        assert!(
            (frame.pts_ns - expected).abs() < 2_000_000,
            "frame {i} has PTS {} ns, expected about {expected}",
            frame.pts_ns
        );
        assert_eq!((frame.width, frame.height), (160, 120));
    }
    let kinds = seen.events_of("replay");
    assert!(
        matches!(kinds.first(), Some(Kind::Started(s)) if s.source_kind == "file" && (s.fps - 30.0).abs() < 0.01),
        "{}",
        seen.describe_events()
    );
    assert!(
        matches!(kinds.last(), Some(Kind::Ended(e))
            if e.reason == EndReason::Eos as i32 && e.frames_published == N && e.frames_dropped == 0),
        "{}",
        seen.describe_events()
    );
    let path = clip.to_string_lossy().into_owned();
    for raw in &seen.raw_events {
        assert!(
            !String::from_utf8_lossy(raw).contains(&path),
            "an event names the file"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_looped_file_plays_on_in_one_epoch() {
    const N: usize = 15;
    let bus = kafka::bus();
    let dir = std::env::temp_dir().join(unique("ingest-loop"));
    std::fs::create_dir_all(&dir).unwrap();
    let clip = dir.join("loop.mp4");
    make_clip(&clip, N as u32, 160, 120);

    let (frames_topic, events_topic) = topics(&bus, "file-loop");
    let stream = file_stream(
        "looped",
        FileSourceConfig {
            path: clip,
            looping: true,
            realtime: false,
        },
    );
    let ingest = Ingest::new(config(&frames_topic, &events_topic, stream), bus.clone()).unwrap();
    let token = CancellationToken::new();
    let run_token = token.clone();
    let running = std::thread::spawn(move || ingest.run(run_token));
    let mut seen = Observed::new(&bus, &frames_topic, &events_topic);
    seen.until(Duration::from_secs(90), "three passes over the clip", |s| {
        s.frames.len() >= 3 * N
    });
    token.cancel();
    let stats = running.join().unwrap().unwrap();
    seen.drain(Duration::from_secs(2));

    let frames = seen.frames_of("looped");
    check_identity(&frames);
    assert_eq!(stats.streams[0].published, frames.len() as u64);
    assert_eq!(stats.streams[0].epochs, 1, "{stats:?}");
    // The PTS starts over with each pass while seq and capture time go on.
    let restarts = frames
        .windows(2)
        .filter(|w| w[1].pts_ns < w[0].pts_ns)
        .count();
    assert!(
        restarts >= 2,
        "{restarts} restarts of the PTS in {} frames",
        frames.len()
    );
    assert!(
        !seen
            .events_of("looped")
            .iter()
            .any(|k| matches!(k, Kind::Discontinuity(_) | Kind::Error(_))),
        "{}",
        seen.describe_events()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The topics ingest creates keep frames for `frames_retention` (an hour by default: raw video,
/// worth nothing once inferred) and events a week.
#[test]
fn the_topics_ingest_creates_keep_frames_an_hour_and_events_a_week() {
    let bus = kafka::bus();
    let base = unique("test.ingest.retention");
    let (frames_topic, events_topic) = (format!("{base}.frames"), format!("{base}.streams"));
    let stream = StreamConfig::new(
        "bars",
        SourceConfig::Test(TestSourceConfig {
            num_buffers: Some(3),
            is_live: false,
        }),
    );
    let ingest = Ingest::new(config(&frames_topic, &events_topic, stream), bus.clone()).unwrap();
    let stats = ingest.run(CancellationToken::new()).unwrap();
    assert_eq!(stats.streams[0].published, 3, "{stats:?}");
    let retention = |topic: &str| bus.topic_retention(topic, Duration::from_secs(30)).unwrap();
    assert_eq!(retention(&frames_topic), Some(Duration::from_secs(3600)));
    assert_eq!(
        retention(&events_topic),
        Some(Duration::from_secs(7 * 24 * 3600))
    );
}
