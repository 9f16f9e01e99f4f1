//! The output stage: answers in intake order -> results (and dead letters) on the bus,
//! committed with the consumed offsets.
//!
//! Exactly-once: a transaction is opened at the first answer after a commit; results and dead
//! letters are sent into it; at the commit interval the consumer's offsets (one past the last
//! answered message per partition, group metadata read anew) are added and it commits. Since
//! answers come in intake order, every answered message before an offset has its result in
//! the same or an earlier transaction.
//!
//! Work read before a position reset must not be committed, because the reset reads it again:
//! - every answer carries the consumer *epoch* it was read in (the poll loop bumps it at each
//!   rebalance it sees and at each rewind); an answer from a newer epoch aborts the open
//!   transaction, and answers from older epochs are dropped;
//! - before committing, the consumer's rebalance count must still be the one the
//!   transaction's messages were read under, or it aborts;
//! - an abortable error aborts and asks the poll loop to rewind to the committed offsets, and
//!   answers are dropped until that rewind is done; a fatal error (fenced, or a commit that
//!   timed out) recreates the producer, whose `init` fences the old one, then rewinds.
//!
//! At-least-once: results are produced as they come; at the commit interval the producer is
//! flushed, every delivery checked, and only then the offsets are committed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError};
use orstream_bus::{
    Bus, BusError, Consumer, DeliveryHandle, ErrorKind, Headers, Offsets, Producer, Record,
    TopicPartition, TransactionalProducer,
};
use orstream_proto::{FrameResult, SCHEMA_VERSION, headers};
use orstream_shell::retry::Backoff;

use crate::clock::TICK;
use crate::config::{CommitPolicy, DeliveryGuarantee};
use crate::error::InferError;
use crate::stats::{Counters, Stats};
use crate::telemetry::Instruments;

/// How long a send may wait for room in the producer's queue.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on transaction steps (init, offsets, commit, abort) and flushes.
const BUS_TIMEOUT: Duration = Duration::from_secs(30);
/// Tries to recreate a transactional producer, failing other than by the broker's absence,
/// before the worker gives up.
const RECREATE_TRIES: u32 = 10;
/// The pauses between those tries: up to 200 ms doubling to 3.2 s, jittered so the replicas of
/// a group that lost the broker together do not come back together.
const RECREATE_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(200),
    max: Duration::from_millis(3200),
};

/// Where a message came from and when, carried through the stages with it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Origin {
    /// Intake position; answers are emitted in this order.
    pub ticket: u64,
    /// The consumer epoch it was read in (see the module doc).
    pub epoch: u64,
    /// The consumer's rebalance count when it was read.
    pub rebalances: u64,
    /// Partition of the frames topic.
    pub partition: i32,
    /// Offset in it.
    pub offset: i64,
    /// When the poll loop received it.
    pub polled_at: Instant,
}

/// A rejected message, to the dead-letter topic.
#[derive(Debug)]
pub(crate) struct DeadLetter {
    pub key: Option<Bytes>,
    pub payload: Bytes,
    pub headers: Headers,
}

/// The answer to one consumed message: its result (absent when the frame's identity could not
/// be read) and, for poison, its dead letter.
#[derive(Debug)]
pub(crate) struct Answer {
    pub origin: Origin,
    pub result: Option<FrameResult>,
    pub dead_letter: Option<DeadLetter>,
    pub traceparent: Option<Vec<u8>>,
    /// The frame's span, closed once the result is produced.
    pub span: tracing::Span,
}

/// Rewinds of the consumer to the committed offsets, always decided by the output stage (so
/// nothing it commits can race the seek): it aborts its open work, asks, and drops every
/// answer until the poll loop has done it. The poll loop, when it needs one itself, asks the
/// output stage to ask.
#[derive(Debug, Default)]
pub(crate) struct RewindControl {
    /// Rewinds the poll loop wants (a message read across an in-process rebalance).
    pub wanted: AtomicU64,
    /// Of those, how many the output stage has turned into requests.
    pub wanted_seen: AtomicU64,
    /// Rewinds asked for so far.
    pub requested: AtomicU64,
    /// Rewinds done so far (stored after `served_epoch`).
    pub served: AtomicU64,
    /// The epoch the poll loop moved to at the last rewind it did.
    pub served_epoch: AtomicU64,
    /// Intake tickets the poll loop has given out: while the output stage has emitted fewer,
    /// frames are in flight (the adaptive commit policy waits a little for them).
    pub issued: AtomicU64,
}

/// Topics and timing of the output stage.
#[derive(Debug, Clone)]
pub(crate) struct OutputSettings {
    pub delivery: DeliveryGuarantee,
    pub frames_topic: String,
    pub results_topic: String,
    pub dlq_topic: String,
    pub transactional_id: String,
    pub commit_policy: CommitPolicy,
    pub commit_interval: Duration,
    pub commit_linger: Duration,
    /// Dead-letter payloads are cut to this many bytes so they fit the broker's limit.
    pub max_dlq_payload: usize,
}

/// Where results go: a transactional producer under exactly-once, a plain one under
/// at-least-once.
enum ResultProducer {
    Transactional(TransactionalProducer),
    Plain(Producer),
}

/// What was sent since the last commit.
struct Open {
    epoch: u64,
    rebalances: u64,
    started: Instant,
    /// When its latest answer was emitted.
    last_answer: Instant,
    offsets: Offsets,
    tally: Stats,
    /// At-least-once: deliveries to check before committing offsets.
    deliveries: Vec<DeliveryHandle>,
}

/// The output stage's state; it runs on one thread.
pub(crate) struct OutputStage {
    settings: OutputSettings,
    bus: Bus,
    producer: ResultProducer,
    consumer: Arc<Consumer>,
    open: Option<Open>,
    /// Answers read in an older epoch are dropped.
    min_epoch: u64,
    /// A rewind asked for and not yet done: answers are dropped until it is.
    awaiting_rewind: Option<u64>,
    rewind: Arc<RewindControl>,
    counters: Arc<Counters>,
    instruments: Arc<Instruments>,
    /// Answers waiting for their turn, by ticket.
    reorder: BTreeMap<u64, Answer>,
    next_ticket: u64,
    /// When this worker's producer was fenced lately (within [`FENCING_WINDOW`]).
    fencings: VecDeque<Instant>,
}

/// Fencings within this window...
const FENCING_WINDOW: Duration = Duration::from_secs(60);
/// ...that mean another live worker shares the transactional id. One is normal (this worker
/// paused past its session and came back to find a successor); several in a row are two
/// workers taking the id from each other.
const FENCINGS_IN_USE: usize = 3;

impl OutputStage {
    /// Creates the producer (and, with transactions, registers its id, which fences any
    /// earlier producer with the same id).
    pub fn new(
        settings: OutputSettings,
        bus: Bus,
        consumer: Arc<Consumer>,
        rewind: Arc<RewindControl>,
        counters: Arc<Counters>,
        instruments: Arc<Instruments>,
    ) -> Result<Self, InferError> {
        let producer = Self::make_producer(&settings, &bus)?;
        Ok(Self {
            settings,
            bus,
            producer,
            consumer,
            open: None,
            min_epoch: 0,
            awaiting_rewind: None,
            rewind,
            counters,
            instruments,
            reorder: BTreeMap::new(),
            next_ticket: 0,
            fencings: VecDeque::new(),
        })
    }

    fn aborted(&self) {
        self.counters.aborts.fetch_add(1, Ordering::Relaxed);
        self.instruments.aborted();
    }

    fn make_producer(settings: &OutputSettings, bus: &Bus) -> Result<ResultProducer, InferError> {
        Ok(match settings.delivery {
            DeliveryGuarantee::ExactlyOnce => {
                let producer = bus.transactional_producer(&settings.transactional_id)?;
                producer.init(BUS_TIMEOUT)?;
                ResultProducer::Transactional(producer)
            }
            DeliveryGuarantee::AtLeastOnce => ResultProducer::Plain(bus.producer()?),
        })
    }

    /// When the open transaction is due to commit, if one is open.
    pub fn commit_due(&self) -> Option<Instant> {
        let in_flight = self.rewind.issued.load(Ordering::Acquire) > self.next_ticket;
        self.open
            .as_ref()
            .map(|open| commit_at(&self.settings, open.started, open.last_answer, in_flight))
    }

    /// Takes an answer in any order; emits every answer whose turn has come. Returns how many
    /// were emitted (each frees one in-flight slot).
    pub fn accept(&mut self, answer: Answer) -> Result<usize, InferError> {
        self.reorder.insert(answer.origin.ticket, answer);
        let mut emitted = 0;
        while let Some(answer) = self.reorder.remove(&self.next_ticket) {
            self.next_ticket += 1;
            emitted += 1;
            self.emit(answer)?;
        }
        Ok(emitted)
    }

    /// Answers waiting for an earlier ticket.
    pub fn waiting(&self) -> usize {
        self.reorder.len()
    }

    /// Runs the output stage until every answer sender is gone, then commits what is open.
    /// Each emitted answer gives its in-flight credit back to the poll loop.
    pub fn run(
        mut self,
        answers: &Receiver<Answer>,
        credits: &Receiver<()>,
    ) -> Result<(), InferError> {
        loop {
            self.serve_wanted_rewind()?;
            let wake = self
                .commit_due()
                .unwrap_or_else(|| Instant::now() + TICK)
                .min(Instant::now() + TICK);
            match answers.recv_deadline(wake) {
                Ok(answer) => {
                    let emitted = self.accept(answer)?;
                    for _ in 0..emitted {
                        // Every ticket took a credit before it was read, so one is there.
                        let _ = credits.try_recv();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.commit_due().is_some_and(|due| Instant::now() >= due) {
                self.commit()?;
            }
        }
        if self.waiting() > 0 {
            tracing::warn!(
                waiting = self.waiting(),
                "answers left without their predecessors at shutdown; they are redone after a restart"
            );
        }
        self.commit()
    }

    /// Turns a rewind the poll loop wants into one this stage asks for, after aborting the
    /// open work.
    pub fn serve_wanted_rewind(&mut self) -> Result<(), InferError> {
        let wanted = self.rewind.wanted.load(Ordering::Acquire);
        if wanted > self.rewind.wanted_seen.load(Ordering::Acquire) {
            self.rewind.wanted_seen.store(wanted, Ordering::Release);
            self.end_open_epoch()?;
            self.request_rewind();
        }
        Ok(())
    }

    fn emit(&mut self, answer: Answer) -> Result<(), InferError> {
        let origin = answer.origin;
        if let Some(request) = self.awaiting_rewind {
            if self.rewind.served.load(Ordering::Acquire) >= request {
                let epoch = self.rewind.served_epoch.load(Ordering::Acquire);
                self.min_epoch = self.min_epoch.max(epoch);
                self.awaiting_rewind = None;
            } else {
                self.counters.discarded.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        }
        if origin.epoch < self.min_epoch {
            self.counters.discarded.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if self
            .open
            .as_ref()
            .is_some_and(|open| open.epoch < origin.epoch)
        {
            // The position was reset after the open work was read: it will be read again.
            self.end_open_epoch()?;
        }
        self.min_epoch = origin.epoch;
        if self.open.is_none() {
            if let ResultProducer::Transactional(producer) = &self.producer
                && let Err(err) = producer.begin()
            {
                return self.on_error(err);
            }
            let now = Instant::now();
            self.open = Some(Open {
                epoch: origin.epoch,
                rebalances: origin.rebalances,
                started: now,
                last_answer: now,
                offsets: Offsets::new(),
                tally: Stats::default(),
                deliveries: Vec::new(),
            });
        }
        let mut records = Vec::with_capacity(2);
        let mut tally = Stats::default();
        if let Some(mut result) = answer.result {
            result.result_time_ns = crate::clock::now_ns();
            tally.count_status(result.status);
            self.instruments.produced(
                answer.span,
                result.status,
                result.result_time_ns.saturating_sub(result.capture_time_ns),
                &self.settings.frames_topic,
                origin.polled_at.elapsed(),
            );
            let mut record = Record::new(
                self.settings.results_topic.clone(),
                orstream_proto::encode(&result),
            )
            .with_key(result.stream_id.clone().into_bytes())
            .with_header(headers::SCHEMA_VERSION, SCHEMA_VERSION);
            if let Some(traceparent) = &answer.traceparent {
                record = record.with_header(headers::TRACEPARENT, traceparent.clone());
            }
            records.push(record);
        }
        if let Some(letter) = answer.dead_letter {
            tally.dead_letters += 1;
            if records.is_empty() {
                tally.unanswerable += 1;
            }
            let mut payload = letter.payload;
            payload.truncate(self.settings.max_dlq_payload);
            records.push(Record {
                topic: self.settings.dlq_topic.clone(),
                key: letter.key,
                payload,
                headers: letter.headers,
            });
        }
        for record in &records {
            let sent = match &self.producer {
                ResultProducer::Transactional(p) => {
                    p.send(record, QUEUE_TIMEOUT).map(|h| (h, false))
                }
                ResultProducer::Plain(p) => p.send(record, QUEUE_TIMEOUT).map(|h| (h, true)),
            };
            match sent {
                Ok((handle, keep)) => {
                    if keep && let Some(open) = self.open.as_mut() {
                        open.deliveries.push(handle);
                    }
                }
                Err(err) => return self.on_error(err),
            }
        }
        if let Some(open) = self.open.as_mut() {
            let tp = TopicPartition::new(self.settings.frames_topic.clone(), origin.partition);
            let next = open.offsets.entry(tp).or_insert(origin.offset + 1);
            *next = (*next).max(origin.offset + 1);
            add(&mut open.tally, &tally);
            open.last_answer = Instant::now();
        }
        Ok(())
    }

    /// The open work belongs to an epoch that has ended: abort it (exactly-once), or commit
    /// what was already produced (at-least-once, where it is visible anyway).
    fn end_open_epoch(&mut self) -> Result<(), InferError> {
        match self.settings.delivery {
            DeliveryGuarantee::ExactlyOnce => {
                self.aborted();
                self.abort_open()
            }
            DeliveryGuarantee::AtLeastOnce => self.commit(),
        }
    }

    /// Aborts the open transaction; its answers are discarded.
    fn abort_open(&mut self) -> Result<(), InferError> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        self.counters.discarded.fetch_add(
            open.tally.results() + open.tally.unanswerable,
            Ordering::Relaxed,
        );
        if let ResultProducer::Transactional(producer) = &self.producer
            && let Err(err) = producer.abort(BUS_TIMEOUT)
        {
            tracing::warn!(%err, "abort failed; recreating the transactional producer");
            self.recreate()?;
        }
        Ok(())
    }

    /// Reacts to a bus error on the open work.
    fn on_error(&mut self, err: BusError) -> Result<(), InferError> {
        tracing::warn!(%err, kind = ?err.kind(), "output error; the open work is redone");
        self.aborted();
        match err.kind() {
            ErrorKind::Fatal if matches!(self.producer, ResultProducer::Transactional(_)) => {
                self.check_fencing(&err)?;
                if let Some(open) = self.open.take() {
                    self.counters
                        .discarded
                        .fetch_add(open.tally.results(), Ordering::Relaxed);
                }
                self.recreate()?;
            }
            _ => self.abort_open()?,
        }
        self.request_rewind();
        Ok(())
    }

    /// Stops the worker when `err` is one fencing too many: another live worker shares the
    /// transactional id, and recreating the producer would only fence it back.
    fn check_fencing(&mut self, err: &BusError) -> Result<(), InferError> {
        if !err.is_fenced() {
            return Ok(());
        }
        let now = Instant::now();
        self.fencings.push_back(now);
        while self
            .fencings
            .front()
            .is_some_and(|&t| now.duration_since(t) > FENCING_WINDOW)
        {
            self.fencings.pop_front();
        }
        if self.fencings.len() >= FENCINGS_IN_USE {
            return Err(InferError::TransactionalIdInUse {
                transactional_id: self.settings.transactional_id.clone(),
                fencings: self.fencings.len(),
                window: FENCING_WINDOW,
            });
        }
        Ok(())
    }

    fn request_rewind(&mut self) {
        let request = self.rewind.requested.fetch_add(1, Ordering::AcqRel) + 1;
        self.awaiting_rewind = Some(request);
        self.counters.rewinds.fetch_add(1, Ordering::Relaxed);
    }

    /// Replaces the producer: the new one's `init` fences the old one and resolves whatever
    /// transaction it left open. While the broker is away (`init` times out, or the
    /// coordinator cannot be reached) it keeps trying, as long as the outage lasts; the
    /// broker check reports it meanwhile. Any other error ends the worker after
    /// [`RECREATE_TRIES`] tries.
    fn recreate(&mut self) -> Result<(), InferError> {
        self.open = None;
        let mut failures = 0;
        let mut attempt = 0u32;
        loop {
            match Self::make_producer(&self.settings, &self.bus) {
                Ok(producer) => {
                    self.producer = producer;
                    self.counters
                        .producer_restarts
                        .fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(err) => {
                    let broker_away = matches!(&err, InferError::Bus(e) if e.is_retriable());
                    if !broker_away {
                        failures += 1;
                        if failures >= RECREATE_TRIES {
                            return Err(err);
                        }
                    }
                    tracing::warn!(%err, attempt, broker_away, "recreating the transactional producer");
                    std::thread::sleep(RECREATE_BACKOFF.delay(attempt));
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// Commits the open work: offsets and transaction, or flush then offsets.
    pub fn commit(&mut self) -> Result<(), InferError> {
        let Some(mut open) = self.open.take() else {
            return Ok(());
        };
        let began = Instant::now();
        match &self.producer {
            ResultProducer::Transactional(producer) => {
                let rebalances = self.consumer.rebalances();
                if rebalances != open.rebalances {
                    // Its messages were read before the group changed; their partitions
                    // restart from the committed offsets and read them again.
                    self.open = Some(open);
                    self.aborted();
                    return self.abort_open();
                }
                let steps = self.consumer.group_metadata().and_then(|meta| {
                    producer.send_offsets_to_transaction(&open.offsets, &meta, BUS_TIMEOUT)?;
                    let offsets_added = began.elapsed();
                    producer.commit(BUS_TIMEOUT)?;
                    tracing::debug!(
                        offsets_ms = offsets_added.as_secs_f64() * 1e3,
                        end_ms = (began.elapsed() - offsets_added).as_secs_f64() * 1e3,
                        results = open.tally.results(),
                        "transaction committed"
                    );
                    Ok(())
                });
                if let Err(err) = steps {
                    self.open = Some(open);
                    return self.on_error(err);
                }
            }
            ResultProducer::Plain(producer) => {
                let delivered = producer.flush(BUS_TIMEOUT).and_then(|()| {
                    for handle in open.deliveries.drain(..) {
                        handle.wait(BUS_TIMEOUT)?;
                    }
                    Ok(())
                });
                if let Err(err) = delivered {
                    // Not everything got out: do not move the offsets; read it all again.
                    tracing::warn!(%err, "delivery failed; rewinding to the committed offsets");
                    self.aborted();
                    self.request_rewind();
                    return Ok(());
                }
                if let Err(err) = self.consumer.commit(&open.offsets) {
                    // The results are out; a later commit or a re-read repeats them at worst.
                    tracing::warn!(%err, "offset commit failed");
                    self.aborted();
                    return Ok(());
                }
            }
        }
        self.counters.add(&open.tally);
        self.counters.commits.fetch_add(1, Ordering::Relaxed);
        self.instruments.committed(
            &open.tally,
            &self.settings.frames_topic,
            open.started.elapsed(),
            began.elapsed(),
        );
        Ok(())
    }
}

/// When a transaction opened at `started`, whose latest answer came at `last_answer`, is to
/// commit; `in_flight` says whether frames read are still unanswered.
///
/// Why adaptive: a read_committed reader sees a result only when its transaction commits, so
/// a fixed interval adds up to the whole interval to every result. Committing once the
/// answers stop coming adds only the commit itself. The output stage runs on its own thread,
/// so the next batch's forward pass overlaps the commit; the answers that arrive meanwhile
/// wait in the channel and go into the next transaction together, so under load the commits
/// batch themselves (one per commit time) and at light load each batch commits alone. While
/// other frames are in flight, a short linger lets the rest of a batch join its
/// transaction instead of waiting a whole commit behind it; `commit_interval` bounds the
/// transaction when answers never pause.
fn commit_at(
    settings: &OutputSettings,
    started: Instant,
    last_answer: Instant,
    in_flight: bool,
) -> Instant {
    let cap = started + settings.commit_interval;
    match settings.commit_policy {
        CommitPolicy::Interval => cap,
        CommitPolicy::Adaptive if !in_flight => last_answer,
        CommitPolicy::Adaptive => (last_answer + settings.commit_linger).min(cap),
    }
}

fn add(into: &mut Stats, tally: &Stats) {
    into.ok += tally.ok;
    into.skipped_stale += tally.skipped_stale;
    into.skipped_overload += tally.skipped_overload;
    into.decode_error += tally.decode_error;
    into.invalid += tally.invalid;
    into.model_error += tally.model_error;
    into.redacted += tally.redacted;
    into.dead_letters += tally.dead_letters;
    into.unanswerable += tally.unanswerable;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(policy: CommitPolicy) -> OutputSettings {
        OutputSettings {
            delivery: DeliveryGuarantee::ExactlyOnce,
            frames_topic: "f".into(),
            results_topic: "r".into(),
            dlq_topic: "d".into(),
            transactional_id: "t".into(),
            commit_policy: policy,
            commit_interval: Duration::from_millis(100),
            commit_linger: Duration::from_millis(2),
            max_dlq_payload: 1,
        }
    }

    #[test]
    fn adaptive_commits_at_once_when_nothing_else_is_in_flight() {
        let s = settings(CommitPolicy::Adaptive);
        let started = Instant::now();
        let last = started + Duration::from_millis(30);
        assert_eq!(commit_at(&s, started, last, false), last);
    }

    #[test]
    fn adaptive_lingers_for_frames_in_flight_within_the_interval() {
        let s = settings(CommitPolicy::Adaptive);
        let started = Instant::now();
        let last = started + Duration::from_millis(30);
        assert_eq!(
            commit_at(&s, started, last, true),
            last + Duration::from_millis(2)
        );
        // Answers that never pause still commit at the interval.
        let late = started + Duration::from_millis(99);
        assert_eq!(
            commit_at(&s, started, late, true),
            started + Duration::from_millis(100)
        );
    }

    #[test]
    fn interval_commits_at_the_interval_whatever_the_answers() {
        let s = settings(CommitPolicy::Interval);
        let started = Instant::now();
        for in_flight in [false, true] {
            assert_eq!(
                commit_at(&s, started, started, in_flight),
                started + Duration::from_millis(100)
            );
        }
    }
}
