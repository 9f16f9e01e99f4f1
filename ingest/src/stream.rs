//! One stream's life: build the pipeline, publish its frames under a session epoch, watch for
//! stalls, rebuild after failures with capped exponential backoff, and report it all as
//! `StreamEvent`s.
//!
//! A session is one pipeline from build to teardown. Every session gets a new epoch (the
//! larger of the previous epoch + 1 and the Unix time in milliseconds, so epochs also grow
//! across restarts of the process). Frames get seq 0, 1, 2, ... within the epoch only once the
//! bus has taken them, so a dropped frame never leaves a hole. When a session that follows a
//! published one delivers its first frame, a `StreamDiscontinuity` gives the previous epoch,
//! its last seq, the gap between the two capture times and why the previous session ended;
//! failed attempts in between produce `StreamError`s but no extra discontinuity.
//!
//! A room's camera ([`StreamRunner::in_room`]) runs all the time, but publishes only inside
//! its room's case: the controller's [`Command`]s open a case (a new epoch, seq 0, frames
//! captured from the case's start on) and close it (the camera's `StreamEnded` for its part in
//! the case, reason `CASE_ENDED`, with that part's counts). Outside a case frames are counted
//! in `orstream.ingest.frames.outside_case` and nothing of the camera is published, events
//! included (failures go to the log and the camera's [`CameraView`]). A stream configured in
//! `[[streams]]` is in its configured case from start to end.
//!
//! Telemetry: every frame taken from the pipeline gets a `frame capture` span (its context
//! travels in the frame's headers); frames dropped (by reason) and rebuilds (by reason) are
//! counted (frames captured are counted by the pipeline, as they arrive), the stream's state
//! (connecting, live, stalled, reconnecting) is kept in `orstream.ingest.streams`, and the
//! session loop beats the service's liveness.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use orstream_bus::metrics::{HealthReporter, checks, value};
use orstream_proto::{
    ClockSource, Encoding, EndReason, Frame, FramesDropped, StreamDiscontinuity, StreamEnded,
    StreamError, StreamStarted, stream_event::Kind,
};
use orstream_shell::{Backoff, Streak};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::StreamConfig;
use crate::error::IngestError;
use crate::gate::{Gate, Verdict};
use crate::metrics::{StreamMetrics, StreamStateGauge};
use crate::pipeline::{self, FrameCounts, FramePipeline};
use crate::publish::{FrameOutcome, Publisher};

/// What happened to one stream over the service's run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStats {
    /// The stream's id, as configured: these figures are reported per stream.
    pub stream_id: String,
    /// Frames the bus took (each with its seq).
    pub published: u64,
    /// Frames captured but never published, for any reason.
    pub dropped: u64,
    /// Session epochs that published at least one frame.
    pub epochs: u64,
    /// Errors reported as `StreamError` events (failed sessions, oversized frames).
    pub errors: u64,
    /// Why the stream ended.
    pub end: EndReason,
    /// The failure that ended it, when it failed.
    pub detail: String,
}

impl StreamStats {
    pub(crate) fn new(stream_id: &str) -> Self {
        Self {
            stream_id: stream_id.to_owned(),
            published: 0,
            dropped: 0,
            epochs: 0,
            errors: 0,
            end: EndReason::Unspecified,
            detail: String::new(),
        }
    }
}

/// What the controller asks of a room's camera.
#[derive(Debug)]
pub(crate) enum Command {
    /// The room's case is open (or the camera joined it): frames whose host capture time is
    /// `started_ns` or later are published under `case_id`, in a new epoch from seq 0.
    Open {
        /// The case.
        case_id: String,
        /// When the case started, on the host's realtime clock (UTC ns).
        started_ns: i64,
        /// The camera's part in the case from the previous run of ingest, which ended
        /// without its end.
        recovered: Option<Recovered>,
    },
    /// The room's case ended: the camera publishes the end of its part in it and replies with
    /// that part's counts (None when it was in no case).
    Close {
        /// Where the counts go.
        reply: mpsc::Sender<Option<CasePart>>,
    },
    /// The camera leaves its room: it ends as at shutdown, reason `REMOVED`.
    Remove,
}

/// The last frame a previous run of ingest published in the case (its part was ended by the
/// controller): the next epoch's first frame comes with the discontinuity from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recovered {
    /// Its epoch.
    pub(crate) epoch: u64,
    /// Its seq.
    pub(crate) last_seq: u64,
    /// Its capture time.
    pub(crate) last_capture_ns: i64,
    /// Why the stream was interrupted.
    pub(crate) reason: String,
}

/// Told where a room's camera's part in a case stands: (stream id, case id, then the new
/// epoch and the frames of the part in earlier epochs, before that epoch's first frame is
/// published; None once the part's end is published).
pub(crate) type Checkpoint = Arc<dyn Fn(&str, &str, Option<(u64, u64)>) + Send + Sync>;

/// One camera's part in a case, as its `StreamEnded` gave it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CasePart {
    /// The camera's stream id.
    pub stream_id: String,
    /// Frames published in the case.
    pub published: u64,
    /// Frames captured in the case but dropped before publishing.
    pub dropped: u64,
}

/// [`CameraView::state`] once the camera's runner has ended (its source ended for good, it
/// was removed, or ingest stopped).
pub const CAMERA_ENDED: &str = "ended";

/// What a room's camera is doing, kept up to date by its runner for the controller's status
/// and its check of a new camera.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CameraView {
    /// `connecting`, `live`, `stalled`, `reconnecting` or `ended`.
    pub state: &'static str,
    /// Frames the source gave over the camera's life.
    pub frames: u64,
    /// Frames captured outside a case, not published.
    pub outside_case: u64,
    /// Frames published over the camera's life.
    pub published: u64,
    /// The open case the camera publishes under.
    pub case_id: Option<String>,
    /// The last failure of the source, until frames flow again.
    pub last_error: Option<String>,
}

/// The controller's side of a room's camera: its commands, its view, its checkpoints.
pub(crate) struct RoomLink {
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) view: Arc<Mutex<CameraView>>,
    pub(crate) checkpoint: Checkpoint,
}

impl std::fmt::Debug for RoomLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomLink")
            .field("view", &self.view)
            .finish_non_exhaustive()
    }
}

/// The case a stream publishes under now.
#[derive(Debug)]
struct CaseSession {
    case_id: String,
    /// Frames captured (host clock) before this are outside the case.
    started_ns: i64,
    /// Frames published in the case.
    published: u64,
    /// The stream's drop total when the case opened.
    dropped_before: u64,
}

/// How often the session loop looks at the watchdog, the shutdown token and the drop report
/// when no frame arrives.
const TICK: Duration = Duration::from_millis(100);
/// How long to wait for the pipeline to say why its frames stopped.
const OUTCOME_WAIT: Duration = Duration::from_secs(2);

/// Service settings every stream needs.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) drop_report_interval: Duration,
    pub(crate) drain_timeout: Duration,
    /// The privacy gate, when configured.
    pub(crate) gate: Option<crate::config::GateConfig>,
}

/// How a session ended.
#[derive(Debug)]
enum SessionEnd {
    /// The source reached its end.
    Eos,
    /// The service is stopping.
    Shutdown,
    /// The source failed; `unusable` when retrying cannot help, `stalled` when the watchdog
    /// found no frame in time.
    Failed {
        reason: String,
        unusable: bool,
        stalled: bool,
    },
}

/// Frames that never reached the bus, by cause, since the last `FramesDropped` event; each
/// drop is also counted in `orstream.ingest.frames.dropped` as it is added.
#[derive(Debug)]
struct Drops {
    queue_full: u64,
    invalid: u64,
    oversized: u64,
    bus_refused: u64,
    session_ended: u64,
    /// Over the stream's life.
    total: u64,
    last_report: Option<Instant>,
    metrics: StreamMetrics,
}

impl Drops {
    fn new(metrics: StreamMetrics) -> Self {
        Self {
            queue_full: 0,
            invalid: 0,
            oversized: 0,
            bus_refused: 0,
            session_ended: 0,
            total: 0,
            last_report: None,
            metrics,
        }
    }

    /// Forgets the counts reported in a `FramesDropped` event; keeps the total.
    fn reported(&mut self) {
        self.queue_full = 0;
        self.invalid = 0;
        self.oversized = 0;
        self.bus_refused = 0;
        self.session_ended = 0;
        self.last_report = Some(Instant::now());
    }

    fn pending(&self) -> u64 {
        self.queue_full + self.invalid + self.oversized + self.bus_refused + self.session_ended
    }

    fn reason(&self) -> String {
        let parts: Vec<String> = [
            ("live queue full, oldest dropped", self.queue_full),
            ("invalid sample", self.invalid),
            ("larger than max_message_bytes", self.oversized),
            ("bus queue full", self.bus_refused),
            ("session ended before publishing", self.session_ended),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(why, n)| format!("{why}: {n}"))
        .collect();
        parts.join(", ")
    }

    /// Takes the pipeline's new drops since `seen` (the pipeline counts its captured frames
    /// itself, as they arrive).
    fn add_pipeline(&mut self, now: FrameCounts, seen: &mut FrameCounts) {
        let full = now.dropped_full.saturating_sub(seen.dropped_full);
        let invalid = now.dropped_invalid.saturating_sub(seen.dropped_invalid);
        let closed = now.dropped_closed.saturating_sub(seen.dropped_closed);
        self.add(|d| &mut d.queue_full, value::QUEUE_FULL, full);
        self.add(|d| &mut d.invalid, value::INVALID_SAMPLE, invalid);
        self.add(|d| &mut d.session_ended, value::SESSION_ENDED, closed);
        *seen = now;
    }

    /// Adds `n` drops to the count `field` returns, counted under `reason`.
    fn add(&mut self, field: fn(&mut Self) -> &mut u64, reason: &'static str, n: u64) {
        *field(self) += n;
        self.total += n;
        self.metrics.dropped(reason, n);
    }
}

/// The capture time of each frame of one epoch: the camera's NTP time when the frame has one
/// and it keeps the epoch's times increasing, else the host time; never going backwards.
#[derive(Debug, Default)]
struct CaptureClock {
    last: Option<(i64, ClockSource)>,
    /// Frames whose clocks would have gone backwards and were set just after the previous one.
    clamped: u64,
}

impl CaptureClock {
    fn stamp(&mut self, host_ns: i64, ntp_ns: Option<i64>) -> (i64, ClockSource) {
        let after_last = |t: i64| self.last.is_none_or(|(last, _)| t > last);
        let stamped = match ntp_ns {
            // A camera clock behind the host's would make the switch from host to camera time
            // go backwards; such an epoch keeps the host clock.
            Some(ntp) if after_last(ntp) => (ntp, ClockSource::CameraNtp),
            _ if after_last(host_ns) => (host_ns, ClockSource::Host),
            _ => {
                self.clamped += 1;
                let (last, source) = self.last.unwrap_or((host_ns, ClockSource::Host));
                (last.saturating_add(1), source)
            }
        };
        self.last = Some(stamped);
        stamped
    }
}

/// What a session's publishing keeps from frame to frame.
#[derive(Debug, Default)]
struct Publishing {
    /// The seq the next frame published gets.
    next_seq: u64,
    /// The epoch's capture clock.
    clock: CaptureClock,
    /// The epoch has reported a frame too large for the bus (once is enough).
    oversize_reported: bool,
    /// Past it, a frame no longer waits for the bus (set once draining began).
    drain_deadline: Option<Instant>,
}

/// The previous epoch that published frames, for the discontinuity after it.
#[derive(Debug, Clone, Copy)]
struct Published {
    epoch: u64,
    last_seq: u64,
    last_capture_ns: i64,
}

/// Runs one stream until its source ends for good or `shutdown` is cancelled.
pub(crate) struct StreamRunner {
    config: StreamConfig,
    settings: Settings,
    publisher: Publisher,
    shutdown: CancellationToken,
    stats: StreamStats,
    drops: Drops,
    /// Epoch of the current (or last) session.
    epoch: u64,
    /// The last epoch that published a frame.
    published: Option<Published>,
    /// Why the stream was interrupted, kept from the first failure until frames flow again.
    interruption: Option<String>,
    /// Failed attempts since frames last flowed.
    attempts: u32,
    metrics: StreamMetrics,
    state: StreamStateGauge,
    health: Arc<dyn HealthReporter>,
    /// The case frames are published under; None outside a case (a room's camera only).
    case: Option<CaseSession>,
    /// A room's camera: the controller's commands and the view kept for it.
    room: Option<RoomLink>,
    /// The camera was removed from its room (it ends with reason `REMOVED`).
    removed: bool,
    /// The source has given a frame.
    framed: bool,
    /// The privacy gate, when configured and on for this stream.
    gate: Option<Gate<pipeline::EncodedFrame>>,
    /// What the running session's publishing keeps.
    publishing: Publishing,
}

impl StreamRunner {
    pub(crate) fn new(
        config: StreamConfig,
        settings: Settings,
        publisher: Publisher,
        shutdown: CancellationToken,
        metrics: StreamMetrics,
        health: Arc<dyn HealthReporter>,
    ) -> Self {
        let stats = StreamStats::new(&config.stream_id);
        let case = Some(CaseSession {
            case_id: config.case_id.clone(),
            started_ns: i64::MIN,
            published: 0,
            dropped_before: 0,
        });
        Self {
            config,
            settings,
            publisher,
            shutdown,
            stats,
            drops: Drops::new(metrics.clone()),
            epoch: 0,
            published: None,
            interruption: None,
            attempts: 0,
            state: metrics.state(),
            metrics,
            health,
            case,
            room: None,
            removed: false,
            framed: false,
            gate: None,
            publishing: Publishing::default(),
        }
        .gated()
    }

    /// Opens the privacy gate when it is configured and on for this stream. A gate whose
    /// model cannot be loaded withholds every frame (fail closed): said in the log, the
    /// health checks and, at each session's first frame, a stream error.
    fn gated(mut self) -> Self {
        if let (Some(config), true) = (&self.settings.gate, self.config.gate) {
            let gate = Gate::open(config);
            if let Some(why) = gate.unavailable() {
                tracing::error!(stream_id = %self.config.stream_id, reason = %why,
                    "privacy gate unavailable: every frame of the stream is withheld");
            }
            self.health
                .set_ready(checks::GATE, gate.unavailable().is_none());
            self.gate = Some(gate);
        }
        self
    }

    /// Makes this a room's camera: in no case until the controller opens one (see the module
    /// documentation).
    pub(crate) fn in_room(mut self, link: RoomLink) -> Self {
        self.case = None;
        self.room = Some(link);
        self
    }

    /// Updates the controller's view of a room's camera.
    fn view(&self, update: impl FnOnce(&mut CameraView)) {
        if let Some(room) = &self.room {
            update(&mut room.view.lock().unwrap_or_else(PoisonError::into_inner));
        }
    }

    fn set_state(&mut self, state: &'static str) {
        self.state.set(state);
        self.view(|v| v.state = state);
    }

    /// Takes the controller's commands; true when a case opened, so the session starts the
    /// new epoch at seq 0.
    fn take_commands(&mut self) -> bool {
        let Some(room) = &self.room else {
            return false;
        };
        let commands: Vec<Command> = room.commands.try_iter().collect();
        let mut opened = false;
        for command in commands {
            match command {
                Command::Open {
                    case_id,
                    started_ns,
                    recovered,
                } => {
                    self.close_case(EndReason::CaseEnded, String::new());
                    // Drops outside the case are not the case's.
                    self.drops.reported();
                    self.epoch = next_epoch(self.epoch);
                    self.published = None;
                    self.interruption = None;
                    self.attempts = 0;
                    self.view(|v| v.case_id = Some(case_id.clone()));
                    // Never the case id in a log: the room and the time name the case.
                    tracing::info!(stream_id = %self.config.stream_id, epoch = self.epoch,
                        "camera publishing in its room's case");
                    if let Some(previous) = recovered {
                        self.recover(previous);
                    }
                    self.case = Some(CaseSession {
                        case_id,
                        started_ns,
                        published: 0,
                        dropped_before: self.drops.total,
                    });
                    opened = true;
                }
                Command::Close { reply } => {
                    let part = self.close_case(EndReason::CaseEnded, String::new());
                    // The controller may have stopped waiting.
                    let _ = reply.send(part);
                }
                Command::Remove => {
                    self.removed = true;
                    self.shutdown.cancel();
                }
            }
        }
        opened
    }

    /// Makes the next epoch's first frame come with the discontinuity from the last frame a
    /// previous run of ingest published in the case.
    fn recover(&mut self, previous: Recovered) {
        self.published = Some(Published {
            epoch: previous.epoch,
            last_seq: previous.last_seq,
            last_capture_ns: previous.last_capture_ns,
        });
        self.interruption = Some(previous.reason);
    }

    /// Publishes the end of the stream's part in its case (drops first), with `reason`; the
    /// part's counts, None when it was in no case.
    fn close_case(&mut self, reason: EndReason, detail: String) -> Option<CasePart> {
        self.case.as_ref()?;
        // The frames the gate holds were captured in the case: theirs before it ends.
        self.release_held(true);
        self.report_drops(true);
        let case = self.case.as_ref()?;
        let part = CasePart {
            stream_id: self.config.stream_id.clone(),
            published: case.published,
            dropped: self.drops.total.saturating_sub(case.dropped_before),
        };
        if self.removed && !self.framed && part.published == 0 && part.dropped == 0 {
            // A camera refused when added (it never gave a frame): nothing of it in the case.
            self.case = None;
            return Some(part);
        }
        self.event(Kind::Ended(StreamEnded {
            reason: reason as i32,
            frames_published: part.published,
            frames_dropped: part.dropped,
            detail,
        }));
        tracing::info!(stream_id = %self.config.stream_id, reason = ?reason, published = part.published, dropped = part.dropped,
            "stream's part in the case ended");
        if let Some(room) = &self.room {
            (room.checkpoint)(&self.config.stream_id, &case.case_id, None);
        }
        self.case = None;
        self.view(|v| v.case_id = None);
        Some(part)
    }

    /// Runs sessions until the stream ends; returns its figures.
    pub(crate) fn run(mut self) -> StreamStats {
        let retries = self.config.source.retries();
        let schedule = Backoff {
            initial: self.config.backoff_initial,
            max: self.config.backoff_max,
        };
        let mut failures = Streak::default();
        let (reason, detail) = loop {
            self.take_commands();
            if self.shutdown.is_cancelled() {
                break (EndReason::Shutdown, String::new());
            }
            self.epoch = next_epoch(self.epoch);
            let published_before = self.stats.published;
            let end = self.session();
            let produced = self.stats.published > published_before;
            let (reason, unusable, why) = match end {
                SessionEnd::Shutdown => break (EndReason::Shutdown, String::new()),
                SessionEnd::Eos if !retries => break (EndReason::Eos, String::new()),
                SessionEnd::Eos => (
                    "the source ended (end of stream)".to_owned(),
                    false,
                    value::EOS,
                ),
                SessionEnd::Failed {
                    reason,
                    unusable,
                    stalled,
                } => (
                    reason,
                    unusable,
                    if stalled {
                        value::STALLED
                    } else {
                        value::ERROR
                    },
                ),
            };
            let fatal = unusable || !retries;
            self.stats.errors += 1;
            tracing::error!(stream_id = %self.config.stream_id, epoch = self.epoch,
                reason = %reason, fatal, "stream failed");
            self.view(|v| v.last_error = Some(reason.clone()));
            self.event(Kind::Error(StreamError {
                message: format!("stream {}: {reason}", self.config.stream_id),
                fatal,
            }));
            if fatal {
                break (EndReason::Failed, reason);
            }
            if produced {
                failures.reset();
            }
            self.attempts += 1;
            self.interruption.get_or_insert(reason);
            self.metrics.reconnect(why);
            self.set_state(value::RECONNECTING);
            if !self.sleep(failures.failed(schedule)) {
                break (EndReason::Shutdown, String::new());
            }
        };
        let reason = if self.removed && reason == EndReason::Shutdown {
            EndReason::Removed
        } else {
            reason
        };
        self.close_case(reason, detail.clone());
        self.view(|v| v.state = CAMERA_ENDED);
        tracing::info!(stream_id = %self.config.stream_id, reason = ?reason,
            published = self.stats.published, dropped = self.drops.total, "stream ended");
        // Until shutdown has waited out drain_timeout, the last frames wait for the broker.
        let cancelled_at = std::cell::Cell::new(None);
        self.publisher.finish(|| {
            self.health.beat();
            if !self.shutdown.is_cancelled() {
                return true;
            }
            let since = cancelled_at.get().unwrap_or_else(Instant::now);
            cancelled_at.set(Some(since));
            since.elapsed() <= self.settings.drain_timeout
        });
        self.stats.dropped = self.drops.total;
        self.stats.end = reason;
        self.stats.detail = detail;
        self.stats
    }

    /// Sleeps `wait` unless shutdown comes first (false when it did); alive and taking the
    /// controller's commands meanwhile.
    fn sleep(&mut self, wait: Duration) -> bool {
        let shutdown = self.shutdown.clone();
        orstream_shell::pause_while(wait, &shutdown, || {
            self.health.beat();
            self.take_commands();
        })
    }

    /// Publishes a lifecycle event under the open case; outside a case nothing of a room's
    /// camera is published (the log has it).
    /// A room's camera that never gave a frame (one being checked as it is added) publishes
    /// nothing but the end of its part.
    fn event(&self, kind: Kind) {
        let unproven = self.room.is_some() && !self.framed;
        match &self.case {
            Some(_) if unproven && !matches!(kind, Kind::Ended(_)) => {
                tracing::debug!(stream_id = %self.config.stream_id,
                    "no frame yet: stream event not published");
            }
            Some(case) => self.publisher.send_event(&case.case_id, self.epoch, kind),
            None => tracing::debug!(stream_id = %self.config.stream_id,
                "outside a case: stream event not published"),
        }
    }

    /// One pipeline from build to teardown.
    fn session(&mut self) -> SessionEnd {
        self.set_state(value::CONNECTING);
        let (pipeline, frames) = match FramePipeline::build(&self.config) {
            Ok(built) => built,
            Err(error) => return self.failed(&error),
        };
        if let Err(error) = pipeline.start() {
            return self.failed(&error);
        }
        let started = Instant::now();
        let mut seen = FrameCounts::default();
        let mut last_progress = started;
        self.publishing = Publishing::default();
        let mut stopping: Option<Instant> = None;
        let end = loop {
            self.health.beat();
            if self.take_commands() {
                // A new case: its epoch starts at seq 0.
                self.publishing = Publishing {
                    drain_deadline: self.publishing.drain_deadline,
                    ..Publishing::default()
                };
            }
            if stopping.is_none() && self.shutdown.is_cancelled() {
                // Draining: not ready any more, so a supervisor stops counting on this one (a
                // camera leaving its room is no reason).
                if !self.removed {
                    self.health.set_ready(checks::RUNNING, false);
                }
                pipeline.request_stop();
                let now = Instant::now();
                stopping = Some(now);
                self.publishing.drain_deadline = Some(now + self.settings.drain_timeout);
            }
            if let Some(since) = stopping
                && since.elapsed() > self.settings.drain_timeout
            {
                tracing::warn!(stream_id = %self.config.stream_id,
                    "the pipeline did not drain within drain_timeout; stopping it");
                break SessionEnd::Shutdown;
            }
            if let Some(reason) = self.publisher.delivery_failure(self.epoch) {
                break SessionEnd::Failed {
                    reason,
                    unusable: false,
                    stalled: false,
                };
            }
            self.drops.add_pipeline(pipeline.counts(), &mut seen);
            self.report_drops(false);
            match frames.recv_timeout(TICK) {
                Ok(frame) => {
                    self.framed = true;
                    self.set_state(value::LIVE);
                    self.view(|v| {
                        v.frames += 1;
                        v.last_error = None;
                    });
                    let in_case = self
                        .case
                        .as_ref()
                        .is_some_and(|case| frame.host_time_ns >= case.started_ns);
                    if !in_case {
                        self.metrics.outside_case();
                        self.view(|v| v.outside_case += 1);
                        last_progress = Instant::now();
                        continue;
                    }
                    let released = match &mut self.gate {
                        Some(gate) => {
                            let jpeg = frame.jpeg.clone();
                            let judging = Instant::now();
                            let released = gate.admit(frame, &jpeg);
                            self.metrics.gate_judged(judging.elapsed().as_secs_f64());
                            released
                        }
                        None => Some((frame, Verdict::Clear { score: 0.0 })),
                    };
                    if let Some((frame, verdict)) = released {
                        self.publish(frame, verdict);
                    }
                    last_progress = Instant::now();
                }
                Err(RecvTimeoutError::Timeout) => {
                    if stopping.is_some() {
                        continue;
                    }
                    let got_frame =
                        self.publishing.next_seq > 0 || pipeline.last_sample().is_some();
                    let limit = if got_frame {
                        self.config.stall_timeout
                    } else {
                        self.config.connect_timeout
                    };
                    let reference = pipeline
                        .last_sample()
                        .map_or(last_progress, |t| t.max(last_progress));
                    if reference.elapsed() > limit {
                        let reason = if got_frame {
                            format!("stall: no frame for {limit:?}")
                        } else {
                            format!("no frame within {limit:?} of connecting")
                        };
                        self.set_state(value::STALLED);
                        break SessionEnd::Failed {
                            reason,
                            unusable: false,
                            stalled: true,
                        };
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    break match (pipeline.wait_for_eos(OUTCOME_WAIT), stopping) {
                        (_, Some(_)) => SessionEnd::Shutdown,
                        (Ok(()), None) => SessionEnd::Eos,
                        (Err(error), None) => self.failed(&error),
                    };
                }
            }
        };
        // What the gate holds goes out at an end of stream or a shutdown; after a failure the
        // epoch ends here and they go with the session's queue.
        self.release_held(!matches!(end, SessionEnd::Failed { .. }));
        // Frames still queued will not be published under this epoch.
        let left = frames.len() as u64;
        drop(frames);
        self.drops.add_pipeline(pipeline.counts(), &mut seen);
        self.drops
            .add(|d| &mut d.session_ended, value::SESSION_ENDED, left);
        if self.publishing.clock.clamped > 0 {
            tracing::warn!(stream_id = %self.config.stream_id, epoch = self.epoch,
                frames = self.publishing.clock.clamped, "capture times that went backwards were clamped");
        }
        drop(pipeline);
        self.report_drops(true);
        end
    }

    /// Publishes one frame of the open case as the gate judged it: the image, or the marker
    /// that takes its place. It gets its seq once the bus has taken it.
    fn publish(&mut self, frame: pipeline::EncodedFrame, verdict: Verdict) {
        // Attributes from the allow-list only: never the stream's location or case.
        let span = tracing::info_span!(
            "frame capture",
            otel.kind = "producer",
            orstream.source.kind = self.config.source.kind(),
            orstream.reason = tracing::field::Empty,
        );
        let (capture_ns, source) = self
            .publishing
            .clock
            .stamp(frame.host_time_ns, frame.ntp_time_ns);
        let case_id = self
            .case
            .as_ref()
            .map(|case| case.case_id.clone())
            .unwrap_or_default();
        let seq = self.publishing.next_seq;
        let (encoding, data, redaction) = match verdict {
            Verdict::Clear { .. } => (Encoding::Jpeg, frame.jpeg.clone(), None),
            Verdict::Withheld(redaction) => {
                self.metrics
                    .withheld(crate::gate::reason_label(redaction.reason));
                (Encoding::Unspecified, bytes::Bytes::new(), Some(redaction))
            }
        };
        let message = Frame {
            stream_id: self.config.stream_id.clone(),
            case_id,
            session_epoch: self.epoch,
            seq,
            capture_time_ns: capture_ns,
            clock_source: source as i32,
            pts_ns: i64::try_from(frame.pts_ns).unwrap_or(i64::MAX),
            width: frame.width,
            height: frame.height,
            encoding: encoding as i32,
            data,
            redaction,
        };
        if seq == 0 {
            self.announce(&frame, capture_ns);
        }
        let drain_deadline = self.publishing.drain_deadline;
        // Waiting on the broker is not being stuck: alive meanwhile.
        let outcome = self.publisher.send_frame(&message, &span, || {
            self.health.beat();
            drain_deadline.is_none_or(|d| Instant::now() <= d)
        });
        match outcome {
            FrameOutcome::Sent => {
                self.publishing.next_seq += 1;
                self.stats.published += 1;
                if let Some(case) = &mut self.case {
                    case.published += 1;
                }
                self.view(|v| v.published += 1);
                self.published = Some(Published {
                    epoch: self.epoch,
                    last_seq: seq,
                    last_capture_ns: capture_ns,
                });
            }
            FrameOutcome::Oversized { bytes } => {
                span.record("orstream.reason", value::OVERSIZED);
                self.drops.add(|d| &mut d.oversized, value::OVERSIZED, 1);
                if !self.publishing.oversize_reported {
                    self.publishing.oversize_reported = true;
                    self.oversized(bytes);
                }
            }
            FrameOutcome::NotSent(error) => {
                tracing::debug!(stream_id = %self.config.stream_id, %error,
                    "frame not published");
                span.record("orstream.reason", value::PUBLISH_FAILED);
                self.drops
                    .add(|d| &mut d.bus_refused, value::PUBLISH_FAILED, 1);
            }
        }
    }

    /// Publishes the frames the gate still holds (their successors will not come: the
    /// session or the case's part ends), or, when the session failed, counts them dropped
    /// with it.
    fn release_held(&mut self, publish: bool) {
        let Some(gate) = &mut self.gate else { return };
        let held = gate.drain();
        if publish {
            for (frame, verdict) in held {
                self.publish(frame, verdict);
            }
        } else {
            self.drops.add(
                |d| &mut d.session_ended,
                value::SESSION_ENDED,
                held.len() as u64,
            );
        }
    }

    /// A session ended by `error`; the reason without the `stream <id>: ` prefix that every
    /// report adds anyway.
    fn failed(&self, error: &IngestError) -> SessionEnd {
        let text = error.to_string();
        let prefix = format!("stream {}: ", self.config.stream_id);
        SessionEnd::Failed {
            unusable: !error.is_retriable(),
            reason: text.strip_prefix(&prefix).unwrap_or(&text).to_owned(),
            stalled: false,
        }
    }

    /// The first frame of an epoch: the discontinuity since the previous published epoch (if
    /// any), then `started`.
    fn announce(&mut self, frame: &pipeline::EncodedFrame, capture_ns: i64) {
        if let (Some(room), Some(case)) = (&self.room, &self.case) {
            (room.checkpoint)(
                &self.config.stream_id,
                &case.case_id,
                Some((self.epoch, case.published)),
            );
        }
        if let Some(previous) = self.published.filter(|p| p.epoch != self.epoch) {
            let mut reason = self
                .interruption
                .take()
                .unwrap_or_else(|| "reconnected".to_owned());
            if self.attempts > 1 {
                reason.push_str(&format!(" ({} attempts to reconnect)", self.attempts));
            }
            tracing::warn!(stream_id = %self.config.stream_id, previous_epoch = previous.epoch,
                epoch = self.epoch, reason = %reason, "stream resumed after a discontinuity");
            self.event(Kind::Discontinuity(StreamDiscontinuity {
                previous_epoch: previous.epoch,
                previous_last_seq: Some(previous.last_seq),
                gap_start_ns: previous.last_capture_ns,
                gap_end_ns: capture_ns,
                reason,
            }));
        }
        self.interruption = None;
        self.attempts = 0;
        self.stats.epochs += 1;
        tracing::info!(stream_id = %self.config.stream_id, epoch = self.epoch,
            width = frame.width, height = frame.height, "stream started");
        self.event(Kind::Started(StreamStarted {
            source_kind: self.config.source.kind().to_owned(),
            width: frame.width,
            height: frame.height,
            // After the cap; unknown (0) stays unknown.
            fps: match self.config.output.max_fps {
                Some(cap) if frame.fps > 0.0 => frame.fps.min(f64::from(cap)),
                _ => frame.fps,
            },
        }));
        // After `started`: the stream exists, and every frame of it is withheld.
        if let Some(why) = self.gate.as_ref().and_then(|g| g.unavailable()) {
            let message = format!(
                "stream {}: privacy gate unavailable, every frame is withheld: {why}",
                self.config.stream_id
            );
            self.event(Kind::Error(StreamError {
                message,
                fatal: false,
            }));
        }
    }

    fn oversized(&mut self, bytes: usize) {
        let reason = format!(
            "stream {}: a frame of {bytes} bytes exceeds max_message_bytes; such frames are \
             dropped (lower output size or jpeg_quality, or raise max_message_bytes)",
            self.config.stream_id
        );
        tracing::error!(stream_id = %self.config.stream_id, bytes, "frame larger than max_message_bytes");
        self.stats.errors += 1;
        self.event(Kind::Error(StreamError {
            message: reason,
            fatal: false,
        }));
    }

    /// Publishes the drops since the last report, when the interval has passed or `now`.
    fn report_drops(&mut self, now: bool) {
        let pending = self.drops.pending();
        if pending == 0 {
            return;
        }
        let due = now
            || self
                .drops
                .last_report
                .is_none_or(|t| t.elapsed() >= self.settings.drop_report_interval);
        if !due {
            return;
        }
        let reason = self.drops.reason();
        tracing::warn!(stream_id = %self.config.stream_id, dropped = pending,
            total = self.drops.total, reason = %reason, "frames dropped");
        self.event(Kind::Dropped(FramesDropped {
            count: pending,
            total: self.drops.total,
            reason,
        }));
        self.drops.reported();
    }
}

/// The next session epoch: above the previous one and at least the current Unix time in
/// milliseconds, so a restarted process does not reuse the epochs of its previous run.
fn next_epoch(previous: u64) -> u64 {
    let now_ms = u64::try_from(orstream_shell::clock::now_ms()).unwrap_or(0);
    now_ms.max(previous + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_grow_and_start_at_wall_clock_milliseconds() {
        let first = next_epoch(0);
        assert!(first > 1_600_000_000_000, "{first}");
        let second = next_epoch(first);
        assert!(second > first);
        assert_eq!(next_epoch(u64::MAX - 1), u64::MAX);
    }

    #[test]
    fn capture_clock_prefers_camera_time_and_never_goes_back() {
        let mut clock = CaptureClock::default();
        assert_eq!(clock.stamp(1_000, None), (1_000, ClockSource::Host));
        // The camera's clock appears and is ahead: switch to it.
        assert_eq!(
            clock.stamp(1_033, Some(5_000)),
            (5_000, ClockSource::CameraNtp)
        );
        assert_eq!(
            clock.stamp(1_066, Some(5_033)),
            (5_033, ClockSource::CameraNtp)
        );
        // A frame without camera time that would go backwards is clamped.
        assert_eq!(clock.stamp(1_099, None), (5_034, ClockSource::CameraNtp));
        assert_eq!(clock.clamped, 1);

        let mut behind = CaptureClock::default();
        assert_eq!(behind.stamp(10_000, None), (10_000, ClockSource::Host));
        // A camera behind the host would go backwards: stay on the host clock.
        assert_eq!(
            behind.stamp(10_033, Some(2_000)),
            (10_033, ClockSource::Host)
        );
        assert_eq!(behind.clamped, 0);
    }

    #[test]
    fn drop_reasons_name_each_cause() {
        let mut drops = Drops::new(StreamMetrics::new("test"));
        let mut seen = FrameCounts::default();
        drops.add_pipeline(
            FrameCounts {
                delivered: 10,
                dropped_full: 3,
                dropped_closed: 0,
                dropped_invalid: 1,
            },
            &mut seen,
        );
        drops.add(|d| &mut d.oversized, value::OVERSIZED, 2);
        assert_eq!(drops.pending(), 6);
        assert_eq!(drops.total, 6);
        let reason = drops.reason();
        assert!(reason.contains("oldest dropped: 3"), "{reason}");
        assert!(reason.contains("invalid sample: 1"), "{reason}");
        assert!(reason.contains("max_message_bytes: 2"), "{reason}");
        // The same counts again add nothing.
        drops.add_pipeline(seen, &mut seen.clone());
        assert_eq!(drops.total, 6);
    }
}
