//! Chaos against the real broker and PostgreSQL: the project's scripts pause a dependency
//! (SIGSTOP: connections stay open, nothing answers) or stop it and start it again under a
//! running `orstream sink` or `orstream ingest`, and each case prints a line with what went in,
//! what came out, what was stored, lost and duplicated, and how long readiness took to follow.
//! The short versions run in `make test`; the long ones are ignored by default and run with
//!
//! ```sh
//! cargo test --test chaos -- --ignored --nocapture
//! ```
//!
//! A paused server stops every client of the checkout's stack, so the cases of this file run
//! one at a time, and a case that fails resumes what it paused on the way out.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use orstream_bus::{Bus, Producer};
use orstream_proto::stream_event::Kind;
use orstream_proto::{EndReason, Frame, StreamEnded, StreamEvent};
use orstream_record::BackendKind;
use orstream_test_support::metrics::{get, scraped};
use orstream_test_support::names::unique;
use orstream_test_support::script::Script;
use orstream_test_support::service::{Service, health};
use orstream_test_support::store::{IsolatedStore, isolated};
use orstream_test_support::topic::{decode_all, read_until_quiet, result_record};
use orstream_test_support::wait::{showing, wait_for};
use orstream_test_support::{kafka, process};

/// How long any one step may take.
const STEP: Duration = Duration::from_secs(120);

/// The sink's consumer leaves its group when it has not polled for this long: a pause longer
/// than it makes the sink re-join after the resume.
const MAX_POLL_INTERVAL_S: u64 = 20;

/// One case at a time: a paused server is every case's server.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `scripts/<name>.sh <command>`.
fn script(name: &str, command: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("scripts/{name}.sh"));
    let status = Command::new(&path).arg(command).status().unwrap();
    assert!(status.success(), "{} {command} failed", path.display());
}

/// A dependency taken away by its script (`pause` or `stop`); given back (`resume` or
/// `start`) when dropped, whatever happened meanwhile.
struct Outage {
    script: &'static str,
    undo: &'static str,
    /// When the script was asked to take the dependency away.
    began: Instant,
    ended: bool,
}

impl Outage {
    /// SIGSTOP: connections stay open, nothing answers.
    fn pause(script_name: &'static str) -> Self {
        Self::begin(script_name, "pause", "resume")
    }

    /// The server stops (SIGTERM); connections are refused until it starts again.
    fn stop(script_name: &'static str) -> Self {
        Self::begin(script_name, "stop", "start")
    }

    fn begin(script_name: &'static str, command: &str, undo: &'static str) -> Self {
        let began = Instant::now();
        script(script_name, command);
        Self {
            script: script_name,
            undo,
            began,
            ended: false,
        }
    }

    fn end(mut self) {
        script(self.script, self.undo);
        self.ended = true;
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        if !self.ended {
            script(self.script, self.undo);
        }
    }
}

/// What a service did while a dependency was away, watched every 200 ms.
struct Watched {
    /// How long into the outage `/readyz` first said not ready.
    not_ready_after: Option<Duration>,
    /// The service's largest resident memory seen, in MiB.
    peak_rss_mib: f64,
}

/// Watches `services` until `lasting` after `outage` began: liveness must answer 200 at every
/// look (a dependency's outage never fails it: restarting cannot help).
fn watch(services: &[&Service], outage: &Outage, lasting: Duration) -> Vec<Watched> {
    let started = outage.began;
    let mut watched: Vec<Watched> = services
        .iter()
        .map(|_| Watched {
            not_ready_after: None,
            peak_rss_mib: 0.0,
        })
        .collect();
    while started.elapsed() < lasting {
        for (service, watched) in services.iter().zip(&mut watched) {
            let (ready, alive) = health(service.listen);
            assert_eq!(
                alive,
                Some(true),
                "{}'s liveness failed {:?} into the outage:\n{}",
                service.name,
                started.elapsed(),
                service.log()
            );
            if ready == Some(false) && watched.not_ready_after.is_none() {
                watched.not_ready_after = Some(started.elapsed());
            }
            watched.peak_rss_mib = watched.peak_rss_mib.max(service.rss_mib());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    watched
}

/// Watches one service; see [`watch`].
fn watch_one(service: &Service, outage: &Outage, lasting: Duration) -> Watched {
    watch(&[service], outage, lasting).remove(0)
}

/// `orstream <name> --config <file>`, the file holding `config(listen)`.
fn service(name: &'static str, config: impl FnOnce(SocketAddr) -> String) -> Service {
    Service::start(
        env!("CARGO_BIN_EXE_orstream"),
        env!("CARGO_MANIFEST_DIR"),
        name,
        config,
    )
}

/// A sink process on its own PostgreSQL database and topics.
struct SinkUnderTest {
    store: IsolatedStore,
    results: String,
    service: Service,
}

impl SinkUnderTest {
    fn start(bus: &Bus) -> Self {
        let store = isolated(BackendKind::Postgres).unwrap();
        let results = unique("test.chaos.results");
        let streams = unique("test.chaos.streams");
        for topic in [&results, &streams] {
            bus.create_topic(topic, 1, STEP).unwrap();
        }
        let group = unique("test-chaos-sink");
        let service = service("sink", |listen| {
            format!(
                "store = \"{}\"\ngroup_id = \"{group}\"\nresults_topic = \"{results}\"\n\
                 streams_topic = \"{streams}\"\npublish_events = false\n\
                 health_interval = \"200ms\"\nretry_initial = \"50ms\"\nretry_max = \"1s\"\n\
                 [kafka]\nbootstrap_servers = \"{}\"\n\
                 session_timeout = \"6s\"\nmax_poll_interval = \"{MAX_POLL_INTERVAL_S}s\"\n\
                 [telemetry]\nmetrics_listen = \"{listen}\"\nlog_filter = \"info\"\n",
                store.url(),
                kafka::config().bootstrap_servers,
            )
        });
        service.wait_ready("the sink ready");
        Self {
            store,
            results,
            service,
        }
    }

    /// Frames stored, and how many of them more than once.
    fn stored(&self) -> (i64, i64) {
        let mut store = self.store.open().unwrap();
        let rows = store
            .query(
                "SELECT COUNT(*), COUNT(*) - COUNT(DISTINCT (stream_id, session_epoch, seq)) \
                 FROM frames",
                &[],
            )
            .unwrap();
        (rows[0][0].int(), rows[0][1].int())
    }
}

fn publish(producer: &Producer, topic: &str, script: &Script, seqs: std::ops::Range<u64>) {
    for seq in seqs {
        producer
            .send(&result_record(topic, &script.result(0, seq)), STEP)
            .unwrap()
            .wait(STEP)
            .unwrap();
    }
}

/// What a sink case takes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Away {
    /// PostgreSQL paused (SIGSTOP), results arriving meanwhile.
    DatabasePaused,
    /// PostgreSQL stopped (its connections closed), results arriving meanwhile.
    DatabaseStopped,
    /// The broker stopped, results sent once it is back.
    BrokerStopped,
}

/// A dependency away for `lasting` under a running sink: the sink turns not ready within
/// seconds and stays alive the whole time (a restart cannot help a hung database or an absent
/// broker), then is ready again and stores every result once: those stored before, those sent
/// during a database pause and those sent after a broker's restart.
fn away_under_the_sink(away: Away, lasting: Duration) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bus = Bus::kafka(kafka::config()).unwrap();
    let sink = SinkUnderTest::start(&bus);
    let script = Script::new(&unique("chaos-case"), 1, 80);
    publish(&bus.producer().unwrap(), &sink.results, &script, 0..40);
    wait_for("the first 40 results stored", STEP, || {
        (sink.stored().0 == 40).then_some(())
    });

    let (outage, what, back) = match away {
        Away::DatabasePaused => (Outage::pause("postgres"), "PostgreSQL paused", "resume"),
        Away::DatabaseStopped => (Outage::stop("postgres"), "PostgreSQL stopped", "restart"),
        Away::BrokerStopped => (Outage::stop("kafka"), "broker stopped", "restart"),
    };
    if away != Away::BrokerStopped {
        publish(&bus.producer().unwrap(), &sink.results, &script, 40..80);
    }
    let watched = watch_one(&sink.service, &outage, lasting);
    let ended = Instant::now();
    outage.end();
    sink.service
        .wait_ready(&format!("ready again after the {back}"));
    let ready_after = ended.elapsed();
    if away == Away::BrokerStopped {
        publish(&bus.producer().unwrap(), &sink.results, &script, 40..80);
    }
    wait_for("every result stored", STEP, || {
        (sink.stored().0 >= 80).then_some(())
    });
    let (stored, duplicated) = sink.stored();
    if away == Away::DatabasePaused {
        assert!(
            sink.service.log().contains("a dependency does not answer"),
            "{}",
            sink.service.log()
        );
    }
    sink.service.stop();

    let not_ready_after = watched
        .not_ready_after
        .unwrap_or_else(|| panic!("never not ready: {what} {lasting:?}"));
    println!(
        "chaos | {what} {lasting:?} under the sink | frames in 80, results out 80, rows stored \
         {stored}, lost {}, duplicated {duplicated} | not ready {:.1} s into the outage, ready \
         {:.1} s after the {back}",
        80 - stored,
        not_ready_after.as_secs_f64(),
        ready_after.as_secs_f64()
    );
    assert_eq!((stored, duplicated), (80, 0));
}

/// Longer than the consumer's poll interval: the sink is expelled from its group while it
/// waits, and re-joins once the database answers.
#[test]
fn postgres_paused_for_thirty_seconds() {
    away_under_the_sink(Away::DatabasePaused, Duration::from_secs(30));
}

#[test]
#[ignore = "long: ten minutes; run with --ignored"]
fn postgres_paused_for_ten_minutes() {
    away_under_the_sink(Away::DatabasePaused, Duration::from_secs(600));
}

#[test]
fn postgres_stopped_for_thirty_seconds() {
    away_under_the_sink(Away::DatabaseStopped, Duration::from_secs(30));
}

#[test]
fn broker_stopped_for_thirty_seconds_under_the_sink() {
    away_under_the_sink(Away::BrokerStopped, Duration::from_secs(30));
}

#[test]
#[ignore = "long: seven minutes; run with --ignored"]
fn broker_stopped_for_seven_minutes_under_the_sink() {
    away_under_the_sink(Away::BrokerStopped, Duration::from_secs(420));
}

/// An `orstream ingest` process with one stream, `cam`, on its own topics.
struct IngestUnderTest {
    frames_topic: String,
    events_topic: String,
    service: Service,
}

impl IngestUnderTest {
    /// `stream` is the stream's TOML table body (mode, source, output).
    fn start(bus: &Bus, stream: &str) -> Self {
        let frames_topic = unique("test.chaos.frames");
        let events_topic = unique("test.chaos.streams");
        for topic in [&frames_topic, &events_topic] {
            bus.create_topic(topic, 1, STEP).unwrap();
        }
        let service = service("ingest", |listen| {
            format!(
                "frames_topic = \"{frames_topic}\"\nevents_topic = \"{events_topic}\"\n\
                 create_topics = false\ndrain_timeout = \"5s\"\nflush_timeout = \"30s\"\n\
                 [[streams]]\nstream_id = \"cam\"\ncase_id = \"chaos\"\n{stream}\n\
                 [kafka]\nbootstrap_servers = \"{}\"\n\
                 [telemetry]\nmetrics_listen = \"{listen}\"\nlog_filter = \"info\"\n",
                kafka::config().bootstrap_servers,
            )
        });
        service.wait_ready("ingest ready");
        Self {
            frames_topic,
            events_topic,
            service,
        }
    }

    /// Every frame on the topic, read from the beginning until quiet (once the stream ended).
    fn frames(&self, bus: &Bus) -> Vec<Frame> {
        decode_all(&read_until_quiet(
            bus,
            &self.frames_topic,
            0,
            Duration::from_secs(3),
        ))
    }

    /// Waits until the topic holds at least `count` frames (while more keep coming).
    fn wait_for_frames(&self, bus: &Bus, count: usize) {
        let reader = orstream_test_support::topic::reader(bus, &self.frames_topic);
        let mut seen = 0;
        wait_for(&format!("{count} frames on the topic"), STEP, || {
            while seen < count && reader.poll(Duration::from_millis(200)).unwrap().is_some() {
                seen += 1;
            }
            (seen >= count).then_some(())
        });
    }

    /// Stops the service with SIGTERM, or (`ends_by_itself`: a source with an end) waits for
    /// it to end; it must exit 0. Then reads every frame it published and its stream's
    /// `StreamEnded` event.
    fn finish(mut self, bus: &Bus, ends_by_itself: bool) -> (Vec<Frame>, StreamEnded) {
        let status = if ends_by_itself {
            wait_for("ingest to end", STEP, || {
                self.service.child.try_wait().unwrap()
            })
        } else {
            process::terminate(&mut self.service.child, "ingest", STEP)
        };
        assert!(
            status.success(),
            "ingest exited with {status}:\n{}",
            self.service.log()
        );
        (self.frames(bus), self.ended(bus))
    }

    /// The stream's `StreamEnded` event.
    fn ended(&self, bus: &Bus) -> StreamEnded {
        let events: Vec<StreamEvent> = decode_all(&read_until_quiet(
            bus,
            &self.events_topic,
            2,
            Duration::from_secs(3),
        ));
        events
            .into_iter()
            .find_map(|event| match event.kind {
                Some(Kind::Ended(ended)) => Some(ended),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no StreamEnded event:\n{}", self.service.log()))
    }
}

/// The stream table of a 30 fps camera of `frames` frames in archive mode.
fn archive_camera(frames: u64) -> String {
    format!(
        "mode = \"archive\"\nsource = {{ kind = \"test\", num_buffers = {frames} }}\n\
         output = {{ width = 320, height = 240 }}"
    )
}

/// Checks every epoch's seqs run 0, 1, 2, ... without a gap or a repeat, and says how many
/// epochs there were.
fn gap_free_epochs(frames: &[Frame]) -> usize {
    let mut by_epoch: std::collections::BTreeMap<u64, Vec<u64>> = Default::default();
    for frame in frames {
        by_epoch
            .entry(frame.session_epoch)
            .or_default()
            .push(frame.seq);
    }
    for (epoch, seqs) in &by_epoch {
        let expected: Vec<u64> = (0..seqs.len() as u64).collect();
        assert_eq!(seqs, &expected, "epoch {epoch}: seqs not 0.. without gaps");
    }
    by_epoch.len()
}

/// The broker stopped for `outage` under a live camera: ingest stays alive, turns not ready
/// within seconds, drops (and counts) what it cannot send instead of holding it, keeps its
/// memory bounded, and publishes again once the broker is back. Every frame it counted as
/// published is on the topic, each epoch gap-free.
fn broker_stopped_under_live_ingest(outage: Duration) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bus = Bus::kafka(kafka::config()).unwrap();
    let ingest = IngestUnderTest::start(
        &bus,
        "mode = \"live\"\nsource = { kind = \"test\" }\n\
         output = { width = 320, height = 240, max_fps = 15 }",
    );
    ingest.wait_for_frames(&bus, 30);
    let rss_before = ingest.service.rss_mib();

    let stopped = Outage::stop("kafka");
    let watched = watch_one(&ingest.service, &stopped, outage);
    let restarted = Instant::now();
    stopped.end();
    ingest
        .service
        .wait_ready("ready again after the broker's restart");
    let ready_after = restarted.elapsed();
    let published = || {
        get(ingest.service.listen, "/metrics")
            .and_then(|(_, body)| scraped(&body, "orstream_ingest_frames_published_total"))
            .unwrap_or(0.0)
    };
    let published_at_restart = published();
    wait_for(
        "30 more frames acknowledged after the restart",
        STEP,
        || (published() >= published_at_restart + 30.0).then_some(()),
    );
    let scrape = get(ingest.service.listen, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default();
    let dropped_counted = scraped(&scrape, "orstream_ingest_frames_dropped_total").unwrap_or(0.0);
    let (frames, ended) = ingest.finish(&bus, false);

    let epochs = gap_free_epochs(&frames);
    let not_ready_after = watched
        .not_ready_after
        .unwrap_or_else(|| panic!("never not ready during a {outage:?} broker outage"));
    println!(
        "chaos | broker stopped {outage:?} under live ingest | frames published {}, on the \
         topic {}, lost 0, duplicated 0, dropped while away {} (counted {dropped_counted}), \
         epochs {epochs} | not ready {:.1} s into the outage, ready {:.1} s after the restart | \
         memory {rss_before:.0} MiB before, at most {:.0} MiB while away",
        ended.frames_published,
        frames.len(),
        ended.frames_dropped,
        not_ready_after.as_secs_f64(),
        ready_after.as_secs_f64(),
        watched.peak_rss_mib,
    );
    assert_eq!(frames.len() as u64, ended.frames_published);
    assert!(
        ended.frames_dropped > 0,
        "nothing dropped in a {outage:?} outage"
    );
    assert!(dropped_counted > 0.0, "drops not counted in the metrics");
    assert!(
        watched.peak_rss_mib < rss_before + 200.0,
        "memory grew from {rss_before:.0} to {:.0} MiB",
        watched.peak_rss_mib
    );
}

#[test]
fn broker_stopped_for_thirty_seconds_under_live_ingest() {
    broker_stopped_under_live_ingest(Duration::from_secs(30));
}

#[test]
#[ignore = "long: seven minutes; run with --ignored"]
fn broker_stopped_for_seven_minutes_under_live_ingest() {
    broker_stopped_under_live_ingest(Duration::from_secs(420));
}

/// The broker stopped for `outage` under an archive stream: ingest waits (its source waits
/// with it), stays alive, and once the broker is back publishes every frame, in one epoch,
/// none dropped.
fn broker_stopped_under_archive_ingest(outage: Duration) {
    // 30 s of a 30 fps source: more than a stream may have in flight, so it must wait.
    const FRAMES: u64 = 900;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bus = Bus::kafka(kafka::config()).unwrap();
    let mut ingest = IngestUnderTest::start(&bus, &archive_camera(FRAMES));
    ingest.wait_for_frames(&bus, 20);
    let stopped = Outage::stop("kafka");
    let watched = watch_one(&ingest.service, &stopped, outage);
    let restarted = Instant::now();
    stopped.end();
    // Ready again, unless the stream's last frames went out and it ended first.
    let ready_after = wait_for("ready again or ended", STEP, || {
        if ingest.service.has_exited() {
            return Some(None);
        }
        (health(ingest.service.listen).0 == Some(true)).then(|| Some(restarted.elapsed()))
    });
    let (frames, ended) = ingest.finish(&bus, true);

    let epochs = gap_free_epochs(&frames);
    println!(
        "chaos | broker stopped {outage:?} under archive ingest | frames in {FRAMES}, on the \
         topic {}, lost {}, duplicated 0, epochs {epochs} | \
         not ready {:.1} s into the outage, ready {} after the restart",
        frames.len(),
        FRAMES.saturating_sub(frames.len() as u64),
        watched
            .not_ready_after
            .map_or(f64::NAN, |after| after.as_secs_f64()),
        ready_after.map_or("(ended first)".to_owned(), |after| format!(
            "{:.1} s",
            after.as_secs_f64()
        )),
    );
    assert!(watched.not_ready_after.is_some(), "never not ready");
    assert_eq!((frames.len() as u64, epochs), (FRAMES, 1));
    assert_eq!((ended.frames_published, ended.frames_dropped), (FRAMES, 0));
    assert_eq!(ended.reason, EndReason::Eos as i32);
}

#[test]
fn broker_stopped_for_thirty_seconds_under_archive_ingest() {
    broker_stopped_under_archive_ingest(Duration::from_secs(30));
}

/// The broker stopped for `outage` under the whole pipeline (an archive camera, infer with the
/// demo model, the sink): infer and the sink turn not ready within seconds and stay alive, are
/// ready again once the broker is back, and the record holds every frame once.
fn broker_stopped_under_the_pipeline(outage: Duration) {
    // 10 s of the 30 fps source.
    const FRAMES: i64 = 300;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bus = Bus::kafka(kafka::config()).unwrap();
    let mut sink = SinkUnderTest::start(&bus);
    let ingest = IngestUnderTest::start(&bus, &archive_camera(FRAMES.unsigned_abs()));
    let mut infer = service("infer", |listen| {
        format!(
            "frames_topic = \"{}\"\nresults_topic = \"{}\"\ndlq_topic = \"{}\"\n\
             group_id = \"{}\"\ntransactional_id = \"{}\"\nmode = \"archive\"\ndrain_timeout = \"4s\"\n\
             [model]\npath = \"models/demo/seg.pt\"\ntorch_threads = 1\n\
             [kafka]\nbootstrap_servers = \"{}\"\nsession_timeout = \"6s\"\n\
             [telemetry]\nmetrics_listen = \"{listen}\"\nlog_filter = \"info\"\n",
            ingest.frames_topic,
            sink.results,
            unique("test.chaos.frames.dlq"),
            unique("test-chaos-infer"),
            unique("test-chaos-infer-tx"),
            kafka::config().bootstrap_servers,
        )
    });
    infer.wait_ready("infer ready");
    wait_for("the first 30 frames recorded", STEP, || {
        (sink.stored().0 >= 30).then_some(())
    });

    let stopped = Outage::stop("kafka");
    let watched = watch(&[&infer, &sink.service], &stopped, outage);
    let restarted = Instant::now();
    stopped.end();
    let mut ready_after = Vec::new();
    for service in [&infer, &sink.service] {
        service.wait_ready(&format!("{} ready again after the restart", service.name));
        ready_after.push(restarted.elapsed().as_secs_f64());
    }
    let waiting = Instant::now();
    showing("every frame recorded", STEP, || {
        for service in [&mut infer, &mut sink.service] {
            service.still_running();
        }
        let stored = sink.stored().0;
        if stored >= FRAMES {
            return Ok(());
        }
        // Where the frames are, once the wait is all but over (it costs a scrape per service).
        if waiting.elapsed() < STEP.saturating_sub(Duration::from_secs(1)) {
            return Err(String::new());
        }
        let state = |service: &Service, metric: &str| {
            let (ready, _) = health(service.listen);
            let count =
                get(service.listen, "/metrics").and_then(|(_, body)| scraped(&body, metric));
            format!("{} ready {ready:?}, {metric} {count:?}", service.name)
        };
        Err(format!(
            "{stored} of {FRAMES} rows stored; {}; {}; {}",
            state(&ingest.service, "orstream_ingest_frames_published_total"),
            state(&infer, "orstream_infer_results_total"),
            state(&sink.service, "orstream_sink_results_stored_total"),
        ))
    });
    let (_, ended) = ingest.finish(&bus, true);
    let (stored, duplicated) = sink.stored();
    infer.stop();
    sink.service.stop();

    let not_ready: Vec<String> = watched
        .iter()
        .map(|w| {
            w.not_ready_after.map_or("never".to_owned(), |after| {
                format!("{:.1} s", after.as_secs_f64())
            })
        })
        .collect();
    println!(
        "chaos | broker stopped {outage:?} under ingest, infer and the sink | frames in \
         {FRAMES}, published {}, rows stored {stored}, lost {}, duplicated {duplicated} | not \
         ready into the outage: infer {}, sink {} | ready after the restart: infer {:.1} s, \
         sink {:.1} s",
        ended.frames_published,
        FRAMES - stored,
        not_ready[0],
        not_ready[1],
        ready_after[0],
        ready_after[1],
    );
    assert!(watched.iter().all(|w| w.not_ready_after.is_some()));
    assert_eq!(
        (ended.frames_published, stored, duplicated),
        (FRAMES as u64, FRAMES, 0)
    );
}

#[test]
fn broker_stopped_for_thirty_seconds_under_the_pipeline() {
    broker_stopped_under_the_pipeline(Duration::from_secs(30));
}

#[test]
#[ignore = "long: seven minutes; run with --ignored"]
fn broker_stopped_for_seven_minutes_under_the_pipeline() {
    broker_stopped_under_the_pipeline(Duration::from_secs(420));
}
