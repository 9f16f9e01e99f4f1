//! Batch preparation: from the messages of one poll to the [`Prepared`] batch that one
//! database transaction stores. It reads no broker, database or clock, only the messages and
//! the [`Cache`] of what the store holds (it only logs what it rejects), so the rules below
//! are tested without them, and the same messages on the same cache give the same batch.
//!
//! Two halves, with the store read in between: [`decode_batch`] drops messages below the
//! stored offset of their partition (replays after a restart or seek, and redeliveries within
//! the batch) and decodes the rest; the service loads the states the batch names that the
//! cache lacks ([`Decoded::missing`]); [`prepare_batch`] then derives. Results and lifecycle
//! events go through their stream's derivation; rejected messages become dead letters and
//! anomaly rows; every state the batch changed, the case starts and the next offset of every
//! partition join the batch, compare-and-set against what was read.

mod rows;

use std::collections::{BTreeMap, BTreeSet};

use orstream_bus::{Headers, Message, Record, TopicPartition, trace};
use orstream_proto::{FrameResult, FrameStatus, StreamEvent, SurgicalEvent};

use crate::cache::Cache;
use crate::config::SinkConfig;
use crate::dead_letter;
use crate::decode::{Input, Rejection, Source, decode};
use crate::derive::{FrameTracks, Output, Rules, event_id};
use crate::error::StoreError;
use crate::store::{OffsetWrite, Outbox, OutboxTopic, StateWrite, WriteBatch};
use rows::{
    anomaly_row, frame_row, gap_row, presence_row, stream_event_row, stream_row, track_point_row,
    track_row,
};

/// A poll's messages past the offset screen, each decoded or rejected, in poll order.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    messages: Vec<(Message, Result<Input, Rejection>)>,
    next_offsets: BTreeMap<TopicPartition, i64>,
    skipped: u64,
}

impl Decoded {
    /// The streams and cases the batch names that `cache` does not hold: what to load from
    /// the store before [`prepare_batch`].
    pub(crate) fn missing(&self, cache: &Cache) -> (BTreeSet<String>, BTreeSet<String>) {
        let inputs = || self.messages.iter().filter_map(|(_, i)| i.as_ref().ok());
        let streams = inputs()
            .map(|i| i.stream_id().to_owned())
            .filter(|s| !cache.states.contains_key(s))
            .collect();
        let cases = inputs()
            .map(|i| i.case_id().to_owned())
            .filter(|c| !cache.cases.contains_key(c))
            .collect();
        (streams, cases)
    }
}

/// A result whose trace is sampled; its `store result` span is opened when its batch goes to
/// the store.
#[derive(Debug, Clone)]
pub(crate) struct Traced {
    pub(crate) headers: Headers,
    /// The result's status label, the only attribute the span carries (never the case,
    /// stream or offset).
    pub(crate) status: &'static str,
}

/// One batch, derived and ready to store.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    pub(crate) batch: WriteBatch,
    pub(crate) dead_letters: Vec<Record>,
    pub(crate) next_offsets: BTreeMap<TopicPartition, i64>,
    pub(crate) timestamps_ms: Vec<i64>,
    pub(crate) messages: u64,
    pub(crate) results: u64,
    pub(crate) stream_events: u64,
    pub(crate) skipped: u64,
    pub(crate) presences: u64,
    pub(crate) gaps: u64,
    pub(crate) tracks: u64,
    pub(crate) anomalies: u64,
    /// Capture time of each result, for the capture-to-record latency.
    pub(crate) capture_ns: Vec<i64>,
    /// (reason, source topic) of each dead letter.
    pub(crate) dead_letter_reasons: Vec<(&'static str, String)>,
    /// The results whose trace is sampled, in batch order.
    pub(crate) traced: Vec<Traced>,
}

impl Prepared {
    /// Whether the batch leaves anything in the outbox to publish.
    pub(crate) fn fills_outbox(&self, publish_events: bool) -> bool {
        let b = &self.batch;
        (publish_events && (!b.events.is_empty() || !b.gaps.is_empty() || !b.tracks.is_empty()))
            || !b.track_frames.is_empty()
    }
}

/// Drops the messages below the next offset to read of their partition (the stored one, or
/// the batch's own for a redelivery within it) and decodes the rest; `results_topic` tells
/// results from lifecycle events.
pub(crate) fn decode_batch(
    messages: Vec<Message>,
    stored: &BTreeMap<TopicPartition, i64>,
    results_topic: &str,
) -> Decoded {
    let mut decoded = Decoded::default();
    for message in messages {
        let tp = message.topic_partition();
        let next = decoded
            .next_offsets
            .get(&tp)
            .or_else(|| stored.get(&tp))
            .copied()
            .unwrap_or(0);
        if message.offset < next {
            decoded.skipped += 1;
            continue;
        }
        decoded.next_offsets.insert(tp, message.next_offset());
        let source = if message.topic == results_topic {
            Source::Results
        } else {
            Source::Streams
        };
        let input = decode(&message, source);
        decoded.messages.push((message, input));
    }
    decoded
}

/// Derives `decoded` on the states in `cache`, which must hold every stream the batch names
/// ([`Decoded::missing`]); the states it changes are marked dirty until the batch is stored.
/// Fails only when a state cannot be written as JSON.
pub(crate) fn prepare_batch(
    decoded: Decoded,
    cache: &mut Cache,
    config: &SinkConfig,
    rules: &Rules,
) -> Result<Prepared, StoreError> {
    let mut preparer = Preparer {
        config,
        rules,
        cache,
        out: Prepared {
            next_offsets: decoded.next_offsets,
            skipped: decoded.skipped,
            ..Prepared::default()
        },
    };
    for (message, input) in decoded.messages {
        preparer.message(&message, input);
    }
    preparer.finish()
}

/// The batch being built, with what building it reads and changes.
struct Preparer<'a> {
    config: &'a SinkConfig,
    rules: &'a Rules,
    cache: &'a mut Cache,
    out: Prepared,
}

impl Preparer<'_> {
    fn message(&mut self, message: &Message, input: Result<Input, Rejection>) {
        self.out.messages += 1;
        if let Some(ms) = message.timestamp_ms {
            self.out.timestamps_ms.push(ms);
        }
        match input {
            Err(rejection) => self.reject(message, &rejection),
            Ok(Input::Result(result)) => self.apply_result(message, &result),
            Ok(Input::Stream(event)) => self.apply_stream_event(message, &event),
        }
    }

    fn reject(&mut self, message: &Message, rejection: &Rejection) {
        tracing::warn!(
            topic = %message.topic,
            partition = message.partition,
            offset = message.offset,
            reason = %rejection.reason,
            "rejected message: to the dead-letter topic"
        );
        self.out
            .dead_letters
            .push(dead_letter::record(message, rejection));
        self.out
            .dead_letter_reasons
            .push((rejection.kind.as_str(), message.topic.clone()));
        let stream_id = message
            .key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k).chars().take(128).collect())
            .unwrap_or_default();
        self.out.batch.anomalies.push(anomaly_row(
            message,
            rejection.kind.as_str(),
            stream_id,
            &rejection.reason,
        ));
        self.out.anomalies += 1;
    }

    fn apply_result(&mut self, message: &Message, result: &FrameResult) {
        let Some(cached) = self.cache.states.get_mut(&result.stream_id) else {
            return;
        };
        let before_case = cached.state.case_id.clone();
        let before_first = cached.state.case_first_ns;
        let before_row = stream_row(&cached.state);
        let outputs = cached.state.apply_result(result, self.rules);
        cached.dirty = true;
        if before_case != cached.state.case_id {
            // The stream moved to another case: keep the old case's final figures.
            if let Some(row) = before_row {
                self.out.batch.streams.push(row);
            }
            if let Some(first) = before_first {
                self.out.batch.cases.push((before_case, first));
            }
        }
        if let Some(first) = cached.state.case_first_ns {
            let start = self
                .cache
                .cases
                .entry(cached.state.case_id.clone())
                .or_insert(first);
            *start = (*start).min(first);
        }
        self.out.results += 1;
        self.out.capture_ns.push(result.capture_time_ns);
        if trace::span_context(&message.headers).is_some_and(|cx| cx.is_sampled()) {
            self.out.traced.push(Traced {
                headers: message.headers.clone(),
                status: FrameStatus::label_of(result.status),
            });
        }
        if self.config.store_frames {
            self.out.batch.frames.push(frame_row(result));
        }
        self.outputs(message, outputs);
    }

    fn apply_stream_event(&mut self, message: &Message, event: &StreamEvent) {
        self.out.stream_events += 1;
        self.out.batch.stream_events.push(stream_event_row(event));
        let Some(cached) = self.cache.states.get_mut(&event.stream_id) else {
            return;
        };
        let outputs = cached.state.apply_stream_event(event);
        cached.dirty = true;
        self.outputs(message, outputs);
    }

    fn outputs(&mut self, message: &Message, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::Presence(p) => {
                    let outbox = self.outbox(&p.case_id, &p.event_id(), || {
                        p.to_event(self.case_start(&p.case_id, p.start_ns))
                    });
                    self.out.batch.events.push((presence_row(&p), outbox));
                    self.out.presences += 1;
                }
                Output::Gap(g) => {
                    let outbox = self.outbox(&g.case_id, &g.event_id(), || {
                        g.to_event(self.case_start(&g.case_id, g.start_ns))
                    });
                    self.out.batch.gaps.push((gap_row(&g), outbox));
                    self.out.gaps += 1;
                }
                Output::Track(t) => {
                    let outbox = self.outbox(&t.case_id, &t.event_id(), || {
                        t.to_event(self.case_start(&t.case_id, t.start_ns))
                    });
                    self.out.batch.tracks.push((track_row(&t), outbox));
                    self.out.tracks += 1;
                }
                Output::TrackPoints(stream_id, case_id, points) => {
                    self.out.batch.track_points.extend(
                        points
                            .iter()
                            .map(|p| track_point_row(&stream_id, &case_id, p)),
                    );
                }
                Output::Tracked(frame) => {
                    if self.config.publish_tracks {
                        self.out.batch.track_frames.push(track_frame_outbox(&frame));
                    }
                }
                Output::Anomaly(a) => {
                    tracing::info!(
                        kind = a.kind.as_str(),
                        stream_id = %a.stream_id,
                        detail = %a.detail,
                        "anomaly"
                    );
                    self.out.batch.anomalies.push(anomaly_row(
                        message,
                        a.kind.as_str(),
                        a.stream_id,
                        &a.detail,
                    ));
                    self.out.anomalies += 1;
                }
            }
        }
    }

    /// The outbox entry of a derived event, when events are published.
    fn outbox(
        &self,
        case_id: &str,
        event_id: &str,
        event: impl FnOnce() -> SurgicalEvent,
    ) -> Option<Outbox> {
        self.config.publish_events.then(|| Outbox {
            event_id: event_id.to_owned(),
            case_id: case_id.to_owned(),
            topic: OutboxTopic::Events,
            key: case_id.to_owned(),
            payload: orstream_proto::encode(&event()),
        })
    }

    /// The start of `case_id` for event times, or `fallback` (the event's own start) while
    /// the case's first frame is not known.
    fn case_start(&self, case_id: &str, fallback: i64) -> i64 {
        self.cache.cases.get(case_id).copied().unwrap_or(fallback)
    }

    /// Adds the changed states, with their streams' rows and case starts, and the offsets.
    fn finish(self) -> Result<Prepared, StoreError> {
        let Preparer { cache, mut out, .. } = self;
        for (stream_id, cached) in &cache.states {
            if !cached.dirty {
                continue;
            }
            let json = serde_json::to_string(&cached.state).map_err(|e| StoreError::State {
                stream_id: stream_id.clone(),
                reason: e.to_string(),
            })?;
            out.batch.states.push(StateWrite {
                stream_id: stream_id.clone(),
                expected_version: cached.version,
                json,
            });
            if let Some(row) = stream_row(&cached.state) {
                out.batch.streams.push(row);
            }
            if let Some(first) = cached.state.case_first_ns {
                out.batch.cases.push((cached.state.case_id.clone(), first));
            }
        }
        out.batch.offsets = out
            .next_offsets
            .iter()
            .map(|(tp, next)| OffsetWrite {
                partition: tp.clone(),
                expected: cache.offsets.get(tp).copied(),
                next: *next,
            })
            .collect();
        Ok(out)
    }
}

fn track_frame_outbox(frame: &FrameTracks) -> Outbox {
    Outbox {
        event_id: event_id(&[
            "track-frame",
            &frame.stream_id,
            &frame.epoch.to_string(),
            &frame.seq.to_string(),
        ]),
        case_id: frame.case_id.clone(),
        topic: OutboxTopic::Tracks,
        key: frame.stream_id.clone(),
        payload: orstream_proto::encode(&frame.to_message()),
    }
}
