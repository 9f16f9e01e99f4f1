//! The clip's ground-truth tool tracks and how a tracker's output compares with them.
//!
//! The truth file (`models/demo/clip.tracks.json`, written by `models/synth/clip_tracks.py`)
//! holds one track per scripted tool appearance: for each frame in which the tool is visible,
//! the centroid of its pixels in normalized image units (x / width, y / height), and the path
//! length of those centroids. The tracker's side is what it confirmed: one [`Assigned`] per
//! track and frame, and its own path length per track ([`MeasuredTrack`]).
//!
//! Scoring rules ([`score`]):
//!
//! - **Matching, per frame**: each truth track with an entry in that frame is matched to the
//!   assignment of that frame with the same label whose centroid is nearest, if it is within
//!   [`MATCH_DISTANCE`]. One assignment matches at most one truth track per frame: pairs are
//!   taken greedily by distance, ties by truth id, then by track id, so the result does not
//!   depend on input order.
//! - **Identity switches** (as in CLEAR-MOT): for each truth track, the number of times its
//!   matched track id differs from the id it was last matched to. Unmatched frames in between
//!   do not reset the last id, so a track that is lost and found again under its old id is not
//!   a switch.
//! - **Ownership**: each measured track belongs to the truth track it was matched with in most
//!   frames (ties: the lower truth id). Measured tracks never matched are spurious.
//! - **Path length**: a truth track's measured path length is the sum of the path lengths of
//!   the measured tracks that belong to it (a split track counts both halves); its error is
//!   (measured - truth) / truth. Only truth tracks matched in at least one frame have one.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

/// Largest distance between a truth centroid and an assigned one that still matches, in
/// normalized image units. A tool's centroid moves by a few thousandths of the frame per frame
/// (at most about 0.06 in the demo clip, as it enters), and two tools of one kind are never in
/// the clip together, so this only has to reject the far-off.
pub const MATCH_DISTANCE: f64 = 0.15;

/// Ground-truth tool tracks of a clip (`*.tracks.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct TruthTracks {
    /// Frames per second of the clip.
    pub fps: f64,
    /// The tracks, in the file's order (by id).
    pub tracks: Vec<TruthTrack>,
}

/// One tool appearance.
#[derive(Debug, Clone, PartialEq)]
pub struct TruthTrack {
    /// Truth id, unique in the file.
    pub id: u32,
    /// Class label (as in the model card).
    pub label: String,
    /// Sum of the distances between consecutive centroids, in normalized units.
    pub path_length: f64,
    /// The frames the tool is visible in, in increasing order.
    pub frames: Vec<TruthFrame>,
}

/// Where a truth track is in one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TruthFrame {
    /// Frame number in the clip (from 0).
    pub frame: u64,
    /// Centroid x / width.
    pub cx: f64,
    /// Centroid y / height.
    pub cy: f64,
}

/// The file as written; only what scoring needs is read.
#[derive(Deserialize)]
struct RawTracks {
    fps: f64,
    tracks: Vec<RawTrack>,
}

#[derive(Deserialize)]
struct RawTrack {
    id: u32,
    label: String,
    path_length: f64,
    frames: Vec<RawFrame>,
}

/// `[frame, cx, cy, x0, y0, x1, y1, area]`; the box and the area are not scored.
type RawFrame = (u64, f64, f64, f64, f64, f64, f64, f64);

impl TruthTracks {
    /// Reads a tracks file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading ground-truth tracks {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("ground-truth tracks {}: {e}", path.display()))
    }

    /// Parses the text of a tracks file and checks it: fps positive, ids unique, path lengths
    /// and centroids finite, frames in increasing order.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawTracks = serde_json::from_str(text).map_err(|e| format!("parsing: {e}"))?;
        if !(raw.fps.is_finite() && raw.fps > 0.0) {
            return Err(format!("fps must be positive, is {}", raw.fps));
        }
        let mut tracks: Vec<TruthTrack> = Vec::with_capacity(raw.tracks.len());
        for t in raw.tracks {
            if tracks.iter().any(|seen| seen.id == t.id) {
                return Err(format!("track id {} appears twice", t.id));
            }
            if !(t.path_length.is_finite() && t.path_length >= 0.0) {
                return Err(format!(
                    "track {}: path_length must be finite and not negative, is {}",
                    t.id, t.path_length
                ));
            }
            let mut frames: Vec<TruthFrame> = Vec::with_capacity(t.frames.len());
            for (frame, cx, cy, ..) in t.frames {
                if let Some(last) = frames.last()
                    && frame <= last.frame
                {
                    return Err(format!(
                        "track {}: frame {frame} follows frame {} (frames must increase)",
                        t.id, last.frame
                    ));
                }
                if !(cx.is_finite() && cy.is_finite()) {
                    return Err(format!(
                        "track {}: frame {frame}: centroid not finite",
                        t.id
                    ));
                }
                frames.push(TruthFrame { frame, cx, cy });
            }
            tracks.push(TruthTrack {
                id: t.id,
                label: t.label,
                path_length: t.path_length,
                frames,
            });
        }
        Ok(TruthTracks {
            fps: raw.fps,
            tracks,
        })
    }
}

/// One confirmed tracker assignment in one frame (frame = the frame's seq in the clip).
#[derive(Debug, Clone, PartialEq)]
pub struct Assigned {
    /// Frame number in the clip (the frame's seq).
    pub frame: u64,
    /// The tracker's id for the track.
    pub track_id: u64,
    /// Class label of the tracked instance.
    pub label: String,
    /// Centroid x / width.
    pub cx: f64,
    /// Centroid y / height.
    pub cy: f64,
}

/// A finished (or open) measured track with the tracker's own path length.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasuredTrack {
    /// The tracker's id for the track.
    pub track_id: u64,
    /// Class label of the track.
    pub label: String,
    /// Path length the tracker measured, in normalized units.
    pub path_length: f64,
}

/// How one truth track was followed.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackRow {
    /// Id of the ground-truth track in the clip's truth file.
    pub truth_id: u32,
    /// Class label.
    pub label: String,
    /// Frames the truth track is visible in.
    pub truth_frames: usize,
    /// Of those, frames matched to an assignment.
    pub matched_frames: usize,
    /// Measured track ids it was matched to, in order of first use.
    pub track_ids: Vec<u64>,
    /// Identity switches.
    pub switches: u32,
    /// The truth's path length.
    pub truth_path: f64,
    /// Sum of the path lengths of the measured tracks that belong to this truth track.
    pub measured_path: f64,
}

impl TrackRow {
    /// (measured - truth) / truth path length; `None` when never matched or the truth path is 0.
    pub fn path_error(&self) -> Option<f64> {
        (self.matched_frames > 0 && self.truth_path > 0.0)
            .then(|| (self.measured_path - self.truth_path) / self.truth_path)
    }
}

/// The outcome of scoring a tracker against the truth.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrackScore {
    /// One row per truth track, in the truth's order.
    pub rows: Vec<TrackRow>,
    /// Identity switches over all truth tracks.
    pub switches: u32,
    /// Ids of the measured tracks matched to no truth track in any frame, in increasing order.
    pub spurious: Vec<u64>,
}

impl TrackScore {
    /// Largest absolute relative path length error over the truth tracks matched at all.
    pub fn worst_path_error(&self) -> Option<f64> {
        self.rows
            .iter()
            .filter_map(TrackRow::path_error)
            .map(f64::abs)
            .reduce(f64::max)
    }

    /// The score as a table for the terminal.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{:<14} {:>5} {:>13} {:<12} {:>8} {:>10} {:>13} {:>8}\n",
            "label",
            "truth",
            "matched/truth",
            "track ids",
            "switches",
            "truth path",
            "measured path",
            "error"
        );
        for r in &self.rows {
            let ids = r
                .track_ids
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let error = r
                .path_error()
                .map_or_else(|| "-".to_owned(), |e| format!("{:+.1} %", e * 100.0));
            out.push_str(&format!(
                "{:<14} {:>5} {:>13} {:<12} {:>8} {:>10.3} {:>13.3} {:>8}\n",
                r.label,
                r.truth_id,
                format!("{}/{}", r.matched_frames, r.truth_frames),
                if ids.is_empty() { "-".to_owned() } else { ids },
                r.switches,
                r.truth_path,
                r.measured_path,
                error
            ));
        }
        if !self.spurious.is_empty() {
            let list = self
                .spurious
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            out.push_str(&format!("spurious track ids: {list}\n"));
        }
        let worst = self
            .worst_path_error()
            .map_or_else(|| "-".to_owned(), |e| format!("{:.1}", e * 100.0));
        out.push_str(&format!(
            "identity switches: {}, spurious tracks: {}, path length error: worst {worst} %\n",
            self.switches,
            self.spurious.len()
        ));
        out
    }
}

/// What scoring keeps per truth track while it walks the frames.
#[derive(Default)]
struct Follow {
    matched_frames: usize,
    track_ids: Vec<u64>,
    last_id: Option<u64>,
    switches: u32,
}

/// Scores a tracker's assignments and tracks against the truth, by the rules in the module
/// doc.
pub fn score(truth: &TruthTracks, assigned: &[Assigned], measured: &[MeasuredTrack]) -> TrackScore {
    // frame -> (truth index, centroid), and frame -> assignments
    let mut truth_at: BTreeMap<u64, Vec<(usize, &TruthFrame)>> = BTreeMap::new();
    for (t, track) in truth.tracks.iter().enumerate() {
        for f in &track.frames {
            truth_at.entry(f.frame).or_default().push((t, f));
        }
    }
    let mut assigned_at: BTreeMap<u64, Vec<&Assigned>> = BTreeMap::new();
    for a in assigned {
        assigned_at.entry(a.frame).or_default().push(a);
    }

    let mut follow: Vec<Follow> = truth.tracks.iter().map(|_| Follow::default()).collect();
    // measured track id -> truth index -> frames matched
    let mut votes: BTreeMap<u64, BTreeMap<usize, usize>> = BTreeMap::new();
    for (frame, entries) in &truth_at {
        let Some(candidates) = assigned_at.get(frame) else {
            continue;
        };
        let mut pairs: Vec<(f64, u32, u64, usize, usize)> = Vec::new();
        for &(t, tf) in entries {
            let track = &truth.tracks[t];
            for (a, asg) in candidates.iter().enumerate() {
                if asg.label != track.label {
                    continue;
                }
                let d = (asg.cx - tf.cx).hypot(asg.cy - tf.cy);
                if d <= MATCH_DISTANCE {
                    pairs.push((d, track.id, asg.track_id, t, a));
                }
            }
        }
        pairs.sort_by(|x, y| {
            x.0.total_cmp(&y.0)
                .then(x.1.cmp(&y.1))
                .then(x.2.cmp(&y.2))
                .then(x.4.cmp(&y.4))
        });
        let mut truth_used = vec![false; truth.tracks.len()];
        let mut assigned_used = vec![false; candidates.len()];
        for (_, _, track_id, t, a) in pairs {
            if truth_used[t] || assigned_used[a] {
                continue;
            }
            truth_used[t] = true;
            assigned_used[a] = true;
            let f = &mut follow[t];
            f.matched_frames += 1;
            if f.last_id.is_some_and(|last| last != track_id) {
                f.switches += 1;
            }
            f.last_id = Some(track_id);
            if !f.track_ids.contains(&track_id) {
                f.track_ids.push(track_id);
            }
            *votes.entry(track_id).or_default().entry(t).or_default() += 1;
        }
    }

    // Each measured track goes to the truth it matched most often; ties to the lower truth id.
    let owner: BTreeMap<u64, usize> = votes
        .iter()
        .filter_map(|(&track_id, by_truth)| {
            by_truth
                .iter()
                .max_by(|x, y| {
                    x.1.cmp(y.1)
                        .then(truth.tracks[*y.0].id.cmp(&truth.tracks[*x.0].id))
                })
                .map(|(&t, _)| (track_id, t))
        })
        .collect();
    let mut measured_path = vec![0.0; truth.tracks.len()];
    let mut spurious: Vec<u64> = Vec::new();
    for m in measured {
        match owner.get(&m.track_id) {
            Some(&t) => measured_path[t] += m.path_length,
            None => spurious.push(m.track_id),
        }
    }
    spurious.sort();
    spurious.dedup();

    let rows: Vec<TrackRow> = truth
        .tracks
        .iter()
        .zip(follow)
        .zip(measured_path)
        .map(|((track, f), measured_path)| TrackRow {
            truth_id: track.id,
            label: track.label.clone(),
            truth_frames: track.frames.len(),
            matched_frames: f.matched_frames,
            track_ids: f.track_ids,
            switches: f.switches,
            truth_path: track.path_length,
            measured_path,
        })
        .collect();
    TrackScore {
        switches: rows.iter().map(|r| r.switches).sum(),
        rows,
        spurious,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A straight track moving 0.01 per frame to the right from (0.2, 0.5).
    fn line(id: u32, label: &str, frames: std::ops::Range<u64>) -> TruthTrack {
        let frames: Vec<TruthFrame> = frames
            .enumerate()
            .map(|(i, frame)| TruthFrame {
                frame,
                cx: 0.2 + 0.01 * i as f64,
                cy: 0.5,
            })
            .collect();
        TruthTrack {
            id,
            label: label.into(),
            path_length: 0.01 * (frames.len() - 1) as f64,
            frames,
        }
    }

    fn truth(tracks: Vec<TruthTrack>) -> TruthTracks {
        TruthTracks { fps: 12.0, tracks }
    }

    /// The truth track's frames as assignments, under `track_id`, shifted by `dy`.
    fn follow(track: &TruthTrack, track_id: u64, dy: f64) -> Vec<Assigned> {
        track
            .frames
            .iter()
            .map(|f| Assigned {
                frame: f.frame,
                track_id,
                label: track.label.clone(),
                cx: f.cx,
                cy: f.cy + dy,
            })
            .collect()
    }

    fn measured(track_id: u64, label: &str, path_length: f64) -> MeasuredTrack {
        MeasuredTrack {
            track_id,
            label: label.into(),
            path_length,
        }
    }

    #[test]
    fn a_perfect_tracker_has_no_switches_and_no_error() {
        let t = truth(vec![line(1, "grasper", 0..20), line(2, "hook", 10..30)]);
        let mut assigned = follow(&t.tracks[0], 7, 0.0);
        assigned.extend(follow(&t.tracks[1], 8, 0.0));
        let m = [
            measured(7, "grasper", t.tracks[0].path_length),
            measured(8, "hook", t.tracks[1].path_length),
        ];
        let s = score(&t, &assigned, &m);
        assert_eq!(s.switches, 0);
        assert!(s.spurious.is_empty());
        assert_eq!(s.worst_path_error(), Some(0.0));
        assert_eq!(s.rows[0].matched_frames, 20);
        assert_eq!(s.rows[0].track_ids, vec![7]);
        assert_eq!(s.rows[1].matched_frames, 20);
        assert_eq!(s.rows[1].track_ids, vec![8]);
        let table = s.render();
        assert!(table.contains("20/20"), "{table}");
        assert!(
            table.ends_with(
                "identity switches: 0, spurious tracks: 0, path length error: worst 0.0 %\n"
            ),
            "{table}"
        );
    }

    #[test]
    fn a_track_id_change_midway_is_one_switch() {
        let t = truth(vec![line(1, "grasper", 0..20)]);
        let mut assigned = follow(&t.tracks[0], 3, 0.0);
        for a in &mut assigned[10..] {
            a.track_id = 4;
        }
        let s = score(&t, &assigned, &[]);
        assert_eq!(s.switches, 1);
        assert_eq!(s.rows[0].switches, 1);
        assert_eq!(s.rows[0].track_ids, vec![3, 4]);
        assert_eq!(s.rows[0].matched_frames, 20);
    }

    #[test]
    fn a_gap_under_the_same_id_is_no_switch() {
        let t = truth(vec![line(1, "grasper", 0..20)]);
        let mut assigned = follow(&t.tracks[0], 3, 0.0);
        assigned.drain(5..12);
        let s = score(&t, &assigned, &[]);
        assert_eq!(s.switches, 0);
        assert_eq!(s.rows[0].matched_frames, 13);
    }

    #[test]
    fn another_label_or_too_far_does_not_match() {
        let t = truth(vec![line(1, "grasper", 0..10)]);
        let mut assigned = follow(&t.tracks[0], 1, 0.0);
        for a in &mut assigned {
            a.label = "hook".into();
        }
        assigned.extend(follow(&t.tracks[0], 2, MATCH_DISTANCE + 0.01));
        let m = [measured(1, "hook", 0.09), measured(2, "grasper", 0.09)];
        let s = score(&t, &assigned, &m);
        assert_eq!(s.rows[0].matched_frames, 0);
        assert!(s.rows[0].track_ids.is_empty());
        assert_eq!(s.rows[0].measured_path, 0.0);
        assert_eq!(s.worst_path_error(), None);
        assert_eq!(s.spurious.len(), 2);
        assert!(s.render().contains("path length error: worst - %"));

        // just within the distance it does
        let s = score(&t, &follow(&t.tracks[0], 2, MATCH_DISTANCE - 0.01), &[]);
        assert_eq!(s.rows[0].matched_frames, 10);
    }

    #[test]
    fn a_measured_track_matching_nothing_is_spurious() {
        let t = truth(vec![line(1, "grasper", 0..10)]);
        let mut assigned = follow(&t.tracks[0], 1, 0.0);
        // a second grasper far off, at the same time
        assigned.extend(follow(&t.tracks[0], 9, 0.4));
        let m = [measured(1, "grasper", 0.09), measured(9, "grasper", 0.3)];
        let s = score(&t, &assigned, &m);
        assert_eq!(s.spurious, vec![9]);
        assert_eq!(s.rows[0].track_ids, vec![1]);
        assert!((s.rows[0].measured_path - 0.09).abs() < 1e-12);
        let table = s.render();
        assert!(table.contains("spurious track ids: 9\n"), "{table}");
        assert!(table.contains("spurious tracks: 1,"), "{table}");
    }

    #[test]
    fn a_split_truth_track_sums_the_path_of_both_parts() {
        let t = truth(vec![line(1, "hook", 0..21)]);
        let mut assigned = follow(&t.tracks[0], 5, 0.0);
        for a in &mut assigned[10..] {
            a.track_id = 6;
        }
        // the tracker lost the step between its two tracks: 0.09 + 0.10 of the truth's 0.20
        let m = [measured(5, "hook", 0.09), measured(6, "hook", 0.10)];
        let s = score(&t, &assigned, &m);
        assert_eq!(s.rows[0].track_ids, vec![5, 6]);
        assert_eq!(s.rows[0].switches, 1);
        assert!((s.rows[0].measured_path - 0.19).abs() < 1e-12);
        let error = s.worst_path_error().expect("matched");
        assert!((error - 0.05).abs() < 1e-9, "{error}");
        assert!(s.spurious.is_empty());
    }

    #[test]
    fn one_assignment_matches_one_truth_track_the_nearest() {
        // two graspers side by side, one assignment between them, nearer the second
        let a = line(1, "grasper", 0..1);
        let mut b = line(2, "grasper", 0..1);
        b.frames[0].cx = 0.3;
        let t = truth(vec![a, b]);
        let assigned = [Assigned {
            frame: 0,
            track_id: 4,
            label: "grasper".into(),
            cx: 0.26,
            cy: 0.5,
        }];
        let s = score(&t, &assigned, &[measured(4, "grasper", 0.0)]);
        assert_eq!(s.rows[0].matched_frames, 0);
        assert_eq!(s.rows[1].matched_frames, 1);

        // at equal distance the lower truth id wins
        let assigned = [Assigned {
            cx: 0.25,
            ..assigned[0].clone()
        }];
        let s = score(&t, &assigned, &[]);
        assert_eq!(s.rows[0].matched_frames, 1);
        assert_eq!(s.rows[1].matched_frames, 0);
    }

    #[test]
    fn a_measured_track_belongs_to_the_truth_it_matched_most() {
        let t = truth(vec![line(1, "grasper", 0..4), line(2, "grasper", 10..20)]);
        // track 3 follows truth 1 for 4 frames and truth 2 for 6; track 4 the rest of truth 2
        let mut assigned = follow(&t.tracks[0], 3, 0.0);
        let mut second = follow(&t.tracks[1], 3, 0.0);
        for a in &mut second[6..] {
            a.track_id = 4;
        }
        assigned.extend(second);
        let m = [measured(3, "grasper", 0.5), measured(4, "grasper", 0.03)];
        let s = score(&t, &assigned, &m);
        assert_eq!(s.rows[0].measured_path, 0.0);
        assert!((s.rows[1].measured_path - 0.53).abs() < 1e-12);
        assert_eq!(s.switches, 1);
    }

    #[test]
    fn parse_errors_name_what_is_wrong() {
        let e = TruthTracks::parse(r#"{"tracks": []}"#).unwrap_err();
        assert!(e.contains("fps"), "{e}");
        let e = TruthTracks::parse(r#"{"fps": 0, "tracks": []}"#).unwrap_err();
        assert!(e.contains("fps must be positive"), "{e}");
        let e = TruthTracks::parse(
            r#"{"fps": 12, "tracks": [{"id": 3, "label": "hook", "path_length": 0.1,
                "frames": [[5, 0.1, 0.2, 0, 0, 1, 1, 0.01], [4, 0.1, 0.2, 0, 0, 1, 1, 0.01]]}]}"#,
        )
        .unwrap_err();
        assert!(e.contains("track 3") && e.contains("frame 4"), "{e}");
        let e = TruthTracks::parse(
            r#"{"fps": 12, "tracks": [{"id": 3, "label": "hook", "path_length": 0.1,
                "frames": [[5, 0.1, 0.2]]}]}"#,
        )
        .unwrap_err();
        assert!(e.contains("invalid length"), "{e}");
        let e = TruthTracks::load(Path::new("no/such/clip.tracks.json")).unwrap_err();
        assert!(e.contains("no/such/clip.tracks.json"), "{e}");
    }

    #[test]
    fn the_demo_clip_has_eight_tracks() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/demo/clip.tracks.json");
        let t = TruthTracks::load(&path).unwrap();
        assert_eq!(t.fps, 12.0);
        assert_eq!(t.tracks.len(), 8);
        let ids: Vec<u32> = t.tracks.iter().map(|t| t.id).collect();
        assert_eq!(ids, (1..=8).collect::<Vec<_>>());
        for track in &t.tracks {
            assert!(track.path_length > 0.0, "track {}", track.id);
            assert!(!track.frames.is_empty(), "track {}", track.id);
            for f in &track.frames {
                assert!(f.frame < 864, "track {} frame {}", track.id, f.frame);
                assert!((0.0..=1.0).contains(&f.cx) && (0.0..=1.0).contains(&f.cy));
            }
        }

        // following the truth exactly scores perfectly
        let assigned: Vec<Assigned> = t
            .tracks
            .iter()
            .flat_map(|tr| follow(tr, u64::from(tr.id) + 100, 0.0))
            .collect();
        let m: Vec<MeasuredTrack> = t
            .tracks
            .iter()
            .map(|tr| measured(u64::from(tr.id) + 100, &tr.label, tr.path_length))
            .collect();
        let s = score(&t, &assigned, &m);
        assert_eq!(s.switches, 0);
        assert_eq!(s.worst_path_error(), Some(0.0));
        assert!(s.rows.iter().all(|r| r.matched_frames == r.truth_frames));
    }
}
