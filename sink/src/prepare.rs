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
use orstream_record::StoreError;
use orstream_record::schema::CaseRow;
use orstream_record::store::{OffsetWrite, Outbox, OutboxTopic, StateWrite, WriteBatch};

use crate::cache::Cache;
use crate::config::SinkConfig;
use crate::dead_letter;
use crate::decode::{Input, Rejection, Source, decode};
use crate::derive::{Derived, FrameTracks, Rules, event_id};
use rows::{
    anomaly_row, case_rows, frame_row, gap_row, presence_row, stream_event_row, stream_row,
    track_point_row, track_row,
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
            // A room's case event names no stream.
            .filter(|s| !s.is_empty() && !cache.states.contains_key(s))
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
        self.out.dead_letters.push(dead_letter::record(
            message,
            rejection,
            self.dead_letter_cap(),
        ));
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

    /// The largest dead-letter payload the configured broker limit leaves room for.
    fn dead_letter_cap(&self) -> usize {
        dead_letter::payload_cap(
            usize::try_from(self.config.kafka.message_max_bytes).unwrap_or(usize::MAX),
        )
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
                self.out.batch.cases.push(CaseRow {
                    case_id: before_case,
                    started_ns: first,
                });
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
        if let Some((room, cameras)) = case_rows(event) {
            // A room's case opened or closed: no stream of its own, no derivation.
            self.out.batch.case_rooms.push(room);
            self.out.batch.case_cameras.extend(cameras);
            return;
        }
        self.out.batch.stream_events.push(stream_event_row(event));
        let Some(cached) = self.cache.states.get_mut(&event.stream_id) else {
            return;
        };
        let outputs = cached.state.apply_stream_event(event);
        cached.dirty = true;
        self.outputs(message, outputs);
    }

    fn outputs(&mut self, message: &Message, outputs: Vec<Derived>) {
        for output in outputs {
            match output {
                Derived::Presence(p) => {
                    let outbox = self.outbox(message, &p.case_id, &p.event_id(), || {
                        p.to_event(self.case_start(&p.case_id, p.start_ns))
                    });
                    self.out.batch.events.push((presence_row(&p), outbox));
                    self.out.presences += 1;
                }
                Derived::Gap(g) => {
                    let outbox = self.outbox(message, &g.case_id, &g.event_id(), || {
                        g.to_event(self.case_start(&g.case_id, g.start_ns))
                    });
                    self.out.batch.gaps.push((gap_row(&g), outbox));
                    self.out.gaps += 1;
                }
                Derived::Track(t) => {
                    let outbox = self.outbox(message, &t.case_id, &t.event_id(), || {
                        t.to_event(self.case_start(&t.case_id, t.start_ns))
                    });
                    self.out.batch.tracks.push((track_row(&t), outbox));
                    self.out.tracks += 1;
                }
                Derived::TrackPoints(stream_id, case_id, points) => {
                    self.out.batch.track_points.extend(
                        points
                            .iter()
                            .map(|p| track_point_row(&stream_id, &case_id, p)),
                    );
                }
                Derived::Tracked(frame) => {
                    if self.config.publish_tracks {
                        self.out
                            .batch
                            .track_frames
                            .push(track_frame_outbox(&frame, message));
                    }
                }
                Derived::Anomaly(a) => {
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

    /// The outbox entry of a derived event, when events are published; `message` is the
    /// input it was derived from.
    fn outbox(
        &self,
        message: &Message,
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
            source: source(message),
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
                out.batch.cases.push(CaseRow {
                    case_id: cached.state.case_id.clone(),
                    started_ns: first,
                });
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

/// The input partition an outbox entry comes from: the sink that holds it publishes the entry.
fn source(message: &Message) -> (String, i32) {
    (message.topic.clone(), message.partition)
}

fn track_frame_outbox(frame: &FrameTracks, message: &Message) -> Outbox {
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
        source: source(message),
    }
}

#[cfg(test)]
mod tests {
    use orstream_proto::{headers, topics};
    use orstream_test_support::script::Script;
    use orstream_test_support::topic::{result_record, stream_record};

    use super::*;
    use crate::cache::Cached;
    use crate::derive::StreamState;

    const SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const NOT_SAMPLED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";

    /// `record` as read back from `partition` at `offset`.
    fn read(record: Record, partition: i32, offset: i64) -> Message {
        Message {
            topic: record.topic,
            partition,
            offset,
            key: record.key,
            payload: record.payload,
            headers: record.headers,
            timestamp_ms: Some(1_000 + offset),
        }
    }

    /// The results of stream 0 of `script` on partition 0 of the results topic, from offset 0.
    fn results(script: &Script) -> Vec<Message> {
        (0..script.frames)
            .map(|i| {
                let record = result_record(topics::RESULTS, &script.result(0, i));
                read(record, 0, i as i64)
            })
            .collect()
    }

    /// Both halves as the service runs them, with a store that knows no stream yet.
    fn prepare(messages: Vec<Message>, cache: &mut Cache, config: &SinkConfig) -> Prepared {
        let decoded = decode_batch(messages, &cache.offsets, &config.results_topic);
        let (streams, _) = decoded.missing(cache);
        for stream_id in streams {
            cache
                .states
                .insert(stream_id.clone(), Cached::new(&stream_id));
        }
        prepare_batch(decoded, cache, config, &Rules::from(&config.derive)).unwrap()
    }

    fn partition(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    #[test]
    fn results_become_rows_the_derived_events_states_and_offsets() {
        let script = Script::new("case-1", 1, 300);
        let config = SinkConfig::default();
        let mut messages = results(&script);
        for (k, event) in script.stream_events(0).iter().enumerate() {
            let record = stream_record(topics::STREAMS, event);
            messages.push(read(record, 0, k as i64));
        }
        let mut cache = Cache::default();
        let prepared = prepare(messages, &mut cache, &config);

        // The script has one stream: what the same pure derivation gives for it, offline.
        let rules = Rules::from(&config.derive);
        let mut state = StreamState::new(&script.stream_id(0));
        let mut expected: Vec<Derived> = script
            .results()
            .iter()
            .flat_map(|r| state.apply_result(r, &rules))
            .collect();
        expected.extend(
            script
                .stream_events(0)
                .iter()
                .flat_map(|e| state.apply_stream_event(e)),
        );
        let count = |f: fn(&Derived) -> bool| expected.iter().filter(|o| f(o)).count();
        assert!(count(|o| matches!(o, Derived::Presence(_))) > 0);
        let b = &prepared.batch;
        assert_eq!(
            (prepared.messages, prepared.results, prepared.stream_events),
            (302, 300, 2)
        );
        assert_eq!(b.events.len(), count(|o| matches!(o, Derived::Presence(_))));
        assert_eq!(b.gaps.len(), count(|o| matches!(o, Derived::Gap(_))));
        assert_eq!(b.tracks.len(), count(|o| matches!(o, Derived::Track(_))));
        assert_eq!(
            b.track_frames.len(),
            count(|o| matches!(o, Derived::Tracked(_)))
        );
        assert_eq!(prepared.presences as usize, b.events.len());
        assert_eq!((b.frames.len(), b.stream_events.len()), (300, 2));
        assert!(b.events.iter().all(|(_, outbox)| outbox.is_some()));
        assert!(prepared.fills_outbox(config.publish_events));
        assert_eq!(prepared.capture_ns.len(), 300);
        assert_eq!(prepared.timestamps_ms.len(), 302);

        assert_eq!(b.states.len(), 1);
        assert_eq!(b.states[0].stream_id, script.stream_id(0));
        assert_eq!(b.states[0].expected_version, 0);
        assert_eq!(
            b.cases,
            vec![CaseRow {
                case_id: "case-1".to_owned(),
                started_ns: script.t0_ns
            }]
        );
        assert_eq!(b.streams.len(), 1);
        assert!(cache.states[&script.stream_id(0)].dirty);
        assert_eq!(cache.cases["case-1"], script.t0_ns);
        assert_eq!(
            b.offsets,
            vec![
                OffsetWrite {
                    partition: partition(topics::RESULTS, 0),
                    expected: None,
                    next: 300,
                },
                OffsetWrite {
                    partition: partition(topics::STREAMS, 0),
                    expected: None,
                    next: 2,
                },
            ]
        );
    }

    #[test]
    fn a_message_that_fails_to_decode_becomes_a_dead_letter_and_an_anomaly() {
        let config = SinkConfig::default();
        let garbage = Record::new(topics::RESULTS, vec![0xff, 0x01, 0x02])
            .with_key(b"case-1-cam-0".to_vec())
            .with_header(headers::SCHEMA_VERSION, "1");
        let unversioned = Record::new(topics::STREAMS, b"not protobuf".to_vec());
        let mut cache = Cache::default();
        let prepared = prepare(
            vec![read(garbage, 2, 7), read(unversioned, 0, 0)],
            &mut cache,
            &config,
        );

        assert_eq!((prepared.messages, prepared.results), (2, 0));
        assert_eq!(prepared.anomalies, 2);
        assert_eq!(
            prepared.dead_letter_reasons,
            vec![
                ("undecodable", topics::RESULTS.to_owned()),
                ("schema_version", topics::STREAMS.to_owned()),
            ]
        );
        let letter = &prepared.dead_letters[0];
        assert_eq!(letter.topic, topics::dlq(topics::RESULTS));
        assert_eq!(letter.payload.as_ref(), &[0xff, 0x01, 0x02]);
        assert_eq!(letter.key.as_deref(), Some(&b"case-1-cam-0"[..]));
        let header = |h: &str| letter.headers.get(h).map(<[u8]>::to_vec);
        assert_eq!(header(headers::DLQ_SOURCE_OFFSET), Some(b"7".to_vec()));
        assert_eq!(header(headers::DLQ_SOURCE_PARTITION), Some(b"2".to_vec()));
        assert_eq!(
            header(headers::DLQ_SOURCE_TOPIC),
            Some(topics::RESULTS.as_bytes().to_vec())
        );
        assert!(header(headers::DLQ_ERROR).is_some());
        assert_eq!(prepared.dead_letters[1].topic, topics::dlq(topics::STREAMS));

        let anomaly = &prepared.batch.anomalies[0];
        assert_eq!(anomaly.kind, "undecodable");
        assert_eq!(anomaly.stream_id, "case-1-cam-0");
        // Nothing to derive, but the offsets move past the rejected messages.
        assert!(cache.states.is_empty() && prepared.batch.states.is_empty());
        let next: Vec<i64> = prepared.batch.offsets.iter().map(|o| o.next).collect();
        assert_eq!(next, vec![8, 1]);
    }

    #[test]
    fn messages_below_the_stored_offset_are_skipped_as_replays() {
        let script = Script::new("case-1", 1, 20);
        let config = SinkConfig::default();
        let mut cache = Cache::default();
        cache.offsets.insert(partition(topics::RESULTS, 0), 10);
        let prepared = prepare(results(&script), &mut cache, &config);

        assert_eq!(prepared.skipped, 10);
        assert_eq!((prepared.messages, prepared.results), (10, 10));
        assert_eq!(
            prepared.batch.offsets,
            vec![OffsetWrite {
                partition: partition(topics::RESULTS, 0),
                expected: Some(10),
                next: 20,
            }]
        );
    }

    #[test]
    fn a_message_redelivered_within_the_batch_is_skipped() {
        let script = Script::new("case-1", 1, 4);
        let config = SinkConfig::default();
        let mut messages = results(&script);
        messages.insert(3, messages[1].clone());
        let mut cache = Cache::default();
        let prepared = prepare(messages, &mut cache, &config);

        assert_eq!((prepared.skipped, prepared.results), (1, 4));
        assert_eq!(prepared.batch.frames.len(), 4);
        assert_eq!(prepared.batch.offsets[0].next, 4);
    }

    #[test]
    fn only_changed_states_are_written_against_the_version_read() {
        let script = Script::new("case-1", 1, 5);
        let config = SinkConfig::default();
        let mut cache = Cache::default();
        let mut touched = Cached::new(&script.stream_id(0));
        touched.version = 3;
        cache.states.insert(script.stream_id(0), touched);
        cache.states.insert("idle".to_owned(), Cached::new("idle"));
        let prepared = prepare(results(&script), &mut cache, &config);

        let states: Vec<(&str, i64)> = prepared
            .batch
            .states
            .iter()
            .map(|s| (s.stream_id.as_str(), s.expected_version))
            .collect();
        assert_eq!(states, vec![(script.stream_id(0).as_str(), 3)]);
        assert!(!cache.states["idle"].dirty);
    }

    #[test]
    fn what_the_store_must_provide_is_what_the_cache_lacks() {
        let script = Script::new("case-1", 2, 1);
        let messages = vec![
            read(result_record(topics::RESULTS, &script.result(0, 0)), 0, 0),
            read(result_record(topics::RESULTS, &script.result(1, 0)), 1, 0),
            read(Record::new(topics::RESULTS, vec![0xff]), 2, 0),
        ];
        let mut cache = Cache::default();
        cache
            .states
            .insert(script.stream_id(0), Cached::new(&script.stream_id(0)));
        let decoded = decode_batch(messages, &cache.offsets, topics::RESULTS);
        let (streams, cases) = decoded.missing(&cache);
        assert_eq!(streams, BTreeSet::from([script.stream_id(1)]));
        assert_eq!(cases, BTreeSet::from(["case-1".to_owned()]));
        cache.cases.insert("case-1".to_owned(), 0);
        assert!(decoded.missing(&cache).1.is_empty());
    }

    #[test]
    fn a_stream_moving_to_another_case_keeps_the_old_case_figures() {
        let script = Script::new("case-1", 1, 10);
        let config = SinkConfig::default();
        let mut messages = results(&script);
        let mut moved = script.result(0, 10);
        moved.case_id = "case-2".to_owned();
        messages.push(read(result_record(topics::RESULTS, &moved), 0, 10));
        let mut cache = Cache::default();
        let prepared = prepare(messages, &mut cache, &config);

        let cases: BTreeSet<&str> = prepared
            .batch
            .cases
            .iter()
            .map(|c| c.case_id.as_str())
            .collect();
        assert_eq!(cases, BTreeSet::from(["case-1", "case-2"]));
        let stream_cases: BTreeSet<&str> = prepared
            .batch
            .streams
            .iter()
            .map(|r| r.case_id.as_str())
            .collect();
        assert_eq!(stream_cases, BTreeSet::from(["case-1", "case-2"]));
        assert_eq!(cache.cases.len(), 2);
    }

    #[test]
    fn unpublished_events_and_tracks_leave_the_outbox_empty() {
        let script = Script::new("case-1", 1, 300);
        let config = SinkConfig {
            publish_events: false,
            publish_tracks: false,
            store_frames: false,
            ..SinkConfig::default()
        };
        let mut cache = Cache::default();
        let prepared = prepare(results(&script), &mut cache, &config);

        let b = &prepared.batch;
        assert!(!b.events.is_empty() && b.events.iter().all(|(_, o)| o.is_none()));
        assert!(b.track_frames.is_empty() && b.frames.is_empty());
        assert!(!prepared.fills_outbox(config.publish_events));
    }

    #[test]
    fn a_rooms_case_events_become_case_rows_and_touch_no_stream() {
        use orstream_proto::{CaseEnded, CaseStarted, stream_event::Kind};
        let config = SinkConfig::default();
        let event = |time_ns, kind| StreamEvent::for_room("OR3", "case-0042", time_ns, kind);
        let started = event(
            1_000,
            Kind::CaseStarted(CaseStarted {
                cameras: vec!["or3-lap".into(), "or3-room".into()],
            }),
        );
        let ended = event(
            9_000,
            Kind::CaseEnded(CaseEnded {
                cameras: vec!["or3-lap".into(), "or3-room".into(), "or3-micro".into()],
                detail: "ended by staff".into(),
            }),
        );
        let messages = [started, ended]
            .iter()
            .enumerate()
            .map(|(k, e)| read(stream_record(topics::STREAMS, e), 0, k as i64))
            .collect();
        let mut cache = Cache::default();
        let prepared = prepare(messages, &mut cache, &config);

        let b = &prepared.batch;
        assert!(
            prepared.dead_letters.is_empty(),
            "{:?}",
            prepared.dead_letters
        );
        assert_eq!(prepared.stream_events, 2);
        assert!(b.stream_events.is_empty() && b.states.is_empty() && cache.states.is_empty());
        let rooms: Vec<_> = b
            .case_rooms
            .iter()
            .map(|r| {
                (
                    r.room_id.as_str(),
                    r.opened_ns,
                    r.closed_ns,
                    r.close_detail.as_str(),
                )
            })
            .collect();
        assert_eq!(
            rooms,
            [
                ("OR3", Some(1_000), None, ""),
                ("OR3", None, Some(9_000), "ended by staff")
            ]
        );
        let cameras: BTreeSet<&str> = b
            .case_cameras
            .iter()
            .map(|c| c.stream_id.as_str())
            .collect();
        assert_eq!(
            cameras,
            BTreeSet::from(["or3-lap", "or3-micro", "or3-room"])
        );
        assert_eq!(prepared.next_offsets[&partition(topics::STREAMS, 0)], 2);
    }

    #[test]
    fn only_results_with_a_sampled_trace_are_traced() {
        let script = Script::new("case-1", 1, 3);
        let config = SinkConfig::default();
        let mut messages = results(&script);
        messages[0]
            .headers
            .push(headers::TRACEPARENT, SAMPLED.as_bytes().to_vec());
        messages[1]
            .headers
            .push(headers::TRACEPARENT, NOT_SAMPLED.as_bytes().to_vec());
        let mut cache = Cache::default();
        let prepared = prepare(messages, &mut cache, &config);

        assert_eq!(prepared.traced.len(), 1);
        assert_eq!(prepared.traced[0].status, "ok");
        assert_eq!(
            prepared.traced[0].headers,
            results(&script)[0]
                .headers
                .clone()
                .with(headers::TRACEPARENT, SAMPLED,)
        );
    }
}
