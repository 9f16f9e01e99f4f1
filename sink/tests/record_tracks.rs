//! The record's view of tool motion: ended tracks and their sampled points from the record,
//! a live track from a real derivation state, the intervals' track ids, the per-tool totals,
//! the renderers and the speed strips of the picture.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

use orstream_proto::{BBox, Category, FrameResult, FrameStatus, Instance, ModelIdentity, Point};
use orstream_record::Store;
use orstream_record::query::{self, Timeline};
use orstream_record::store::Value;
use orstream_record::svg::svg;
use orstream_record::text::{self, Format};
use orstream_sink::DeriveConfig;
use orstream_sink::derive::{Derived, Rules, StreamState};

const CASE: &str = "case-t";
const T0: i64 = 1_795_000_000_000_000_000;
const S: i64 = 1_000_000_000;

/// Speeds of the sampled points of the first ended track (its peak, 0.6, is the case's).
const TRACK_1_SPEEDS: [f64; 5] = [0.1, 0.6, 0.3, 0.0, 0.2];

fn class_of(label: &str) -> i64 {
    match label {
        "grasper" => 1,
        "hook" => 2,
        _ => 10,
    }
}

fn exec(store: &mut Store, sql: &str, params: &[Value]) {
    store
        .query(sql, params)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

fn stream(store: &mut Store, stream_id: &str, first_ns: i64, last_ns: i64, results: i64) {
    exec(
        store,
        "INSERT INTO streams (case_id, stream_id, first_frame_ns, last_frame_ns, results) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            CASE.into(),
            stream_id.into(),
            first_ns.into(),
            last_ns.into(),
            results.into(),
        ],
    );
}

fn interval(
    store: &mut Store,
    id: &str,
    label: &str,
    category: &str,
    span: (i64, i64),
    tracks: &str,
) {
    exec(
        store,
        "INSERT INTO events (event_id, case_id, stream_id, class_id, label, category, start_ns, \
         end_ns, session_epoch, first_seq, last_seq, frames_seen, peak_confidence, \
         mean_confidence, model_name, model_version, model_digest, track_ids) \
         VALUES ($1, $2, 'cam-1', $8, $3, $4, $5, $6, 0, 0, 10, 11, 0.9, 0.8, 'm', '1', \
         'sha256:00', $7)",
        &[
            id.into(),
            CASE.into(),
            label.into(),
            category.into(),
            (T0 + span.0).into(),
            (T0 + span.1).into(),
            tracks.into(),
            class_of(label).into(),
        ],
    );
}

/// An ended track on cam-1: (id, label, start s, end s, path, mean, peak, idle ns, re-entries,
/// frames), with its points at whole seconds from the start.
#[allow(clippy::too_many_arguments)]
fn ended_track(
    store: &mut Store,
    id: i64,
    label: &str,
    (start_s, end_s): (i64, i64),
    (path, mean, peak): (f64, f64, f64),
    idle_ns: i64,
    reentries: i64,
    frames: i64,
    speeds: &[f64],
) {
    exec(
        store,
        "INSERT INTO tracks (event_id, case_id, stream_id, track_id, class_id, label, \
         session_epoch, first_seq, last_seq, start_ns, end_ns, frames_seen, path_length, \
         mean_speed, peak_speed, idle_ns, reentries, peak_confidence, model_name, model_version, \
         model_digest) VALUES ($1, $2, 'cam-1', $3, $15, $4, 0, $5, $6, $7, $8, $9, $10, $11, $12, \
         $13, $14, 0.93, 'm', '1', 'sha256:00')",
        &[
            format!("track-{id}").into(),
            CASE.into(),
            id.into(),
            label.into(),
            (start_s * 30).into(),
            (end_s * 30).into(),
            (T0 + start_s * S).into(),
            (T0 + end_s * S).into(),
            frames.into(),
            Value::Real(path),
            Value::Real(mean),
            Value::Real(peak),
            idle_ns.into(),
            reentries.into(),
            class_of(label).into(),
        ],
    );
    // Inserted out of order: the view orders them by seq.
    for (k, &speed) in speeds.iter().enumerate().rev() {
        let s = start_s + k as i64;
        point(
            store,
            "cam-1",
            id,
            s * 30,
            T0 + s * S,
            0.1 * k as f64,
            speed,
        );
    }
}

fn point(store: &mut Store, stream_id: &str, track: i64, seq: i64, ns: i64, cx: f64, speed: f64) {
    exec(
        store,
        "INSERT INTO track_points (stream_id, track_id, seq, case_id, time_ns, cx, cy, x0, y0, \
         x1, y1, speed) VALUES ($1, $2, $3, $4, $5, $6, 0.5, $7, 0.45, $8, 0.55, $9)",
        &[
            stream_id.into(),
            track.into(),
            seq.into(),
            CASE.into(),
            ns.into(),
            Value::Real(cx),
            Value::Real(cx - 0.05),
            Value::Real(cx + 0.05),
            Value::Real(speed),
        ],
    );
}

/// A result of cam-2 with a grasper moving right at 0.3 frame widths per second (30 fps).
fn moving_grasper(seq: u64) -> FrameResult {
    let ns = T0 + 6 * S + seq as i64 * (S / 30);
    let cx = 0.2 + 0.01 * seq as f32;
    FrameResult {
        stream_id: "cam-2".into(),
        case_id: CASE.into(),
        seq,
        capture_time_ns: ns,
        status: FrameStatus::Ok as i32,
        model: Some(ModelIdentity {
            name: "m".into(),
            version: "1".into(),
            digest: "sha256:00".into(),
        }),
        instances: vec![Instance {
            class_id: 1,
            label: "grasper".into(),
            category: Category::Tool as i32,
            score: 0.9,
            area: 0.01,
            centroid: Some(Point { x: cx, y: 0.5 }),
            bbox: Some(BBox {
                x0: cx - 0.05,
                y0: 0.45,
                x1: cx + 0.05,
                y1: 0.55,
            }),
            ..Instance::default()
        }],
        result_time_ns: ns,
        width: 640,
        height: 360,
        ..FrameResult::default()
    }
}

/// The record: cam-1 with three closed intervals and two ended tracks, cam-2 with twenty frames
/// of a grasper whose track and interval are still open (its state stored as the sink does,
/// its points written as the tracker kept them). Returns the store and cam-2's state.
fn record() -> (Store, StreamState, usize) {
    let mut store = Store::open("sqlite::memory:").unwrap();
    exec(
        &mut store,
        "INSERT INTO cases (case_id, started_ns) VALUES ($1, $2)",
        &[CASE.into(), T0.into()],
    );
    stream(&mut store, "cam-1", T0, T0 + 5 * S, 151);
    interval(&mut store, "e-grasper", "grasper", "tool", (S, 5 * S), "1");
    interval(&mut store, "e-hook", "hook", "tool", (2 * S, 4 * S), "2");
    interval(&mut store, "e-liver", "liver", "organ", (0, 5 * S), "");
    ended_track(
        &mut store,
        1,
        "grasper",
        (1, 5),
        (0.8, 0.2, 0.6),
        1_500_000_000,
        1,
        120,
        &TRACK_1_SPEEDS,
    );
    ended_track(
        &mut store,
        2,
        "hook",
        (2, 4),
        (0.1, 0.05, 0.15),
        500_000_000,
        0,
        60,
        &[0.05, 0.15],
    );

    let rules = Rules::from(&DeriveConfig::default());
    let mut state = StreamState::new("cam-2");
    let mut points = 0;
    for seq in 0..20 {
        for output in state.apply_result(&moving_grasper(seq), &rules) {
            if let Derived::TrackPoints(stream_id, case_id, kept) = output {
                assert_eq!((stream_id.as_str(), case_id.as_str()), ("cam-2", CASE));
                for p in kept {
                    point(
                        &mut store,
                        "cam-2",
                        i64::try_from(p.track_id).unwrap(),
                        i64::try_from(p.seq).unwrap(),
                        p.ns,
                        p.cx,
                        p.speed,
                    );
                    points += 1;
                }
            }
        }
    }
    stream(
        &mut store,
        "cam-2",
        T0 + 6 * S,
        T0 + 6 * S + 19 * (S / 30),
        20,
    );
    exec(
        &mut store,
        "INSERT INTO derivation_state (stream_id, version, state) VALUES ('cam-2', 1, $1)",
        &[serde_json::to_string(&state).unwrap().into()],
    );
    (store, state, points)
}

fn timeline() -> (Timeline, StreamState, usize) {
    let (mut store, state, points) = record();
    let timeline = query::timeline::<StreamState>(&mut store, CASE)
        .unwrap()
        .unwrap();
    (timeline, state, points)
}

#[test]
fn the_timeline_has_ended_and_live_tracks_with_their_points() {
    let (timeline, state, points) = timeline();
    let live = state.open_tracks();
    assert_eq!(live.len(), 1, "the grasper on cam-2 is confirmed and live");
    let live = &live[0];
    assert!(points >= 2, "the tracker kept points of the live track");

    let ids: Vec<(&str, u64, &str, bool)> = timeline
        .tracks
        .iter()
        .map(|t| (t.stream_id.as_str(), t.track_id, t.label.as_str(), t.open))
        .collect();
    assert_eq!(
        ids,
        [
            ("cam-1", 1, "grasper", false),
            ("cam-1", 2, "hook", false),
            ("cam-2", 1, "grasper", true),
        ]
    );

    let first = &timeline.tracks[0];
    assert_eq!(first.event_id, "track-1");
    assert_eq!((first.start_offset_ns, first.end_offset_ns), (S, 5 * S));
    assert_eq!((first.first_seq, first.last_seq), (30, 150));
    assert_eq!(first.frames_seen, 120);
    assert_eq!(first.path_length, 0.8);
    assert_eq!(first.mean_speed, 0.2);
    assert_eq!(first.peak_speed, 0.6);
    assert_eq!(first.idle_ns, 1_500_000_000);
    assert_eq!(first.reentries, 1);
    assert!((first.peak_confidence - 0.93).abs() < 1e-9);
    let speeds: Vec<f64> = first.points.iter().map(|p| p.speed).collect();
    assert_eq!(speeds, TRACK_1_SPEEDS, "points in frame order");
    let offsets: Vec<i64> = first.points.iter().map(|p| p.offset_ns).collect();
    assert_eq!(offsets, [S, 2 * S, 3 * S, 4 * S, 5 * S]);
    assert_eq!(timeline.tracks[1].points.len(), 2);

    // The live track: figures so far from the state, points from the record.
    let open = &timeline.tracks[2];
    assert_eq!(open.event_id, live.event_id());
    assert_eq!(open.start_ns, T0 + 6 * S);
    assert_eq!(open.start_offset_ns, 6 * S);
    assert_eq!(open.end_ns, T0 + 6 * S + 19 * (S / 30));
    assert_eq!((open.first_seq, open.last_seq), (0, 19));
    assert_eq!(open.frames_seen, 20);
    assert_eq!(open.path_length, live.motion.path_length);
    assert_eq!(open.peak_speed, live.motion.peak_speed);
    assert!(
        (0.15..0.2).contains(&open.path_length),
        "about nineteen steps of 0.01: {}",
        open.path_length
    );
    assert!((0.9 - open.peak_confidence).abs() < 1e-6);
    assert_eq!(open.points.len(), points);
    assert!(
        open.points
            .windows(2)
            .all(|w| w[0].offset_ns < w[1].offset_ns)
    );
    assert_eq!(open.points[0].offset_ns, 6 * S);

    // Intervals carry their tracks; organs none; the open interval its live track.
    let track_ids: Vec<(&str, &str, bool, Vec<u64>)> = timeline
        .events
        .iter()
        .map(|e| {
            (
                e.stream_id.as_str(),
                e.label.as_str(),
                e.open,
                e.track_ids.clone(),
            )
        })
        .collect();
    assert_eq!(
        track_ids,
        [
            ("cam-1", "liver", false, vec![]),
            ("cam-1", "grasper", false, vec![1]),
            ("cam-1", "hook", false, vec![2]),
            ("cam-2", "grasper", true, vec![1]),
        ]
    );
}

#[test]
fn motion_totals_per_tool() {
    let (timeline, state, _) = timeline();
    let live = state.open_tracks()[0].motion;
    let live_span = 19 * (S / 30);
    let motion = query::motion(&timeline);
    assert_eq!(motion.len(), 2);

    let grasper = &motion[0];
    assert_eq!(grasper.label, "grasper");
    assert_eq!(grasper.tracks, 2);
    assert_eq!(grasper.tracked_ns, 4 * S + live_span);
    assert!((grasper.path_length - (0.8 + live.path_length)).abs() < 1e-12);
    let mean = (0.8 + live.path_length) / ((4 * S + live_span) as f64 / 1e9);
    assert!((grasper.mean_speed - mean).abs() < 1e-12);
    assert_eq!(grasper.peak_speed, 0.6_f64.max(live.peak_speed));
    assert_eq!(grasper.idle_ns, 1_500_000_000 + live.idle_ns);
    assert_eq!(grasper.reentries, 1 + u64::from(live.reentries));

    let hook = &motion[1];
    assert_eq!(hook.label, "hook");
    assert_eq!(hook.tracks, 1);
    assert_eq!(hook.tracked_ns, 2 * S);
    assert!((hook.path_length - 0.1).abs() < 1e-12);
    assert!((hook.mean_speed - 0.05).abs() < 1e-12);
    assert_eq!(hook.peak_speed, 0.15);
    assert_eq!(hook.idle_ns, 500_000_000);
    assert_eq!(hook.reentries, 0);
}

#[test]
fn renderers_show_the_figures() {
    let (timeline, _, _) = timeline();
    let table = text::render_tracks(&timeline, Format::Table);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2 + 3, "header, rule, one line per track");
    assert!(lines[0].contains("path (frame units)"));
    assert!(lines[0].contains("peak (frame units/s)"));
    assert!(lines[0].contains("idle (s)"));
    let first: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        first,
        [
            "cam-1",
            "1",
            "grasper",
            "00:00:01.000",
            "00:00:05.000",
            "4.000",
            "0.800",
            "0.200",
            "0.600",
            "1.500",
            "1",
            "120",
            "no"
        ]
    );
    assert!(lines[4].starts_with("cam-2 "));
    assert!(lines[4].ends_with(" yes"));

    let csv = text::render_tracks(&timeline, Format::Csv);
    assert!(csv.lines().any(
        |l| l == "cam-1,2,hook,00:00:02.000,00:00:04.000,2.000,0.100,0.050,0.150,0.500,0,60,no"
    ));

    let json: serde_json::Value =
        serde_json::from_str(&text::render_tracks(&timeline, Format::Json)).unwrap();
    let tracks = json.as_array().unwrap();
    assert_eq!(tracks.len(), 3);
    assert_eq!(tracks[0]["points"].as_array().unwrap().len(), 5);
    assert_eq!(tracks[0]["points"][1]["speed"], 0.6);
    assert_eq!(tracks[2]["open"], true);

    let motion = query::motion(&timeline);
    let table = text::render_motion(&motion, Format::Table);
    let hook: Vec<&str> = table.lines().nth(3).unwrap().split_whitespace().collect();
    assert_eq!(
        hook,
        [
            "hook", "1", "2.000", "0.100", "0.050", "0.150", "0.500", "0"
        ]
    );
    assert!(table.lines().next().unwrap().contains("tracked (s)"));
    let json: serde_json::Value =
        serde_json::from_str(&text::render_motion(&motion, Format::Json)).unwrap();
    assert_eq!(json[0]["label"], "grasper");
    assert_eq!(json[0]["tracks"], 2);
    assert_eq!(
        text::render_motion(&motion, Format::Csv).lines().nth(2),
        Some("hook,1,2.000,0.100,0.050,0.150,0.500,0")
    );
}

/// The `points` of each speed line, as (x, y) pairs.
fn speed_lines(svg: &str) -> Vec<Vec<(f64, f64)>> {
    svg.split("<polyline class=\"speed\" points=\"")
        .skip(1)
        .map(|rest| {
            rest.split('"')
                .next()
                .unwrap()
                .split(' ')
                .map(|pair| {
                    let (x, y) = pair.split_once(',').unwrap();
                    (x.parse().unwrap(), y.parse().unwrap())
                })
                .collect()
        })
        .collect()
}

#[test]
fn the_picture_has_a_speed_line_per_track() {
    let (timeline, _, points) = timeline();
    let svg = svg(&timeline);
    let lines = speed_lines(&svg);
    assert_eq!(lines.len(), 3, "one line per track with points");
    assert_eq!(lines[0].len(), 5);
    assert_eq!(lines[1].len(), 2);
    assert_eq!(lines[2].len(), points);

    // Rows: grasper on cam-1 and cam-2, hook, then liver; each tool row 26 px of bars and a
    // 26 px strip whose baseline is 20 px under the bars. The case peak (0.6) is the strip's
    // top.
    let base = 70.0 + 26.0 + 20.0;
    let ys: Vec<f64> = lines[0].iter().map(|&(_, y)| y).collect();
    let expected: Vec<f64> = TRACK_1_SPEEDS
        .iter()
        .map(|s| ((base - 20.0 * s / 0.6) * 10.0_f64).round() / 10.0)
        .collect();
    assert_eq!(ys, expected);
    assert!(
        lines[0].windows(2).all(|w| w[0].0 < w[1].0),
        "time runs right"
    );
    let hook_base = 70.0 + 2.0 * 52.0 + 26.0 + 20.0;
    assert!(
        lines[1]
            .iter()
            .all(|&(_, y)| y <= hook_base && y >= hook_base - 20.0)
    );
    assert!(svg.contains("strip height = 0.600 frame units/s"));
    assert_eq!(
        svg.matches(">speed, peak ").count(),
        3,
        "one label per tool row"
    );
    assert!(svg.contains(">speed, peak 0.600/s<"));
    assert!(svg.contains(">speed, peak 0.150/s<"));
    assert!(svg.contains("grasper track 1 on cam-1: 00:00:01.000 to 00:00:05.000"));
    // Organs keep their plain row; the bars are unchanged.
    assert_eq!(svg.matches("fill=\"#c05621\"><title>").count(), 1);
    assert_eq!(svg.matches("fill=\"#2b6cb0\"><title>").count(), 2);
    assert!(svg.trim_end().ends_with("</svg>"));
}
