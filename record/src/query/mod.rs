//! The record's views, read back from a [`Store`]: the cases, a case's timeline (presence
//! intervals, gaps, streams, tool tracks with their sampled speed), per-tool usage and motion
//! (`totals`), and the accounting of every frame (`accounting`). Reads go through the typed
//! rows of [`crate::schema`], so no view knows a column by its position.
//!
//! Track motion is in the tracker's units: positions are normalized image coordinates
//! (x / width, y / height), so a path of 1.0 is one frame width (or height) travelled, and
//! speeds are those units per second.

mod accounting;
mod totals;

use std::collections::BTreeMap;

use serde::Serialize;

pub use accounting::{StreamAccounting, accounting};
pub use totals::{motion, usage};

use crate::error::StoreError;
use crate::schema::{
    CaseCameraRow, CaseRoomRow, CaseRow, DerivationState, EventRow, GapKind, GapRow,
    StreamEventRow, StreamRow, Table, TrackPointRow, TrackRow,
};
use crate::store::{Store, Value};

/// One case of the record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseSummary {
    /// The case.
    pub case_id: String,
    /// Capture time of its first frame (UTC ns); a room's case with no frame stored yet:
    /// when it was started.
    pub started_ns: i64,
    /// Capture time of its last frame so far (UTC ns).
    pub last_frame_ns: i64,
    /// Streams that delivered results for it.
    pub streams: u64,
    /// Closed presence intervals.
    pub events: u64,
    /// Closed gaps.
    pub gaps: u64,
    /// The operating room, for a case started in one through ingest (empty otherwise).
    pub room_id: String,
    /// When the room's case was started and ended (UTC ns); None when not (yet) known.
    pub opened_ns: Option<i64>,
    /// See `opened_ns`; None while the case is open.
    pub closed_ns: Option<i64>,
    /// The cameras that served it: a room's case's cameras, else the streams with results.
    pub cameras: Vec<String>,
    /// Every stream's accounting complete ([`accounting`]), an open room case never.
    pub complete: bool,
}

impl CaseSummary {
    /// A case starting at `started_ns`, nothing counted yet.
    fn empty(case_id: String, started_ns: i64) -> Self {
        Self {
            case_id,
            started_ns,
            last_frame_ns: started_ns,
            streams: 0,
            events: 0,
            gaps: 0,
            room_id: String::new(),
            opened_ns: None,
            closed_ns: None,
            cameras: Vec::new(),
            complete: false,
        }
    }
}

/// A stream of a case.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamSummary {
    /// The stream.
    pub stream_id: String,
    /// Capture time of its first frame in the case.
    pub first_frame_ns: i64,
    /// Capture time of its last frame in the case so far.
    pub last_frame_ns: i64,
    /// Results stored for it in the case.
    pub results: u64,
}

/// A presence interval on the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEvent {
    /// Deterministic id (as published on the events topic).
    pub event_id: String,
    /// The stream.
    pub stream_id: String,
    /// Class id from the model card.
    pub class_id: u32,
    /// Class label.
    pub label: String,
    /// tool, organ, ...
    pub category: String,
    /// UTC ns of the first frame that saw it.
    pub start_ns: i64,
    /// UTC ns of the last frame that saw it.
    pub end_ns: i64,
    /// Offset of the start from the case start.
    pub start_offset_ns: i64,
    /// Offset of the end from the case start.
    pub end_offset_ns: i64,
    /// Best score.
    pub peak_confidence: f64,
    /// Mean score over the frames that saw it.
    pub mean_confidence: f64,
    /// Frames that saw it.
    pub frames_seen: u64,
    /// Session epoch of the frames.
    pub session_epoch: u64,
    /// First frame that saw it.
    pub first_seq: u64,
    /// Last frame that saw it.
    pub last_seq: u64,
    /// Model version.
    pub model_version: String,
    /// Tool tracks seen in the interval, ascending (empty for organs and untracked tools).
    pub track_ids: Vec<u64>,
    /// Still open: the class is visible as of the stream's last result.
    pub open: bool,
}

/// One sampled point of a track's trajectory.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrackSample {
    /// Offset of its frame from the case start.
    pub offset_ns: i64,
    /// Filtered centroid, x / width.
    pub cx: f64,
    /// Filtered centroid, y / height.
    pub cy: f64,
    /// Filtered speed (frame units per second).
    pub speed: f64,
}

/// One tool instance followed over time on one stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineTrack {
    /// Deterministic id (as published on the events topic).
    pub event_id: String,
    /// The stream.
    pub stream_id: String,
    /// Per-stream track id (from 1).
    pub track_id: u64,
    /// Class id from the model card.
    pub class_id: u32,
    /// Tool label.
    pub label: String,
    /// UTC ns of its first assignment.
    pub start_ns: i64,
    /// UTC ns of its last assignment.
    pub end_ns: i64,
    /// Offset of the start from the case start.
    pub start_offset_ns: i64,
    /// Offset of the end from the case start.
    pub end_offset_ns: i64,
    /// Frames assigned to it.
    pub frames_seen: u64,
    /// Distance travelled by the filtered centroid (frame units).
    pub path_length: f64,
    /// Path over the time from the first to the last assignment (frame units per second).
    pub mean_speed: f64,
    /// Highest filtered speed (frame units per second).
    pub peak_speed: f64,
    /// Time spent under the idle speed (ns).
    pub idle_ns: i64,
    /// Times it came back after being unseen.
    pub reentries: u64,
    /// Best score of its instances.
    pub peak_confidence: f64,
    /// Session epoch of its frames.
    pub session_epoch: u64,
    /// First assigned frame.
    pub first_seq: u64,
    /// Last assigned frame.
    pub last_seq: u64,
    /// Still live as of the stream's last result (figures so far).
    pub open: bool,
    /// Its sampled trajectory, in frame order.
    pub points: Vec<TrackSample>,
}

/// A gap on the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineGap {
    /// Deterministic id.
    pub event_id: String,
    /// The stream.
    pub stream_id: String,
    /// unusable, discontinuity, missing or out_of_body (the privacy gate withheld the frames).
    pub kind: String,
    /// UTC ns of the start.
    pub start_ns: i64,
    /// UTC ns of the end.
    pub end_ns: i64,
    /// Offset of the start from the case start.
    pub start_offset_ns: i64,
    /// Offset of the end from the case start.
    pub end_offset_ns: i64,
    /// Frames inside the gap.
    pub frames: u64,
    /// Why (with the source's reason for a discontinuity, when it reported one).
    pub reason: String,
}

/// A case's timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timeline {
    /// The case.
    pub case_id: String,
    /// UTC ns of its first frame; a room's case with no frame stored yet: when it was
    /// started.
    pub started_ns: i64,
    /// UTC ns of its last frame so far.
    pub last_frame_ns: i64,
    /// Every stream that stored results in the case, with the span they cover.
    pub streams: Vec<StreamSummary>,
    /// Presence intervals by start.
    pub events: Vec<TimelineEvent>,
    /// Gaps by start.
    pub gaps: Vec<TimelineGap>,
    /// Tool tracks by start, stream and id.
    pub tracks: Vec<TimelineTrack>,
}

/// How much one tool or organ was visible during a case.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Usage {
    /// Class label.
    pub label: String,
    /// tool, organ, ...
    pub category: String,
    /// Presence intervals (appearances), over all streams.
    pub appearances: u64,
    /// Time visible: the union of its intervals over all streams, in ns.
    pub visible_ns: i64,
    /// `visible_ns` over the case's duration (0..=1).
    pub share: f64,
    /// Offset of its first appearance.
    pub first_offset_ns: i64,
    /// Offset of the end of its last appearance.
    pub last_offset_ns: i64,
    /// Best score over all intervals.
    pub peak_confidence: f64,
}

/// How one tool moved during a case, over all its tracks on all streams.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolMotion {
    /// Tool label.
    pub label: String,
    /// Tracks of it.
    pub tracks: u64,
    /// Time tracked: the sum of its tracks' first-to-last-assignment spans, in ns.
    pub tracked_ns: i64,
    /// Total distance travelled (frame units).
    pub path_length: f64,
    /// `path_length` over `tracked_ns` (frame units per second).
    pub mean_speed: f64,
    /// Highest speed of any of its tracks (frame units per second).
    pub peak_speed: f64,
    /// Time idle, in ns.
    pub idle_ns: i64,
    /// Re-entries over all its tracks.
    pub reentries: u64,
}

/// Every case, newest first, with its room, cameras and whether its accounting is complete.
pub fn cases<S: DerivationState>(store: &mut Store) -> Result<Vec<CaseSummary>, StoreError> {
    let mut out = case_list(store)?;
    for case in &mut out {
        settle::<S>(store, case)?;
    }
    Ok(out)
}

/// One case as [`cases`] lists it; None for an unknown case. Only its own accounting is read.
pub fn case<S: DerivationState>(
    store: &mut Store,
    case_id: &str,
) -> Result<Option<CaseSummary>, StoreError> {
    let Some(mut case) = case_list(store)?.into_iter().find(|c| c.case_id == case_id) else {
        return Ok(None);
    };
    settle::<S>(store, &mut case)?;
    Ok(Some(case))
}

/// Fills `complete` of a case of [`case_list`]: the room closed it (or it has no room) and
/// every stream's accounting is complete. One accounting read per case: call it for the
/// cases shown, not for every case of a long record.
pub fn settle<S: DerivationState>(
    store: &mut Store,
    case: &mut CaseSummary,
) -> Result<(), StoreError> {
    let streams = accounting::accounting::<S>(store, &case.case_id)?;
    let room_open = !case.room_id.is_empty() && case.closed_ns.is_none();
    case.complete = !room_open && !streams.is_empty() && streams.iter().all(|s| s.complete);
    Ok(())
}

/// Every case, newest first, as [`cases`] lists them but with `complete` not yet known
/// (false; [`settle`] fills it): a fixed number of queries however many cases there are.
pub fn case_list(store: &mut Store) -> Result<Vec<CaseSummary>, StoreError> {
    let rows: Vec<CaseRow> =
        store.rows(&CaseRow::select("ORDER BY started_ns DESC, case_id"), &[])?;
    let mut out: Vec<CaseSummary> = rows
        .into_iter()
        .map(|r| CaseSummary::empty(r.case_id, r.started_ns))
        .collect();
    let mut index: BTreeMap<String, usize> = out
        .iter()
        .enumerate()
        .map(|(i, c)| (c.case_id.clone(), i))
        .collect();
    let streams: Vec<StreamRow> = store.rows(&StreamRow::select(""), &[])?;
    for r in streams {
        if let Some(&i) = index.get(&r.case_id) {
            out[i].streams += 1;
            out[i].last_frame_ns = out[i].last_frame_ns.max(r.last_frame_ns);
            out[i].cameras.push(r.stream_id);
        }
    }
    // A room's case is listed from its start on, before any frame of it is stored.
    let rooms: Vec<CaseRoomRow> = store.rows(&CaseRoomRow::select(""), &[])?;
    for r in rooms {
        let i = *index.entry(r.case_id.clone()).or_insert_with(|| {
            out.push(CaseSummary::empty(r.case_id.clone(), r.started_ns()));
            out.len() - 1
        });
        out[i].room_id = r.room_id;
        out[i].opened_ns = r.opened_ns;
        out[i].closed_ns = r.closed_ns;
    }
    let cameras: Vec<CaseCameraRow> = store.rows(&CaseCameraRow::select(""), &[])?;
    for r in cameras {
        if let Some(&i) = index.get(&r.case_id) {
            out[i].cameras.push(r.stream_id);
        }
    }
    for (table, is_events) in [(EventRow::TABLE, true), (GapRow::TABLE, false)] {
        let counts: Vec<CaseCount> = store.rows(
            &format!("SELECT case_id, COUNT(*) FROM {table} GROUP BY case_id"),
            &[],
        )?;
        for r in counts {
            if let Some(&i) = index.get(&r.case_id) {
                if is_events {
                    out[i].events = r.count;
                } else {
                    out[i].gaps = r.count;
                }
            }
        }
    }
    for case in &mut out {
        case.cameras.sort();
        case.cameras.dedup();
    }
    out.sort_by(|a, b| {
        b.started_ns
            .cmp(&a.started_ns)
            .then_with(|| a.case_id.cmp(&b.case_id))
    });
    Ok(out)
}

crate::schema::row! {
    /// Rows of a table per case.
    CaseCount {
        /// The case the rows belong to.
        case_id: String,
        /// How many rows of the table it has.
        count: u64,
    }
}

/// A case's timeline, with intervals still open marked `open` (read from the stored
/// derivation states `S`); None for an unknown case.
pub fn timeline<S: DerivationState>(
    store: &mut Store,
    case_id: &str,
) -> Result<Option<Timeline>, StoreError> {
    // A room's case has a timeline (an empty one) from its start on, as it is listed.
    let started_ns = match store.case_start(case_id)? {
        Some(start) => start,
        None => match store.case_room(case_id)? {
            Some(room) => room.started_ns(),
            None => return Ok(None),
        },
    };
    let param = [Value::from(case_id)];
    let streams: Vec<StreamSummary> = store
        .rows::<StreamRow>(
            &StreamRow::select("WHERE case_id = $1 ORDER BY stream_id"),
            &param,
        )?
        .into_iter()
        .map(|r| StreamSummary {
            stream_id: r.stream_id,
            first_frame_ns: r.first_frame_ns,
            last_frame_ns: r.last_frame_ns,
            results: r.results,
        })
        .collect();
    let last_frame_ns = streams
        .iter()
        .map(|s| s.last_frame_ns)
        .max()
        .unwrap_or(started_ns);
    let states: Vec<S> = store.states_of_case(case_id)?;
    let stored: Vec<EventRow> = store.rows(&EventRow::select("WHERE case_id = $1"), &param)?;
    let open = states.iter().flat_map(DerivationState::open_events);
    let mut events: Vec<TimelineEvent> = stored
        .into_iter()
        .map(|r| TimelineEvent::of(r, started_ns, false))
        .chain(open.map(|r| TimelineEvent::of(r, started_ns, true)))
        .collect();
    events.sort_by(|a, b| {
        (a.start_ns, &a.stream_id, a.class_id).cmp(&(b.start_ns, &b.stream_id, b.class_id))
    });
    let gaps = gaps(store, case_id, started_ns)?;
    let tracks = tracks(store, case_id, started_ns, &states)?;
    Ok(Some(Timeline {
        case_id: case_id.to_owned(),
        started_ns,
        last_frame_ns,
        streams,
        events,
        gaps,
        tracks,
    }))
}

impl TimelineEvent {
    fn of(r: EventRow, started_ns: i64, open: bool) -> Self {
        Self {
            event_id: r.event_id,
            stream_id: r.stream_id,
            class_id: r.class_id,
            label: r.label,
            category: r.category,
            start_ns: r.start_ns,
            end_ns: r.end_ns,
            start_offset_ns: r.start_ns - started_ns,
            end_offset_ns: r.end_ns - started_ns,
            peak_confidence: r.peak_confidence,
            mean_confidence: r.mean_confidence,
            frames_seen: r.frames_seen,
            session_epoch: r.session_epoch,
            first_seq: r.first_seq,
            last_seq: r.last_seq,
            model_version: r.model_version,
            track_ids: parse_track_ids(&r.track_ids),
            open,
        }
    }
}

/// A case's gaps by start, a discontinuity's reason completed with the source's own.
fn gaps(store: &mut Store, case_id: &str, started_ns: i64) -> Result<Vec<TimelineGap>, StoreError> {
    let param = [Value::from(case_id)];
    // A discontinuity's reason as the source reported it (stream_events), keyed by the
    // stream and the new epoch.
    let mut reported: BTreeMap<(String, u64), String> = BTreeMap::new();
    let discontinuities: Vec<StreamEventRow> = store.rows(
        &StreamEventRow::select("WHERE case_id = $1 AND kind = 'discontinuity'"),
        &param,
    )?;
    for r in discontinuities {
        let reason = serde_json::from_str::<serde_json::Value>(&r.detail)
            .ok()
            .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
            .unwrap_or_default();
        if !reason.is_empty() {
            reported.insert((r.stream_id, r.session_epoch), reason);
        }
    }
    let mut gaps: Vec<TimelineGap> = store
        .rows::<GapRow>(&GapRow::select("WHERE case_id = $1"), &param)?
        .into_iter()
        .map(|r| {
            let mut reason = r.reason;
            if GapKind::parse(&r.kind) == Some(GapKind::Discontinuity)
                && let Some(source) = reported.get(&(r.stream_id.clone(), r.session_epoch))
            {
                reason = format!("{reason} ({source})");
            }
            TimelineGap {
                event_id: r.event_id,
                stream_id: r.stream_id,
                kind: r.kind,
                start_ns: r.start_ns,
                end_ns: r.end_ns,
                start_offset_ns: r.start_ns - started_ns,
                end_offset_ns: r.end_ns - started_ns,
                frames: r.frames,
                reason,
            }
        })
        .collect();
    gaps.sort_by(|a, b| (a.start_ns, &a.stream_id).cmp(&(b.start_ns, &b.stream_id)));
    Ok(gaps)
}

/// `events.track_ids`: ascending ids, space-separated.
fn parse_track_ids(text: &str) -> Vec<u64> {
    text.split_whitespace()
        .filter_map(|id| id.parse().ok())
        .collect()
}

/// A case's tracks: the ended ones from the record, the live ones from the derivation states,
/// each with the trajectory points stored so far.
fn tracks<S: DerivationState>(
    store: &mut Store,
    case_id: &str,
    started_ns: i64,
    states: &[S],
) -> Result<Vec<TimelineTrack>, StoreError> {
    let param = [Value::from(case_id)];
    let mut points: BTreeMap<(String, u64), Vec<TrackSample>> = BTreeMap::new();
    let stored_points: Vec<TrackPointRow> = store.rows(
        &TrackPointRow::select("WHERE case_id = $1 ORDER BY stream_id, track_id, seq"),
        &param,
    )?;
    for r in stored_points {
        points
            .entry((r.stream_id, r.track_id))
            .or_default()
            .push(TrackSample {
                offset_ns: r.time_ns - started_ns,
                cx: r.cx,
                cy: r.cy,
                speed: r.speed,
            });
    }
    let mut tracks: Vec<TimelineTrack> = Vec::new();
    let stored: Vec<TrackRow> = store.rows(&TrackRow::select("WHERE case_id = $1"), &param)?;
    for r in stored {
        tracks.push(TimelineTrack::of(r, started_ns, false, &mut points));
    }
    for r in states.iter().flat_map(DerivationState::open_tracks) {
        // A track is live or ended, never both; should a state lag the record, the
        // ended row wins.
        if tracks
            .iter()
            .any(|c| c.stream_id == r.stream_id && c.track_id == r.track_id)
        {
            continue;
        }
        tracks.push(TimelineTrack::of(r, started_ns, true, &mut points));
    }
    tracks.sort_by(|a, b| {
        (a.start_ns, &a.stream_id, a.track_id).cmp(&(b.start_ns, &b.stream_id, b.track_id))
    });
    Ok(tracks)
}

impl TimelineTrack {
    /// The track of `r`, taking its points from `points`.
    fn of(
        r: TrackRow,
        started_ns: i64,
        open: bool,
        points: &mut BTreeMap<(String, u64), Vec<TrackSample>>,
    ) -> Self {
        Self {
            points: points
                .remove(&(r.stream_id.clone(), r.track_id))
                .unwrap_or_default(),
            event_id: r.event_id,
            stream_id: r.stream_id,
            track_id: r.track_id,
            class_id: r.class_id,
            label: r.label,
            start_ns: r.start_ns,
            end_ns: r.end_ns,
            start_offset_ns: r.start_ns - started_ns,
            end_offset_ns: r.end_ns - started_ns,
            frames_seen: r.frames_seen,
            path_length: r.path_length,
            mean_speed: r.mean_speed,
            peak_speed: r.peak_speed,
            idle_ns: r.idle_ns,
            reentries: r.reentries,
            peak_confidence: r.peak_confidence,
            session_epoch: r.session_epoch,
            first_seq: r.first_seq,
            last_seq: r.last_seq,
            open,
        }
    }
}

/// Timelines for the unit tests of the views built on them.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    pub(crate) fn event(
        label: &str,
        category: &str,
        stream: &str,
        start_s: i64,
        end_s: i64,
    ) -> TimelineEvent {
        TimelineEvent {
            event_id: format!("{label}{start_s}"),
            stream_id: stream.into(),
            class_id: 1,
            label: label.into(),
            category: category.into(),
            start_ns: start_s * 1_000_000_000,
            end_ns: end_s * 1_000_000_000,
            start_offset_ns: start_s * 1_000_000_000,
            end_offset_ns: end_s * 1_000_000_000,
            peak_confidence: 0.9,
            mean_confidence: 0.8,
            frames_seen: 10,
            session_epoch: 0,
            first_seq: 0,
            last_seq: 9,
            model_version: "1".into(),
            track_ids: vec![],
            open: false,
        }
    }

    pub(crate) fn track(
        label: &str,
        stream: &str,
        id: u64,
        start_s: i64,
        end_s: i64,
    ) -> TimelineTrack {
        TimelineTrack {
            event_id: format!("t{id}"),
            stream_id: stream.into(),
            track_id: id,
            class_id: 1,
            label: label.into(),
            start_ns: start_s * 1_000_000_000,
            end_ns: end_s * 1_000_000_000,
            start_offset_ns: start_s * 1_000_000_000,
            end_offset_ns: end_s * 1_000_000_000,
            frames_seen: 30,
            path_length: 0.5,
            mean_speed: 0.0,
            peak_speed: 0.25,
            idle_ns: 2_000_000_000,
            reentries: 1,
            peak_confidence: 0.9,
            session_epoch: 0,
            first_seq: 0,
            last_seq: 29,
            open: false,
            points: (start_s..=end_s)
                .map(|s| TrackSample {
                    offset_ns: s * 1_000_000_000,
                    cx: 0.5,
                    cy: 0.5,
                    speed: 0.1,
                })
                .collect(),
        }
    }

    pub(crate) fn timeline() -> Timeline {
        Timeline {
            case_id: "case-<1>".into(),
            started_ns: 0,
            last_frame_ns: 100_000_000_000,
            streams: vec![],
            events: vec![
                event("grasper", "tool", "cam-1", 10, 30),
                event("grasper", "tool", "cam-2", 20, 40),
                event("grasper", "tool", "cam-1", 60, 70),
                event("liver", "organ", "cam-1", 0, 100),
            ],
            gaps: vec![TimelineGap {
                event_id: "g".into(),
                stream_id: "cam-1".into(),
                kind: "unusable".into(),
                start_ns: 45_000_000_000,
                end_ns: 46_000_000_000,
                start_offset_ns: 45_000_000_000,
                end_offset_ns: 46_000_000_000,
                frames: 30,
                reason: "SKIPPED_STALE x30".into(),
            }],
            tracks: vec![],
        }
    }
}
