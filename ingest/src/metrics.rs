//! What one stream counts and times, recorded through the global meter
//! ([`orstream_bus::metrics`]): frames published and dropped (by reason), source rebuilds (by
//! reason) and the stream's state. Frames captured and encode time are counted in the pipeline,
//! on its streaming thread (`pipeline::on_new_sample`, `pipeline::install_encode_timer`).
//!
//! Every instrument carries only the source kind (`rtsp`, `file`, `v4l2`, `test`) and, where it
//! applies, a reason or state from the closed sets in [`orstream_bus::metrics::value`]: never a
//! stream id, a location or a case id.

use orstream_bus::metrics::{self, Counter, KeyValue, UpDownCounter, attr};

/// The instruments of one stream, labelled with its source kind. Cheap to clone (the
/// instruments are handles).
#[derive(Clone)]
pub(crate) struct StreamMetrics {
    published: Counter<u64>,
    dropped: Counter<u64>,
    outside_case: Counter<u64>,
    withheld: Counter<u64>,
    gate_duration: metrics::Histogram<f64>,
    reconnects: Counter<u64>,
    streams: UpDownCounter<i64>,
    source_kind: &'static str,
}

impl std::fmt::Debug for StreamMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamMetrics")
            .field("source_kind", &self.source_kind)
            .finish_non_exhaustive()
    }
}

impl StreamMetrics {
    /// The instruments for a stream whose source is of `source_kind`.
    pub(crate) fn new(source_kind: &'static str) -> Self {
        let meter = metrics::meter();
        Self {
            published: metrics::INGEST_FRAMES_PUBLISHED.build(&meter),
            dropped: metrics::INGEST_FRAMES_DROPPED.build(&meter),
            outside_case: metrics::INGEST_FRAMES_OUTSIDE_CASE.build(&meter),
            withheld: metrics::INGEST_FRAMES_WITHHELD.build(&meter),
            gate_duration: metrics::INGEST_GATE_DURATION.build(&meter),
            reconnects: metrics::INGEST_RECONNECTS.build(&meter),
            streams: metrics::INGEST_STREAMS.build(&meter),
            source_kind,
        }
    }

    fn kind(&self) -> KeyValue {
        KeyValue::new(attr::SOURCE_KIND, self.source_kind)
    }

    /// The broker acknowledged one frame.
    pub(crate) fn published(&self) {
        self.published.add(1, &[self.kind()]);
    }

    /// `n` frames will never be published, for `reason` (a `value::*` constant).
    pub(crate) fn dropped(&self, reason: &'static str, n: u64) {
        if n > 0 {
            self.dropped
                .add(n, &[self.kind(), KeyValue::new(attr::REASON, reason)]);
        }
    }

    /// A frame captured while the camera's room had no open case, not published.
    pub(crate) fn outside_case(&self) {
        self.outside_case.add(1, &[self.kind()]);
    }

    /// The privacy gate withheld a frame, for `reason` (`out_of_body`, `margin`,
    /// `gate_unavailable`).
    pub(crate) fn withheld(&self, reason: &'static str) {
        self.withheld
            .add(1, &[self.kind(), KeyValue::new(attr::REASON, reason)]);
    }

    /// The privacy gate judged a frame in `seconds`.
    pub(crate) fn gate_judged(&self, seconds: f64) {
        self.gate_duration.record(seconds, &[self.kind()]);
    }

    /// The source is rebuilt, for `reason` (`stalled`, `error`, `eos`).
    pub(crate) fn reconnect(&self, reason: &'static str) {
        self.reconnects
            .add(1, &[self.kind(), KeyValue::new(attr::REASON, reason)]);
    }

    /// A tracker of this stream's state, counted in no state until its first
    /// [`StreamStateGauge::set`].
    pub(crate) fn state(&self) -> StreamStateGauge {
        StreamStateGauge {
            streams: self.streams.clone(),
            source_kind: self.source_kind,
            current: None,
        }
    }
}

/// One stream's contribution to `orstream.ingest.streams`: +1 in its current state, moved with
/// -1/+1 on every change, and taken away when dropped (the stream ended).
pub(crate) struct StreamStateGauge {
    streams: UpDownCounter<i64>,
    source_kind: &'static str,
    current: Option<&'static str>,
}

impl StreamStateGauge {
    fn add(&self, state: &'static str, n: i64) {
        self.streams.add(
            n,
            &[
                KeyValue::new(attr::SOURCE_KIND, self.source_kind),
                KeyValue::new(attr::STREAM_STATE, state),
            ],
        );
    }

    /// Moves the stream to `state` (a `value::*` stream state).
    pub(crate) fn set(&mut self, state: &'static str) {
        if self.current == Some(state) {
            return;
        }
        if let Some(old) = self.current.replace(state) {
            self.add(old, -1);
        }
        self.add(state, 1);
    }
}

impl Drop for StreamStateGauge {
    fn drop(&mut self) {
        if let Some(old) = self.current.take() {
            self.add(old, -1);
        }
    }
}
