//! The intake: the poll loop (consume) and the decode pool behind it (decode).
//!
//! The poll loop is the only caller of `Consumer::poll`, so group membership and rebalances
//! are served on one thread that never waits on inference: it waits only for an in-flight
//! credit and for room in the decode queue. It tags each message with its intake ticket and
//! the consumer epoch (bumped at every rebalance it sees and every rewind it does), which is
//! what lets the output stage drop work read before a position reset.
//!
//! The decode pool turns each message into a prepared frame for the batcher, or answers it at
//! once: poison goes to the dead-letter topic, and in live mode a frame that the batcher
//! would skip anyway (past its deadline, or superseded by newer frames of its stream) is
//! answered before its JPEG is decoded, so catching up on a backlog or an overload is cheap.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use orstream_bus::metrics::checks;
use orstream_bus::{Consumer, ErrorKind, Message, TopicPartition};
use orstream_shell::retry::{Backoff, Streak};
use tokio_util::sync::CancellationToken;

use super::batch::{NotRun, Staged, skipped};
use super::{ADMIN_TIMEOUT, Stages};
use crate::batcher::Skip;
use crate::clock::TICK;
use crate::config::{InferConfig, Mode};
use crate::decode::{
    DecodeContext, Incoming, PreparedFrame, Rejected, dead_letter_headers, prepare_frame,
    read_message,
};
use crate::error::InferError;
use crate::produce::{Answer, DeadLetter, Origin, RewindControl};
use crate::stats::Counters;
use crate::telemetry::{Instruments, frame_span, result_traceparent};

/// Tries at seeking a partition back during a rewind before giving up on it.
const SEEK_TRIES: u32 = 20;
/// The pauses between tries at a rewind whose offsets could not be read: up to 200 ms
/// doubling to 5 s.
const REWIND_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(200),
    max: Duration::from_secs(5),
};

/// A message on its way to a decode thread.
pub(super) struct Polled {
    origin: Origin,
    message: Message,
}

/// Live mode: the intake ticket of the newest message read per stream (message key), so the
/// decode pool can answer a frame that newer ones of its stream will supersede at the batcher
/// anyway without decoding it. Under overload that keeps the CPU for frames that will run.
#[derive(Debug)]
pub(super) struct Newest {
    by_key: Mutex<HashMap<Bytes, u64>>,
    /// Newer frames of a stream that make an older one superseded: `max_pending_per_stream`,
    /// at least a full batch.
    keep: u64,
}

impl Newest {
    /// The tracker in live mode; archive mode runs every frame.
    pub(super) fn for_config(config: &InferConfig) -> Option<Arc<Self>> {
        (config.mode == Mode::Live).then(|| {
            Arc::new(Self {
                by_key: Mutex::new(HashMap::new()),
                // The batcher supersedes only past a full batch; so does this, or the
                // burst a consumer finds when it joins would lose its first frames.
                keep: config
                    .max_pending_per_stream
                    .max(config.batch.max_batch_size) as u64,
            })
        })
    }

    /// Notes that the poll loop read `ticket` (tickets only grow) of the message's stream.
    fn read(&self, key: Option<&Bytes>, ticket: u64) {
        if let Some(key) = key {
            self.by_key
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key.clone(), ticket);
        }
    }

    /// Whether at least `keep` newer frames of the message's stream have been read.
    fn superseded(&self, key: Option<&Bytes>, ticket: u64) -> bool {
        let Some(key) = key else { return false };
        let by_key = self.by_key.lock().unwrap_or_else(PoisonError::into_inner);
        by_key
            .get(key)
            .is_some_and(|&newest| newest >= ticket.saturating_add(self.keep))
    }
}

/// The poll loop's ends of the channels.
pub(super) struct PollLinks {
    pub polled: Sender<Polled>,
    /// Sending takes an in-flight credit; the output stage returns it.
    pub credits: Sender<()>,
}

/// What the poll loop works with.
pub(super) struct PollContext {
    /// Shared with the output stage, which commits its offsets with the group's metadata.
    pub consumer: Arc<Consumer>,
    pub topic: String,
    pub stop: CancellationToken,
    pub links: PollLinks,
    pub rewind: Arc<RewindControl>,
    pub newest: Option<Arc<Newest>>,
    pub counters: Arc<Counters>,
    pub instruments: Arc<Instruments>,
    /// Whether a message polled while the group changes may predate the position reset.
    pub ambiguous_rebalances: bool,
}

/// Subscribes and polls until the stop token is cancelled or the next stage is gone.
pub(super) fn poll_loop(ctx: &PollContext) -> Result<(), InferError> {
    ctx.consumer.subscribe(&[ctx.topic.as_str()])?;
    let mut poller = Poller {
        ctx,
        ticket: 0,
        epoch: 0,
        seen_rebalances: ctx.consumer.rebalances(),
        holding_credit: false,
        served: 0,
        want_rewind: false,
        rewind_failures: Streak::default(),
        rewind_due: None,
    };
    while !ctx.stop.is_cancelled() {
        ctx.instruments.beat();
        if poller.serve_rewind()?.is_break() || poller.want_rewind {
            poller.idle()?;
            continue;
        }
        if poller.take_credit()?.is_break() || poller.poll_once()?.is_break() {
            break;
        }
    }
    Ok(())
}

/// The poll loop's position.
struct Poller<'a> {
    ctx: &'a PollContext,
    /// The next message's intake ticket.
    ticket: u64,
    /// The consumer epoch: bumped at every rebalance seen and every rewind done.
    epoch: u64,
    seen_rebalances: u64,
    /// A credit taken ahead, for the next message read.
    holding_credit: bool,
    /// Rewinds done so far.
    served: u64,
    /// Set when this loop wants a rewind: nothing is read until the output stage asked for it
    /// and it is done, or a message read meanwhile could be committed past the one dropped.
    want_rewind: bool,
    /// Consecutive failures of the rewind asked for, and when to try it again.
    rewind_failures: Streak,
    rewind_due: Option<Instant>,
}

impl Poller<'_> {
    /// Does a rewind the output stage asked for, starting a new epoch. Breaks while one is
    /// asked for and not done: the group's offsets could not be read (the broker away, or its
    /// coordinator not loaded yet after a restart). The consumer is then paused, so the loop
    /// keeps polling it (membership) without reading, and the rewind is tried again after a
    /// pause: reading on from where it is would skip the work being redone.
    fn serve_rewind(&mut self) -> Result<ControlFlow<()>, InferError> {
        let (consumer, rewind) = (&self.ctx.consumer, &self.ctx.rewind);
        let requested = rewind.requested.load(Ordering::Acquire);
        if requested > self.served {
            if self.rewind_due.is_some_and(|due| Instant::now() < due) {
                return Ok(ControlFlow::Break(()));
            }
            // Seek unpaused: a resume then starts from the sought offsets for sure.
            if consumer.is_paused() {
                consumer.resume()?;
            }
            match rewind_to_committed(consumer, &self.ctx.topic) {
                Ok(()) => {}
                Err(InferError::Bus(err)) if err.kind() != ErrorKind::Fatal => {
                    let pause = self.rewind_failures.failed(REWIND_BACKOFF);
                    tracing::warn!(
                        %err,
                        failures = self.rewind_failures.failures(),
                        "rewinding to the committed offsets failed; trying again"
                    );
                    consumer.pause()?;
                    self.rewind_due = Some(Instant::now() + pause);
                    return Ok(ControlFlow::Break(()));
                }
                Err(err) => return Err(err),
            }
            self.rewind_failures.reset();
            self.rewind_due = None;
            self.epoch += 1;
            self.seen_rebalances = consumer.rebalances();
            rewind.served_epoch.store(self.epoch, Ordering::Release);
            rewind.served.store(requested, Ordering::Release);
            self.served = requested;
            self.want_rewind = false;
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Waits for the rewind this loop wants, reading nothing.
    fn idle(&self) -> Result<(), InferError> {
        let consumer = &self.ctx.consumer;
        // Still served: polling a paused consumer keeps it in its group.
        if consumer.is_paused() {
            consumer.poll(TICK / 5)?;
        } else {
            std::thread::sleep(TICK / 5);
        }
        Ok(())
    }

    /// Takes a credit for the next message, pausing the consumer while every one is out;
    /// breaks when the output stage is gone.
    fn take_credit(&mut self) -> Result<ControlFlow<()>, InferError> {
        if self.holding_credit {
            return Ok(ControlFlow::Continue(()));
        }
        let consumer = &self.ctx.consumer;
        match self.ctx.links.credits.try_send(()) {
            Ok(()) => {
                self.holding_credit = true;
                if consumer.is_paused() {
                    consumer.resume()?;
                }
            }
            // Every credit is out: pause and go on polling, so the group keeps this
            // member however long the frames in flight take.
            Err(crossbeam_channel::TrySendError::Full(())) => {
                if !consumer.is_paused() {
                    consumer.pause()?;
                    self.ctx.counters.pauses.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(crossbeam_channel::TrySendError::Disconnected(())) => {
                return Ok(ControlFlow::Break(()));
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// One poll; a message read goes on to [`admit`](Self::admit).
    fn poll_once(&mut self) -> Result<ControlFlow<()>, InferError> {
        let consumer = &self.ctx.consumer;
        let before = consumer.rebalances();
        let polled_message = consumer.poll(TICK);
        let after = consumer.rebalances();
        if after != self.seen_rebalances {
            // Every partition restarts from the committed offsets: a new epoch.
            self.epoch += 1;
            self.seen_rebalances = after;
            // Joined the group: ready, also with no partition (more members than partitions).
            self.ctx
                .instruments
                .health
                .set_ready(checks::PARTITIONS_ASSIGNED, true);
        }
        match polled_message {
            Ok(Some(message)) => return Ok(self.admit(message, before, after)),
            Ok(None) => {}
            Err(err) if err.kind() == ErrorKind::Fatal => return Err(err.into()),
            Err(err) => {
                tracing::warn!(%err, "poll failed; retrying");
                std::thread::sleep(TICK);
            }
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Counts a message read while the consumer's rebalance count went from `before` to
    /// `after`, and hands it to the decode pool with its ticket, or drops it for a rewind.
    fn admit(&mut self, message: Message, before: u64, after: u64) -> ControlFlow<()> {
        let ctx = self.ctx;
        ctx.counters.consumed.fetch_add(1, Ordering::Relaxed);
        ctx.instruments.consumed(&ctx.topic);
        if before != after && ctx.ambiguous_rebalances {
            // Read while the group changed: it may come from before the reset (to be
            // read again) or after it. Drop it and have everything since the last
            // commit read again, so it is answered once, for sure. The output stage
            // decides the rewind, so no commit of its can race the seek.
            tracing::debug!(
                partition = message.partition,
                offset = message.offset,
                "message read during a rebalance; rewinding"
            );
            ctx.rewind.wanted.fetch_add(1, Ordering::AcqRel);
            self.want_rewind = true;
            return ControlFlow::Continue(());
        }
        // A paused consumer delivers nothing, but should one come anyway it waits
        // for a credit here; dropping it would leave a hole under later commits.
        if !self.holding_credit && !wait_for_credit(&ctx.links.credits, &ctx.stop) {
            return ControlFlow::Break(());
        }
        self.holding_credit = false;
        let origin = Origin {
            ticket: self.ticket,
            epoch: self.epoch,
            rebalances: after,
            partition: message.partition,
            offset: message.offset,
            polled_at: Instant::now(),
        };
        if let Some(newest) = &ctx.newest {
            newest.read(message.key.as_ref(), self.ticket);
        }
        self.ticket += 1;
        ctx.rewind.issued.store(self.ticket, Ordering::Release);
        if ctx.links.polled.send(Polled { origin, message }).is_err() {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

/// Takes an in-flight credit, waiting as long as it takes; `false` when the worker stops or
/// the output stage is gone first.
fn wait_for_credit(credits: &Sender<()>, stop: &CancellationToken) -> bool {
    while !stop.is_cancelled() {
        match credits.send_timeout((), TICK) {
            Ok(()) => return true,
            Err(crossbeam_channel::SendTimeoutError::Timeout(())) => {}
            Err(crossbeam_channel::SendTimeoutError::Disconnected(())) => return false,
        }
    }
    false
}

/// Seeks every assigned partition of `topic` back to the group's committed offset (or the
/// start, without one). A partition that cannot be sought and is still assigned is a fatal
/// error: reading on from where it is would skip the work being redone.
fn rewind_to_committed(consumer: &Consumer, topic: &str) -> Result<(), InferError> {
    let assigned: Vec<TopicPartition> = consumer
        .assignment()?
        .into_iter()
        .filter(|tp| tp.topic == topic)
        .collect();
    let committed = consumer.committed(&assigned, ADMIN_TIMEOUT)?;
    for tp in &assigned {
        let offset = committed.get(tp).copied().unwrap_or(0);
        let mut tries = 0;
        loop {
            match consumer.seek(tp, offset, ADMIN_TIMEOUT) {
                Ok(()) => break,
                Err(err) if err.kind() == ErrorKind::Fatal => return Err(err.into()),
                Err(err) => {
                    tries += 1;
                    if tries < SEEK_TRIES {
                        // Right after an assignment the partition's fetcher may not run yet.
                        std::thread::sleep(TICK);
                        continue;
                    }
                    if consumer.assignment()?.contains(tp) {
                        return Err(err.into());
                    }
                    // No longer ours: its new owner starts from the committed offset anyway.
                    tracing::info!(partition = %tp, "not assigned any more; no rewind needed");
                    break;
                }
            }
        }
    }
    Ok(())
}

/// A decode thread's ends of the channels.
#[derive(Clone)]
pub(super) struct DecodeLinks {
    pub polled: Receiver<Polled>,
    /// Every ticket goes on to the batcher, as a frame or as "answered", so its reordering
    /// never waits for one that will not come.
    pub staged: Sender<Staged>,
    pub answers: Sender<Answer>,
}

/// What each decode thread works with.
#[derive(Clone)]
pub(super) struct DecodePool {
    pub ctx: DecodeContext,
    /// The latency budget, in live mode.
    pub budget: Option<Duration>,
    pub newest: Option<Arc<Newest>>,
    pub links: DecodeLinks,
    pub instruments: Arc<Instruments>,
}

/// What the decode pool makes of a frame it read.
enum Decoded {
    /// Ready for the batcher, with its deadline in live mode.
    Ready(Box<PreparedFrame>, Option<Instant>),
    /// Answered without running.
    Answered(Box<Answer>),
}

impl DecodePool {
    /// Starts `workers` decode threads.
    pub(super) fn spawn(self, workers: usize, stages: &mut Stages) -> Result<(), InferError> {
        for index in 0..workers {
            let pool = self.clone();
            stages.spawn(&format!("decode-{index}"), move || pool.run())?;
        }
        Ok(())
    }

    fn run(&self) {
        let DecodeLinks {
            polled,
            staged,
            answers,
        } = &self.links;
        for Polled { origin, message } in polled.iter() {
            let span = frame_span(&message.headers);
            let answer = match self.decode(origin, &message, &span) {
                Ok(Decoded::Ready(mut prepared, deadline)) => {
                    self.instruments
                        .preprocessed(Duration::from_micros(prepared.preprocess_us));
                    prepared.span = span;
                    if staged
                        .send(Staged::Frame(origin, prepared, deadline))
                        .is_err()
                    {
                        return;
                    }
                    continue;
                }
                Ok(Decoded::Answered(stale)) => *stale,
                Err(rejected) => dead_letter(origin, &message, *rejected, span),
            };
            if answers.send(answer).is_err()
                || staged.send(Staged::Answered(origin.ticket)).is_err()
            {
                return;
            }
        }
    }

    /// Reads a message and, unless it can be answered without, decodes its image.
    fn decode(
        &self,
        origin: Origin,
        message: &Message,
        span: &tracing::Span,
    ) -> Result<Decoded, Box<Rejected>> {
        let ctx = &self.ctx;
        let mut incoming = read_message(message, ctx)?;
        incoming.traceparent = result_traceparent(span, incoming.traceparent.take());
        if let Some(redaction) = &incoming.frame.redaction {
            // No image: answered at once, whatever its deadline, and never dead-lettered.
            let why = redaction_reason(redaction);
            let mut answer = early_answer(origin, &incoming, ctx, span.clone(), Skip::Redacted);
            if let Some(result) = &mut answer.result {
                result.status_detail = why;
            }
            return Ok(Decoded::Answered(Box::new(answer)));
        }
        let deadline = self
            .budget
            .map(|budget| deadline_instant(incoming.frame.capture_time_ns, budget));
        if deadline.is_some_and(|d| d <= Instant::now()) {
            // Past its deadline already (read from a backlog): answered without
            // decoding its image, so catching up on stale frames is cheap.
            let answer = early_answer(origin, &incoming, ctx, span.clone(), Skip::Stale);
            return Ok(Decoded::Answered(Box::new(answer)));
        }
        let superseded = |n: &Arc<Newest>| n.superseded(message.key.as_ref(), origin.ticket);
        if self.newest.as_ref().is_some_and(superseded) {
            // Newer frames of its stream are on their way to the batcher, which would keep
            // them and drop this one: answered now, without decoding its image.
            let answer = early_answer(origin, &incoming, ctx, span.clone(), Skip::Overload);
            return Ok(Decoded::Answered(Box::new(answer)));
        }
        prepare_frame(incoming, ctx).map(|prepared| Decoded::Ready(Box::new(prepared), deadline))
    }
}

/// A redacted frame's status detail: the gate's reason (the contract's name) and detail,
/// within the contract's bound on a detail.
fn redaction_reason(redaction: &orstream_proto::Redaction) -> String {
    let reason =
        orstream_proto::RedactionReason::try_from(redaction.reason).map_or("UNSPECIFIED", |r| {
            r.as_str_name()
                .strip_prefix("REDACTION_REASON_")
                .unwrap_or("UNSPECIFIED")
        });
    let mut why = format!("{}: {reason}", super::batch::REDACTED_DETAIL);
    if !redaction.detail.is_empty() {
        why.push_str(": ");
        why.push_str(&redaction.detail);
    }
    let mut end = why.len().min(orstream_proto::wire::MAX_DETAIL_LEN);
    while !why.is_char_boundary(end) {
        end -= 1;
    }
    why.truncate(end);
    why
}

/// The answer of a rejected message: its error result, if any, and its dead letter.
fn dead_letter(
    origin: Origin,
    message: &Message,
    rejected: Rejected,
    span: tracing::Span,
) -> Answer {
    tracing::warn!(
        topic = %message.topic,
        partition = message.partition,
        offset = message.offset,
        reason = %rejected.reason,
        "frame rejected to the dead-letter topic"
    );
    Answer {
        origin,
        result: rejected.result,
        dead_letter: Some(DeadLetter {
            key: message.key.clone(),
            payload: message.payload.clone(),
            headers: dead_letter_headers(message, &rejected.reason),
        }),
        traceparent: result_traceparent(&span, rejected.traceparent),
        span,
    }
}

/// The answer of a frame skipped before decoding: past its deadline, or superseded.
fn early_answer(
    origin: Origin,
    incoming: &Incoming,
    ctx: &DecodeContext,
    span: tracing::Span,
    skip: Skip,
) -> Answer {
    let frame = NotRun {
        result: incoming.result(ctx),
        preprocess_us: incoming.elapsed_us(),
        traceparent: incoming.traceparent.clone(),
        span,
    };
    skipped(origin, frame, skip)
}

/// The monotonic instant of `capture_time_ns + budget` (wall clock), for deadline checks.
fn deadline_instant(capture_time_ns: i64, budget: Duration) -> Instant {
    let budget_ns = i64::try_from(budget.as_nanos()).unwrap_or(i64::MAX);
    let due_ns = capture_time_ns.saturating_add(budget_ns);
    let left_ns = due_ns.saturating_sub(crate::clock::now_ns());
    let now = Instant::now();
    if left_ns >= 0 {
        now + Duration::from_nanos(left_ns.unsigned_abs())
    } else {
        now.checked_sub(Duration::from_nanos(left_ns.unsigned_abs()))
            .unwrap_or(now)
    }
}
