//! The record's rows for what a batch derives, each a list of values in the order of its
//! table's columns (`SCHEMA.md`); kept apart from the preparation logic so a schema change
//! touches one file with the migrations.

use orstream_bus::Message;
use orstream_proto::{Category, FrameResult, FrameStatus, StreamEvent, stream_event};

use crate::derive::{Gap, Presence, StreamState, TrackRecord};
use crate::store::Value;
use crate::track::TrackPoint;

pub(super) fn anomaly_row(
    message: &Message,
    kind: &str,
    stream_id: String,
    detail: &str,
) -> Vec<Value> {
    vec![
        message.topic.as_str().into(),
        message.partition.into(),
        message.offset.into(),
        kind.into(),
        stream_id.into(),
        detail.into(),
    ]
}

pub(super) fn stream_row(state: &StreamState) -> Option<Vec<Value>> {
    let first = state.case_first_ns?;
    let last = state.position?;
    Some(vec![
        state.case_id.as_str().into(),
        state.stream_id.as_str().into(),
        first.into(),
        last.capture_ns.into(),
        state.case_results.into(),
    ])
}

pub(super) fn presence_row(p: &Presence) -> Vec<Value> {
    vec![
        p.event_id().into(),
        p.case_id.as_str().into(),
        p.stream_id.as_str().into(),
        p.class_id.into(),
        p.label.as_str().into(),
        Category::name_of(p.category).into(),
        p.start_ns.into(),
        p.end_ns.into(),
        p.epoch.into(),
        p.first_seq.into(),
        p.last_seq.into(),
        p.frames_seen.into(),
        p.peak.into(),
        p.mean.into(),
        p.model.name.as_str().into(),
        p.model.version.as_str().into(),
        p.model.digest.as_str().into(),
        p.track_ids
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" ")
            .into(),
    ]
}

pub(super) fn track_row(t: &TrackRecord) -> Vec<Value> {
    let m = &t.motion;
    vec![
        t.event_id().into(),
        t.case_id.as_str().into(),
        t.stream_id.as_str().into(),
        m.track_id.into(),
        t.class_id.into(),
        t.label.as_str().into(),
        t.epoch.into(),
        t.first_seq.into(),
        t.last_seq.into(),
        t.start_ns.into(),
        t.end_ns.into(),
        m.frames_seen.into(),
        Value::Real(m.path_length),
        Value::Real(m.mean_speed),
        Value::Real(m.peak_speed),
        m.idle_ns.into(),
        m.reentries.into(),
        t.peak_score.into(),
        t.model.name.as_str().into(),
        t.model.version.as_str().into(),
        t.model.digest.as_str().into(),
    ]
}

pub(super) fn track_point_row(stream_id: &str, case_id: &str, p: &TrackPoint) -> Vec<Value> {
    vec![
        stream_id.into(),
        p.track_id.into(),
        p.seq.into(),
        case_id.into(),
        p.ns.into(),
        Value::Real(p.cx),
        Value::Real(p.cy),
        Value::Real(p.bbox[0]),
        Value::Real(p.bbox[1]),
        Value::Real(p.bbox[2]),
        Value::Real(p.bbox[3]),
        Value::Real(p.speed),
    ]
}

pub(super) fn gap_row(g: &Gap) -> Vec<Value> {
    vec![
        g.event_id().into(),
        g.case_id.as_str().into(),
        g.stream_id.as_str().into(),
        g.kind.as_str().into(),
        g.epoch.into(),
        g.first_seq.into(),
        g.last_seq.into(),
        g.start_ns.into(),
        g.end_ns.into(),
        g.frames.into(),
        g.reason.as_str().into(),
    ]
}

pub(super) fn frame_row(r: &FrameResult) -> Vec<Value> {
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
    vec![
        r.stream_id.as_str().into(),
        r.session_epoch.into(),
        r.seq.into(),
        r.case_id.as_str().into(),
        r.capture_time_ns.into(),
        FrameStatus::name_of(r.status).into(),
        r.model.as_ref().map_or("", |m| m.version.as_str()).into(),
        serde_json::Value::Array(instances).to_string().into(),
    ]
}

pub(super) fn stream_event_row(e: &StreamEvent) -> Vec<Value> {
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
        None => ("unknown", serde_json::json!({})),
    };
    vec![
        e.stream_id.as_str().into(),
        e.case_id.as_str().into(),
        e.session_epoch.into(),
        e.time_ns.into(),
        kind.into(),
        detail.to_string().into(),
    ]
}
