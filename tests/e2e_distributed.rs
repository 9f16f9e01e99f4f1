//! End to end, distributed: the demo clip through three separate `orstream` processes
//! (ingest, infer, sink) over the real Kafka broker into PostgreSQL gives the same record as the
//! embedded run (one process, in-process bus, SQLite): the same counts and the same events.
//!
//! The processes run the commands of the README's "Distributed run" section, read from
//! README.md itself, so the README cannot drift from what works. The test changes only what
//! keeps runs apart: `$B` and `$PG` become the broker and a fresh PostgreSQL schema (reached over
//! TLS with `sslmode=verify-full` against the stack's CA, by the sink and `record`), the case id
//! a unique one, and each service gets a `--config` (the README's file, if it names one, plus
//! this run's own topics, consumer groups and transactional id, and the embedded demo's libtorch
//! thread count, which is the README file's on a machine with two or three cores). Both runs
//! are in archive mode (every frame runs) and run side by side.
//!
//! Compared: every frame accounted for in both (published == results == OK + skipped +
//! errors, the same numbers); per event the same label, category, start and end offsets from
//! the case start, frame range and frames seen, exactly; the same gaps. Confidences (mean
//! per-pixel probability of a blob) must agree within [`CONFIDENCE_TOLERANCE`]: libtorch runs a
//! batch of one frame with other kernels than larger batches (its logits differ by up to about
//! 2e-6), and which frames happen to run alone depends on timing, so the last bits of a
//! confidence are not determined by the input. Everything else is.
//!
//! Needs `scripts/kafka.sh start` and `scripts/postgres.sh start`; fails (never skips) when
//! either is down. Prints one line of figures.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

use orstream_shell::config::variable;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orstream::demo::{DemoOptions, run};
use orstream_bus::Bus;
use orstream_record::BackendKind;
use orstream_record::query::{Timeline, TimelineEvent, TimelineGap, TimelineTrack};
use orstream_test_support::names::unique;
use orstream_test_support::store::isolated;
use orstream_test_support::tls::stack_ca;
use orstream_test_support::{kafka, process, wait};
use tokio_util::sync::CancellationToken;

const ORSTREAM: &str = env!("CARGO_BIN_EXE_orstream");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The README's case id, replaced by a unique one.
const README_CASE: &str = "case-0001";
/// How long the distributed run may go without progress (a topic appearing, more results
/// stored) before the test gives up: a stuck run fails, a slow machine only takes longer. The
/// model's loading and warm-up, on two cores shared with other builds, is the longest quiet
/// spell.
const PATIENCE: Duration = Duration::from_secs(180);
/// Largest difference of an event's peak or mean confidence between the two records: a frame
/// run alone in its batch moves its probabilities by about 1e-7.
const CONFIDENCE_TOLERANCE: f64 = 1e-5;

/// One `orstream ...` line of the README's distributed run, as arguments.
#[derive(Debug, Clone)]
struct Line(Vec<String>);

impl Line {
    fn service(&self) -> &str {
        &self.0[0]
    }

    fn value_of(&self, flag: &str) -> Option<&str> {
        let i = self.0.iter().position(|a| a == flag)?;
        self.0.get(i + 1).map(String::as_str)
    }
}

/// The `orstream` lines of the shell block under "## Distributed run" in README.md.
fn readme_lines() -> Vec<Line> {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let section = readme
        .split("\n## Distributed run")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("README.md has no \"## Distributed run\" section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .expect("the distributed run section has no ```sh block");
    block
        .lines()
        .map(|l| l.split(" #").next().unwrap_or("").trim())
        .map(|l| l.trim_end_matches('&').trim())
        .filter_map(|l| l.strip_prefix("orstream "))
        .map(|l| Line(l.split_whitespace().map(str::to_owned).collect()))
        .collect()
}

/// What one run's processes share and nothing else does.
struct Run {
    id: String,
    case_id: String,
    bootstrap: String,
    store: String,
    dir: PathBuf,
}

impl Run {
    fn topic(&self, name: &str) -> String {
        format!("test.{name}.{}", self.id)
    }

    /// This run's keys for a service's configuration file.
    fn isolation(&self, service: &str) -> Vec<(&'static str, String)> {
        match service {
            "ingest" => vec![
                ("frames_topic", self.topic("frames")),
                ("events_topic", self.topic("streams")),
            ],
            "infer" => vec![
                ("frames_topic", self.topic("frames")),
                ("results_topic", self.topic("results")),
                ("dlq_topic", self.topic("frames.dlq")),
                ("group_id", format!("{}-infer", self.id)),
                ("transactional_id", format!("{}-infer-0", self.id)),
            ],
            "sink" => vec![
                ("results_topic", self.topic("results")),
                ("streams_topic", self.topic("streams")),
                ("events_topic", self.topic("events")),
                ("tracks_topic", self.topic("tracks")),
                ("group_id", format!("{}-sink", self.id)),
            ],
            _ => Vec::new(),
        }
    }

    /// The README's line with this run's values: `$B`, `$PG`, the case id, output files in
    /// the run's directory, and a `--config` with the run's topics and groups.
    fn args(&self, line: &Line) -> Vec<String> {
        for flag in [
            "--frames-topic",
            "--events-topic",
            "--group",
            "--transactional-id",
        ] {
            assert!(
                line.value_of(flag).is_none(),
                "the README's `orstream {}` line sets {flag}, which the test sets per run \
                 (through --config)",
                line.service()
            );
        }
        let mut args: Vec<String> = Vec::new();
        for (i, arg) in line.0.iter().enumerate() {
            let previous = if i == 0 { "" } else { line.0[i - 1].as_str() };
            args.push(match arg.as_str() {
                "$B" => self.bootstrap.clone(),
                "$PG" => self.store.clone(),
                a if a.starts_with('$') => panic!("the README uses {a}, unknown to the test"),
                a if matches!(previous, "-o" | "--out") => self.dir.join(a).display().to_string(),
                a if matches!(previous, "--config" | "-c") => self.config(line.service(), Some(a)),
                a => a.replace(README_CASE, &self.case_id),
            });
        }
        if line.value_of("--config").is_none() && line.value_of("-c").is_none() {
            let isolation = self.isolation(line.service());
            if !isolation.is_empty() {
                args.push("--config".into());
                args.push(self.config(line.service(), None));
            }
        }
        args
    }

    /// Writes `base` (relative to the checkout) plus the run's keys for `service`; its path.
    fn config(&self, service: &str, base: Option<&str>) -> String {
        let mut table: toml::Table = match base {
            Some(path) => {
                let text = std::fs::read_to_string(Path::new(ROOT).join(path))
                    .unwrap_or_else(|e| panic!("the README's {path}: {e}"));
                toml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
            }
            None => toml::Table::new(),
        };
        for (key, value) in self.isolation(service) {
            table.insert(key.to_owned(), toml::Value::String(value));
        }
        if service == "infer" {
            // libtorch's results depend on its thread count in the last bits: use the embedded
            // demo's (one per two cores).
            let threads = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
            let model = table
                .entry("model")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(model) = model {
                model.insert(
                    "torch_threads".to_owned(),
                    toml::Value::Integer(i64::try_from(threads).unwrap()),
                );
            }
        }
        let path = self.dir.join(format!("{service}.toml"));
        std::fs::write(&path, toml::to_string(&table).unwrap()).unwrap();
        path.display().to_string()
    }

    fn spawn(&self, line: &Line) -> Service {
        let name = line.service().to_owned();
        let log = self.dir.join(format!("{name}.log"));
        let child = Command::new(ORSTREAM)
            .args(self.args(line))
            .current_dir(ROOT)
            .env(variable(&name, "telemetry.log_filter"), "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Service { name, child, log }
    }

    /// Runs a README `orstream record` line (with `extra` arguments); its standard output.
    fn record(&self, line: &Line, extra: &[&str]) -> Result<String, String> {
        let output = Command::new(ORSTREAM)
            .args(self.args(line))
            .args(extra)
            .current_dir(ROOT)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "orstream {} exited with {}: {}",
                line.0.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if std::env::var_os("ORSTREAM_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One running service process; killed if the test fails while it runs.
struct Service {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Service {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Panics, with its log, when the service has exited (with a failure, if `failed_only`).
    fn assert_running(&mut self) {
        self.assert_not_exited(false);
    }

    fn assert_not_exited(&mut self, failed_only: bool) {
        if let Some(status) = self.child.try_wait().unwrap()
            && !(failed_only && status.success())
        {
            panic!(
                "orstream {} exited early with {status}:\n{}",
                self.name,
                self.log_tail()
            );
        }
    }

    /// SIGTERM (unless it already exited); it must exit 0.
    fn stop(mut self) {
        let name = format!("orstream {}", self.name);
        let status = process::terminate(&mut self.child, &name, PATIENCE);
        assert!(
            status.success(),
            "{name} exited with {status} after SIGTERM:\n{}",
            self.log_tail()
        );
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `topic` exists: `service` creates it at its start (ingest may be done already).
fn wait_for_topic(bus: &Bus, topic: &str, service: &mut Service) {
    wait::until(&format!("topic {topic} to appear"), PATIENCE, || {
        service.assert_not_exited(true);
        bus.partitions(topic, Duration::from_secs(2))
            .is_ok_and(|p| !p.is_empty())
    });
}

/// The stream's accounting as `orstream record accounting --format json` prints it.
#[derive(Debug, serde::Deserialize)]
struct Accounting {
    published: Option<u64>,
    results: u64,
    ok: u64,
    skipped: u64,
    errors: u64,
    complete: bool,
}

/// What the two records are compared on: everything but ids, stream names, epochs and clock.
#[derive(Debug, PartialEq)]
struct EventKey<'a> {
    label: &'a str,
    category: &'a str,
    start_offset_ns: i64,
    end_offset_ns: i64,
    seqs: (u64, u64),
    frames_seen: u64,
    model_version: &'a str,
    open: bool,
    track_ids: &'a [u64],
}

fn event_key(e: &TimelineEvent) -> EventKey<'_> {
    EventKey {
        label: &e.label,
        category: &e.category,
        start_offset_ns: e.start_offset_ns,
        end_offset_ns: e.end_offset_ns,
        seqs: (e.first_seq, e.last_seq),
        frames_seen: e.frames_seen,
        model_version: &e.model_version,
        open: e.open,
        track_ids: &e.track_ids,
    }
}

/// A track's identity and extent; its motion is compared within a tolerance.
fn track_key(t: &TimelineTrack) -> (&str, u64, i64, i64, (u64, u64), u64, u64, bool) {
    (
        &t.label,
        t.track_id,
        t.start_offset_ns,
        t.end_offset_ns,
        (t.first_seq, t.last_seq),
        t.frames_seen,
        t.reentries,
        t.open,
    )
}

fn gap_key(g: &TimelineGap) -> (&str, i64, i64, u64) {
    (&g.kind, g.start_offset_ns, g.end_offset_ns, g.frames)
}

fn describe(timeline: &Timeline) -> String {
    timeline
        .events
        .iter()
        .map(|e| {
            format!(
                "{:?} conf {}/{}",
                event_key(e),
                e.peak_confidence,
                e.mean_confidence
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn three_processes_over_kafka_and_postgres_record_what_the_embedded_demo_records() {
    let kafka = kafka::config();
    let store = isolated(BackendKind::Postgres).unwrap_or_else(|e| panic!("{e}"));
    let lines = readme_lines();
    let find = |service: &str| {
        lines
            .iter()
            .find(|l| l.service() == service)
            .unwrap_or_else(|| panic!("the README's distributed run has no `orstream {service}`"))
            .clone()
    };
    let (ingest, infer, sink) = (find("ingest"), find("infer"), find("sink"));
    let accounting = lines
        .iter()
        .find(|l| l.0.iter().any(|a| a == "accounting"))
        .expect("the README's distributed run reads the accounting")
        .clone();

    // The reference: the embedded demo on the same clip, archive mode, beside the distributed
    // run (in turn they would take twice as long on a small machine).
    let out = tempfile::tempdir().unwrap();
    let options = DemoOptions::archive_quiet(out.path().to_path_buf());
    let embedded = std::thread::spawn(move || run(&options, &CancellationToken::new()));

    // The same clip through three processes.
    let id = unique("e2e");
    let run = Run {
        case_id: format!("{id}-case"),
        bootstrap: kafka.bootstrap_servers.clone(),
        // Over TLS, the server's certificate checked against the stack's CA and its name.
        store: format!(
            "{}&sslmode=verify-full&sslrootcert={}",
            store.url(),
            stack_ca().display()
        ),
        dir: std::env::temp_dir().join(&id),
        id,
    };
    std::fs::create_dir_all(&run.dir).unwrap();
    let bus = Bus::kafka(kafka).unwrap();
    let started = Instant::now();
    let mut ingest = run.spawn(&ingest);
    wait_for_topic(&bus, &run.topic("frames"), &mut ingest);
    wait_for_topic(&bus, &run.topic("streams"), &mut ingest);
    let mut infer = run.spawn(&infer);
    wait_for_topic(&bus, &run.topic("results"), &mut infer);
    let mut sink = run.spawn(&sink);

    // Until the record is complete: the stream ended and every frame's result is stored.
    let (mut stored, mut progress) = (0, Instant::now());
    let rows: Vec<Accounting> = loop {
        infer.assert_running();
        sink.assert_running();
        if let Ok(text) = run.record(&accounting, &["--format", "json"]) {
            let rows: Vec<Accounting> = serde_json::from_str(&text).unwrap();
            if !rows.is_empty() && rows.iter().all(|r| r.complete) {
                break rows;
            }
            let now: u64 = rows.iter().map(|r| r.results).sum();
            if now > stored {
                (stored, progress) = (now, Instant::now());
            }
        }
        assert!(
            progress.elapsed() < PATIENCE,
            "no progress for {PATIENCE:?} at {stored} results stored; \
             ingest:\n{}\ninfer:\n{}\nsink:\n{}",
            ingest.log_tail(),
            infer.log_tail(),
            sink.log_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let wall = started.elapsed();
    // Ingest exits on its own at the clip's end; infer and the sink drain on SIGTERM.
    for service in [ingest, infer, sink] {
        service.stop();
    }

    // Every README record line works on the distributed record.
    for line in lines.iter().filter(|l| l.service() == "record") {
        let text = run.record(line, &[]).unwrap_or_else(|e| panic!("{e}"));
        if line.0.iter().any(|a| a == "accounting") {
            print!("{text}");
        }
        assert!(
            !text.is_empty() || line.value_of("-o").is_some(),
            "{line:?} printed nothing"
        );
        if line.0.iter().any(|a| a == "tracks") {
            assert!(
                text.contains("per tool:") && text.contains("grasper"),
                "{line:?} printed no tracks:\n{text}"
            );
        }
    }

    let embedded = embedded.join().unwrap().unwrap();
    assert!(embedded.all_accounted(), "{embedded:?}");

    // The counts.
    assert_eq!(rows.len(), 1, "one stream");
    let row = &rows[0];
    let published = row.published.unwrap();
    assert_eq!(published, embedded.published, "frames published");
    assert_eq!(row.results, published, "results stored");
    assert_eq!(row.ok + row.skipped + row.errors, row.results);
    assert_eq!(row.ok, embedded.results.ok, "OK results");
    assert_eq!(row.skipped, embedded.results.skipped, "skipped results");
    assert_eq!(row.errors, embedded.results.errors, "error results");

    // The events and gaps.
    let distributed = orstream_record::query::timeline::<orstream_sink::derive::StreamState>(
        &mut store.open().unwrap(),
        &run.case_id,
    )
    .unwrap()
    .expect("the case is in the record");
    let reference = &embedded.timeline;
    // Each embedded event paired with the distributed event of the same key, if any.
    let mut unpaired: Vec<&TimelineEvent> = distributed.events.iter().collect();
    let pairs: Vec<(&TimelineEvent, &TimelineEvent)> = reference
        .events
        .iter()
        .filter_map(|a| {
            let i = unpaired.iter().position(|b| event_key(a) == event_key(b))?;
            Some((a, unpaired.remove(i)))
        })
        .collect();
    let confidence_diff = |(a, b): &(&TimelineEvent, &TimelineEvent)| {
        (a.peak_confidence - b.peak_confidence)
            .abs()
            .max((a.mean_confidence - b.mean_confidence).abs())
    };
    let equal = pairs
        .iter()
        .filter(|p| confidence_diff(p) <= CONFIDENCE_TOLERANCE)
        .count();
    let max_confidence_diff = pairs.iter().map(confidence_diff).fold(0.0, f64::max);
    println!(
        "distributed frames={published} results={} ok={} skipped={} events={} equal={equal} \
         gaps={} max_confidence_diff={max_confidence_diff:.1e} wall={:.1}s (embedded {:.1}s)",
        row.results,
        row.ok,
        row.skipped,
        distributed.events.len(),
        distributed.gaps.len(),
        wall.as_secs_f64(),
        embedded.wall.as_secs_f64(),
    );
    assert!(
        equal == reference.events.len() && equal == distributed.events.len(),
        "{equal} of {} embedded / {} distributed events equal\nembedded:\n{}\ndistributed:\n{}",
        reference.events.len(),
        distributed.events.len(),
        describe(reference),
        describe(&distributed)
    );
    assert_eq!(
        reference.gaps.iter().map(gap_key).collect::<Vec<_>>(),
        distributed.gaps.iter().map(gap_key).collect::<Vec<_>>(),
        "gaps"
    );
    // The tool tracks: the same tracks over the same frames, the same motion (centroids come
    // from the same masks; a last-bit difference in a score never moves them far).
    assert_eq!(
        reference.tracks.iter().map(track_key).collect::<Vec<_>>(),
        distributed.tracks.iter().map(track_key).collect::<Vec<_>>(),
        "tracks"
    );
    for (a, b) in reference.tracks.iter().zip(&distributed.tracks) {
        assert!(
            (a.path_length - b.path_length).abs() <= 1e-3 * a.path_length.max(1e-3),
            "track {} path {} embedded, {} distributed",
            a.track_id,
            a.path_length,
            b.path_length
        );
    }
    println!("tracks={} equal", distributed.tracks.len());
}
