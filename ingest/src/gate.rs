//! The privacy gate: frames filmed outside the patient never leave ingest as images.
//!
//! When the laparoscope is out of the body (before and after the case, lens cleaning, a port
//! change) it films the operating room: staff, the patient, screens with names. With `[gate]`
//! configured, every frame of a gated stream is judged by a small in-body / out-of-body
//! TorchScript classifier ([`Classifier`], described by its card [`GateCard`]) on a small copy
//! of the JPEG about to be published (decoded at 1/8 scale, resized to the card's input), and a
//! frame judged out of body is published as a marker (`Frame.redaction`, no image) in its
//! place, so accounting still covers it.
//!
//! Biased to privacy ([`DelayLine`]):
//! - every frame waits in a delay line until `margin_before` later frames have been judged, so
//!   the frames just before an out-of-body one are withheld too (the cost: `margin_before`
//!   frame intervals of latency on every frame);
//! - `margin_after` frames after the last out-of-body one are withheld too;
//! - a frame the gate cannot judge (model missing or failing, frame unreadable) is withheld
//!   with the reason, and counts as out of body for the margins: the gate fails closed.
//!
//! The gate runs on the stream's publishing thread, after a frame is known to be in a case
//! and before it gets its seq.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use orstream_proto::{ModelIdentity, Redaction, RedactionReason};
use serde::Deserialize;

use crate::config::GateConfig;

/// The gate model's card: a flat TOML file beside the model (the same name with `.toml`).
///
/// ```toml
/// name = "orstream-demo-gate"
/// version = "1"
/// description = "what it was trained on, and its limits"
/// output = "out_of_body"
/// input_width = 64
/// input_height = 64
/// resize = "stretch"
/// mean = [0.485, 0.456, 0.406]   # applied to RGB in 0..1: (x - mean) / std
/// std = [0.229, 0.224, 0.225]
/// out_of_body_index = 1          # the logit of "out of body" in the [B, 2] output
/// threshold = 0.25               # softmax probability at or above which a frame is withheld
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GateCard {
    /// The model's name, carried in every marker.
    pub name: String,
    /// Its version: bump it when the weights change.
    pub version: String,
    /// What it was trained on, and its limits.
    #[serde(default)]
    pub description: String,
    /// Must be `out_of_body`: the model returns logits `[B, C]`.
    pub output: String,
    /// Input width in pixels.
    pub input_width: u32,
    /// Input height in pixels.
    pub input_height: u32,
    /// Must be `stretch`: the frame is resized to the input, its aspect ratio not kept.
    pub resize: String,
    /// Per-channel mean of RGB in 0..1.
    pub mean: [f32; 3],
    /// Per-channel standard deviation of RGB in 0..1.
    pub std: [f32; 3],
    /// Which output channel is "out of body"; the probability is the softmax over channels.
    pub out_of_body_index: usize,
    /// Probability at or above which a frame is out of body.
    pub threshold: f32,
}

/// Largest input side a card may ask for: the gate is meant to be small.
const MAX_INPUT_SIDE: u32 = 512;

impl GateCard {
    /// Reads and checks the card at `path`.
    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("the gate's card {}: {e}", path.display()))?;
        let card: GateCard = toml::from_str(&text)
            .map_err(|e| format!("the gate's card {}: {e}", path.display()))?;
        card.check()
            .map_err(|problem| format!("the gate's card {}: {problem}", path.display()))?;
        Ok(card)
    }

    fn check(&self) -> Result<(), String> {
        if self.output != "out_of_body" {
            return Err(format!(
                "output = {:?}, expected \"out_of_body\"",
                self.output
            ));
        }
        if self.resize != "stretch" {
            return Err(format!("resize = {:?}, expected \"stretch\"", self.resize));
        }
        for (key, side) in [
            ("input_width", self.input_width),
            ("input_height", self.input_height),
        ] {
            if side == 0 || side > MAX_INPUT_SIDE {
                return Err(format!("{key} = {side} is outside 1..={MAX_INPUT_SIDE}"));
            }
        }
        if self.std.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err("std must be finite and above 0".to_owned());
        }
        if self.mean.iter().any(|m| !m.is_finite()) {
            return Err("mean must be finite".to_owned());
        }
        if !(self.threshold.is_finite() && self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(format!("threshold = {} is outside (0, 1]", self.threshold));
        }
        if self.out_of_body_index > 16 {
            return Err(format!(
                "out_of_body_index = {} is more than 16",
                self.out_of_body_index
            ));
        }
        for (key, text) in [("name", &self.name), ("version", &self.version)] {
            if !orstream_proto::wire::is_valid_id(text) {
                return Err(format!(
                    "{key} must be 1 to 128 bytes without control characters"
                ));
            }
        }
        Ok(())
    }
}

/// The loaded classifier: the TorchScript module, its card and identity.
pub struct Classifier {
    module: tch::CModule,
    card: GateCard,
    identity: ModelIdentity,
    threshold: f32,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("card", &self.card)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Forward passes made at load, before the first frame.
const WARM_UP_PASSES: usize = 3;

impl Classifier {
    /// Loads the model and card `config` names on the CPU and checks it answers a blank frame
    /// in the card's shape.
    pub fn load(config: &GateConfig) -> Result<Self, String> {
        let card_path = config.card_path();
        let card = GateCard::read(&card_path)?;
        let digest = orstream_shell::digest::file_sha256(&config.model)
            .map_err(|e| format!("the gate's model {}: {e}", config.model.display()))?;
        let module = tch::CModule::load(&config.model)
            .map_err(|e| format!("the gate's model {}: {e}", config.model.display()))?;
        let threshold = config.threshold.unwrap_or(card.threshold);
        let classifier = Self {
            identity: ModelIdentity {
                name: card.name.clone(),
                version: card.version.clone(),
                digest,
            },
            card,
            module,
            threshold,
        };
        // A few passes on a blank frame: the first checks the model answers in the card's
        // shape, and TorchScript's profiling executor optimises the graph over its first runs,
        // which must not delay a camera's first frames.
        let blank = vec![0.0; classifier.input_len()];
        for _ in 0..WARM_UP_PASSES {
            classifier
                .forward(&blank)
                .map_err(|e| format!("the gate's model {}: {e}", config.model.display()))?;
        }
        Ok(classifier)
    }

    /// The identity carried in every marker it judged.
    pub fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    /// The probability at or above which a frame is out of body.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    fn input_len(&self) -> usize {
        3 * self.card.input_width as usize * self.card.input_height as usize
    }

    /// The probability that the JPEG `jpeg` was filmed out of the body.
    pub fn score(&self, jpeg: &[u8]) -> Result<f32, String> {
        let input = thumbnail(jpeg, &self.card)?;
        self.forward(&input)
    }

    /// The card the model came with.
    pub fn card(&self) -> &GateCard {
        &self.card
    }

    /// The probability of out of body for an input made by [`thumbnail`].
    pub fn forward(&self, input: &[f32]) -> Result<f32, String> {
        let _no_grad = tch::no_grad_guard();
        let shape = [
            1,
            3,
            i64::from(self.card.input_height),
            i64::from(self.card.input_width),
        ];
        let tensor = tch::Tensor::from_slice(input).view(shape);
        let logits = self
            .module
            .forward_ts(&[tensor])
            .map_err(|e| format!("forward pass: {e}"))?;
        let size = logits.size();
        let channels = match size.as_slice() {
            [1, c] => usize::try_from(*c).unwrap_or(0),
            other => return Err(format!("output of shape {other:?}, expected [1, C]")),
        };
        if self.card.out_of_body_index >= channels {
            return Err(format!(
                "output has {channels} channels; the card's out_of_body_index is {}",
                self.card.out_of_body_index
            ));
        }
        let probabilities = logits
            .to_kind(tch::Kind::Float)
            .softmax(1, tch::Kind::Float);
        let index = i64::try_from(self.card.out_of_body_index).unwrap_or(0);
        let p = probabilities.double_value(&[0, index]) as f32;
        if p.is_finite() {
            Ok(p.clamp(0.0, 1.0))
        } else {
            Err(format!("the model answered {p}"))
        }
    }
}

/// The model's input from a JPEG: decoded at the smallest of 1/8, 1/4, 1/2, 1 scale that is
/// still at least the input size on one side (DCT scaling: at 1/8 only each block's mean is
/// computed), resized to the card's input by bilinear interpolation (half-pixel centres, as
/// torch's `interpolate(align_corners=False)`), normalised with the card's mean and std, CHW.
pub fn thumbnail(jpeg: &[u8], card: &GateCard) -> Result<Vec<f32>, String> {
    let mut decoder = jpeg_decoder::Decoder::new(jpeg);
    decoder
        .read_info()
        .map_err(|e| format!("the frame's JPEG header: {e}"))?;
    let want = |side: u32| u16::try_from(side).unwrap_or(u16::MAX);
    let (width, height) = decoder
        .scale(want(card.input_width), want(card.input_height))
        .map_err(|e| format!("the frame's JPEG: {e}"))?;
    let pixels = decoder
        .decode()
        .map_err(|e| format!("the frame's JPEG data: {e}"))?;
    let (width, height) = (usize::from(width), usize::from(height));
    let format = decoder.info().map(|i| i.pixel_format);
    let channels = match format {
        Some(jpeg_decoder::PixelFormat::RGB24) => 3,
        Some(jpeg_decoder::PixelFormat::L8) => 1,
        other => return Err(format!("the frame's JPEG has pixel format {other:?}")),
    };
    if width == 0 || height == 0 || pixels.len() != width * height * channels {
        return Err(format!(
            "the frame's JPEG decoded to {} bytes for {width}x{height}",
            pixels.len()
        ));
    }
    let (out_w, out_h) = (card.input_width as usize, card.input_height as usize);
    let mut out = vec![0.0f32; 3 * out_w * out_h];
    let sample = |src: usize, dst: usize, i: usize| -> (usize, usize, f32) {
        let x = ((i as f32 + 0.5) * src as f32 / dst as f32 - 0.5).max(0.0);
        let x0 = (x.floor() as usize).min(src - 1);
        let x1 = (x0 + 1).min(src - 1);
        (x0, x1, x - x0 as f32)
    };
    let at = |x: usize, y: usize, c: usize| -> f32 {
        let c = if channels == 1 { 0 } else { c };
        f32::from(pixels[(y * width + x) * channels + c])
    };
    for oy in 0..out_h {
        let (y0, y1, fy) = sample(height, out_h, oy);
        for ox in 0..out_w {
            let (x0, x1, fx) = sample(width, out_w, ox);
            for c in 0..3 {
                let top = at(x0, y0, c) * (1.0 - fx) + at(x1, y0, c) * fx;
                let bottom = at(x0, y1, c) * (1.0 - fx) + at(x1, y1, c) * fx;
                let value = (top * (1.0 - fy) + bottom * fy) / 255.0;
                out[(c * out_h + oy) * out_w + ox] = (value - card.mean[c]) / card.std[c];
            }
        }
    }
    Ok(out)
}

/// What the gate made of one frame once its margins are known.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// In the body, and outside every margin: published as it is.
    Clear {
        /// The classifier's probability of out of body.
        score: f32,
    },
    /// Withheld: the marker that takes its place.
    Withheld(Redaction),
}

impl Verdict {
    /// The withheld frame's reason, as the metrics label it.
    pub fn reason_label(&self) -> Option<&'static str> {
        match self {
            Self::Clear { .. } => None,
            Self::Withheld(r) => Some(reason_label(r.reason)),
        }
    }
}

/// A gate reason as a metric label: `out_of_body`, `margin`, `gate_unavailable`.
pub fn reason_label(reason: i32) -> &'static str {
    match RedactionReason::try_from(reason) {
        Ok(RedactionReason::OutOfBody) => "out_of_body",
        Ok(RedactionReason::Margin) => "margin",
        Ok(RedactionReason::GateUnavailable) => "gate_unavailable",
        _ => "unspecified",
    }
}

/// The classifier's judgement of one frame, before margins.
#[derive(Debug, Clone, PartialEq)]
pub enum Judgement {
    /// Scored below the threshold.
    InBody(f32),
    /// Scored at or above the threshold.
    OutOfBody(f32),
    /// Could not be judged: why.
    Unavailable(String),
}

/// The delay line and the margins, apart from any model: frames go in judged and come out,
/// `before` frames later, with their verdicts. Pure and deterministic.
#[derive(Debug)]
pub struct DelayLine<T> {
    held: VecDeque<(T, Verdict)>,
    before: usize,
    after: usize,
    /// Frames still to withhold after the last out-of-body (or unjudged) one.
    after_left: usize,
    /// The identity of the model that judged, carried in markers.
    model: Option<ModelIdentity>,
}

impl<T> DelayLine<T> {
    /// A line holding `before` frames, withholding `after` frames after each out-of-body one;
    /// markers name `model`.
    pub fn new(before: usize, after: usize, model: Option<ModelIdentity>) -> Self {
        Self {
            held: VecDeque::with_capacity(before + 1),
            before,
            after,
            after_left: 0,
            model,
        }
    }

    /// Frames waiting for their successors to be judged.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether no frame waits.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Takes a judged frame; gives back the frame that leaves the line, if one does.
    pub fn push(&mut self, item: T, judgement: Judgement) -> Option<(T, Verdict)> {
        let verdict = match judgement {
            Judgement::InBody(score) if self.after_left > 0 => {
                self.after_left -= 1;
                self.withheld(
                    RedactionReason::Margin,
                    score,
                    format!("within {} frames after an out-of-body frame", self.after),
                )
            }
            Judgement::InBody(score) => Verdict::Clear { score },
            Judgement::OutOfBody(score) => {
                self.mark_held();
                self.after_left = self.after;
                self.withheld(RedactionReason::OutOfBody, score, String::new())
            }
            Judgement::Unavailable(why) => {
                self.mark_held();
                self.after_left = self.after;
                let mut redaction = self.redaction(RedactionReason::GateUnavailable, 0.0, why);
                redaction.model = None;
                Verdict::Withheld(redaction)
            }
        };
        self.held.push_back((item, verdict));
        if self.held.len() > self.before {
            self.held.pop_front()
        } else {
            None
        }
    }

    /// Every frame still held, in order (the stream's end: no successor will come).
    pub fn drain(&mut self) -> Vec<(T, Verdict)> {
        self.held.drain(..).collect()
    }

    /// The held frames that were clear become the margin before an out-of-body frame.
    fn mark_held(&mut self) {
        let detail = format!("within {} frames before an out-of-body frame", self.before);
        for (_, verdict) in &mut self.held {
            if let Verdict::Clear { score } = *verdict {
                *verdict = Verdict::Withheld(Redaction {
                    reason: RedactionReason::Margin as i32,
                    score,
                    detail: detail.clone(),
                    model: self.model.clone(),
                });
            }
        }
    }

    fn withheld(&self, reason: RedactionReason, score: f32, detail: String) -> Verdict {
        Verdict::Withheld(self.redaction(reason, score, detail))
    }

    fn redaction(&self, reason: RedactionReason, score: f32, detail: String) -> Redaction {
        Redaction {
            reason: reason as i32,
            score,
            detail,
            model: self.model.clone(),
        }
    }
}

/// What the gates of this process did, for the demo's report and the benchmarks.
#[derive(Debug, Default)]
pub struct GateTotals {
    judged: AtomicU64,
    judge_ns: AtomicU64,
    withheld: AtomicU64,
    unavailable: AtomicU64,
}

/// A snapshot of [`GateTotals`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateFigures {
    /// Frames judged (a model ran, or tried to).
    pub judged: u64,
    /// Time spent judging them (thumbnail and forward pass), in nanoseconds.
    pub judge_ns: u64,
    /// Frames withheld, for any reason.
    pub withheld: u64,
    /// Of those, frames the gate could not judge.
    pub unavailable: u64,
}

impl GateFigures {
    /// What was done after `earlier` was taken.
    pub fn since(&self, earlier: &GateFigures) -> GateFigures {
        GateFigures {
            judged: self.judged.saturating_sub(earlier.judged),
            judge_ns: self.judge_ns.saturating_sub(earlier.judge_ns),
            withheld: self.withheld.saturating_sub(earlier.withheld),
            unavailable: self.unavailable.saturating_sub(earlier.unavailable),
        }
    }

    /// Mean time to judge one frame, in milliseconds.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.judged > 0).then(|| self.judge_ns as f64 / self.judged as f64 / 1e6)
    }
}

static TOTALS: GateTotals = GateTotals {
    judged: AtomicU64::new(0),
    judge_ns: AtomicU64::new(0),
    withheld: AtomicU64::new(0),
    unavailable: AtomicU64::new(0),
};

/// What every gate of this process has done since it started.
pub fn totals() -> GateFigures {
    GateFigures {
        judged: TOTALS.judged.load(Ordering::Relaxed),
        judge_ns: TOTALS.judge_ns.load(Ordering::Relaxed),
        withheld: TOTALS.withheld.load(Ordering::Relaxed),
        unavailable: TOTALS.unavailable.load(Ordering::Relaxed),
    }
}

/// One stream's gate: its classifier (or why there is none) and its delay line.
pub struct Gate<T> {
    classifier: Result<Classifier, String>,
    line: DelayLine<T>,
    model: PathBuf,
}

impl<T> std::fmt::Debug for Gate<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("model", &self.model)
            .field("available", &self.classifier.is_ok())
            .field("held", &self.line.len())
            .finish()
    }
}

impl<T> Gate<T> {
    /// Loads the classifier `config` names; a gate whose model cannot be loaded withholds
    /// every frame (its [`unavailable`](Self::unavailable) says why).
    pub fn open(config: &GateConfig) -> Self {
        let classifier = Classifier::load(config);
        let model = classifier.as_ref().ok().map(|c| c.identity().clone());
        Self {
            classifier,
            line: DelayLine::new(config.margin_before, config.margin_after, model),
            model: config.model.clone(),
        }
    }

    /// Why the gate cannot judge any frame, if it cannot.
    pub fn unavailable(&self) -> Option<&str> {
        self.classifier.as_ref().err().map(String::as_str)
    }

    /// Judges `jpeg` and takes `item` into the delay line; gives back the frame leaving it.
    pub fn admit(&mut self, item: T, jpeg: &[u8]) -> Option<(T, Verdict)> {
        let started = Instant::now();
        let judgement = match &self.classifier {
            Ok(classifier) => match classifier.score(jpeg) {
                Ok(p) if p >= classifier.threshold() => Judgement::OutOfBody(p),
                Ok(p) => Judgement::InBody(p),
                Err(e) => {
                    Judgement::Unavailable(format!("the gate could not judge the frame: {e}"))
                }
            },
            Err(why) => Judgement::Unavailable(format!("gate model unavailable: {why}")),
        };
        TOTALS.judged.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        TOTALS.judge_ns.fetch_add(ns, Ordering::Relaxed);
        if matches!(judgement, Judgement::Unavailable(_)) {
            TOTALS.unavailable.fetch_add(1, Ordering::Relaxed);
        }
        let out = self.line.push(item, judgement);
        count_withheld(out.as_ref());
        out
    }

    /// Every frame still held (the session's end).
    pub fn drain(&mut self) -> Vec<(T, Verdict)> {
        let out = self.line.drain();
        for released in &out {
            count_withheld(Some(released));
        }
        out
    }

    /// Frames held.
    pub fn held(&self) -> usize {
        self.line.len()
    }
}

fn count_withheld<T>(released: Option<&(T, Verdict)>) {
    if let Some((_, Verdict::Withheld(_))) = released {
        TOTALS.withheld.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reasons(out: &[(u32, Verdict)]) -> Vec<(u32, &'static str)> {
        out.iter()
            .map(|(i, v)| (*i, v.reason_label().unwrap_or("clear")))
            .collect()
    }

    fn run(line: &mut DelayLine<u32>, script: &[Judgement]) -> Vec<(u32, Verdict)> {
        let mut out = Vec::new();
        for (i, j) in script.iter().enumerate() {
            out.extend(line.push(i as u32, j.clone()));
        }
        out.extend(line.drain());
        out
    }

    #[test]
    fn out_of_body_frames_and_their_margins_are_withheld() {
        use Judgement::{InBody as I, OutOfBody as O};
        let mut line = DelayLine::new(2, 3, None);
        let script = [
            I(0.1),
            I(0.1),
            I(0.1),
            I(0.1),
            O(0.9),
            O(0.8),
            I(0.1),
            I(0.1),
            I(0.1),
            I(0.1),
            I(0.1),
        ];
        let out = run(&mut line, &script);
        assert_eq!(
            reasons(&out),
            vec![
                (0, "clear"),
                (1, "clear"),
                (2, "margin"),
                (3, "margin"),
                (4, "out_of_body"),
                (5, "out_of_body"),
                (6, "margin"),
                (7, "margin"),
                (8, "margin"),
                (9, "clear"),
                (10, "clear"),
            ]
        );
    }

    #[test]
    fn a_frame_leaves_the_line_only_once_its_successors_are_judged() {
        let mut line = DelayLine::new(3, 0, None);
        for i in 0..3 {
            assert!(line.push(i, Judgement::InBody(0.0)).is_none());
        }
        let (first, verdict) = line
            .push(3, Judgement::InBody(0.0))
            .unwrap_or((99, Verdict::Clear { score: 1.0 }));
        assert_eq!((first, verdict), (0, Verdict::Clear { score: 0.0 }));
        // An out-of-body frame reaches back over every frame still held.
        assert!(matches!(
            line.push(4, Judgement::OutOfBody(0.99)),
            Some((1, Verdict::Withheld(_)))
        ));
        let rest = line.drain();
        assert_eq!(
            reasons(&rest),
            vec![(2, "margin"), (3, "margin"), (4, "out_of_body")]
        );
        assert!(line.is_empty());
    }

    #[test]
    fn a_frame_the_gate_cannot_judge_is_withheld_with_the_reason_and_margins() {
        let mut line = DelayLine::new(1, 1, None);
        let out = run(
            &mut line,
            &[
                Judgement::InBody(0.0),
                Judgement::Unavailable("gate model unavailable: gone".into()),
                Judgement::InBody(0.0),
                Judgement::InBody(0.0),
            ],
        );
        assert_eq!(
            reasons(&out),
            vec![
                (0, "margin"),
                (1, "gate_unavailable"),
                (2, "margin"),
                (3, "clear")
            ]
        );
        let Verdict::Withheld(r) = &out[1].1 else {
            unreachable!()
        };
        assert_eq!(r.detail, "gate model unavailable: gone");
        assert!(r.model.is_none());
    }

    #[test]
    fn without_margins_only_the_judged_frames_are_withheld_and_nothing_waits() {
        let mut line = DelayLine::new(0, 0, None);
        assert!(matches!(
            line.push(0, Judgement::InBody(0.2)),
            Some((0, Verdict::Clear { .. }))
        ));
        assert!(matches!(
            line.push(1, Judgement::OutOfBody(0.7)),
            Some((1, Verdict::Withheld(_)))
        ));
        assert!(matches!(
            line.push(2, Judgement::InBody(0.2)),
            Some((2, Verdict::Clear { .. }))
        ));
        assert!(line.is_empty());
    }

    fn card() -> GateCard {
        GateCard {
            name: "gate".into(),
            version: "1".into(),
            description: String::new(),
            output: "out_of_body".into(),
            input_width: 8,
            input_height: 4,
            resize: "stretch".into(),
            mean: [0.0; 3],
            std: [1.0; 3],
            out_of_body_index: 1,
            threshold: 0.5,
        }
    }

    #[test]
    fn cards_are_checked() {
        assert_eq!(card().check(), Ok(()));
        let bad = [
            GateCard {
                output: "semantic".into(),
                ..card()
            },
            GateCard {
                resize: "letterbox".into(),
                ..card()
            },
            GateCard {
                input_width: 0,
                ..card()
            },
            GateCard {
                threshold: f32::NAN,
                ..card()
            },
            GateCard {
                threshold: 0.0,
                ..card()
            },
            GateCard {
                std: [1.0, 0.0, 1.0],
                ..card()
            },
            GateCard {
                name: "a\0b".into(),
                ..card()
            },
        ];
        for card in bad {
            assert!(card.check().is_err(), "{card:?}");
        }
    }

    #[test]
    fn an_unreadable_frame_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"\xff\xd8\xff", b"not a jpeg at all"] {
            assert!(thumbnail(bytes, &card()).is_err());
        }
    }

    #[test]
    fn a_missing_model_leaves_a_gate_that_withholds_every_frame() {
        let config = GateConfig {
            model: PathBuf::from("/nonexistent/gate.pt"),
            ..GateConfig::default()
        };
        let mut gate: Gate<u32> = Gate::open(&config);
        let why = gate.unavailable().unwrap_or_default().to_owned();
        assert!(why.contains("/nonexistent/gate.toml"), "{why}");
        let mut out: Vec<(u32, Verdict)> = (0..5).filter_map(|i| gate.admit(i, b"")).collect();
        out.extend(gate.drain());
        assert_eq!(out.len(), 5);
        for (_, verdict) in &out {
            let Verdict::Withheld(r) = verdict else {
                panic!("{verdict:?}")
            };
            assert_eq!(r.reason, RedactionReason::GateUnavailable as i32);
            assert!(
                r.detail.starts_with("gate model unavailable: "),
                "{}",
                r.detail
            );
        }
    }
}
