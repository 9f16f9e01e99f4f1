//! What the worker reports: metrics through the OpenTelemetry global meter, spans through
//! `tracing`, and health through a [`HealthReporter`]. All of it costs next to nothing when the
//! process installed no meter provider, no OpenTelemetry layer and no health endpoint.
//!
//! Spans: each consumed frame gets an `infer.frame` span whose parent is the frame's own span
//! (from its `traceparent` header), open from consume to the result's production; the result
//! carries that span's context on, so the sink's transaction joins the same trace. Each forward
//! pass gets an `infer.batch` span linked to every frame span in it (a batch has many parents).
//! Span fields are counts and outcomes only: never a stream, case or frame id.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use orstream_bus::metrics::{
    self, Counter, HealthReporter, Histogram, KeyValue, LagGauge, attr, value,
};
use orstream_bus::{Consumer, Headers, trace};
use orstream_proto::FrameStatus;
use tokio_util::sync::CancellationToken;

use crate::stats::Stats;

/// How often the broker is checked and the consumer lag measured (and the bound on each).
pub(crate) const BROKER_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// The worker's instruments, built once.
pub(crate) struct Instruments {
    model: KeyValue,
    consumed: Counter<u64>,
    results: Counter<u64>,
    dead_letters: Counter<u64>,
    transactions: Counter<u64>,
    transaction_duration: Histogram<f64>,
    commit_duration: Histogram<f64>,
    process: Histogram<f64>,
    batch_size: Histogram<f64>,
    queue: Histogram<f64>,
    preprocess: Histogram<f64>,
    forward: Histogram<f64>,
    postprocess: Histogram<f64>,
    capture_to_result: Histogram<f64>,
    /// Where health is reported.
    pub health: Arc<dyn HealthReporter>,
    /// Forward passes in progress, by ticket, with when each started.
    forwards: Mutex<BTreeMap<u64, Instant>>,
    next_forward: AtomicU64,
    forward_deadline: Duration,
    /// Whether the overdue forward was reported already.
    overdue_told: AtomicBool,
}

/// A forward pass in progress; dropping it ends it (a panic included).
pub(crate) struct ForwardGuard<'a> {
    instruments: &'a Instruments,
    ticket: u64,
}

impl Drop for ForwardGuard<'_> {
    fn drop(&mut self) {
        self.instruments
            .forwards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.ticket);
    }
}

impl std::fmt::Debug for Instruments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instruments").finish_non_exhaustive()
    }
}

impl Instruments {
    /// Instruments for the model `model_name`, reporting health to `health`; a forward pass
    /// longer than `forward_deadline` stops liveness.
    pub fn new(
        model_name: &str,
        health: Arc<dyn HealthReporter>,
        forward_deadline: Duration,
    ) -> Self {
        let meter = metrics::meter();
        Self {
            model: KeyValue::new(attr::MODEL_NAME, model_name.to_owned()),
            consumed: metrics::MESSAGING_CONSUMED.build(&meter),
            results: metrics::INFER_RESULTS.build(&meter),
            dead_letters: metrics::DEAD_LETTERS.build(&meter),
            transactions: metrics::TRANSACTIONS.build(&meter),
            transaction_duration: metrics::TRANSACTION_DURATION.build(&meter),
            commit_duration: metrics::COMMIT_DURATION.build(&meter),
            process: metrics::MESSAGING_PROCESS_DURATION.build(&meter),
            batch_size: metrics::INFER_BATCH_SIZE.build(&meter),
            queue: metrics::INFER_QUEUE_DURATION.build(&meter),
            preprocess: metrics::INFER_PREPROCESS_DURATION.build(&meter),
            forward: metrics::INFER_FORWARD_DURATION.build(&meter),
            postprocess: metrics::INFER_POSTPROCESS_DURATION.build(&meter),
            capture_to_result: metrics::INFER_CAPTURE_TO_RESULT.build(&meter),
            health,
            forwards: Mutex::new(BTreeMap::new()),
            next_forward: AtomicU64::new(0),
            forward_deadline,
            overdue_told: AtomicBool::new(false),
        }
    }

    /// The poll loop went round: liveness beats, unless a forward pass has run past its
    /// deadline. Polling goes on while a replica computes, so the poll loop alone would call
    /// a worker whose device hangs alive for ever.
    pub fn beat(&self) {
        let oldest = self
            .forwards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .min()
            .copied();
        match oldest.map(|started| started.elapsed()) {
            Some(running) if running > self.forward_deadline => {
                if !self.overdue_told.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        running_s = running.as_secs(),
                        deadline_s = self.forward_deadline.as_secs(),
                        "a forward pass is past its deadline: liveness stops so the worker is restarted"
                    );
                }
            }
            _ => self.health.beat(),
        }
    }

    /// A forward pass starts; it is over when the returned guard drops.
    pub fn forward_started(&self) -> ForwardGuard<'_> {
        let ticket = self.next_forward.fetch_add(1, Ordering::Relaxed);
        self.forwards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(ticket, Instant::now());
        ForwardGuard {
            instruments: self,
            ticket,
        }
    }

    /// A message was read from the frames topic.
    pub fn consumed(&self, topic: &str) {
        self.consumed.add(
            1,
            &[KeyValue::new(
                attr::MESSAGING_DESTINATION_NAME,
                topic.to_owned(),
            )],
        );
    }

    /// One frame's decode and preparation took `took`.
    pub fn preprocessed(&self, took: Duration) {
        self.preprocess.record(took.as_secs_f64(), &[]);
    }

    /// A forward pass of `size` frames took `took`.
    pub fn forwarded(&self, size: usize, took: Duration) {
        self.batch_size.record(size as f64, &[]);
        self.forward
            .record(took.as_secs_f64(), std::slice::from_ref(&self.model));
    }

    /// A batch's postprocessing took `took`; its frames waited `waits` before it started.
    pub fn postprocessed(&self, took: Duration, waits: impl Iterator<Item = Duration>) {
        self.postprocess.record(took.as_secs_f64(), &[]);
        for wait in waits {
            self.queue.record(wait.as_secs_f64(), &[]);
        }
    }

    /// A result with `status` was produced `age_ns` after its frame's capture and `processing`
    /// after its message was read from `topic`; `span` is the frame's, which ends with it.
    pub fn produced(
        &self,
        span: tracing::Span,
        status: i32,
        age_ns: i64,
        topic: &str,
        processing: Duration,
    ) {
        self.process.record(
            processing.as_secs_f64(),
            &[KeyValue::new(
                attr::MESSAGING_DESTINATION_NAME,
                topic.to_owned(),
            )],
        );
        let status = FrameStatus::label_of(status);
        span.record("orstream.status", status);
        drop(span);
        if age_ns >= 0 {
            self.capture_to_result
                .record(age_ns as f64 / 1e9, &[KeyValue::new(attr::STATUS, status)]);
        }
    }

    /// A transaction (or offset commit) of `tally` committed, `open_for` after it began; its
    /// commit step took `commit`.
    pub fn committed(
        &self,
        tally: &Stats,
        frames_topic: &str,
        open_for: Duration,
        commit: Duration,
    ) {
        let committed = [KeyValue::new(attr::TRANSACTION_OUTCOME, value::COMMITTED)];
        self.transactions.add(1, &committed);
        self.transaction_duration
            .record(open_for.as_secs_f64(), &committed);
        self.commit_duration
            .record(commit.as_secs_f64(), &committed);
        let by_status = [
            (FrameStatus::Ok, tally.ok),
            (FrameStatus::SkippedStale, tally.skipped_stale),
            (FrameStatus::SkippedOverload, tally.skipped_overload),
            (FrameStatus::DecodeError, tally.decode_error),
            (FrameStatus::Invalid, tally.invalid),
            (FrameStatus::ModelError, tally.model_error),
            (FrameStatus::Redacted, tally.redacted),
        ];
        for (status, count) in by_status {
            if count > 0 {
                self.results
                    .add(count, &[KeyValue::new(attr::STATUS, status.label())]);
            }
        }
        if tally.dead_letters > 0 {
            self.dead_letters.add(
                tally.dead_letters,
                &[
                    KeyValue::new(attr::REASON, "rejected"),
                    KeyValue::new(attr::MESSAGING_DESTINATION_NAME, frames_topic.to_owned()),
                ],
            );
        }
    }

    /// A transaction aborted.
    pub fn aborted(&self) {
        self.transactions.add(
            1,
            &[KeyValue::new(attr::TRANSACTION_OUTCOME, value::ABORTED)],
        );
    }
}

/// The `infer.frame` span of a consumed message, continuing the trace its headers carry.
pub(crate) fn frame_span(headers: &Headers) -> tracing::Span {
    let span = tracing::info_span!(
        "infer.frame",
        otel.kind = "consumer",
        orstream.status = tracing::field::Empty
    );
    trace::set_parent(&span, headers);
    span
}

/// The `traceparent` a result goes out with: its frame span's, when tracing is on, else the
/// frame's own (so a downstream tracer still finds the frame's trace).
pub(crate) fn result_traceparent(span: &tracing::Span, frame: Option<Vec<u8>>) -> Option<Vec<u8>> {
    let mut headers = Headers::default();
    trace::inject_span(&mut headers, span);
    headers
        .get(trace::TRACEPARENT)
        .map(<[u8]>::to_vec)
        .or(frame)
}

/// The `infer.batch` span of a forward pass, linked to each frame span in it.
pub(crate) fn batch_span<'a>(
    size: usize,
    frames: impl Iterator<Item = &'a tracing::Span>,
) -> tracing::Span {
    let span = tracing::info_span!("infer.batch", batch.size = size);
    if span.is_disabled() {
        return span;
    }
    for frame in frames {
        let mut headers = Headers::default();
        trace::inject_span(&mut headers, frame);
        trace::add_link(&span, &headers);
    }
    span
}

/// Now and then, off the poll thread (both ask the broker): whether the broker answers (a
/// poll does not say: librdkafka retries behind it), and the consumer lag.
pub(crate) struct BrokerCheck {
    /// Asks for the frames topic's partitions every [`BROKER_CHECK_INTERVAL`].
    pub check: metrics::BrokerCheck,
    pub gauge: LagGauge,
    pub consumer: Arc<Consumer>,
    pub stop: CancellationToken,
}

impl BrokerCheck {
    /// Checks every [`BROKER_CHECK_INTERVAL`] until the stop token is cancelled.
    pub fn run(self) {
        let Self {
            check,
            gauge,
            consumer,
            stop,
        } = self;
        check.run(
            || stop.is_cancelled(),
            |answered| {
                if !answered {
                    return;
                }
                if let Err(error) = gauge.record(&consumer, BROKER_CHECK_INTERVAL) {
                    tracing::debug!(%error, "consumer lag not measured");
                }
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use super::*;

    /// Counts beats.
    #[derive(Default)]
    struct Beats(AtomicU64);

    impl HealthReporter for Beats {
        fn beat(&self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn set_ready(&self, _check: &str, _ready: bool) {}
    }

    #[test]
    fn a_forward_past_its_deadline_stops_liveness_until_it_ends() {
        let beats = Arc::new(Beats::default());
        let instruments = Instruments::new("m", beats.clone(), Duration::from_millis(50));
        let count = || beats.0.load(Ordering::Relaxed);
        instruments.beat();
        assert_eq!(count(), 1, "idle: alive");
        let forwarding = instruments.forward_started();
        instruments.beat();
        assert_eq!(count(), 2, "a forward within its deadline: alive");
        std::thread::sleep(Duration::from_millis(80));
        instruments.beat();
        instruments.beat();
        assert_eq!(count(), 2, "past the deadline: no beat");
        drop(forwarding);
        instruments.beat();
        assert_eq!(count(), 3, "the forward ended: alive again");
    }
}
