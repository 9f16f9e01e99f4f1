//! One stream's way onto the bus: frames to the frames topic and lifecycle events to the events
//! topic, both keyed by stream_id, with the schema version header.
//!
//! Sends are enqueued without waiting for the broker; a per-stream checker thread waits for each
//! delivery in order, so the number of messages in flight is bounded (a slow broker blocks the
//! publisher, which in live mode makes the frame queue drop its oldest frames). A frame whose
//! delivery fails leaves a hole in the epoch's seq on the topic; the checker records the first
//! such failure and the stream starts a new epoch, so seq stays gap-free within every epoch.
//!
//! Each frame carries the W3C trace context of its capture span (`traceparent`, when tracing is
//! on), so the services downstream continue the frame's trace. The checker counts the frames
//! the broker acknowledged and reports the broker's readiness: ready after an acknowledged
//! delivery, not ready after a failed one.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
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
/// How long the checker waits for one acknowledgement; librdkafka fails a message on its own
/// after `message.timeout.ms` (5 minutes by default), so this only guards against a lost report.
const DELIVERY_WAIT: Duration = Duration::from_secs(600);
/// How long a live frame may wait for room in the producer's queue before it is dropped.
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
    /// The bus did not take it (live: its queue stayed full; archive: shutting down).
    NotSent(BusError),
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
    max_message_bytes: usize,
    in_flight: Option<SyncSender<(Sent, DeliveryHandle)>>,
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
    pub(crate) fn new(
        producer: Arc<Producer>,
        frames_topic: &str,
        events_topic: &str,
        stream_id: &str,
        max_message_bytes: usize,
        reports: Reports,
    ) -> Self {
        let (tx, rx) = mpsc::sync_channel(MAX_IN_FLIGHT);
        let failure = Arc::new(Mutex::new(None));
        let checker_failure = Arc::clone(&failure);
        let checker_stream = stream_id.to_owned();
        let checker = std::thread::Builder::new()
            .name(format!("ingest-acks-{stream_id}"))
            .spawn(move || check_deliveries(&rx, &checker_failure, &checker_stream, &reports))
            .map_err(|error| {
                tracing::error!(stream_id = %stream_id, %error,
                    "cannot start the delivery checker; deliveries are not checked");
            })
            .ok();
        Self {
            producer,
            frames_topic: frames_topic.to_owned(),
            events_topic: events_topic.to_owned(),
            key: Bytes::copy_from_slice(stream_id.as_bytes()),
            stream_id: stream_id.to_owned(),
            max_message_bytes,
            in_flight: checker.as_ref().map(|_| tx),
            checker,
            failure,
        }
    }

    /// Largest encoded frame that fits in a bus message with its key and headers.
    fn max_frame_bytes(&self) -> usize {
        self.max_message_bytes
            .saturating_sub(crate::config::MESSAGE_OVERHEAD + self.key.len())
    }

    /// Sends `frame` with the trace context of `span` (its capture span). Live: waits briefly
    /// for room in the producer's queue, then gives up. Archive: waits for room as long as it
    /// takes, unless `give_up_at` has passed.
    pub(crate) fn send_frame(
        &self,
        frame: &Frame,
        span: &tracing::Span,
        policy: FullPolicy,
        give_up_at: impl Fn() -> bool,
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
        match policy {
            FullPolicy::DropOldest => match self.producer.send(&record, LIVE_QUEUE_WAIT) {
                Ok(handle) => {
                    self.track(sent, handle);
                    FrameOutcome::Sent
                }
                Err(error) => FrameOutcome::NotSent(error),
            },
            FullPolicy::Block => loop {
                match self.producer.send(&record, ARCHIVE_QUEUE_WAIT) {
                    Ok(handle) => {
                        self.track(sent, handle);
                        return FrameOutcome::Sent;
                    }
                    Err(error) if error.is_retriable() && !give_up_at() => {
                        tracing::debug!(stream_id = %self.stream_id, %error, "bus busy, retrying");
                    }
                    Err(error) => return FrameOutcome::NotSent(error),
                }
            },
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
            kind: Some(kind),
        };
        let record = Record::new(self.events_topic.clone(), orstream_proto::encode(&event))
            .with_key(self.key.clone())
            .with_header(headers::SCHEMA_VERSION, SCHEMA_VERSION);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.producer.send(&record, ARCHIVE_QUEUE_WAIT) {
                Ok(handle) => return self.track(Sent::Event, handle),
                Err(error) if error.is_retriable() && Instant::now() < deadline => {}
                Err(error) => {
                    tracing::error!(stream_id = %self.stream_id, topic = %self.events_topic,
                        %error, "stream event not published");
                    return;
                }
            }
        }
    }

    fn track(&self, sent: Sent, handle: DeliveryHandle) {
        match &self.in_flight {
            // Blocks while MAX_IN_FLIGHT deliveries are unacknowledged: the bound on in-flight.
            Some(tx) => {
                if let Err(mpsc::SendError((_, handle))) = tx.send((sent, handle)) {
                    let _unchecked = handle;
                }
            }
            None => {
                let _unchecked = handle;
            }
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

    /// Waits until every message sent so far is acknowledged or failed.
    pub(crate) fn finish(mut self) {
        self.in_flight.take();
        if let Some(checker) = self.checker.take()
            && checker.join().is_err()
        {
            tracing::error!(stream_id = %self.stream_id, "the delivery checker panicked");
        }
    }
}

fn check_deliveries(
    rx: &Receiver<(Sent, DeliveryHandle)>,
    failure: &Mutex<Option<(u64, String)>>,
    stream_id: &str,
    reports: &Reports,
) {
    // The broker's readiness as last reported by this checker: reported on change only.
    let mut broker_ok = None;
    let mut report_broker = |ok: bool| {
        if broker_ok != Some(ok) {
            broker_ok = Some(ok);
            reports.health.set_ready(checks::BROKER, ok);
        }
    };
    for (sent, handle) in rx {
        let error = match handle.wait(DELIVERY_WAIT) {
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
                let mut failure = failure.lock().unwrap_or_else(PoisonError::into_inner);
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
