//! The documented downstream consumer (`examples/python/or_events_consumer.py`) against the
//! real broker: classes generated from the contract by `scripts/python-contract.sh`, its own
//! group, read-committed. Derived events and track frames are published as the sink publishes
//! them (one event twice, as after a sink crash; one in a transaction that is aborted; one
//! message without the schema header; one that is not the contract's): the consumer prints each
//! committed item once, names the two bad messages on stderr, and commits its offsets so a
//! second run of the same group prints nothing again.
//!
//! Needs `scripts/kafka.sh start` and the venv (`scripts/install-python.sh`); fails, never
//! skips, without them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use orstream_bus::Record;
use orstream_proto::{Category, EventKind, Point, SurgicalEvent, TrackFrame, TrackedInstance};
use orstream_test_support::kafka;
use orstream_test_support::names::unique;
use orstream_test_support::topic::{publish, versioned};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn event(id: &str, label: &str, start_s: i64) -> SurgicalEvent {
    SurgicalEvent {
        event_id: id.to_owned(),
        case_id: "case-py".to_owned(),
        stream_id: "OR3/lap".to_owned(),
        kind: EventKind::Presence as i32,
        class_id: 1,
        label: label.to_owned(),
        category: Category::Tool as i32,
        start_time_ns: 1_800_000_000_000_000_000 + start_s * 1_000_000_000,
        end_time_ns: 1_800_000_000_000_000_000 + (start_s + 4) * 1_000_000_000,
        start_offset_ns: start_s * 1_000_000_000,
        end_offset_ns: (start_s + 4) * 1_000_000_000,
        peak_confidence: 0.9,
        mean_confidence: 0.8,
        first_seq: 10,
        last_seq: 58,
        track_ids: vec![1],
        ..SurgicalEvent::default()
    }
}

fn frame(seq: u64) -> TrackFrame {
    TrackFrame {
        stream_id: "OR3/lap".to_owned(),
        case_id: "case-py".to_owned(),
        session_epoch: 0,
        seq,
        capture_time_ns: 1_800_000_000_000_000_000 + seq as i64 * 83_000_000,
        tracks: vec![TrackedInstance {
            track_id: 1,
            class_id: 1,
            label: "grasper".to_owned(),
            centroid: Some(Point { x: 0.4, y: 0.5 }),
            ..TrackedInstance::default()
        }],
    }
}

fn run_consumer(contract: &Path, events: &str, tracks: &str, group: &str) -> (Vec<Value>, String) {
    let output = Command::new(Path::new(ROOT).join(".venv/bin/python"))
        .arg(Path::new(ROOT).join("examples/python/or_events_consumer.py"))
        .args(["--bootstrap", &kafka::config().bootstrap_servers])
        .args([
            "--group",
            group,
            "--events-topic",
            events,
            "--tracks-topic",
            tracks,
        ])
        .arg("--contract")
        .arg(contract)
        .args(["--idle-exit", "8"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "the consumer failed:\n{stderr}");
    let items = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (items, stderr)
}

#[test]
fn the_python_consumer_reads_each_committed_event_once() {
    let contract = tempfile::tempdir().unwrap();
    let generated = Command::new(Path::new(ROOT).join("scripts/python-contract.sh"))
        .arg(contract.path())
        .status()
        .unwrap();
    assert!(generated.success(), "generating the contract's classes");

    let bus = kafka::bus();
    let (events, tracks) = (unique("test.py.events"), unique("test.py.tracks"));
    for topic in [&events, &tracks] {
        bus.create_topic(topic, 2, Duration::from_secs(30)).unwrap();
    }
    let grasper = event("ev-grasper", "grasper", 3);
    let hook = event("ev-hook", "hook", 9);
    let record = |e: &SurgicalEvent| versioned(&events, &e.case_id, orstream_proto::encode(e));
    publish(
        &bus,
        &[
            record(&grasper),
            record(&hook),
            // Again, as a sink publishes after a crash between the ack and the outbox delete.
            record(&grasper),
            Record::new(events.clone(), orstream_proto::encode(&hook)).with_key("case-py"),
            versioned(&events, "case-py", vec![0xff, 0xff, 0xff]),
            versioned(&tracks, "OR3/lap", orstream_proto::encode(&frame(1))),
            versioned(&tracks, "OR3/lap", orstream_proto::encode(&frame(2))),
            versioned(&tracks, "OR3/lap", orstream_proto::encode(&frame(2))),
        ],
    );
    // An event in a transaction that is aborted: a read-committed consumer never sees it.
    let aborted = event("ev-aborted", "scissors", 20);
    let producer = bus.transactional_producer(&unique("test.py.tx")).unwrap();
    producer.init(Duration::from_secs(30)).unwrap();
    producer.begin().unwrap();
    let sent = producer
        .send(&record(&aborted), Duration::from_secs(30))
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    sent.wait(Duration::from_secs(30)).unwrap();
    producer.abort(Duration::from_secs(30)).unwrap();
    // A committed one after it.
    let clip = event("ev-clip", "clip applier", 30);
    publish(&bus, &[record(&clip)]);

    let group = unique("test.py.group");
    let (items, stderr) = run_consumer(contract.path(), &events, &tracks, &group);
    let mut ids: Vec<&str> = items
        .iter()
        .filter(|i| i["item"] == "event")
        .map(|i| i["event_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["ev-clip", "ev-grasper", "ev-hook"], "{items:?}");
    let grasper_seen = items
        .iter()
        .find(|i| i["event_id"] == "ev-grasper")
        .unwrap();
    assert_eq!(grasper_seen["label"], "grasper");
    assert_eq!(grasper_seen["kind"], "EVENT_KIND_PRESENCE");
    assert_eq!(
        grasper_seen["start_offset_ns"], "3000000000",
        "int64 as JSON strings"
    );
    let mut seqs: Vec<&str> = items
        .iter()
        .filter(|i| i["item"] == "track_frame")
        .map(|i| i["seq"].as_str().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(seqs, ["1", "2"], "{items:?}");
    assert_eq!(
        stderr.matches("skipped").count(),
        2,
        "the header-less and the broken message are named:\n{stderr}"
    );
    assert!(stderr.contains("schema version None"), "{stderr}");
    assert!(stderr.contains("not a SurgicalEvent"), "{stderr}");

    // Its offsets are committed: the same group reads nothing again.
    let (again, _) = run_consumer(contract.path(), &events, &tracks, &group);
    assert!(again.is_empty(), "{again:?}");
}
