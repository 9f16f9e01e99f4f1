//! The run: the results follower joins first, the record follower starts, the publisher plays
//! the open-loop schedule, then both followers drain until every frame is answered (and
//! recorded) or the drain time is up.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use orstream_bus::{Bus, DeliveryHandle, Producer, Record};
use orstream_proto::{
    EndReason, FrameResult, Outcome, SCHEMA_VERSION, StreamEnded, StreamEvent, StreamStarted,
    headers, stream_event,
};
use orstream_record::{Store, Value};
use tokio_util::sync::CancellationToken;

use super::frames::Pictures;
use super::report::{Latency, Played, Report, StageLatencies, Tally};
use super::{Plan, Target};

/// Longest a send may wait for room in the producer's queue.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a topic creation may take.
const TOPIC_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest the final flush of the frames may take.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a follower's poll waits before it looks at its stop flag.
const POLL: Duration = Duration::from_millis(20);
/// After the results consumer has its partitions, how long it keeps polling before the
/// frames start, so its start position ("latest") is resolved before any result of the run.
const SETTLE: Duration = Duration::from_secs(1);

/// Where the run's time starts: an instant for the schedule and the wall clock at it for the
/// capture times.
#[derive(Debug, Clone, Copy)]
struct Epoch {
    start: Instant,
    wall_ns: i64,
}

impl Epoch {
    fn capture_ns(&self, due: Duration) -> i64 {
        self.wall_ns
            .saturating_add(i64::try_from(due.as_nanos()).unwrap_or(i64::MAX))
    }
}

/// Plays `plan` against `target` and measures it. A stop request (SIGINT/SIGTERM) ends the
/// schedule early; what was played is still drained and reported.
pub fn run(plan: &Plan, target: &Target, shutdown: &CancellationToken) -> Result<Report> {
    plan.validate().map_err(|e| anyhow!("load plan: {e}"))?;
    let pictures = match &plan.source {
        Some(path) => Pictures::files(path)?,
        None => Pictures::synthetic(plan.width, plan.height, plan.quality)?,
    };
    let mut kafka = target.kafka.clone();
    // A fresh group of the run's own reads only what comes after it joined.
    kafka
        .librdkafka
        .entry("auto.offset.reset".to_owned())
        .or_insert_with(|| "latest".to_owned());
    let bus = Bus::kafka(kafka).context("creating the Kafka clients")?;
    if target.create_topics {
        create_topics(&bus, target)?;
    }
    let streams: HashMap<String, u32> = (0..plan.cameras).map(|c| (plan.stream_id(c), c)).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let recorded = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<()>>(1);
    let results = {
        let (bus, stop, answered) = (bus.clone(), stop.clone(), answered.clone());
        let (topic, case_id, epoch, streams) = (
            target.results_topic.clone(),
            plan.case_id.clone(),
            plan.session_epoch,
            streams.clone(),
        );
        thread::Builder::new()
            .name("load-results".into())
            .spawn(move || {
                follow_results(
                    &bus, &topic, &case_id, epoch, &streams, &stop, &answered, &ready_tx,
                )
            })?
    };
    match ready_rx.recv_timeout(plan.join_timeout + SETTLE) {
        Ok(Ok(())) => {}
        Ok(Err(err)) => return Err(err),
        Err(_) => {
            stop.store(true, Ordering::Release);
            bail!(
                "the results consumer got no partition of {} within {:?}: is the broker up and \
                 the topic there?",
                target.results_topic,
                plan.join_timeout
            );
        }
    }

    let producer = match ready_producer(&bus, plan, target, &pictures) {
        Ok(p) => p,
        Err(err) => {
            stop.store(true, Ordering::Release);
            return Err(err);
        }
    };
    let epoch = Epoch {
        start: Instant::now(),
        wall_ns: orstream_shell::clock::now_ns(),
    };
    let record = match &target.store {
        Some(url) => {
            let store = Store::open(url).with_context(|| {
                format!("opening the record {}", orstream_record::store::redact(url))
            })?;
            let (stop, recorded, plan) = (stop.clone(), recorded.clone(), plan.clone());
            Some(
                thread::Builder::new()
                    .name("load-record".into())
                    .spawn(move || follow_record(store, &plan, epoch, &stop, &recorded))?,
            )
        }
        None => None,
    };

    let played = publish(&producer, plan, target, &pictures, epoch, shutdown);
    let (published, failed, lag, seconds) = match played {
        Ok(p) => p,
        Err(err) => {
            stop.store(true, Ordering::Release);
            return Err(err);
        }
    };
    let deadline = Instant::now() + plan.drain;
    while Instant::now() < deadline && !shutdown.is_cancelled() {
        let all_answered = answered.load(Ordering::Acquire) >= published;
        let all_recorded = record.is_none() || recorded.load(Ordering::Acquire) >= published;
        if all_answered && all_recorded {
            break;
        }
        thread::sleep(POLL);
    }
    stop.store(true, Ordering::Release);
    let seen = results
        .join()
        .map_err(|_| anyhow!("the results follower panicked"))??;
    let recorded = match record {
        Some(handle) => Some(
            handle
                .join()
                .map_err(|_| anyhow!("the record follower panicked"))??,
        ),
        None => None,
    };

    let unique = seen.ok + seen.skipped + seen.failed;
    let frames = Tally {
        published,
        publish_failed: failed,
        ok: seen.ok,
        skipped: seen.skipped,
        failed: seen.failed,
        lost: published.saturating_sub(unique),
        duplicated: seen.duplicated,
        not_recorded: recorded
            .as_ref()
            .map_or(0, |r| unique.saturating_sub(r.at.len() as u64)),
    };
    let window = seen.last_ns.saturating_sub(epoch.wall_ns).max(1) as f64 / 1e9;
    Ok(Report {
        played: Played {
            case_id: plan.case_id.clone(),
            cameras: plan.cameras,
            fps: plan.fps,
            frames_per_camera: plan.frames_per_camera(),
            jpeg_bytes: pictures.mean_bytes(),
            seconds,
        },
        frames,
        results_per_s: unique as f64 / window,
        offered_per_s: f64::from(plan.cameras) * plan.fps,
        stamped: seen.stamped.summary(),
        visible: seen.visible.summary(),
        recorded: recorded.as_ref().map(|r| r.latency.summary()),
        record_poll_ms: target
            .store
            .as_ref()
            .map(|_| plan.record_poll.as_secs_f64() * 1e3),
        publish_lag: lag.summary(),
        stages: seen.stages.summary(),
        rows: {
            let mut rows = seen.rows;
            if let Some(r) = &recorded {
                for row in &mut rows {
                    row.recorded_ns = r.at.get(&(row.camera, row.seq)).copied();
                }
            }
            rows
        },
    })
}

/// Creates the frames, streams and results topics of `target` (an existing one is kept as it
/// is).
pub fn prepare(target: &Target) -> Result<()> {
    let bus = Bus::kafka(target.kafka.clone()).context("creating the Kafka clients")?;
    create_topics(&bus, target)
}

fn create_topics(bus: &Bus, target: &Target) -> Result<()> {
    let retained = [
        (
            &target.frames_topic,
            orstream_proto::topics::FRAMES_RETENTION,
        ),
        (&target.streams_topic, orstream_proto::topics::RETENTION),
        (&target.results_topic, orstream_proto::topics::RETENTION),
    ];
    for (topic, retention) in retained {
        bus.create_topic_retained(
            topic,
            target.topic_partitions,
            Some(retention),
            TOPIC_TIMEOUT,
        )
        .with_context(|| format!("creating topic {topic}"))?;
    }
    Ok(())
}

/// Builds the lifecycle event `kind` of `camera`'s stream.
fn stream_event(plan: &Plan, target: &Target, camera: u32, kind: stream_event::Kind) -> Record {
    let stream_id = plan.stream_id(camera);
    let event = StreamEvent {
        stream_id: stream_id.clone(),
        case_id: plan.case_id.clone(),
        session_epoch: plan.session_epoch,
        time_ns: orstream_shell::clock::now_ns(),
        room_id: String::new(),
        kind: Some(kind),
    };
    Record::new(target.streams_topic.clone(), orstream_proto::encode(&event))
        .with_key(stream_id.into_bytes())
        .with_header(headers::SCHEMA_VERSION, SCHEMA_VERSION)
}

/// The frames producer, ready: the streams' starts published and acknowledged, so its
/// connection and producer id are in place before the clock starts, and the frames topic's
/// metadata fetched.
fn ready_producer(
    bus: &Bus,
    plan: &Plan,
    target: &Target,
    pictures: &Pictures,
) -> Result<Producer> {
    let producer = bus.producer().context("creating the frames producer")?;
    let mut events = Vec::new();
    for camera in 0..plan.cameras {
        let first = pictures.get(camera, 0);
        let started = stream_event::Kind::Started(StreamStarted {
            source_kind: "load".to_owned(),
            width: first.width,
            height: first.height,
            fps: plan.fps,
        });
        events.push(producer.send(&stream_event(plan, target, camera, started), SEND_TIMEOUT)?);
    }
    for handle in events {
        handle
            .wait(FLUSH_TIMEOUT)
            .context("publishing a stream start")?;
    }
    producer
        .prepare(&target.frames_topic, FLUSH_TIMEOUT)
        .context("reading the frames topic's metadata")?;
    Ok(producer)
}

/// Publishes every frame on schedule, then the stream ends. Returns the frames acknowledged,
/// those the broker never took, the generator's lateness and the schedule's length in
/// seconds.
fn publish(
    producer: &Producer,
    plan: &Plan,
    target: &Target,
    pictures: &Pictures,
    epoch: Epoch,
    shutdown: &CancellationToken,
) -> Result<(u64, u64, Latency, f64)> {
    let mut events = Vec::new();
    let per_camera = plan.frames_per_camera();
    let total = per_camera * u64::from(plan.cameras);
    let mut handles: Vec<(u32, DeliveryHandle)> = Vec::with_capacity(total as usize);
    let mut lag = Latency::default();
    let mut refused = 0u64;
    let mut last_due = Duration::ZERO;
    for i in 0..total {
        let (camera, seq) = (
            (i % u64::from(plan.cameras)) as u32,
            i / u64::from(plan.cameras),
        );
        let due = plan.due(camera, seq);
        let at = epoch.start + due;
        let now = Instant::now();
        if at > now {
            thread::sleep(at - now);
        }
        if shutdown.is_cancelled() {
            break;
        }
        last_due = due;
        let picture = pictures.get(camera, seq);
        let mut frame = orstream_infer::synthetic::frame(
            &plan.stream_id(camera),
            seq,
            epoch.capture_ns(due),
            picture.width,
            picture.height,
            Vec::new(),
        );
        frame.case_id.clone_from(&plan.case_id);
        frame.session_epoch = plan.session_epoch;
        frame.pts_ns = i64::try_from(due.as_nanos()).unwrap_or(i64::MAX);
        frame.data = picture.jpeg.clone();
        let record = orstream_infer::synthetic::frame_record(&target.frames_topic, &frame);
        lag.record_ns(
            i64::try_from(epoch.start.elapsed().saturating_sub(due).as_nanos()).unwrap_or(i64::MAX),
        );
        match producer.send(&record, SEND_TIMEOUT) {
            Ok(handle) => handles.push((camera, handle)),
            Err(err) => {
                refused += 1;
                tracing::warn!(%err, camera, seq, "frame not taken by the producer");
            }
        }
    }
    producer
        .flush(FLUSH_TIMEOUT)
        .context("flushing the frames to the broker")?;
    let mut published = vec![0u64; plan.cameras as usize];
    for (camera, handle) in handles {
        match handle.wait(FLUSH_TIMEOUT) {
            Ok(_) => published[camera as usize] += 1,
            Err(err) => {
                refused += 1;
                tracing::warn!(%err, camera, "frame not delivered");
            }
        }
    }
    for camera in 0..plan.cameras {
        let ended = stream_event::Kind::Ended(StreamEnded {
            reason: EndReason::Eos as i32,
            frames_published: published[camera as usize],
            frames_dropped: 0,
            detail: "load run ended".to_owned(),
        });
        events.push(producer.send(&stream_event(plan, target, camera, ended), SEND_TIMEOUT)?);
    }
    producer
        .flush(FLUSH_TIMEOUT)
        .context("flushing the stream events")?;
    for handle in events {
        handle
            .wait(FLUSH_TIMEOUT)
            .context("publishing a stream event")?;
    }
    Ok((published.iter().sum(), refused, lag, last_due.as_secs_f64()))
}

/// One result as the results follower saw it.
#[derive(Debug, Clone)]
pub struct FrameRow {
    /// Its camera.
    pub camera: u32,
    /// Its sequence number.
    pub seq: u64,
    /// Its capture time (ns since the Unix epoch).
    pub capture_ns: i64,
    /// Its status's stored name.
    pub status: &'static str,
    /// Capture -> stamp.
    pub stamped_ns: i64,
    /// Capture -> visible.
    pub visible_ns: i64,
    /// The batch it ran in (0 when it did not run).
    pub batch_size: u32,
    /// Read -> forward start.
    pub queue_wait_us: u64,
    /// Its batch's forward pass.
    pub forward_us: u64,
    /// Capture -> its row committed in the record (with a store, once seen).
    pub recorded_ns: Option<i64>,
}

/// What the results follower saw.
#[derive(Debug, Default)]
struct Seen {
    ok: u64,
    skipped: u64,
    failed: u64,
    duplicated: u64,
    stamped: Latency,
    visible: Latency,
    stages: StageLatencies,
    /// Every result, in arrival order, for `--frames-csv`.
    rows: Vec<FrameRow>,
    /// When the last result of the run arrived (wall clock, ns).
    last_ns: i64,
}

/// Reads the results topic read-committed from the moment it joined, keeping the run's
/// results; says when it is ready, then runs until `stop`.
#[allow(clippy::too_many_arguments)]
fn follow_results(
    bus: &Bus,
    topic: &str,
    case_id: &str,
    epoch: u64,
    streams: &HashMap<String, u32>,
    stop: &AtomicBool,
    answered: &AtomicU64,
    ready: &std::sync::mpsc::SyncSender<Result<()>>,
) -> Result<Seen> {
    let group = format!("orstream-load-{case_id}");
    let consumer = match bus.consumer(&group).and_then(|c| {
        c.subscribe(&[topic])?;
        Ok(c)
    }) {
        Ok(c) => c,
        Err(err) => {
            let err = anyhow::Error::new(err).context("joining the results topic");
            let _ = ready.send(Err(anyhow!("{err:#}")));
            return Err(err);
        }
    };
    let mut seen = Seen::default();
    let mut answers: HashSet<(u32, u64)> = HashSet::new();
    let mut assigned_at: Option<Instant> = None;
    let mut said_ready = false;
    while !stop.load(Ordering::Acquire) {
        if !said_ready {
            if assigned_at.is_none() && consumer.assignment().is_ok_and(|a| !a.is_empty()) {
                assigned_at = Some(Instant::now());
            }
            if assigned_at.is_some_and(|t| t.elapsed() >= SETTLE) {
                said_ready = true;
                let _ = ready.send(Ok(()));
            }
        }
        let message = match consumer.poll(POLL) {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(err) => {
                tracing::warn!(%err, "reading results");
                continue;
            }
        };
        let received = orstream_shell::clock::now_ns();
        if orstream_proto::check_schema_version(message.headers.get(headers::SCHEMA_VERSION))
            .is_err()
        {
            continue;
        }
        let Ok(result) = orstream_proto::decode::<FrameResult>(&message.payload) else {
            continue;
        };
        if result.case_id != case_id || result.session_epoch != epoch {
            continue;
        }
        let Some(&camera) = streams.get(&result.stream_id) else {
            continue;
        };
        if !answers.insert((camera, result.seq)) {
            seen.duplicated += 1;
            continue;
        }
        match result.status().outcome() {
            Outcome::Ok => seen.ok += 1,
            // The load tool's frames never pass a privacy gate: a withheld one is not run either.
            Outcome::Skipped | Outcome::Redacted => seen.skipped += 1,
            Outcome::Failed => seen.failed += 1,
        }
        let stamped = result.result_time_ns.saturating_sub(result.capture_time_ns);
        seen.stamped.record_ns(stamped);
        if let (Outcome::Ok, Some(timings)) = (result.status().outcome(), &result.timings) {
            seen.stages.record(stamped, timings);
        }
        seen.visible
            .record_ns(received.saturating_sub(result.capture_time_ns));
        seen.last_ns = received;
        let timings = result.timings.unwrap_or_default();
        seen.rows.push(FrameRow {
            camera,
            seq: result.seq,
            capture_ns: result.capture_time_ns,
            status: result.status().name(),
            stamped_ns: stamped,
            visible_ns: received.saturating_sub(result.capture_time_ns),
            batch_size: timings.batch_size,
            queue_wait_us: timings.queue_wait_us,
            forward_us: timings.forward_us,
            recorded_ns: None,
        });
        answered.fetch_add(1, Ordering::AcqRel);
    }
    Ok(seen)
}

/// What the record follower saw: each frame's capture -> row committed.
#[derive(Debug, Default)]
struct Recorded {
    latency: Latency,
    at: HashMap<(u32, u64), i64>,
}

/// Polls the record for the newest committed frame row of each camera; every row that
/// appeared since the last poll counts as committed now. Rows of a stream commit in order
/// (its results share a partition), so the newest sequence number says which are in.
/// Returns the rows seen and their latency.
fn follow_record(
    mut store: Store,
    plan: &Plan,
    epoch: Epoch,
    stop: &AtomicBool,
    rows: &AtomicU64,
) -> Result<Recorded> {
    let cameras = plan.cameras as usize;
    let sql = format!(
        "SELECT {}",
        (1..=cameras)
            .map(|i| format!(
                "(SELECT max(seq) FROM frames WHERE stream_id = ${i} AND session_epoch = ${})",
                cameras + 1
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut params: Vec<Value> = (0..plan.cameras)
        .map(|c| Value::from(plan.stream_id(c).as_str()))
        .collect();
    params.push(Value::Int(
        i64::try_from(plan.session_epoch).unwrap_or(i64::MAX),
    ));
    let mut next = vec![0u64; cameras];
    let mut recorded = Recorded::default();
    let mut failures = 0u32;
    loop {
        // One last look after the stop, so rows committed during the drain are counted.
        let last = stop.load(Ordering::Acquire);
        let started = Instant::now();
        match store.query(&sql, &params) {
            Ok(found) => {
                failures = 0;
                let now = orstream_shell::clock::now_ns();
                let newest = found.into_iter().next().unwrap_or_default();
                for (camera, value) in newest.iter().enumerate().take(cameras) {
                    let Value::Int(max) = value else { continue };
                    let upto = u64::try_from(*max).unwrap_or(0) + 1;
                    for seq in next[camera]..upto {
                        let capture = epoch.capture_ns(plan.due(camera as u32, seq));
                        let ns = now.saturating_sub(capture);
                        recorded.latency.record_ns(ns);
                        recorded.at.insert((camera as u32, seq), ns);
                    }
                    next[camera] = next[camera].max(upto);
                }
                rows.store(recorded.at.len() as u64, Ordering::Release);
            }
            Err(err) => {
                failures += 1;
                tracing::warn!(%err, "polling the record");
                if failures >= 50 {
                    return Err(anyhow::Error::new(err).context("polling the record"));
                }
            }
        }
        if last {
            return Ok(recorded);
        }
        let spent = started.elapsed();
        if spent < plan.record_poll {
            thread::sleep(plan.record_poll - spent);
        }
    }
}
