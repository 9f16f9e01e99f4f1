//! The database commit: one transaction per batch holds the record's rows, the next offset to
//! read of every partition in the batch, the derivation state of every stream it touched and
//! its outbox entries, so a crash leaves either all of a batch or none of it. Offsets and
//! states are compare-and-set against what the sink read: a second writer on the same
//! partitions, or a retried commit that had in fact landed, rolls back as a [`Outcome::Conflict`]
//! and the sink reloads from the store. While the store is away the batch is kept and retried,
//! and nothing of it is acknowledged.
//!
//! Tracing: each sampled result has a `store result` span, a child of its frame's trace, from
//! when its batch heads for the store until the transaction commits or is given up; the
//! `sink transaction` span is a child of the first of them and links to the others.

use std::time::{Duration, Instant};

use orstream_bus::metrics::value;
use orstream_bus::trace;
use orstream_record::StoreError;
use orstream_record::store::{Store, WriteBatch};
use tokio_util::sync::CancellationToken;
use tracing::Span;

use crate::error::SinkError;
use crate::metrics::{Committed, SinkMetrics};
use crate::prepare::{Prepared, Traced};
use crate::progress::{Progress, Reporter};
use orstream_shell::clock::{now_ms, now_ns};
use orstream_shell::retry::{Backoff, retry};

/// Most links from a transaction span to the traces of the results it stores beyond its
/// parent, which keeps the span small; each of those results has its own span anyway.
const MAX_LINKS: usize = 64;

/// How storing a batch ended, short of an error that retrying cannot fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Stored at `committed_ms` (Unix ms).
    Committed { committed_ms: i64 },
    /// Another writer moved an offset or a state: nothing was stored; reload from the store.
    Conflict,
    /// Shutdown came while the store was away: nothing was stored; it is read again on the
    /// next start.
    Stopped,
}

/// The `store result` spans of a batch's sampled results, which end with its transaction.
pub(crate) struct ResultSpans(Vec<Span>);

impl ResultSpans {
    pub(crate) fn open(traced: &[Traced]) -> Self {
        Self(
            traced
                .iter()
                .map(|t| {
                    let span = tracing::info_span!(
                        "store result",
                        otel.kind = "consumer",
                        orstream.status = t.status,
                        orstream.transaction.outcome = tracing::field::Empty,
                    );
                    trace::set_parent(&span, &t.headers);
                    span
                })
                .collect(),
        )
    }

    /// Records how the transaction ended (`value::COMMITTED` or `value::ABORTED`) and ends
    /// the spans.
    pub(crate) fn end(self, outcome: &'static str) {
        for span in self.0 {
            span.record("orstream.transaction.outcome", outcome);
        }
    }
}

/// Writes `prepared` in one transaction, retrying while the store is away, and records the
/// outcome in the metrics and on the spans.
pub(crate) fn store_batch(
    store: &mut Store,
    prepared: &Prepared,
    results: ResultSpans,
    metrics: &SinkMetrics,
    report: &Reporter,
    backoff: Backoff,
    shutdown: &CancellationToken,
) -> Result<Outcome, SinkError> {
    let span = transaction_span(&prepared.traced);
    let written = retry(
        backoff,
        shutdown,
        || report.store_call(|| write(store, &prepared.batch, &span, metrics)),
        // A conflict is retriable by reading the store again, not by writing the same batch.
        |e| !matches!(e, StoreError::Conflict { .. }) && e.is_retriable(),
        |e, attempt| {
            report.store_retry();
            tracing::warn!(error = %e, attempt, "storing a batch; retrying");
        },
    );
    let outcome = match written {
        Ok(Some(took)) => {
            report.store_ready(true);
            let committed_ms = now_ms();
            metrics.committed(took, now_ns(), &figures(prepared));
            Ok(Outcome::Committed { committed_ms })
        }
        Ok(None) => Ok(Outcome::Stopped),
        Err(StoreError::Conflict { what }) => {
            tracing::warn!(%what, "store conflict: reloading offsets and state");
            report.progress.update(|s| s.conflicts += 1);
            Ok(Outcome::Conflict)
        }
        Err(e) => Err(e.into()),
    };
    let label = match outcome {
        Ok(Outcome::Committed { .. }) => value::COMMITTED,
        _ => value::ABORTED,
    };
    span.record("orstream.transaction.outcome", label);
    results.end(label);
    outcome
}

/// One try at the transaction: how long it took, or the error (counted as an aborted
/// transaction).
fn write(
    store: &mut Store,
    batch: &WriteBatch,
    span: &Span,
    metrics: &SinkMetrics,
) -> Result<Duration, StoreError> {
    let started = Instant::now();
    let written = span.in_scope(|| store.write(batch));
    let took = started.elapsed();
    if written.is_err() {
        metrics.aborted(took);
    }
    written.map(|()| took)
}

fn transaction_span(traced: &[Traced]) -> Span {
    let Some((first, rest)) = traced.split_first() else {
        return Span::none();
    };
    let span = tracing::info_span!(
        "sink transaction",
        orstream.transaction.outcome = tracing::field::Empty,
    );
    trace::set_parent(&span, &first.headers);
    for traced in rest.iter().take(MAX_LINKS) {
        trace::add_link(&span, &traced.headers);
    }
    span
}

fn figures(prepared: &Prepared) -> Committed<'_> {
    Committed {
        results: prepared.results,
        presences: prepared.presences,
        gaps: prepared.gaps,
        tracks: prepared.tracks,
        anomalies: prepared.anomalies,
        capture_ns: &prepared.capture_ns,
        dead_letters: &prepared.dead_letter_reasons,
    }
}

/// Adds a stored batch to the figures, with each message's lag from its timestamp to
/// `committed_ms`.
pub(crate) fn count(progress: &Progress, prepared: &Prepared, committed_ms: i64) {
    let lags = || {
        prepared
            .timestamps_ms
            .iter()
            .map(|t| u64::try_from(committed_ms.saturating_sub(*t)).unwrap_or(0))
    };
    let max_lag = lags().max().unwrap_or(0);
    progress.record_lags(lags());
    let rows = prepared.batch.rows() as u64;
    progress.update(|s| {
        s.messages += prepared.messages;
        s.results += prepared.results;
        s.stream_events += prepared.stream_events;
        s.skipped_replays += prepared.skipped;
        s.rows += rows;
        s.presences += prepared.presences;
        s.gaps += prepared.gaps;
        s.tracks += prepared.tracks;
        s.anomalies += prepared.anomalies;
        s.dead_letters += prepared.dead_letters.len() as u64;
        s.transactions += 1;
        s.max_lag_ms = s.max_lag_ms.max(max_lag);
    });
}
