//! The clip's ground truth and how derived events compare with it.
//!
//! The truth file (`models/demo/clip.timeline.json`, written with the clip) lists, per tool or
//! organ, the maximal runs of frames in which it is visible. Derived events carry the capture
//! times of the first and last frame that saw them, as offsets from the case start; truth is
//! compared on the same footing: `start_frame / fps` and `end_frame / fps` (the last visible
//! frame, inclusive).

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One visible run of a tool or organ.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TruthInterval {
    /// Class label (as in the model card).
    pub label: String,
    /// tool, organ, ...
    pub category: String,
    /// First frame it is visible in.
    pub start_frame: u64,
    /// Last frame it is visible in (inclusive).
    pub end_frame: u64,
}

/// A stretch of frames with the camera out of the body.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Stretch {
    /// First frame out of the body.
    pub start_frame: u64,
    /// Last frame out of the body (inclusive).
    pub end_frame: u64,
}

/// The truth of a clip.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Truth {
    /// Frames per second of the clip.
    pub fps: f64,
    /// Frames in the clip.
    pub frame_count: u64,
    /// Visible runs.
    pub intervals: Vec<TruthInterval>,
    /// Stretches with the camera out of the body (none in a clip filmed inside only).
    #[serde(default)]
    pub out_of_body: Vec<Stretch>,
}

impl Truth {
    /// Reads a truth file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading ground truth {}", path.display()))?;
        let truth: Truth = serde_json::from_str(&text)
            .with_context(|| format!("parsing ground truth {}", path.display()))?;
        if truth.fps.is_nan() || truth.fps <= 0.0 {
            anyhow::bail!("ground truth {}: fps must be positive", path.display());
        }
        Ok(truth)
    }
}

/// An interval to compare, in seconds from the case start (first and last frame seen).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Span {
    /// Class label.
    pub label: String,
    /// tool, organ, ...
    pub category: String,
    /// Seconds from the case start of the first frame.
    pub start_s: f64,
    /// Seconds from the case start of the last frame.
    pub end_s: f64,
}

/// A derived event matched to a truth interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Matched {
    /// The interval the clip's ground truth gives.
    pub truth: Span,
    /// The event the sink derived for it.
    pub derived: Span,
}

impl Matched {
    /// Derived start minus true start, in ms (positive: detected late).
    pub fn start_error_ms(&self) -> f64 {
        (self.derived.start_s - self.truth.start_s) * 1e3
    }

    /// Derived end minus true end, in ms (positive: held too long).
    pub fn end_error_ms(&self) -> f64 {
        (self.derived.end_s - self.truth.end_s) * 1e3
    }
}

/// The outcome of a comparison.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Comparison {
    /// Pairs, ordered by true start.
    pub matched: Vec<Matched>,
    /// Truth intervals no derived event overlaps.
    pub missed: Vec<Span>,
    /// Derived events that overlap no truth interval of their label.
    pub spurious: Vec<Span>,
}

impl Comparison {
    /// Largest absolute start or end error over the matched pairs, in ms.
    pub fn max_abs_error_ms(&self) -> f64 {
        self.matched
            .iter()
            .flat_map(|m| [m.start_error_ms().abs(), m.end_error_ms().abs()])
            .fold(0.0, f64::max)
    }
}

/// The truth intervals as spans in seconds.
pub fn truth_spans(truth: &Truth) -> Vec<Span> {
    truth
        .intervals
        .iter()
        .map(|i| Span {
            label: i.label.clone(),
            category: i.category.clone(),
            start_s: i.start_frame as f64 / truth.fps,
            end_s: i.end_frame as f64 / truth.fps,
        })
        .collect()
}

fn overlap(a: &Span, b: &Span) -> f64 {
    (a.end_s.min(b.end_s) - a.start_s.max(b.start_s)).max(0.0)
}

/// Pairs derived events with truth intervals of the same label, one to one, largest overlap
/// first; what stays unpaired is missed (truth) or spurious (derived). Two spans that touch
/// at a single frame overlap by zero and are not paired.
pub fn compare(truth: &[Span], derived: &[Span]) -> Comparison {
    let mut candidates: Vec<(f64, usize, usize)> = Vec::new();
    for (t, truth_span) in truth.iter().enumerate() {
        for (d, derived_span) in derived.iter().enumerate() {
            if truth_span.label == derived_span.label {
                let shared = overlap(truth_span, derived_span);
                if shared > 0.0 {
                    candidates.push((shared, t, d));
                }
            }
        }
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut truth_used = vec![false; truth.len()];
    let mut derived_used = vec![false; derived.len()];
    let mut comparison = Comparison::default();
    for (_, t, d) in candidates {
        if !truth_used[t] && !derived_used[d] {
            truth_used[t] = true;
            derived_used[d] = true;
            comparison.matched.push(Matched {
                truth: truth[t].clone(),
                derived: derived[d].clone(),
            });
        }
    }
    comparison
        .matched
        .sort_by(|a, b| a.truth.start_s.total_cmp(&b.truth.start_s));
    comparison.missed = truth
        .iter()
        .zip(&truth_used)
        .filter(|(_, used)| !**used)
        .map(|(s, _)| s.clone())
        .collect();
    comparison.spurious = derived
        .iter()
        .zip(&derived_used)
        .filter(|(_, used)| !**used)
        .map(|(s, _)| s.clone())
        .collect();
    comparison
}

/// The comparison as a table for the terminal.
pub fn render(comparison: &Comparison) -> String {
    let mut out = format!(
        "{:<16} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}\n",
        "label", "true from", "true to", "found from", "found to", "start err", "end err"
    );
    for m in &comparison.matched {
        out.push_str(&format!(
            "{:<16} {:>8.2}s {:>8.2}s {:>9.2}s {:>8.2}s {:>8.0}ms {:>8.0}ms\n",
            m.truth.label,
            m.truth.start_s,
            m.truth.end_s,
            m.derived.start_s,
            m.derived.end_s,
            m.start_error_ms(),
            m.end_error_ms()
        ));
    }
    out.push_str(&render_unpaired(&comparison.missed, &comparison.spurious));
    out.push_str(&format!(
        "{} matched, {} missed, {} spurious; largest start/end error {:.0} ms\n",
        comparison.matched.len(),
        comparison.missed.len(),
        comparison.spurious.len(),
        comparison.max_abs_error_ms()
    ));
    out
}

/// Truth intervals without an event and events without a truth interval, one line each,
/// under [`render`]'s columns.
pub fn render_unpaired(missed: &[Span], spurious: &[Span]) -> String {
    let mut out = String::new();
    for s in missed {
        out.push_str(&format!(
            "{:<16} {:>8.2}s {:>8.2}s {:>10} {:>9}   MISSED\n",
            s.label, s.start_s, s.end_s, "-", "-"
        ));
    }
    for s in spurious {
        out.push_str(&format!(
            "{:<16} {:>9} {:>9} {:>9.2}s {:>8.2}s   SPURIOUS\n",
            s.label, "-", "-", s.start_s, s.end_s
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(label: &str, start_s: f64, end_s: f64) -> Span {
        Span {
            label: label.into(),
            category: "tool".into(),
            start_s,
            end_s,
        }
    }

    #[test]
    fn pairs_by_label_and_overlap() {
        let truth = [
            span("grasper", 1.0, 5.0),
            span("grasper", 10.0, 12.0),
            span("hook", 2.0, 3.0),
        ];
        let derived = [
            span("grasper", 1.25, 4.5),
            span("hook", 7.0, 8.0),
            span("grasper", 9.5, 12.5),
        ];
        let c = compare(&truth, &derived);
        assert_eq!(c.matched.len(), 2);
        assert_eq!(c.matched[0].start_error_ms(), 250.0);
        assert_eq!(c.matched[0].end_error_ms(), -500.0);
        assert_eq!(c.matched[1].start_error_ms(), -500.0);
        assert_eq!(c.missed, vec![span("hook", 2.0, 3.0)]);
        assert_eq!(c.spurious, vec![span("hook", 7.0, 8.0)]);
        assert_eq!(c.max_abs_error_ms(), 500.0);
    }

    #[test]
    fn a_split_detection_leaves_one_part_spurious() {
        let truth = [span("liver", 0.0, 10.0)];
        let derived = [span("liver", 0.0, 4.0), span("liver", 4.5, 10.0)];
        let c = compare(&truth, &derived);
        assert_eq!(c.matched.len(), 1);
        assert_eq!(c.matched[0].derived, span("liver", 4.5, 10.0));
        assert_eq!(c.spurious, vec![span("liver", 0.0, 4.0)]);
    }

    #[test]
    fn truth_frames_become_seconds() {
        let truth = Truth {
            fps: 12.0,
            frame_count: 100,
            intervals: vec![TruthInterval {
                label: "hook".into(),
                category: "tool".into(),
                start_frame: 12,
                end_frame: 47,
            }],
            out_of_body: Vec::new(),
        };
        assert_eq!(truth_spans(&truth), vec![span("hook", 1.0, 47.0 / 12.0)]);
    }
}
