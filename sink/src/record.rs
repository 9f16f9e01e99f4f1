//! Reading the surgical record back: the cases, a case's timeline (presence intervals, gaps,
//! streams, tool tracks with their sampled speed), per-tool usage and motion, rendered as a
//! table, JSON, CSV, or an SVG timeline picture. `orstream record` is a thin command over this
//! module.
//!
//! Track motion is in the tracker's units: positions are normalized image coordinates
//! (x / width, y / height), so a path of 1.0 is one frame width (or height) travelled, and
//! speeds are those units per second.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use orstream_proto::Category;
use serde::Serialize;

use crate::derive::{GapKind, StreamState};
use crate::error::StoreError;
use crate::store::{Store, Value};
use crate::time;

/// One case of the record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseSummary {
    /// The case.
    pub case_id: String,
    /// Capture time of its first frame (UTC ns).
    pub started_ns: i64,
    /// Capture time of its last frame so far (UTC ns).
    pub last_frame_ns: i64,
    /// Streams that delivered results for it.
    pub streams: u64,
    /// Closed presence intervals.
    pub events: u64,
    /// Closed gaps.
    pub gaps: u64,
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
    /// unusable, discontinuity or missing.
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
    /// UTC ns of its first frame.
    pub started_ns: i64,
    /// UTC ns of its last frame so far.
    pub last_frame_ns: i64,
    /// Its streams.
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

/// Output formats of the record views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned text for a terminal.
    Table,
    /// Pretty JSON.
    Json,
    /// CSV with a header row.
    Csv,
}

/// Every case, newest first.
pub fn cases(store: &mut Store) -> Result<Vec<CaseSummary>, StoreError> {
    let rows = store.query(
        "SELECT case_id, started_ns FROM cases ORDER BY started_ns DESC, case_id",
        &[],
    )?;
    let mut out: Vec<CaseSummary> = rows
        .iter()
        .map(|r| CaseSummary {
            case_id: r[0].text().to_owned(),
            started_ns: r[1].int(),
            last_frame_ns: r[1].int(),
            streams: 0,
            events: 0,
            gaps: 0,
        })
        .collect();
    let index: BTreeMap<String, usize> = out
        .iter()
        .enumerate()
        .map(|(i, c)| (c.case_id.clone(), i))
        .collect();
    for r in store.query("SELECT case_id, last_frame_ns FROM streams", &[])? {
        if let Some(&i) = index.get(r[0].text()) {
            out[i].streams += 1;
            out[i].last_frame_ns = out[i].last_frame_ns.max(r[1].int());
        }
    }
    for (table, field) in [("events", 0), ("gaps", 1)] {
        for r in store.query(
            &format!("SELECT case_id, COUNT(*) FROM {table} GROUP BY case_id"),
            &[],
        )? {
            if let Some(&i) = index.get(r[0].text()) {
                let n = u64::try_from(r[1].int()).unwrap_or(0);
                if field == 0 {
                    out[i].events = n;
                } else {
                    out[i].gaps = n;
                }
            }
        }
    }
    Ok(out)
}

/// A case's timeline, with intervals still open marked `open`; None for an unknown case.
pub fn timeline(store: &mut Store, case_id: &str) -> Result<Option<Timeline>, StoreError> {
    let Some(started_ns) = store.case_start(case_id)? else {
        return Ok(None);
    };
    let param = [Value::from(case_id)];
    let streams: Vec<StreamSummary> = store
        .query(
            "SELECT stream_id, first_frame_ns, last_frame_ns, results FROM streams \
             WHERE case_id = $1 ORDER BY stream_id",
            &param,
        )?
        .iter()
        .map(|r| StreamSummary {
            stream_id: r[0].text().to_owned(),
            first_frame_ns: r[1].int(),
            last_frame_ns: r[2].int(),
            results: u64::try_from(r[3].int()).unwrap_or(0),
        })
        .collect();
    let last_frame_ns = streams
        .iter()
        .map(|s| s.last_frame_ns)
        .max()
        .unwrap_or(started_ns);
    let mut events: Vec<TimelineEvent> = store
        .query(
            "SELECT event_id, stream_id, class_id, label, category, start_ns, end_ns, \
             peak_confidence, mean_confidence, frames_seen, session_epoch, first_seq, last_seq, \
             model_version, track_ids FROM events WHERE case_id = $1",
            &param,
        )?
        .iter()
        .map(|r| TimelineEvent {
            event_id: r[0].text().to_owned(),
            stream_id: r[1].text().to_owned(),
            class_id: u32::try_from(r[2].int()).unwrap_or(0),
            label: r[3].text().to_owned(),
            category: r[4].text().to_owned(),
            start_ns: r[5].int(),
            end_ns: r[6].int(),
            start_offset_ns: r[5].int() - started_ns,
            end_offset_ns: r[6].int() - started_ns,
            peak_confidence: r[7].real(),
            mean_confidence: r[8].real(),
            frames_seen: u64::try_from(r[9].int()).unwrap_or(0),
            session_epoch: u64::try_from(r[10].int()).unwrap_or(0),
            first_seq: u64::try_from(r[11].int()).unwrap_or(0),
            last_seq: u64::try_from(r[12].int()).unwrap_or(0),
            model_version: r[13].text().to_owned(),
            track_ids: parse_track_ids(r[14].text()),
            open: false,
        })
        .collect();
    let states = store.states_of_case(case_id)?;
    for state in &states {
        for p in state.open_presences() {
            events.push(TimelineEvent {
                event_id: p.event_id(),
                stream_id: p.stream_id,
                class_id: p.class_id,
                label: p.label,
                category: Category::name_of(p.category).to_owned(),
                start_ns: p.start_ns,
                end_ns: p.end_ns,
                start_offset_ns: p.start_ns - started_ns,
                end_offset_ns: p.end_ns - started_ns,
                peak_confidence: f64::from(p.peak),
                mean_confidence: f64::from(p.mean),
                frames_seen: p.frames_seen,
                session_epoch: p.epoch,
                first_seq: p.first_seq,
                last_seq: p.last_seq,
                model_version: p.model.version,
                track_ids: p.track_ids,
                open: true,
            });
        }
    }
    events.sort_by(|a, b| {
        (a.start_ns, &a.stream_id, a.class_id).cmp(&(b.start_ns, &b.stream_id, b.class_id))
    });

    // A discontinuity's reason as the source reported it (stream_events), keyed by the
    // stream and the new epoch.
    let mut reported: BTreeMap<(String, i64), String> = BTreeMap::new();
    for r in store.query(
        "SELECT stream_id, session_epoch, detail FROM stream_events \
         WHERE case_id = $1 AND kind = 'discontinuity'",
        &param,
    )? {
        let reason = serde_json::from_str::<serde_json::Value>(r[2].text())
            .ok()
            .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
            .unwrap_or_default();
        if !reason.is_empty() {
            reported.insert((r[0].text().to_owned(), r[1].int()), reason);
        }
    }
    let mut gaps: Vec<TimelineGap> = store
        .query(
            "SELECT event_id, stream_id, kind, start_ns, end_ns, frames, reason, session_epoch \
             FROM gaps WHERE case_id = $1",
            &param,
        )?
        .iter()
        .map(|r| {
            let mut reason = r[6].text().to_owned();
            if GapKind::parse(r[2].text()) == Some(GapKind::Discontinuity)
                && let Some(source) = reported.get(&(r[1].text().to_owned(), r[7].int()))
            {
                reason = format!("{reason} ({source})");
            }
            TimelineGap {
                event_id: r[0].text().to_owned(),
                stream_id: r[1].text().to_owned(),
                kind: r[2].text().to_owned(),
                start_ns: r[3].int(),
                end_ns: r[4].int(),
                start_offset_ns: r[3].int() - started_ns,
                end_offset_ns: r[4].int() - started_ns,
                frames: u64::try_from(r[5].int()).unwrap_or(0),
                reason,
            }
        })
        .collect();
    gaps.sort_by(|a, b| (a.start_ns, &a.stream_id).cmp(&(b.start_ns, &b.stream_id)));
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

/// `events.track_ids`: ascending ids, space-separated.
fn parse_track_ids(text: &str) -> Vec<u64> {
    text.split_whitespace()
        .filter_map(|id| id.parse().ok())
        .collect()
}

/// A case's tracks: the ended ones from the record, the live ones from the derivation states,
/// each with the trajectory points stored so far.
fn tracks(
    store: &mut Store,
    case_id: &str,
    started_ns: i64,
    states: &[StreamState],
) -> Result<Vec<TimelineTrack>, StoreError> {
    let param = [Value::from(case_id)];
    let mut points: BTreeMap<(String, u64), Vec<TrackSample>> = BTreeMap::new();
    for r in store.query(
        "SELECT stream_id, track_id, time_ns, cx, cy, speed FROM track_points \
         WHERE case_id = $1 ORDER BY stream_id, track_id, seq",
        &param,
    )? {
        points
            .entry((
                r[0].text().to_owned(),
                u64::try_from(r[1].int()).unwrap_or(0),
            ))
            .or_default()
            .push(TrackSample {
                offset_ns: r[2].int() - started_ns,
                cx: r[3].real(),
                cy: r[4].real(),
                speed: r[5].real(),
            });
    }
    let mut tracks: Vec<TimelineTrack> = store
        .query(
            "SELECT event_id, stream_id, track_id, class_id, label, session_epoch, first_seq, \
             last_seq, start_ns, end_ns, frames_seen, path_length, mean_speed, peak_speed, \
             idle_ns, reentries, peak_confidence FROM tracks WHERE case_id = $1",
            &param,
        )?
        .iter()
        .map(|r| {
            let stream_id = r[1].text().to_owned();
            let track_id = u64::try_from(r[2].int()).unwrap_or(0);
            TimelineTrack {
                event_id: r[0].text().to_owned(),
                points: points
                    .remove(&(stream_id.clone(), track_id))
                    .unwrap_or_default(),
                stream_id,
                track_id,
                class_id: u32::try_from(r[3].int()).unwrap_or(0),
                label: r[4].text().to_owned(),
                session_epoch: u64::try_from(r[5].int()).unwrap_or(0),
                first_seq: u64::try_from(r[6].int()).unwrap_or(0),
                last_seq: u64::try_from(r[7].int()).unwrap_or(0),
                start_ns: r[8].int(),
                end_ns: r[9].int(),
                start_offset_ns: r[8].int() - started_ns,
                end_offset_ns: r[9].int() - started_ns,
                frames_seen: u64::try_from(r[10].int()).unwrap_or(0),
                path_length: r[11].real(),
                mean_speed: r[12].real(),
                peak_speed: r[13].real(),
                idle_ns: r[14].int(),
                reentries: u64::try_from(r[15].int()).unwrap_or(0),
                peak_confidence: r[16].real(),
                open: false,
            }
        })
        .collect();
    for state in states {
        for t in state.open_tracks() {
            let event_id = t.event_id();
            let m = t.motion;
            let key = (t.stream_id, m.track_id);
            // A track is live or ended, never both; should a state lag the record, the
            // ended row wins.
            if tracks
                .iter()
                .any(|c| c.stream_id == key.0 && c.track_id == key.1)
            {
                continue;
            }
            tracks.push(TimelineTrack {
                event_id,
                points: points.remove(&key).unwrap_or_default(),
                stream_id: key.0,
                track_id: m.track_id,
                class_id: t.class_id,
                label: t.label,
                start_ns: t.start_ns,
                end_ns: t.end_ns,
                start_offset_ns: t.start_ns - started_ns,
                end_offset_ns: t.end_ns - started_ns,
                frames_seen: m.frames_seen,
                path_length: m.path_length,
                mean_speed: m.mean_speed,
                peak_speed: m.peak_speed,
                idle_ns: m.idle_ns,
                reentries: u64::from(m.reentries),
                peak_confidence: f64::from(t.peak_score),
                session_epoch: t.epoch,
                first_seq: t.first_seq,
                last_seq: t.last_seq,
                open: true,
            });
        }
    }
    tracks.sort_by(|a, b| {
        (a.start_ns, &a.stream_id, a.track_id).cmp(&(b.start_ns, &b.stream_id, b.track_id))
    });
    Ok(tracks)
}

/// Per tool/organ totals of a timeline, tools first, then by time visible.
pub fn usage(timeline: &Timeline) -> Vec<Usage> {
    let duration = (timeline.last_frame_ns - timeline.started_ns).max(1);
    let mut by_label: BTreeMap<(String, String), Vec<&TimelineEvent>> = BTreeMap::new();
    for e in &timeline.events {
        by_label
            .entry((e.category.clone(), e.label.clone()))
            .or_default()
            .push(e);
    }
    let mut out: Vec<Usage> = by_label
        .into_iter()
        .map(|((category, label), mut events)| {
            events.sort_by_key(|e| (e.start_ns, e.end_ns));
            // Union over streams: two cameras seeing the grasper at once is one grasper.
            let mut visible = 0;
            let mut current: Option<(i64, i64)> = None;
            for e in &events {
                current = match current {
                    Some((s, end)) if e.start_ns <= end => Some((s, end.max(e.end_ns))),
                    Some((s, end)) => {
                        visible += end - s;
                        Some((e.start_ns, e.end_ns))
                    }
                    None => Some((e.start_ns, e.end_ns)),
                };
            }
            if let Some((s, end)) = current {
                visible += end - s;
            }
            Usage {
                appearances: events.len() as u64,
                visible_ns: visible,
                share: visible as f64 / duration as f64,
                first_offset_ns: events.first().map_or(0, |e| e.start_offset_ns),
                last_offset_ns: events.iter().map(|e| e.end_offset_ns).max().unwrap_or(0),
                peak_confidence: events.iter().map(|e| e.peak_confidence).fold(0.0, f64::max),
                label,
                category,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        (
            a.category != "tool",
            std::cmp::Reverse(a.visible_ns),
            &a.label,
        )
            .cmp(&(
                b.category != "tool",
                std::cmp::Reverse(b.visible_ns),
                &b.label,
            ))
    });
    out
}

/// Per tool motion totals of a timeline (every track is a tool's), most time tracked first.
/// Live tracks count with their figures so far.
pub fn motion(timeline: &Timeline) -> Vec<ToolMotion> {
    let mut by_label: BTreeMap<&str, ToolMotion> = BTreeMap::new();
    for t in &timeline.tracks {
        let m = by_label.entry(&t.label).or_insert_with(|| ToolMotion {
            label: t.label.clone(),
            tracks: 0,
            tracked_ns: 0,
            path_length: 0.0,
            mean_speed: 0.0,
            peak_speed: 0.0,
            idle_ns: 0,
            reentries: 0,
        });
        m.tracks += 1;
        m.tracked_ns += (t.end_ns - t.start_ns).max(0);
        m.path_length += t.path_length;
        m.peak_speed = m.peak_speed.max(t.peak_speed);
        m.idle_ns += t.idle_ns;
        m.reentries += t.reentries;
    }
    let mut out: Vec<ToolMotion> = by_label
        .into_values()
        .map(|mut m| {
            if m.tracked_ns > 0 {
                m.mean_speed = m.path_length / (m.tracked_ns as f64 / 1e9);
            }
            m
        })
        .collect();
    out.sort_by(|a, b| {
        (std::cmp::Reverse(a.tracked_ns), &a.label)
            .cmp(&(std::cmp::Reverse(b.tracked_ns), &b.label))
    });
    out
}

/// Renders rows with a header in `format` (JSON is rendered from `json` instead).
fn render_rows(
    header: &[&str],
    rows: &[Vec<String>],
    format: Format,
    json: impl FnOnce() -> String,
) -> String {
    match format {
        Format::Json => json(),
        Format::Csv => {
            let mut out = String::new();
            for row in std::iter::once(header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>())
                .chain(rows.iter().cloned())
            {
                let cells: Vec<String> = row.iter().map(|c| csv_cell(c)).collect();
                out.push_str(&cells.join(","));
                out.push('\n');
            }
            out
        }
        Format::Table => {
            let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
            for row in rows {
                for (w, c) in widths.iter_mut().zip(row) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let mut out = String::new();
            let line = |cells: &[String], out: &mut String| {
                let padded: Vec<String> = cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                out.push_str(padded.join("  ").trim_end());
                out.push('\n');
            };
            line(
                &header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>(),
                &mut out,
            );
            line(
                &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(),
                &mut out,
            );
            for row in rows {
                line(row, &mut out);
            }
            out
        }
    }
}

fn csv_cell(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_owned()
    }
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value)
        .map_or_else(|e| format!("{{\"error\": \"{e}\"}}"), |s| s + "\n")
}

/// The case list.
pub fn render_cases(cases: &[CaseSummary], format: Format) -> String {
    let rows: Vec<Vec<String>> = cases
        .iter()
        .map(|c| {
            vec![
                c.case_id.clone(),
                time::utc(c.started_ns),
                time::offset(c.last_frame_ns - c.started_ns),
                c.streams.to_string(),
                c.events.to_string(),
                c.gaps.to_string(),
            ]
        })
        .collect();
    render_rows(
        &[
            "case",
            "started (UTC)",
            "duration",
            "streams",
            "events",
            "gaps",
        ],
        &rows,
        format,
        || json(&cases),
    )
}

/// A case's timeline: intervals and gaps interleaved by start.
pub fn render_timeline(timeline: &Timeline, format: Format) -> String {
    let mut items: Vec<(i64, Vec<String>)> = timeline
        .events
        .iter()
        .map(|e| {
            (
                e.start_ns,
                vec![
                    time::offset(e.start_offset_ns),
                    time::offset(e.end_offset_ns),
                    time::utc(e.start_ns),
                    time::utc(e.end_ns),
                    e.stream_id.clone(),
                    if e.open {
                        "present (open)".into()
                    } else {
                        "present".into()
                    },
                    e.category.clone(),
                    e.label.clone(),
                    e.track_ids
                        .iter()
                        .map(u64::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                    format!("{:.2}", e.peak_confidence),
                    format!("{:.2}", e.mean_confidence),
                    format!("{}:{}..{}", e.session_epoch, e.first_seq, e.last_seq),
                    e.model_version.clone(),
                    String::new(),
                ],
            )
        })
        .chain(timeline.gaps.iter().map(|g| {
            (
                g.start_ns,
                vec![
                    time::offset(g.start_offset_ns),
                    time::offset(g.end_offset_ns),
                    time::utc(g.start_ns),
                    time::utc(g.end_ns),
                    g.stream_id.clone(),
                    format!("gap ({})", g.kind),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    format!("{} frames", g.frames),
                    String::new(),
                    g.reason.clone(),
                ],
            )
        }))
        .collect();
    items.sort_by_key(|(start, _)| *start);
    let rows: Vec<Vec<String>> = items.into_iter().map(|(_, r)| r).collect();
    render_rows(
        &[
            "from",
            "to",
            "from (UTC)",
            "to (UTC)",
            "stream",
            "what",
            "category",
            "label",
            "tracks",
            "peak",
            "mean",
            "frames",
            "model",
            "reason",
        ],
        &rows,
        format,
        || json(timeline),
    )
}

/// Per-tool usage totals.
pub fn render_usage(usage: &[Usage], format: Format) -> String {
    let rows: Vec<Vec<String>> = usage
        .iter()
        .map(|u| {
            vec![
                u.category.clone(),
                u.label.clone(),
                u.appearances.to_string(),
                time::offset(u.visible_ns),
                format!("{:.1}%", u.share * 100.0),
                time::offset(u.first_offset_ns),
                time::offset(u.last_offset_ns),
                format!("{:.2}", u.peak_confidence),
            ]
        })
        .collect();
    render_rows(
        &[
            "category",
            "label",
            "appearances",
            "visible",
            "share",
            "first seen",
            "last seen",
            "peak",
        ],
        &rows,
        format,
        || json(&usage),
    )
}

/// A case's tool tracks, one row each (JSON also carries the sampled points).
pub fn render_tracks(timeline: &Timeline, format: Format) -> String {
    let rows: Vec<Vec<String>> = timeline
        .tracks
        .iter()
        .map(|t| {
            vec![
                t.stream_id.clone(),
                t.track_id.to_string(),
                t.label.clone(),
                time::offset(t.start_offset_ns),
                time::offset(t.end_offset_ns),
                time::seconds(t.end_ns - t.start_ns),
                format!("{:.3}", t.path_length),
                format!("{:.3}", t.mean_speed),
                format!("{:.3}", t.peak_speed),
                time::seconds(t.idle_ns),
                t.reentries.to_string(),
                t.frames_seen.to_string(),
                if t.open { "yes" } else { "no" }.to_owned(),
            ]
        })
        .collect();
    render_rows(
        &[
            "stream",
            "track",
            "tool",
            "from",
            "to",
            "duration (s)",
            "path (frame units)",
            "mean (frame units/s)",
            "peak (frame units/s)",
            "idle (s)",
            "re-entries",
            "frames",
            "open",
        ],
        &rows,
        format,
        || json(&timeline.tracks),
    )
}

/// Per-tool motion totals.
pub fn render_motion(motion: &[ToolMotion], format: Format) -> String {
    let rows: Vec<Vec<String>> = motion
        .iter()
        .map(|m| {
            vec![
                m.label.clone(),
                m.tracks.to_string(),
                time::seconds(m.tracked_ns),
                format!("{:.3}", m.path_length),
                format!("{:.3}", m.mean_speed),
                format!("{:.3}", m.peak_speed),
                time::seconds(m.idle_ns),
                m.reentries.to_string(),
            ]
        })
        .collect();
    render_rows(
        &[
            "tool",
            "tracks",
            "tracked (s)",
            "path (frame units)",
            "mean (frame units/s)",
            "peak (frame units/s)",
            "idle (s)",
            "re-entries",
        ],
        &rows,
        format,
        || json(&motion),
    )
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A tick step (ns) giving at most about ten ticks over `span_ns`.
fn tick_step(span_ns: i64) -> i64 {
    const S: i64 = 1_000_000_000;
    let steps = [
        S / 10,
        S / 4,
        S / 2,
        S,
        2 * S,
        5 * S,
        10 * S,
        15 * S,
        30 * S,
        60 * S,
        120 * S,
        300 * S,
        600 * S,
        900 * S,
        1_800 * S,
        3_600 * S,
    ];
    steps
        .into_iter()
        .find(|s| span_ns / s <= 10)
        .unwrap_or(3_600 * S)
}

/// The timeline as a self-contained SVG: one row per tool/organ (per stream when the case
/// has several), intervals as bars, gaps shaded across the rows of their stream, a time axis
/// in offsets from the case start. A tool row with tracks has a speed strip under its bars:
/// one line per track, its sampled speed over time, on one scale for the whole case (zero to
/// the case's peak speed, given in the legend), with the row's own peak written by its name.
/// Every bar, gap and speed line has a tooltip with its exact times and figures.
pub fn svg(timeline: &Timeline) -> String {
    const WIDTH: f64 = 1200.0;
    const LEFT: f64 = 230.0;
    const RIGHT: f64 = 30.0;
    const TOP: f64 = 70.0;
    const ROW: f64 = 26.0;
    const BAR: f64 = 16.0;
    // Extra height of a row with a speed strip, and the strip's own height inside it.
    const STRIP: f64 = 26.0;
    const STRIP_PLOT: f64 = 20.0;
    const SPEED: &str = "#2c7a7b";
    let stream_ids: std::collections::BTreeSet<&str> = timeline
        .streams
        .iter()
        .map(|s| s.stream_id.as_str())
        .chain(timeline.events.iter().map(|e| e.stream_id.as_str()))
        .chain(timeline.tracks.iter().map(|t| t.stream_id.as_str()))
        .collect();
    let multi = stream_ids.len() > 1;
    // Rows: tools first, then organs, then the rest; within a category by the label's first
    // appearance, the streams of one label next to each other. A track whose tool has no
    // interval (yet) still gets its row.
    let appearances = timeline
        .events
        .iter()
        .map(|e| (&e.stream_id, e.category.as_str(), &e.label, e.start_ns))
        .chain(
            timeline
                .tracks
                .iter()
                .map(|t| (&t.stream_id, "tool", &t.label, t.start_ns)),
        );
    let mut first_seen: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    let mut row_set: std::collections::BTreeSet<(String, String, String)> =
        std::collections::BTreeSet::new();
    for (stream, category, label, start_ns) in appearances {
        let t = first_seen
            .entry((category, label.as_str()))
            .or_insert(start_ns);
        *t = (*t).min(start_ns);
        row_set.insert((stream.clone(), category.to_owned(), label.clone()));
    }
    let mut rows: Vec<(String, String, String)> = row_set.into_iter().collect();
    rows.sort_by_key(|(stream, category, label)| {
        (
            category_rank(category),
            first_seen
                .get(&(category.as_str(), label.as_str()))
                .copied()
                .unwrap_or(0),
            label.clone(),
            stream.clone(),
        )
    });
    let row_of = |stream: &str, category: &str, label: &str| {
        rows.iter()
            .position(|(s, c, l)| s == stream && c == category && l == label)
    };
    // Per row, the peak speed of its tracks (None: no tracks, so no strip); then each row's
    // top and height.
    let mut row_peak: Vec<Option<f64>> = vec![None; rows.len()];
    for t in &timeline.tracks {
        if let Some(i) = row_of(&t.stream_id, "tool", &t.label) {
            let peak = t
                .points
                .iter()
                .map(|p| p.speed)
                .fold(t.peak_speed, f64::max);
            row_peak[i] = Some(row_peak[i].map_or(peak, |p: f64| p.max(peak)));
        }
    }
    let mut row_top = Vec::with_capacity(rows.len());
    let mut bottom = TOP;
    for peak in &row_peak {
        row_top.push(bottom);
        bottom += if peak.is_some() { ROW + STRIP } else { ROW };
    }
    let row_height = |i: usize| {
        if row_peak[i].is_some() {
            ROW + STRIP
        } else {
            ROW
        }
    };
    if rows.is_empty() {
        bottom += ROW;
    }
    // One scale for every strip, so rows compare; a case whose tools never moved draws flat.
    let case_peak = row_peak.iter().flatten().copied().fold(0.0, f64::max);
    let scale = if case_peak > 0.0 { case_peak } else { 1.0 };
    let span = (timeline.last_frame_ns - timeline.started_ns).max(1_000_000_000);
    let plot = WIDTH - LEFT - RIGHT;
    let x =
        |ns: i64| LEFT + plot * ((ns - timeline.started_ns) as f64 / span as f64).clamp(0.0, 1.0);
    let height = bottom + 60.0;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="24" font-size="16" font-weight="bold" fill="#222">Case {} — {} UTC — {}</text>"##,
        xml(&timeline.case_id),
        xml(&time::utc(timeline.started_ns)),
        time::offset(timeline.last_frame_ns - timeline.started_ns)
    );
    // Legend.
    let legend = [
        ("#2b6cb0", "tool"),
        ("#c05621", "organ"),
        ("#718096", "other"),
        ("#a0a0a0", "gap (no usable frames)"),
    ];
    let mut lx = LEFT;
    for (color, name) in legend {
        let opacity = if name.starts_with("gap") { "0.45" } else { "1" };
        let _ = writeln!(
            out,
            r##"<rect x="{lx}" y="34" width="12" height="12" fill="{color}" fill-opacity="{opacity}"/><text x="{}" y="44" fill="#333">{name}</text>"##,
            lx + 16.0
        );
        lx += 40.0 + 7.0 * name.len() as f64;
    }
    let _ = writeln!(
        out,
        r##"<rect x="{lx}" y="34" width="12" height="12" fill="none" stroke="#333" stroke-dasharray="3,2"/><text x="{}" y="44" fill="#333">still open</text>"##,
        lx + 16.0
    );
    lx += 40.0 + 7.0 * "still open".len() as f64;
    if row_peak.iter().any(Option::is_some) {
        let _ = writeln!(
            out,
            r##"<polyline points="{lx},45 {},37 {},42 {},35" fill="none" stroke="{SPEED}" stroke-width="1.5"/><text x="{}" y="44" fill="#333">tool speed, strip height = {case_peak:.3} frame units/s</text>"##,
            lx + 4.0,
            lx + 8.0,
            lx + 12.0,
            lx + 16.0
        );
    }
    // Row bands and labels.
    for (i, (stream, _category, label)) in rows.iter().enumerate() {
        let y = row_top[i];
        if i % 2 == 1 {
            let _ = writeln!(
                out,
                r##"<rect x="{LEFT}" y="{y}" width="{plot}" height="{}" fill="#f4f6f8"/>"##,
                row_height(i)
            );
        }
        let name = if multi {
            format!("{label} · {stream}")
        } else {
            label.clone()
        };
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" text-anchor="end" fill="#222">{}</text>"##,
            LEFT - 8.0,
            y + ROW / 2.0 + 4.0,
            xml(&name)
        );
        if let Some(peak) = row_peak[i] {
            let base = y + ROW + STRIP_PLOT;
            let _ = writeln!(
                out,
                r##"<text x="{}" y="{}" text-anchor="end" font-size="10" fill="{SPEED}">speed, peak {peak:.3}/s</text><line x1="{LEFT}" y1="{base}" x2="{}" y2="{base}" stroke="#cbd5e0" stroke-width="1"/>"##,
                LEFT - 8.0,
                base - 4.0,
                LEFT + plot
            );
        }
    }
    // Axis.
    let step = tick_step(span);
    let mut t = 0;
    while t <= span {
        let tx = x(timeline.started_ns + t);
        let _ = writeln!(
            out,
            r##"<line x1="{tx:.1}" y1="{TOP}" x2="{tx:.1}" y2="{}" stroke="#d0d4d8" stroke-width="1"/><text x="{tx:.1}" y="{}" text-anchor="middle" fill="#555">{}</text>"##,
            bottom + 4.0,
            bottom + 18.0,
            axis_label(t, step)
        );
        t += step;
    }
    let _ = writeln!(
        out,
        r##"<text x="{}" y="{}" text-anchor="middle" fill="#555">time from case start (first frame)</text>"##,
        LEFT + plot / 2.0,
        bottom + 38.0
    );
    // Gaps, shaded on every row of their stream (all rows when there is one stream).
    for g in &timeline.gaps {
        let (x0, x1) = (x(g.start_ns), x(g.end_ns));
        let tooltip = xml(&format!(
            "{} gap on {}: {} to {} ({}), {}",
            g.kind,
            g.stream_id,
            time::offset(g.start_offset_ns),
            time::offset(g.end_offset_ns),
            time::utc(g.start_ns),
            g.reason
        ));
        for (i, _) in rows
            .iter()
            .enumerate()
            .filter(|(_, (s, _, _))| !multi || *s == g.stream_id)
        {
            let _ = writeln!(
                out,
                r##"<rect x="{x0:.1}" y="{}" width="{:.1}" height="{}" fill="#a0a0a0" fill-opacity="0.45"><title>{tooltip}</title></rect>"##,
                row_top[i],
                (x1 - x0).max(2.0),
                row_height(i)
            );
        }
    }
    // Bars.
    for e in &timeline.events {
        let Some(i) = row_of(&e.stream_id, &e.category, &e.label) else {
            continue;
        };
        let y = row_top[i] + (ROW - BAR) / 2.0;
        let (x0, x1) = (x(e.start_ns), x(e.end_ns));
        let color = match e.category.as_str() {
            "tool" => "#2b6cb0",
            "organ" => "#c05621",
            _ => "#718096",
        };
        let outline = if e.open {
            r##" stroke="#222" stroke-dasharray="3,2""##
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r##"<rect x="{x0:.1}" y="{y}" width="{:.1}" height="{BAR}" rx="2" fill="{color}"{outline}><title>{}</title></rect>"##,
            (x1 - x0).max(1.5),
            xml(&format!(
                "{} ({}) on {}: {} to {} ({} UTC), peak {:.2}, mean {:.2}, frames {}:{}..{}{}",
                e.label,
                e.category,
                e.stream_id,
                time::offset(e.start_offset_ns),
                time::offset(e.end_offset_ns),
                time::utc(e.start_ns),
                e.peak_confidence,
                e.mean_confidence,
                e.session_epoch,
                e.first_seq,
                e.last_seq,
                if e.open { ", still open" } else { "" }
            ))
        );
    }
    // Speed lines.
    for t in &timeline.tracks {
        let Some(i) = row_of(&t.stream_id, "tool", &t.label) else {
            continue;
        };
        if t.points.is_empty() {
            continue;
        }
        let base = row_top[i] + ROW + STRIP_PLOT;
        let mut coords: Vec<String> = t
            .points
            .iter()
            .map(|p| {
                let px = x(timeline.started_ns + p.offset_ns);
                let py = base - STRIP_PLOT * (p.speed / scale).clamp(0.0, 1.0);
                format!("{px:.1},{py:.1}")
            })
            .collect();
        if let [only] = t.points.as_slice() {
            // One sample: a short dash, so the track is still seen.
            let px = x(timeline.started_ns + only.offset_ns) + 1.5;
            let py = base - STRIP_PLOT * (only.speed / scale).clamp(0.0, 1.0);
            coords.push(format!("{px:.1},{py:.1}"));
        }
        let _ = writeln!(
            out,
            r##"<polyline class="speed" points="{}" fill="none" stroke="{SPEED}" stroke-width="1.2" stroke-linejoin="round" stroke-linecap="round"><title>{}</title></polyline>"##,
            coords.join(" "),
            xml(&format!(
                "{} track {} on {}: {} to {}, path {:.3} frame units, mean {:.3}/s, peak {:.3}/s, idle {} s, re-entries {}{}",
                t.label,
                t.track_id,
                t.stream_id,
                time::offset(t.start_offset_ns),
                time::offset(t.end_offset_ns),
                t.path_length,
                t.mean_speed,
                t.peak_speed,
                time::seconds(t.idle_ns),
                t.reentries,
                if t.open { ", still open" } else { "" }
            ))
        );
    }
    if rows.is_empty() {
        let _ = writeln!(
            out,
            r##"<text x="{LEFT}" y="{}" fill="#555">no tool or organ intervals in this case</text>"##,
            TOP + 17.0
        );
    }
    out.push_str("</svg>\n");
    out
}

fn category_rank(category: &str) -> u8 {
    match category {
        "tool" => 0,
        "organ" => 1,
        _ => 2,
    }
}

fn axis_label(t: i64, step: i64) -> String {
    let s = t / 1_000_000_000;
    if step < 1_000_000_000 {
        format!(
            "{}:{:02}.{}",
            s / 60,
            s % 60,
            (t % 1_000_000_000) / 100_000_000
        )
    } else if s >= 3_600 {
        format!("{}:{:02}:{:02}", s / 3_600, s % 3_600 / 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(label: &str, category: &str, stream: &str, start_s: i64, end_s: i64) -> TimelineEvent {
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

    fn track(label: &str, stream: &str, id: u64, start_s: i64, end_s: i64) -> TimelineTrack {
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

    fn timeline() -> Timeline {
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

    #[test]
    fn motion_sums_tracks_per_tool() {
        let mut timeline = timeline();
        timeline.tracks = vec![
            track("grasper", "cam-1", 1, 10, 30),
            track("grasper", "cam-2", 1, 20, 40),
            track("hook", "cam-1", 2, 60, 65),
        ];
        timeline.tracks[1].peak_speed = 0.75;
        let motion = motion(&timeline);
        assert_eq!(motion.len(), 2);
        assert_eq!(motion[0].label, "grasper");
        assert_eq!(motion[0].tracks, 2);
        assert_eq!(motion[0].tracked_ns, 40_000_000_000);
        assert!((motion[0].path_length - 1.0).abs() < 1e-12);
        assert!((motion[0].mean_speed - 0.025).abs() < 1e-12);
        assert!((motion[0].peak_speed - 0.75).abs() < 1e-12);
        assert_eq!(motion[0].idle_ns, 4_000_000_000);
        assert_eq!(motion[0].reentries, 2);
        assert_eq!(motion[1].label, "hook");
        assert!((motion[1].mean_speed - 0.1).abs() < 1e-12);
    }

    #[test]
    fn tool_rows_with_tracks_get_a_speed_strip() {
        let plain = svg(&timeline());
        assert!(!plain.contains("class=\"speed\""));
        assert!(!plain.contains("tool speed"));
        let mut with_tracks = timeline();
        with_tracks.tracks = vec![
            track("grasper", "cam-1", 1, 10, 30),
            track("grasper", "cam-1", 2, 60, 70),
        ];
        with_tracks.tracks[1].peak_speed = 0.5;
        let svg = svg(&with_tracks);
        assert_eq!(svg.matches("<polyline class=\"speed\"").count(), 2);
        // One strip (grasper on cam-1), labelled with its row's peak; the legend gives the
        // case's scale.
        assert_eq!(svg.matches("speed, peak 0.500/s").count(), 1);
        assert!(svg.contains("strip height = 0.500 frame units/s"));
        // 0.1 of a 0.5 peak is a fifth of the strip's 20 px above its baseline.
        let grasper_row = 70.0;
        let base = grasper_row + 26.0 + 20.0;
        assert!(svg.contains(&format!(",{:.1} ", base - 4.0)));
        // Three rows (70 + 3 x 26 + 60), and one strip more with the tracks.
        let height = |s: &str| {
            s.split("height=\"")
                .nth(1)
                .and_then(|h| h.split('"').next())
                .map(str::to_owned)
        };
        assert_eq!(height(&plain), Some("208".to_owned()));
        assert_eq!(height(&svg), Some("234".to_owned()));
    }

    #[test]
    fn usage_takes_the_union_over_streams() {
        let usage = usage(&timeline());
        assert_eq!(usage[0].label, "grasper");
        assert_eq!(usage[0].appearances, 3);
        // 10..40 (two cameras overlapping) + 60..70.
        assert_eq!(usage[0].visible_ns, 40_000_000_000);
        assert!((usage[0].share - 0.4).abs() < 1e-9);
        assert_eq!(usage[1].label, "liver");
        assert_eq!(usage[1].visible_ns, 100_000_000_000);
    }

    #[test]
    fn csv_quotes_what_needs_quoting_and_table_aligns() {
        let rows = vec![vec!["a,b".to_owned(), "say \"hi\"".to_owned()]];
        let csv = render_rows(&["x", "y"], &rows, Format::Csv, String::new);
        assert_eq!(csv, "x,y\n\"a,b\",\"say \"\"hi\"\"\"\n");
        let table = render_rows(&["x", "y"], &rows, Format::Table, String::new);
        assert_eq!(table, "x    y\n---  --------\na,b  say \"hi\"\n");
    }

    #[test]
    fn the_picture_has_a_row_per_tool_and_shaded_gaps() {
        let svg = svg(&timeline());
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("Case case-&lt;1&gt;"), "text is escaped");
        assert!(svg.contains(">grasper · cam-1<"));
        assert!(svg.contains(">grasper · cam-2<"));
        assert!(svg.contains(">liver · cam-1<"));
        assert_eq!(svg.matches("fill=\"#2b6cb0\"><title>").count(), 3);
        assert!(svg.contains("unusable gap on cam-1"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn ticks_stay_few() {
        for span in [1_000_000_000, 60_000_000_000, 7_200_000_000_000] {
            assert!(span / tick_step(span) <= 10);
        }
    }
}
