//! RTSP cameras end to end: an in-process RTSP server serving H.264 -> ingest -> Kafka.
//!
//! Needs the Kafka broker (`scripts/kafka.sh start`); fails when it is down. No timing
//! assertions: rates and clocks are checked with generous tolerances as correctness checks.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a failed expectation is the test failing"
)]

mod common;

use std::time::Duration;

use common::{Observed, RtspServer, check_identity, topics};
use orstream_ingest::{Ingest, IngestConfig, RtspSourceConfig, SourceConfig, Stats, StreamConfig};
use orstream_proto::{ClockSource, EndReason, stream_event::Kind};
use orstream_test_support::kafka;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(90);

fn camera(stream_id: &str, url: &str) -> StreamConfig {
    let mut stream = StreamConfig::new(
        stream_id,
        SourceConfig::Rtsp(RtspSourceConfig {
            location: url.to_owned(),
            latency: Duration::from_millis(100),
            ..RtspSourceConfig::default()
        }),
    );
    stream.case_id = "case-rtsp".into();
    stream.output.width = 160;
    stream.output.height = 120;
    stream.stall_timeout = Duration::from_secs(3);
    stream.connect_timeout = Duration::from_secs(10);
    stream.backoff_initial = Duration::from_millis(200);
    stream.backoff_max = Duration::from_secs(1);
    stream
}

struct Running {
    token: CancellationToken,
    thread: std::thread::JoinHandle<Result<Stats, orstream_ingest::IngestError>>,
}

fn start(
    bus: &orstream_bus::Bus,
    frames: &str,
    events: &str,
    streams: Vec<StreamConfig>,
) -> Running {
    let config = IngestConfig {
        frames_topic: frames.to_owned(),
        events_topic: events.to_owned(),
        topic_partitions: 1,
        streams,
        ..IngestConfig::default()
    };
    let ingest = Ingest::new(config, bus.clone()).expect("valid config");
    let token = CancellationToken::new();
    let run_token = token.clone();
    let thread = std::thread::spawn(move || ingest.run(run_token));
    Running { token, thread }
}

impl Running {
    fn stop(self) -> Stats {
        self.token.cancel();
        self.thread
            .join()
            .expect("ingest thread")
            .expect("ingest stops cleanly")
    }
}

#[test]
fn rtsp_frames_arrive_capped_gap_free_and_on_the_wall_clock() {
    let bus = kafka::bus();
    let server = RtspServer::start();
    let (frames_topic, events_topic) = topics(&bus, "rtsp-live");
    let mut stream = camera("cam-live", &server.url());
    stream.output.max_fps = Some(10);
    let running = start(&bus, &frames_topic, &events_topic, vec![stream]);
    let mut seen = Observed::new(&bus, &frames_topic, &events_topic);
    seen.until(WAIT, "60 frames", |s| s.frames.len() >= 60);
    let stats = running.stop();
    seen.drain(Duration::from_secs(3));

    let frames = seen.frames_of("cam-live");
    check_identity(&frames);
    assert_eq!(stats.streams[0].published, frames.len() as u64, "{stats:?}");
    assert_eq!(stats.streams[0].end, EndReason::Shutdown);
    let epochs: std::collections::BTreeSet<u64> = frames.iter().map(|f| f.session_epoch).collect();
    assert_eq!(
        epochs.len(),
        1,
        "one session expected: {}",
        seen.describe_events()
    );

    // The rate cap: 30 fps in, about 10 out (generous tolerance: a check of the cap, not of
    // the machine's speed).
    let first = frames.first().unwrap().capture_time_ns;
    let last = frames.last().unwrap().capture_time_ns;
    let fps = (frames.len() - 1) as f64 / ((last - first) as f64 / 1e9);
    assert!(
        (7.0..=13.0).contains(&fps),
        "capped rate {fps:.1} fps, expected about 10"
    );

    // Capture times are on the wall clock: never after the frame was read back, and not long
    // before it.
    for (frame, received_ns) in &seen.frames {
        let age_s = (*received_ns - frame.capture_time_ns) as f64 / 1e9;
        assert!(
            (-0.5..10.0).contains(&age_s),
            "frame seq {} captured {age_s:.2}s before it was read",
            frame.seq
        );
        assert_eq!((frame.width, frame.height), (160, 120));
        assert_eq!(&frame.data[..2], &[0xFF, 0xD8]);
        assert_eq!(frame.case_id, "case-rtsp");
    }
    let ntp = frames
        .iter()
        .filter(|f| f.clock_source == ClockSource::CameraNtp as i32)
        .count();
    eprintln!(
        "rtsp-live: {} frames at {fps:.1} fps, {ntp} with camera NTP time, {} with host time",
        frames.len(),
        frames.len() - ntp
    );

    let kinds = seen.events_of("cam-live");
    assert!(
        matches!(kinds.first(), Some(Kind::Started(s)) if s.source_kind == "rtsp" && s.width == 160),
        "{}",
        seen.describe_events()
    );
    assert!(
        matches!(kinds.last(), Some(Kind::Ended(e))
            if e.reason == EndReason::Shutdown as i32 && e.frames_published == frames.len() as u64),
        "{}",
        seen.describe_events()
    );
    assert_no_location(&seen, &server.url());
}

#[test]
fn a_restarted_server_gives_a_new_epoch_and_exactly_one_discontinuity() {
    let bus = kafka::bus();
    let server = RtspServer::start();
    let (frames_topic, events_topic) = topics(&bus, "rtsp-restart");
    let running = start(
        &bus,
        &frames_topic,
        &events_topic,
        vec![camera("cam-restart", &server.url())],
    );
    let mut seen = Observed::new(&bus, &frames_topic, &events_topic);
    seen.until(WAIT, "30 frames before the outage", |s| {
        s.frames.len() >= 30
    });
    server.stop();
    std::thread::sleep(Duration::from_secs(3));
    server.restart();
    seen.until(WAIT, "30 frames of a new epoch", |s| {
        let Some((first, _)) = s.frames.first() else {
            return false;
        };
        s.frames
            .iter()
            .filter(|(f, _)| f.session_epoch != first.session_epoch)
            .count()
            >= 30
    });
    let stats = running.stop();
    seen.drain(Duration::from_secs(3));

    let frames = seen.frames_of("cam-restart");
    check_identity(&frames);
    let first_epoch = frames[0].session_epoch;
    let last_of_first = frames
        .iter()
        .rfind(|f| f.session_epoch == first_epoch)
        .unwrap();
    let new_epoch = frames.last().unwrap().session_epoch;
    assert!(new_epoch > first_epoch);

    let kinds = seen.events_of("cam-restart");
    let discontinuities: Vec<_> = kinds
        .iter()
        .filter_map(|k| match k {
            Kind::Discontinuity(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(discontinuities.len(), 1, "{}", seen.describe_events());
    let gap = discontinuities[0];
    assert_eq!(gap.previous_epoch, first_epoch);
    assert_eq!(gap.previous_last_seq, Some(last_of_first.seq));
    assert_eq!(gap.gap_start_ns, last_of_first.capture_time_ns);
    assert!(
        gap.gap_end_ns - gap.gap_start_ns >= 1_000_000_000,
        "the 3 s outage shows as a gap of {} ns",
        gap.gap_end_ns - gap.gap_start_ns
    );
    assert!(!gap.reason.is_empty());
    let epochs: std::collections::BTreeSet<u64> = frames.iter().map(|f| f.session_epoch).collect();
    assert_eq!(epochs.len(), 2, "{}", seen.describe_events());
    let started = kinds
        .iter()
        .filter(|k| matches!(k, Kind::Started(_)))
        .count();
    assert_eq!(started, 2, "{}", seen.describe_events());
    assert!(
        kinds
            .iter()
            .all(|k| !matches!(k, Kind::Error(e) if e.fatal)),
        "a camera outage is never fatal: {}",
        seen.describe_events()
    );
    assert_eq!(stats.streams[0].epochs, 2, "{stats:?}");
    assert_eq!(stats.streams[0].published, frames.len() as u64);
    eprintln!("rtsp-restart: discontinuity reason: {}", gap.reason);
    assert_no_location(&seen, &server.url());
}

#[test]
fn a_silent_camera_trips_the_watchdog_and_is_rebuilt() {
    let bus = kafka::bus();
    let server = RtspServer::start();
    let (frames_topic, events_topic) = topics(&bus, "rtsp-stall");
    let mut stream = camera("cam-stall", &server.url());
    stream.stall_timeout = Duration::from_secs(2);
    let running = start(&bus, &frames_topic, &events_topic, vec![stream]);
    let mut seen = Observed::new(&bus, &frames_topic, &events_topic);
    seen.until(WAIT, "20 frames", |s| s.frames.len() >= 20);
    // No end of stream, the connection stays open: only the watchdog can notice.
    server.pause_newest();
    seen.until(WAIT, "a stall error", |s| {
        s.events_of("cam-stall")
            .iter()
            .any(|k| matches!(k, Kind::Error(e) if e.message.contains("stall")))
    });
    // The rebuilt session gets fresh media from the server: frames resume under a new epoch.
    seen.until(WAIT, "a discontinuity after the stall", |s| {
        s.events_of("cam-stall")
            .iter()
            .any(|k| matches!(k, Kind::Discontinuity(d) if d.reason.contains("stall")))
    });
    running.stop();
    seen.drain(Duration::from_secs(3));
    let frames = seen.frames_of("cam-stall");
    check_identity(&frames);
    let error = seen
        .events_of("cam-stall")
        .into_iter()
        .find_map(|k| match k {
            Kind::Error(e) => Some(e.clone()),
            _ => None,
        })
        .unwrap();
    assert!(error.message.contains("cam-stall"), "{}", error.message);
    assert!(!error.fatal);
    assert!(server.media_served() >= 2);
}

/// Events never carry the camera's URL (it may hold credentials).
fn assert_no_location(seen: &Observed, url: &str) {
    let host_port = url.trim_start_matches("rtsp://");
    for raw in &seen.raw_events {
        let text = String::from_utf8_lossy(raw);
        assert!(
            !text.contains(host_port),
            "an event carries the location: {text}"
        );
    }
}

#[test]
fn a_camera_that_asks_for_a_login_gets_the_password_from_a_file() {
    let bus = kafka::bus();
    let password = "cam-pw-7f3a9c";
    let server = RtspServer::with_login("orcam", password);
    let password_file =
        std::env::temp_dir().join(orstream_test_support::names::unique("cam-password"));
    std::fs::write(&password_file, format!("{password}\n")).unwrap();
    let (frames_topic, events_topic) = topics(&bus, "rtsp-login");
    let mut stream = camera("cam-login", &server.url());
    let SourceConfig::Rtsp(rtsp) = &mut stream.source else {
        unreachable!()
    };
    rtsp.user = Some("orcam".into());
    let password_path = password_file.clone();
    rtsp.password_file = Some(password_file);
    let running = start(&bus, &frames_topic, &events_topic, vec![stream]);
    let mut seen = Observed::new(&bus, &frames_topic, &events_topic);
    seen.until(WAIT, "20 frames", |s| s.frames.len() >= 20);
    let stats = running.stop();
    seen.drain(Duration::from_secs(3));
    std::fs::remove_file(&password_path).unwrap();
    assert_eq!(stats.streams[0].end, EndReason::Shutdown);
    check_identity(&seen.frames_of("cam-login"));
    for raw in &seen.raw_events {
        assert!(
            !String::from_utf8_lossy(raw).contains(password),
            "an event carries the password"
        );
    }
}
