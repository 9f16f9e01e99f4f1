//! The batch stage: the thread that drives [`Batcher`] between the decode pool and the
//! replicas.
//!
//! The decode pool finishes frames out of order, so this stage first restores intake order
//! (every ticket comes, as a frame or as "answered already"), which keeps each stream's frames
//! in order through the batcher. Frames the batcher skips are answered here, without
//! running, and the replicas' measured latencies come back here for the batch sizing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, Sender};
use orstream_proto::{FrameResult, FrameStatus, Timings};

use crate::batcher::{Batcher, BatcherSettings, Pending, Skip};
use crate::clock::TICK;
use crate::config::{InferConfig, Mode};
use crate::decode::{PreparedFrame, micros};
use crate::produce::{Answer, Origin};

/// The detail of a SKIPPED_STALE result.
/// The detail of a frame withheld by ingest's privacy gate; the gate's own reason follows.
pub(super) const REDACTED_DETAIL: &str = "withheld by ingest's privacy gate";
const STALE_DETAIL: &str = "could not meet its deadline (capture time + latency budget)";
/// The detail of a SKIPPED_OVERLOAD result.
const OVERLOAD_DETAIL: &str = "superseded by a newer frame of its stream under overload";
/// Latency reports the replicas may queue before the batcher reads them; one more is dropped
/// (the AIMD sizing needs a sample, not every one).
pub(super) const FEEDBACK_CAPACITY: usize = 64;

/// A batch's size and the time its device step took, from a replica for the batch sizing.
pub(super) type Feedback = (usize, Duration);

/// How many formed batches may wait for a replica. Live: none (a rendezvous), so a batch is
/// formed only when a replica takes it and its stale check is as late as can be. Archive:
/// one, so a replica finds its next batch ready.
pub(super) fn handoff_capacity(mode: Mode) -> usize {
    match mode {
        Mode::Live => 0,
        Mode::Archive => 1,
    }
}

/// What the decode pool hands the batcher, for every ticket: the frame, or a note that the
/// ticket was answered already (so the batcher's reordering does not wait for it).
pub(super) enum Staged {
    Frame(Origin, Box<PreparedFrame>, Option<Instant>),
    Answered(u64),
}

/// A frame in the batcher.
pub(super) struct Job {
    pub origin: Origin,
    pub prepared: Box<PreparedFrame>,
}

/// The batch stage's ends of the channels.
pub(super) struct BatchLinks {
    pub staged: Receiver<Staged>,
    pub batches: Sender<Vec<Job>>,
    pub feedback: Receiver<Feedback>,
    pub answers: Sender<Answer>,
}

/// The batch stage's state; it runs on one thread.
pub(super) struct BatchStage {
    batcher: Batcher<Job>,
    mode: Mode,
    /// Archive mode: frames the batcher may hold before input waits.
    archive_capacity: usize,
    links: BatchLinks,
    /// Staged entries that came before an earlier ticket, by ticket.
    reorder: BTreeMap<u64, Staged>,
    next_ticket: u64,
    input_open: bool,
}

impl BatchStage {
    /// The stage for `config`, expecting batches to take `warm_latency` until one is measured.
    pub(super) fn new(config: &InferConfig, warm_latency: Duration, links: BatchLinks) -> Self {
        let mut batcher = Batcher::new(BatcherSettings {
            max_batch_size: config.batch.max_batch_size,
            max_linger: config.batch.max_linger,
            max_pending_per_stream: (config.mode == Mode::Live)
                .then_some(config.max_pending_per_stream),
            target_latency: config.batch.adaptive.then_some(config.batch.target_latency),
        });
        batcher.set_expected_latency(warm_latency);
        Self {
            batcher,
            mode: config.mode,
            archive_capacity: config.batch.max_batch_size * 2,
            links,
            reorder: BTreeMap::new(),
            next_ticket: 0,
            input_open: true,
        }
    }

    /// Runs until its input is closed and every frame it held is batched or answered, or the
    /// next stage is gone.
    pub(super) fn run(mut self) {
        loop {
            let now = Instant::now();
            self.release_in_order(now);
            while let Ok((len, latency)) = self.links.feedback.try_recv() {
                self.batcher.record_latency(len, latency);
            }
            for (pending, skip) in self.batcher.take_skipped() {
                if self.links.answers.send(skip_answer(pending, skip)).is_err() {
                    return;
                }
            }
            let batcher = &self.batcher;
            if !self.input_open && self.reorder.is_empty() && batcher.is_empty() {
                return;
            }
            let due = batcher.is_due(now) || (!self.input_open && !batcher.is_empty());
            // Only frames released in order count against the archive cap: the reorder buffer
            // must always take input, or a missing ticket stuck behind later ones in the channel
            // would never come. It is bounded by the in-flight credits anyway.
            let accepting = self.input_open
                && (self.mode == Mode::Live || batcher.len() < self.archive_capacity);
            let (staged, batches) = (&self.links.staged, &self.links.batches);
            let mut select = Select::new();
            let recv_index = accepting.then(|| select.recv(staged));
            let send_index = due.then(|| select.send(batches));
            let wake = if due {
                now + TICK
            } else {
                batcher.next_due().unwrap_or(now + TICK).min(now + TICK)
            };
            if recv_index.is_none() && send_index.is_none() {
                std::thread::sleep(wake.saturating_duration_since(now));
                continue;
            }
            let Ok(operation) = select.select_deadline(wake) else {
                continue;
            };
            if Some(operation.index()) == recv_index {
                match operation.recv(staged) {
                    Ok(entry) => {
                        let ticket = match &entry {
                            Staged::Frame(origin, _, _) => origin.ticket,
                            Staged::Answered(ticket) => *ticket,
                        };
                        self.reorder.insert(ticket, entry);
                    }
                    Err(_) => self.input_open = false,
                }
            } else if Some(operation.index()) == send_index {
                // Formed only now that a replica takes it, so the stale check is as late as can be.
                let batch: Vec<Job> = self
                    .batcher
                    .take_batch(Instant::now())
                    .into_iter()
                    .map(|p| p.item)
                    .collect();
                if operation.send(batches, batch).is_err() {
                    return;
                }
            }
        }
    }

    /// Pushes the frames whose turn has come into the batcher.
    fn release_in_order(&mut self, now: Instant) {
        while let Some(entry) = self.reorder.remove(&self.next_ticket) {
            self.next_ticket += 1;
            if let Staged::Frame(origin, prepared, deadline) = entry {
                let stream: Arc<str> = Arc::from(prepared.result.stream_id.as_str());
                self.batcher.push(
                    Pending {
                        ticket: origin.ticket,
                        stream,
                        arrived: now,
                        deadline,
                        item: Job { origin, prepared },
                    },
                    now,
                );
            }
        }
    }
}

fn skip_answer(pending: Pending<Job>, skip: Skip) -> Answer {
    let Job { origin, prepared } = pending.item;
    let PreparedFrame {
        result,
        preprocess_us,
        traceparent,
        span,
        ..
    } = *prepared;
    let frame = NotRun {
        result,
        preprocess_us,
        traceparent,
        span,
    };
    skipped(origin, frame, skip)
}

/// What the answer of a frame that is not run carries on from it.
pub(super) struct NotRun {
    pub result: FrameResult,
    pub preprocess_us: u64,
    pub traceparent: Option<Vec<u8>>,
    pub span: tracing::Span,
}

/// The answer of a frame that is not run: its result marked with `skip`'s status and detail.
pub(super) fn skipped(origin: Origin, frame: NotRun, skip: Skip) -> Answer {
    let NotRun {
        mut result,
        preprocess_us,
        traceparent,
        span,
    } = frame;
    let (status, detail) = match skip {
        Skip::Stale => (FrameStatus::SkippedStale, STALE_DETAIL),
        Skip::Overload => (FrameStatus::SkippedOverload, OVERLOAD_DETAIL),
        Skip::Redacted => (FrameStatus::Redacted, REDACTED_DETAIL),
    };
    result.status = status as i32;
    result.status_detail = detail.to_owned();
    result.timings = Some(Timings {
        queue_wait_us: micros(origin.polled_at.elapsed()),
        preprocess_us,
        ..Timings::default()
    });
    Answer {
        origin,
        result: Some(result),
        dead_letter: None,
        traceparent,
        span,
    }
}
