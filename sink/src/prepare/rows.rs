//! The record's typed rows ([`orstream_record::schema`]) for what a batch derives; kept apart
//! from the preparation logic so a schema change touches this file and the record crate only.
//! The record's views read a stream's open intervals and live tracks through the same rows
//! (the [`DerivationState`] implementation below), so an interval shows the same figures
//! before and after it closes.

use orstream_bus::Message;
use orstream_proto::{Category, FrameResult, FrameStatus, StreamEvent, stream_event};
use orstream_record::schema::{
    AnomalyRow, CaseCameraRow, CaseRoomRow, DerivationState, EventRow, FrameRow, GapRow,
    StreamEventRow, StreamRow, TrackPointRow, TrackRow,
};

use crate::derive::{Gap, Presence, StreamState, TrackRecord};
use crate::track::TrackPoint;

impl DerivationState for StreamState {
    fn case_id(&self) -> &str {
        &self.case_id
    }

    fn open_events(&self) -> Vec<EventRow> {
        self.open_presences().iter().map(presence_row).collect()
    }

    fn open_tracks(&self) -> Vec<TrackRow> {
        StreamState::open_tracks(self)
            .iter()
            .map(track_row)
            .collect()
    }
}

pub(super) fn anomaly_row(
    message: &Message,
    kind: &str,
    stream_id: String,
    detail: &str,
) -> AnomalyRow {
    AnomalyRow {
        source_topic: message.topic.clone(),
        source_partition: message.partition,
        source_offset: message.offset,
        kind: kind.to_owned(),
        stream_id,
        detail: detail.to_owned(),
    }
}

pub(super) fn stream_row(state: &StreamState) -> Option<StreamRow> {
    let first = state.case_first_ns?;
    let last = state.position?;
    Some(StreamRow {
        case_id: state.case_id.clone(),
        stream_id: state.stream_id.clone(),
        first_frame_ns: first,
        last_frame_ns: last.capture_ns,
        results: state.case_results,
    })
}

pub(super) fn presence_row(p: &Presence) -> EventRow {
    EventRow {
        event_id: p.event_id(),
        case_id: p.case_id.clone(),
        stream_id: p.stream_id.clone(),
        class_id: p.class_id,
        label: p.label.clone(),
        category: Category::name_of(p.category).to_owned(),
        start_ns: p.start_ns,
        end_ns: p.end_ns,
        session_epoch: p.epoch,
        first_seq: p.first_seq,
        last_seq: p.last_seq,
        frames_seen: p.frames_seen,
        peak_confidence: f64::from(p.peak),
        mean_confidence: f64::from(p.mean),
        model_name: p.model.name.clone(),
        model_version: p.model.version.clone(),
        model_digest: p.model.digest.clone(),
        track_ids: p
            .track_ids
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" "),
    }
}

pub(super) fn track_row(t: &TrackRecord) -> TrackRow {
    let m = &t.motion;
    TrackRow {
        event_id: t.event_id(),
        case_id: t.case_id.clone(),
        stream_id: t.stream_id.clone(),
        track_id: m.track_id,
        class_id: t.class_id,
        label: t.label.clone(),
        session_epoch: t.epoch,
        first_seq: t.first_seq,
        last_seq: t.last_seq,
        start_ns: t.start_ns,
        end_ns: t.end_ns,
        frames_seen: m.frames_seen,
        path_length: m.path_length,
        mean_speed: m.mean_speed,
        peak_speed: m.peak_speed,
        idle_ns: m.idle_ns,
        reentries: u64::from(m.reentries),
        peak_confidence: f64::from(t.peak_score),
        model_name: t.model.name.clone(),
        model_version: t.model.version.clone(),
        model_digest: t.model.digest.clone(),
    }
}

pub(super) fn track_point_row(stream_id: &str, case_id: &str, p: &TrackPoint) -> TrackPointRow {
    TrackPointRow {
        stream_id: stream_id.to_owned(),
        track_id: p.track_id,
        seq: p.seq,
        case_id: case_id.to_owned(),
        time_ns: p.ns,
        cx: p.cx,
        cy: p.cy,
        x0: p.bbox[0],
        y0: p.bbox[1],
        x1: p.bbox[2],
        y1: p.bbox[3],
        speed: p.speed,
    }
}

pub(super) fn gap_row(g: &Gap) -> GapRow {
    GapRow {
        event_id: g.event_id(),
        case_id: g.case_id.clone(),
        stream_id: g.stream_id.clone(),
        kind: g.kind.as_str().to_owned(),
        session_epoch: g.epoch,
        first_seq: g.first_seq,
        last_seq: g.last_seq,
        start_ns: g.start_ns,
        end_ns: g.end_ns,
        frames: g.frames,
        reason: g.reason.clone(),
    }
}

pub(super) fn frame_row(r: &FrameResult) -> FrameRow {
    let instances: Vec<serde_json::Value> = r
        .instances
        .iter()
        .map(|i| {
            serde_json::json!({
                "class_id": i.class_id,
                "label": i.label,
                "category": Category::name_of(i.category),
                "score": i.score,
                "area": i.area,
            })
        })
        .collect();
    FrameRow {
        stream_id: r.stream_id.clone(),
        session_epoch: r.session_epoch,
        seq: r.seq,
        case_id: r.case_id.clone(),
        capture_ns: r.capture_time_ns,
        status: FrameStatus::name_of(r.status).to_owned(),
        model_version: r
            .model
            .as_ref()
            .map_or_else(String::new, |m| m.version.clone()),
        instances: serde_json::Value::Array(instances).to_string(),
    }
}

/// A room's case event as its rows: the case's room, start or end, and its cameras. None for
/// a stream's own events.
pub(super) fn case_rows(e: &StreamEvent) -> Option<(CaseRoomRow, Vec<CaseCameraRow>)> {
    use stream_event::Kind;
    let (opened_ns, closed_ns, close_detail, cameras) = match &e.kind {
        Some(Kind::CaseStarted(c)) => (Some(e.time_ns), None, String::new(), &c.cameras),
        Some(Kind::CaseEnded(c)) => (None, Some(e.time_ns), c.detail.clone(), &c.cameras),
        _ => return None,
    };
    let room = CaseRoomRow {
        case_id: e.case_id.clone(),
        room_id: e.room_id.clone(),
        opened_ns,
        closed_ns,
        close_detail,
    };
    let cameras = cameras
        .iter()
        .map(|stream_id| CaseCameraRow {
            case_id: e.case_id.clone(),
            stream_id: stream_id.clone(),
        })
        .collect();
    Some((room, cameras))
}

pub(super) fn stream_event_row(e: &StreamEvent) -> StreamEventRow {
    use stream_event::Kind;
    let (kind, detail) = match &e.kind {
        Some(Kind::Started(s)) => (
            "started",
            serde_json::json!({
                "source_kind": s.source_kind, "width": s.width, "height": s.height, "fps": s.fps,
            }),
        ),
        Some(Kind::Discontinuity(d)) => (
            "discontinuity",
            serde_json::json!({
                "previous_epoch": d.previous_epoch,
                "previous_last_seq": d.previous_last_seq,
                "gap_start_ns": d.gap_start_ns,
                "gap_end_ns": d.gap_end_ns,
                "reason": d.reason,
            }),
        ),
        Some(Kind::Ended(x)) => (
            "ended",
            serde_json::json!({
                "reason": x.reason,
                "frames_published": x.frames_published,
                "frames_dropped": x.frames_dropped,
                "detail": x.detail,
            }),
        ),
        Some(Kind::Dropped(x)) => (
            "dropped",
            serde_json::json!({ "count": x.count, "total": x.total, "reason": x.reason }),
        ),
        Some(Kind::Error(x)) => (
            "error",
            serde_json::json!({ "message": x.message, "fatal": x.fatal }),
        ),
        // A room's case events never come here: they become `case_rows`.
        Some(Kind::CaseStarted(_) | Kind::CaseEnded(_)) | None => {
            ("unknown", serde_json::json!({}))
        }
    };
    StreamEventRow {
        stream_id: e.stream_id.clone(),
        case_id: e.case_id.clone(),
        session_epoch: e.session_epoch,
        time_ns: e.time_ns,
        kind: kind.to_owned(),
        detail: detail.to_string(),
    }
}
