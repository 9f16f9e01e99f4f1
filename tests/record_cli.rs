//! `orstream record delete`, `purge` and `audit` as an operator runs them, on a SQLite record:
//! a deleted case is gone from the views, the other case stays, and the audit lists who deleted
//! what and how many rows. The record's URL can come from a file, and `--help` never shows
//! the one in the environment.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

use std::process::Command;

use orstream_record::Store;
use orstream_record::schema::{
    CaseCameraRow, CaseRoomRow, CaseRow, FrameRow, StreamEventRow, StreamRow,
};
use orstream_record::store::WriteBatch;

/// `orstream record --store <store> <args>`: its standard output, or the failure.
fn record(store: &str, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_orstream"))
        .args(["record", "--store", store])
        .args(args)
        .env_remove("ORSTREAM_SINK_STORE")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "orstream record {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A case of `frames` frames on one stream, captured at `started_ns` onwards.
fn case(case_id: &str, started_ns: i64, frames: u64) -> WriteBatch {
    let stream_id = format!("{case_id}-cam");
    WriteBatch {
        cases: vec![CaseRow {
            case_id: case_id.into(),
            started_ns,
        }],
        streams: vec![StreamRow {
            case_id: case_id.into(),
            stream_id: stream_id.clone(),
            first_frame_ns: started_ns,
            last_frame_ns: started_ns + i64::try_from(frames).unwrap(),
            results: frames,
        }],
        frames: (0..frames)
            .map(|seq| FrameRow {
                stream_id: stream_id.clone(),
                session_epoch: 1,
                seq,
                case_id: case_id.into(),
                capture_ns: started_ns + i64::try_from(seq).unwrap(),
                status: "OK".into(),
                model_version: "1".into(),
                instances: "[]".into(),
            })
            .collect(),
        ..WriteBatch::default()
    }
}

#[test]
fn delete_purge_and_audit_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("record.db").display());
    let now_ns = orstream_shell::clock::now_ns();
    {
        let mut s = Store::open(&store).unwrap();
        s.write(&case("case-old", 1_000_000_000, 20)).unwrap();
        s.write(&case("case-doomed", now_ns - 1_000_000_000, 10))
            .unwrap();
        s.write(&case("case-kept", now_ns, 5)).unwrap();
    }

    let deleted = record(&store, &["delete", "case-doomed", "--by", "dr-records"]);
    assert!(
        deleted.contains("deleted case case-doomed: 12 rows"),
        "{deleted}"
    );
    let cases = record(&store, &["cases", "--format", "csv"]);
    assert!(!cases.contains("case-doomed"), "{cases}");
    assert!(
        cases.contains("case-kept") && cases.contains("case-old"),
        "{cases}"
    );

    let dry = record(&store, &["purge", "--older-than", "30d", "--dry-run"]);
    assert!(dry.contains("1 cases") && dry.contains("case-old"), "{dry}");
    assert!(record(&store, &["cases"]).contains("case-old"));
    let purged = record(&store, &["purge", "--older-than", "30d", "--by", "nightly"]);
    assert!(
        purged.contains("deleted case case-old: 22 rows"),
        "{purged}"
    );
    let cases = record(&store, &["cases", "--format", "csv"]);
    assert!(
        !cases.contains("case-old") && cases.contains("case-kept"),
        "{cases}"
    );

    let audit: serde_json::Value =
        serde_json::from_str(&record(&store, &["audit", "--format", "json"])).unwrap();
    let rows: Vec<(String, String, String, i64)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["actor"].as_str().unwrap().to_owned(),
                r["action"].as_str().unwrap().to_owned(),
                r["case_id"].as_str().unwrap().to_owned(),
                r["rows_deleted"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (
                "dr-records".into(),
                "delete".into(),
                "case-doomed".into(),
                12
            ),
            (
                "nightly".into(),
                "purge --older-than 30days".into(),
                "case-old".into(),
                22
            ),
        ]
    );
}

#[test]
fn the_store_url_comes_from_a_file_and_help_never_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("record.db").display());
    Store::open(&store)
        .unwrap()
        .write(&case("case-filed", 1_000, 3))
        .unwrap();
    let file = dir.path().join("store-url");
    std::fs::write(&file, format!("{store}\n")).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_orstream"))
        .args(["record", "cases", "--format", "csv"])
        .env("ORSTREAM_SINK_STORE_FILE", &file)
        .env_remove("ORSTREAM_SINK_STORE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("case-filed"), "{stdout}{output:?}");

    let help = Command::new(env!("CARGO_BIN_EXE_orstream"))
        .args(["record", "--help"])
        .env("ORSTREAM_SINK_STORE", "postgres://u:hunter2@db/record")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--store-file"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

/// The end event of `stream_id` in `case_id`: `published` frames.
fn ended(case_id: &str, stream_id: &str, time_ns: i64, published: u64) -> StreamEventRow {
    StreamEventRow {
        stream_id: stream_id.into(),
        case_id: case_id.into(),
        session_epoch: 1,
        time_ns,
        kind: "ended".into(),
        detail: format!("{{\"frames_published\":{published},\"frames_dropped\":0}}"),
    }
}

/// A room's cases are listed with their room, start, end and cameras: before any frame of
/// them is stored, open, and complete only once every camera of the case, one that stored
/// nothing included, has ended with its frames accounted for.
#[test]
fn a_rooms_cases_are_listed_with_room_times_cameras_and_completeness() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("record.db").display());
    let t = 1_800_000_000_000_000_000_i64;
    let room = |case_id: &str, opened_ns, closed_ns| CaseRoomRow {
        case_id: case_id.into(),
        room_id: "OR3".into(),
        opened_ns,
        closed_ns,
        close_detail: String::new(),
    };
    let camera = |case_id: &str, stream_id: &str| CaseCameraRow {
        case_id: case_id.into(),
        stream_id: stream_id.into(),
    };
    let mut s = Store::open(&store).unwrap();
    let mut first = case("case-r1", t + 10, 5);
    first.case_rooms = vec![room("case-r1", Some(t), Some(t + 1_000))];
    first.case_cameras = vec![
        camera("case-r1", "case-r1-cam"),
        camera("case-r1", "or3-spare"),
    ];
    first.stream_events = vec![ended("case-r1", "case-r1-cam", t + 900, 5)];
    s.write(&first).unwrap();
    s.write(&WriteBatch {
        case_rooms: vec![room("case-r2", Some(t + 2_000), None)],
        case_cameras: vec![camera("case-r2", "case-r1-cam")],
        ..WriteBatch::default()
    })
    .unwrap();

    let listed = || -> Vec<serde_json::Value> {
        serde_json::from_str(&record(&store, &["cases", "--format", "json"])).unwrap()
    };
    let cases = listed();
    let ids: Vec<&str> = cases
        .iter()
        .map(|c| c["case_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["case-r2", "case-r1"],
        "newest first, the case with no frame too"
    );
    let (open, closed) = (&cases[0], &cases[1]);
    assert_eq!(open["room_id"], "OR3");
    assert_eq!(open["closed_ns"], serde_json::Value::Null);
    assert_eq!(open["complete"], false, "an open case is never complete");
    assert_eq!(closed["opened_ns"], t);
    assert_eq!(closed["closed_ns"], t + 1_000);
    assert_eq!(
        closed["cameras"],
        serde_json::json!(["case-r1-cam", "or3-spare"])
    );
    assert_eq!(
        closed["complete"], false,
        "the spare camera never said it ended"
    );
    // The open case's timeline is there, empty, before any frame of it is stored: the page
    // opens a running case as soon as it is listed.
    let empty: serde_json::Value = serde_json::from_str(&record(
        &store,
        &["timeline", "case-r2", "--format", "json"],
    ))
    .unwrap();
    assert_eq!(empty["started_ns"], t + 2_000, "{empty}");
    assert_eq!(empty["events"], serde_json::json!([]), "{empty}");
    assert_eq!(empty["gaps"], serde_json::json!([]), "{empty}");
    let accounting = record(&store, &["accounting", "case-r1", "--format", "csv"]);
    assert!(accounting.contains("or3-spare"), "{accounting}");

    s.write(&WriteBatch {
        stream_events: vec![ended("case-r1", "or3-spare", t + 950, 0)],
        ..WriteBatch::default()
    })
    .unwrap();
    assert_eq!(listed()[1]["complete"], true);
    let table = record(&store, &["cases"]);
    assert!(table.contains("OR3") && table.contains("open"), "{table}");
}
