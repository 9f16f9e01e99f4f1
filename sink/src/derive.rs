//! Event derivation: per-frame results of one stream -> presence intervals per class, gaps,
//! and anomalies. Pure and deterministic: the same results in the same order, from the same
//! [`StreamState`], give the same outputs and the same next state, which is what lets the sink
//! store the state with the rows and resume after a crash as if nothing happened.
//!
//! Rules, per stream (a stream's results arrive in partition order):
//! - A frame is *usable* when its status is OK. A class is *seen* in a usable frame when an
//!   instance of it (category enabled, score >= `min_score`) is there; its confidence in that
//!   frame is the best such score.
//! - Enter: a class becomes present when seen in `enter_frames` of the last `window_frames`
//!   frames of the current segment. The interval starts at the first of those sightings, so
//!   the start is exact to the frame; a single sighting is never an interval.
//! - Exit: a present class becomes absent once a frame arrives more than `absent_after`
//!   (capture time) after the last frame that saw it; the interval ends at that last frame.
//! - Segments: an interval never spans a gap. A run of unusable frames (SKIPPED_*, *_ERROR,
//!   INVALID), a new session epoch (discontinuity), missing results (a seq jump) and the end of
//!   the stream close every open interval and clear the enter windows; the run or jump itself is
//!   recorded as a [`Gap`]. A new model identity or a new case_id also closes intervals (a
//!   measurement by another model, or another case), without a gap.
//! - A result behind the stream's position (an epoch or seq already seen) is an
//!   [`AnomalyKind::OutOfOrder`] and is ignored; a stream whose first result is not seq 0 is an
//!   [`AnomalyKind::UnknownStream`] (its earlier frames are not in the record); seq 0 of an
//!   older epoch is taken as a restarted source ([`AnomalyKind::EpochReset`]).
//! - End: once a `StreamEnded` was seen and the results cover every frame it reports
//!   published, open intervals and gaps are closed at the last frame. Results and lifecycle
//!   events come on different topics, so this waits for both, whichever arrives last.
//!
//! - Tools: instances of tool classes are also followed one by one by the stream's
//!   [`Tracker`] (see the `track` module); each presence interval of a tool lists the tracks
//!   seen in it, and a track ends wherever intervals close for a gap, an epoch, a model, a case
//!   or the stream's end, or once lost.
//!
//! Times are the frames' capture times (UTC nanoseconds); offsets from the case start are
//! computed by the caller, which knows the case's first frame across streams.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use orstream_proto::{
    Category, EventKind, FrameResult, FrameStatus, ModelIdentity, StreamEvent, SurgicalEvent,
    stream_event,
};
use orstream_record::schema::GapKind;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::track::{Assignment, Motion, Observation, Track, TrackPoint, TrackRules, Tracker};

/// The derivation rules in the form the hot path uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// k of k-of-n.
    pub enter_frames: usize,
    /// n of k-of-n.
    pub window_frames: u64,
    /// Capture-time silence after which a present class is absent, in nanoseconds.
    pub absent_after_ns: i64,
    /// Lowest score that counts as a sighting.
    pub min_score: f32,
    /// Categories that produce intervals (contract values).
    pub categories: BTreeSet<i32>,
    /// How tool instances are tracked.
    pub tracking: TrackRules,
}

/// Which model produced a segment's results.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelKey {
    /// Model name from its card.
    pub name: String,
    /// Model version from its card.
    pub version: String,
    /// `sha256:<hex>` of the TorchScript file.
    pub digest: String,
}

impl ModelKey {
    fn of(model: Option<&ModelIdentity>) -> Self {
        model.map_or_else(Self::default, |m| Self {
            name: m.name.clone(),
            version: m.version.clone(),
            digest: m.digest.clone(),
        })
    }

    /// The contract's form.
    pub fn identity(&self) -> ModelIdentity {
        ModelIdentity {
            name: self.name.clone(),
            version: self.version.clone(),
            digest: self.digest.clone(),
        }
    }
}

/// Where a stream stands: the last accepted result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Session epoch of the last accepted result.
    pub epoch: u64,
    /// Its seq: a later result of the epoch at or below it is behind; one past the next is a gap.
    pub seq: u64,
    /// Its capture time.
    pub capture_ns: i64,
}

/// A sighting of a class that is not (yet) present, kept for the enter window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sighting {
    /// Frame seq.
    pub seq: u64,
    /// Capture time.
    pub ns: i64,
    /// Best score of the class in that frame.
    pub score: f32,
}

/// A presence interval still open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenInterval {
    /// First frame that saw the class.
    pub first_seq: u64,
    /// Its capture time.
    pub start_ns: i64,
    /// Last frame that saw the class.
    pub last_seq: u64,
    /// Its capture time.
    pub last_ns: i64,
    /// Frames that saw the class within the interval.
    pub frames_seen: u64,
    /// Best score.
    pub peak: f32,
    /// Sum of the per-frame scores, for the mean.
    pub sum: f64,
    /// Tool tracks assigned in the interval.
    #[serde(default)]
    pub track_ids: BTreeSet<u64>,
}

/// One class of one stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassTrack {
    /// Label from the model card (as the latest instance named it).
    pub label: String,
    /// Category (contract value).
    pub category: i32,
    /// Sightings in the enter window while not present.
    pub sightings: VecDeque<Sighting>,
    /// The interval, while present.
    pub open: Option<OpenInterval>,
}

/// A gap still open (a run of unusable frames not yet followed by a usable one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenGap {
    /// Epoch of the unusable frames.
    pub epoch: u64,
    /// First unusable frame.
    pub first_seq: u64,
    /// Last unusable frame so far.
    pub last_seq: u64,
    /// Capture time of the first unusable frame.
    pub start_ns: i64,
    /// Capture time of the last unusable frame so far.
    pub last_ns: i64,
    /// Unusable frames per status name (for withheld frames, per reason of the gate).
    pub statuses: BTreeMap<String, u64>,
    /// The frames were withheld by ingest's privacy gate (status REDACTED): the gap is a
    /// stretch with the camera out of the body. A stored state from before the gate has none.
    #[serde(default)]
    pub out_of_body: bool,
}

/// Everything derivation remembers about one stream between results. Stored as JSON with the
/// rows of each transaction.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamState {
    /// The stream this state is kept and stored for.
    pub stream_id: String,
    /// The case its latest results belong to.
    pub case_id: String,
    /// The last accepted result.
    pub position: Option<Position>,
    /// Capture time of the stream's first result in the current case.
    pub case_first_ns: Option<i64>,
    /// Results accepted in the current case.
    pub case_results: u64,
    /// Frames covered by the accepted results' seqs, over all epochs (a seq jump counts the
    /// missing frames too); compared with `StreamEnded.frames_published`.
    pub frames_accounted: u64,
    /// Model of the current segment.
    pub model: Option<ModelKey>,
    /// By class id, every class a usable frame of the stream has shown: its enter window
    /// and open interval.
    pub classes: BTreeMap<u32, ClassTrack>,
    /// A run of unusable frames in progress.
    pub gap: Option<OpenGap>,
    /// `frames_published` of a `StreamEnded` waiting for the results to catch up.
    pub ended: Option<u64>,
    /// The stream's tool tracker. A state stored before tracking existed has none and
    /// resumes with an empty one.
    #[serde(default)]
    pub tracker: Tracker,
}

/// A closed presence interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Presence {
    /// Stream it was seen on.
    pub stream_id: String,
    /// Case it belongs to.
    pub case_id: String,
    /// Class id from the model card.
    pub class_id: u32,
    /// Class label.
    pub label: String,
    /// Category (contract value).
    pub category: i32,
    /// Capture time of the first frame that saw it.
    pub start_ns: i64,
    /// Capture time of the last frame that saw it.
    pub end_ns: i64,
    /// Session epoch of the frames.
    pub epoch: u64,
    /// First frame that saw it.
    pub first_seq: u64,
    /// Last frame that saw it.
    pub last_seq: u64,
    /// Frames that saw it.
    pub frames_seen: u64,
    /// Best score.
    pub peak: f32,
    /// Mean score over the frames that saw it.
    pub mean: f32,
    /// The model of the segment.
    pub model: ModelKey,
    /// Tool tracks seen in the interval, ascending.
    pub track_ids: Vec<u64>,
    /// Whether the interval is still open (only in record views, never emitted).
    pub open: bool,
}

impl Presence {
    /// Deterministic id: the same stream, epoch, class and first frame give the same id.
    pub fn event_id(&self) -> String {
        event_id(&[
            "presence",
            &self.stream_id,
            &self.epoch.to_string(),
            &self.class_id.to_string(),
            &self.first_seq.to_string(),
        ])
    }

    /// The contract's form; offsets from `case_start_ns`.
    pub fn to_event(&self, case_start_ns: i64) -> SurgicalEvent {
        SurgicalEvent {
            event_id: self.event_id(),
            case_id: self.case_id.clone(),
            stream_id: self.stream_id.clone(),
            kind: EventKind::Presence as i32,
            class_id: self.class_id,
            label: self.label.clone(),
            category: self.category,
            start_time_ns: self.start_ns,
            end_time_ns: self.end_ns,
            start_offset_ns: self.start_ns.saturating_sub(case_start_ns),
            end_offset_ns: self.end_ns.saturating_sub(case_start_ns),
            peak_confidence: self.peak,
            mean_confidence: self.mean,
            session_epoch: self.epoch,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            model: Some(self.model.identity()),
            gap_reason: String::new(),
            track_ids: self.track_ids.clone(),
            track: None,
        }
    }
}

/// A tool track, ended or (in record views) still open.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackRecord {
    /// The stream the tool was followed in.
    pub stream_id: String,
    /// The case of its frames: a case change ends every track.
    pub case_id: String,
    /// The tool's class id in the model's card.
    pub class_id: u32,
    /// The tool's label in the model's card.
    pub label: String,
    /// Session epoch of its frames.
    pub epoch: u64,
    /// First assigned frame.
    pub first_seq: u64,
    /// Last assigned frame.
    pub last_seq: u64,
    /// Capture time of the first assignment.
    pub start_ns: i64,
    /// Capture time of the last assignment.
    pub end_ns: i64,
    /// Best score.
    pub peak_score: f32,
    /// Path length, speeds and idle time over its trajectory.
    pub motion: Motion,
    /// The model of the segment.
    pub model: ModelKey,
    /// Whether the track is still live (only in record views, never emitted).
    pub open: bool,
}

impl TrackRecord {
    fn of(state: &StreamState, track: &Track) -> Self {
        Self {
            stream_id: state.stream_id.clone(),
            case_id: state.case_id.clone(),
            class_id: track.class_id,
            label: track.label.clone(),
            epoch: track.epoch,
            first_seq: track.first_seq,
            last_seq: track.last_seq,
            start_ns: track.first_ns,
            end_ns: track.last_ns,
            peak_score: track.peak_score,
            motion: track.motion(),
            model: state.model.clone().unwrap_or_default(),
            open: false,
        }
    }

    /// Deterministic id: the stream and the track's id name it.
    pub fn event_id(&self) -> String {
        event_id(&["track", &self.stream_id, &self.motion.track_id.to_string()])
    }

    /// The contract's form; offsets from `case_start_ns`.
    pub fn to_event(&self, case_start_ns: i64) -> SurgicalEvent {
        let m = &self.motion;
        let point = |(x, y): (f64, f64)| orstream_proto::Point {
            x: x as f32,
            y: y as f32,
        };
        SurgicalEvent {
            event_id: self.event_id(),
            case_id: self.case_id.clone(),
            stream_id: self.stream_id.clone(),
            kind: EventKind::Track as i32,
            class_id: self.class_id,
            label: self.label.clone(),
            category: Category::Tool as i32,
            start_time_ns: self.start_ns,
            end_time_ns: self.end_ns,
            start_offset_ns: self.start_ns.saturating_sub(case_start_ns),
            end_offset_ns: self.end_ns.saturating_sub(case_start_ns),
            peak_confidence: self.peak_score,
            mean_confidence: 0.0,
            session_epoch: self.epoch,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            model: Some(self.model.identity()),
            gap_reason: String::new(),
            track_ids: vec![m.track_id],
            track: Some(orstream_proto::TrackSummary {
                track_id: m.track_id,
                frames_seen: m.frames_seen,
                path_length: m.path_length,
                mean_speed: m.mean_speed,
                peak_speed: m.peak_speed,
                idle_ns: m.idle_ns,
                reentries: m.reentries,
                first_centroid: Some(point(m.first_centroid)),
                last_centroid: Some(point(m.last_centroid)),
            }),
        }
    }
}

/// The confirmed track assignments of one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameTracks {
    /// The stream of the frame; the key of its `or.tracks.v1` message.
    pub stream_id: String,
    /// The case the frame belongs to, carried into its tracks message.
    pub case_id: String,
    /// Session epoch of the frame; with `stream_id` and `seq`, the frame's identity.
    pub epoch: u64,
    /// Frame seq.
    pub seq: u64,
    /// Capture time.
    pub ns: i64,
    /// Assignments, by track id.
    pub assigned: Vec<Assignment>,
}

impl FrameTracks {
    /// The contract's form (`or.tracks.v1`).
    pub fn to_message(&self) -> orstream_proto::TrackFrame {
        let point = |x: f64, y: f64| orstream_proto::Point {
            x: x as f32,
            y: y as f32,
        };
        orstream_proto::TrackFrame {
            stream_id: self.stream_id.clone(),
            case_id: self.case_id.clone(),
            session_epoch: self.epoch,
            seq: self.seq,
            capture_time_ns: self.ns,
            tracks: self
                .assigned
                .iter()
                .map(|a| orstream_proto::TrackedInstance {
                    track_id: a.track_id,
                    class_id: a.class_id,
                    label: a.label.clone(),
                    instance_index: a.instance_index,
                    centroid: Some(point(a.cx, a.cy)),
                    bbox: Some(orstream_proto::BBox {
                        x0: a.bbox[0] as f32,
                        y0: a.bbox[1] as f32,
                        x1: a.bbox[2] as f32,
                        y1: a.bbox[3] as f32,
                    }),
                    velocity: Some(point(a.vx, a.vy)),
                    score: a.score,
                })
                .collect(),
        }
    }
}

/// A closed gap.
#[derive(Debug, Clone, PartialEq)]
pub struct Gap {
    /// The stream whose frames are missing.
    pub stream_id: String,
    /// The case the stream was recording when the gap closed.
    pub case_id: String,
    /// What kind of gap.
    pub kind: GapKind,
    /// Unusable: the frames' epoch; missing: the epoch of the jump; discontinuity: the new
    /// epoch.
    pub epoch: u64,
    /// Unusable: first unusable frame; missing: first missing seq; discontinuity: the first
    /// frame after the gap.
    pub first_seq: u64,
    /// Unusable: last unusable frame; missing: last missing seq; discontinuity: = first_seq.
    pub last_seq: u64,
    /// When the stream stopped being usable (first unusable frame, or the last frame before
    /// the jump).
    pub start_ns: i64,
    /// When it was usable again (the next usable frame), or the last frame at the end.
    pub end_ns: i64,
    /// Frames inside the gap (unusable or missing); 0 for a discontinuity.
    pub frames: u64,
    /// Why, for people: statuses and counts, the seq range, or the epoch change.
    pub reason: String,
}

impl Gap {
    /// The id a replay gives again (from kind, stream, epoch and first seq): consumers
    /// deduplicate on it.
    pub fn event_id(&self) -> String {
        event_id(&[
            "gap",
            self.kind.as_str(),
            &self.stream_id,
            &self.epoch.to_string(),
            &self.first_seq.to_string(),
        ])
    }

    /// The contract's form; offsets from `case_start_ns`.
    pub fn to_event(&self, case_start_ns: i64) -> SurgicalEvent {
        SurgicalEvent {
            event_id: self.event_id(),
            case_id: self.case_id.clone(),
            stream_id: self.stream_id.clone(),
            kind: if self.kind == GapKind::OutOfBody {
                EventKind::OutOfBody
            } else {
                EventKind::Gap
            } as i32,
            class_id: 0,
            label: String::new(),
            category: Category::Unspecified as i32,
            start_time_ns: self.start_ns,
            end_time_ns: self.end_ns,
            start_offset_ns: self.start_ns.saturating_sub(case_start_ns),
            end_offset_ns: self.end_ns.saturating_sub(case_start_ns),
            peak_confidence: 0.0,
            mean_confidence: 0.0,
            session_epoch: self.epoch,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            model: None,
            gap_reason: self.reason.clone(),
            track_ids: Vec::new(),
            track: None,
        }
    }
}

/// Something wrong with the input that the record notes and goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnomalyKind {
    /// The first result of a stream is not seq 0: the record misses its beginning.
    UnknownStream,
    /// A result behind the stream's position; ignored.
    OutOfOrder,
    /// A seq jump within an epoch; recorded as a gap.
    MissingResults,
    /// seq 0 of an older epoch: taken as a restarted source.
    EpochReset,
    /// The message's schema version header is missing or not "1"; sent to the DLQ.
    SchemaVersion,
    /// The payload did not decode as the message; sent to the DLQ.
    Undecodable,
    /// The payload decoded but a value breaks the contract (a NaN score, a NUL in a label, too
    /// many instances); sent to the DLQ with the field and why.
    InvalidValue,
    /// A result behind the stream's position that names another case than the stream's: the
    /// same frame identity reused under another case (two sources on one stream id, a
    /// replayed topic), or a result of an earlier case come late. Ignored.
    CaseConflict,
}

impl AnomalyKind {
    /// Name stored in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::UnknownStream => "unknown_stream",
            AnomalyKind::OutOfOrder => "out_of_order",
            AnomalyKind::MissingResults => "missing_results",
            AnomalyKind::EpochReset => "epoch_reset",
            AnomalyKind::SchemaVersion => "schema_version",
            AnomalyKind::Undecodable => "undecodable",
            AnomalyKind::InvalidValue => "invalid_value",
            AnomalyKind::CaseConflict => "case_conflict",
        }
    }
}

/// An anomaly found by derivation (the caller adds where the message came from).
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    /// Which rule the input broke; the record stores it as [`AnomalyKind::as_str`].
    pub kind: AnomalyKind,
    /// The stream concerned.
    pub stream_id: String,
    /// What exactly, for people.
    pub detail: String,
}

/// What derivation makes of one result or stream event: a row to store or a message to
/// publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Derived {
    /// A presence interval closed.
    Presence(Presence),
    /// A gap closed.
    Gap(Gap),
    /// The input was odd.
    Anomaly(Anomaly),
    /// A tool track ended.
    Track(TrackRecord),
    /// Trajectory points kept (stream, case and points).
    TrackPoints(String, String, Vec<TrackPoint>),
    /// A frame's confirmed track assignments.
    Tracked(FrameTracks),
}

/// A deterministic id: the first 128 bits of SHA-256 over the parts, in hex.
pub fn event_id(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"orstream.event.v1");
    for part in parts {
        // Length-prefixed, so ("ab","c") and ("a","bc") differ.
        hasher.update((part.len() as u64).to_le_bytes());
        hasher.update(part.as_bytes());
    }
    let digest = hasher.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

impl StreamState {
    /// A fresh state for `stream_id`.
    pub fn new(stream_id: &str) -> Self {
        Self {
            stream_id: stream_id.to_owned(),
            ..Self::default()
        }
    }

    /// Intervals open right now, as presences marked `open` (for record views).
    pub fn open_presences(&self) -> Vec<Presence> {
        let Some(position) = self.position else {
            return Vec::new();
        };
        let model = self.model.clone().unwrap_or_default();
        self.classes
            .iter()
            .filter_map(|(class_id, track)| {
                track.open.as_ref().map(|open| {
                    let mut p = presence(self, *class_id, track, open, &model, position.epoch);
                    p.open = true;
                    p
                })
            })
            .collect()
    }

    /// Tracks live right now, as records marked `open` (for record views).
    pub fn open_tracks(&self) -> Vec<TrackRecord> {
        self.tracker
            .confirmed()
            .map(|t| TrackRecord {
                open: true,
                ..TrackRecord::of(self, t)
            })
            .collect()
    }

    /// Applies one result; returns what closed and what was odd.
    pub fn apply_result(&mut self, result: &FrameResult, rules: &Rules) -> Vec<Derived> {
        let mut out = Vec::new();
        let epoch = result.session_epoch;
        let seq = result.seq;
        let now = result.capture_time_ns;

        if let Some(last) = self.position {
            let behind = epoch < last.epoch || (epoch == last.epoch && seq <= last.seq);
            let reset = epoch < last.epoch && seq == 0;
            if behind && !reset && result.case_id != self.case_id {
                out.push(self.anomaly(
                    AnomalyKind::CaseConflict,
                    format!(
                        "result epoch {epoch} seq {seq} of case {:?} is behind epoch {} seq {} \
                         of case {:?}: a frame identity reused under another case (or a result of an \
                         earlier case come late); ignored",
                        result.case_id, last.epoch, last.seq, self.case_id
                    ),
                ));
                return out;
            }
            if behind && !reset {
                out.push(self.anomaly(
                    AnomalyKind::OutOfOrder,
                    format!(
                        "result epoch {epoch} seq {seq} after epoch {} seq {}; ignored",
                        last.epoch, last.seq
                    ),
                ));
                return out;
            }
            if reset {
                out.push(self.anomaly(
                    AnomalyKind::EpochReset,
                    format!(
                        "epoch went back from {} to {epoch}: taken as a restarted source",
                        last.epoch
                    ),
                ));
            }
            if result.case_id != self.case_id {
                // Intervals and gaps belong to one case; the next case starts afresh.
                self.close_all(last.capture_ns, &mut out);
                self.start_case(result);
            }
            if epoch != last.epoch {
                self.close_all(last.capture_ns, &mut out);
                out.push(Derived::Gap(Gap {
                    stream_id: self.stream_id.clone(),
                    case_id: self.case_id.clone(),
                    kind: GapKind::Discontinuity,
                    epoch,
                    first_seq: seq,
                    last_seq: seq,
                    start_ns: last.capture_ns,
                    end_ns: now.max(last.capture_ns),
                    frames: 0,
                    reason: format!("discontinuity: session epoch {} -> {epoch}", last.epoch),
                }));
                if seq != 0 {
                    out.push(self.anomaly(
                        AnomalyKind::MissingResults,
                        format!(
                            "epoch {epoch} starts at seq {seq}: seq 0..={} missing",
                            seq - 1
                        ),
                    ));
                }
                self.frames_accounted = self.frames_accounted.saturating_add(seq.saturating_add(1));
            } else {
                if seq > last.seq + 1 {
                    self.close_all(last.capture_ns, &mut out);
                    let (from, to) = (last.seq + 1, seq - 1);
                    out.push(Derived::Gap(Gap {
                        stream_id: self.stream_id.clone(),
                        case_id: self.case_id.clone(),
                        kind: GapKind::Missing,
                        epoch,
                        first_seq: from,
                        last_seq: to,
                        start_ns: last.capture_ns,
                        end_ns: now.max(last.capture_ns),
                        frames: to - from + 1,
                        reason: format!("missing results: seq {from}..={to}"),
                    }));
                    out.push(self.anomaly(
                        AnomalyKind::MissingResults,
                        format!("epoch {epoch}: seq {from}..={to} missing"),
                    ));
                }
                self.frames_accounted = self.frames_accounted.saturating_add(seq - last.seq);
            }
        } else {
            self.start_case(result);
            if seq != 0 {
                out.push(self.anomaly(
                    AnomalyKind::UnknownStream,
                    format!(
                        "first result of the stream is epoch {epoch} seq {seq}: \
                         earlier frames are not in the record"
                    ),
                ));
            }
            self.frames_accounted = self.frames_accounted.saturating_add(seq.saturating_add(1));
        }

        self.position = Some(Position {
            epoch,
            seq,
            capture_ns: now,
        });
        self.case_first_ns.get_or_insert(now);
        self.case_results += 1;

        if result.status == FrameStatus::Ok as i32 {
            self.apply_usable(result, rules, &mut out);
        } else {
            self.apply_unusable(result, &mut out);
        }
        // A StreamEnded from a previous life of the stream no longer applies to a result
        // beyond it; check_end then sees it fulfilled and closes at the right frame.
        self.check_end(&mut out);
        out
    }

    /// Applies a lifecycle event. Only `StreamEnded` matters to derivation (the rest is
    /// recorded by the caller); discontinuities are seen in the results' epochs.
    pub fn apply_stream_event(&mut self, event: &StreamEvent) -> Vec<Derived> {
        let mut out = Vec::new();
        if self.position.is_none() && self.case_id.is_empty() {
            self.case_id = event.case_id.clone();
        }
        if let Some(stream_event::Kind::Ended(ended)) = &event.kind {
            self.ended = Some(ended.frames_published);
            self.check_end(&mut out);
        }
        out
    }

    fn start_case(&mut self, result: &FrameResult) {
        self.case_id = result.case_id.clone();
        self.case_first_ns = None;
        self.case_results = 0;
    }

    fn anomaly(&self, kind: AnomalyKind, detail: String) -> Derived {
        Derived::Anomaly(Anomaly {
            kind,
            stream_id: self.stream_id.clone(),
            detail,
        })
    }

    fn check_end(&mut self, out: &mut Vec<Derived>) {
        if let Some(published) = self.ended
            && self.frames_accounted >= published
        {
            if let Some(last) = self.position {
                self.close_all(last.capture_ns, out);
            }
            self.ended = None;
        }
    }

    fn apply_usable(&mut self, result: &FrameResult, rules: &Rules, out: &mut Vec<Derived>) {
        let now = result.capture_time_ns;
        if let Some(gap) = self.gap.take() {
            out.push(Derived::Gap(self.unusable_gap(gap, now)));
        }
        let model = ModelKey::of(result.model.as_ref());
        if self.model.as_ref() != Some(&model) {
            // Another model's detections are another measurement: do not merge them.
            self.close_intervals(out);
            self.model = Some(model);
        }

        // Best score per class among the instances that count.
        let mut seen: BTreeMap<u32, (f32, &str, i32)> = BTreeMap::new();
        for instance in &result.instances {
            // A non-finite score is no sighting (the contract refuses it; the derivation takes
            // finite values only, whoever calls it).
            if !rules.categories.contains(&instance.category)
                || !instance.score.is_finite()
                || instance.score < rules.min_score
            {
                continue;
            }
            let entry = seen.entry(instance.class_id).or_insert((
                instance.score,
                &instance.label,
                instance.category,
            ));
            if instance.score > entry.0 {
                *entry = (instance.score, &instance.label, instance.category);
            }
        }

        let seq = result.seq;
        let epoch = result.session_epoch;
        let assigned = self.track_tools(result, rules, out);
        let mut closed = Vec::new();
        for (&class_id, &(score, label, category)) in &seen {
            let track = self.classes.entry(class_id).or_insert_with(|| ClassTrack {
                label: label.to_owned(),
                category,
                sightings: VecDeque::new(),
                open: None,
            });
            track.label = label.to_owned();
            track.category = category;
            if let Some(open) = &mut track.open {
                if now.saturating_sub(open.last_ns) <= rules.absent_after_ns {
                    open.last_seq = seq;
                    open.last_ns = now.max(open.last_ns);
                    open.frames_seen += 1;
                    open.peak = open.peak.max(score);
                    open.sum += f64::from(score);
                    continue;
                }
                // Silent for longer than absent_after although frames kept coming with
                // capture times that jumped: the old interval ended at its last sighting.
                if let Some(open) = track.open.take() {
                    closed.push((class_id, open));
                }
            }
            track.sightings.push_back(Sighting {
                seq,
                ns: now,
                score,
            });
            while track
                .sightings
                .front()
                .is_some_and(|s| s.seq.saturating_add(rules.window_frames) <= seq)
            {
                track.sightings.pop_front();
            }
            if track.sightings.len() >= rules.enter_frames
                && let Some(first) = track.sightings.front().copied()
            {
                let peak = track
                    .sightings
                    .iter()
                    .map(|s| s.score)
                    .fold(f32::MIN, f32::max);
                let sum = track.sightings.iter().map(|s| f64::from(s.score)).sum();
                track.open = Some(OpenInterval {
                    first_seq: first.seq,
                    start_ns: first.ns,
                    last_seq: seq,
                    last_ns: now.max(first.ns),
                    frames_seen: track.sightings.len() as u64,
                    peak,
                    sum,
                    track_ids: BTreeSet::new(),
                });
                track.sightings.clear();
            }
        }

        for (&class_id, track) in &mut self.classes {
            if seen.contains_key(&class_id) {
                continue;
            }
            if track
                .open
                .as_ref()
                .is_some_and(|open| now.saturating_sub(open.last_ns) > rules.absent_after_ns)
                && let Some(open) = track.open.take()
            {
                closed.push((class_id, open));
            }
            while track
                .sightings
                .front()
                .is_some_and(|s| s.seq.saturating_add(rules.window_frames) <= seq)
            {
                track.sightings.pop_front();
            }
        }
        for (class_id, track_id) in assigned {
            if let Some(open) = self
                .classes
                .get_mut(&class_id)
                .and_then(|c| c.open.as_mut())
            {
                open.track_ids.insert(track_id);
            }
        }
        for (class_id, open) in closed {
            if let Some(track) = self.classes.get(&class_id) {
                let model = self.model.clone().unwrap_or_default();
                out.push(Derived::Presence(presence(
                    self, class_id, track, &open, &model, epoch,
                )));
            }
        }
        self.classes
            .retain(|_, t| t.open.is_some() || !t.sightings.is_empty());
    }

    /// Runs the tracker over the frame's tool instances; returns the (class id, track id) of
    /// the confirmed assignments (published as [`Derived::Tracked`]).
    fn track_tools(
        &mut self,
        result: &FrameResult,
        rules: &Rules,
        out: &mut Vec<Derived>,
    ) -> Vec<(u32, u64)> {
        let tool = Category::Tool as i32;
        if !rules.tracking.enabled || !rules.categories.contains(&tool) {
            return Vec::new();
        }
        let observations = result
            .instances
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                i.category == tool && i.score.is_finite() && i.score >= rules.min_score
            })
            .filter_map(|(index, i)| Observation::of(index, i))
            .collect();
        let update = self.tracker.update(
            result.session_epoch,
            result.seq,
            result.capture_time_ns,
            observations,
            &rules.tracking,
        );
        self.emit_tracks(update.points, &update.ended, out);
        let ids = update
            .assigned
            .iter()
            .map(|a| (a.class_id, a.track_id))
            .collect();
        if !update.assigned.is_empty() {
            out.push(Derived::Tracked(FrameTracks {
                stream_id: self.stream_id.clone(),
                case_id: self.case_id.clone(),
                epoch: result.session_epoch,
                seq: result.seq,
                ns: result.capture_time_ns,
                assigned: update.assigned,
            }));
        }
        ids
    }

    /// Ends every track (see [`Tracker::end_all`]).
    fn end_tracks(&mut self, out: &mut Vec<Derived>) {
        let ended = self.tracker.end_all();
        self.emit_tracks(Vec::new(), &ended, out);
    }

    /// Outputs kept trajectory points and ended tracks, with each ended track's last point
    /// when it was not kept yet.
    fn emit_tracks(&self, mut points: Vec<TrackPoint>, ended: &[Track], out: &mut Vec<Derived>) {
        points.extend(ended.iter().filter_map(crate::track::final_point));
        if !points.is_empty() {
            out.push(Derived::TrackPoints(
                self.stream_id.clone(),
                self.case_id.clone(),
                points,
            ));
        }
        for track in ended {
            out.push(Derived::Track(TrackRecord::of(self, track)));
        }
    }

    fn apply_unusable(&mut self, result: &FrameResult, out: &mut Vec<Derived>) {
        let out_of_body = result.status == FrameStatus::Redacted as i32;
        let status = if out_of_body {
            redaction_reason(&result.status_detail).to_owned()
        } else {
            FrameStatus::name_of(result.status).to_owned()
        };
        let now = result.capture_time_ns;
        match &mut self.gap {
            Some(gap) if gap.epoch == result.session_epoch && gap.out_of_body == out_of_body => {
                gap.last_seq = result.seq;
                gap.last_ns = now.max(gap.last_ns);
                *gap.statuses.entry(status).or_default() += 1;
            }
            _ => {
                // A run of the other kind (withheld, or unusable) ends where this one begins.
                if let Some(gap) = self.gap.take() {
                    out.push(Derived::Gap(self.unusable_gap(gap, now)));
                }
                self.close_intervals(out);
                self.gap = Some(OpenGap {
                    epoch: result.session_epoch,
                    first_seq: result.seq,
                    last_seq: result.seq,
                    start_ns: now,
                    last_ns: now,
                    statuses: BTreeMap::from([(status, 1)]),
                    out_of_body,
                });
            }
        }
    }

    /// Closes every open interval at its last sighting, forgets the enter windows and ends
    /// the tracks.
    fn close_intervals(&mut self, out: &mut Vec<Derived>) {
        self.end_tracks(out);
        let Some(position) = self.position else {
            self.classes.clear();
            return;
        };
        let model = self.model.clone().unwrap_or_default();
        for (class_id, track) in &self.classes {
            if let Some(open) = &track.open {
                out.push(Derived::Presence(presence(
                    self,
                    *class_id,
                    track,
                    open,
                    &model,
                    position.epoch,
                )));
            }
        }
        self.classes.clear();
    }

    /// Closes intervals and an open gap (at `end_ns`, the last frame before the break).
    fn close_all(&mut self, end_ns: i64, out: &mut Vec<Derived>) {
        self.close_intervals(out);
        if let Some(gap) = self.gap.take() {
            out.push(Derived::Gap(self.unusable_gap(gap, end_ns)));
        }
    }

    fn unusable_gap(&self, gap: OpenGap, end_ns: i64) -> Gap {
        let reason = gap
            .statuses
            .iter()
            .map(|(status, n)| format!("{status} x{n}"))
            .collect::<Vec<_>>()
            .join(", ");
        Gap {
            stream_id: self.stream_id.clone(),
            case_id: self.case_id.clone(),
            kind: if gap.out_of_body {
                GapKind::OutOfBody
            } else {
                GapKind::Unusable
            },
            epoch: gap.epoch,
            first_seq: gap.first_seq,
            last_seq: gap.last_seq,
            start_ns: gap.start_ns,
            end_ns: end_ns.max(gap.last_ns),
            frames: gap.last_seq - gap.first_seq + 1,
            reason,
        }
    }
}

/// The privacy gate's reason in a REDACTED result's detail (`withheld by ingest's privacy
/// gate: OUT_OF_BODY: ...`, as infer writes it): `OUT_OF_BODY`, `MARGIN`,
/// `GATE_UNAVAILABLE`; `REDACTED` when the detail names none.
fn redaction_reason(detail: &str) -> &str {
    detail
        .split(": ")
        .nth(1)
        .filter(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
        .unwrap_or("REDACTED")
}

fn presence(
    state: &StreamState,
    class_id: u32,
    track: &ClassTrack,
    open: &OpenInterval,
    model: &ModelKey,
    epoch: u64,
) -> Presence {
    Presence {
        stream_id: state.stream_id.clone(),
        case_id: state.case_id.clone(),
        class_id,
        label: track.label.clone(),
        category: track.category,
        start_ns: open.start_ns,
        end_ns: open.last_ns.max(open.start_ns),
        epoch,
        first_seq: open.first_seq,
        last_seq: open.last_seq,
        frames_seen: open.frames_seen,
        peak: open.peak,
        mean: (open.sum / open.frames_seen.max(1) as f64) as f32,
        model: model.clone(),
        track_ids: open.track_ids.iter().copied().collect(),
        open: false,
    }
}

#[cfg(test)]
mod tests {
    use orstream_proto::{BBox, ClockSource, Instance, Point, StreamEnded};

    use super::*;

    const T0: i64 = 1_795_000_000_000_000_000;
    /// 30 fps.
    const FRAME_NS: i64 = 33_333_333;

    fn rules() -> Rules {
        Rules {
            enter_frames: 3,
            window_frames: 5,
            absent_after_ns: 200_000_000,
            min_score: 0.5,
            categories: BTreeSet::from([Category::Tool as i32, Category::Organ as i32]),
            tracking: TrackRules::default(),
        }
    }

    /// One frame of a script: which classes are seen (class id, score), or a status.
    #[derive(Clone)]
    enum F {
        See(&'static [(u32, f32)]),
        Status(FrameStatus),
    }

    fn result(epoch: u64, seq: u64, ns: i64, frame: &F) -> FrameResult {
        let (status, instances) = match frame {
            F::See(classes) => (
                FrameStatus::Ok,
                classes
                    .iter()
                    .map(|&(class_id, score)| Instance {
                        class_id,
                        label: format!("class-{class_id}"),
                        category: if class_id < 100 {
                            Category::Tool as i32
                        } else {
                            Category::Organ as i32
                        },
                        score,
                        // Each tool drifts right from its own place, one step per frame.
                        centroid: Some(Point {
                            x: 0.1 + 0.1 * (class_id % 8) as f32 + 0.002 * (seq % 100) as f32,
                            y: 0.5,
                        }),
                        bbox: Some(BBox {
                            x0: 0.05 + 0.1 * (class_id % 8) as f32 + 0.002 * (seq % 100) as f32,
                            y0: 0.45,
                            x1: 0.15 + 0.1 * (class_id % 8) as f32 + 0.002 * (seq % 100) as f32,
                            y1: 0.55,
                        }),
                        area: 0.01,
                        ..Instance::default()
                    })
                    .collect(),
            ),
            F::Status(s) => (*s, Vec::new()),
        };
        FrameResult {
            stream_id: "cam-1".into(),
            case_id: "case-1".into(),
            session_epoch: epoch,
            seq,
            capture_time_ns: ns,
            clock_source: ClockSource::Host as i32,
            status: status as i32,
            model: Some(ModelIdentity {
                name: "m".into(),
                version: "1".into(),
                digest: "sha256:00".into(),
            }),
            instances,
            ..FrameResult::default()
        }
    }

    /// Runs a script of frames in epoch 0 from seq 0, 30 fps; returns all outputs.
    fn run(state: &mut StreamState, frames: &[F]) -> Vec<Derived> {
        let rules = rules();
        let mut out = Vec::new();
        for (i, f) in frames.iter().enumerate() {
            let seq = i as u64;
            out.extend(state.apply_result(&result(0, seq, T0 + i as i64 * FRAME_NS, f), &rules));
        }
        out
    }

    fn presences(out: &[Derived]) -> Vec<(u32, u64, u64)> {
        out.iter()
            .filter_map(|o| match o {
                Derived::Presence(p) => Some((p.class_id, p.first_seq, p.last_seq)),
                _ => None,
            })
            .collect()
    }

    fn gaps(out: &[Derived]) -> Vec<(GapKind, u64, u64)> {
        out.iter()
            .filter_map(|o| match o {
                Derived::Gap(g) => Some((g.kind, g.first_seq, g.last_seq)),
                _ => None,
            })
            .collect()
    }

    const NONE: F = F::See(&[]);
    const G: F = F::See(&[(1, 0.9)]);

    fn end(state: &mut StreamState, published: u64) -> Vec<Derived> {
        state.apply_stream_event(&StreamEvent {
            stream_id: "cam-1".into(),
            case_id: "case-1".into(),
            kind: Some(stream_event::Kind::Ended(StreamEnded {
                frames_published: published,
                ..StreamEnded::default()
            })),
            ..StreamEvent::default()
        })
    }

    #[test]
    fn a_one_frame_flicker_is_never_an_event() {
        let mut state = StreamState::new("cam-1");
        let mut script = vec![NONE; 30];
        script[5] = G;
        script[12] = G;
        script[13] = NONE;
        script[20] = G;
        let mut out = run(&mut state, &script);
        out.extend(end(&mut state, 30));
        assert!(presences(&out).is_empty(), "{out:?}");
        // Two sightings in a window of five are not enough either.
        let mut state = StreamState::new("cam-1");
        let mut out = run(
            &mut state,
            &[NONE, G, NONE, G, NONE, NONE, NONE, NONE, NONE],
        );
        out.extend(end(&mut state, 9));
        assert!(presences(&out).is_empty(), "{out:?}");
    }

    #[test]
    fn enter_and_exit_are_exact_to_the_frame() {
        // Seen from seq 3 to seq 10 with one miss at seq 6; absent_after is 200 ms (6 frames).
        let mut script = vec![NONE; 3];
        script.extend([G, G, G, NONE, G, G, G, G]);
        script.extend(vec![NONE; 10]);
        let mut state = StreamState::new("cam-1");
        let out = run(&mut state, &script);
        assert_eq!(presences(&out), vec![(1, 3, 10)]);
        let Some(Derived::Presence(p)) = out.iter().find(|o| matches!(o, Derived::Presence(_)))
        else {
            unreachable!()
        };
        assert_eq!(p.start_ns, T0 + 3 * FRAME_NS);
        assert_eq!(p.end_ns, T0 + 10 * FRAME_NS);
        assert_eq!(p.frames_seen, 7);
        assert_eq!(p.label, "class-1");
    }

    #[test]
    fn k_of_n_starts_at_the_first_sighting_of_the_window() {
        // Sightings at 2, 4, 6: three in the window 2..=6 -> enters, starting at 2.
        let mut script = vec![NONE, NONE, G, NONE, G, NONE, G];
        script.extend(vec![NONE; 10]);
        let mut state = StreamState::new("cam-1");
        assert_eq!(presences(&run(&mut state, &script)), vec![(1, 2, 6)]);
        // Sightings at 0, 3, 6: never three within five frames.
        let mut script = vec![G, NONE, NONE, G, NONE, NONE, G];
        script.extend(vec![NONE; 10]);
        let mut state = StreamState::new("cam-1");
        let mut out = run(&mut state, &script);
        out.extend(end(&mut state, 17));
        assert!(presences(&out).is_empty());
    }

    #[test]
    fn confidence_peak_and_mean_cover_the_interval() {
        const A: F = F::See(&[(1, 0.6)]);
        const B: F = F::See(&[(1, 0.8), (1, 0.7)]);
        const C: F = F::See(&[(1, 1.0)]);
        let mut state = StreamState::new("cam-1");
        let mut out = run(&mut state, &[A, B, C, A]);
        out.extend(end(&mut state, 4));
        let Some(Derived::Presence(p)) = out.iter().find(|o| matches!(o, Derived::Presence(_)))
        else {
            panic!("{out:?}")
        };
        assert_eq!(p.peak, 1.0);
        assert!((p.mean - 0.75).abs() < 1e-6, "{}", p.mean);
        assert_eq!(p.model.version, "1");
    }

    #[test]
    fn low_scores_and_disabled_categories_do_not_count() {
        const WEAK: F = F::See(&[(1, 0.4)]);
        let mut state = StreamState::new("cam-1");
        let mut out = run(&mut state, &[WEAK, WEAK, WEAK, WEAK]);
        out.extend(end(&mut state, 4));
        assert!(presences(&out).is_empty());
        let mut rules = rules();
        rules.categories = [Category::Organ as i32].into();
        let mut state = StreamState::new("cam-1");
        let mut out = Vec::new();
        for seq in 0..4 {
            out.extend(state.apply_result(&result(0, seq, T0 + seq as i64 * FRAME_NS, &G), &rules));
        }
        assert!(state.classes.is_empty() && presences(&out).is_empty());
    }

    #[test]
    fn a_skipped_run_is_a_gap_and_splits_the_interval() {
        let stale = F::Status(FrameStatus::SkippedStale);
        let error = F::Status(FrameStatus::DecodeError);
        let mut script = vec![G; 6];
        script.extend([stale.clone(), stale, error]);
        script.extend(vec![G; 6]);
        let mut state = StreamState::new("cam-1");
        let mut out = run(&mut state, &script);
        out.extend(end(&mut state, script.len() as u64));
        assert_eq!(presences(&out), vec![(1, 0, 5), (1, 9, 14)]);
        assert_eq!(gaps(&out), vec![(GapKind::Unusable, 6, 8)]);
        let Some(Derived::Gap(gap)) = out.iter().find(|o| matches!(o, Derived::Gap(_))) else {
            unreachable!()
        };
        assert_eq!(gap.reason, "DECODE_ERROR x1, SKIPPED_STALE x2");
        assert_eq!(
            (gap.start_ns, gap.end_ns),
            (T0 + 6 * FRAME_NS, T0 + 9 * FRAME_NS)
        );
        assert_eq!(gap.frames, 3);
    }

    #[test]
    fn frames_the_privacy_gate_withheld_are_an_out_of_body_stretch_of_their_own() {
        let rules = rules();
        let withheld = |reason: &str| {
            format!("withheld by ingest's privacy gate: {reason}: p(out of body) 0.97")
        };
        let mut state = StreamState::new("cam-1");
        let mut out = Vec::new();
        for seq in 0..18u64 {
            let ns = T0 + seq as i64 * FRAME_NS;
            let mut r = match seq {
                6..=10 => result(0, seq, ns, &F::Status(FrameStatus::Redacted)),
                11 => result(0, seq, ns, &F::Status(FrameStatus::SkippedStale)),
                _ => result(0, seq, ns, &G),
            };
            r.status_detail = match seq {
                6 | 10 => withheld("MARGIN"),
                7..=9 => withheld("OUT_OF_BODY"),
                _ => r.status_detail,
            };
            out.extend(state.apply_result(&r, &rules));
        }
        out.extend(end(&mut state, 18));
        // The tool's interval ends where the camera left the body and starts again after.
        assert_eq!(presences(&out), vec![(1, 0, 5), (1, 12, 17)]);
        // The withheld run and the stale frame after it are two gaps of their own kinds.
        assert_eq!(
            gaps(&out),
            vec![(GapKind::OutOfBody, 6, 10), (GapKind::Unusable, 11, 11)]
        );
        let Some(Derived::Gap(outside)) = out.iter().find(|o| matches!(o, Derived::Gap(_))) else {
            unreachable!()
        };
        assert_eq!(outside.reason, "MARGIN x2, OUT_OF_BODY x3");
        assert_eq!(
            (outside.start_ns, outside.end_ns),
            (T0 + 6 * FRAME_NS, T0 + 11 * FRAME_NS)
        );
        assert_eq!(redaction_reason("something else"), "REDACTED");
        assert_eq!(redaction_reason("withheld: lower: x"), "REDACTED");
    }

    #[test]
    fn a_discontinuity_is_a_gap_and_splits_the_interval() {
        let rules = rules();
        let mut state = StreamState::new("cam-1");
        let mut out = Vec::new();
        for seq in 0..5 {
            out.extend(state.apply_result(&result(1, seq, T0 + seq as i64 * FRAME_NS, &G), &rules));
        }
        let resume = T0 + 10 * 1_000_000_000;
        for seq in 0..5 {
            out.extend(
                state.apply_result(&result(2, seq, resume + seq as i64 * FRAME_NS, &G), &rules),
            );
        }
        out.extend(end(&mut state, 10));
        assert_eq!(presences(&out), vec![(1, 0, 4), (1, 0, 4)]);
        assert_eq!(gaps(&out), vec![(GapKind::Discontinuity, 0, 0)]);
        let epochs: Vec<u64> = out
            .iter()
            .filter_map(|o| match o {
                Derived::Presence(p) => Some(p.epoch),
                _ => None,
            })
            .collect();
        assert_eq!(epochs, vec![1, 2], "an interval stays within one epoch");
    }

    #[test]
    fn missing_results_are_a_gap_and_an_anomaly() {
        let rules = rules();
        let mut state = StreamState::new("cam-1");
        let mut out = Vec::new();
        for seq in (0..5).chain(8..13) {
            out.extend(state.apply_result(&result(0, seq, T0 + seq as i64 * FRAME_NS, &G), &rules));
        }
        out.extend(end(&mut state, 13));
        assert_eq!(presences(&out), vec![(1, 0, 4), (1, 8, 12)]);
        assert_eq!(gaps(&out), vec![(GapKind::Missing, 5, 7)]);
        assert!(out.iter().any(|o| matches!(o,
            Derived::Anomaly(a) if a.kind == AnomalyKind::MissingResults)));
    }

    #[test]
    fn out_of_order_results_are_anomalies_and_change_nothing() {
        let rules = rules();
        let mut state = StreamState::new("cam-1");
        run(&mut state, &[G, G, G, G]);
        let before = state.clone();
        let out = state.apply_result(&result(0, 2, T0, &G), &rules);
        assert!(matches!(&out[..], [Derived::Anomaly(a)] if a.kind == AnomalyKind::OutOfOrder));
        assert_eq!(state, before);
    }

    #[test]
    fn a_stream_first_seen_mid_way_is_an_unknown_stream_anomaly() {
        let mut state = StreamState::new("cam-1");
        let out = state.apply_result(&result(0, 40, T0, &G), &rules());
        assert!(matches!(&out[..], [Derived::Anomaly(a)] if a.kind == AnomalyKind::UnknownStream));
        assert_eq!(state.frames_accounted, 41);
    }

    #[test]
    fn stream_end_closes_open_intervals_once_every_result_is_in() {
        let mut state = StreamState::new("cam-1");
        // The end arrives (other topic) before the last two results.
        run(&mut state, &[G, G, G, G]);
        assert!(end(&mut state, 6).is_empty());
        let rules = rules();
        let out = state.apply_result(&result(0, 4, T0 + 4 * FRAME_NS, &G), &rules);
        assert!(presences(&out).is_empty());
        let out = state.apply_result(&result(0, 5, T0 + 5 * FRAME_NS, &G), &rules);
        assert_eq!(presences(&out), vec![(1, 0, 5)]);
        assert!(state.classes.is_empty() && state.ended.is_none());
    }

    #[test]
    fn a_model_change_closes_intervals_without_a_gap() {
        let rules = rules();
        let mut state = StreamState::new("cam-1");
        let mut out = run(&mut state, &[G, G, G, G]);
        let mut r = result(0, 4, T0 + 4 * FRAME_NS, &G);
        r.model = Some(ModelIdentity {
            name: "m".into(),
            version: "2".into(),
            digest: "sha256:01".into(),
        });
        out.extend(state.apply_result(&r, &rules));
        assert_eq!(presences(&out), vec![(1, 0, 3)]);
        assert!(gaps(&out).is_empty());
    }

    #[test]
    fn several_classes_are_tracked_independently() {
        const BOTH: F = F::See(&[(1, 0.9), (101, 0.8)]);
        const ORGAN: F = F::See(&[(101, 0.8)]);
        let mut script = vec![
            BOTH, BOTH, BOTH, ORGAN, ORGAN, ORGAN, ORGAN, ORGAN, ORGAN, ORGAN,
        ];
        script.extend(vec![NONE; 8]);
        let mut state = StreamState::new("cam-1");
        let out = run(&mut state, &script);
        assert_eq!(presences(&out), vec![(1, 0, 2), (101, 0, 9)]);
    }

    fn scripted(n: u64) -> Vec<FrameResult> {
        // A deterministic pseudo-random mix of sightings, flickers, skips and a reconnect.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut out = Vec::new();
        let mut epoch = 0;
        let mut seq = 0;
        for i in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i == n / 2 {
                epoch += 1;
                seq = 0;
            }
            let frame = match x % 10 {
                0 => F::Status(FrameStatus::SkippedStale),
                1..=2 => F::See(&[]),
                3..=5 => F::See(&[(1, 0.9)]),
                6..=7 => F::See(&[(1, 0.7), (101, 0.6)]),
                _ => F::See(&[(101, 0.95), (2, 0.3)]),
            };
            out.push(result(epoch, seq, T0 + i as i64 * FRAME_NS, &frame));
            seq += 1;
        }
        out
    }

    /// (track id, first seq, last seq, frames seen) of the tracks that ended.
    fn tracks(out: &[Derived]) -> Vec<(u64, u64, u64, u64)> {
        out.iter()
            .filter_map(|o| match o {
                Derived::Track(t) => Some((
                    t.motion.track_id,
                    t.first_seq,
                    t.last_seq,
                    t.motion.frames_seen,
                )),
                _ => None,
            })
            .collect()
    }

    fn interval_tracks(out: &[Derived]) -> Vec<(u32, Vec<u64>)> {
        out.iter()
            .filter_map(|o| match o {
                Derived::Presence(p) => Some((p.class_id, p.track_ids.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn tool_intervals_name_their_tracks_and_organs_have_none() {
        let mut state = StreamState::new("cam-1");
        let mut out = run(&mut state, &vec![F::See(&[(1, 0.9), (101, 0.9)]); 10]);
        // Confirmed at the third frame, from which every frame publishes its assignment.
        let tracked: Vec<u64> = out
            .iter()
            .filter_map(|o| match o {
                Derived::Tracked(f) => Some(f.seq),
                _ => None,
            })
            .collect();
        assert_eq!(tracked, (2..10).collect::<Vec<_>>());
        assert_eq!(state.open_tracks().len(), 1);
        out.extend(end(&mut state, 10));
        assert_eq!(tracks(&out), vec![(1, 0, 9, 10)]);
        assert_eq!(interval_tracks(&out), vec![(1, vec![1]), (101, vec![])]);
        let Some(Derived::Track(t)) = out.iter().find(|o| matches!(o, Derived::Track(_))) else {
            unreachable!()
        };
        // 0.002 per frame at 30 fps: 0.018 in 9 steps, 0.06 per second.
        assert!((t.motion.path_length - 0.018).abs() < 0.018 * 0.05, "{t:?}");
        let event = t.to_event(T0);
        assert_eq!(event.kind, EventKind::Track as i32);
        assert_eq!(event.track.as_ref().map(|m| m.track_id), Some(1));
        orstream_proto::decode::<SurgicalEvent>(&orstream_proto::encode(&event)).unwrap();
    }

    #[test]
    fn a_discontinuity_ends_the_tracks_and_the_next_epoch_starts_new_ones() {
        let rules = rules();
        let mut state = StreamState::new("cam-1");
        let mut out = Vec::new();
        for seq in 0..5 {
            out.extend(state.apply_result(&result(1, seq, T0 + seq as i64 * FRAME_NS, &G), &rules));
        }
        // Back after 100 ms, at the same place: still a new track, never carried over.
        let resume = T0 + 5 * FRAME_NS;
        for seq in 0..5 {
            out.extend(
                state.apply_result(&result(2, seq, resume + seq as i64 * FRAME_NS, &G), &rules),
            );
        }
        out.extend(end(&mut state, 10));
        assert_eq!(tracks(&out), vec![(1, 0, 4, 5), (2, 0, 4, 5)]);
        assert_eq!(interval_tracks(&out), vec![(1, vec![1]), (1, vec![2])]);
    }

    #[test]
    fn a_skipped_frame_ends_the_tracks_like_the_intervals() {
        let mut state = StreamState::new("cam-1");
        let mut frames = vec![G; 4];
        frames.push(F::Status(FrameStatus::SkippedOverload));
        frames.extend(vec![G; 4]);
        let mut out = run(&mut state, &frames);
        out.extend(end(&mut state, 9));
        assert_eq!(tracks(&out), vec![(1, 0, 3, 4), (2, 5, 8, 4)]);
    }

    #[test]
    fn replaying_the_same_input_gives_identical_outputs_and_state() {
        let rules = rules();
        let input = scripted(2_000);
        let mut a = StreamState::new("cam-1");
        let out_a: Vec<Derived> = input
            .iter()
            .flat_map(|r| a.apply_result(r, &rules))
            .collect();
        let mut b = StreamState::new("cam-1");
        let out_b: Vec<Derived> = input
            .iter()
            .flat_map(|r| b.apply_result(r, &rules))
            .collect();
        assert_eq!(out_a, out_b);
        assert_eq!(a, b);
        assert!(
            presences(&out_a).len() > 10,
            "the script exercises intervals"
        );
        assert!(gaps(&out_a).len() > 10, "the script exercises gaps");
    }

    #[test]
    fn resuming_from_a_stored_state_gives_the_same_outputs() {
        // What the sink does after a crash: the state goes through JSON at arbitrary points.
        let rules = rules();
        let input = scripted(1_500);
        let mut whole = StreamState::new("cam-1");
        let expected: Vec<Derived> = input
            .iter()
            .flat_map(|r| whole.apply_result(r, &rules))
            .collect();
        let mut state = StreamState::new("cam-1");
        let mut got = Vec::new();
        for (i, r) in input.iter().enumerate() {
            if i % 37 == 0 {
                let json = serde_json::to_string(&state).unwrap();
                state = serde_json::from_str(&json).unwrap();
            }
            got.extend(state.apply_result(r, &rules));
        }
        assert_eq!(got, expected);
        assert_eq!(state, whole);
    }

    #[test]
    fn event_ids_are_deterministic_and_distinct() {
        let a = event_id(&["presence", "cam-1", "0", "1", "3"]);
        assert_eq!(a, event_id(&["presence", "cam-1", "0", "1", "3"]));
        assert_ne!(a, event_id(&["presence", "cam-1", "0", "13", ""]));
        assert_eq!(a.len(), 32);
    }
}
