//! The sink end to end over the in-process bus, against both stores: scripted results become
//! the expected events and gaps, in the record and on the events topic; interrupted runs give
//! the record of an uninterrupted one; bad input goes to the DLQ and the anomalies table; the
//! store's offsets, not the group's, decide where reading resumes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

mod common;

use std::collections::{BTreeMap, BTreeSet};

use orstream_bus::{Bus, Headers, Offsets, Record, TopicPartition};
use orstream_proto::{FrameResult, SurgicalEvent, headers, topics};
use orstream_record::{BackendKind, query};
use orstream_sink::derive::StreamState;
use orstream_sink::derive::{Derived, Rules};
use orstream_test_support::script::Script;
use orstream_test_support::topic::{self, result_record, stream_record};

use common::{
    Topics, config, expected, expected_ids, publish, read_topic, start, store, track_event_ids,
};

fn scripted_input_becomes_the_expected_record(kind: BackendKind) {
    let bus = Bus::memory();
    let topics = Topics::unique();
    topics.create(&bus, 3);
    let script = Script::new("case-7", 3, 600);
    let total = publish(&bus, &topics, &script);
    let isolated = store(kind);
    let config = config(&isolated, &topics);
    let rules = Rules::from(&config.derive);
    let sink = start(&bus, config);
    sink.wait_for("every message stored", |s| s.messages >= total);
    sink.wait_for("every event published", |s| {
        s.published >= s.presences + s.gaps
    });
    let stats = sink.stop();
    assert_eq!(stats.messages, total);
    assert_eq!(stats.results, 1_800);

    let expected = expected(&script, &rules);
    let (presences, gaps) = expected_ids(&expected);
    assert!(
        presences.len() > 20 && gaps.len() >= 3,
        "the script exercises the rules"
    );
    let mut s = isolated.open().unwrap();
    let timeline = query::timeline::<StreamState>(&mut s, "case-7")
        .unwrap()
        .unwrap();
    let got: BTreeMap<String, (i64, i64)> = timeline
        .events
        .iter()
        .map(|e| {
            assert!(!e.open, "the streams ended: nothing stays open");
            (e.event_id.clone(), (e.start_ns, e.end_ns))
        })
        .collect();
    assert_eq!(got, presences);
    let got: BTreeMap<String, (i64, i64)> = timeline
        .gaps
        .iter()
        .map(|g| (g.event_id.clone(), (g.start_ns, g.end_ns)))
        .collect();
    assert_eq!(got, gaps);
    assert_eq!(
        timeline.started_ns, script.t0_ns,
        "offsets count from the first frame"
    );
    assert!(
        timeline
            .gaps
            .iter()
            .any(|g| g.kind == "discontinuity" && g.reason.contains("stall: no buffer for 2s")),
        "a discontinuity carries the source's reason: {:?}",
        timeline.gaps
    );
    let anomalies = expected
        .iter()
        .filter(|o| matches!(o, Derived::Anomaly(_)))
        .count();
    assert_eq!(s.snapshot().unwrap()["anomalies"].len(), anomalies);
    assert_eq!(s.snapshot().unwrap()["frames"].len(), 1_800);

    // The same events, once each, on the events topic, keyed by case, with offsets.
    let tracks = track_event_ids(&expected);
    assert!(!tracks.is_empty(), "the script's tools become tracks");
    let published = read_topic(
        &bus,
        &topics.events,
        presences.len() + gaps.len() + tracks.len(),
    );
    let mut ids = BTreeSet::new();
    for m in &published {
        assert_eq!(m.key.as_deref(), Some(&b"case-7"[..]));
        let event: SurgicalEvent = orstream_proto::decode(&m.payload).unwrap();
        assert_eq!(
            event.start_offset_ns,
            event.start_time_ns - script.t0_ns,
            "{event:?}"
        );
        assert!(ids.insert(event.event_id), "published twice");
    }
    let all: BTreeSet<String> = presences
        .keys()
        .chain(gaps.keys())
        .cloned()
        .chain(tracks)
        .collect();
    assert_eq!(ids, all);
    assert_eq!(s.outbox(10).unwrap(), vec![], "the outbox is drained");
}

/// Two sinks of one group on one database, each holding some of the partitions: every event
/// is published once, by the sink that holds the partition it came from; none twice, none
/// lost, and the outbox ends empty.
fn two_sinks_on_one_database_publish_every_event_once(kind: BackendKind) {
    let bus = Bus::memory();
    let topics = Topics::unique();
    topics.create(&bus, 4);
    let script = Script::new("case-9", 4, 300);
    let isolated = store(kind);
    let config = config(&isolated, &topics);
    let rules = Rules::from(&config.derive);
    let first = start(&bus, config.clone());
    let second = start(&bus, config);
    // Both join the group before there is anything to read, so each holds partitions.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let total = publish(&bus, &topics, &script);
    let stored = || first.progress.stats().messages + second.progress.stats().messages;
    orstream_test_support::wait::showing("every message stored", common::TIMEOUT, || {
        (stored() >= total)
            .then_some(())
            .ok_or_else(|| format!("{}", stored()))
    });
    let expected = expected(&script, &rules);
    let (presences, gaps) = expected_ids(&expected);
    let tracks = track_event_ids(&expected);
    let wanted = presences.len() + gaps.len() + tracks.len();
    let published = read_topic(&bus, &topics.events, wanted);
    let (a, b) = (first.stop(), second.stop());
    assert!(
        a.messages > 0 && b.messages > 0,
        "both sinks took partitions: {} and {} messages",
        a.messages,
        b.messages
    );
    let mut ids = BTreeSet::new();
    for m in &published {
        let event: SurgicalEvent = orstream_proto::decode(&m.payload).unwrap();
        assert!(ids.insert(event.event_id), "published twice");
    }
    assert_eq!(ids.len(), wanted);
    let mut s = isolated.open().unwrap();
    assert_eq!(s.outbox(10).unwrap(), vec![], "the outbox is drained");
}

fn interrupted_runs_give_the_record_of_an_uninterrupted_one(kind: BackendKind) {
    let bus = Bus::memory();
    let topics = Topics::unique();
    topics.create(&bus, 2);
    let script = Script::new("case-9", 2, 500);
    let records = common::records(&topics, &script);
    let total = records.len() as u64;

    // Small batches, stopped and restarted: the messages arrive in chunks of about 300, and
    // each run stops once it has stored what has arrived, so the record is built over several
    // runs however the threads are scheduled.
    let interrupted = store(kind);
    let mut stored = 0;
    let mut runs = 0;
    for chunk in records.chunks(300) {
        topic::publish(&bus, chunk);
        let published = stored + chunk.len() as u64;
        let mut c = config(&interrupted, &topics);
        c.batch_max_messages = 40;
        let sink = start(&bus, c);
        sink.wait_for("progress", |s| stored + s.messages >= published);
        stored += sink.stop().messages;
        runs += 1;
    }

    // The same input, read in one run.
    let clean = store(kind);
    let sink = start(&bus, config(&clean, &topics));
    sink.wait_for("the clean run", |s| s.messages >= total);
    sink.stop();

    assert!(
        runs >= 3,
        "the record was built in {runs} runs, expected several"
    );
    assert_eq!(
        stored, total,
        "every message stored exactly once over all runs"
    );
    let a = clean.open().unwrap().snapshot().unwrap();
    let b = interrupted.open().unwrap().snapshot().unwrap();
    for table in a.keys() {
        assert_eq!(a[table], b[table], "table {table} differs");
    }
}

fn bad_input_is_dead_lettered_or_recorded_never_fatal(kind: BackendKind) {
    let bus = Bus::memory();
    let topics = Topics::unique();
    topics.create(&bus, 1);
    let script = Script::new("case-3", 1, 30);
    let producer = bus.producer().unwrap();
    let send = |record: Record| {
        producer
            .send(&record, common::TIMEOUT)
            .unwrap()
            .wait(common::TIMEOUT)
            .unwrap()
    };
    for i in 0..20 {
        send(result_record(&topics.results, &script.result(0, i)));
    }
    // Undecodable, then a schema version this sink does not know, then a result going back.
    let garbage = send(
        Record::new(topics.results.clone(), vec![0xff, 0x01, 0x02])
            .with_key(b"case-3-cam-0".to_vec())
            .with_header(headers::SCHEMA_VERSION, "1"),
    );
    let future = send(
        result_record(&topics.results, &script.result(0, 20))
            .with_headers(Headers::new().with(headers::SCHEMA_VERSION, "2")),
    );
    send(result_record(&topics.results, &script.result(0, 5)));
    // A stream nobody announced, first seen mid-way.
    let mut stranger = script.result(0, 50);
    stranger.stream_id = "case-3-cam-unknown".into();
    send(result_record(&topics.results, &stranger));
    send(
        Record::new(topics.streams.clone(), b"not protobuf".to_vec())
            .with_header(headers::SCHEMA_VERSION, "1"),
    );
    for i in 20..30 {
        send(result_record(&topics.results, &script.result(0, i)));
    }
    for e in script.stream_events(0) {
        send(stream_record(&topics.streams, &e));
    }

    let isolated = store(kind);
    let sink = start(&bus, config(&isolated, &topics));
    sink.wait_for("everything stored", |s| s.messages >= 20 + 5 + 10 + 2);
    assert!(sink.is_running(), "bad input never stops the sink");
    let stats = sink.stop();
    assert_eq!(stats.dead_letters, 3);

    let dlq = read_topic(&bus, &topics::dlq(&topics.results), 2);
    assert_eq!(dlq.len(), 2);
    let header = |m: &orstream_bus::Message, h: &str| {
        String::from_utf8_lossy(m.headers.get(h).unwrap_or_default()).into_owned()
    };
    assert_eq!(header(&dlq[0], headers::DLQ_SOURCE_TOPIC), topics.results);
    assert_eq!(
        header(&dlq[0], headers::DLQ_SOURCE_OFFSET),
        garbage.offset.to_string()
    );
    assert!(header(&dlq[0], headers::DLQ_ERROR).contains("FrameResult"));
    assert_eq!(
        header(&dlq[1], headers::DLQ_SOURCE_OFFSET),
        future.offset.to_string()
    );
    assert!(header(&dlq[1], headers::DLQ_ERROR).contains("schema version"));
    assert_eq!(dlq[0].payload.as_ref(), &[0xff, 0x01, 0x02]);
    assert_eq!(read_topic(&bus, &topics::dlq(&topics.streams), 1).len(), 1);

    let mut s = isolated.open().unwrap();
    let kinds: Vec<String> = s
        .query(
            "SELECT kind FROM anomalies ORDER BY source_topic, source_offset",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r[0].text().to_owned())
        .collect();
    let kinds: BTreeSet<&str> = kinds.iter().map(String::as_str).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "undecodable",
            "schema_version",
            "out_of_order",
            "unknown_stream"
        ])
    );
    // The valid results all made it, the out-of-order one was not stored twice.
    let frames = s
        .query(
            "SELECT COUNT(*) FROM frames WHERE stream_id = 'case-3-cam-0'",
            &[],
        )
        .unwrap();
    assert_eq!(frames[0][0].int(), 30);
}

fn reading_resumes_from_the_store_not_the_group(kind: BackendKind) {
    let bus = Bus::memory();
    let topics = Topics::unique();
    topics.create(&bus, 2);
    let script = Script::new("case-5", 2, 100);
    let total = publish(&bus, &topics, &script);
    let isolated = store(kind);
    let config = config(&isolated, &topics);
    // The group claims everything was read already; the (empty) store knows better.
    let consumer = bus.consumer(&config.group_id).unwrap();
    consumer
        .subscribe(&[&topics.results, &topics.streams])
        .unwrap();
    let mut ends = Offsets::new();
    for t in [&topics.results, &topics.streams] {
        for p in 0..2 {
            ends.insert(TopicPartition::new(t.as_str(), p), 10_000);
        }
    }
    consumer.commit(&ends).unwrap();
    drop(consumer);
    let sink = start(&bus, config);
    sink.wait_for("every message", |s| s.messages >= total);
    let stats = sink.stop();
    assert_eq!(stats.results, 200);
}

on_both_backends!(
    scripted_input_becomes_the_expected_record,
    two_sinks_on_one_database_publish_every_event_once,
    interrupted_runs_give_the_record_of_an_uninterrupted_one,
    bad_input_is_dead_lettered_or_recorded_never_fatal,
    reading_resumes_from_the_store_not_the_group,
);

#[test]
fn postgres_and_sqlite_records_are_identical_for_the_same_input() {
    let bus = Bus::memory();
    let topics = Topics::unique();
    topics.create(&bus, 3);
    let total = publish(&bus, &topics, &Script::new("case-1", 4, 300));
    let mut snapshots = Vec::new();
    for kind in [BackendKind::Sqlite, BackendKind::Postgres] {
        let isolated = store(kind);
        let sink = start(&bus, config(&isolated, &topics));
        sink.wait_for("every message", |s| s.messages >= total);
        sink.stop();
        snapshots.push(isolated.open().unwrap().snapshot().unwrap());
    }
    assert_eq!(snapshots[0], snapshots[1]);
}

#[test]
fn a_stream_switching_cases_keeps_both_cases_apart() {
    let bus = Bus::memory();
    let topics = Topics::unique();
    topics.create(&bus, 1);
    let first = Script::new("case-a", 1, 200);
    let mut second = Script::new("case-b", 1, 200);
    second.t0_ns += 3_600_000_000_000;
    let producer = bus.producer().unwrap();
    let mut n = 0;
    for (i, r) in first
        .results()
        .into_iter()
        .chain(second.results())
        .enumerate()
    {
        // One camera, two cases: same stream id, seq going on.
        let r = FrameResult {
            stream_id: "or-1-cam".into(),
            seq: i as u64,
            session_epoch: 0,
            ..r
        };
        producer
            .send(&result_record(&topics.results, &r), common::TIMEOUT)
            .unwrap()
            .wait(common::TIMEOUT)
            .unwrap();
        n += 1;
    }
    producer.flush(common::TIMEOUT).unwrap();
    let isolated = store(BackendKind::Sqlite);
    let sink = start(&bus, config(&isolated, &topics));
    sink.wait_for("every message", |s| s.messages >= n);
    sink.stop();
    let mut s = isolated.open().unwrap();
    let cases = query::cases::<StreamState>(&mut s).unwrap();
    let ids: Vec<&str> = cases.iter().map(|c| c.case_id.as_str()).collect();
    assert_eq!(ids, ["case-b", "case-a"]);
    for case in &cases {
        let timeline = query::timeline::<StreamState>(&mut s, &case.case_id)
            .unwrap()
            .unwrap();
        assert!(
            timeline
                .events
                .iter()
                .all(|e| e.start_ns >= case.started_ns && e.end_ns <= case.last_frame_ns)
        );
        assert_eq!(timeline.streams[0].results, 200);
    }
}

/// A room's case through the sink: its start and end (room events on the streams topic, keyed
/// by the room) around a camera's stream become the case's room, times and cameras in the
/// record, and its accounting covers the camera; a camera of the case that never sent a frame
/// keeps it incomplete. On PostgreSQL, where an open case's end is a typed NULL.
#[test]
fn a_rooms_case_is_recorded_with_its_times_and_every_camera() {
    use orstream_proto::{CaseEnded, CaseStarted, StreamEvent, stream_event::Kind};
    let bus = Bus::memory();
    let topics = Topics::unique();
    topics.create(&bus, 1);
    let script = Script::new("case-room", 1, 50);
    let camera = script.stream_id(0);
    let case_event = |time_ns, kind| StreamEvent::for_room("OR3", "case-room", time_ns, kind);
    let started = case_event(
        script.t0_ns - 1_000,
        Kind::CaseStarted(CaseStarted {
            cameras: vec![camera.clone(), "or3-ceiling".into()],
        }),
    );
    let ended = case_event(
        script.t0_ns + 60_000_000_000,
        Kind::CaseEnded(CaseEnded {
            cameras: vec![camera.clone(), "or3-ceiling".into()],
            detail: "ended by staff".into(),
        }),
    );
    let mut n = topic::publish(&bus, &[stream_record(&topics.streams, &started)]).len() as u64;
    n += publish(&bus, &topics, &script);
    n += topic::publish(&bus, &[stream_record(&topics.streams, &ended)]).len() as u64;

    let isolated = store(BackendKind::Postgres);
    let sink = start(&bus, config(&isolated, &topics));
    sink.wait_for("every message", |s| s.messages >= n);
    sink.stop();
    let mut s = isolated.open().unwrap();
    let cases = query::cases::<StreamState>(&mut s).unwrap();
    assert_eq!(cases.len(), 1, "{cases:?}");
    let case = &cases[0];
    assert_eq!(case.room_id, "OR3");
    assert_eq!(case.opened_ns, Some(started.time_ns));
    assert_eq!(case.closed_ns, Some(ended.time_ns));
    assert_eq!(case.cameras, [camera.clone(), "or3-ceiling".to_owned()]);
    let accounting = query::accounting::<StreamState>(&mut s, "case-room").unwrap();
    let by_camera: BTreeMap<&str, bool> = accounting
        .iter()
        .map(|a| (a.stream_id.as_str(), a.complete))
        .collect();
    assert_eq!(
        by_camera,
        BTreeMap::from([(camera.as_str(), true), ("or3-ceiling", false)])
    );
    assert!(!case.complete, "a camera of the case never ended");
}
