//! `orstream ingest` as operators run it: the example configuration parses, and SIGTERM stops
//! a running service with exit code 0 after everything it captured reached Kafka.
//!
//! A third case starts it with no broker at all: it waits, alive and not ready.
//!
//! The SIGTERM test needs the Kafka broker (`scripts/kafka.sh start`); it fails when it is down.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orstream_bus::Bus;
use orstream_proto::{EndReason, Frame, StreamEvent, stream_event::Kind};
use orstream_test_support::names::unique;
use orstream_test_support::service::{Service, health};
use orstream_test_support::wait::wait_for;
use orstream_test_support::{kafka, process, topic};

const ORSTREAM: &str = env!("CARGO_BIN_EXE_orstream");

#[test]
fn the_example_configuration_is_valid() {
    let text = include_str!("../config/ingest.example.toml");
    let service = orstream_ingest::ServiceConfig::from_toml(text).unwrap();
    service.validate().unwrap();
    assert!(service.ingest.streams.len() >= 4);
    assert!(
        service.ingest.gate.is_some(),
        "the example shows the privacy gate"
    );
    let kinds: Vec<&str> = service
        .ingest
        .streams
        .iter()
        .map(|s| s.source.kind())
        .collect();
    for kind in ["rtsp", "file", "v4l2", "test"] {
        assert!(kinds.contains(&kind), "the example lacks a {kind} stream");
    }

    let output = Command::new(ORSTREAM)
        .args(["ingest", "--check", "--config"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/ingest.example.toml"
        ))
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("configuration OK"));
}

#[test]
fn invalid_flags_are_reported_with_every_problem() {
    let output = Command::new(ORSTREAM)
        .args([
            "ingest",
            "--check",
            "--stream",
            "=test:",
            "--stream",
            "cam=http://user:secret@host/x",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unsupported scheme `http`"), "{stderr}");

    let output = Command::new(ORSTREAM)
        .args([
            "ingest",
            "--check",
            "--stream",
            "=test:",
            "--events-topic",
            "or.frames.v1",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("streams[0].stream_id"), "{stderr}");
    assert!(stderr.contains("events_topic"), "{stderr}");
}

#[test]
fn sigterm_drains_flushes_and_exits_zero() {
    let config = kafka::config();
    let bootstrap = config.bootstrap_servers.clone();
    let bus = Bus::kafka(config).unwrap();
    let suffix = unique("test.ingest-cli");
    let frames_topic = format!("{suffix}.frames");
    let events_topic = format!("{suffix}.streams");
    for topic in [&frames_topic, &events_topic] {
        bus.create_topic(topic, 1, Duration::from_secs(30)).unwrap();
    }
    let mut child = Command::new(ORSTREAM)
        .args([
            "ingest",
            "--stream",
            "cam-1=test:",
            "--stream",
            "cam-2=test:",
        ])
        .args(["--width", "64", "--height", "48", "--case-id", "case-cli"])
        .args(["--kafka", &bootstrap])
        .args([
            "--frames-topic",
            &frames_topic,
            "--events-topic",
            &events_topic,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let frames_reader = topic::reader(&bus, &frames_topic);
    let mut frames: Vec<Frame> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while frames.len() < 40 {
        assert!(
            Instant::now() < deadline,
            "only {} frames arrived",
            frames.len()
        );
        if let Ok(Some(message)) = frames_reader.poll(Duration::from_millis(200)) {
            frames.push(orstream_proto::decode(&message.payload).unwrap());
        }
    }

    let status = process::terminate(&mut child, "orstream ingest", Duration::from_secs(60));
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr).unwrap();
    }
    assert!(status.success(), "exit {status:?}: {stderr}");

    // Everything the service counted as published is on the topic, and it said so.
    let idle_after = |reader: &orstream_bus::Consumer, sink: &mut dyn FnMut(&[u8])| {
        let mut last = Instant::now();
        while last.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(message)) = reader.poll(Duration::from_millis(200)) {
                sink(&message.payload);
                last = Instant::now();
            }
        }
    };
    idle_after(&frames_reader, &mut |payload| {
        frames.push(orstream_proto::decode(payload).unwrap());
    });
    let events_reader = topic::reader(&bus, &events_topic);
    let mut events: Vec<StreamEvent> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while events
        .iter()
        .filter(|e| matches!(e.kind, Some(Kind::Ended(_))))
        .count()
        < 2
    {
        assert!(Instant::now() < deadline, "no ended events: {events:?}");
        if let Ok(Some(message)) = events_reader.poll(Duration::from_millis(200)) {
            events.push(orstream_proto::decode(&message.payload).unwrap());
        }
    }
    for stream_id in ["cam-1", "cam-2"] {
        let seqs: Vec<u64> = frames
            .iter()
            .filter(|f| f.stream_id == stream_id)
            .map(|f| f.seq)
            .collect();
        assert_eq!(
            seqs,
            (0..seqs.len() as u64).collect::<Vec<_>>(),
            "{stream_id}"
        );
        let ended = events
            .iter()
            .filter(|e| e.stream_id == stream_id)
            .find_map(|e| match &e.kind {
                Some(Kind::Ended(ended)) => Some(ended.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(ended.reason, EndReason::Shutdown as i32);
        assert_eq!(
            ended.frames_published,
            seqs.len() as u64,
            "{stream_id}: {stderr}"
        );
    }
    assert!(frames.iter().all(|f| f.case_id == "case-cli"));
}

/// A stack may start ingest before the broker answers: the service waits (alive, not ready)
/// and keeps trying to create its topics instead of exiting, and SIGTERM still stops it with
/// exit code 0.
#[test]
fn an_absent_broker_is_waited_for_alive_and_not_ready() {
    // A port nothing listens on: connections are refused at once, for as long as the test runs.
    let nobody = orstream_test_support::metrics::free_port();
    let service = Service::start(ORSTREAM, env!("CARGO_MANIFEST_DIR"), "ingest", |listen| {
        format!(
            "frames_topic = \"{}\"\nevents_topic = \"{}\"\ncreate_topics = true\n\
             [[streams]]\nstream_id = \"cam-wait\"\ncase_id = \"case-wait\"\nmode = \"live\"\n\
             source = {{ kind = \"test\", is_live = true }}\n\
             output = {{ width = 64, height = 48, max_fps = 5 }}\n\
             [kafka]\nbootstrap_servers = \"{nobody}\"\n\
             [telemetry]\nmetrics_listen = \"{listen}\"\nlog_filter = \"info\"\n",
            unique("test.ingest-wait.frames"),
            unique("test.ingest-wait.streams"),
        )
    });
    // The first try at creating a topic gives up after its timeout; the service says it waits
    // and tries again instead of exiting.
    let mut service = service;
    wait_for(
        "ingest to say it waits for the broker",
        Duration::from_secs(60),
        || {
            service.still_running();
            service
                .log()
                .contains("the broker does not answer yet; retrying")
                .then_some(())
        },
    );
    let (ready, alive) = health(service.listen);
    assert_eq!(
        ready,
        Some(false),
        "ready without a broker:\n{}",
        service.log()
    );
    assert_eq!(
        alive,
        Some(true),
        "not alive while waiting:\n{}",
        service.log()
    );
    // The same for alerts: the broker check is exported as failing.
    let (_, metrics) = orstream_test_support::metrics::get(service.listen, "/metrics").unwrap();
    assert!(
        metrics.contains("orstream_ready{orstream_check=\"broker\"} 0"),
        "no failing broker check in /metrics:\n{metrics}"
    );
    service.stop();
}
