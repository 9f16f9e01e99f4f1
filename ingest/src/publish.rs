//! One stream's way onto the bus: frames to the frames topic and lifecycle events to the events
//! topic, both keyed by stream_id, with the schema version header.
//!
//! Sends are enqueued without waiting for the broker; a per-stream checker thread waits for each
//! delivery in order, and at most [`MAX_IN_FLIGHT`] messages of a stream await theirs at once,
//! so what a stream holds while the broker is slow or away is bounded. Then a live stream drops
//! the frame it cannot send (counted) and goes on with the next; an archive stream waits, as
//! long as the broker is away, on a producer whose messages never time out (nothing is lost),
//! and keeps its heartbeat meanwhile (waiting on a dependency is not being stuck). A frame
//! whose delivery fails leaves a hole in the epoch's seq on the topic; the checker records the
//! first such failure and the stream starts a new epoch, so seq stays gap-free within every
//! epoch.
//!
//! Each frame carries the W3C trace context of its capture span (`traceparent`, when tracing is
//! on), so the services downstream continue the frame's trace. The checker counts the frames
//! the broker acknowledged and reports the broker's readiness: ready after an acknowledged
//! delivery, not ready after a failed one.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use orstream_bus::metrics::{HealthReporter, checks, value};
use orstream_bus::{BusError, DeliveryHandle, Producer, Record, trace};
use orstream_proto::{Frame, SCHEMA_VERSION, StreamEvent, headers, stream_event};

use crate::config::FullPolicy;
use crate::metrics::StreamMetrics;

/// Messages of one stream that may wait for their acknowledgement at once.
const MAX_IN_FLIGHT: usize = 256;
/// How long the checker waits for one acknowledgement of a live stream; librdkafka fails a
/// message on its own after `message.timeout.ms` (5 minutes by default), so this only guards
/// against a lost report. An archive stream's messages never time out: its checker waits until
/// the producer reports (delivered, or dropped when the producer closes).
const DELIVERY_WAIT: Duration = Duration::from_secs(600);
/// How often [`Publisher::finish`] looks whether the last deliveries are in.
const FINISH_TICK: Duration = Duration::from_millis(20);
/// How long a live frame may wait for room before it is dropped.
const LIVE_QUEUE_WAIT: Duration = Duration::from_millis(100);
/// How long an archive frame or an event waits for room per attempt.
const ARCHIVE_QUEUE_WAIT: Duration = Duration::from_secs(1);

/// What happened to a frame handed to [`Publisher::send_frame`].
#[derive(Debug)]
pub(crate) enum FrameOutcome {
    /// Enqueued on the bus; it has its seq.
    Sent,
    /// Its message would exceed the bus's message size; it was not sent.
    Oversized {
        /// Size of the message.
        bytes: usize,
    },
    /// The bus did not take it (live: no room within a moment, the broker slow or away;
    /// archive: shutting down).
    NotSent(BusError),
}

/// How many messages of a stream await their acknowledgement, and a wait for one to come back.
#[derive(Default)]
struct InFlight {
    count: Mutex<usize>,
    freed: Condvar,
}

impl InFlight {
    /// Takes a place among the [`MAX_IN_FLIGHT`], waiting at most `wait` for one to come free.
    fn take(&self, wait: Duration) -> Result<(), BusError> {
        let count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut count, _timeout) = self
            .freed
            .wait_timeout_while(count, wait, |count| *count >= MAX_IN_FLIGHT)
            .unwrap_or_else(PoisonError::into_inner);
        if *count >= MAX_IN_FLIGHT {
            return Err(BusError::Timeout {
                what: format!(
                    "room to publish: {MAX_IN_FLIGHT} messages of the stream await the \
                     broker's acknowledgement"
                ),
                timeout: wait,
            });
        }
        *count += 1;
        Ok(())
    }

    /// Takes a place whether or not one is free (events: rare, and never worth dropping).
    fn take_anyway(&self) {
        *self.count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    }

    /// Gives a place back: its message was acknowledged, failed, or never sent.
    fn release(&self) {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        *count = count.saturating_sub(1);
        self.freed.notify_one();
    }
}

/// Which message a delivery belongs to, for the checker's report.
#[derive(Debug)]
enum Sent {
    Frame { epoch: u64, seq: u64 },
    Event,
}

/// Publishes one stream's frames and events.
pub(crate) struct Publisher {
    producer: Arc<Producer>,
    frames_topic: String,
    events_topic: String,
    key: Bytes,
    stream_id: String,
    /// The camera's room; empty for a stream configured in `[[streams]]`.
    room_id: String,
    max_message_bytes: usize,
    policy: FullPolicy,
    in_flight: Arc<InFlight>,
    to_checker: Option<Sender<(Sent, DeliveryHandle)>>,
    checker: Option<JoinHandle<()>>,
    /// The first failed frame delivery of the current epoch: (epoch, reason).
    failure: Arc<Mutex<Option<(u64, String)>>>,
}

/// What the delivery checker reports to, besides the stream's failure slot.
pub(crate) struct Reports {
    pub(crate) metrics: StreamMetrics,
    pub(crate) health: Arc<dyn HealthReporter>,
}

impl Publisher {
    /// `producer` must be a patient one (see [`orstream_bus::Bus::patient_producer`]) for an
    /// archive stream: its frames wait for the broker however long it is away.
    pub(crate) fn new(
        producer: Arc<Producer>,
        topics: &Topics<'_>,
        stream_id: &str,
        policy: FullPolicy,
        max_message_bytes: usize,
        reports: Reports,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        let failure = Arc::new(Mutex::new(None));
        let in_flight = Arc::new(InFlight::default());
        let checker = Checker {
            failure: Arc::clone(&failure),
            in_flight: Arc::clone(&in_flight),
            stream_id: stream_id.to_owned(),
            delivery_wait: match policy {
                FullPolicy::DropOldest => DELIVERY_WAIT,
                FullPolicy::Block => Duration::MAX,
            },
            reports,
        };
        let checker = std::thread::Builder::new()
            .name(format!("ingest-acks-{stream_id}"))
            .spawn(move || checker.run(&rx))
            .map_err(|error| {
                tracing::error!(stream_id = %stream_id, %error,
                    "cannot start the delivery checker; deliveries are not checked");
            })
            .ok();
        Self {
            producer,
            frames_topic: topics.frames.to_owned(),
            events_topic: topics.events.to_owned(),
            key: Bytes::copy_from_slice(stream_id.as_bytes()),
            stream_id: stream_id.to_owned(),
            room_id: String::new(),
            max_message_bytes,
            policy,
            in_flight,
            to_checker: checker.as_ref().map(|_| tx),
            checker,
            failure,
        }
    }

    /// Names the room whose camera this stream is, in every event.
    pub(crate) fn in_room(mut self, room: &str) -> Self {
        room.clone_into(&mut self.room_id);
        self
    }

    /// Largest encoded frame that fits in a bus message with its key and headers.
    fn max_frame_bytes(&self) -> usize {
        self.max_message_bytes
            .saturating_sub(crate::config::MESSAGE_OVERHEAD + self.key.len())
    }

    /// Sends `frame` with the trace context of `span` (its capture span). Live: waits briefly
    /// for room, then gives up. Archive: waits for room as long as it takes, calling
    /// `still_waiting` about once a second, and gives up when it answers false.
    pub(crate) fn send_frame(
        &self,
        frame: &Frame,
        span: &tracing::Span,
        still_waiting: impl Fn() -> bool,
    ) -> FrameOutcome {
        let payload = orstream_proto::encode(frame);
        if payload.len() > self.max_frame_bytes() {
            return FrameOutcome::Oversized {
                bytes: payload.len() + crate::config::MESSAGE_OVERHEAD,
            };
        }
        let mut record = Record::new(self.frames_topic.clone(), payload)
            .with_key(self.key.clone())
            .with_header(headers::SCHEMA_VERSION, SCHEMA_VERSION);
        trace::inject_span(&mut record.headers, span);
        let sent = Sent::Frame {
            epoch: frame.session_epoch,
            seq: frame.seq,
        };
        let wait = match self.policy {
            FullPolicy::DropOldest => LIVE_QUEUE_WAIT,
            FullPolicy::Block => ARCHIVE_QUEUE_WAIT,
        };
        loop {
            let error = match self.in_flight.take(wait) {
                Ok(()) => match self.producer.send(&record, wait) {
                    Ok(handle) => {
                        self.track(sent, handle);
                        return FrameOutcome::Sent;
                    }
                    Err(error) => {
                        self.in_flight.release();
                        error
                    }
                },
                Err(error) => error,
            };
            if self.policy == FullPolicy::DropOldest || !error.is_retriable() || !still_waiting() {
                return FrameOutcome::NotSent(error);
            }
            tracing::debug!(stream_id = %self.stream_id, %error, "the bus is busy or away; waiting");
        }
    }

    /// Publishes a lifecycle event for `epoch`. Failures are logged: an event is never worth
    /// stopping the frames for.
    pub(crate) fn send_event(&self, case_id: &str, epoch: u64, mut kind: stream_event::Kind) {
        // Details come from GStreamer and the OS: made to fit the contract, never refused.
        orstream_proto::wire::fit_event_text(&mut kind);
        let event = StreamEvent {
            stream_id: self.stream_id.clone(),
            case_id: case_id.to_owned(),
            session_epoch: epoch,
            time_ns: orstream_shell::clock::now_ns(),
            room_id: self.room_id.clone(),
            kind: Some(kind),
        };
        let record = Record::new(self.events_topic.clone(), orstream_proto::encode(&event))
            .with_key(self.key.clone())
            .with_header(headers::SCHEMA_VERSION, SCHEMA_VERSION);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.producer.send(&record, ARCHIVE_QUEUE_WAIT) {
                Ok(handle) => {
                    self.in_flight.take_anyway();
                    return self.track(Sent::Event, handle);
                }
                Err(error) if error.is_retriable() && Instant::now() < deadline => {}
                Err(error) => {
                    tracing::error!(stream_id = %self.stream_id, topic = %self.events_topic,
                        %error, "stream event not published");
                    return;
                }
            }
        }
    }

    /// Hands a sent message's delivery to the checker, which gives its place back.
    fn track(&self, sent: Sent, handle: DeliveryHandle) {
        let unchecked = match &self.to_checker {
            Some(tx) => tx.send((sent, handle)).is_err(),
            None => true,
        };
        if unchecked {
            self.in_flight.release();
        }
    }

    /// The first failed frame delivery of `epoch`, if any.
    pub(crate) fn delivery_failure(&self, epoch: u64) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|(failed_epoch, _)| *failed_epoch == epoch)
            .map(|(_, reason)| reason.clone())
    }

    /// Waits until every message sent so far is acknowledged or failed, calling `still_waiting`
    /// every few milliseconds meanwhile (an archive stream's last frames wait for the broker
    /// however long it is away). When it answers false, stops waiting: what is still
    /// unacknowledged is then the producer's to deliver, or to report lost when it closes.
    pub(crate) fn finish(mut self, still_waiting: impl Fn() -> bool) {
        self.to_checker.take();
        let Some(checker) = self.checker.take() else {
            return;
        };
        while !checker.is_finished() {
            if !still_waiting() {
                tracing::warn!(stream_id = %self.stream_id,
                    "stopped waiting for the broker to acknowledge the stream's last messages");
                return;
            }
            std::thread::sleep(FINISH_TICK);
        }
        if checker.join().is_err() {
            tracing::error!(stream_id = %self.stream_id, "the delivery checker panicked");
        }
    }
}

/// The topics a stream publishes to.
pub(crate) struct Topics<'a> {
    pub(crate) frames: &'a str,
    pub(crate) events: &'a str,
}

/// Waits for each delivery of a stream in order, and reports what became of it.
struct Checker {
    /// The first failed frame delivery of the current epoch: (epoch, reason).
    failure: Arc<Mutex<Option<(u64, String)>>>,
    in_flight: Arc<InFlight>,
    stream_id: String,
    delivery_wait: Duration,
    reports: Reports,
}

impl Checker {
    fn run(&self, rx: &Receiver<(Sent, DeliveryHandle)>) {
        let stream_id = self.stream_id.as_str();
        let reports = &self.reports;
        // The broker's readiness as last reported by this checker: reported on change only.
        let mut broker_ok = None;
        let mut report_broker = |ok: bool| {
            if broker_ok != Some(ok) {
                broker_ok = Some(ok);
                reports.health.set_ready(checks::BROKER, ok);
            }
        };
        for (sent, handle) in rx {
            let delivered = handle.wait(self.delivery_wait);
            self.in_flight.release();
            let error = match delivered {
                Ok(_) => {
                    if matches!(sent, Sent::Frame { .. }) {
                        reports.metrics.published();
                    }
                    report_broker(true);
                    continue;
                }
                Err(error) => error,
            };
            report_broker(false);
            match sent {
                Sent::Frame { epoch, seq } => {
                    reports.metrics.dropped(value::PUBLISH_FAILED, 1);
                    tracing::error!(stream_id, epoch, seq, %error, "frame delivery failed");
                    let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
                    if failure.as_ref().is_none_or(|(e, _)| *e != epoch) {
                        *failure = Some((
                            epoch,
                            format!("delivery of frame seq {seq} failed: {error}"),
                        ));
                    }
                }
                Sent::Event => tracing::error!(stream_id, %error, "stream event delivery failed"),
            }
        }
    }
}
