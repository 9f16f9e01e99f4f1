//! The accounting of every frame of a case, per stream: frames ingest published (from the
//! stream's end events) against results stored, by outcome, and whether the record is
//! complete. A room's case counts every camera that served it (`case_cameras`), one that
//! stored nothing included. Defined once here so `orstream record accounting`, the demo and
//! the end-to-end tests count the same way; statuses are classified by the contract
//! ([`FrameStatus::outcome`]), not by each reader.

use std::collections::BTreeMap;

use orstream_proto::{FrameStatus, Outcome};
use serde::Serialize;

use crate::error::StoreError;
use crate::schema::{CaseCameraRow, DerivationState, StreamEventRow, StreamRow, Table};
use crate::store::{Store, Value};

/// One stream's accounting in a case: every published frame has exactly one stored result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StreamAccounting {
    /// The stream.
    pub stream_id: String,
    /// Frames ingest published, from the stream's end events (None until it ended).
    pub published: Option<u64>,
    /// Frames ingest captured but dropped before publishing (live backpressure).
    pub dropped: u64,
    /// Results stored for the stream in the case.
    pub results: u64,
    /// Stored results that the model ran on (the `frames` table, kept when `store_frames` is
    /// on).
    pub ok: u64,
    /// Stored results that live mode let go unrun.
    pub skipped: u64,
    /// Stored results that failed.
    pub errors: u64,
    /// Stored results of frames ingest's privacy gate withheld (camera out of body).
    pub redacted: u64,
    /// Presence intervals still open (the sink has not seen the frames that close them).
    pub open_events: u64,
    /// Ended, every published frame's result stored, nothing open.
    pub complete: bool,
}

crate::schema::row! {
    /// Stored results of a stream by status.
    StatusCount {
        /// The stream.
        stream_id: String,
        /// The proto `FrameStatus` name.
        status: String,
        /// Results with that status.
        frames: u64,
    }
}

/// Per stream of `case_id`, by stream id (empty for an unknown case); intervals still open
/// are read from the stored derivation states `S`.
pub fn accounting<S: DerivationState>(
    store: &mut Store,
    case_id: &str,
) -> Result<Vec<StreamAccounting>, StoreError> {
    let case = [Value::from(case_id)];
    let streams: Vec<StreamRow> = store.rows(&StreamRow::select("WHERE case_id = $1"), &case)?;
    let mut by_stream: BTreeMap<String, StreamAccounting> = streams
        .into_iter()
        .map(|s| {
            let row = StreamAccounting {
                results: s.results,
                ..StreamAccounting::default()
            };
            (s.stream_id, row)
        })
        .collect();
    // A room's case covers every camera that served it, a camera that stored nothing too.
    let cameras: Vec<CaseCameraRow> =
        store.rows(&CaseCameraRow::select("WHERE case_id = $1"), &case)?;
    for camera in cameras {
        by_stream.entry(camera.stream_id).or_default();
    }
    let counts: Vec<StatusCount> = store.rows(
        "SELECT stream_id, status, COUNT(*) FROM frames WHERE case_id = $1 \
         GROUP BY stream_id, status",
        &case,
    )?;
    for c in counts {
        let row = by_stream.entry(c.stream_id).or_default();
        match FrameStatus::from_name(&c.status).map_or(Outcome::Failed, FrameStatus::outcome) {
            Outcome::Ok => row.ok += c.frames,
            Outcome::Skipped => row.skipped += c.frames,
            Outcome::Failed => row.errors += c.frames,
            Outcome::Redacted => row.redacted += c.frames,
        }
    }
    let ends: Vec<StreamEventRow> = store.rows(
        &StreamEventRow::select("WHERE case_id = $1 AND kind = 'ended'"),
        &case,
    )?;
    for end in ends {
        let detail: serde_json::Value =
            serde_json::from_str(&end.detail).map_err(|e| StoreError::Detail {
                what: format!("the end event of stream {}", end.stream_id),
                reason: e.to_string(),
            })?;
        let count = |key: &str| detail.get(key).and_then(serde_json::Value::as_u64);
        let row = by_stream.entry(end.stream_id).or_default();
        row.published = Some(row.published.unwrap_or(0) + count("frames_published").unwrap_or(0));
        row.dropped += count("frames_dropped").unwrap_or(0);
    }
    for state in store.states_of_case::<S>(case_id)? {
        for event in state.open_events() {
            by_stream.entry(event.stream_id).or_default().open_events += 1;
        }
    }
    Ok(by_stream
        .into_iter()
        .map(|(stream_id, mut row)| {
            row.stream_id = stream_id;
            row.complete = row.published == Some(row.results) && row.open_events == 0;
            row
        })
        .collect())
}
