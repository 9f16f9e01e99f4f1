//! The privacy gate against the clip's ground truth: every frame the demo's camera put on the
//! frames topic is read back (as any consumer would read it) and placed in the clip by its
//! presentation time; a frame inside a true out-of-body stretch that carries an image is a
//! breach, an in-body frame without one a false redaction (inside the configured margins of a
//! true stretch it is withheld by design).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use orstream_ingest::gate::{GateFigures, reason_label};
use orstream_proto::Frame;

use super::truth::Stretch;

/// What a frame on the frames topic showed.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameSeen {
    /// Its presentation time in the clip (the file source starts at 0).
    pub pts_ns: i64,
    /// It carried an image.
    pub readable: bool,
    /// The gate's reason when it did not (a `RedactionReason` value).
    pub reason: Option<i32>,
}

impl FrameSeen {
    /// What `frame` shows.
    pub fn of(frame: &Frame) -> Self {
        Self {
            pts_ns: frame.pts_ns,
            readable: frame.redaction.is_none() && !frame.data.is_empty(),
            reason: frame.redaction.as_ref().map(|r| r.reason),
        }
    }
}

/// The privacy section of the demo's report.
#[derive(Debug, Clone, PartialEq)]
pub struct PrivacyReport {
    /// The frames read back, against the truth when the clip has one.
    pub score: PrivacyScore,
    /// The gate's own figures over the run.
    pub gate: GateFigures,
    /// Whether the clip had a truth to compare with.
    pub against_truth: bool,
}

impl PrivacyReport {
    /// Out-of-body frames of the truth that reached the bus with their image.
    pub fn breaches(&self) -> usize {
        self.score.readable_out_of_body.len()
    }
}

/// The gate's figures on one run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PrivacyScore {
    /// Frames read back from the frames topic.
    pub frames: u64,
    /// Of those, published without their image, by the gate's reason.
    pub withheld: BTreeMap<&'static str, u64>,
    /// Out-of-body frames of the truth, and its stretches.
    pub truth_frames: u64,
    /// Stretches of the truth.
    pub truth_stretches: usize,
    /// Frames of a true out-of-body stretch that reached the bus with their image (the clip's
    /// frame numbers): must be none.
    pub readable_out_of_body: Vec<u64>,
    /// In-body frames withheld within the margins of a true stretch (by design).
    pub withheld_in_margin: u64,
    /// In-body frames withheld beyond every margin: false redactions.
    pub false_redactions: u64,
    /// In-body frames read back.
    pub in_body: u64,
}

impl PrivacyScore {
    /// Frames published without their image.
    pub fn withheld_total(&self) -> u64 {
        self.withheld.values().sum()
    }
}

/// Scores `frames` against the truth's out-of-body `stretches` of a clip at `fps`, with the
/// gate's margins in frames.
pub fn score(
    frames: &[FrameSeen],
    stretches: &[Stretch],
    fps: f64,
    margin_before: u64,
    margin_after: u64,
) -> PrivacyScore {
    let mut score = PrivacyScore {
        truth_frames: stretches
            .iter()
            .map(|s| s.end_frame.saturating_sub(s.start_frame) + 1)
            .sum(),
        truth_stretches: stretches.len(),
        ..PrivacyScore::default()
    };
    let inside = |index: u64| {
        stretches
            .iter()
            .any(|s| (s.start_frame..=s.end_frame).contains(&index))
    };
    let near = |index: u64| {
        stretches.iter().any(|s| {
            (s.start_frame.saturating_sub(margin_before)..=s.end_frame + margin_after)
                .contains(&index)
        })
    };
    for frame in frames {
        score.frames += 1;
        if let Some(reason) = frame.reason {
            *score.withheld.entry(reason_label(reason)).or_default() += 1;
        }
        let index = (frame.pts_ns.max(0) as f64 * fps / 1e9).round() as u64;
        match (inside(index), frame.readable) {
            (true, true) => score.readable_out_of_body.push(index),
            (true, false) => {}
            (false, readable) => {
                score.in_body += 1;
                if !readable {
                    if near(index) {
                        score.withheld_in_margin += 1;
                    } else {
                        score.false_redactions += 1;
                    }
                }
            }
        }
    }
    score
}

/// The report's section: the gate's cost and what it withheld, against the truth when there is
/// one.
pub fn render(score: &PrivacyScore, gate: &GateFigures, truth: bool) -> String {
    let mut out = String::new();
    let reasons: Vec<String> = score
        .withheld
        .iter()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "frames on the bus {}: withheld (no image) {}{}",
        score.frames,
        score.withheld_total(),
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        }
    );
    if truth {
        let _ = writeln!(
            out,
            "out-of-body frames in the clip's truth {} in {} stretches; reached the bus readable: {} (must be 0){}",
            score.truth_frames,
            score.truth_stretches,
            score.readable_out_of_body.len(),
            if score.readable_out_of_body.is_empty() {
                String::new()
            } else {
                format!(" — frames {:?}", score.readable_out_of_body)
            }
        );
        let _ = writeln!(
            out,
            "in-body frames withheld: {} within the margins of a true stretch (by design), {} beyond (false redactions, of {} in-body frames)",
            score.withheld_in_margin, score.false_redactions, score.in_body
        );
    }
    match gate.mean_ms() {
        Some(ms) => {
            let _ = writeln!(
                out,
                "gate cost: {ms:.2} ms per frame over {} frames (1/8-scale JPEG decode, resize, forward pass)",
                gate.judged
            );
        }
        None => {
            let _ = writeln!(out, "gate cost: no frame judged");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FPS: f64 = 10.0;

    fn seen(index: i64, readable: bool) -> FrameSeen {
        FrameSeen {
            pts_ns: index * 100_000_000,
            readable,
            reason: (!readable).then_some(orstream_proto::RedactionReason::OutOfBody as i32),
        }
    }

    #[test]
    fn a_readable_frame_inside_a_true_stretch_is_a_breach() {
        let stretches = [Stretch {
            start_frame: 10,
            end_frame: 14,
        }];
        let mut frames: Vec<FrameSeen> = (0..30).map(|i| seen(i, !(8..=17).contains(&i))).collect();
        let clean = score(&frames, &stretches, FPS, 2, 3);
        assert!(clean.readable_out_of_body.is_empty());
        assert_eq!(clean.truth_frames, 5);
        // 8, 9 before and 15, 16, 17 after: within the margins.
        assert_eq!((clean.withheld_in_margin, clean.false_redactions), (5, 0));
        assert_eq!(clean.withheld_total(), 10);
        frames[12] = seen(12, true);
        frames[25] = seen(25, false);
        let breached = score(&frames, &stretches, FPS, 2, 3);
        assert_eq!(breached.readable_out_of_body, vec![12]);
        assert_eq!(breached.false_redactions, 1);
        let text = render(&breached, &GateFigures::default(), true);
        assert!(
            text.contains("reached the bus readable: 1 (must be 0) — frames [12]"),
            "{text}"
        );
    }
}
