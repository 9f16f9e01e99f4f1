//! Tool tracking cost per frame, on one core.
//!
//! `--streams` cameras (8 by default), each with `--tools` tools (5) moving on smooth
//! crossing paths plus two organs, at 30 fps for `--seconds` (60) of capture time. Every
//! frame goes through the sink's derivation twice over the same results, with tracking on and
//! off, on one thread, each call timed; the difference is what tracking costs. A tool leaves
//! the view for a second every 10 s, so tracks end and new ones are confirmed along the way.
//!
//! ```sh
//! cargo bench -p orstream-sink --bench tracking
//! cargo bench -p orstream-sink --bench tracking -- --streams 32 --tools 8 --seconds 30
//! ```
//! Prints the per-frame time (mean, p50, p99, max) with tracking and without, the tracking
//! cost per frame against the 1 ms budget, and the tracker alone.

use std::time::Instant;

use orstream_proto::{
    BBox, Category, ClockSource, FrameResult, FrameStatus, Instance, ModelIdentity, Point,
};
use orstream_sink::DeriveConfig;
use orstream_sink::derive::{Rules, StreamState};
use orstream_sink::track::{Observation, Tracker};

const FRAME_NS: i64 = 33_333_333;

struct Options {
    streams: usize,
    tools: usize,
    seconds: u64,
}

fn options() -> Options {
    let mut o = Options {
        streams: 8,
        tools: 5,
        seconds: 60,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let value = pair.get(1).and_then(|v| v.parse().ok());
        match (pair[0].as_str(), value) {
            ("--streams", Some(v)) => o.streams = v,
            ("--tools", Some(v)) => o.tools = v,
            ("--seconds", Some(v)) => o.seconds = v as u64,
            _ => {}
        }
    }
    o
}

/// Where tool `k` of stream `s` is at frame `i`, or None while it is out of view.
fn tool_at(s: usize, k: usize, i: u64, tools: usize) -> Option<(f64, f64)> {
    let t = i as f64 / 30.0;
    // Out of view for a second every 10 s, each tool at another time.
    let phase = (t + 2.0 * k as f64 + 0.37 * s as f64) % 10.0;
    if phase < 1.0 {
        return None;
    }
    let a = 2.0 * std::f64::consts::PI * k as f64 / tools as f64;
    // Each tool circles its own centre; neighbours' paths cross.
    let x = 0.5 + 0.25 * a.cos() + 0.12 * (0.7 * t + a).sin();
    let y = 0.5 + 0.25 * a.sin() + 0.12 * (0.9 * t - a).cos();
    Some((x, y))
}

fn instance(class_id: u32, category: Category, cx: f64, cy: f64, half: f64) -> Instance {
    Instance {
        class_id,
        label: format!("class-{class_id}"),
        category: category as i32,
        score: 0.9,
        bbox: Some(BBox {
            x0: (cx - half) as f32,
            y0: (cy - half) as f32,
            x1: (cx + half) as f32,
            y1: (cy + half) as f32,
        }),
        area: (4.0 * half * half) as f32,
        centroid: Some(Point {
            x: cx as f32,
            y: cy as f32,
        }),
        mask: None,
    }
}

fn frame(s: usize, i: u64, tools: usize) -> FrameResult {
    let mut instances: Vec<Instance> = (0..tools)
        .filter_map(|k| {
            let (x, y) = tool_at(s, k, i, tools)?;
            // Five tool classes: with more tools than classes, classes repeat.
            Some(instance(5 + (k % 5) as u32, Category::Tool, x, y, 0.06))
        })
        .collect();
    instances.push(instance(1, Category::Organ, 0.3, 0.4, 0.2));
    instances.push(instance(2, Category::Organ, 0.6, 0.6, 0.25));
    FrameResult {
        stream_id: format!("cam-{s}"),
        case_id: "case-1".into(),
        session_epoch: 0,
        seq: i,
        capture_time_ns: i as i64 * FRAME_NS,
        clock_source: ClockSource::Host as i32,
        status: FrameStatus::Ok as i32,
        model: Some(ModelIdentity {
            name: "m".into(),
            version: "1".into(),
            digest: String::new(),
        }),
        instances,
        ..FrameResult::default()
    }
}

struct Timing {
    ns: Vec<u64>,
}

impl Timing {
    fn summary(&mut self) -> (f64, f64, f64, f64) {
        self.ns.sort_unstable();
        let q = |p: f64| self.ns[((self.ns.len() - 1) as f64 * p) as usize] as f64 / 1e3;
        let mean = self.ns.iter().sum::<u64>() as f64 / self.ns.len() as f64 / 1e3;
        (mean, q(0.5), q(0.99), q(1.0))
    }
}

/// Times derivation of every frame of every stream, frame by frame round the streams.
fn derive_all(frames: &[Vec<FrameResult>], rules: &Rules) -> (Timing, usize) {
    let mut states: Vec<StreamState> = (0..frames.len())
        .map(|s| StreamState::new(&format!("cam-{s}")))
        .collect();
    let mut timing = Timing { ns: Vec::new() };
    let mut outputs = 0;
    for i in 0..frames[0].len() {
        for (state, stream) in states.iter_mut().zip(frames) {
            let started = Instant::now();
            let out = state.apply_result(&stream[i], rules);
            timing.ns.push(started.elapsed().as_nanos() as u64);
            outputs += out.len();
        }
    }
    (timing, outputs)
}

fn main() {
    let o = options();
    let n = o.seconds * 30;
    let frames: Vec<Vec<FrameResult>> = (0..o.streams)
        .map(|s| (0..n).map(|i| frame(s, i, o.tools)).collect())
        .collect();
    let on = Rules::from(&DeriveConfig::default());
    let mut off = on.clone();
    off.tracking.enabled = false;
    println!(
        "tracking bench: {} streams x {} tools (+2 organs), 30 fps, {} s: {} frames, one thread",
        o.streams,
        o.tools,
        o.seconds,
        o.streams as u64 * n
    );
    // Warm-up, then measure both, off first.
    let _ = derive_all(&frames, &on);
    let (mut without, _) = derive_all(&frames, &off);
    let (mut with, outputs) = derive_all(&frames, &on);
    let (w_mean, w_p50, w_p99, w_max) = with.summary();
    let (o_mean, o_p50, o_p99, o_max) = without.summary();
    println!(
        "derivation per frame, tracking on : mean {w_mean:.1} us  p50 {w_p50:.1} us  p99 {w_p99:.1} us  max {w_max:.1} us  ({outputs} outputs)"
    );
    println!(
        "derivation per frame, tracking off: mean {o_mean:.1} us  p50 {o_p50:.1} us  p99 {o_p99:.1} us  max {o_max:.1} us"
    );
    let cost = w_mean - o_mean;
    println!(
        "tracking cost per frame: mean {cost:.1} us = {:.2} % of the 1 ms budget; p99 with tracking {:.2} % of it",
        cost / 10.0,
        w_p99 / 10.0
    );

    // The tracker alone, on the same tool instances.
    let rules = on.tracking.clone();
    let mut trackers: Vec<Tracker> = (0..o.streams).map(|_| Tracker::default()).collect();
    let mut alone = Timing { ns: Vec::new() };
    let mut confirmed = 0;
    for i in 0..n {
        for (s, tracker) in trackers.iter_mut().enumerate() {
            let observations: Vec<Observation> = frames[s][i as usize]
                .instances
                .iter()
                .enumerate()
                .filter(|(_, x)| x.category == Category::Tool as i32)
                .filter_map(|(index, x)| Observation::of(index, x))
                .collect();
            let started = Instant::now();
            let update = tracker.update(0, i, i as i64 * FRAME_NS, observations, &rules);
            alone.ns.push(started.elapsed().as_nanos() as u64);
            confirmed += update.assigned.len();
        }
    }
    let (a_mean, a_p50, a_p99, a_max) = alone.summary();
    let ids: u64 = trackers.iter().map(|t| t.last_id).sum();
    println!(
        "tracker alone per frame: mean {a_mean:.1} us  p50 {a_p50:.1} us  p99 {a_p99:.1} us  max {a_max:.1} us  ({confirmed} assignments, {ids} tracks over all streams)"
    );
}
