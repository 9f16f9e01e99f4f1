//! The controller: the site's rooms, cameras and open cases at run time, over the running
//! camera threads. The admin API ([`crate::admin`]) calls it; each operation either does all
//! it says or returns a [`ControlError`] and changes nothing.
//!
//! - Starting a case publishes the room's `CaseStarted` (waiting for the broker to take it)
//!   before any camera publishes in it, then opens it on every camera of the room.
//! - Ending a case closes it on every camera of the room (each publishes the `StreamEnded` of
//!   its part, with its counts), then publishes the room's `CaseEnded`; so every frame of the
//!   case lies between the two events.
//! - Adding a camera starts its pipeline and waits for its first frame (or its failure, or
//!   `connect_timeout`): a camera that cannot be opened is refused and stopped. During an open
//!   case it joins the case from its first frame on.
//! - Removing a camera ends it (during a case, the end of its part, reason `REMOVED`).
//!
//! Operations on one room never touch another room's cameras; they are taken one at a time
//! (a camera's first-frame wait excepted, which holds no lock).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use orstream_bus::Record;
use orstream_proto::stream_event::Kind;
use orstream_proto::{
    CaseEnded, CaseStarted, EndReason, SCHEMA_VERSION, StreamEnded, StreamEvent, headers,
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::{IngestConfig, StreamConfig};
use crate::durable::{CaseState, PartState, SiteStore};
use crate::error::IngestError;
use crate::service::{Launcher, joined};
use crate::site::{self, OpenCase, Site, SiteError};
use crate::stream::{CameraView, CasePart, Checkpoint, Command, Recovered, RoomLink, StreamStats};

/// How long the broker may take to acknowledge a case's start or end.
const EVENT_WAIT: Duration = Duration::from_secs(10);
/// How long a camera may take to publish the end of its part in a case, beyond its
/// `drain_timeout` (an archive camera may be waiting for the broker).
const CLOSE_WAIT: Duration = Duration::from_secs(5);
/// Beyond a new camera's `connect_timeout`, how long its first frame is waited for.
const FIRST_FRAME_SLACK: Duration = Duration::from_secs(2);

/// Why an operation was refused; nothing was changed unless said otherwise.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The site refused it (unknown room, case open, a bad name, ...).
    #[error(transparent)]
    Site(#[from] SiteError),
    /// The camera's settings break a rule; every problem is listed.
    #[error("camera {stream_id}: {}", problems.join("; "))]
    BadCamera {
        /// The camera's stream id.
        stream_id: String,
        /// One line per problem.
        problems: Vec<String>,
    },
    /// The camera could not be opened: it gave no frame.
    #[error("camera {stream_id} cannot be opened: {reason}")]
    CameraUnusable {
        /// The camera's stream id.
        stream_id: String,
        /// Its source's failure, or the wait that ran out.
        reason: String,
    },
    /// The bus did not take the room's case event. For a case's end, the cameras have
    /// already stopped publishing in it: ending it again publishes the end.
    #[error("the bus did not take the {what}: {reason}")]
    Bus {
        /// Which event.
        what: String,
        /// The bus's reason.
        reason: String,
    },
    /// The service is stopping.
    #[error("ingest is stopping")]
    Stopping,
    /// The camera's thread could not start.
    #[error(transparent)]
    Ingest(#[from] IngestError),
}

/// A case just started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseOpened {
    /// The room.
    pub room: String,
    /// The case.
    pub case_id: String,
    /// Its start (UTC ns).
    pub started_ns: i64,
    /// The cameras it covers, by stream id.
    pub cameras: Vec<String>,
}

/// A case just ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseClosed {
    /// The room.
    pub room: String,
    /// The case.
    pub case_id: String,
    /// Its end (UTC ns).
    pub ended_ns: i64,
    /// Every camera's part in it that the camera reported.
    pub cameras: Vec<CasePart>,
    /// Cameras of the room that did not report their part in time (their `StreamEnded`
    /// follows when they get to it).
    pub unreported: Vec<String>,
}

/// A camera, as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CameraStatus {
    /// Its name in the room.
    pub name: String,
    /// Its stream id.
    pub stream_id: String,
    /// `rtsp`, `file`, `v4l2` or `test`.
    pub source_kind: &'static str,
    /// What it is doing.
    #[serde(flatten)]
    pub view: CameraView,
}

/// A room's open case, as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseStatus {
    /// The case.
    pub case_id: String,
    /// Its start (UTC ns).
    pub started_ns: i64,
    /// Every camera that has served it.
    pub cameras: Vec<String>,
}

/// A room, as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoomStatus {
    /// The room.
    pub room: String,
    /// Its open case.
    pub case: Option<CaseStatus>,
    /// Its cameras.
    pub cameras: Vec<CameraStatus>,
}

/// A running camera.
struct Camera {
    stream: StreamConfig,
    commands: mpsc::Sender<Command>,
    view: Arc<Mutex<CameraView>>,
    thread: Option<JoinHandle<StreamStats>>,
}

impl Camera {
    fn view(&self) -> CameraView {
        self.view
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Asks the camera to leave; its thread ends once drained.
    fn remove(&self) {
        // A camera whose thread has ended has nothing to leave.
        let _ = self.commands.send(Command::Remove);
    }
}

struct Inner {
    site: Site,
    /// By stream id: the site's cameras and those being checked.
    cameras: BTreeMap<String, Camera>,
    /// Cameras that left, their threads still draining or done.
    gone: Vec<(String, Option<JoinHandle<StreamStats>>)>,
    /// What happened to the cameras removed.
    removed: Vec<StreamStats>,
}

/// A case found open (or ending) on the site topic at start.
struct Leftover {
    room: String,
    case: CaseState,
}

/// The rooms of one ingest process. See the module documentation.
pub struct Controller {
    inner: Mutex<Inner>,
    launcher: Arc<Launcher>,
    store: Arc<SiteStore>,
    /// The configured cameras' names, by room.
    configured_names: BTreeMap<String, BTreeSet<String>>,
    /// The rooms' cameras at start (configured, less those removed, with those added at run
    /// time), started by [`Controller::launch_configured`].
    configured: Vec<(String, StreamConfig)>,
    /// Cases a previous run left open or ending, taken up by `launch_configured`.
    leftovers: Mutex<Vec<Leftover>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").finish_non_exhaustive()
    }
}

impl Controller {
    /// Reads the rooms' states from the site topic, refuses rooms another ingest owns, claims
    /// the configured ones and releases those no longer configured; the cameras are not
    /// started yet.
    pub(crate) fn new(config: &IngestConfig, launcher: Arc<Launcher>) -> Result<Self, IngestError> {
        let instance = config.instance.clone().unwrap_or_default();
        let store = Arc::new(SiteStore::open(launcher.bus(), &config.site_topic)?);
        let states = store.states();
        let problems: Vec<String> = config
            .rooms
            .iter()
            .filter_map(|room| {
                let owner = &states.get(&room.name)?.owner;
                (!owner.is_empty() && *owner != instance).then(|| {
                    format!(
                        "rooms: room {} is served by ingest `{owner}`, and a room has one owner \
                         (remove it from that ingest's configuration and restart it to release it)",
                        room.name
                    )
                })
            })
            .collect();
        if !problems.is_empty() {
            return Err(IngestError::InvalidConfig {
                stream_id: "*".to_owned(),
                problems,
            });
        }
        let wanted: BTreeSet<&str> = config.rooms.iter().map(|r| r.name.as_str()).collect();
        for (name, state) in &states {
            if state.owner != instance || wanted.contains(name.as_str()) {
                continue;
            }
            if let Some(case) = &state.case {
                tracing::error!(room = %name, started_ns = case.started_ns,
                    "a room no longer configured has a case open; it stays this ingest's");
            } else if let Err(error) = store.update(name, |s| s.owner.clear()) {
                tracing::error!(room = %name, %error, "releasing a room no longer configured");
            } else {
                tracing::info!(room = %name, "released a room no longer configured");
            }
        }
        let mut site = Site::new();
        let mut configured = Vec::new();
        let mut configured_names = BTreeMap::new();
        let mut leftovers = Vec::new();
        for room in &config.rooms {
            let state = states.get(&room.name).cloned().unwrap_or_default();
            store
                .update(&room.name, |s| s.owner.clone_from(&instance))
                .map_err(|e| IngestError::Admin(format!("claiming room {}: {e}", room.name)))?;
            site.add_room(&room.name).map_err(|e| config_error(&e))?;
            let names: BTreeSet<String> =
                room.cameras.iter().map(|c| c.stream_id.clone()).collect();
            // Cameras added at run time replace configured ones of the same name.
            let cameras = room
                .cameras
                .iter()
                .filter(|c| {
                    !state.removed.contains(&c.stream_id)
                        && !state.added.iter().any(|a| a.stream_id == c.stream_id)
                })
                .chain(&state.added);
            for camera in cameras {
                site.add_camera(&room.name, &camera.stream_id)
                    .map_err(|e| config_error(&e))?;
                let stream = StreamConfig {
                    stream_id: site::stream_id(&room.name, &camera.stream_id),
                    ..camera.clone()
                };
                configured.push((room.name.clone(), stream));
            }
            configured_names.insert(room.name.clone(), names);
            if let Some(case) = state.case {
                if !case.ending {
                    let open = OpenCase {
                        case_id: case.case_id.clone(),
                        started_ns: case.started_ns,
                        served: case.served.iter().cloned().collect(),
                    };
                    site.restore_case(&room.name, open)
                        .map_err(|e| config_error(&e))?;
                }
                leftovers.push(Leftover {
                    room: room.name.clone(),
                    case,
                });
            }
        }
        Ok(Self {
            inner: Mutex::new(Inner {
                site,
                cameras: BTreeMap::new(),
                gone: Vec::new(),
                removed: Vec::new(),
            }),
            launcher,
            store,
            configured_names,
            configured,
            leftovers: Mutex::new(leftovers),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the rooms' cameras (one that cannot start is logged and left out of its room,
    /// the others go on), then takes up the cases a previous run left: an open one is opened
    /// again on every camera, an ending one is ended.
    pub(crate) fn launch_configured(&self) {
        let mut inner = self.lock();
        for (room, stream) in &self.configured {
            match self.launch(room, stream) {
                Ok(camera) => {
                    inner.cameras.insert(stream.stream_id.clone(), camera);
                }
                Err(error) => {
                    tracing::error!(stream_id = %stream.stream_id, %error, "camera not started");
                    let name = stream.stream_id.rsplit('/').next().unwrap_or_default();
                    let _ = inner.site.remove_camera(room, name);
                }
            }
        }
        let leftovers = std::mem::take(
            &mut *self
                .leftovers
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for leftover in leftovers {
            if let Err(error) = self.take_up(&mut inner, &leftover) {
                tracing::error!(room = %leftover.room, %error, "taking up the case a previous run left");
            }
        }
    }

    /// Ends the parts a previous run left open in `leftover`'s case, then opens the case
    /// again on every camera of the room (or, when it was ending, publishes its end).
    fn take_up(&self, inner: &mut Inner, leftover: &Leftover) -> Result<(), ControlError> {
        let Leftover { room, case } = leftover;
        let reason = "ingest stopped during the case without ending this camera's part \
                      (killed or crashed); counted from the bus";
        let mut last_frames = BTreeMap::new();
        for (stream_id, part) in &case.parts {
            let last = crate::durable::last_frame(
                self.launcher.bus(),
                self.launcher.frames_topic(),
                stream_id,
                &case.case_id,
                part.epoch,
            );
            let (published, detail) = match &last {
                Ok(Some((seq, _))) => (part.base + seq + 1, reason.to_owned()),
                Ok(None) => (part.base, reason.to_owned()),
                Err(error) => (
                    part.base,
                    format!("{reason}; the last epoch's frames could not be counted: {error}"),
                ),
            };
            let event = StreamEvent {
                stream_id: stream_id.clone(),
                case_id: case.case_id.clone(),
                session_epoch: part.epoch,
                time_ns: orstream_shell::clock::now_ns(),
                room_id: room.clone(),
                kind: Some(Kind::Ended(StreamEnded {
                    reason: EndReason::Failed as i32,
                    frames_published: published,
                    frames_dropped: 0,
                    detail: orstream_proto::wire::fit_detail(&detail),
                })),
            };
            self.publish(&event, &format!("end of {stream_id}'s part in the case"))?;
            tracing::warn!(%stream_id, epoch = part.epoch, published,
                "ended the part a previous run left open");
            if let Ok(Some((seq, capture))) = last {
                last_frames.insert(stream_id.clone(), (part.epoch, seq, capture));
            }
        }
        if case.ending {
            let event = StreamEvent::for_room(
                room,
                &case.case_id,
                orstream_shell::clock::now_ns(),
                Kind::CaseEnded(CaseEnded {
                    cameras: case.served.clone(),
                    detail: "ended while ingest stopped".to_owned(),
                }),
            );
            self.publish(&event, &format!("end of the case in room {room}"))?;
            self.store
                .update(room, |s| s.case = None)
                .map_err(|reason| store_error(&reason))?;
            return Ok(());
        }
        // Its start again (the record takes it once), then every camera in a new epoch.
        let event = StreamEvent::for_room(
            room,
            &case.case_id,
            case.started_ns,
            Kind::CaseStarted(CaseStarted {
                cameras: case.served.clone(),
            }),
        );
        self.publish(&event, &format!("start of the case in room {room}"))?;
        self.store
            .update(room, |s| {
                if let Some(c) = &mut s.case {
                    c.parts.clear();
                }
            })
            .map_err(|reason| store_error(&reason))?;
        for stream_id in cameras_of(&inner.site, room) {
            if let Some(camera) = inner.cameras.get(&stream_id) {
                let recovered =
                    last_frames
                        .get(&stream_id)
                        .map(|(epoch, seq, capture)| Recovered {
                            epoch: *epoch,
                            last_seq: *seq,
                            last_capture_ns: *capture,
                            reason: "ingest restarted during the case".to_owned(),
                        });
                let _ = camera.commands.send(Command::Open {
                    case_id: case.case_id.clone(),
                    started_ns: case.started_ns,
                    recovered,
                });
            }
        }
        tracing::info!(
            room,
            started_ns = case.started_ns,
            "case taken up after a restart"
        );
        Ok(())
    }

    fn launch(&self, room: &str, stream: &StreamConfig) -> Result<Camera, IngestError> {
        let (commands, receiver) = mpsc::channel();
        let view = Arc::new(Mutex::new(CameraView::default()));
        let store = Arc::clone(&self.store);
        let room_name = room.to_owned();
        let checkpoint: Checkpoint = Arc::new(move |stream_id, case_id, part| {
            let written = store.update(&room_name, |s| {
                if let Some(case) = s.case.as_mut().filter(|c| c.case_id == case_id) {
                    match part {
                        Some((epoch, base)) => {
                            case.parts
                                .insert(stream_id.to_owned(), PartState { epoch, base });
                        }
                        None => {
                            case.parts.remove(stream_id);
                        }
                    }
                }
            });
            if let Err(error) = written {
                tracing::error!(%stream_id, %error,
                    "the camera's part not noted on the site topic; a restart now would not count it");
            }
        });
        let link = RoomLink {
            commands: receiver,
            view: Arc::clone(&view),
            checkpoint,
        };
        let token = self.launcher.shutdown().child_token();
        let thread = self.launcher.launch(stream, Some((room, link)), token)?;
        Ok(Camera {
            stream: stream.clone(),
            commands,
            view,
            thread: Some(thread),
        })
    }

    /// Publishes a room's case event and waits for the broker to take it.
    fn publish(&self, event: &StreamEvent, what: &str) -> Result<(), ControlError> {
        let record = Record::new(
            self.launcher.events_topic().to_owned(),
            orstream_proto::encode(event),
        )
        .with_key(event.room_id.clone().into_bytes())
        .with_header(headers::SCHEMA_VERSION, SCHEMA_VERSION);
        let bus = |e: orstream_bus::BusError| ControlError::Bus {
            what: what.to_owned(),
            reason: e.to_string(),
        };
        let handle = self
            .launcher
            .producer()
            .send(&record, EVENT_WAIT)
            .map_err(bus)?;
        handle.wait(EVENT_WAIT).map_err(bus)?;
        Ok(())
    }

    fn stopping(&self) -> Result<(), ControlError> {
        if self.launcher.shutdown().is_cancelled() {
            Err(ControlError::Stopping)
        } else {
            Ok(())
        }
    }

    /// Starts `case_id` in `room` on every camera of it.
    pub fn start_case(&self, room: &str, case_id: &str) -> Result<CaseOpened, ControlError> {
        self.stopping()?;
        let mut inner = self.lock();
        let started_ns = orstream_shell::clock::now_ns();
        let mut next = inner.site.clone();
        let event = next.start_case(room, case_id, started_ns)?;
        let cameras = cameras_of(&next, room);
        // Noted first: a restart from here on takes the case up.
        self.store
            .update(room, |s| {
                s.case = Some(CaseState {
                    case_id: case_id.to_owned(),
                    started_ns,
                    served: cameras.clone(),
                    ending: false,
                    parts: BTreeMap::new(),
                });
            })
            .map_err(|reason| store_error(&reason))?;
        if let Err(error) = self.publish(&event, &format!("start of the case in room {room}")) {
            if let Err(reason) = self.store.update(room, |s| s.case = None) {
                tracing::error!(room, %reason,
                    "the case's start was refused but stays noted on the site topic");
            }
            return Err(error);
        }
        inner.site = next;
        for stream_id in &cameras {
            if let Some(camera) = inner.cameras.get(stream_id) {
                let _ = camera.commands.send(Command::Open {
                    case_id: case_id.to_owned(),
                    started_ns,
                    recovered: None,
                });
            }
        }
        tracing::info!(room, started_ns, cameras = cameras.len(), "case started");
        Ok(CaseOpened {
            room: room.to_owned(),
            case_id: case_id.to_owned(),
            started_ns,
            cameras,
        })
    }

    /// Ends the open case of `room`: every camera's part, then the room's `CaseEnded`.
    pub fn end_case(&self, room: &str) -> Result<CaseClosed, ControlError> {
        self.stopping()?;
        let mut inner = self.lock();
        let open = inner
            .site
            .rooms()
            .get(room)
            .ok_or_else(|| SiteError::UnknownRoom(room.to_owned()))?
            .case
            .clone()
            .ok_or_else(|| SiteError::NoOpenCase(room.to_owned()))?;
        // Noted first: a restart from here on ends the case.
        self.store
            .update(room, |s| {
                if let Some(case) = &mut s.case {
                    case.ending = true;
                }
            })
            .map_err(|reason| store_error(&reason))?;
        let mut replies = Vec::new();
        let mut unreported = Vec::new();
        for stream_id in cameras_of(&inner.site, room) {
            let (reply, receiver) = mpsc::channel();
            match inner.cameras.get(&stream_id) {
                // Its source ended for good: the end of its part went out then.
                Some(camera) if camera.thread.as_ref().is_some_and(JoinHandle::is_finished) => {}
                Some(camera) if camera.commands.send(Command::Close { reply }).is_ok() => {
                    replies.push((stream_id, receiver));
                }
                _ => unreported.push(stream_id),
            }
        }
        let deadline = Instant::now() + self.launcher.drain_timeout() + CLOSE_WAIT;
        let mut parts = Vec::new();
        for (stream_id, receiver) in replies {
            let left = deadline.saturating_duration_since(Instant::now());
            match receiver.recv_timeout(left) {
                Ok(Some(part)) => parts.push(part),
                // Its part ended already (the camera's source ended for good).
                Ok(None) => {}
                Err(_) => {
                    tracing::warn!(%stream_id,
                        "camera did not report its part in the case in time");
                    unreported.push(stream_id);
                }
            }
        }
        let detail = if unreported.is_empty() {
            String::new()
        } else {
            format!("not reported by the camera: {}", unreported.join(", "))
        };
        let ended_ns = orstream_shell::clock::now_ns();
        let mut next = inner.site.clone();
        let event = next.end_case(room, ended_ns, &detail)?;
        self.publish(&event, &format!("end of the case in room {room}"))?;
        inner.site = next;
        if let Err(reason) = self.store.update(room, |s| s.case = None) {
            // Taken up as ending at the next start: its end is published again, harmlessly.
            tracing::error!(room, %reason,
                "the case's end not noted on the site topic");
        }
        tracing::info!(room, ended_ns, cameras = parts.len(), "case ended");
        Ok(CaseClosed {
            room: room.to_owned(),
            case_id: open.case_id,
            ended_ns,
            cameras: parts,
            unreported,
        })
    }

    /// Adds a camera to `room` (its `stream_id` is the camera's name) once it gives a frame.
    pub fn add_camera(
        &self,
        room: &str,
        camera: StreamConfig,
    ) -> Result<CameraStatus, ControlError> {
        self.stopping()?;
        let name = camera.stream_id.clone();
        let camera_settings = camera.clone();
        let stream = StreamConfig {
            stream_id: site::stream_id(room, &name),
            ..camera
        };
        let started = {
            let mut inner = self.lock();
            // The site's rules first (room known, name free and well formed, room not full).
            inner.site.clone().add_camera(room, &name)?;
            if inner.cameras.contains_key(&stream.stream_id) {
                return Err(SiteError::CameraExists {
                    room: room.to_owned(),
                    camera: name,
                }
                .into());
            }
            let problems = camera_settings.camera_problems("");
            if !problems.is_empty() {
                return Err(ControlError::BadCamera {
                    stream_id: stream.stream_id,
                    problems,
                });
            }
            let camera = self.launch(room, &stream)?;
            // During a case, its first frame is the case's already; should it be refused, a
            // part without frames leaves nothing on the bus.
            if let Some(case) = inner.site.rooms().get(room).and_then(|r| r.case.clone()) {
                let _ = camera.commands.send(Command::Open {
                    case_id: case.case_id,
                    started_ns: case.started_ns,
                    recovered: None,
                });
            }
            let view = Arc::clone(&camera.view);
            inner.cameras.insert(stream.stream_id.clone(), camera);
            view
        };
        let failure = first_frame(
            &started,
            stream.connect_timeout + FIRST_FRAME_SLACK,
            self.launcher.shutdown(),
        );
        let mut inner = self.lock();
        let added = match failure {
            Some(reason) => Err(ControlError::CameraUnusable {
                stream_id: stream.stream_id.clone(),
                reason,
            }),
            // Checked again: the room may have filled up meanwhile; then noted.
            None => {
                let mut next = inner.site.clone();
                next.add_camera(room, &name)
                    .map_err(ControlError::from)
                    .and_then(|()| {
                        self.note_camera(room, &name, Some(&camera_settings), &next)?;
                        inner.site = next;
                        Ok(())
                    })
            }
        };
        if let Err(error) = added {
            if let Some(mut camera) = inner.cameras.remove(&stream.stream_id) {
                camera.remove();
                let thread = camera.thread.take();
                inner.gone.push((stream.stream_id.clone(), thread));
            }
            return Err(error);
        }
        let camera = inner
            .cameras
            .get(&stream.stream_id)
            .ok_or(ControlError::Stopping)?;
        tracing::info!(stream_id = %stream.stream_id, source_kind = stream.source.kind(),
            "camera added");
        Ok(status_of(&stream.stream_id, camera))
    }

    /// Removes a camera from `room`; during a case, it publishes the end of its part.
    pub fn remove_camera(&self, room: &str, name: &str) -> Result<CameraStatus, ControlError> {
        self.stopping()?;
        let (status, thread) = {
            let mut inner = self.lock();
            let mut next = inner.site.clone();
            next.remove_camera(room, name)?;
            self.note_camera(room, name, None, &next)?;
            inner.site = next;
            let stream_id = site::stream_id(room, name);
            let Some(mut camera) = inner.cameras.remove(&stream_id) else {
                return Err(ControlError::Stopping);
            };
            camera.remove();
            (status_of(&stream_id, &camera), camera.thread.take())
        };
        // Waits for its drain outside the lock: the other rooms go on meanwhile.
        let stats = joined(&status.stream_id, thread);
        tracing::info!(stream_id = %status.stream_id, published = stats.published,
            "camera removed");
        self.lock().removed.push(stats);
        Ok(status)
    }

    /// Notes on the site topic that `name` joined `room` with `settings` (or left it, None),
    /// with the case's cameras as `site` has them.
    fn note_camera(
        &self,
        room: &str,
        name: &str,
        settings: Option<&StreamConfig>,
        site: &Site,
    ) -> Result<(), ControlError> {
        let configured = self
            .configured_names
            .get(room)
            .is_some_and(|names| names.contains(name));
        let served: Option<Vec<String>> = site
            .rooms()
            .get(room)
            .and_then(|r| r.case.as_ref())
            .map(|c| c.served.iter().cloned().collect());
        self.store
            .update(room, |s| {
                s.added.retain(|c| c.stream_id != name);
                s.removed.retain(|n| n != name);
                match settings {
                    Some(settings) => s.added.push(settings.clone()),
                    None if configured => s.removed.push(name.to_owned()),
                    None => {}
                }
                if let (Some(case), Some(served)) = (&mut s.case, &served) {
                    case.served.clone_from(served);
                }
            })
            .map_err(|reason| store_error(&reason))
    }

    /// Every room with its open case and cameras.
    pub fn status(&self) -> Vec<RoomStatus> {
        let inner = self.lock();
        inner
            .site
            .rooms()
            .iter()
            .map(|(room, entry)| RoomStatus {
                room: room.clone(),
                case: entry.case.as_ref().map(|case| CaseStatus {
                    case_id: case.case_id.clone(),
                    started_ns: case.started_ns,
                    cameras: case.served.iter().cloned().collect(),
                }),
                cameras: entry
                    .cameras
                    .iter()
                    .filter_map(|name| {
                        let stream_id = site::stream_id(room, name);
                        inner
                            .cameras
                            .get(&stream_id)
                            .map(|camera| status_of(&stream_id, camera))
                    })
                    .collect(),
            })
            .collect()
    }

    /// Once shutdown was cancelled: waits for every camera's end and returns what happened to
    /// each, the removed ones included.
    pub(crate) fn join(&self) -> Vec<StreamStats> {
        let (cameras, gone, mut stats) = {
            let mut inner = self.lock();
            let cameras = std::mem::take(&mut inner.cameras);
            let removed = std::mem::take(&mut inner.removed);
            (cameras, std::mem::take(&mut inner.gone), removed)
        };
        for (stream_id, mut camera) in cameras {
            stats.push(joined(&stream_id, camera.thread.take()));
        }
        for (stream_id, thread) in gone {
            if thread.is_some() {
                stats.push(joined(&stream_id, thread));
            }
        }
        stats
    }
}

/// The stream ids of `room`'s cameras now.
fn cameras_of(site: &Site, room: &str) -> Vec<String> {
    site.rooms().get(room).map_or_else(Vec::new, |entry| {
        entry
            .cameras
            .iter()
            .map(|name| site::stream_id(room, name))
            .collect()
    })
}

fn status_of(stream_id: &str, camera: &Camera) -> CameraStatus {
    CameraStatus {
        name: stream_id.rsplit('/').next().unwrap_or_default().to_owned(),
        stream_id: stream_id.to_owned(),
        source_kind: camera.stream.source.kind(),
        view: camera.view(),
    }
}

/// Waits for a new camera's first frame: None once it came, else why it did not.
fn first_frame(
    view: &Mutex<CameraView>,
    wait: Duration,
    shutdown: &CancellationToken,
) -> Option<String> {
    let deadline = Instant::now() + wait;
    loop {
        {
            let view = view.lock().unwrap_or_else(PoisonError::into_inner);
            if view.frames > 0 {
                return None;
            }
            if let Some(error) = &view.last_error {
                return Some(error.clone());
            }
            if view.state == crate::stream::CAMERA_ENDED {
                return Some("the source ended before its first frame".to_owned());
            }
        }
        if shutdown.is_cancelled() {
            return Some("ingest is stopping".to_owned());
        }
        if Instant::now() >= deadline {
            return Some(format!("no frame within {wait:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn store_error(reason: &str) -> ControlError {
    ControlError::Bus {
        what: "room's state (site topic)".to_owned(),
        reason: reason.to_owned(),
    }
}

fn config_error(error: &SiteError) -> IngestError {
    IngestError::InvalidConfig {
        stream_id: "*".to_owned(),
        problems: vec![format!("rooms: {error}")],
    }
}
