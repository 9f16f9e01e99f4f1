//! Lost and duplicated frames: what a run's results say against the frames it sent.

use std::collections::{BTreeMap, BTreeSet};

use orstream_proto::{FrameKey, FrameResult};

/// The frames a run expected answers for and had none (`lost`), and the answers beyond the
/// first for a frame (`duplicated`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Expected frames without a result.
    pub lost: u64,
    /// Results beyond one per frame.
    pub duplicated: u64,
}

/// The frames `seq` 0..`per_stream` of each stream in `stream_ids`, all in `session_epoch`.
pub fn frames(
    stream_ids: impl IntoIterator<Item = String>,
    session_epoch: u64,
    per_stream: u64,
) -> BTreeSet<FrameKey> {
    stream_ids
        .into_iter()
        .flat_map(|stream_id| {
            (0..per_stream).map(move |seq| FrameKey {
                stream_id: stream_id.clone(),
                session_epoch,
                seq,
            })
        })
        .collect()
}

/// Tallies `results` against the `expected` frames. Fails when a stream's results are out of
/// order (by session, then seq) or a result answers a frame that was not expected.
pub fn tally(results: &[FrameResult], expected: &BTreeSet<FrameKey>) -> Tally {
    let mut per_stream: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for r in results {
        per_stream
            .entry(&r.stream_id)
            .or_default()
            .push((r.session_epoch, r.seq));
    }
    for (stream_id, order) in &per_stream {
        assert!(
            order.is_sorted(),
            "{stream_id}: results out of order: {order:?}"
        );
    }
    let keys: Vec<FrameKey> = results.iter().map(FrameResult::key).collect();
    let unexpected: Vec<&FrameKey> = keys.iter().filter(|k| !expected.contains(k)).collect();
    assert!(
        unexpected.is_empty(),
        "results of frames never sent: {unexpected:?}"
    );
    let answered: BTreeSet<&FrameKey> = keys.iter().collect();
    Tally {
        lost: expected.iter().filter(|k| !answered.contains(k)).count() as u64,
        duplicated: (keys.len() - answered.len()) as u64,
    }
}
