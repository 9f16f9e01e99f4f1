//! Tool tracking: per stream, the tool instances of successive frames -> tracks (one
//! instrument followed over time) with their motion. SORT-style and, like derivation, pure and
//! deterministic: the same instances in the same order, from the same [`Tracker`], give the
//! same assignments, the same ids and the same next state, so the sink stores the tracker with
//! the derivation state and a restart resumes the same tracks.
//!
//! Per usable frame:
//! - *Observations* are the frame's instances of tool classes that count for derivation
//!   (category enabled, score >= `min_score`), with their mask centroid and box.
//! - Each track predicts where its centroid is now with a constant-velocity Kalman filter per
//!   axis (state: position and velocity; process noise from `acceleration_noise`, measurement
//!   noise `measurement_noise`), and its box is the last measured box moved with it.
//! - *Association*: a track and an observation may pair when their classes match and the
//!   predicted box overlaps the observation's box by at least `min_iou` (IoU) or the predicted
//!   centroid lies within `max_distance` of the observation's. Cost `(1 - IoU) + distance /
//!   max_distance`; the pairs are the minimum-cost assignment (Hungarian), which keeps crossing
//!   tools apart by where each was heading.
//! - *Pieces*: a semantic model gives one instance per connected region, so a tool under a
//!   tissue flap comes in pieces. An unpaired observation whose box, widened by
//!   `fragment_margin`, touches the box of a paired observation of its class is a piece of that
//!   tool; unpaired touching pieces of one class are one new tool. The merged observation has
//!   the area-weighted centroid and the union box.
//! - A new observation starts a *tentative* track; it is *confirmed* (given the stream's next
//!   id, from 1) after `confirm_frames` frames in a row, and dies at its first miss before that.
//!   A confirmed track survives frames without its tool (occlusion, a short exit) and ends once
//!   unseen for longer than `lost_after`; every track ends at a gap, a new epoch, a new model, a
//!   new case and the stream's end, so a track never spans a discontinuity.
//!
//! Motion, in normalized image units (x / width, y / height; speeds per second), from the
//! filtered centroid: a trajectory point (time, centroid, box, speed) is kept at the first
//! assignment and then every `trajectory_interval`; path length is the length of that
//! polyline on to the last assignment (across misses too), so it can be recomputed from the
//! stored points, and sampling at a fraction of a second keeps segmentation jitter from
//! adding up frame by frame; mean speed (path over the time from the first to the last
//! assignment), peak speed (the filtered velocity's largest magnitude), idle time (time between
//! consecutive frames both assigned while the filtered speed was under `idle_speed`) and
//! re-entries (assigned again after at least one missed frame and `reentry_after` unseen). The
//! last assignment is kept as a point too when the track ends.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Tracking rules in the form the hot path uses.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackRules {
    /// Whether tool instances are tracked at all.
    pub enabled: bool,
    /// Frames in a row that confirm a track.
    pub confirm_frames: u64,
    /// A confirmed track unseen for longer than this ends (capture time, ns).
    pub lost_after_ns: i64,
    /// Unseen for at least this long (and at least one frame) then seen again: a re-entry.
    pub reentry_after_ns: i64,
    /// Box overlap (IoU) that lets a track and an observation pair.
    pub min_iou: f64,
    /// Centroid distance (normalized units) that lets a track and an observation pair.
    pub max_distance: f64,
    /// How far apart (normalized units) the boxes of two pieces of one tool may be.
    pub fragment_margin: f64,
    /// Filtered speed (normalized units per second) under which a tool is idle.
    pub idle_speed: f64,
    /// Time between kept trajectory points (ns).
    pub trajectory_interval_ns: i64,
    /// Standard deviation of a measured centroid (normalized units).
    pub measurement_noise: f64,
    /// Standard deviation of the acceleration (normalized units per second squared).
    pub acceleration_noise: f64,
}

impl Default for TrackRules {
    fn default() -> Self {
        Self {
            enabled: true,
            confirm_frames: 3,
            lost_after_ns: 1_000_000_000,
            reentry_after_ns: 500_000_000,
            min_iou: 0.1,
            max_distance: 0.15,
            fragment_margin: 0.02,
            idle_speed: 0.02,
            trajectory_interval_ns: 500_000_000,
            measurement_noise: 0.01,
            acceleration_noise: 0.2,
        }
    }
}

/// Nanoseconds of a duration, saturating.
pub fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// One tool instance of a frame, as the tracker sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Index in the frame's instances (of the largest piece, after merging).
    pub index: u32,
    /// The model's class id: an observation only ever joins a track of its class.
    pub class_id: u32,
    /// Class label.
    pub label: String,
    /// Score (the best piece's).
    pub score: f32,
    /// Mask centroid, normalized.
    pub cx: f64,
    /// Mask centroid, normalized.
    pub cy: f64,
    /// Box `[x0, y0, x1, y1]`, normalized.
    pub bbox: [f64; 4],
    /// Fraction of the image covered.
    pub area: f64,
}

impl Observation {
    /// The tracker's view of instance `index` of a frame; None without a centroid or box.
    pub fn of(index: usize, instance: &orstream_proto::Instance) -> Option<Self> {
        let (c, b) = (instance.centroid.as_ref()?, instance.bbox.as_ref()?);
        let numbers = [
            instance.score,
            instance.area,
            c.x,
            c.y,
            b.x0,
            b.y0,
            b.x1,
            b.y1,
        ];
        if !numbers.iter().all(|n| n.is_finite()) {
            return None;
        }
        Some(Self {
            index: index as u32,
            class_id: instance.class_id,
            label: instance.label.clone(),
            score: instance.score,
            cx: f64::from(c.x),
            cy: f64::from(c.y),
            bbox: [b.x0, b.y0, b.x1, b.y1].map(f64::from),
            area: f64::from(instance.area),
        })
    }
}

/// A constant-velocity Kalman filter on one axis.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    /// Position, in normalized image units (x / width or y / height).
    pub p: f64,
    /// Velocity (per second).
    pub v: f64,
    /// Covariance: position variance.
    pub pp: f64,
    /// Covariance: position-velocity.
    pub pv: f64,
    /// Covariance: velocity variance.
    pub vv: f64,
}

impl Axis {
    fn new(z: f64, rules: &TrackRules) -> Self {
        let r = rules.measurement_noise * rules.measurement_noise;
        Self {
            p: z,
            v: 0.0,
            pp: r,
            pv: 0.0,
            // A tool may come in at up to about half the picture per second.
            vv: 0.25,
        }
    }

    fn predicted(&self, dt: f64) -> f64 {
        self.p + self.v * dt
    }

    /// Predicts `dt` seconds ahead, then corrects with the measured position `z`.
    fn step(&mut self, dt: f64, z: f64, rules: &TrackRules) {
        let q = rules.acceleration_noise * rules.acceleration_noise;
        let (dt2, dt3, dt4) = (dt * dt, dt * dt * dt, dt * dt * dt * dt);
        let p = self.p + self.v * dt;
        let pp = self.pp + 2.0 * self.pv * dt + self.vv * dt2 + q * dt4 / 4.0;
        let pv = self.pv + self.vv * dt + q * dt3 / 2.0;
        let vv = self.vv + q * dt2;
        let s = pp + rules.measurement_noise * rules.measurement_noise;
        let (k0, k1) = (pp / s, pv / s);
        let y = z - p;
        self.p = p + k0 * y;
        self.v += k1 * y;
        self.pp = pp * (1.0 - k0);
        self.pv = pv * (1.0 - k0);
        self.vv = vv - k1 * pv;
        // Finite inputs keep the filter finite; should a step still overflow (a position far
        // outside any picture), the axis starts again from the measurement.
        if ![self.p, self.v, self.pp, self.pv, self.vv]
            .iter()
            .all(|n| n.is_finite())
        {
            *self = Self::new(z, rules);
        }
    }
}

/// A kept trajectory point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrackPoint {
    /// Track id (0 while tentative; set when emitted).
    pub track_id: u64,
    /// Frame seq.
    pub seq: u64,
    /// Capture time.
    pub ns: i64,
    /// Filtered centroid.
    pub cx: f64,
    /// Filtered centroid.
    pub cy: f64,
    /// Measured box.
    pub bbox: [f64; 4],
    /// Filtered speed.
    pub speed: f64,
}

/// One track, tentative (`id == 0`) or confirmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Track {
    /// Per-stream id from 1; 0 while tentative.
    pub id: u64,
    /// The class the track follows; it never changes.
    pub class_id: u32,
    /// Class label.
    pub label: String,
    /// Session epoch of its frames.
    pub epoch: u64,
    /// Kalman filter, x.
    pub x: Axis,
    /// Kalman filter, y.
    pub y: Axis,
    /// Last measured box.
    pub bbox: [f64; 4],
    /// First assigned frame and its capture time.
    pub first_seq: u64,
    /// Capture time of the first assignment.
    pub first_ns: i64,
    /// Last assigned frame.
    pub last_seq: u64,
    /// Capture time of the last assignment (the filter's time).
    pub last_ns: i64,
    /// Frames assigned.
    pub hits: u64,
    /// Filtered centroid at the first assignment.
    pub first_pos: (f64, f64),
    /// Length of the trajectory up to the last kept point.
    pub path: f64,
    /// Filtered centroid at the last kept point.
    #[serde(default)]
    pub kept_pos: (f64, f64),
    /// Highest filtered speed.
    pub peak_speed: f64,
    /// Idle time so far (ns).
    pub idle_ns: i64,
    /// Re-entries so far.
    pub reentries: u32,
    /// Best score over its assignments.
    pub peak_score: f32,
    /// The last assignment as a trajectory point.
    pub last_point: TrackPoint,
    /// Capture time of the last kept trajectory point.
    pub kept_ns: i64,
    /// Points kept while tentative, emitted when confirmed.
    pub pending: Vec<TrackPoint>,
}

impl Track {
    fn position(&self) -> (f64, f64) {
        (self.x.p, self.y.p)
    }

    fn speed(&self) -> f64 {
        self.x.v.hypot(self.y.v)
    }

    /// Where the track's centroid and box are expected at `ns`.
    fn predict(&self, ns: i64) -> ((f64, f64), [f64; 4]) {
        let dt = seconds(ns.saturating_sub(self.last_ns));
        let (px, py) = (self.x.predicted(dt), self.y.predicted(dt));
        let (dx, dy) = (px - self.x.p, py - self.y.p);
        let b = self.bbox;
        ((px, py), [b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy])
    }

    /// The finished track's figures.
    pub fn motion(&self) -> Motion {
        let span = seconds(self.last_ns.saturating_sub(self.first_ns));
        let (x, y) = self.position();
        // The kept trajectory, then on to the last assignment.
        let path = self.path + (x - self.kept_pos.0).hypot(y - self.kept_pos.1);
        Motion {
            track_id: self.id,
            frames_seen: self.hits,
            path_length: path,
            mean_speed: if span > 0.0 { path / span } else { 0.0 },
            peak_speed: self.peak_speed,
            idle_ns: self.idle_ns,
            reentries: self.reentries,
            first_centroid: self.first_pos,
            last_centroid: self.position(),
        }
    }
}

/// Motion figures of a track.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Motion {
    /// Id of the track these figures describe.
    pub track_id: u64,
    /// Frames assigned.
    pub frames_seen: u64,
    /// Distance travelled by the filtered centroid.
    pub path_length: f64,
    /// Path over the time from first to last assignment.
    pub mean_speed: f64,
    /// Highest filtered speed.
    pub peak_speed: f64,
    /// Time spent under the idle speed (ns).
    pub idle_ns: i64,
    /// Re-entries.
    pub reentries: u32,
    /// Filtered centroid at the first assignment.
    pub first_centroid: (f64, f64),
    /// Filtered centroid at the last assignment.
    pub last_centroid: (f64, f64),
}

/// A confirmed track's assignment in one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    /// The confirmed track, by its per-stream id.
    pub track_id: u64,
    /// The tool's class id in the model's card.
    pub class_id: u32,
    /// The tool's label in the model's card.
    pub label: String,
    /// Index of the instance in the frame (its largest piece).
    pub instance_index: u32,
    /// Filtered centroid.
    pub cx: f64,
    /// Filtered centroid.
    pub cy: f64,
    /// Measured box.
    pub bbox: [f64; 4],
    /// Filtered velocity.
    pub vx: f64,
    /// Filtered velocity.
    pub vy: f64,
    /// The instance's score in this frame (its best piece's).
    pub score: f32,
}

/// What one frame gives.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Update {
    /// Confirmed tracks assigned in this frame, by track id.
    pub assigned: Vec<Assignment>,
    /// Trajectory points kept in this frame (including a newly confirmed track's earlier
    /// ones).
    pub points: Vec<TrackPoint>,
    /// Tracks that ended (lost), with their last point if it was not kept yet in `points`.
    pub ended: Vec<Track>,
}

/// The tracker of one stream. Stored with the derivation state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tracker {
    /// The next confirmed track's id minus one (ids are never reused on a stream).
    pub last_id: u64,
    /// Live tracks, tentative and confirmed, in creation order.
    pub tracks: Vec<Track>,
}

fn seconds(ns: i64) -> f64 {
    ns as f64 / 1e9
}

fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f64; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

fn touching(a: &[f64; 4], b: &[f64; 4], margin: f64) -> bool {
    a[0] - margin <= b[2] && b[0] - margin <= a[2] && a[1] - margin <= b[3] && b[1] - margin <= a[3]
}

/// Merges `b` into `a` (pieces of one tool).
fn merge(a: &mut Observation, b: &Observation) {
    let total = a.area + b.area;
    if total > 0.0 {
        a.cx = (a.cx * a.area + b.cx * b.area) / total;
        a.cy = (a.cy * a.area + b.cy * b.area) / total;
    }
    if b.area > a.area {
        a.index = b.index;
    }
    a.area = total;
    a.score = a.score.max(b.score);
    a.bbox = [
        a.bbox[0].min(b.bbox[0]),
        a.bbox[1].min(b.bbox[1]),
        a.bbox[2].max(b.bbox[2]),
        a.bbox[3].max(b.bbox[3]),
    ];
}

/// A cost no pair may have.
const FORBIDDEN: f64 = 1e9;

/// Minimum-cost assignment of rows to columns (Hungarian, O(n^2 m)); `cost` is rows x cols with
/// rows <= cols, every cost finite (the search for a free column relies on it). Returns the
/// column of each row. Deterministic: ties go to the lowest index. Every loop is bounded: each
/// step of a row's search marks one more column used, so it ends within `cols + 1` steps; a
/// row whose search finds no column (impossible with finite costs) is left unassigned.
fn hungarian(cost: &[Vec<f64>], cols: usize) -> Vec<usize> {
    let n = cost.len();
    let m = cols;
    let mut u = vec![0.0; n + 1];
    let mut v = vec![0.0; m + 1];
    let mut p = vec![0usize; m + 1];
    let mut way = vec![0usize; m + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![f64::INFINITY; m + 1];
        let mut used = vec![false; m + 1];
        let mut found = false;
        for _ in 0..=m {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = f64::INFINITY;
            let mut j1 = 0;
            for j in 1..=m {
                if !used[j] {
                    let cur = cost[i0 - 1][j - 1] - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=m {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            if j1 == 0 {
                break; // no free column with a finite cost
            }
            j0 = j1;
            if p[j0] == 0 {
                found = true;
                break;
            }
        }
        if !found {
            continue;
        }
        // Along the alternating path back to the start: at most one step per column.
        for _ in 0..=m {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut row_to_col = vec![usize::MAX; n];
    for j in 1..=m {
        if p[j] != 0 {
            row_to_col[p[j] - 1] = j - 1;
        }
    }
    row_to_col
}

/// Pairs tracks with observations: `(track index, observation index)`, by track index.
fn associate(
    tracks: &[Track],
    observations: &[Observation],
    ns: i64,
    rules: &TrackRules,
) -> Vec<(usize, usize)> {
    if tracks.is_empty() || observations.is_empty() {
        return Vec::new();
    }
    let predictions: Vec<_> = tracks.iter().map(|t| t.predict(ns)).collect();
    let pair_cost = |t: usize, o: usize| {
        let (track, obs) = (&tracks[t], &observations[o]);
        if track.class_id != obs.class_id {
            return FORBIDDEN;
        }
        let ((px, py), pbox) = predictions[t];
        let overlap = iou(&pbox, &obs.bbox);
        let distance = (px - obs.cx).hypot(py - obs.cy);
        if overlap < rules.min_iou && distance > rules.max_distance {
            return FORBIDDEN;
        }
        let cost = (1.0 - overlap) + distance / rules.max_distance;
        // A prediction far outside the picture (a long, fast extrapolation) can overflow; such
        // a pair is as impossible as any other past the limits.
        if cost.is_finite() {
            cost.min(FORBIDDEN)
        } else {
            FORBIDDEN
        }
    };
    let transpose = tracks.len() > observations.len();
    let (rows, cols) = if transpose {
        (observations.len(), tracks.len())
    } else {
        (tracks.len(), observations.len())
    };
    let cost: Vec<Vec<f64>> = (0..rows)
        .map(|r| {
            (0..cols)
                .map(|c| {
                    if transpose {
                        pair_cost(c, r)
                    } else {
                        pair_cost(r, c)
                    }
                })
                .collect()
        })
        .collect();
    let mut pairs: Vec<(usize, usize)> = hungarian(&cost, cols)
        .into_iter()
        .enumerate()
        .filter(|&(r, c)| c != usize::MAX && cost[r][c] < FORBIDDEN)
        .map(|(r, c)| if transpose { (c, r) } else { (r, c) })
        .collect();
    pairs.sort_unstable();
    pairs
}

impl Tracker {
    /// Tracks confirmed and still live (open, for record views).
    pub fn confirmed(&self) -> impl Iterator<Item = &Track> {
        self.tracks.iter().filter(|t| t.id != 0)
    }

    /// Applies one usable frame's tool observations (in instance order).
    pub fn update(
        &mut self,
        epoch: u64,
        seq: u64,
        ns: i64,
        observations: Vec<Observation>,
        rules: &TrackRules,
    ) -> Update {
        let mut update = Update::default();
        // A track unseen for longer than lost_after has ended, whatever this frame holds.
        let (live, lost): (Vec<Track>, Vec<Track>) = std::mem::take(&mut self.tracks)
            .into_iter()
            .partition(|t| ns.saturating_sub(t.last_ns) <= rules.lost_after_ns);
        self.tracks = live;
        update.ended = lost;
        let pairs = associate(&self.tracks, &observations, ns, rules);
        let mut paired_obs: Vec<Option<usize>> = vec![None; self.tracks.len()];
        let mut used = vec![false; observations.len()];
        let mut merged: Vec<Observation> = Vec::with_capacity(pairs.len());
        for &(t, o) in &pairs {
            paired_obs[t] = Some(merged.len());
            used[o] = true;
            merged.push(observations[o].clone());
        }
        // Pieces of a paired tool: merge into the paired observation whose box they touch,
        // the nearest one when several do.
        let mut rest: Vec<Observation> = Vec::new();
        for (o, obs) in observations.iter().enumerate() {
            if used[o] {
                continue;
            }
            let host = merged
                .iter()
                .enumerate()
                .filter(|(_, m)| {
                    m.class_id == obs.class_id
                        && touching(&m.bbox, &obs.bbox, rules.fragment_margin)
                })
                .map(|(i, m)| (i, (m.cx - obs.cx).hypot(m.cy - obs.cy)))
                .min_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)))
                .map(|(i, _)| i);
            match host {
                Some(i) => merge(&mut merged[i], obs),
                None => rest.push(obs.clone()),
            }
        }
        // Unpaired touching pieces of one class are one new tool.
        let mut births: Vec<Observation> = Vec::new();
        for obs in rest {
            match births.iter_mut().find(|b| {
                b.class_id == obs.class_id && touching(&b.bbox, &obs.bbox, rules.fragment_margin)
            }) {
                Some(b) => merge(b, &obs),
                None => births.push(obs),
            }
        }

        let old = std::mem::take(&mut self.tracks);
        for (t, mut track) in old.into_iter().enumerate() {
            match paired_obs[t] {
                Some(i) => {
                    self.assign(&mut track, &merged[i], seq, ns, rules, &mut update);
                    self.tracks.push(track);
                }
                None if track.id == 0 => {} // a tentative track dies at its first miss
                None => self.tracks.push(track),
            }
        }
        for obs in births {
            let point = TrackPoint {
                track_id: 0,
                seq,
                ns,
                cx: obs.cx,
                cy: obs.cy,
                bbox: obs.bbox,
                speed: 0.0,
            };
            let mut track = Track {
                id: 0,
                class_id: obs.class_id,
                label: obs.label.clone(),
                epoch,
                x: Axis::new(obs.cx, rules),
                y: Axis::new(obs.cy, rules),
                bbox: obs.bbox,
                first_seq: seq,
                first_ns: ns,
                last_seq: seq,
                last_ns: ns,
                hits: 1,
                first_pos: (obs.cx, obs.cy),
                path: 0.0,
                kept_pos: (obs.cx, obs.cy),
                peak_speed: 0.0,
                idle_ns: 0,
                reentries: 0,
                peak_score: obs.score,
                last_point: point,
                kept_ns: ns,
                pending: vec![point],
            };
            self.confirm_if_due(&mut track, &obs, rules, &mut update);
            self.tracks.push(track);
        }
        update.assigned.sort_by_key(|a| a.track_id);
        update
    }

    fn assign(
        &mut self,
        track: &mut Track,
        obs: &Observation,
        seq: u64,
        ns: i64,
        rules: &TrackRules,
        update: &mut Update,
    ) {
        let elapsed = ns.saturating_sub(track.last_ns);
        let dt = seconds(elapsed).max(0.0);
        let missed = track.last_seq.checked_add(1) != Some(seq);
        if track.id != 0 && missed && elapsed >= rules.reentry_after_ns {
            track.reentries += 1;
        }
        track.x.step(dt, obs.cx, rules);
        track.y.step(dt, obs.cy, rules);
        let after = track.position();
        let speed = track.speed();
        track.peak_speed = track.peak_speed.max(speed);
        if !missed && speed < rules.idle_speed {
            track.idle_ns = track.idle_ns.saturating_add(elapsed.max(0));
        }
        track.bbox = obs.bbox;
        track.last_seq = seq;
        track.last_ns = ns;
        track.hits += 1;
        track.peak_score = track.peak_score.max(obs.score);
        track.last_point = TrackPoint {
            track_id: track.id,
            seq,
            ns,
            cx: after.0,
            cy: after.1,
            bbox: obs.bbox,
            speed,
        };
        if ns.saturating_sub(track.kept_ns) >= rules.trajectory_interval_ns {
            track.kept_ns = ns;
            track.path += (after.0 - track.kept_pos.0).hypot(after.1 - track.kept_pos.1);
            track.kept_pos = after;
            if track.id == 0 {
                track.pending.push(track.last_point);
            } else {
                update.points.push(track.last_point);
            }
        }
        self.confirm_if_due(track, obs, rules, update);
    }

    /// Confirms a tentative track once it has `confirm_frames` assignments; reports a
    /// confirmed track's assignment.
    fn confirm_if_due(
        &mut self,
        track: &mut Track,
        obs: &Observation,
        rules: &TrackRules,
        update: &mut Update,
    ) {
        if track.id == 0 && track.hits >= rules.confirm_frames {
            self.last_id += 1;
            track.id = self.last_id;
            track.last_point.track_id = track.id;
            for mut p in track.pending.drain(..) {
                p.track_id = track.id;
                update.points.push(p);
            }
        }
        if track.id != 0 {
            update.assigned.push(Assignment {
                track_id: track.id,
                class_id: track.class_id,
                label: track.label.clone(),
                instance_index: obs.index,
                cx: track.x.p,
                cy: track.y.p,
                bbox: obs.bbox,
                vx: track.x.v,
                vy: track.y.v,
                score: obs.score,
            });
        }
    }

    /// Ends every track (a gap, a new epoch, model or case, the stream's end): confirmed ones
    /// are returned, tentative ones forgotten.
    pub fn end_all(&mut self) -> Vec<Track> {
        std::mem::take(&mut self.tracks)
            .into_iter()
            .filter(|t| t.id != 0)
            .collect()
    }
}

/// The last point of an ended track, when it was not kept already.
pub fn final_point(track: &Track) -> Option<TrackPoint> {
    (track.kept_ns != track.last_ns).then_some(track.last_point)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 frames per second.
    const FRAME_NS: i64 = 100_000_000;
    const GRASPER: u32 = 5;
    const HOOK: u32 = 6;

    /// A square instance of `class` centred at (cx, cy), half-side `h`.
    fn obs(index: u32, class: u32, cx: f64, cy: f64, h: f64) -> Observation {
        Observation {
            index,
            class_id: class,
            label: format!("tool-{class}"),
            score: 0.9,
            cx,
            cy,
            bbox: [cx - h, cy - h, cx + h, cy + h],
            area: 4.0 * h * h,
        }
    }

    #[test]
    fn the_assignment_ends_on_any_cost_and_pairs_what_it_can() {
        // Non-finite costs never reach it from associate; were one to, the search for a free
        // column would find none: the row is left unassigned instead of looping for ever.
        assert_eq!(hungarian(&[vec![f64::NAN, f64::NAN]], 2), vec![usize::MAX]);
        assert_eq!(
            hungarian(&[vec![f64::INFINITY, 1.0], vec![f64::NAN, 2.0]], 2).len(),
            2
        );
        assert_eq!(hungarian(&[vec![1.0, 0.0], vec![0.0, 1.0]], 2), vec![1, 0]);
    }

    #[test]
    fn observations_with_non_finite_numbers_are_not_taken() {
        let mut instance = orstream_proto::Instance {
            centroid: Some(orstream_proto::Point { x: 0.5, y: 0.5 }),
            bbox: Some(orstream_proto::BBox {
                x0: 0.4,
                y0: 0.4,
                x1: 0.6,
                y1: 0.6,
            }),
            score: 0.9,
            ..Default::default()
        };
        assert!(Observation::of(0, &instance).is_some());
        instance.centroid = Some(orstream_proto::Point {
            x: f32::NAN,
            y: 0.5,
        });
        assert!(Observation::of(0, &instance).is_none());
        instance.centroid = Some(orstream_proto::Point { x: 0.5, y: 0.5 });
        instance.score = f32::INFINITY;
        assert!(Observation::of(0, &instance).is_none());
    }

    /// Runs frames (seq = index, epoch 0); returns each frame's update.
    fn run(tracker: &mut Tracker, frames: &[Vec<Observation>], from: u64) -> Vec<Update> {
        let rules = TrackRules::default();
        frames
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let seq = from + i as u64;
                tracker.update(0, seq, seq as i64 * FRAME_NS, f.clone(), &rules)
            })
            .collect()
    }

    /// Track id assigned to the instance `index` in each frame (0: none).
    fn ids_of(updates: &[Update], index: u32) -> Vec<u64> {
        updates
            .iter()
            .map(|u| {
                u.assigned
                    .iter()
                    .find(|a| a.instance_index == index)
                    .map_or(0, |a| a.track_id)
            })
            .collect()
    }

    #[test]
    fn a_still_tool_is_confirmed_at_its_third_frame_and_idle_throughout() {
        let mut tracker = Tracker::default();
        let frames = vec![vec![obs(0, GRASPER, 0.4, 0.5, 0.05)]; 11];
        let updates = run(&mut tracker, &frames, 0);
        assert_eq!(ids_of(&updates, 0), [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
        // The tentative frames' trajectory point comes out at confirmation, then one point
        // every 500 ms (every fifth frame at 10 fps).
        let kept: Vec<u64> = updates
            .iter()
            .flat_map(|u| u.points.iter().map(|p| p.seq))
            .collect();
        assert_eq!(kept, [0, 5, 10]);
        let track = tracker.end_all().remove(0);
        let m = track.motion();
        assert_eq!(final_point(&track).map(|p| p.seq), None);
        assert_eq!((m.track_id, m.frames_seen, m.reentries), (1, 11, 0));
        assert_eq!(m.path_length, 0.0);
        assert_eq!(m.peak_speed, 0.0);
        assert_eq!(m.idle_ns, 10 * FRAME_NS);
        assert_eq!(m.first_centroid, (0.4, 0.5));
    }

    #[test]
    fn a_moving_tool_has_its_path_speed_and_no_idle_time() {
        let mut tracker = Tracker::default();
        // 0.01 per frame to the right: 0.1 per second, 0.3 in 30 frames.
        let frames: Vec<_> = (0..31)
            .map(|i| vec![obs(0, HOOK, 0.2 + 0.01 * f64::from(i), 0.5, 0.05)])
            .collect();
        let updates = run(&mut tracker, &frames, 0);
        assert!(ids_of(&updates, 0)[2..].iter().all(|&id| id == 1));
        let m = tracker.end_all().remove(0).motion();
        assert!((m.path_length - 0.3).abs() < 0.3 * 0.03, "{m:?}");
        assert!((m.mean_speed - 0.1).abs() < 0.1 * 0.03, "{m:?}");
        assert!((m.peak_speed - 0.1).abs() < 0.1 * 0.1, "{m:?}");
        // Only the first steps, before the filter has the speed, can look idle.
        assert!(m.idle_ns <= 2 * FRAME_NS, "{m:?}");
        assert_eq!(m.reentries, 0);
    }

    #[test]
    fn crossing_tools_of_one_class_keep_their_ids() {
        let mut tracker = Tracker::default();
        // A goes right, B goes left, 0.03 per frame, a little apart in y; they cross at frame
        // 10, with their boxes overlapping from frame 7 to 13.
        let frames: Vec<_> = (0..21)
            .map(|i| {
                let d = 0.03 * f64::from(i);
                vec![
                    obs(0, GRASPER, 0.2 + d, 0.50, 0.05),
                    obs(1, GRASPER, 0.8 - d, 0.53, 0.05),
                ]
            })
            .collect();
        let updates = run(&mut tracker, &frames, 0);
        let mut a = vec![0, 0];
        a.extend([1; 19]);
        let mut b = vec![0, 0];
        b.extend([2; 19]);
        assert_eq!(ids_of(&updates, 0), a);
        assert_eq!(ids_of(&updates, 1), b);
    }

    #[test]
    fn crossing_tools_seen_as_one_region_keep_their_ids() {
        let mut tracker = Tracker::default();
        // As above, but for three frames around the crossing the model gives one region
        // covering both: one track takes it, the other coasts on its velocity and is found
        // again on the other side.
        let frames: Vec<_> = (0..21)
            .map(|i| {
                let d = 0.03 * f64::from(i);
                let (xa, xb) = (0.2 + d, 0.8 - d);
                if (9..=11).contains(&i) {
                    let mut merged = obs(0, GRASPER, (xa + xb) / 2.0, 0.515, 0.05);
                    merged.bbox = [xa.min(xb) - 0.05, 0.45, xa.max(xb) + 0.05, 0.58];
                    vec![merged]
                } else {
                    vec![
                        obs(0, GRASPER, xa, 0.50, 0.05),
                        obs(1, GRASPER, xb, 0.53, 0.05),
                    ]
                }
            })
            .collect();
        let updates = run(&mut tracker, &frames, 0);
        let a = ids_of(&updates, 0);
        let b = ids_of(&updates, 1);
        assert_eq!(&a[..9], &[0, 0, 1, 1, 1, 1, 1, 1, 1]);
        assert_eq!(&a[12..], &[1; 9]);
        assert_eq!(&b[..9], &[0, 0, 2, 2, 2, 2, 2, 2, 2]);
        assert_eq!(&b[12..], &[2; 9]);
        assert_eq!(tracker.last_id, 2);
    }

    #[test]
    fn a_short_occlusion_keeps_the_track_and_is_no_reentry() {
        let mut tracker = Tracker::default();
        let tool = || vec![obs(0, GRASPER, 0.5, 0.5, 0.05)];
        let mut frames = vec![tool(); 5];
        frames.extend(vec![Vec::new(); 3]); // 300 ms unseen
        frames.extend(vec![tool(); 5]);
        let updates = run(&mut tracker, &frames, 0);
        assert_eq!(ids_of(&updates, 0), [0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1, 1]);
        let m = tracker.end_all().remove(0).motion();
        assert_eq!((m.frames_seen, m.reentries), (10, 0));
        // Idle time counts only consecutive assigned frames: 4 + 4 steps.
        assert_eq!(m.idle_ns, 8 * FRAME_NS);
    }

    #[test]
    fn leaving_and_coming_back_is_a_reentry_then_a_long_absence_a_new_track() {
        let mut tracker = Tracker::default();
        let tool = || vec![obs(0, HOOK, 0.3, 0.6, 0.05)];
        let mut frames = vec![tool(); 5];
        frames.extend(vec![Vec::new(); 7]); // 800 ms unseen: back within lost_after (1 s)
        frames.extend(vec![tool(); 5]);
        frames.extend(vec![Vec::new(); 12]); // 1.3 s unseen: lost
        frames.extend(vec![tool(); 4]);
        let updates = run(&mut tracker, &frames, 0);
        let ids = ids_of(&updates, 0);
        assert_eq!(
            &ids[..17],
            &[0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
        );
        assert_eq!(&ids[29..], &[0, 0, 2, 2]);
        // Track 1 ended in the first frame more than 1 s after its last sighting (seq 16).
        let ended: Vec<(usize, u64)> = updates
            .iter()
            .enumerate()
            .flat_map(|(i, u)| u.ended.iter().map(move |t| (i, t.id)))
            .collect();
        assert_eq!(ended, [(27, 1)]);
        let first = &updates[27].ended[0];
        let m = first.motion();
        assert_eq!((m.frames_seen, m.reentries, first.last_seq), (10, 1, 16));
        assert_eq!(tracker.confirmed().map(|t| t.id).collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn a_tool_back_just_after_lost_after_is_a_new_track() {
        let mut tracker = Tracker::default();
        let tool = || vec![obs(0, HOOK, 0.3, 0.6, 0.05)];
        let mut frames = vec![tool(); 4];
        frames.extend(vec![Vec::new(); 10]); // last seen at seq 3, back at 14: 1.1 s later
        frames.extend(vec![tool(); 3]);
        let updates = run(&mut tracker, &frames, 0);
        assert_eq!(
            ids_of(&updates, 0),
            [0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]
        );
        assert_eq!(
            updates[14].ended.iter().map(|t| t.id).collect::<Vec<_>>(),
            [1]
        );
    }

    #[test]
    fn a_flicker_never_becomes_a_track_nor_uses_an_id() {
        let mut tracker = Tracker::default();
        let mut frames = vec![vec![obs(0, GRASPER, 0.5, 0.5, 0.05)]; 2];
        frames.push(Vec::new());
        frames.extend(vec![vec![obs(0, GRASPER, 0.5, 0.5, 0.05)]; 3]);
        let updates = run(&mut tracker, &frames, 0);
        assert_eq!(ids_of(&updates, 0), [0, 0, 0, 0, 0, 1]);
        assert_eq!(tracker.last_id, 1);
    }

    #[test]
    fn classes_never_pair_and_pieces_of_one_tool_are_one_track() {
        let mut tracker = Tracker::default();
        // A grasper under a flap: two pieces whose boxes nearly touch; a hook at the same
        // place as the grasper's bigger piece.
        let frames: Vec<_> = (0..6)
            .map(|_| {
                let mut shaft = obs(0, GRASPER, 0.30, 0.5, 0.06);
                shaft.area = 0.02;
                let mut tip = obs(1, GRASPER, 0.45, 0.5, 0.08);
                tip.area = 0.03;
                vec![shaft, tip, obs(2, HOOK, 0.45, 0.5, 0.05)]
            })
            .collect();
        let updates = run(&mut tracker, &frames, 0);
        let last = &updates[5].assigned;
        assert_eq!(last.len(), 2, "{last:?}");
        assert_eq!((last[0].class_id, last[0].instance_index), (GRASPER, 1));
        assert_eq!((last[1].class_id, last[1].instance_index), (HOOK, 2));
        // The area-weighted centroid of the pieces.
        assert!((last[0].cx - 0.39).abs() < 1e-9, "{}", last[0].cx);
    }

    #[test]
    fn a_stored_tracker_resumes_exactly() {
        let frames: Vec<_> = (0..30)
            .map(|i| {
                let t = f64::from(i) * 0.1;
                vec![
                    obs(0, GRASPER, 0.5 + 0.2 * t.sin(), 0.5 + 0.1 * t.cos(), 0.05),
                    obs(1, HOOK, 0.2 + 0.01 * f64::from(i), 0.3, 0.04),
                ]
            })
            .collect();
        let mut straight = Tracker::default();
        let all = run(&mut straight, &frames, 0);
        let mut first = Tracker::default();
        let mut resumed_updates = run(&mut first, &frames[..13], 0);
        let json = serde_json::to_string(&first).unwrap();
        let mut resumed: Tracker = serde_json::from_str(&json).unwrap();
        resumed_updates.extend(run(&mut resumed, &frames[13..], 13));
        assert_eq!(resumed_updates, all);
        assert_eq!(resumed, straight);
    }

    #[test]
    fn the_assignment_is_the_cheapest() {
        // Greedy would take (0, 0) at cost 1 and leave row 1 with 10; the optimum is 2 + 2.
        let cost = vec![vec![1.0, 2.0], vec![2.0, 10.0]];
        assert_eq!(hungarian(&cost, 2), [1, 0]);
        let wide = vec![vec![5.0, 1.0, 3.0]];
        assert_eq!(hungarian(&wide, 3), [1]);
    }
}
