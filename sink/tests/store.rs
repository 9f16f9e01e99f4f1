//! The store suite, run against both backends: migrations, one-transaction batches,
//! compare-and-set offsets and states, replays as no-ops, the outbox, and the same record on
//! PostgreSQL and SQLite for the same writes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

mod common;

use orstream_bus::TopicPartition;
use orstream_record::schema::{
    AnomalyRow, CaseCameraRow, CaseRoomRow, CaseRow, EventRow, FrameRow, GapRow, StreamEventRow,
    StreamRow, TrackPointRow, TrackRow,
};
use orstream_record::store::{Deleter, OffsetWrite, Outbox, OutboxTopic, StateWrite, WriteBatch};
use orstream_record::{BackendKind, StoreError};
use orstream_sink::derive::StreamState;

use common::store;

fn tp(p: i32) -> TopicPartition {
    TopicPartition::new("or.results.v1", p)
}

fn event_row(id: &str, start: i64) -> EventRow {
    EventRow {
        event_id: id.into(),
        case_id: "case-1".into(),
        stream_id: "cam-1".into(),
        class_id: 1,
        label: "grasper".into(),
        category: "tool".into(),
        start_ns: start,
        end_ns: start + 1_000,
        session_epoch: 0,
        first_seq: start as u64,
        last_seq: (start + 30) as u64,
        frames_seen: 31,
        peak_confidence: 0.875,
        mean_confidence: 0.75,
        model_name: "m".into(),
        model_version: "1".into(),
        model_digest: "sha256:00".into(),
        track_ids: "1 2".into(),
    }
}

fn track_row(id: &str, track_id: u64) -> TrackRow {
    TrackRow {
        event_id: id.into(),
        case_id: "case-1".into(),
        stream_id: "cam-1".into(),
        track_id,
        class_id: 5,
        label: "grasper".into(),
        session_epoch: 0,
        first_seq: 10,
        last_seq: 40,
        start_ns: 1_010,
        end_ns: 1_040,
        frames_seen: 31,
        path_length: 0.4375,
        mean_speed: 0.125,
        peak_speed: 0.5,
        idle_ns: 500,
        reentries: 1,
        peak_confidence: 0.875,
        model_name: "m".into(),
        model_version: "1".into(),
        model_digest: "sha256:00".into(),
    }
}

fn track_point_row(track_id: u64, seq: u64) -> TrackPointRow {
    let x = seq as f64 / 100.0;
    TrackPointRow {
        stream_id: "cam-1".into(),
        track_id,
        seq,
        case_id: "case-1".into(),
        time_ns: 1_000 + seq as i64,
        cx: x,
        cy: 0.5,
        x0: x - 0.05,
        y0: 0.45,
        x1: x + 0.05,
        y1: 0.55,
        speed: 0.25,
    }
}

fn gap_row(id: &str) -> GapRow {
    GapRow {
        event_id: id.into(),
        case_id: "case-1".into(),
        stream_id: "cam-1".into(),
        kind: "unusable".into(),
        session_epoch: 0,
        first_seq: 40,
        last_seq: 44,
        start_ns: 4_000,
        end_ns: 4_500,
        frames: 5,
        reason: "SKIPPED_STALE x5".into(),
    }
}

fn case_row(first: i64) -> CaseRow {
    CaseRow {
        case_id: "case-1".into(),
        started_ns: first,
    }
}

/// case-1 in room OR3, opened and/or closed.
fn room_row(opened_ns: Option<i64>, closed_ns: Option<i64>) -> CaseRoomRow {
    CaseRoomRow {
        case_id: "case-1".into(),
        room_id: "OR3".into(),
        opened_ns,
        closed_ns,
        close_detail: if closed_ns.is_some() {
            "ended by staff".into()
        } else {
            String::new()
        },
    }
}

fn camera_row(stream_id: &str) -> CaseCameraRow {
    CaseCameraRow {
        case_id: "case-1".into(),
        stream_id: stream_id.into(),
    }
}

fn outbox(id: &str) -> Option<Outbox> {
    Some(Outbox {
        event_id: id.into(),
        case_id: "case-1".into(),
        topic: OutboxTopic::Events,
        key: "case-1".into(),
        payload: id.as_bytes().to_vec(),
        source: ("or.results.v1".into(), 0),
    })
}

/// A batch with every kind of row; `frames` rows of `frames` (several insert chunks).
fn batch(expected: Option<i64>, next: i64, frames: u64) -> WriteBatch {
    WriteBatch {
        offsets: vec![OffsetWrite {
            partition: tp(0),
            expected,
            next,
        }],
        states: Vec::new(),
        cases: vec![case_row(1_000)],
        case_rooms: vec![room_row(Some(900), None)],
        case_cameras: vec![camera_row("cam-1")],
        streams: vec![StreamRow {
            case_id: "case-1".into(),
            stream_id: "cam-1".into(),
            first_frame_ns: 1_000,
            last_frame_ns: 9_000,
            results: frames,
        }],
        stream_events: vec![StreamEventRow {
            stream_id: "cam-1".into(),
            case_id: "case-1".into(),
            session_epoch: 0,
            time_ns: 1_000,
            kind: "started".into(),
            detail: "{\"source_kind\":\"test\"}".into(),
        }],
        events: vec![(event_row("e1", 1_000), outbox("e1"))],
        gaps: vec![(gap_row("g1"), outbox("g1"))],
        anomalies: vec![AnomalyRow {
            source_topic: "or.results.v1".into(),
            source_partition: 0,
            source_offset: 3,
            kind: "out_of_order".into(),
            stream_id: "cam-1".into(),
            detail: "seq 2 after seq 5".into(),
        }],
        frames: (0..frames)
            .map(|seq| FrameRow {
                stream_id: "cam-1".into(),
                session_epoch: 0,
                seq,
                case_id: "case-1".into(),
                capture_ns: 1_000 + seq as i64,
                status: "OK".into(),
                model_version: "1".into(),
                instances: "[]".into(),
            })
            .collect(),
        tracks: vec![(track_row("t1", 1), outbox("t1"))],
        track_points: (10..=40)
            .step_by(10)
            .map(|seq| track_point_row(1, seq))
            .collect(),
        track_frames: vec![Outbox {
            event_id: "f1".into(),
            case_id: "case-1".into(),
            topic: OutboxTopic::Tracks,
            key: "cam-1".into(),
            payload: b"f1".to_vec(),
            source: ("or.results.v1".into(), 0),
        }],
    }
}

fn migrations_are_idempotent(kind: BackendKind) {
    let isolated = store(kind);
    drop(isolated.open().unwrap());
    let mut s = isolated.open().unwrap();
    let rows = s
        .query("SELECT version, name FROM schema_migrations", &[])
        .unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0][1].text(), "record");
    assert_eq!(rows[1][1].text(), "tracks");
    assert_eq!(rows[2][1].text(), "outbox_source");
    assert_eq!(rows[3][1].text(), "audit");
    assert_eq!(rows[4][1].text(), "rooms");
    assert_eq!(s.backend(), kind);
}

fn a_batch_is_written_whole_and_read_back(kind: BackendKind) {
    let isolated = store(kind);
    let mut s = isolated.open().unwrap();
    s.write(&batch(None, 300, 301)).unwrap();
    let snap = s.snapshot().unwrap();
    assert_eq!(snap["frames"].len(), 301);
    assert_eq!(snap["events"].len(), 1);
    assert_eq!(snap["gaps"].len(), 1);
    assert_eq!(snap["anomalies"].len(), 1);
    assert_eq!(snap["stream_events"].len(), 1);
    assert_eq!(snap["cases"], vec!["\"case-1\" | 1000"]);
    assert_eq!(s.offsets().unwrap().get(&tp(0)), Some(&300));
    assert!(snap["events"][0].contains("0.875"), "{}", snap["events"][0]);
    assert!(
        snap["events"][0].ends_with("\"1 2\""),
        "{}",
        snap["events"][0]
    );
    assert_eq!(snap["tracks"].len(), 1);
    assert!(
        snap["tracks"][0].contains("0.4375"),
        "{}",
        snap["tracks"][0]
    );
    assert_eq!(snap["track_points"].len(), 4);
    // Events, gaps and tracks to the events topic keyed by case; track frames keyed by stream.
    let outbox: Vec<(String, OutboxTopic, String)> = s
        .outbox(10)
        .unwrap()
        .into_iter()
        .map(|i| (i.entry.event_id, i.entry.topic, i.entry.key))
        .collect();
    assert_eq!(
        outbox,
        [
            ("e1".into(), OutboxTopic::Events, "case-1".into()),
            ("g1".into(), OutboxTopic::Events, "case-1".into()),
            ("t1".into(), OutboxTopic::Events, "case-1".into()),
            ("f1".into(), OutboxTopic::Tracks, "cam-1".into()),
        ]
    );
}

fn a_moved_offset_is_a_conflict_and_nothing_is_written(kind: BackendKind) {
    let isolated = store(kind);
    let mut s = isolated.open().unwrap();
    s.write(&batch(None, 10, 5)).unwrap();
    let before = s.snapshot().unwrap();
    // Another writer got there first: the offset is no longer what this writer read.
    let mut stale = batch(Some(7), 20, 50);
    stale.events.push((event_row("e2", 5_000), outbox("e2")));
    let err = s.write(&stale).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert_eq!(
        s.snapshot().unwrap(),
        before,
        "the whole transaction rolled back"
    );
    // A first insert of an offset that exists is a conflict too.
    let err = s.write(&batch(None, 20, 5)).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
}

fn a_replay_of_the_same_rows_is_a_no_op(kind: BackendKind) {
    let isolated = store(kind);
    let mut s = isolated.open().unwrap();
    s.write(&batch(None, 10, 40)).unwrap();
    let first = s.snapshot().unwrap();
    let outbox = s.outbox(10).unwrap();
    // Same rows again under a valid offset move: nothing is duplicated or re-published (track
    // frames have no row: they only ever come from input past the stored offsets).
    let mut again = batch(Some(10), 10, 40);
    again.track_frames.clear();
    s.write(&again).unwrap();
    assert_eq!(s.snapshot().unwrap(), first);
    assert_eq!(s.outbox(10).unwrap(), outbox);
}

fn states_are_compare_and_set(kind: BackendKind) {
    let isolated = store(kind);
    let mut s = isolated.open().unwrap();
    let mut state = StreamState::new("cam-1");
    state.case_id = "case-1".into();
    state.frames_accounted = 12;
    let write = |expected_version, state: &StreamState| WriteBatch {
        states: vec![StateWrite {
            stream_id: "cam-1".into(),
            expected_version,
            json: serde_json::to_string(state).unwrap(),
        }],
        ..WriteBatch::default()
    };
    s.write(&write(0, &state)).unwrap();
    assert_eq!(
        s.load_state::<StreamState>("cam-1").unwrap(),
        Some((1, state.clone()))
    );
    state.frames_accounted = 13;
    s.write(&write(1, &state)).unwrap();
    assert_eq!(
        s.load_state::<StreamState>("cam-1").unwrap(),
        Some((2, state.clone()))
    );
    let err = s.write(&write(1, &state)).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let err = s.write(&write(0, &state)).unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert_eq!(s.load_state::<StreamState>("other").unwrap(), None);
    assert_eq!(
        s.states_of_case::<StreamState>("case-1").unwrap(),
        vec![state]
    );
}

fn a_case_starts_at_its_earliest_frame(kind: BackendKind) {
    let isolated = store(kind);
    let mut s = isolated.open().unwrap();
    for first in [5_000, 3_000, 4_000] {
        s.write(&WriteBatch {
            cases: vec![case_row(first)],
            ..WriteBatch::default()
        })
        .unwrap();
    }
    assert_eq!(s.case_start("case-1").unwrap(), Some(3_000));
    assert_eq!(s.case_start("case-2").unwrap(), None);
}

/// A room's case: its start and end may come in any order and any number of times (a
/// replay); the end never reopens, the start never clears the end; cameras accumulate.
fn a_rooms_case_is_opened_and_closed_whatever_the_order(kind: BackendKind) {
    let isolated = store(kind);
    let mut s = isolated.open().unwrap();
    let writes = [
        (room_row(None, Some(9_000)), "cam-2"),
        (room_row(Some(1_000), None), "cam-1"),
        (room_row(None, Some(9_000)), "cam-2"),
        (room_row(Some(1_000), None), "cam-1"),
    ];
    let read = |s: &mut orstream_record::Store| {
        s.query(
            "SELECT room_id, opened_ns, closed_ns, close_detail FROM case_rooms \
             WHERE case_id = $1",
            &["case-1".into()],
        )
        .unwrap()
    };
    for (at, (room, camera)) in writes.into_iter().enumerate() {
        s.write(&WriteBatch {
            case_rooms: vec![room],
            case_cameras: vec![camera_row(camera)],
            ..WriteBatch::default()
        })
        .unwrap();
        let rows = read(&mut s);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0][2].int(), 9_000, "the end stays after write {at}");
    }
    let rows = read(&mut s);
    assert_eq!(rows[0][1].int(), 1_000);
    assert_eq!(rows[0][3], "ended by staff".into());
    let cameras = s
        .query(
            "SELECT stream_id FROM case_cameras WHERE case_id = $1 ORDER BY stream_id",
            &["case-1".into()],
        )
        .unwrap();
    assert_eq!(cameras, vec![vec!["cam-1".into()], vec!["cam-2".into()]]);
}

fn the_outbox_drains_in_order(kind: BackendKind) {
    let isolated = store(kind);
    let mut s = isolated.open().unwrap();
    let mut b = batch(None, 1, 0);
    b.events = (0..5)
        .map(|i| {
            (
                event_row(&format!("e{i}"), i * 10_000),
                outbox(&format!("e{i}")),
            )
        })
        .collect();
    b.gaps.clear();
    b.tracks.clear();
    b.track_frames.clear();
    s.write(&b).unwrap();
    let items = s.outbox(3).unwrap();
    let ids: Vec<&str> = items.iter().map(|i| i.entry.event_id.as_str()).collect();
    assert_eq!(ids, ["e0", "e1", "e2"]);
    assert_eq!(items[0].entry.payload, b"e0");
    let published: Vec<i64> = items.iter().map(|i| i.position).collect();
    s.delete_outbox(&published).unwrap();
    let rest: Vec<String> = s
        .outbox(10)
        .unwrap()
        .into_iter()
        .map(|i| i.entry.event_id)
        .collect();
    assert_eq!(rest, ["e3", "e4"]);
}

/// Two sinks on one database: each reads the entries of the partitions it holds (and those of
/// no partition), and deleting what one published leaves the other's entries, even those
/// inserted between them.
fn each_sink_publishes_the_outbox_of_its_own_partitions(kind: BackendKind) {
    let isolated = store(kind);
    let mut s = isolated.open().unwrap();
    let mut b = batch(None, 5, 0);
    b.events = (0..6i32)
        .map(|i| {
            let mut entry = outbox(&format!("e{i}"));
            if let Some(o) = entry.as_mut() {
                o.source = ("or.results.v1".into(), if i == 5 { -1 } else { i % 2 });
            }
            (event_row(&format!("e{i}"), i64::from(i) * 10_000), entry)
        })
        .collect();
    b.gaps.clear();
    b.tracks.clear();
    b.track_frames.clear();
    s.write(&b).unwrap();
    let ids = |items: &[orstream_record::store::OutboxItem]| -> Vec<String> {
        items.iter().map(|i| i.entry.event_id.clone()).collect()
    };
    let first = [("or.results.v1".to_owned(), 0)];
    let second = [("or.results.v1".to_owned(), 1)];
    let mine = s.outbox_of(10, Some(&first)).unwrap();
    assert_eq!(ids(&mine), ["e0", "e2", "e4", "e5"]);
    let theirs = s.outbox_of(10, Some(&second)).unwrap();
    assert_eq!(ids(&theirs), ["e1", "e3", "e5"]);
    let published: Vec<i64> = mine.iter().map(|i| i.position).collect();
    s.delete_outbox(&published).unwrap();
    assert_eq!(ids(&s.outbox(10).unwrap()), ["e1", "e3"]);
}

/// Rows of `case` in every table that has a `case_id`.
fn rows_of(s: &mut orstream_record::Store, case: &str) -> i64 {
    [
        "cases",
        "streams",
        "stream_events",
        "events",
        "gaps",
        "frames",
        "tracks",
        "track_points",
        "event_outbox",
        "case_rooms",
        "case_cameras",
    ]
    .iter()
    .map(|table| {
        s.query(
            &format!("SELECT COUNT(*) FROM {table} WHERE case_id = $1"),
            &[case.into()],
        )
        .unwrap()[0][0]
            .int()
    })
    .sum()
}

/// Deleting a case removes its rows from every table and its derivation state, in one
/// transaction, and leaves the other cases whole; the audit row it appends cannot be changed
/// or deleted; a purge deletes only the cases quiet since its cutoff.
fn a_case_is_deleted_whole_and_its_deletion_stays_on_record(kind: BackendKind) {
    let isolated = store(kind);
    let mut s = isolated.open().unwrap();
    s.write(&batch(None, 10, 50)).unwrap();
    let mut state = StreamState::new("cam-1");
    state.case_id = "case-1".into();
    let mut other = StreamState::new("cam-2");
    other.case_id = "case-2".into();
    s.write(&WriteBatch {
        cases: vec![CaseRow {
            case_id: "case-2".into(),
            started_ns: 5_000_000,
        }],
        states: [&state, &other]
            .iter()
            .map(|st| StateWrite {
                stream_id: st.stream_id.clone(),
                expected_version: 0,
                json: serde_json::to_string(st).unwrap(),
            })
            .collect(),
        ..WriteBatch::default()
    })
    .unwrap();
    let before = rows_of(&mut s, "case-1");
    assert!(before > 50, "{before}");

    let by = Deleter {
        actor: "dr-records",
        action: "delete",
    };
    let deletion = s.delete_case::<StreamState>("case-1", &by).unwrap();
    assert_eq!(deletion.total(), u64::try_from(before).unwrap() + 1);
    assert_eq!(deletion.rows.get("frames"), Some(&50));
    assert_eq!(deletion.rows.get("derivation_state"), Some(&1));
    assert_eq!(rows_of(&mut s, "case-1"), 0);
    assert_eq!(rows_of(&mut s, "case-2"), 1);
    assert_eq!(s.load_state::<StreamState>("cam-1").unwrap(), None);
    assert!(s.load_state::<StreamState>("cam-2").unwrap().is_some());

    let audit = s.audit().unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(
        (
            audit[0].actor.as_str(),
            audit[0].action.as_str(),
            audit[0].case_id.as_str()
        ),
        ("dr-records", "delete", "case-1")
    );
    assert_eq!(
        audit[0].rows_deleted,
        i64::try_from(deletion.total()).unwrap()
    );
    assert!(audit[0].detail.contains("frames=50"), "{}", audit[0].detail);
    for statement in [
        "DELETE FROM record_audit",
        "UPDATE record_audit SET actor = 'nobody'",
    ] {
        let error = s.query(statement, &[]).unwrap_err().to_string();
        assert!(error.contains("append-only"), "{statement}: {error}");
    }
    assert_eq!(s.audit().unwrap(), audit);

    // case-2 started at 5 ms after the epoch: quiet since long before now, unlike nothing.
    assert!(s.cases_quiet_since(1_000).unwrap().is_empty());
    assert_eq!(s.cases_quiet_since(i64::MAX).unwrap(), vec!["case-2"]);
}

on_both_backends!(
    a_case_is_deleted_whole_and_its_deletion_stays_on_record,
    each_sink_publishes_the_outbox_of_its_own_partitions,
    migrations_are_idempotent,
    a_batch_is_written_whole_and_read_back,
    a_moved_offset_is_a_conflict_and_nothing_is_written,
    a_replay_of_the_same_rows_is_a_no_op,
    states_are_compare_and_set,
    a_case_starts_at_its_earliest_frame,
    a_rooms_case_is_opened_and_closed_whatever_the_order,
    the_outbox_drains_in_order,
);

#[test]
fn both_backends_hold_the_same_record_for_the_same_writes() {
    let lite = store(BackendKind::Sqlite);
    let pg = store(BackendKind::Postgres);
    let mut snapshots = Vec::new();
    for isolated in [&lite, &pg] {
        let mut s = isolated.open().unwrap();
        s.write(&batch(None, 10, 200)).unwrap();
        s.write(&batch(Some(10), 20, 250)).unwrap();
        snapshots.push(s.snapshot().unwrap());
    }
    assert_eq!(snapshots[0], snapshots[1]);
}

#[test]
fn a_version_1_record_is_upgraded_in_place() {
    // A record written before tool tracks: schema 1, an interval, an event waiting in the
    // outbox and a derivation state without a tracker.
    let path =
        std::env::temp_dir().join(format!("{}.db", orstream_test_support::names::unique("v1")));
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(include_str!(
            "../../record/migrations/sqlite/0001_record.sql"
        ))
        .unwrap();
        db.execute_batch(
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL);
             INSERT INTO schema_migrations VALUES (1, 'record');
             INSERT INTO event_outbox (event_id, case_id, payload) VALUES ('e1', 'case-1', x'00');",
        )
        .unwrap();
        db.execute_batch(
            "INSERT INTO events VALUES ('e1', 'case-1', 'cam-1', 1, 'grasper', 'tool', 1000, \
             2000, 0, 1000, 1030, 31, 0.875, 0.75, 'm', '1', 'sha256:00');",
        )
        .unwrap();
        let mut state = serde_json::to_value(StreamState::new("cam-1")).unwrap();
        state.as_object_mut().unwrap().remove("tracker");
        db.execute(
            "INSERT INTO derivation_state VALUES ('cam-1', 3, ?1)",
            [state.to_string()],
        )
        .unwrap();
    }
    let mut s = orstream_record::Store::open(&format!("sqlite://{}", path.display())).unwrap();
    let versions: Vec<i64> = s
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r[0].int())
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    let ids = s.query("SELECT track_ids FROM events", &[]).unwrap();
    assert_eq!(ids[0][0].text(), "", "old intervals have no tracks");
    let outbox = s.outbox(10).unwrap();
    assert_eq!(
        (outbox[0].entry.topic, outbox[0].entry.key.as_str()),
        (OutboxTopic::Events, "case-1"),
        "an old outbox entry still goes to the events topic, keyed by its case"
    );
    assert_eq!(
        outbox[0].entry.source.1, -1,
        "an old outbox entry names no partition: any sink publishes it"
    );
    let (version, state) = s.load_state::<StreamState>("cam-1").unwrap().unwrap();
    assert_eq!((version, state), (3, StreamState::new("cam-1")));
    // And it takes tracks.
    s.write(&batch(None, 5, 3)).unwrap();
    assert_eq!(s.snapshot().unwrap()["tracks"].len(), 1);
    drop(s);
    let _ = std::fs::remove_file(&path);
}
