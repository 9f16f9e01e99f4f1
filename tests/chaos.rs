//! Chaos against the real broker and PostgreSQL: the project's scripts pause a dependency
//! (SIGSTOP: connections stay open, nothing answers) under a running `orstream sink`, and each
//! case prints a line with what went in, what came out, what was stored, lost and duplicated,
//! and how long readiness took to follow. The short versions run in `make test`; the long ones
//! are ignored by default and run with
//!
//! ```sh
//! cargo test --test chaos -- --ignored --nocapture
//! ```
//!
//! A paused server stops every client of the checkout's stack, so the cases of this file run
//! one at a time, and a case that fails resumes what it paused on the way out.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use orstream_bus::{Bus, Producer};
use orstream_record::BackendKind;
use orstream_test_support::metrics::{free_port, get};
use orstream_test_support::names::unique;
use orstream_test_support::script::Script;
use orstream_test_support::store::{IsolatedStore, isolated};
use orstream_test_support::topic::result_record;
use orstream_test_support::wait::wait_for;
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

/// A dependency paused by its script; resumed when dropped, whatever happened meanwhile.
struct Paused {
    script: &'static str,
    resumed: bool,
}

impl Paused {
    fn new(script_name: &'static str) -> Self {
        script(script_name, "pause");
        Self {
            script: script_name,
            resumed: false,
        }
    }

    fn resume(mut self) {
        script(self.script, "resume");
        self.resumed = true;
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        if !self.resumed {
            script(self.script, "resume");
        }
    }
}

/// `orstream <args>` with stderr in `log`, none of the caller's `ORSTREAM_*` variables.
fn orstream(args: &[&str], log: &Path) -> Child {
    process::command(
        env!("CARGO_BIN_EXE_orstream"),
        args,
        env!("CARGO_MANIFEST_DIR"),
        log,
    )
    .spawn()
    .unwrap()
}

/// `(ready, alive)` from `/readyz` and `/healthz`; None while the endpoint does not answer.
fn health(addr: SocketAddr) -> (Option<bool>, Option<bool>) {
    let status = |path| get(addr, path).map(|(status, _)| status == 200);
    (status("/readyz"), status("/healthz"))
}

/// A sink process on its own PostgreSQL database and topics.
struct SinkUnderTest {
    store: IsolatedStore,
    results: String,
    listen: SocketAddr,
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl SinkUnderTest {
    fn start(bus: &Bus) -> Self {
        let store = isolated(BackendKind::Postgres).unwrap();
        let results = unique("test.chaos.results");
        let streams = unique("test.chaos.streams");
        for topic in [&results, &streams] {
            bus.create_topic(topic, 1, STEP).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        let listen = free_port();
        let config = dir.path().join("sink.toml");
        std::fs::write(
            &config,
            format!(
                "store = \"{}\"\ngroup_id = \"{}\"\nresults_topic = \"{results}\"\n\
                 streams_topic = \"{streams}\"\npublish_events = false\n\
                 health_interval = \"200ms\"\nretry_initial = \"50ms\"\nretry_max = \"1s\"\n\
                 [kafka]\nbootstrap_servers = \"{}\"\n\
                 session_timeout = \"6s\"\nmax_poll_interval = \"{MAX_POLL_INTERVAL_S}s\"\n\
                 [telemetry]\nmetrics_listen = \"{listen}\"\nlog_filter = \"info\"\n",
                store.url(),
                unique("test-chaos-sink"),
                kafka::config().bootstrap_servers,
            ),
        )
        .unwrap();
        let log = dir.path().join("sink.log");
        let child = orstream(&["sink", "--config", config.to_str().unwrap()], &log);
        let sink = Self {
            store,
            results,
            listen,
            child,
            log,
            _dir: dir,
        };
        wait_for("the sink ready", STEP, || {
            (health(sink.listen).0 == Some(true)).then_some(())
        });
        sink
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

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) {
        let status = process::terminate(&mut self.child, "sink", STEP);
        assert!(
            status.success(),
            "the sink exited with {status}:\n{}",
            self.log()
        );
    }
}

impl Drop for SinkUnderTest {
    /// A failed case shows the sink's log, and leaves no sink running.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- sink log ---\n{}", self.log());
        }
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
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

/// PostgreSQL paused for `pause` under a running sink, results arriving meanwhile: the sink
/// turns not ready within seconds and stays alive the whole time (a restart cannot help a hung
/// database), then is ready again and stores every result once.
fn database_paused_under_the_sink(pause: Duration) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bus = Bus::kafka(kafka::config()).unwrap();
    let sink = SinkUnderTest::start(&bus);
    let producer = bus.producer().unwrap();
    let script = Script::new(&unique("chaos-case"), 1, 80);
    publish(&producer, &sink.results, &script, 0..40);
    wait_for("the first 40 results stored", STEP, || {
        (sink.stored().0 == 40).then_some(())
    });

    let paused = Paused::new("postgres");
    let started = Instant::now();
    publish(&producer, &sink.results, &script, 40..80);
    let mut not_ready_after = None;
    while started.elapsed() < pause {
        let (ready, alive) = health(sink.listen);
        assert_eq!(
            alive,
            Some(true),
            "liveness failed {:?} into the pause:\n{}",
            started.elapsed(),
            sink.log()
        );
        if ready == Some(false) && not_ready_after.is_none() {
            not_ready_after = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let resumed = Instant::now();
    paused.resume();
    wait_for("ready again after the resume", STEP, || {
        (health(sink.listen).0 == Some(true)).then_some(())
    });
    let ready_after = resumed.elapsed();
    wait_for("every result stored", STEP, || {
        (sink.stored().0 >= 80).then_some(())
    });
    let (stored, duplicated) = sink.stored();
    assert!(
        sink.log().contains("a dependency does not answer"),
        "{}",
        sink.log()
    );
    sink.stop();

    let not_ready_after =
        not_ready_after.unwrap_or_else(|| panic!("never not ready during a {pause:?} pause"));
    println!(
        "chaos | PostgreSQL paused {pause:?} under the sink | frames in 80, results out 80, \
         rows stored {stored}, lost {}, duplicated {duplicated} | not ready {:.1} s into the \
         pause, ready {:.1} s after the resume",
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
    database_paused_under_the_sink(Duration::from_secs(30));
}

#[test]
#[ignore = "long: ten minutes; run with --ignored"]
fn postgres_paused_for_ten_minutes() {
    database_paused_under_the_sink(Duration::from_secs(600));
}
