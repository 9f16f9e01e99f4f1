//! Tool tracking on the demo clip's scripted tool paths (`models/demo/clip.tracks.json`: the
//! ground-truth mask centroid and box of each scripted tool appearance, frame by frame), fed
//! to the sink's derivation as per-frame results, the way a segmentation model's instances
//! arrive. This measures the tracker itself, apart from the model: with exact masks, with
//! noisy masks (every centroid and box edge off by up to 0.006 of the frame, a fixed
//! pseudo-random sequence) and with a detector that misses every seventh frame of each tool.
//! Each truth tool must be one track (no identity switch, no spurious track) and its path
//! length within 10 % of the ground truth. The demo model on the rendered clip is scored by
//! `tests/e2e_embedded.rs` and by `orstream demo`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

use std::path::Path;

use orstream::demo::tracks::{Assigned, MeasuredTrack, TrackScore, TruthTracks, score};
use orstream_proto::{
    BBox, Category, ClockSource, FrameResult, FrameStatus, Instance, ModelIdentity, Point,
};
use orstream_sink::DeriveConfig;
use orstream_sink::derive::{Derived, Rules, StreamState, TrackRecord};

const T0: i64 = 1_795_000_000_000_000_000;
const MAX_PATH_ERROR: f64 = 0.10;

/// Class ids of the demo model's tools.
fn class_id(label: &str) -> u32 {
    match label {
        "grasper" => 5,
        "hook" => 6,
        "clip_applier" => 7,
        "scissors" => 8,
        "irrigator" => 9,
        other => panic!("unknown tool {other}"),
    }
}

/// One of the clip's frames as a detector would describe it.
struct Detection {
    label: String,
    cx: f64,
    cy: f64,
    bbox: [f64; 4],
    area: f64,
}

/// How the detector errs.
#[derive(Clone, Copy)]
enum Detector {
    Exact,
    /// Centroid and box edges off by up to this much, uniformly.
    Noisy(f64),
    /// Misses every n-th frame of each tool.
    Missing(u64),
}

/// A fixed pseudo-random sequence in [-1, 1].
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

fn truth() -> (TruthTracks, serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/demo/clip.tracks.json");
    let text = std::fs::read_to_string(&path).unwrap();
    (
        TruthTracks::parse(&text).unwrap(),
        serde_json::from_str(&text).unwrap(),
    )
}

/// Per frame, the scripted tools visible in it.
fn detections(json: &serde_json::Value, detector: Detector) -> Vec<Vec<Detection>> {
    let frames = json["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["frames"].as_array().unwrap())
        .map(|f| f[0].as_u64().unwrap())
        .max()
        .unwrap();
    let mut out: Vec<Vec<Detection>> = (0..=frames).map(|_| Vec::new()).collect();
    let mut noise = Noise(0x2545_f491_4f6c_dd1d);
    for track in json["tracks"].as_array().unwrap() {
        let label = track["label"].as_str().unwrap();
        for (k, f) in track["frames"].as_array().unwrap().iter().enumerate() {
            let v: Vec<f64> = f
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            if let Detector::Missing(n) = detector
                && k as u64 % n == n - 1
            {
                continue;
            }
            let e = match detector {
                Detector::Noisy(e) => e,
                _ => 0.0,
            };
            let mut d = Detection {
                label: label.to_owned(),
                cx: v[1],
                cy: v[2],
                bbox: [v[3], v[4], v[5], v[6]],
                area: v[7],
            };
            d.cx += e * noise.next();
            d.cy += e * noise.next();
            for b in &mut d.bbox {
                *b += e * noise.next();
            }
            out[v[0] as usize].push(d);
        }
    }
    out
}

fn result(seq: u64, fps: f64, detections: &[Detection]) -> FrameResult {
    FrameResult {
        stream_id: "or1".into(),
        case_id: "case-1".into(),
        session_epoch: 0,
        seq,
        capture_time_ns: T0 + (seq as f64 * 1e9 / fps).round() as i64,
        clock_source: ClockSource::Host as i32,
        status: FrameStatus::Ok as i32,
        model: Some(ModelIdentity {
            name: "scripted".into(),
            version: "1".into(),
            digest: String::new(),
        }),
        instances: detections
            .iter()
            .map(|d| Instance {
                class_id: class_id(&d.label),
                label: d.label.clone(),
                category: Category::Tool as i32,
                score: 0.95,
                bbox: Some(BBox {
                    x0: d.bbox[0] as f32,
                    y0: d.bbox[1] as f32,
                    x1: d.bbox[2] as f32,
                    y1: d.bbox[3] as f32,
                }),
                area: d.area as f32,
                centroid: Some(Point {
                    x: d.cx as f32,
                    y: d.cy as f32,
                }),
                mask: None,
            })
            .collect(),
        ..FrameResult::default()
    }
}

fn measured_track(t: &TrackRecord) -> MeasuredTrack {
    MeasuredTrack {
        track_id: t.motion.track_id,
        label: t.label.clone(),
        path_length: t.motion.path_length,
    }
}

/// Runs the clip's frames through derivation and scores the tracks.
fn track(detector: Detector) -> TrackScore {
    track_with(detector, Rules::from(&DeriveConfig::default()))
}

fn track_with(detector: Detector, rules: Rules) -> TrackScore {
    let (truth, json) = truth();
    let mut state = StreamState::new("or1");
    let mut assigned = Vec::new();
    let mut measured = Vec::new();
    for (seq, frame) in detections(&json, detector).iter().enumerate() {
        for output in state.apply_result(&result(seq as u64, truth.fps, frame), &rules) {
            match output {
                Derived::Tracked(f) => assigned.extend(f.assigned.iter().map(|a| Assigned {
                    frame: f.seq,
                    track_id: a.track_id,
                    label: a.label.clone(),
                    cx: a.cx,
                    cy: a.cy,
                })),
                Derived::Track(t) => measured.push(measured_track(&t)),
                _ => {}
            }
        }
    }
    measured.extend(state.open_tracks().iter().map(measured_track));
    score(&truth, &assigned, &measured)
}

fn check(score: &TrackScore) {
    let table = score.render();
    println!("{table}");
    assert_eq!(score.switches, 0, "{table}");
    assert!(score.spurious.is_empty(), "{table}");
    for row in &score.rows {
        assert_eq!(row.track_ids.len(), 1, "one track per tool:\n{table}");
        let error = row.path_error().unwrap();
        assert!(
            error.abs() <= MAX_PATH_ERROR,
            "{} {}: path error {:.1} %\n{table}",
            row.label,
            row.truth_id,
            error * 100.0
        );
    }
}

#[test]
fn exact_masks_give_one_track_per_tool_and_its_path() {
    check(&track(Detector::Exact));
}

#[test]
fn noisy_masks_still_give_one_track_per_tool_and_its_path() {
    check(&track(Detector::Noisy(0.006)));
}

#[test]
fn missed_detections_do_not_split_tracks() {
    check(&track(Detector::Missing(7)));
}
