//! Operating rooms at run time, against the real broker: one `orstream ingest` with two rooms,
//! driven through its admin API by the `orstream` client. Room OR3 has three consecutive cases
//! with a camera added in the first and one removed in the second, while room OR4 holds one
//! case over all of it. Then, from the topics: every frame belongs to a case and was captured
//! between its room's `CaseStarted` and `CaseEnded` (none from between cases), every camera's
//! part in a case is one gap-free epoch whose count its `StreamEnded` gives, and OR4's
//! camera went on undisturbed. Bad requests are refused with a clear error and change nothing.
//!
//! Needs the Kafka broker (`scripts/kafka.sh start`); it fails when it is down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use orstream::commands::admin::Client;
use orstream_infer::decode::result_for;
use orstream_proto::stream_event::Kind;
use orstream_proto::{EndReason, Frame, FrameResult, FrameStatus, ModelIdentity, StreamEvent};
use orstream_record::BackendKind;
use orstream_record::query;
use orstream_sink::derive::StreamState;
use orstream_test_support::metrics::free_port;
use orstream_test_support::names::unique;
use orstream_test_support::service::Service;
use orstream_test_support::store::isolated;
use orstream_test_support::wait::wait_for;
use orstream_test_support::{kafka, topic};

const ORSTREAM: &str = env!("CARGO_BIN_EXE_orstream");
const TOKEN: &str = "or-scheduler-4f1c9a7e2b";

fn pause(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// The API's error text of a refused call, and its exit-code class (true: the request was
/// wrong).
fn refused(result: anyhow::Result<serde_json::Value>) -> (String, bool) {
    let error = result.expect_err("the request should have been refused");
    let config = orstream_shell::exit::exit_code(&error) == orstream_shell::exit::CONFIG;
    (format!("{error:#}"), config)
}

#[test]
fn cases_and_cameras_change_at_run_time_and_nothing_leaves_between_cases() {
    let frames_topic = unique("test.rooms.frames");
    let events_topic = unique("test.rooms.streams");
    let site_topic = unique("test.rooms.site");
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("# who may change the rooms\nscheduler {TOKEN}\n"),
    )
    .unwrap();
    let admin = free_port();
    let bootstrap = kafka::config().bootstrap_servers;
    let camera = |name: &str| {
        format!(
            "[[rooms.cameras]]\nname = \"{name}\"\nsource = {{ kind = \"test\", is_live = true }}\n\
             output = {{ width = 64, height = 48, max_fps = 10 }}\n"
        )
    };
    let service = Service::start(ORSTREAM, env!("CARGO_MANIFEST_DIR"), "ingest", |listen| {
        format!(
            "frames_topic = \"{frames_topic}\"\nevents_topic = \"{events_topic}\"\n\
             topic_partitions = 2\ninstance = \"ingest-a\"\nsite_topic = \"{site_topic}\"\n\
             [admin]\nlisten = \"{admin}\"\ntoken_file = \"{}\"\n\
             [[rooms]]\nname = \"OR3\"\n{}{}\
             [[rooms]]\nname = \"OR4\"\n{}\
             [kafka]\nbootstrap_servers = \"{bootstrap}\"\n\
             [telemetry]\nmetrics_listen = \"{listen}\"\nlog_filter = \"info\"\n",
            tokens.display(),
            camera("lap"),
            camera("room"),
            camera("tower"),
        )
    });
    service.wait_ready("ingest with rooms");
    let client = Client::new(&format!("http://{admin}"), TOKEN);
    wait_for(
        "the cameras to give frames outside a case",
        Duration::from_secs(30),
        || {
            let status = client.status().ok()?;
            let rooms = status["rooms"].as_array()?.clone();
            rooms
                .iter()
                .flat_map(|r| r["cameras"].as_array().cloned().unwrap_or_default())
                .all(|c| c["outside_case"].as_u64().unwrap_or(0) > 0)
                .then_some(())
        },
    );

    // Bad requests: each refused, naming what was wrong.
    let stranger = Client::new(&format!("http://{admin}"), "not-a-token-of-ours");
    let (error, wrong) = refused(stranger.start_case("OR3", "case-x"));
    assert!(
        error.contains("bearer token") && error.contains("401"),
        "{error}"
    );
    assert!(wrong);
    let (error, _) = refused(client.start_case("OR9", "case-x"));
    assert!(
        error.contains("no room OR9") && error.contains("404"),
        "{error}"
    );
    let (error, _) = refused(client.start_case("OR3", "bad\u{0}case"));
    assert!(
        error.contains("case id") && error.contains("400"),
        "{error}"
    );
    let (error, _) = refused(client.end_case("OR3"));
    assert!(
        error.contains("no open case") && error.contains("409"),
        "{error}"
    );
    let (error, _) =
        refused(client.add_camera("OR3", "ghost", "file:/nonexistent/ghost.mp4", false));
    assert!(
        error.contains("cannot be opened") && error.contains("422"),
        "{error}"
    );
    let (error, _) = refused(client.add_camera("OR3", "bad/name", "test:", false));
    assert!(error.contains("camera") && error.contains("400"), "{error}");
    let (error, _) = refused(client.call(
        "POST",
        "/v1/rooms/OR3/case",
        Some(&serde_json::json!({ "case_id": "c", "extra": 1 })),
    ));
    assert!(
        error.contains("unknown field") && error.contains("400"),
        "{error}"
    );
    let status = client.status().unwrap();
    let names: BTreeSet<String> = status["rooms"][0]["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, BTreeSet::from(["lap".into(), "room".into()]));
    assert!(status["rooms"][0]["case"].is_null(), "{status}");

    // OR4 holds one case over all of OR3's changes.
    client.start_case("OR4", "case-or4").unwrap();
    let (error, _) = refused(client.start_case("OR3", "case-or4"));
    assert!(
        error.contains("open in room OR4") && error.contains("409"),
        "{error}"
    );

    let timer = std::time::Instant::now();
    client.start_case("OR3", "case-1").unwrap();
    let start_ms = timer.elapsed().as_secs_f64() * 1e3;
    pause(1500);
    let added = client.add_camera("OR3", "scope", "test:", false).unwrap();
    assert_eq!(added["stream_id"], "OR3/scope");
    pause(1500);
    let (error, _) = refused(client.start_case("OR3", "case-1b"));
    assert!(
        error.contains("case case-1 open") && error.contains("409"),
        "{error}"
    );
    let timer = std::time::Instant::now();
    let closed = client.end_case("OR3").unwrap();
    let end_ms = timer.elapsed().as_secs_f64() * 1e3;
    println!(
        "rooms | case start {start_ms:.1} ms, case end (3 cameras) {end_ms:.1} ms over the admin API"
    );
    assert_eq!(closed["cameras"].as_array().unwrap().len(), 3, "{closed}");
    pause(800);

    client.start_case("OR3", "case-2").unwrap();
    pause(1200);
    client.remove_camera("OR3", "room").unwrap();
    pause(1200);
    client.end_case("OR3").unwrap();
    pause(800);

    client.start_case("OR3", "case-3").unwrap();
    pause(1500);
    client.end_case("OR3").unwrap();
    pause(500);
    client.end_case("OR4").unwrap();
    let status = client.status().unwrap();
    let lap = &status["rooms"][0]["cameras"][0];
    assert_eq!(lap["name"], "lap");
    assert!(lap["outside_case"].as_u64().unwrap() > 0, "{status}");
    let log = service.stop();
    assert!(
        log.contains("admin change")
            && log.contains("scheduler")
            && log.contains("case start in OR3"),
        "the audit log names who did what:\n{log}"
    );
    assert!(log.contains("admin change refused"), "{log}");
    assert!(!log.contains(TOKEN), "the token must never be logged");
    for case_id in ["case-or4", "case-1", "case-2", "case-3"] {
        assert!(
            !log.contains(case_id),
            "{case_id} in the log: no log carries a case id"
        );
    }

    let frames = check_topics(&frames_topic, &events_topic);
    record_accounts_for(
        &frames,
        &events_topic,
        &["case-or4", "case-1", "case-2", "case-3"],
    );
}

/// One case's events and frames, read back from the topics.
#[derive(Debug, Default)]
struct Case {
    room: String,
    started: Option<(i64, Vec<String>)>,
    ended: Option<(i64, Vec<String>)>,
    /// Per camera: (epoch, seq) of each frame with its capture time.
    frames: BTreeMap<String, Vec<(u64, u64, i64)>>,
    /// Per camera: its `StreamEnded`.
    parts: BTreeMap<String, (EndReason, u64)>,
}

fn check_topics(frames_topic: &str, events_topic: &str) -> Vec<Frame> {
    let bus = kafka::bus();
    let events: Vec<StreamEvent> = topic::decode_all(&topic::read_until_quiet(
        &bus,
        events_topic,
        8,
        Duration::from_secs(3),
    ));
    let frames: Vec<Frame> = topic::decode_all(&topic::read_until_quiet(
        &bus,
        frames_topic,
        50,
        Duration::from_secs(3),
    ));
    let mut cases: BTreeMap<String, Case> = BTreeMap::new();
    for event in &events {
        let case = cases.entry(event.case_id.clone()).or_default();
        match event.kind.as_ref().unwrap() {
            Kind::CaseStarted(started) => {
                case.room.clone_from(&event.room_id);
                case.started = Some((event.time_ns, started.cameras.clone()));
            }
            Kind::CaseEnded(ended) => {
                case.ended = Some((event.time_ns, ended.cameras.clone()));
            }
            Kind::Ended(end) => {
                assert!(!event.room_id.is_empty(), "{event:?}");
                let reason = EndReason::try_from(end.reason).unwrap();
                let old = case
                    .parts
                    .insert(event.stream_id.clone(), (reason, end.frames_published));
                assert!(
                    old.is_none(),
                    "two ends of {} in {}",
                    event.stream_id,
                    event.case_id
                );
            }
            _ => {}
        }
    }
    assert!(
        events.iter().all(|e| !e.case_id.is_empty()),
        "every event belongs to a case"
    );
    for frame in &frames {
        cases
            .get_mut(&frame.case_id)
            .unwrap_or_else(|| panic!("a frame of no known case: {:?}", frame.case_id))
            .frames
            .entry(frame.stream_id.clone())
            .or_default()
            .push((frame.session_epoch, frame.seq, frame.capture_time_ns));
    }
    let expected: BTreeMap<&str, (&str, &[&str], &[&str])> = BTreeMap::from([
        ("case-or4", ("OR4", &["OR4/tower"][..], &["OR4/tower"][..])),
        (
            "case-1",
            (
                "OR3",
                &["OR3/lap", "OR3/room"][..],
                &["OR3/lap", "OR3/room", "OR3/scope"][..],
            ),
        ),
        (
            "case-2",
            (
                "OR3",
                &["OR3/lap", "OR3/room", "OR3/scope"][..],
                &["OR3/lap", "OR3/room", "OR3/scope"][..],
            ),
        ),
        (
            "case-3",
            (
                "OR3",
                &["OR3/lap", "OR3/scope"][..],
                &["OR3/lap", "OR3/scope"][..],
            ),
        ),
    ]);
    assert_eq!(
        cases.keys().map(String::as_str).collect::<Vec<_>>(),
        expected.keys().copied().collect::<Vec<_>>()
    );
    for (case_id, (room, at_start, served)) in expected {
        let case = &cases[case_id];
        assert_eq!(case.room, room, "{case_id}");
        let (start_ns, start_cameras) = case.started.clone().expect("CaseStarted");
        let (end_ns, end_cameras) = case.ended.clone().expect("CaseEnded");
        assert_eq!(start_cameras, at_start, "{case_id} started with");
        assert_eq!(end_cameras, served, "{case_id} served by");
        assert_eq!(
            case.frames.keys().map(String::as_str).collect::<Vec<_>>(),
            served,
            "{case_id}: cameras with frames"
        );
        for (stream_id, list) in &case.frames {
            let epochs: BTreeSet<u64> = list.iter().map(|(e, _, _)| *e).collect();
            assert_eq!(epochs.len(), 1, "{case_id} {stream_id}: one epoch per part");
            let mut seqs: Vec<u64> = list.iter().map(|(_, s, _)| *s).collect();
            seqs.sort_unstable();
            let n = seqs.len() as u64;
            assert_eq!(
                seqs,
                (0..n).collect::<Vec<_>>(),
                "{case_id} {stream_id}: gap-free"
            );
            for (_, seq, capture) in list {
                assert!(
                    (start_ns..=end_ns).contains(capture),
                    "{case_id} {stream_id} seq {seq}: captured at {capture}, outside the case \
                     [{start_ns}, {end_ns}]"
                );
            }
            let (reason, published) = case.parts[stream_id.as_str()];
            assert_eq!(
                published, n,
                "{case_id} {stream_id}: its end counts its frames"
            );
            let want = if case_id == "case-2" && stream_id == "OR3/room" {
                EndReason::Removed
            } else {
                EndReason::CaseEnded
            };
            assert_eq!(reason, want, "{case_id} {stream_id}");
        }
    }
    // The same camera's parts in consecutive cases are different epochs.
    let lap: BTreeSet<u64> = ["case-1", "case-2", "case-3"]
        .iter()
        .map(|c| cases[*c].frames["OR3/lap"][0].0)
        .collect();
    assert_eq!(lap.len(), 3);
    frames
}

/// The configuration of an ingest `instance` serving room OR5 (camera `lap`) over the given
/// topics, its admin API on `admin`.
fn room_config(
    instance: &str,
    topics: &(String, String, String),
    admin: std::net::SocketAddr,
    tokens: &std::path::Path,
    listen: std::net::SocketAddr,
) -> String {
    let (frames, events, site) = topics;
    format!(
        "frames_topic = \"{frames}\"\nevents_topic = \"{events}\"\nsite_topic = \"{site}\"\n\
         topic_partitions = 2\ninstance = \"{instance}\"\n\
         [admin]\nlisten = \"{admin}\"\ntoken_file = \"{}\"\n\
         [[rooms]]\nname = \"OR5\"\n\
         [[rooms.cameras]]\nname = \"lap\"\nsource = {{ kind = \"test\", is_live = true }}\n\
         output = {{ width = 64, height = 48, max_fps = 10 }}\n\
         [kafka]\nbootstrap_servers = \"{}\"\n\
         [telemetry]\nmetrics_listen = \"{listen}\"\nlog_filter = \"info\"\n",
        tokens.display(),
        kafka::config().bootstrap_servers,
    )
}

#[test]
fn a_killed_ingest_comes_back_with_its_open_case_and_every_frame_is_counted() {
    let topics = (
        unique("test.rooms-kill.frames"),
        unique("test.rooms-kill.streams"),
        unique("test.rooms-kill.site"),
    );
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN}\n")).unwrap();
    let start = |instance: &'static str| {
        let admin = free_port();
        let service = Service::start(ORSTREAM, env!("CARGO_MANIFEST_DIR"), "ingest", |listen| {
            room_config(instance, &topics, admin, &tokens, listen)
        });
        (service, Client::new(&format!("http://{admin}"), TOKEN))
    };

    let (mut first, client) = start("ingest-a");
    first.wait_ready("the first ingest");
    client.start_case("OR5", "case-k").unwrap();
    pause(1500);
    client.add_camera("OR5", "scope", "test:", false).unwrap();
    pause(1500);
    first.child.kill().unwrap();
    first.child.wait().unwrap();

    // Another ingest configured with the same room is refused: a room has one owner.
    let (mut other, _) = start("ingest-b");
    let status = wait_for(
        "the second owner to be refused",
        Duration::from_secs(60),
        || other.child.try_wait().unwrap(),
    );
    assert_eq!(status.code(), Some(2), "{}", other.log());
    assert!(
        other
            .log()
            .contains("room OR5 is served by ingest `ingest-a`"),
        "{}",
        other.log()
    );

    let restarted = std::time::Instant::now();
    let (second, client) = start("ingest-a");
    second.wait_ready("the restarted ingest");
    println!(
        "rooms | killed ingest back, case taken up, ready in {:.2} s",
        restarted.elapsed().as_secs_f64()
    );
    let status = client.status().unwrap();
    assert_eq!(status["rooms"][0]["case"]["case_id"], "case-k", "{status}");
    let names: Vec<&str> = status["rooms"][0]["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["lap", "scope"],
        "the camera added at run time is back"
    );
    pause(1500);
    client.end_case("OR5").unwrap();
    let log = second.stop();
    assert!(!log.contains("case-k"), "no log carries a case id:\n{log}");

    let bus = kafka::bus();
    let events: Vec<StreamEvent> = topic::decode_all(&topic::read_until_quiet(
        &bus,
        &topics.1,
        6,
        Duration::from_secs(3),
    ));
    let frames: Vec<Frame> = topic::decode_all(&topic::read_until_quiet(
        &bus,
        &topics.0,
        20,
        Duration::from_secs(3),
    ));
    assert!(frames.iter().all(|f| f.case_id == "case-k"));
    let ended: Vec<&StreamEvent> = events
        .iter()
        .filter(|e| matches!(e.kind, Some(Kind::CaseEnded(_))))
        .collect();
    assert_eq!(ended.len(), 1);
    for stream_id in ["OR5/lap", "OR5/scope"] {
        let mine: Vec<&Frame> = frames.iter().filter(|f| f.stream_id == stream_id).collect();
        let mut by_epoch: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        for frame in &mine {
            by_epoch
                .entry(frame.session_epoch)
                .or_default()
                .push(frame.seq);
        }
        assert_eq!(
            by_epoch.len(),
            2,
            "{stream_id}: the killed run's epoch and the new one"
        );
        for (epoch, seqs) in &mut by_epoch {
            seqs.sort_unstable();
            let n = seqs.len() as u64;
            assert_eq!(
                *seqs,
                (0..n).collect::<Vec<_>>(),
                "{stream_id} epoch {epoch}"
            );
        }
        let (killed, resumed) = (
            *by_epoch.keys().next().unwrap(),
            *by_epoch.keys().last().unwrap(),
        );
        let ends: Vec<(u64, EndReason, u64)> = events
            .iter()
            .filter(|e| e.stream_id == stream_id)
            .filter_map(|e| match &e.kind {
                Some(Kind::Ended(end)) => Some((
                    e.session_epoch,
                    EndReason::try_from(end.reason).unwrap(),
                    end.frames_published,
                )),
                _ => None,
            })
            .collect();
        assert_eq!(
            ends,
            [
                (killed, EndReason::Failed, by_epoch[&killed].len() as u64),
                (
                    resumed,
                    EndReason::CaseEnded,
                    by_epoch[&resumed].len() as u64
                ),
            ],
            "{stream_id}: each part's end counts the frames the bus holds of it"
        );
        let gap = events
            .iter()
            .find_map(|e| match &e.kind {
                Some(Kind::Discontinuity(d)) if e.stream_id == stream_id => Some(d.clone()),
                _ => None,
            })
            .expect("the gap is recorded");
        assert_eq!(gap.previous_epoch, killed);
        assert_eq!(
            gap.previous_last_seq,
            Some(by_epoch[&killed].len() as u64 - 1)
        );
        assert!(gap.reason.contains("ingest restarted"), "{gap:?}");
    }
    record_accounts_for(&frames, &topics.1, &["case-k"]);
}

/// Stands in for infer (one result per frame read from the frames topic), runs the sink over
/// those results and the events topic into a PostgreSQL record, and checks that the record's
/// accounting of each case counts every frame of each camera of it, completely.
fn record_accounts_for(frames: &[Frame], events_topic: &str, cases: &[&str]) {
    let bus = kafka::bus();
    let results_topic = unique("test.rooms-kill.results");
    bus.create_topic(&results_topic, 2, Duration::from_secs(30))
        .unwrap();
    let records: Vec<_> = frames
        .iter()
        .map(|frame| {
            let identity = ModelIdentity {
                name: "stand-in".to_owned(),
                version: "1.0.0".to_owned(),
                digest: "sha256:0f".to_owned(),
            };
            let result = FrameResult {
                result_time_ns: frame.capture_time_ns + 1_000_000,
                ..result_for(frame, &identity, FrameStatus::Ok)
            };
            topic::result_record(&results_topic, &result)
        })
        .collect();
    topic::publish(&bus, &records);
    let store = isolated(BackendKind::Postgres).unwrap();
    let sink = Service::start(ORSTREAM, env!("CARGO_MANIFEST_DIR"), "sink", |listen| {
        format!(
            "store = \"{}\"\ngroup_id = \"{}\"\nresults_topic = \"{results_topic}\"\n\
             streams_topic = \"{events_topic}\"\nevents_topic = \"{}\"\n\
             [kafka]\nbootstrap_servers = \"{}\"\n\
             [telemetry]\nmetrics_listen = \"{listen}\"\nlog_filter = \"info\"\n",
            store.url(),
            unique("test-rooms-sink"),
            unique("test.rooms-kill.events"),
            kafka::config().bootstrap_servers,
        )
    });
    let mut want: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for frame in frames {
        *want
            .entry((frame.case_id.as_str(), frame.stream_id.as_str()))
            .or_default() += 1;
    }
    for case_id in cases {
        let cameras = want.keys().filter(|(c, _)| c == case_id).count();
        let rows = wait_for(
            &format!("the record to account for {case_id}"),
            Duration::from_secs(90),
            || {
                let mut record = store.open().ok()?;
                let rows = query::accounting::<StreamState>(&mut record, case_id).ok()?;
                (rows.len() == cameras && rows.iter().all(|r| r.complete)).then_some(rows)
            },
        );
        for row in rows {
            let n = want[&(*case_id, row.stream_id.as_str())];
            assert_eq!(
                (row.published, row.results),
                (Some(n), n),
                "{case_id} {row:?}"
            );
        }
        // The timeline covers every camera of the case.
        let mut record = store.open().unwrap();
        let timeline = query::timeline::<StreamState>(&mut record, case_id)
            .unwrap()
            .unwrap();
        let shown: Vec<&str> = timeline
            .streams
            .iter()
            .map(|s| s.stream_id.as_str())
            .collect();
        let cameras: Vec<&str> = want
            .keys()
            .filter(|(c, _)| c == case_id)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(shown, cameras, "{case_id}: the timeline's streams");
    }
    sink.stop();
    let mut record = store.open().unwrap();
    let listed = query::cases::<StreamState>(&mut record).unwrap();
    for case_id in cases {
        let case = listed.iter().find(|c| c.case_id == *case_id).unwrap();
        assert!(case.complete, "{case:?}");
    }
}
