//! The rooms' state on the bus, so a restarted (or killed) ingest comes back with it.
//!
//! One JSON message per room on the compacted site topic (`site_topic`, default
//! `or.ingest.site.v1`), keyed by room: its owner (the ingest `instance` serving it), the
//! cameras added and removed at run time, and the open case with, per camera, the epoch it
//! publishes in and the frames its part published before that epoch. Every change is written
//! (and acknowledged) before it takes effect on the bus: a case's start before its
//! `CaseStarted`, a case's end is marked `ending` before the cameras close it and cleared
//! after its `CaseEnded`, a camera's new epoch before its first frame.
//!
//! After a restart, a case that was open is opened again on every camera in a new epoch; each
//! camera first publishes the end of its part from the previous run (reason `FAILED`) with
//! the frames it published, counted from its checkpoint and the last frame of its epoch on the
//! frames topic, and its first frame then comes with a `StreamDiscontinuity` from that epoch:
//! the gap is recorded and every frame that reached the bus is accounted for. A case that was
//! ending gets its `CaseEnded`.
//!
//! Camera settings added at run time are kept on the topic, locations included: keep the
//! topic readable by ingest only (see docs/kafka-security.md), and give cameras their
//! password through `password_file` rather than in the URL.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use orstream_bus::{Bus, Producer, Record, TopicPartition};
use orstream_proto::Frame;
use serde::{Deserialize, Serialize};

use orstream_proto::wire::MAX_CASE_CAMERAS;

use crate::config::StreamConfig;
use crate::error::IngestError;
use crate::site;

/// The state format's version.
pub const VERSION: u32 = 1;
/// How long reading the site topic at start, or a write's acknowledgement, may take.
pub const WAIT: Duration = Duration::from_secs(30);
/// Frames read back per step when looking for a camera's last frame.
const CHUNK: i64 = 256;
/// Frames looked at, at most, when looking for a camera's last frame.
const MAX_SCAN: i64 = 64 * CHUNK;
const POLL: Duration = Duration::from_millis(200);

/// One room's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoomState {
    /// [`VERSION`].
    pub version: u32,
    /// The room.
    pub room: String,
    /// The ingest `instance` serving it; empty once released.
    pub owner: String,
    /// When this state was written (UTC ns).
    pub updated_ns: i64,
    /// Cameras added at run time (`stream_id`: the camera's name).
    #[serde(default)]
    pub added: Vec<StreamConfig>,
    /// Configured cameras removed at run time, by name.
    #[serde(default)]
    pub removed: Vec<String>,
    /// The open case.
    #[serde(default)]
    pub case: Option<CaseState>,
}

impl RoomState {
    /// What is wrong with a state read back under the key `room`, if anything: its version,
    /// names, camera settings and case id are checked as the admin API checks them, and every
    /// list is capped at the cameras a case may have.
    pub(crate) fn problem(&self, room: &str) -> Option<String> {
        let cap = MAX_CASE_CAMERAS;
        if self.version != VERSION {
            return Some(format!(
                "version {} (this ingest reads {VERSION})",
                self.version
            ));
        }
        if self.room != room {
            return Some("names another room than its key".to_owned());
        }
        if let Err(e) = site::check_name("room", &self.room) {
            return Some(e.to_string());
        }
        if !self.owner.is_empty()
            && let Err(e) = site::check_name("instance", &self.owner)
        {
            return Some(format!("owner: {e}"));
        }
        if self.added.len() > cap || self.removed.len() > cap {
            return Some(format!("more than {cap} cameras added or removed"));
        }
        if let Some(problem) = self
            .added
            .iter()
            .find_map(|camera| camera.camera_problems("added: ").into_iter().next())
        {
            return Some(problem);
        }
        if let Some(e) = self
            .removed
            .iter()
            .find_map(|name| site::check_name("camera", name).err())
        {
            return Some(format!("removed: {e}"));
        }
        let Some(case) = &self.case else {
            return None;
        };
        if let Err(e) = site::check_case_id(&case.case_id) {
            return Some(format!("case: {e}"));
        }
        if case.served.len() > cap || case.parts.len() > cap {
            return Some(format!("case: more than {cap} cameras"));
        }
        let prefix = format!("{room}/");
        let not_a_camera = |stream_id: &String| {
            stream_id
                .strip_prefix(&prefix)
                .is_none_or(|name| site::check_name("camera", name).is_err())
        };
        if let Some(stream_id) = case.served.iter().find(|s| not_a_camera(s)) {
            return Some(format!("case: {stream_id:?} is not a camera of the room"));
        }
        if let Some(stream_id) = case.parts.keys().find(|s| !case.served.contains(s)) {
            return Some(format!(
                "case: a part of {stream_id:?}, which did not serve it"
            ));
        }
        None
    }
}

/// A room's open case.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseState {
    /// The case.
    pub case_id: String,
    /// Its start (UTC ns).
    pub started_ns: i64,
    /// Every camera that has served it, by stream id.
    pub served: Vec<String>,
    /// Its end was asked for: the cameras may have closed it, its `CaseEnded` may be missing.
    #[serde(default)]
    pub ending: bool,
    /// Per camera (stream id), where its part stands.
    #[serde(default)]
    pub parts: BTreeMap<String, PartState>,
}

/// Where a camera's part in a case stands: the epoch it publishes in and the frames the part
/// published before that epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartState {
    /// The epoch.
    pub epoch: u64,
    /// Frames of the part in its earlier epochs.
    pub base: u64,
}

/// The site topic: the rooms' states as last written.
pub(crate) struct SiteStore {
    topic: String,
    producer: Producer,
    states: Mutex<BTreeMap<String, RoomState>>,
}

impl std::fmt::Debug for SiteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SiteStore")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

fn bus_error(what: &str) -> impl Fn(orstream_bus::BusError) -> IngestError + '_ {
    move |source| IngestError::Bus {
        what: what.to_owned(),
        source,
    }
}

/// A consumer of `topic` in a group of its own, once its partitions are assigned (read from
/// the beginning unless moved).
fn fresh_reader(
    bus: &Bus,
    topic: &str,
    purpose: &str,
) -> Result<(orstream_bus::Consumer, Vec<TopicPartition>), IngestError> {
    let group = format!(
        "orstream-ingest-{purpose}-{}-{}",
        std::process::id(),
        orstream_shell::clock::now_ns()
    );
    let what = format!("reading {topic}");
    let consumer = bus.consumer(&group).map_err(bus_error(&what))?;
    consumer.subscribe(&[topic]).map_err(bus_error(&what))?;
    let deadline = Instant::now() + WAIT;
    loop {
        let assigned = consumer.assignment().map_err(bus_error(&what))?;
        if !assigned.is_empty() {
            return Ok((consumer, assigned));
        }
        if Instant::now() >= deadline {
            return Err(IngestError::Admin(format!(
                "{what}: no partition assigned within {WAIT:?}"
            )));
        }
        // Messages polled before the assignment is seen are read again after it.
        consumer.poll(POLL).map_err(bus_error(&what))?;
    }
}

impl SiteStore {
    /// Creates the topic when needed and reads every room's latest state.
    pub(crate) fn open(bus: &Bus, topic: &str) -> Result<Self, IngestError> {
        let what = format!("the site topic {topic}");
        bus.create_compacted_topic(topic, 1, WAIT)
            .map_err(bus_error(&what))?;
        let (consumer, assigned) = fresh_reader(bus, topic, "site")?;
        let mut ends = BTreeMap::new();
        for tp in &assigned {
            let end = consumer.end_offset(tp, WAIT).map_err(bus_error(&what))?;
            // From the beginning, whatever the group's position.
            consumer.seek(tp, 0, WAIT).map_err(bus_error(&what))?;
            ends.insert(tp.partition, end);
        }
        let mut seen: BTreeMap<i32, i64> = BTreeMap::new();
        let mut states = BTreeMap::new();
        let deadline = Instant::now() + WAIT;
        while ends
            .iter()
            .any(|(p, end)| seen.get(p).copied().unwrap_or(0) < *end)
        {
            if Instant::now() >= deadline {
                return Err(IngestError::Admin(format!(
                    "{what}: not read to its end within {WAIT:?}"
                )));
            }
            let Some(message) = consumer.poll(POLL).map_err(bus_error(&what))? else {
                continue;
            };
            seen.insert(message.partition, message.offset + 1);
            let room =
                String::from_utf8_lossy(message.key.as_deref().unwrap_or_default()).into_owned();
            if message.payload.is_empty() {
                states.remove(&room);
                continue;
            }
            let state = serde_json::from_slice::<RoomState>(&message.payload)
                .map_err(|e| format!("does not parse: {e}"))
                .and_then(|state| match state.problem(&room) {
                    Some(problem) => Err(problem),
                    None => Ok(state),
                });
            match state {
                Ok(state) => {
                    states.insert(room, state);
                }
                // The latest state is the room's truth: an unusable one leaves the room without
                // state (no earlier one comes back), said once here.
                Err(problem) => {
                    states.remove(&room);
                    tracing::error!(room = ?room, offset = message.offset, %problem,
                        "a room state that cannot be used; the room starts without state");
                }
            }
        }
        let producer = bus.producer().map_err(bus_error(&what))?;
        Ok(Self {
            topic: topic.to_owned(),
            producer,
            states: Mutex::new(states),
        })
    }

    /// The latest state of every room, as read and written.
    pub(crate) fn states(&self) -> BTreeMap<String, RoomState> {
        self.states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Changes `room`'s state with `change` and writes it, waiting for the broker to take it;
    /// on failure the state is as before.
    pub(crate) fn update(
        &self,
        room: &str,
        change: impl FnOnce(&mut RoomState),
    ) -> Result<(), String> {
        let handle = {
            let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
            let before = states.get(room).cloned();
            let mut state = before.clone().unwrap_or_else(|| RoomState {
                version: VERSION,
                room: room.to_owned(),
                ..RoomState::default()
            });
            change(&mut state);
            state.updated_ns = orstream_shell::clock::now_ns();
            let payload = serde_json::to_vec(&state).map_err(|e| e.to_string())?;
            let record =
                Record::new(self.topic.clone(), payload).with_key(room.as_bytes().to_vec());
            // Sent under the lock, so the topic holds the room's states in the order made.
            match self.producer.send(&record, WAIT) {
                Ok(handle) => {
                    states.insert(room.to_owned(), state);
                    (handle, before)
                }
                Err(error) => return Err(error.to_string()),
            }
        };
        let (handle, before) = handle;
        if let Err(error) = handle.wait(WAIT) {
            let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
            match before {
                Some(before) => states.insert(room.to_owned(), before),
                None => states.remove(room),
            };
            return Err(error.to_string());
        }
        Ok(())
    }
}

/// The last frame of `stream_id` on the frames topic when it is of `case_id` and `epoch`:
/// its seq and capture time. None when the stream's last frame there is of another epoch or
/// case, or none is found; an error when the search found nothing within its bounds.
pub(crate) fn last_frame(
    bus: &Bus,
    frames_topic: &str,
    stream_id: &str,
    case_id: &str,
    epoch: u64,
) -> Result<Option<(u64, i64)>, IngestError> {
    let what = format!("looking for the last frame of {stream_id} on {frames_topic}");
    let partitions = bus
        .partitions(frames_topic, WAIT)
        .map_err(bus_error(&what))?;
    let count = u32::try_from(partitions.len()).unwrap_or(1).max(1);
    let partition = orstream_bus::partition_for_key(stream_id.as_bytes(), count);
    let (consumer, assigned) = fresh_reader(bus, frames_topic, "tail")?;
    let target = TopicPartition::new(frames_topic, partition);
    let end = consumer
        .end_offset(&target, WAIT)
        .map_err(bus_error(&what))?;
    for tp in assigned.iter().filter(|tp| **tp != target) {
        let other_end = consumer.end_offset(tp, WAIT).map_err(bus_error(&what))?;
        consumer
            .seek(tp, other_end, WAIT)
            .map_err(bus_error(&what))?;
    }
    let mut upto = end;
    while upto > 0 && end - upto < MAX_SCAN {
        let from = (upto - CHUNK).max(0);
        consumer
            .seek(&target, from, WAIT)
            .map_err(bus_error(&what))?;
        let mut newest: Option<(i64, Frame)> = None;
        let mut read_to = from;
        let deadline = Instant::now() + WAIT;
        while read_to < upto {
            if Instant::now() >= deadline {
                return Err(IngestError::Admin(format!(
                    "{what}: offsets {from}..{upto} not read within {WAIT:?}"
                )));
            }
            let Some(message) = consumer.poll(POLL).map_err(bus_error(&what))? else {
                continue;
            };
            if message.partition != partition || message.offset >= upto {
                continue;
            }
            read_to = message.offset + 1;
            if message.key.as_deref() != Some(stream_id.as_bytes()) {
                continue;
            }
            // A frame that does not decode is not this stream's frame.
            if let Ok(frame) = orstream_proto::decode::<Frame>(&message.payload)
                && newest.as_ref().is_none_or(|(o, _)| message.offset > *o)
            {
                newest = Some((message.offset, frame));
            }
        }
        if let Some((_, frame)) = newest {
            return Ok((frame.case_id == case_id && frame.session_epoch == epoch)
                .then_some((frame.seq, frame.capture_time_ns)));
        }
        upto = from;
    }
    if upto == 0 {
        return Ok(None);
    }
    Err(IngestError::Admin(format!(
        "{what}: none among the last {MAX_SCAN} frames of partition {partition}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TestSourceConfig;

    fn state() -> RoomState {
        RoomState {
            version: VERSION,
            room: "OR3".to_owned(),
            owner: "ingest-a".to_owned(),
            updated_ns: 1,
            added: vec![StreamConfig::test("scope", TestSourceConfig::default())],
            removed: vec!["room".to_owned()],
            case: Some(CaseState {
                case_id: "case-1".to_owned(),
                started_ns: 1,
                served: vec!["OR3/lap".to_owned(), "OR3/scope".to_owned()],
                ending: false,
                parts: BTreeMap::from([("OR3/lap".to_owned(), PartState { epoch: 5, base: 0 })]),
            }),
        }
    }

    #[test]
    fn room_states_from_the_topic_are_checked_before_use() {
        assert_eq!(state().problem("OR3"), None);
        assert!(state().problem("OR4").is_some());
        type Change = Box<dyn Fn(&mut RoomState)>;
        let hostile: Vec<(&str, Change)> = vec![
            ("version", Box::new(|s| s.version = 2)),
            ("owner", Box::new(|s| s.owner = "a\nb".to_owned())),
            (
                "added",
                Box::new(|s| s.added[0].stream_id = "x/y".to_owned()),
            ),
            ("added", Box::new(|s| s.added[0].output.width = 0)),
            ("case_id", Box::new(|s| s.added[0].case_id = "c".to_owned())),
            ("removed", Box::new(|s| s.removed.push("\u{0}".to_owned()))),
            (
                "more than",
                Box::new(|s| s.removed = vec!["r".to_owned(); 65]),
            ),
            (
                "case",
                Box::new(|s| s.case.as_mut().unwrap().case_id = "a\u{0}b".to_owned()),
            ),
            (
                "not a camera",
                Box::new(|s| s.case.as_mut().unwrap().served.push("OR4/lap".to_owned())),
            ),
            (
                "did not serve",
                Box::new(|s| {
                    let case = s.case.as_mut().unwrap();
                    case.parts
                        .insert("OR3/room".to_owned(), PartState::default());
                }),
            ),
            (
                "more than",
                Box::new(|s| {
                    s.case.as_mut().unwrap().served =
                        (0..65).map(|i| format!("OR3/c{i}")).collect();
                }),
            ),
        ];
        for (what, change) in hostile {
            let mut bad = state();
            change(&mut bad);
            let problem = bad.problem("OR3").expect(what);
            assert!(problem.contains(what), "{what}: {problem}");
        }
    }
}
