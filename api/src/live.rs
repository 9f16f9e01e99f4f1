//! Live: the API follows the bus and pushes what it reads to the clients that listen.
//!
//! A follower thread reads the derived events (`or.events.v1`: presences, gaps and ended tool
//! tracks, published by the sink after the transaction that stores them commits) and the
//! streams topic (`or.streams.v1`: a room's `CaseStarted` / `CaseEnded`, a camera's start and
//! end), read-committed, in a consumer group of its own. Each message becomes a [`Notice`]
//! naming its case and its room, broadcast to every listener; a listener (the `/v1/live`
//! route) passes on only the notices of rooms its caller may see.
//!
//! A notice carries the event as the record shows it, so a page can draw it at once and then
//! fetch the case again for what the push does not carry (open intervals, accounting). The
//! sink may publish an event twice (after a crash between the broker's acknowledgement and the
//! outbox's delete): clients deduplicate on `event_id`, as every consumer of the topic does.
//!
//! Undecodable messages are skipped with a warning naming the topic and offset (the sink's
//! dead letters are the place for them, not the API). The group's offsets are committed as
//! hints once a second, so a restarted API goes on from about where it was.

use std::collections::HashMap;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use orstream_bus::{Bus, Message, Offsets};
use orstream_proto::{Category, EventKind, StreamEvent, SurgicalEvent, stream_event::Kind, topics};
use orstream_record::Store;
use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// Notices kept for a listener that falls behind; one further behind is told to fetch again.
pub const BACKLOG: usize = 1024;
/// Case-to-room answers remembered before the memory is cleared.
const ROOMS_REMEMBERED: usize = 10_000;

/// One thing that happened, as pushed to the clients.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Notice {
    /// The SSE event name: `record` (a derived event) or `case` (a case's or a camera's
    /// lifecycle).
    #[serde(skip)]
    pub name: &'static str,
    /// The case it belongs to.
    pub case_id: String,
    /// The case's room; empty for a case of no room (seen by admins only).
    pub room_id: String,
    /// The body: the event's fields.
    pub data: serde_json::Value,
}

/// The topics followed and the group that follows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follow {
    /// Derived events (`or.events.v1`).
    pub events_topic: String,
    /// Stream and case lifecycle (`or.streams.v1`).
    pub streams_topic: String,
    /// The consumer group.
    pub group_id: String,
}

/// The broadcast the listeners subscribe to.
#[derive(Debug, Clone)]
pub struct Live {
    sender: broadcast::Sender<Arc<Notice>>,
}

impl Default for Live {
    fn default() -> Self {
        Self::new()
    }
}

impl Live {
    /// A broadcast with no follower yet (tests and the demo may [`publish`](Self::publish)
    /// into it themselves).
    pub fn new() -> Self {
        Self {
            sender: broadcast::channel(BACKLOG).0,
        }
    }

    /// A new listener, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Notice>> {
        self.sender.subscribe()
    }

    /// Hands `notice` to every listener (none listening is fine).
    pub fn publish(&self, notice: Notice) {
        let _ = self.sender.send(Arc::new(notice));
    }

    /// Starts following `follow`'s topics on `bus` until `cancel`, resolving the rooms of
    /// cases through the record at `store_url`.
    pub fn follow(
        &self,
        bus: &Bus,
        follow: &Follow,
        store_url: &str,
        cancel: CancellationToken,
    ) -> Result<JoinHandle<()>, String> {
        let consumer = bus
            .consumer(&follow.group_id)
            .and_then(|c| {
                c.subscribe(&[&follow.events_topic, &follow.streams_topic])?;
                Ok(c)
            })
            .map_err(|e| format!("following the bus: {e}"))?;
        let live = self.clone();
        let follow = follow.clone();
        let store_url = store_url.to_owned();
        thread::Builder::new()
            .name("api-live".into())
            .spawn(move || {
                let mut rooms = Rooms::new(store_url);
                let mut offsets = Offsets::new();
                let mut committed = Instant::now();
                while !cancel.is_cancelled() {
                    match consumer.poll(Duration::from_millis(100)) {
                        Ok(Some(message)) => {
                            offsets.insert(message.topic_partition(), message.next_offset());
                            if let Some(notice) = notice_of(&message, &follow, &mut rooms) {
                                live.publish(notice);
                            }
                        }
                        Ok(None) => {}
                        Err(error) => {
                            tracing::warn!(%error, "the live feed could not read the bus");
                            thread::sleep(Duration::from_millis(500));
                        }
                    }
                    if committed.elapsed() >= Duration::from_secs(1) && !offsets.is_empty() {
                        if let Err(error) = consumer.commit_async(&offsets) {
                            tracing::debug!(%error, "live feed offsets not committed");
                        }
                        offsets.clear();
                        committed = Instant::now();
                    }
                }
                if let Err(error) = consumer.commit_async(&offsets) {
                    tracing::debug!(%error, "live feed offsets not committed");
                }
            })
            .map_err(|e| format!("starting the live feed's thread: {e}"))
    }
}

/// The rooms of cases: learned from the case events read, else asked of the record.
struct Rooms {
    store_url: String,
    store: Option<Store>,
    known: HashMap<String, String>,
}

impl Rooms {
    fn new(store_url: String) -> Self {
        Self {
            store_url,
            store: None,
            known: HashMap::new(),
        }
    }

    fn learn(&mut self, case_id: &str, room_id: &str) {
        if self.known.len() >= ROOMS_REMEMBERED {
            self.known.clear();
        }
        self.known.insert(case_id.to_owned(), room_id.to_owned());
    }

    /// The room of `case_id`: empty for a case of no room, and for one the record cannot
    /// tell now (seen by admins only, never by a reader it does not belong to).
    fn of(&mut self, case_id: &str) -> String {
        if let Some(room) = self.known.get(case_id) {
            return room.clone();
        }
        let store = match self.store.take() {
            Some(store) => Ok(store),
            None => Store::open(&self.store_url),
        };
        let answer = store.and_then(|mut store| {
            let room = store.room_of_case(case_id);
            if room.is_ok() {
                self.store = Some(store);
            }
            room
        });
        match answer {
            Ok(room) => {
                let room = room.unwrap_or_default();
                self.learn(case_id, &room);
                room
            }
            Err(error) => {
                tracing::warn!(%error, "the live feed could not ask the record for a room");
                String::new()
            }
        }
    }
}

fn notice_of(message: &Message, follow: &Follow, rooms: &mut Rooms) -> Option<Notice> {
    let warn = |error: &dyn std::fmt::Display| {
        tracing::warn!(
            topic = %message.topic,
            partition = message.partition,
            offset = message.offset,
            %error,
            "the live feed skipped a message it cannot read"
        );
    };
    if message.payload.is_empty() {
        return None;
    }
    if message.topic == follow.events_topic {
        let event = match orstream_proto::decode::<SurgicalEvent>(&message.payload) {
            Ok(event) => event,
            Err(error) => {
                warn(&error);
                return None;
            }
        };
        let room_id = rooms.of(&event.case_id);
        Some(Notice {
            name: "record",
            case_id: event.case_id.clone(),
            room_id,
            data: record_json(&event),
        })
    } else if message.topic == follow.streams_topic {
        let event = match orstream_proto::decode::<StreamEvent>(&message.payload) {
            Ok(event) => event,
            Err(error) => {
                warn(&error);
                return None;
            }
        };
        if !event.case_id.is_empty() {
            rooms.learn(&event.case_id, &event.room_id);
        }
        let (kind, detail) = match event.kind.as_ref()? {
            Kind::CaseStarted(_) => ("case_started", String::new()),
            Kind::CaseEnded(ended) => ("case_ended", ended.detail.clone()),
            Kind::Started(_) => ("stream_started", String::new()),
            Kind::Ended(ended) => (
                "stream_ended",
                format!("frames published: {}", ended.frames_published),
            ),
            Kind::Discontinuity(_) | Kind::Dropped(_) | Kind::Error(_) => return None,
        };
        Some(Notice {
            name: "case",
            case_id: event.case_id.clone(),
            room_id: event.room_id.clone(),
            data: json!({
                "kind": kind,
                "case_id": event.case_id,
                "room_id": event.room_id,
                "stream_id": event.stream_id,
                "time_ns": event.time_ns,
                "detail": detail,
            }),
        })
    } else {
        None
    }
}

/// A derived event as the record's timeline shows it.
fn record_json(event: &SurgicalEvent) -> serde_json::Value {
    let kind = match EventKind::try_from(event.kind) {
        Ok(EventKind::Presence) => "presence",
        Ok(EventKind::Gap) => "gap",
        Ok(EventKind::OutOfBody) => "out_of_body",
        Ok(EventKind::Track) => "track",
        _ => "unknown",
    };
    json!({
        "kind": kind,
        "event_id": event.event_id,
        "case_id": event.case_id,
        "stream_id": event.stream_id,
        "class_id": event.class_id,
        "label": event.label,
        "category": Category::name_of(event.category),
        "start_ns": event.start_time_ns,
        "end_ns": event.end_time_ns,
        "start_offset_ns": event.start_offset_ns,
        "end_offset_ns": event.end_offset_ns,
        "peak_confidence": finite(event.peak_confidence),
        "mean_confidence": finite(event.mean_confidence),
        "session_epoch": event.session_epoch,
        "first_seq": event.first_seq,
        "last_seq": event.last_seq,
        "gap_reason": event.gap_reason,
        "track_ids": event.track_ids,
        "track_id": event.track.as_ref().map(|t| t.track_id),
    })
}

/// A score as JSON: a number when finite, else null (JSON has no NaN).
fn finite(value: f32) -> Option<f64> {
    value.is_finite().then_some(f64::from(value))
}

/// The default topics and group.
impl Default for Follow {
    fn default() -> Self {
        Self {
            events_topic: topics::EVENTS.to_owned(),
            streams_topic: topics::STREAMS.to_owned(),
            group_id: "orstream-api".to_owned(),
        }
    }
}
