//! `orstream eval`: the record against the ground truth of a set of clips.
//!
//! Every clip of a directory (`NAME.mp4` with its `NAME.timeline.json`, and its
//! `NAME.tracks.json` when it has one) is played through the embedded pipeline in archive mode
//! (ingest, infer with the given model, the sink's derivation into its own SQLite record), and
//! the record is compared with the truth by the demo's own comparison
//! ([`crate::demo::truth::compare`], [`crate::demo::tracks::score`]). Per clip and over the set
//! it reports events matched, missed and spurious; each matched event's start and end error in
//! frames and milliseconds; tool tracks followed, identity switches, spurious tracks and path
//! length errors; and whether the record meets the [`Targets`].
//!
//! Errors in frames are the errors in seconds times the clip's frame rate, rounded: derived
//! and true boundaries are both frame capture times, so the product is an integer up to
//! rounding.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::demo::tracks::TrackScore;
use crate::demo::truth::{Comparison, Span, Truth};
use crate::demo::{DemoOptions, DemoSource, run};

/// What a record must reach on an evaluation set to be called exact.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Targets {
    /// Share of event boundaries (starts and ends) within one frame interval of the truth.
    pub within_one_frame: f64,
    /// No boundary may be further off than this many frames.
    pub max_frames_off: i64,
    /// Largest relative path length error of any scripted tool.
    pub max_path_error: f64,
}

impl Default for Targets {
    fn default() -> Self {
        Self {
            within_one_frame: 0.95,
            max_frames_off: 2,
            max_path_error: 0.10,
        }
    }
}

/// A clip of an evaluation set, as found in its directory.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    /// The file name without `.mp4`.
    pub name: String,
    /// The video.
    pub video: PathBuf,
    /// Its `.timeline.json`.
    pub truth: PathBuf,
}

/// The clips of `dir`: every `*.mp4`, by name, each with its `.timeline.json` beside it. A
/// video without its truth is an error naming it, as is a directory without clips.
pub fn clips(dir: &Path) -> Result<Vec<Clip>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading the clip directory {}", dir.display()))?;
    let mut clips = Vec::new();
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading the clip directory {}", dir.display()))?
            .path();
        if path.extension().and_then(|e| e.to_str()) != Some("mp4") {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            bail!("{}: the clip's name is not UTF-8", path.display());
        };
        let truth = path.with_extension("timeline.json");
        if !truth.is_file() {
            bail!(
                "{}: no ground truth beside it (expected {})",
                path.display(),
                truth.display()
            );
        }
        clips.push(Clip {
            name: name.to_owned(),
            video: path.clone(),
            truth,
        });
    }
    if clips.is_empty() {
        bail!(
            "{}: no clips (NAME.mp4 with NAME.timeline.json) in it",
            dir.display()
        );
    }
    clips.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(clips)
}

/// One matched event, its boundaries against the truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRow {
    /// Class label.
    pub label: String,
    /// True first frame, seconds from the case start.
    pub truth_start_s: f64,
    /// True last frame, seconds from the case start.
    pub truth_end_s: f64,
    /// Derived first frame, seconds from the case start.
    pub start_s: f64,
    /// Derived last frame, seconds from the case start.
    pub end_s: f64,
    /// Derived minus true start, ms (positive: late).
    pub start_error_ms: f64,
    /// Derived minus true end, ms (positive: held too long).
    pub end_error_ms: f64,
    /// The start error in frames.
    pub start_error_frames: i64,
    /// The end error in frames.
    pub end_error_frames: i64,
}

/// How one scripted tool appearance was followed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackEval {
    /// Id of the truth track.
    pub truth_id: u32,
    /// Class label.
    pub label: String,
    /// Frames the tool is visible in.
    pub truth_frames: usize,
    /// Of those, frames a confirmed track followed it in.
    pub frames_followed: usize,
    /// The tracker's ids it was followed under.
    pub track_ids: Vec<u64>,
    /// Identity switches.
    pub switches: u32,
    /// True path length (normalized units).
    pub truth_path: f64,
    /// Measured path length of the tracks it owns.
    pub measured_path: f64,
    /// (measured - truth) / truth; None when never followed.
    pub path_error: Option<f64>,
}

/// Counts over clips, or over the whole set.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Clips counted.
    pub clips: usize,
    /// Frames in them.
    pub frames: u64,
    /// Truth intervals.
    pub truth_events: usize,
    /// Truth intervals with an event.
    pub matched: usize,
    /// Truth intervals without one.
    pub missed: usize,
    /// Events without a truth interval.
    pub spurious: usize,
    /// Boundaries of matched events (two each).
    pub boundaries: usize,
    /// Of those, within one frame of the truth.
    pub within_one_frame: usize,
    /// Of those, exact to the frame.
    pub exact: usize,
    /// Of those, more than two frames off.
    pub beyond_two_frames: usize,
    /// Largest boundary error, frames.
    pub worst_frames: i64,
    /// Largest boundary error, ms.
    pub worst_ms: f64,
    /// Scripted tool appearances (truth tracks).
    pub truth_tracks: usize,
    /// Their visible frames.
    pub truth_track_frames: usize,
    /// Of those, followed by a confirmed track.
    pub frames_followed: usize,
    /// Identity switches.
    pub switches: u32,
    /// Tracks matched to no scripted tool.
    pub spurious_tracks: usize,
    /// Largest absolute relative path length error.
    pub worst_path_error: Option<f64>,
    /// Truth tracks whose path length error is beyond the target, or that were never followed.
    pub paths_off: usize,
    /// Clips where not every frame was accounted for.
    pub unaccounted_clips: usize,
}

impl Summary {
    /// Share of boundaries within one frame (1 when there are none).
    pub fn within_one_frame_share(&self) -> f64 {
        if self.boundaries == 0 {
            1.0
        } else {
            self.within_one_frame as f64 / self.boundaries as f64
        }
    }

    /// Every target met, and every frame accounted for.
    pub fn meets(&self, targets: &Targets) -> bool {
        self.failures(targets).is_empty()
    }

    /// The targets not met, each as a sentence.
    pub fn failures(&self, targets: &Targets) -> Vec<String> {
        let mut out = Vec::new();
        if self.missed > 0 {
            out.push(format!("{} missed events (target 0)", self.missed));
        }
        if self.spurious > 0 {
            out.push(format!("{} spurious events (target 0)", self.spurious));
        }
        if self.within_one_frame_share() < targets.within_one_frame {
            out.push(format!(
                "{:.1} % of boundaries within one frame (target {:.0} %)",
                self.within_one_frame_share() * 100.0,
                targets.within_one_frame * 100.0
            ));
        }
        if self.worst_frames > targets.max_frames_off {
            out.push(format!(
                "boundaries more than {} frames off: {}, the worst {} frames (target none)",
                targets.max_frames_off, self.beyond_two_frames, self.worst_frames
            ));
        }
        if self.switches > 0 {
            out.push(format!("{} identity switches (target 0)", self.switches));
        }
        if self.spurious_tracks > 0 {
            out.push(format!(
                "{} spurious tracks (target 0)",
                self.spurious_tracks
            ));
        }
        if self.paths_off > 0 {
            out.push(format!(
                "{} tools with a path length error beyond {:.0} % or not followed",
                self.paths_off,
                targets.max_path_error * 100.0
            ));
        }
        if self.unaccounted_clips > 0 {
            out.push(format!(
                "{} clips where not every frame was accounted for",
                self.unaccounted_clips
            ));
        }
        out
    }

    fn add(&mut self, other: &Summary) {
        self.clips += other.clips;
        self.frames += other.frames;
        self.truth_events += other.truth_events;
        self.matched += other.matched;
        self.missed += other.missed;
        self.spurious += other.spurious;
        self.boundaries += other.boundaries;
        self.within_one_frame += other.within_one_frame;
        self.exact += other.exact;
        self.beyond_two_frames += other.beyond_two_frames;
        self.worst_frames = self.worst_frames.max(other.worst_frames);
        self.worst_ms = self.worst_ms.max(other.worst_ms);
        self.truth_tracks += other.truth_tracks;
        self.truth_track_frames += other.truth_track_frames;
        self.frames_followed += other.frames_followed;
        self.switches += other.switches;
        self.spurious_tracks += other.spurious_tracks;
        self.worst_path_error = match (self.worst_path_error, other.worst_path_error) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.paths_off += other.paths_off;
        self.unaccounted_clips += other.unaccounted_clips;
    }
}

/// One clip's evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClipEval {
    /// The clip's name.
    pub name: String,
    /// Its frame rate.
    pub fps: f64,
    /// Its counts.
    pub summary: Summary,
    /// Matched events by true start.
    pub events: Vec<EventRow>,
    /// Truth intervals without an event.
    pub missed: Vec<Span>,
    /// Events without a truth interval.
    pub spurious: Vec<Span>,
    /// Scripted tool appearances (empty without a `.tracks.json`).
    pub tracks: Vec<TrackEval>,
    /// Ids of the tracks matched to no scripted tool.
    pub spurious_tracks: Vec<u64>,
}

impl ClipEval {
    /// Scores a clip's comparison and tracking. `accounted`: every frame of the run had its
    /// result stored.
    pub fn new(
        name: &str,
        truth: &Truth,
        comparison: &Comparison,
        tracking: Option<&TrackScore>,
        accounted: bool,
        targets: &Targets,
    ) -> Self {
        let fps = truth.fps;
        let frames = |ms: f64| (ms / 1e3 * fps).round() as i64;
        let events: Vec<EventRow> = comparison
            .matched
            .iter()
            .map(|m| EventRow {
                label: m.truth.label.clone(),
                truth_start_s: m.truth.start_s,
                truth_end_s: m.truth.end_s,
                start_s: m.derived.start_s,
                end_s: m.derived.end_s,
                start_error_ms: m.start_error_ms(),
                end_error_ms: m.end_error_ms(),
                start_error_frames: frames(m.start_error_ms()),
                end_error_frames: frames(m.end_error_ms()),
            })
            .collect();
        let boundary_frames: Vec<i64> = events
            .iter()
            .flat_map(|e| [e.start_error_frames.abs(), e.end_error_frames.abs()])
            .collect();
        let tracks: Vec<TrackEval> = tracking.map_or_else(Vec::new, |t| {
            t.rows
                .iter()
                .map(|r| TrackEval {
                    truth_id: r.truth_id,
                    label: r.label.clone(),
                    truth_frames: r.truth_frames,
                    frames_followed: r.matched_frames,
                    track_ids: r.track_ids.clone(),
                    switches: r.switches,
                    truth_path: r.truth_path,
                    measured_path: r.measured_path,
                    path_error: r.path_error(),
                })
                .collect()
        });
        let summary = Summary {
            clips: 1,
            frames: truth.frame_count,
            truth_events: comparison.matched.len() + comparison.missed.len(),
            matched: comparison.matched.len(),
            missed: comparison.missed.len(),
            spurious: comparison.spurious.len(),
            boundaries: boundary_frames.len(),
            within_one_frame: boundary_frames.iter().filter(|&&f| f <= 1).count(),
            exact: boundary_frames.iter().filter(|&&f| f == 0).count(),
            beyond_two_frames: boundary_frames.iter().filter(|&&f| f > 2).count(),
            worst_frames: boundary_frames.iter().copied().max().unwrap_or(0),
            worst_ms: comparison.max_abs_error_ms(),
            truth_tracks: tracks.len(),
            truth_track_frames: tracks.iter().map(|t| t.truth_frames).sum(),
            frames_followed: tracks.iter().map(|t| t.frames_followed).sum(),
            switches: tracking.map_or(0, |t| t.switches),
            spurious_tracks: tracking.map_or(0, |t| t.spurious.len()),
            worst_path_error: tracking.and_then(TrackScore::worst_path_error),
            paths_off: tracks
                .iter()
                .filter(|t| {
                    t.path_error
                        .is_none_or(|e| e.abs() > targets.max_path_error)
                })
                .count(),
            unaccounted_clips: usize::from(!accounted),
        };
        Self {
            name: name.to_owned(),
            fps,
            summary,
            events,
            missed: comparison.missed.clone(),
            spurious: comparison.spurious.clone(),
            tracks,
            spurious_tracks: tracking.map_or_else(Vec::new, |t| t.spurious.clone()),
        }
    }
}

/// The evaluation of a set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SetEval {
    /// The directory of clips.
    pub clips_dir: PathBuf,
    /// The model evaluated.
    pub model: PathBuf,
    /// The targets checked.
    pub targets: Targets,
    /// Per clip, by name.
    pub clips: Vec<ClipEval>,
    /// Over every clip.
    pub overall: Summary,
    /// Every target met.
    pub meets_targets: bool,
    /// The targets not met.
    pub failures: Vec<String>,
}

impl SetEval {
    /// Sums the clips' evaluations.
    pub fn new(clips_dir: &Path, model: &Path, targets: Targets, clips: Vec<ClipEval>) -> Self {
        let mut overall = Summary::default();
        for clip in &clips {
            overall.add(&clip.summary);
        }
        let failures = overall.failures(&targets);
        Self {
            clips_dir: clips_dir.to_owned(),
            model: model.to_owned(),
            targets,
            meets_targets: failures.is_empty(),
            failures,
            clips,
            overall,
        }
    }
}

/// What `orstream eval` runs.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The directory of clips.
    pub clips_dir: PathBuf,
    /// Only the clips whose names are listed (all when empty).
    pub only: Vec<String>,
    /// The model (its card beside it).
    pub model: PathBuf,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// Where each clip's record and picture are written (one directory per clip).
    pub out_dir: PathBuf,
    /// The targets.
    pub targets: Targets,
}

/// Runs every clip and evaluates it; `progress` is told each clip's name before its run and
/// its evaluation after.
pub fn evaluate(
    options: &EvalOptions,
    shutdown: &CancellationToken,
    mut progress: impl FnMut(&str, Option<&ClipEval>),
) -> Result<SetEval> {
    let mut clips = clips(&options.clips_dir)?;
    if !options.only.is_empty() {
        for name in &options.only {
            if !clips.iter().any(|c| &c.name == name) {
                bail!("no clip {name:?} in {}", options.clips_dir.display());
            }
        }
        clips.retain(|c| options.only.contains(&c.name));
    }
    let mut evals = Vec::with_capacity(clips.len());
    for clip in clips {
        if shutdown.is_cancelled() {
            bail!("stopped before the clip {}", clip.name);
        }
        progress(&clip.name, None);
        let truth = Truth::load(&clip.truth)?;
        let demo = DemoOptions {
            source: DemoSource::File(clip.video.clone()),
            truth: Some(clip.truth.clone()),
            model: options.model.clone(),
            device: options.device.clone(),
            ..DemoOptions::archive_quiet(options.out_dir.join(&clip.name))
        };
        let report = run(&demo, shutdown).with_context(|| format!("the clip {}", clip.name))?;
        let Some(comparison) = &report.comparison else {
            bail!("the clip {}: its run compared nothing", clip.name);
        };
        let eval = ClipEval::new(
            &clip.name,
            &truth,
            comparison,
            report.tracking.as_ref(),
            report.all_accounted(),
            &options.targets,
        );
        progress(&clip.name, Some(&eval));
        evals.push(eval);
    }
    Ok(SetEval::new(
        &options.clips_dir,
        &options.model,
        options.targets,
        evals,
    ))
}

/// One line per clip and one for the set: the figures the targets are about.
pub fn render_summary(set: &SetEval) -> String {
    let mut out = format!(
        "{:<20} {:>6} {:>7} {:>6} {:>6} {:>6} {:>10} {:>6} {:>9} {:>8} {:>8} {:>9} {:>8}\n",
        "clip",
        "frames",
        "matched",
        "missed",
        "spur.",
        "exact",
        "<=1 frame",
        "worst",
        "followed",
        "switches",
        "spur.trk",
        "path err",
        "complete"
    );
    let rows = set
        .clips
        .iter()
        .map(|c| (c.name.as_str(), &c.summary))
        .chain(std::iter::once(("overall", &set.overall)));
    for (name, s) in rows {
        let path = s
            .worst_path_error
            .map_or_else(|| "-".to_owned(), |e| format!("{:.1} %", e * 100.0));
        let followed = if s.truth_track_frames == 0 {
            "-".to_owned()
        } else {
            format!(
                "{:.1} %",
                s.frames_followed as f64 * 100.0 / s.truth_track_frames as f64
            )
        };
        out.push_str(&format!(
            "{:<20} {:>6} {:>7} {:>6} {:>6} {:>6} {:>9.1}% {:>6} {:>9} {:>8} {:>8} {:>9} {:>8}\n",
            name,
            s.frames,
            format!("{}/{}", s.matched, s.truth_events),
            s.missed,
            s.spurious,
            s.exact,
            s.within_one_frame_share() * 100.0,
            s.worst_frames,
            followed,
            s.switches,
            s.spurious_tracks,
            path,
            if s.unaccounted_clips == 0 {
                "yes"
            } else {
                "NO"
            },
        ));
    }
    if set.meets_targets {
        out.push_str("targets met: every one\n");
    } else {
        out.push_str(&format!("targets not met: {}\n", set.failures.join("; ")));
    }
    out
}

/// A clip's events, misses, spurious events and tracks, for the terminal.
pub fn render_clip(clip: &ClipEval) -> String {
    let mut out = format!(
        "{:<16} {:>9} {:>9} {:>9} {:>9} {:>14} {:>14}\n",
        "label", "true from", "true to", "found from", "found to", "start err", "end err"
    );
    for e in &clip.events {
        out.push_str(&format!(
            "{:<16} {:>8.2}s {:>8.2}s {:>9.2}s {:>8.2}s {:>+3}f {:>+7.0}ms {:>+3}f {:>+7.0}ms\n",
            e.label,
            e.truth_start_s,
            e.truth_end_s,
            e.start_s,
            e.end_s,
            e.start_error_frames,
            e.start_error_ms,
            e.end_error_frames,
            e.end_error_ms
        ));
    }
    out.push_str(&crate::demo::truth::render_unpaired(
        &clip.missed,
        &clip.spurious,
    ));
    if !clip.tracks.is_empty() {
        out.push_str(&format!(
            "{:<14} {:>5} {:>15} {:<12} {:>8} {:>10} {:>13} {:>8}\n",
            "tool",
            "truth",
            "followed/truth",
            "track ids",
            "switches",
            "truth path",
            "measured path",
            "error"
        ));
        for t in &clip.tracks {
            let ids = t
                .track_ids
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            out.push_str(&format!(
                "{:<14} {:>5} {:>15} {:<12} {:>8} {:>10.3} {:>13.3} {:>8}\n",
                t.label,
                t.truth_id,
                format!("{}/{}", t.frames_followed, t.truth_frames),
                if ids.is_empty() { "-".to_owned() } else { ids },
                t.switches,
                t.truth_path,
                t.measured_path,
                t.path_error
                    .map_or_else(|| "-".to_owned(), |e| format!("{:+.1} %", e * 100.0))
            ));
        }
    }
    if !clip.spurious_tracks.is_empty() {
        let ids: Vec<String> = clip.spurious_tracks.iter().map(u64::to_string).collect();
        out.push_str(&format!("spurious track ids: {}\n", ids.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::truth::{Matched, TruthInterval};

    fn span(label: &str, start_s: f64, end_s: f64) -> Span {
        Span {
            label: label.into(),
            category: "tool".into(),
            start_s,
            end_s,
        }
    }

    fn truth(fps: f64) -> Truth {
        Truth {
            fps,
            frame_count: 120,
            intervals: vec![TruthInterval {
                label: "hook".into(),
                category: "tool".into(),
                start_frame: 0,
                end_frame: 1,
            }],
            out_of_body: Vec::new(),
        }
    }

    /// Boundaries 0, 1, 2 and 3 frames off at 12 fps.
    fn comparison() -> Comparison {
        let f = 1.0 / 12.0;
        Comparison {
            matched: vec![
                Matched {
                    truth: span("hook", 1.0, 2.0),
                    derived: span("hook", 1.0, 2.0 + f),
                },
                Matched {
                    truth: span("grasper", 3.0, 4.0),
                    derived: span("grasper", 3.0 + 2.0 * f, 4.0 - 3.0 * f),
                },
            ],
            missed: vec![span("liver", 0.0, 5.0)],
            spurious: vec![span("scissors", 6.0, 6.5)],
        }
    }

    #[test]
    fn boundaries_are_counted_in_frames_of_the_clips_rate() {
        let c = ClipEval::new(
            "a",
            &truth(12.0),
            &comparison(),
            None,
            true,
            &Targets::default(),
        );
        let s = &c.summary;
        assert_eq!(
            (s.matched, s.missed, s.spurious, s.truth_events),
            (2, 1, 1, 3)
        );
        assert_eq!(c.events[0].end_error_frames, 1);
        assert_eq!(c.events[1].start_error_frames, 2);
        assert_eq!(c.events[1].end_error_frames, -3);
        assert_eq!(
            (
                s.boundaries,
                s.exact,
                s.within_one_frame,
                s.beyond_two_frames
            ),
            (4, 1, 2, 1)
        );
        assert_eq!(s.worst_frames, 3);
        assert_eq!(s.within_one_frame_share(), 0.5);
        // The same errors at 24 fps are twice as many frames.
        let c24 = ClipEval::new(
            "a",
            &truth(24.0),
            &comparison(),
            None,
            true,
            &Targets::default(),
        );
        assert_eq!(c24.summary.worst_frames, 6);
    }

    #[test]
    fn every_target_missed_is_named_and_a_clean_set_meets_them() {
        let targets = Targets::default();
        let bad = ClipEval::new("a", &truth(12.0), &comparison(), None, false, &targets);
        let set = SetEval::new(Path::new("d"), Path::new("m.pt"), targets, vec![bad]);
        assert!(!set.meets_targets);
        let text = set.failures.join("\n");
        for expected in [
            "1 missed",
            "1 spurious events",
            "50.0 % of boundaries",
            "the worst 3 frames",
            "not every frame",
        ] {
            assert!(text.contains(expected), "{expected:?} in {text}");
        }
        let f = 1.0 / 12.0;
        let clean = Comparison {
            matched: vec![Matched {
                truth: span("hook", 1.0, 2.0),
                derived: span("hook", 1.0 + f, 2.0),
            }],
            ..Comparison::default()
        };
        let good = ClipEval::new("b", &truth(12.0), &clean, None, true, &targets);
        let set = SetEval::new(
            Path::new("d"),
            Path::new("m.pt"),
            targets,
            vec![good.clone(), good],
        );
        assert!(set.meets_targets, "{:?}", set.failures);
        assert_eq!(set.overall.clips, 2);
        assert_eq!(set.overall.boundaries, 4);
        assert_eq!(set.overall.within_one_frame, 4);
        assert!(render_summary(&set).contains("targets met"));
    }

    #[test]
    fn a_video_without_truth_and_an_empty_directory_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let error = clips(dir.path()).unwrap_err().to_string();
        assert!(error.contains("no clips"), "{error}");
        std::fs::write(dir.path().join("b.mp4"), b"").unwrap();
        std::fs::write(dir.path().join("b.timeline.json"), b"{}").unwrap();
        std::fs::write(dir.path().join("a.mp4"), b"").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"").unwrap();
        let error = clips(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("a.mp4") && error.contains("a.timeline.json"),
            "{error}"
        );
        std::fs::write(dir.path().join("a.timeline.json"), b"{}").unwrap();
        let names: Vec<String> = clips(dir.path())
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
    }
}
