//! Scripted input for a case that exercises every derivation rule of the sink: results of
//! several cameras with tools and organs coming and going, flickers, skipped frames, a
//! reconnect, and the lifecycle events ingest would publish.

use orstream_proto::{
    BBox, Category, ClockSource, FrameResult, FrameStatus, Instance, ModelIdentity, Point,
    StreamDiscontinuity, StreamEnded, StreamEvent, StreamStarted, stream_event,
};

/// Classes of the scripted model: (id, label, category, frames visible, frames hidden).
const CLASSES: &[(u32, &str, Category, u64, u64)] = &[
    (1, "grasper", Category::Tool, 90, 60),
    (2, "hook", Category::Tool, 45, 120),
    (3, "clipper", Category::Tool, 30, 200),
    (101, "liver", Category::Organ, 400, 30),
    (102, "gallbladder", Category::Organ, 150, 90),
];

/// Deterministic input for a case: `streams` cameras at `fps`, `frames` results each, with
/// tools and organs coming and going (each class wandering around its own place, so tools
/// become tracks), one-frame flickers and false positives, a run of
/// SKIPPED_STALE frames (even streams) and a reconnect under a new epoch (odd streams), and
/// the lifecycle events ingest would publish (started, discontinuity, ended).
#[derive(Debug, Clone, PartialEq)]
pub struct Script {
    /// Streams, named `<case>-cam-<n>`.
    pub streams: usize,
    /// Results per stream.
    pub frames: u64,
    /// The case.
    pub case_id: String,
    /// Capture time of the first frame.
    pub t0_ns: i64,
    /// Frames per second.
    pub fps: u32,
}

impl Script {
    /// A script with the usual clock (30 fps from a fixed instant).
    pub fn new(case_id: &str, streams: usize, frames: u64) -> Self {
        Self {
            streams,
            frames,
            case_id: case_id.to_owned(),
            t0_ns: 1_795_000_000_000_000_000,
            fps: 30,
        }
    }

    /// The name of stream `s`.
    pub fn stream_id(&self, s: usize) -> String {
        format!("{}-cam-{s}", self.case_id)
    }

    fn frame_ns(&self) -> i64 {
        1_000_000_000 / i64::from(self.fps.max(1))
    }

    /// Where frame `i` of stream `s` lands: (epoch, seq, capture time).
    fn place(&self, s: usize, i: u64) -> (u64, u64, i64) {
        let reconnect = self.frames / 2;
        let base = self.t0_ns + (s as i64) * 7_000_000 + i as i64 * self.frame_ns();
        if s % 2 == 1 && i >= reconnect {
            // The camera was away for two seconds and came back under a new epoch.
            (1, i - reconnect, base + 2_000_000_000)
        } else {
            (0, i, base)
        }
    }

    /// Result `i` of stream `s`.
    pub fn result(&self, s: usize, i: u64) -> FrameResult {
        let (epoch, seq, capture) = self.place(s, i);
        let skipped = s.is_multiple_of(2) && (self.frames / 3..self.frames / 3 + 5).contains(&i);
        let mut instances = Vec::new();
        if !skipped {
            for (k, &(class_id, label, category, on, off)) in CLASSES.iter().enumerate() {
                let phase = (i + (s as u64) * 37 + k as u64 * 53) % (on + off);
                let h = hash(s as u64, u64::from(class_id), i);
                // One frame in 40 flips: a flicker inside a visible run, or a false positive.
                let visible = (phase < on) != h.is_multiple_of(40);
                if visible {
                    // Each class wanders around its own place (tools are tracked by it).
                    let t = i as f32 / self.fps.max(1) as f32;
                    let cx = 0.15 + 0.15 * (k % 5) as f32 + 0.04 * (0.9 * t + s as f32).sin();
                    let cy = 0.3 + 0.3 * (k / 5) as f32 + 0.04 * (0.7 * t).cos();
                    instances.push(Instance {
                        class_id,
                        label: label.to_owned(),
                        category: category as i32,
                        score: 0.55 + (h % 44) as f32 / 100.0,
                        area: 0.01 + (h % 20) as f32 / 100.0,
                        centroid: Some(Point { x: cx, y: cy }),
                        bbox: Some(BBox {
                            x0: cx - 0.05,
                            y0: cy - 0.05,
                            x1: cx + 0.05,
                            y1: cy + 0.05,
                        }),
                        ..Instance::default()
                    });
                }
            }
        }
        FrameResult {
            stream_id: self.stream_id(s),
            case_id: self.case_id.clone(),
            session_epoch: epoch,
            seq,
            capture_time_ns: capture,
            clock_source: ClockSource::Host as i32,
            status: if skipped {
                FrameStatus::SkippedStale as i32
            } else {
                FrameStatus::Ok as i32
            },
            status_detail: if skipped {
                "deadline missed".to_owned()
            } else {
                String::new()
            },
            model: Some(ModelIdentity {
                name: "scripted".to_owned(),
                version: "1.0.0".to_owned(),
                digest: "sha256:5c417e".to_owned(),
            }),
            instances,
            result_time_ns: capture + 40_000_000,
            width: 640,
            height: 360,
            ..FrameResult::default()
        }
    }

    /// Every result, interleaved across streams frame by frame (as the cameras produce them).
    pub fn results(&self) -> Vec<FrameResult> {
        (0..self.frames)
            .flat_map(|i| (0..self.streams).map(move |s| (s, i)))
            .map(|(s, i)| self.result(s, i))
            .collect()
    }

    /// The lifecycle events of stream `s`, in order.
    pub fn stream_events(&self, s: usize) -> Vec<StreamEvent> {
        let stream_id = self.stream_id(s);
        let event = |epoch, time_ns, kind| StreamEvent {
            stream_id: stream_id.clone(),
            case_id: self.case_id.clone(),
            session_epoch: epoch,
            time_ns,
            room_id: String::new(),
            kind: Some(kind),
        };
        let started = || {
            stream_event::Kind::Started(StreamStarted {
                source_kind: "test".to_owned(),
                width: 640,
                height: 360,
                fps: f64::from(self.fps),
            })
        };
        let mut out = vec![event(0, self.place(s, 0).2, started())];
        if s % 2 == 1 && self.frames >= 2 {
            let before = self.place(s, self.frames / 2 - 1);
            let after = self.place(s, self.frames / 2);
            out.push(event(
                1,
                after.2,
                stream_event::Kind::Discontinuity(StreamDiscontinuity {
                    previous_epoch: 0,
                    previous_last_seq: Some(before.1),
                    gap_start_ns: before.2,
                    gap_end_ns: after.2,
                    reason: "stall: no buffer for 2s".to_owned(),
                }),
            ));
            out.push(event(1, after.2, started()));
        }
        let last = self.place(s, self.frames.saturating_sub(1));
        out.push(event(
            last.0,
            last.2 + 1,
            stream_event::Kind::Ended(StreamEnded {
                reason: 1,
                frames_published: self.frames,
                frames_dropped: 0,
                detail: String::new(),
            }),
        ));
        out
    }

    /// Every lifecycle event, stream by stream.
    pub fn all_stream_events(&self) -> Vec<StreamEvent> {
        (0..self.streams)
            .flat_map(|s| self.stream_events(s))
            .collect()
    }
}

/// Three numbers mixed into one (a 64-bit finaliser), so the script's flickers and scores look
/// random yet come out the same on every run.
fn hash(a: u64, b: u64, c: u64) -> u64 {
    let mut x = a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f) ^ c;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}
