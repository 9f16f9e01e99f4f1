//! The embedded demo: the whole job in one process.
//!
//! The committed demo clip (or any file or RTSP camera) is played as a live OR camera through
//! ingest -> `or.frames.v1` -> infer (the demo model) -> `or.results.v1` -> sink -> the
//! surgical record, over the in-process bus into an SQLite file — or, with `--kafka` and
//! `--postgres`, over the real broker into PostgreSQL. Each service runs on its own thread
//! with its own child of one cancellation token, exactly as it does as a separate process.
//!
//! While it runs, a monitor (its own consumer group on the results topic) prints frames in and
//! out, throughput, batch size, capture-to-result latency and skips. At the end the demo
//! prints the case's timeline, the per-tool usage and motion totals and, for a clip with
//! ground truth, how the derived events compare with it and how the tool tracks (as published
//! on `or.tracks.v1`) compare with the clip's scripted tool paths; and it writes the timeline
//! picture.
//!
//! Shutdown order: ingest ends (end of file, or the operator's SIGINT), then infer is
//! cancelled once every published frame has a committed result, then the sink once every
//! result and the stream's end are stored.

pub mod page;
pub mod privacy;
pub mod tracks;
pub mod truth;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use orstream_bus::metrics::{HealthReporter, NoHealth, checks};
use orstream_bus::{Bus, KafkaConfig};
use orstream_infer::config::Mode;
use orstream_infer::{InferConfig, Model, Worker};
use orstream_ingest::config::GateConfig;
use orstream_ingest::{AdminConfig, Ingest, IngestConfig, RoomConfig};

use crate::commands::admin::Client;
use orstream_proto::{Frame, FrameResult, FrameStatus, Outcome, TrackFrame, topics};
use orstream_record::query::{self, StreamAccounting, Timeline};
use orstream_record::text::{self, Format};
use orstream_record::{Store, svg};
use orstream_sink::derive::StreamState;
use orstream_sink::{Sink, SinkConfig};
use tokio_util::sync::CancellationToken;

/// Where the demo's video comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DemoSource {
    /// A video file, played once.
    File(PathBuf),
    /// An RTSP camera; runs until SIGINT/SIGTERM.
    Rtsp(String),
}

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The video: a file ends the demo at its end, a camera runs until a signal.
    pub source: DemoSource,
    /// Ground truth of the clip (`*.timeline.json`), to compare the derived events with.
    pub truth: Option<PathBuf>,
    /// Process every frame as fast as possible instead of at camera pace.
    pub archive: bool,
    /// Kafka bootstrap servers; the in-process bus when absent.
    pub kafka: Option<String>,
    /// PostgreSQL URL for the record; an SQLite file in `out_dir` when absent.
    pub postgres: Option<String>,
    /// TorchScript model; its card is the same path with `.toml`.
    pub model: PathBuf,
    /// Device for the model: `cpu` or `cuda:N`.
    pub device: String,
    /// Where the record (SQLite) and the timeline picture are written.
    pub out_dir: PathBuf,
    /// Frame size published by ingest.
    pub width: u32,
    /// Frame size published by ingest.
    pub height: u32,
    /// Print a progress line this often (None: quiet).
    pub progress_every: Option<Duration>,
    /// Serve the record's page here while the demo runs (None: no page).
    pub page: Option<std::net::SocketAddr>,
    /// The privacy gate on the camera (None: no gate).
    pub gate: Option<GateConfig>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            source: DemoSource::File(PathBuf::from("models/demo/clip.mp4")),
            truth: Some(PathBuf::from("models/demo/clip.timeline.json")),
            archive: false,
            kafka: None,
            postgres: None,
            model: PathBuf::from("models/demo/seg.pt"),
            device: "cpu".into(),
            out_dir: PathBuf::from("demo-output"),
            width: 640,
            height: 360,
            progress_every: Some(Duration::from_secs(1)),
            page: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9480))),
            gate: Some(GateConfig::default()),
        }
    }
}

impl DemoOptions {
    /// The default clip, every frame as fast as the machine allows (archive mode), the record
    /// and picture written to `out_dir`, no progress lines, no privacy gate: the reference run
    /// of the segmentation model and the derivation that the end-to-end tests compare against
    /// (the three-process run has no gate either).
    pub fn archive_quiet(out_dir: PathBuf) -> Self {
        Self {
            archive: true,
            out_dir,
            progress_every: None,
            page: None,
            gate: None,
            ..Self::default()
        }
    }
}

/// What the results monitor saw.
#[derive(Debug, Clone, Default)]
pub struct ResultTally {
    /// Results of this case, by status.
    pub ok: u64,
    /// SKIPPED_STALE + SKIPPED_OVERLOAD.
    pub skipped: u64,
    /// REDACTED: withheld by ingest's privacy gate.
    pub redacted: u64,
    /// Any error status.
    pub errors: u64,
    /// Capture -> result latency of OK results, in ms, sorted.
    pub latencies_ms: Vec<f64>,
    /// Sum of batch sizes of OK results.
    pub batch_sum: u64,
    /// Sum of model forward time per OK result's batch, in µs.
    pub forward_us_sum: u64,
}

impl ResultTally {
    /// All results.
    pub fn total(&self) -> u64 {
        self.ok + self.skipped + self.errors + self.redacted
    }

    /// Latency quantile (0..=1) in ms.
    pub fn latency_ms(&self, q: f64) -> Option<f64> {
        if self.latencies_ms.is_empty() {
            return None;
        }
        let i = ((self.latencies_ms.len() - 1) as f64 * q).round() as usize;
        self.latencies_ms.get(i).copied()
    }

    /// Mean batch size of OK results.
    pub fn mean_batch(&self) -> f64 {
        self.batch_sum as f64 / self.ok.max(1) as f64
    }
}

/// The outcome of a demo run.
#[derive(Debug)]
pub struct DemoReport {
    /// The case the run recorded.
    pub case_id: String,
    /// Frames published by ingest.
    pub published: u64,
    /// Frames captured but dropped by ingest before publishing (live backpressure).
    pub ingest_dropped: u64,
    /// What infer committed, by status, with its batches and aborts.
    pub infer: orstream_infer::Stats,
    /// What the sink stored and published, to compare with what infer answered.
    pub sink: orstream_sink::Stats,
    /// What the results monitor saw for this case.
    pub results: ResultTally,
    /// The case's timeline as stored.
    pub timeline: Timeline,
    /// The stream's accounting as the record holds it (what `orstream record accounting`
    /// shows).
    pub accounting: StreamAccounting,
    /// Comparison with the clip's ground truth, when it has one.
    pub comparison: Option<truth::Comparison>,
    /// The tool tracks against the clip's ground-truth tracks (`*.tracks.json` beside
    /// `*.timeline.json`), when it has them.
    pub tracking: Option<tracks::TrackScore>,
    /// Track frames published on the tracks topic for this case.
    pub track_frames: u64,
    /// The privacy gate's figures, with the gate on.
    pub privacy: Option<privacy::PrivacyReport>,
    /// The timeline picture.
    pub picture: PathBuf,
    /// Where the record is.
    pub store: String,
    /// Wall time from start to the record being complete.
    pub wall: Duration,
}

impl DemoReport {
    /// Every published frame has exactly one result, and every result is stored.
    pub fn all_accounted(&self) -> bool {
        self.published == self.results.total()
            && self.published == self.infer.results()
            && self.published == self.stored()
    }

    /// Results stored in the record for the stream, by the record's own accounting.
    pub fn stored(&self) -> u64 {
        self.accounting.results
    }
}

/// Results the infer worker has committed, read from its live counters.
fn committed_results(counters: &orstream_infer::stats::Counters) -> u64 {
    counters.snapshot().results()
}

/// Smallest instance that counts as a sighting, as a fraction of the frame (the ground truth's
/// visibility rule).
const VISIBLE_FRACTION: f32 = 0.005;

/// Partitions of the demo's topics (one camera uses one of them; the rest show the layout).
const TOPIC_PARTITIONS: u32 = 3;

fn card_path(model: &Path) -> PathBuf {
    model.with_extension("toml")
}

/// Runs the demo to completion (or until `shutdown` for a camera) and reports.
pub fn run(options: &DemoOptions, shutdown: &CancellationToken) -> Result<DemoReport> {
    if options.postgres.is_some() && options.kafka.is_none() {
        // The record stores the offsets it consumed; an in-process bus starts from zero every
        // run, so a persistent database would see this run's results as replays.
        bail!("--postgres needs --kafka: a persistent record needs a persistent bus");
    }
    std::fs::create_dir_all(&options.out_dir)
        .with_context(|| format!("creating {}", options.out_dir.display()))?;
    let run_id = orstream_shell::clock::now_secs();
    let case_id = format!("demo-{run_id}");
    let stream_id = orstream_ingest::site::stream_id(DEMO_ROOM, DEMO_CAMERA);

    let bus = open_bus(options)?;
    let store_url = record_url(options)?;
    create_topics(&bus)?;

    // Inference first: the model is loaded, checked against its card and warmed up before
    // any frame is published.
    let infer_config = infer_config(options, run_id)?;
    let model = Model::open(&infer_config.model)
        .with_context(|| format!("loading the model {}", options.model.display()))?;

    let mut sink_config = SinkConfig {
        store: store_url.clone(),
        ..SinkConfig::default()
    };
    if let Some(bootstrap) = &options.kafka {
        sink_config.kafka.bootstrap_servers = bootstrap.clone();
    }
    // The services report into the process's health when telemetry serves it.
    let health: Arc<dyn HealthReporter> = match crate::telemetry::health() {
        Some(health) => Arc::new(health),
        None => Arc::new(NoHealth),
    };
    // Over Kafka the worker joins its group; the in-process bus assigns without a rebalance.
    let infer_ready = Arc::new(InferReady::new(
        Arc::clone(&health),
        options.kafka.is_some(),
    ));
    let worker = Worker::new(infer_config, bus.clone(), model)
        .context("starting inference")?
        .with_health(Arc::clone(&infer_ready) as Arc<dyn HealthReporter>);
    let infer_counters = worker.counters();
    let store = Store::open(&store_url).context("opening the record")?;
    let sink = Sink::new(sink_config, bus.clone(), store)
        .context("starting the sink")?
        .with_health(Arc::clone(&health));
    let sink_progress = sink.progress();
    let page = match options.page {
        Some(listen) => {
            let page = page::PageServer::start(listen, &bus, &store_url, &options.out_dir)
                .context("serving the record page")?;
            println!(
                "record page: {url}#case={case_id} (sign in with the token {token}, also in {file})",
                url = page.url,
                token = page.token,
                file = options.out_dir.join("page.tokens").display(),
            );
            Some(page)
        }
        None => None,
    };

    // The demo's room starts empty; its case and camera come over the admin API, as an OR
    // scheduling system would start them.
    let token = uuid::Uuid::new_v4().simple().to_string();
    let token_file = options.out_dir.join("admin.token");
    write_secret(&token_file, &format!("demo {token}\n"))?;
    let ingest_config = IngestConfig {
        rooms: vec![RoomConfig {
            name: DEMO_ROOM.to_owned(),
            cameras: Vec::new(),
        }],
        admin: AdminConfig {
            listen: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
            token_file: Some(token_file),
        },
        instance: Some("demo".to_owned()),
        gate: options.gate.clone(),
        ..IngestConfig::default()
    };
    let gate_before = orstream_ingest::gate::totals();
    let (bound, admin_addr) = std::sync::mpsc::channel();
    let ingest = Ingest::new(ingest_config, bus.clone())
        .context("starting ingest")?
        .with_health(health)
        .with_admin_bound(bound);

    let started = Instant::now();
    let tokens = (
        shutdown.child_token(),
        shutdown.child_token(),
        shutdown.child_token(),
    );
    let (_, infer_token, sink_token) = tokens;
    // Not a child of `shutdown`: after the operator's signal the case is still ended over the
    // API before ingest stops.
    let ingest_token = CancellationToken::new();
    let sink_thread = spawn("orstream-demo-sink", {
        let token = sink_token.clone();
        move || sink.run(token).map_err(anyhow::Error::from)
    })?;
    let infer_thread = spawn("orstream-demo-infer", {
        let token = infer_token.clone();
        move || worker.run(token).map_err(anyhow::Error::from)
    })?;
    let monitor = Monitor::start(&bus, &case_id)?;
    // This case's track frames, as a downstream consumer reads them.
    let track_frames = CaseTap::start(
        &bus,
        &case_id,
        topics::TRACKS,
        |f: &TrackFrame| &f.case_id,
        TrackFrame::clone,
    )?;
    let frames_seen = match options.gate {
        // Every frame of the case read back, with its image or without.
        Some(_) => Some(CaseTap::start(
            &bus,
            &case_id,
            topics::FRAMES,
            |f: &Frame| &f.case_id,
            privacy::FrameSeen::of,
        )?),
        None => None,
    };
    let ingest_thread = spawn("orstream-demo-ingest", {
        let token = ingest_token.clone();
        move || ingest.run(token).map_err(anyhow::Error::from)
    })?;
    let admin = match admin_addr.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => Client::new(&format!("http://{addr}"), &token),
        Err(_) => {
            ingest_token.cancel();
            join(ingest_thread, "ingest")?;
            bail!("ingest's admin API did not start");
        }
    };
    // The camera starts once inference is ready (its model warm, over Kafka its partitions
    // assigned): a live camera's first frames would otherwise wait out the warm-up and go
    // stale.
    wait_until(
        shutdown,
        Duration::from_secs(1),
        || {
            infer_ready.ready()
                || infer_thread.is_finished()
                || started.elapsed() > INFER_READY_WAIT
        },
        || {},
    );
    let opened = clear_room(&admin)
        .and_then(|()| admin.start_case(DEMO_ROOM, &case_id))
        .and_then(|_| {
            admin.call(
                "POST",
                &format!("/v1/rooms/{DEMO_ROOM}/cameras"),
                Some(&camera_request(options)),
            )
        });
    if let Err(error) = opened {
        ingest_token.cancel();
        join(ingest_thread, "ingest")?;
        return Err(error.context("starting the demo's case and camera over the admin API"));
    }
    let camera_done = camera_watch(&admin);

    // Progress until ingest ends (end of file) or the operator stops it.
    let progress = |stage: &str| {
        if options.progress_every.is_some() {
            print_progress(started, stage, &infer_counters, &sink_progress, &monitor);
        }
    };
    let every = options.progress_every.unwrap_or(Duration::from_secs(1));
    wait_until(
        shutdown,
        every,
        || {
            camera_done()
                || ingest_thread.is_finished()
                || infer_thread.is_finished()
                || sink_thread.is_finished()
        },
        || progress("playing"),
    );
    // The case ends over the API (the clip's end, or the operator's signal); a service that
    // stopped meanwhile has failed, and the joins below report that failure.
    if !ingest_thread.is_finished()
        && let Err(error) = admin.end_case(DEMO_ROOM)
    {
        tracing::warn!("ending the demo's case: {error:#}");
    }
    // The room is left as found: without a camera (its state is kept on a real broker).
    if !ingest_thread.is_finished()
        && let Err(error) = admin.remove_camera(DEMO_ROOM, DEMO_CAMERA)
    {
        tracing::warn!("removing the demo's camera: {error:#}");
    }
    ingest_token.cancel();
    let ingest_stats = join(ingest_thread, "ingest")?;
    let published = ingest_stats.published();

    // Drain: every published frame gets a committed result, then every result is stored.
    // A service that stops on its own has failed: its error ends the wait.
    wait_until(
        shutdown,
        every,
        || {
            committed_results(&infer_counters) >= published
                || infer_thread.is_finished()
                || sink_thread.is_finished()
        },
        || progress("inferring"),
    );
    infer_token.cancel();
    let infer_stats = join(infer_thread, "infer")?;
    wait_until(
        shutdown,
        every,
        || {
            let s = sink_progress.stats();
            // The case's start and end, the camera's start and end.
            (s.results >= published && s.stream_events >= 4) || sink_thread.is_finished()
        },
        || progress("recording"),
    );
    // The stream's end may arrive on its own topic just after the last result.
    thread::sleep(Duration::from_millis(300));
    sink_token.cancel();
    let sink_stats = join(sink_thread, "sink")?;
    let results = monitor.finish();
    let track_frames = track_frames.finish();
    let frames_seen = frames_seen.map(CaseTap::finish);
    let wall = started.elapsed();

    let mut store = Store::open(&store_url).context("reopening the record")?;
    let timeline = query::timeline::<StreamState>(&mut store, &case_id)
        .context("reading the case timeline")?
        .ok_or_else(|| anyhow!("case {case_id} is not in the record"))?;
    let accounting = query::accounting::<StreamState>(&mut store, &case_id)
        .context("reading the case's accounting")?
        .into_iter()
        .find(|a| a.stream_id == stream_id)
        .unwrap_or_default();
    let picture = options.out_dir.join("timeline.svg");
    std::fs::write(&picture, svg::svg(&timeline))
        .with_context(|| format!("writing {}", picture.display()))?;
    let (comparison, tracking) = against_truth(options, &timeline, &track_frames)?;
    let privacy = match (frames_seen, &options.gate) {
        (Some(frames), Some(gate)) => Some(privacy_report(
            options,
            gate,
            &frames,
            orstream_ingest::gate::totals().since(&gate_before),
        )?),
        _ => None,
    };
    if let Some(page) = page {
        page.finish();
    }
    Ok(DemoReport {
        case_id,
        published,
        ingest_dropped: ingest_stats.dropped(),
        infer: infer_stats,
        sink: sink_stats,
        results,
        timeline,
        accounting,
        comparison,
        tracking,
        track_frames: track_frames.len() as u64,
        privacy,
        picture,
        store: orstream_record::store::redact(&store_url),
        wall,
    })
}

/// The bus the demo runs on: the broker named by `--kafka` (checked to answer), else the
/// in-process bus.
fn open_bus(options: &DemoOptions) -> Result<Bus> {
    let Some(bootstrap) = &options.kafka else {
        return Ok(Bus::memory());
    };
    let config = KafkaConfig {
        bootstrap_servers: bootstrap.clone(),
        ..KafkaConfig::default()
    };
    config
        .probe(Duration::from_secs(3))
        .map_err(|e| anyhow!("{e}: start it with scripts/kafka.sh start"))?;
    Bus::kafka(config).context("connecting to Kafka")
}

/// Where the record goes: `--postgres`, else a fresh SQLite file in the output folder.
fn record_url(options: &DemoOptions) -> Result<String> {
    if let Some(url) = &options.postgres {
        return Ok(url.clone());
    }
    let path = options.out_dir.join("record.db");
    if path.exists() {
        std::fs::remove_file(&path)
            .with_context(|| format!("removing the previous {}", path.display()))?;
    }
    Ok(format!("sqlite://{}", path.display()))
}

/// Every topic, with its dead-letter topic, before any service starts: a consumer may not
/// join a topic that a producer has yet to create.
fn create_topics(bus: &Bus) -> Result<()> {
    for topic in [
        topics::FRAMES,
        topics::STREAMS,
        topics::RESULTS,
        topics::EVENTS,
        topics::TRACKS,
    ] {
        for name in [topic.to_owned(), topics::dlq(topic)] {
            bus.create_topic(&name, TOPIC_PARTITIONS, Duration::from_secs(30))
                .with_context(|| format!("creating topic {name}"))?;
        }
    }
    Ok(())
}

/// The demo's inference settings: the chosen model and device, archive or live, the
/// transactional id of this run, validated.
fn infer_config(options: &DemoOptions, run_id: u64) -> Result<InferConfig> {
    let mut infer_config = InferConfig::default();
    infer_config.model.path = options.model.clone();
    infer_config.model.card = Some(card_path(&options.model));
    infer_config.model.device = options.device.clone();
    // The demo shares the machine with ingest's decoding and the sink: one torch thread per
    // two cores keeps libtorch's threads from fighting them (they slow the forward pass
    // several-fold when they do).
    infer_config.model.torch_threads = std::thread::available_parallelism()
        .map(|n| (n.get() / 2).max(1))
        .unwrap_or(1);
    infer_config.mode = if options.archive {
        Mode::Archive
    } else {
        Mode::Live
    };
    infer_config.transactional_id = format!("orstream-demo-infer-{run_id}");
    // The clip's ground truth counts a class as visible when it covers at least 0.5% of the
    // frame; blobs smaller than that are segmentation noise for this purpose.
    infer_config.postprocess.min_area = VISIBLE_FRACTION;
    infer_config
        .validate()
        .context("the demo's inference settings")?;
    Ok(infer_config)
}

/// The record against the clip's ground truth (events, then tool tracks), when the demo plays
/// a file that has one.
fn against_truth(
    options: &DemoOptions,
    timeline: &Timeline,
    track_frames: &[TrackFrame],
) -> Result<(Option<truth::Comparison>, Option<tracks::TrackScore>)> {
    let (Some(path), DemoSource::File(_)) = (&options.truth, &options.source) else {
        return Ok((None, None));
    };
    let truth = truth::Truth::load(path)?;
    let comparison = truth::compare(&truth::truth_spans(&truth), &derived_spans(timeline));
    let tracking = match tracks_truth_path(path) {
        Some(path) => {
            let truth = tracks::TruthTracks::load(&path).map_err(|e| anyhow!(e))?;
            Some(score_tracks(&truth, timeline, track_frames))
        }
        None => None,
    };
    Ok((Some(comparison), tracking))
}

/// The gate's figures and the frames read back, against the clip's out-of-body truth when
/// it has one.
fn privacy_report(
    options: &DemoOptions,
    gate: &GateConfig,
    frames: &[privacy::FrameSeen],
    figures: orstream_ingest::gate::GateFigures,
) -> Result<privacy::PrivacyReport> {
    let truth = match (&options.truth, &options.source) {
        (Some(path), DemoSource::File(_)) => Some(truth::Truth::load(path)?),
        _ => None,
    };
    let (stretches, fps) = truth
        .as_ref()
        .map_or((&[][..], 1.0), |t| (&t.out_of_body[..], t.fps));
    Ok(privacy::PrivacyReport {
        score: privacy::score(
            frames,
            stretches,
            fps,
            gate.margin_before as u64,
            gate.margin_after as u64,
        ),
        gate: figures,
        against_truth: truth.is_some(),
    })
}

/// The ground-truth tool tracks beside a clip's timeline (`clip.timeline.json` ->
/// `clip.tracks.json`), when there are some.
pub fn tracks_truth_path(timeline_truth: &Path) -> Option<PathBuf> {
    let name = timeline_truth.file_name()?.to_str()?;
    let stem = name.strip_suffix(".timeline.json")?;
    let path = timeline_truth.with_file_name(format!("{stem}.tracks.json"));
    path.exists().then_some(path)
}

/// Scores the case's tool tracks against the ground truth: the per-frame assignments as
/// published on the tracks topic (frame = capture offset from the case start times the clip's
/// frame rate) and each track's path length as stored in the record.
pub fn score_tracks(
    truth: &tracks::TruthTracks,
    timeline: &Timeline,
    frames: &[TrackFrame],
) -> tracks::TrackScore {
    let assigned: Vec<tracks::Assigned> = frames
        .iter()
        .flat_map(|f| {
            let offset_s = (f.capture_time_ns - timeline.started_ns) as f64 / 1e9;
            let frame = (offset_s * truth.fps).round().max(0.0) as u64;
            f.tracks.iter().map(move |t| tracks::Assigned {
                frame,
                track_id: t.track_id,
                label: t.label.clone(),
                cx: t.centroid.as_ref().map_or(f64::NAN, |c| f64::from(c.x)),
                cy: t.centroid.as_ref().map_or(f64::NAN, |c| f64::from(c.y)),
            })
        })
        .collect();
    let measured: Vec<tracks::MeasuredTrack> = timeline
        .tracks
        .iter()
        .map(|t| tracks::MeasuredTrack {
            track_id: t.track_id,
            label: t.label.clone(),
            path_length: t.path_length,
        })
        .collect();
    tracks::score(truth, &assigned, &measured)
}

/// The demo's room and camera.
const DEMO_ROOM: &str = "OR1";
const DEMO_CAMERA: &str = "laparoscope";

/// The admin API's request adding the demo's camera.
fn camera_request(options: &DemoOptions) -> serde_json::Value {
    let source = match &options.source {
        DemoSource::File(path) => serde_json::json!({
            "kind": "file",
            "path": path,
            "realtime": !options.archive,
        }),
        DemoSource::Rtsp(location) => serde_json::json!({ "kind": "rtsp", "location": location }),
    };
    serde_json::json!({
        "name": DEMO_CAMERA,
        "source": source,
        "mode": if options.archive { "archive" } else { "live" },
        "output": { "width": options.width, "height": options.height },
    })
}

/// Takes the demo's room as a previous run on the same broker may have left it (stopped
/// before its end): its case ended, its cameras removed.
fn clear_room(admin: &Client) -> Result<()> {
    let status = admin.status()?;
    let room = status.pointer("/rooms/0").cloned().unwrap_or_default();
    if !room["case"].is_null() {
        admin.end_case(DEMO_ROOM)?;
    }
    for camera in room["cameras"].as_array().cloned().unwrap_or_default() {
        if let Some(name) = camera["name"].as_str() {
            admin.remove_camera(DEMO_ROOM, name)?;
        }
    }
    Ok(())
}

/// Whether the demo's camera has ended (the clip's end), asked of the admin API at most every
/// quarter second.
fn camera_watch(admin: &Client) -> impl Fn() -> bool + '_ {
    let last = std::cell::Cell::new(Instant::now());
    move || {
        if last.get().elapsed() < Duration::from_millis(250) {
            return false;
        }
        last.set(Instant::now());
        admin.status().is_ok_and(|status| {
            status
                .pointer("/rooms/0/cameras/0/state")
                .and_then(serde_json::Value::as_str)
                == Some(orstream_ingest::CAMERA_ENDED)
        })
    }
}

/// Writes a secret file readable by its owner only.
fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Presence intervals of the timeline as spans in seconds from the case start.
pub fn derived_spans(timeline: &Timeline) -> Vec<truth::Span> {
    timeline
        .events
        .iter()
        .map(|e| truth::Span {
            label: e.label.clone(),
            category: e.category.clone(),
            start_s: e.start_offset_ns as f64 / 1e9,
            end_s: e.end_offset_ns as f64 / 1e9,
        })
        .collect()
}

fn spawn<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<JoinHandle<Result<T>>> {
    thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .with_context(|| format!("starting thread {name}"))
}

fn join<T>(handle: JoinHandle<Result<T>>, what: &str) -> Result<T> {
    handle
        .join()
        .map_err(|_| anyhow!("the {what} thread panicked"))?
        .with_context(|| format!("{what} failed"))
}

/// Waits for `done`, calling `tick` every `every`, until `shutdown` says stop now.
fn wait_until(
    shutdown: &CancellationToken,
    every: Duration,
    done: impl Fn() -> bool,
    tick: impl Fn(),
) {
    let mut last = Instant::now();
    while !done() && !shutdown.is_cancelled() {
        thread::sleep(Duration::from_millis(50));
        if last.elapsed() >= every {
            tick();
            last = Instant::now();
        }
    }
}

/// How long the demo waits for inference to be ready before it starts the camera anyway.
const INFER_READY_WAIT: Duration = Duration::from_secs(120);

/// Inference's readiness as the worker reports it, passed on to the process's health.
struct InferReady {
    inner: Arc<dyn HealthReporter>,
    warm: std::sync::atomic::AtomicBool,
    assigned: std::sync::atomic::AtomicBool,
    joins_group: bool,
}

impl InferReady {
    /// `joins_group`: the worker is ready only once it has joined its consumer group.
    fn new(inner: Arc<dyn HealthReporter>, joins_group: bool) -> Self {
        Self {
            inner,
            warm: false.into(),
            assigned: false.into(),
            joins_group,
        }
    }

    /// The model is warm and the worker holds its partitions.
    fn ready(&self) -> bool {
        self.warm.load(Ordering::Acquire)
            && (!self.joins_group || self.assigned.load(Ordering::Acquire))
    }
}

impl HealthReporter for InferReady {
    fn beat(&self) {
        self.inner.beat();
    }

    fn set_ready(&self, check: &str, ready: bool) {
        match check {
            checks::MODEL_WARM => self.warm.store(ready, Ordering::Release),
            checks::PARTITIONS_ASSIGNED => self.assigned.store(ready, Ordering::Release),
            _ => {}
        }
        self.inner.set_ready(check, ready);
    }
}

/// Reads a topic as its own consumer group on a thread, handing every payload to a handler,
/// until stopped and the topic has been quiet for a few polls.
struct Tap {
    stop: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl Tap {
    fn start(
        bus: &Bus,
        group: &str,
        topic: &str,
        mut handle: impl FnMut(&[u8]) + Send + 'static,
    ) -> Result<Self> {
        let consumer = bus
            .consumer(group)
            .with_context(|| format!("creating a reader of {topic}"))?;
        consumer
            .subscribe(&[topic])
            .with_context(|| format!("subscribing to {topic}"))?;
        let stop = CancellationToken::new();
        let thread = {
            let (stop, topic) = (stop.clone(), topic.to_owned());
            thread::Builder::new()
                .name("orstream-demo-tap".into())
                .spawn(move || {
                    let mut idle_after_stop = 0;
                    loop {
                        match consumer.poll(Duration::from_millis(100)) {
                            Ok(Some(message)) => {
                                idle_after_stop = 0;
                                handle(&message.payload);
                            }
                            Ok(None) if stop.is_cancelled() => {
                                idle_after_stop += 1;
                                if idle_after_stop >= 3 {
                                    break;
                                }
                            }
                            Ok(None) => {}
                            Err(error) => {
                                tracing::warn!(%error, %topic, "demo reader stopped");
                                break;
                            }
                        }
                    }
                })
                .context("starting a topic reader")?
        };
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    fn finish(mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads the results topic as its own consumer group and tallies this case's results.
struct Monitor {
    tally: Arc<std::sync::Mutex<ResultTally>>,
    seen: Arc<AtomicU64>,
    tap: Tap,
}

impl Monitor {
    fn start(bus: &Bus, case_id: &str) -> Result<Self> {
        let tally = Arc::new(std::sync::Mutex::new(ResultTally::default()));
        let seen = Arc::new(AtomicU64::new(0));
        let tap = {
            let (tally, seen, case_id) =
                (Arc::clone(&tally), Arc::clone(&seen), case_id.to_owned());
            Tap::start(
                bus,
                &format!("{case_id}-monitor"),
                topics::RESULTS,
                move |payload| {
                    if let Ok(result) = orstream_proto::decode::<FrameResult>(payload)
                        && result.case_id == case_id
                    {
                        seen.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut t) = tally.lock() {
                            count(&mut t, &result);
                        }
                    }
                },
            )?
        };
        Ok(Self { tally, seen, tap })
    }

    fn snapshot(&self) -> ResultTally {
        self.tally.lock().map(|t| t.clone()).unwrap_or_default()
    }

    fn finish(self) -> ResultTally {
        let Self { tally, tap, .. } = self;
        tap.finish();
        let mut tally = tally.lock().map(|t| t.clone()).unwrap_or_default();
        tally.latencies_ms.sort_by(f64::total_cmp);
        tally
    }
}

/// Collects what a downstream consumer of one topic reads of this case: `keep` makes an item
/// of each message of the case.
struct CaseTap<T> {
    items: Arc<std::sync::Mutex<Vec<T>>>,
    tap: Tap,
}

impl<T: Clone + Send + 'static> CaseTap<T> {
    fn start<M: orstream_proto::Wire + 'static>(
        bus: &Bus,
        case_id: &str,
        topic: &str,
        case_of: fn(&M) -> &str,
        keep: fn(&M) -> T,
    ) -> Result<Self> {
        let items = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tap = {
            let (items, case_id) = (Arc::clone(&items), case_id.to_owned());
            Tap::start(bus, &format!("{case_id}-{topic}"), topic, move |payload| {
                if let Ok(message) = orstream_proto::decode::<M>(payload)
                    && case_of(&message) == case_id
                    && let Ok(mut items) = items.lock()
                {
                    items.push(keep(&message));
                }
            })?
        };
        Ok(Self { items, tap })
    }

    fn finish(self) -> Vec<T> {
        self.tap.finish();
        self.items.lock().map(|f| f.clone()).unwrap_or_default()
    }
}

fn count(tally: &mut ResultTally, result: &FrameResult) {
    // The contract's classification, the same the record's accounting applies to stored
    // statuses, so the monitor's figures and `orstream record accounting` agree.
    let outcome =
        FrameStatus::try_from(result.status).map_or(Outcome::Failed, FrameStatus::outcome);
    match outcome {
        Outcome::Ok => {
            tally.ok += 1;
            let latency_ms = (result.result_time_ns - result.capture_time_ns) as f64 / 1e6;
            tally.latencies_ms.push(latency_ms);
            if let Some(t) = &result.timings {
                tally.batch_sum += u64::from(t.batch_size);
                tally.forward_us_sum += t.forward_us;
            }
        }
        Outcome::Skipped => tally.skipped += 1,
        Outcome::Failed => tally.errors += 1,
        Outcome::Redacted => tally.redacted += 1,
    }
}

fn print_progress(
    started: Instant,
    stage: &str,
    infer: &orstream_infer::stats::Counters,
    sink: &orstream_sink::Progress,
    monitor: &Monitor,
) {
    let secs = started.elapsed().as_secs_f64();
    let infer = infer.snapshot();
    let stored = sink.stats().results;
    let mut tally = monitor.snapshot();
    tally.latencies_ms.sort_by(f64::total_cmp);
    let latency = match (tally.latency_ms(0.5), tally.latency_ms(0.99)) {
        (Some(p50), Some(p99)) => format!("p50 {p50:5.0} ms  p99 {p99:5.0} ms"),
        _ => "p50     - ms  p99     - ms".into(),
    };
    println!(
        "[{secs:6.1}s {stage:<9}] in {:>5}  results {:>5}  stored {:>5}  {:5.1} fps  batch {:4.1}  {latency}  skipped {}",
        infer.consumed,
        monitor.seen.load(Ordering::Relaxed),
        stored,
        infer.results() as f64 / secs.max(1e-9),
        tally.mean_batch(),
        infer.skipped_stale + infer.skipped_overload,
    );
}

/// Prints the end-of-run report: accounting, timeline, usage, the truth comparison.
pub fn print_report(report: &DemoReport, archive: bool) {
    let secs = report.wall.as_secs_f64();
    let r = &report.results;
    println!(
        "\n== case {} ({} s of wall time) ==",
        report.case_id,
        fmt_s(secs)
    );
    println!(
        "frames published {}  results {} (ok {}, skipped {}, errors {}, redacted {})  stored {}  ingest drops {}",
        report.published,
        r.total(),
        r.ok,
        r.skipped,
        r.errors,
        r.redacted,
        report.stored(),
        report.ingest_dropped
    );
    println!(
        "every frame accounted for: {}",
        if report.all_accounted() { "yes" } else { "NO" }
    );
    if r.errors > 0 {
        println!(
            "WARNING: {} of {} results are errors (the model failed or made values outside the \
             contract): the record has error gaps there, see the timeline and the infer log",
            r.errors,
            r.total()
        );
    }
    println!(
        "throughput {:.1} frames/s; mean batch {:.2}; model forward {:.1} ms per batch",
        report.published as f64 / secs.max(1e-9),
        r.mean_batch(),
        r.forward_us_sum as f64 / 1e3 / r.ok.max(1) as f64,
    );
    if !archive && let (Some(p50), Some(p99)) = (r.latency_ms(0.5), r.latency_ms(0.99)) {
        println!("capture -> result latency p50 {p50:.0} ms, p99 {p99:.0} ms");
    }
    println!("\n-- timeline (record: {}) --", report.store);
    print!("{}", text::render_timeline(&report.timeline, Format::Table));
    println!("\n-- usage --");
    print!(
        "{}",
        text::render_usage(&query::usage(&report.timeline), Format::Table)
    );
    println!("\n-- tool motion (frame units: x / width, y / height) --");
    print!(
        "{}",
        text::render_motion(&query::motion(&report.timeline), Format::Table)
    );
    if let Some(comparison) = &report.comparison {
        println!("\n-- against the clip's ground truth (seconds from case start) --");
        print!("{}", truth::render(comparison));
    }
    if let Some(tracking) = &report.tracking {
        println!(
            "\n-- tool tracks against the clip's scripted paths ({} track frames read from {}) --",
            report.track_frames,
            topics::TRACKS
        );
        print!("{}", tracking.render());
    }
    if let Some(privacy) = &report.privacy {
        println!("\n-- privacy gate: frames from outside the patient --");
        print!(
            "{}",
            privacy::render(&privacy.score, &privacy.gate, privacy.against_truth)
        );
    }
    println!("\ntimeline picture: {}", report.picture.display());
}

fn fmt_s(secs: f64) -> String {
    format!("{secs:.1}")
}
