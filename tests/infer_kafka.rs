//! The inference worker against the real Kafka broker that `scripts/kafka.sh start` runs:
//!
//! - N frames in -> exactly N results, read back read_committed, in order per stream;
//! - the poison mix goes to the dead-letter topic while valid frames are unaffected;
//! - `orstream infer` (the built binary) is killed with SIGKILL several times mid-stream and
//!   restarted with the same transactional id: still exactly N results, no duplicates;
//! - a second `orstream infer` joins the group mid-stream and leaves again (SIGTERM): the
//!   partitions move both ways and still nothing is lost or duplicated.
//!
//! Each test uses its own random topics and group; they fail, not skip, when no broker answers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails at the first broken expectation, with its message"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use orstream_bus::{Bus, KafkaConfig, Record};
use orstream_infer::config::Mode;
use orstream_infer::{InferConfig, Model, Worker, synthetic};
use orstream_proto::{FrameResult, FrameStatus, headers};
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(30);

fn kafka() -> KafkaConfig {
    let config = KafkaConfig::from_env();
    if let Err(err) = config.probe(Duration::from_secs(3)) {
        panic!("{err}: run `scripts/kafka.sh start`");
    }
    config
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/fixtures/tiny_semantic.pt")
}

/// A worker configuration on fresh topics, quick to rebalance after a killed member.
fn config(kafka: &KafkaConfig) -> InferConfig {
    let mut config = InferConfig {
        frames_topic: unique("test.infer.frames"),
        results_topic: unique("test.infer.results"),
        dlq_topic: unique("test.infer.dlq"),
        group_id: unique("test-infer"),
        transactional_id: unique("test-infer-tx"),
        mode: Mode::Archive,
        commit_interval: Duration::from_millis(50),
        drain_timeout: Duration::from_secs(9),
        kafka: kafka.clone(),
        ..InferConfig::default()
    };
    config.model.path = fixture();
    config.batch.max_batch_size = 4;
    config.batch.max_linger = Duration::from_millis(2);
    // Short, so a killed worker's partitions move on quickly; the drain must fit inside it.
    config.kafka.session_timeout = Duration::from_secs(10);
    config.kafka.max_poll_interval = Duration::from_secs(30);
    config.kafka.transaction_timeout = Duration::from_secs(20);
    config
}

fn frame_records(topic: &str, streams: usize, per_stream: u64) -> Vec<Record> {
    let mut records = Vec::new();
    for seq in 0..per_stream {
        for s in 0..streams {
            let image = synthetic::scene(64, 48, seq);
            let jpeg = synthetic::encode_jpeg(&image, 80).unwrap();
            let frame =
                synthetic::frame(&format!("cam-{s}"), seq, synthetic::now_ns(), 64, 48, jpeg);
            records.push(synthetic::frame_record(topic, &frame));
        }
    }
    records
}

fn publish(bus: &Bus, records: &[Record]) {
    let producer = bus.producer().unwrap();
    let handles: Vec<_> = records
        .iter()
        .map(|r| producer.send(r, TIMEOUT).unwrap())
        .collect();
    for handle in handles {
        handle.wait(TIMEOUT).unwrap();
    }
}

/// Reads `topic` (read_committed) with a fresh group until nothing new comes for `quiet`.
fn read_all(bus: &Bus, topic: &str, quiet: Duration) -> Vec<orstream_bus::Message> {
    let consumer = bus.consumer(&unique("test-reader")).unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let mut last = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    while last.elapsed() < quiet && Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)).unwrap() {
            out.push(message);
            last = Instant::now();
        }
    }
    out
}

fn decode_results(messages: &[orstream_bus::Message]) -> Vec<FrameResult> {
    messages
        .iter()
        .map(|m| orstream_proto::decode(&m.payload).unwrap())
        .collect()
}

/// (lost, duplicated) against `streams` x `per_stream` frames, and checks order per stream.
fn tally(results: &[FrameResult], streams: usize, per_stream: u64) -> (u64, u64) {
    let mut per: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in results {
        per.entry(r.stream_id.clone()).or_default().push(r.seq);
    }
    let mut lost = 0;
    let mut dup = 0;
    for s in 0..streams {
        let seqs = per.remove(&format!("cam-{s}")).unwrap_or_default();
        let unique: BTreeSet<u64> = seqs.iter().copied().collect();
        dup += (seqs.len() - unique.len()) as u64;
        lost += (0..per_stream).filter(|q| !unique.contains(q)).count() as u64;
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, sorted, "cam-{s}: results out of order");
    }
    assert!(
        per.is_empty(),
        "results of unknown streams: {:?}",
        per.keys()
    );
    (lost, dup)
}

fn run_worker_until(config: InferConfig, bus: &Bus, done: impl Fn(&orstream_infer::Stats) -> bool) {
    let model = Model::open(&config.model).unwrap();
    let worker = Worker::new(config, bus.clone(), model).unwrap();
    let counters = worker.counters();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let thread = std::thread::spawn(move || worker.run(token));
    let deadline = Instant::now() + Duration::from_secs(180);
    while !done(&counters.snapshot()) {
        assert!(
            Instant::now() < deadline,
            "stuck at {:?}",
            counters.snapshot()
        );
        assert!(!thread.is_finished(), "the worker stopped early");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.cancel();
    thread.join().unwrap().unwrap();
}

#[test]
fn n_frames_in_give_n_results_read_committed() {
    let kafka = kafka();
    let config = config(&kafka);
    let bus = Bus::kafka(kafka).unwrap();
    bus.create_topic(&config.frames_topic, 3, TIMEOUT).unwrap();
    let (streams, per_stream) = (3, 40);
    publish(
        &bus,
        &frame_records(&config.frames_topic, streams, per_stream),
    );
    let n = streams as u64 * per_stream;
    run_worker_until(config.clone(), &bus, |s| s.results() >= n);
    let results = decode_results(&read_all(
        &bus,
        &config.results_topic,
        Duration::from_secs(3),
    ));
    let (lost, dup) = tally(&results, streams, per_stream);
    println!(
        "baseline-infer in={n} out={} lost={lost} dup={dup}",
        results.len()
    );
    assert_eq!((lost, dup), (0, 0));
    assert!(results.iter().all(|r| r.status == FrameStatus::Ok as i32));
}

#[test]
fn poison_goes_to_the_dead_letter_topic_on_kafka() {
    let kafka = kafka();
    let config = config(&kafka);
    let bus = Bus::kafka(kafka).unwrap();
    bus.create_topic(&config.frames_topic, 2, TIMEOUT).unwrap();
    let topic = config.frames_topic.as_str();
    let mut records = frame_records(topic, 1, 6);
    records.insert(2, Record::new(topic, vec![0x8Fu8; 200]).with_key("junk"));
    let mut corrupt = synthetic::frame("bad", 0, 1, 64, 48, b"\xFF\xD8\xFFnope".to_vec());
    corrupt.case_id = "c".to_owned();
    records.insert(4, synthetic::frame_record(topic, &corrupt));
    let mut absurd_jpeg = synthetic::encode_jpeg(&synthetic::scene(64, 48, 0), 80).unwrap();
    let sof = absurd_jpeg
        .windows(2)
        .position(|w| w == [0xFF, 0xC0])
        .unwrap();
    absurd_jpeg[sof + 5..sof + 9].copy_from_slice(&[0xFF; 4]);
    let absurd = synthetic::frame("bad", 1, 1, 64, 48, absurd_jpeg);
    records.push(synthetic::frame_record(topic, &absurd));
    records.push(Record::new(topic, Bytes::new()).with_key("empty"));
    publish(&bus, &records);
    run_worker_until(config.clone(), &bus, |s| s.results() + s.unanswerable >= 10);

    let results = decode_results(&read_all(
        &bus,
        &config.results_topic,
        Duration::from_secs(3),
    ));
    let good = results.iter().filter(|r| r.stream_id == "cam-0").count();
    assert_eq!(good, 6);
    let bad: Vec<i32> = results
        .iter()
        .filter(|r| r.stream_id == "bad")
        .map(|r| r.status)
        .collect();
    assert_eq!(bad, [FrameStatus::DecodeError as i32; 2]);
    let letters = read_all(&bus, &config.dlq_topic, Duration::from_secs(3));
    assert_eq!(letters.len(), 4);
    for letter in &letters {
        assert_eq!(
            letter.headers.get(headers::DLQ_SOURCE_TOPIC),
            Some(topic.as_bytes())
        );
        assert!(letter.headers.get(headers::DLQ_ERROR).is_some());
    }
}

/// Counts committed results in the background (duplicates included).
fn count_results(
    bus: &Bus,
    topic: &str,
    stop: Arc<AtomicBool>,
) -> (Arc<AtomicU64>, std::thread::JoinHandle<()>) {
    let count = Arc::new(AtomicU64::new(0));
    let consumer = bus.consumer(&unique("test-counter")).unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let counted = count.clone();
    let thread = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Ok(Some(_)) = consumer.poll(Duration::from_millis(200)) {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    (count, thread)
}

fn spawn_worker(config_path: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_orstream"))
        .args(["infer", "--config"])
        .arg(config_path)
        .env("ORSTREAM_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn config_toml(config: &InferConfig) -> String {
    format!(
        r#"frames_topic = "{}"
results_topic = "{}"
dlq_topic = "{}"
group_id = "{}"
transactional_id = "{}"
mode = "archive"
commit_interval = "50ms"
drain_timeout = "9s"
[model]
path = "{}"
[batch]
max_batch_size = 4
max_linger = "2ms"
[kafka]
bootstrap_servers = "{}"
session_timeout = "10s"
max_poll_interval = "30s"
transaction_timeout = "20s"
"#,
        config.frames_topic,
        config.results_topic,
        config.dlq_topic,
        config.group_id,
        config.transactional_id,
        config.model.path.display(),
        config.kafka.bootstrap_servers,
    )
}

#[test]
fn kill_9_the_worker_repeatedly_and_still_get_exactly_n_results() {
    let kafka = kafka();
    let config = config(&kafka);
    let bus = Bus::kafka(kafka).unwrap();
    bus.create_topic(&config.frames_topic, 3, TIMEOUT).unwrap();
    let (streams, per_stream) = (6, 100);
    let n = streams as u64 * per_stream;
    publish(
        &bus,
        &frame_records(&config.frames_topic, streams, per_stream),
    );
    let dir = std::env::temp_dir().join(unique("orstream-infer-kill9"));
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("infer.toml");
    std::fs::write(&config_path, config_toml(&config)).unwrap();

    let stop_counting = Arc::new(AtomicBool::new(false));
    let (seen, counter) = count_results(&bus, &config.results_topic, stop_counting.clone());
    let kills = 4;
    // Pseudo-random kill delays, different per run but without a random crate.
    let mut seed = u64::from(std::process::id()) ^ 0x9E37_79B9_7F4A_7C15;
    for round in 0..kills {
        let mut child = spawn_worker(&config_path, &dir.join(format!("worker-{round}.log")));
        // Kill only after this incarnation has made visible progress, at a random moment.
        let before = seen.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(90);
        while seen.load(Ordering::Relaxed) < before + 20 {
            assert!(
                Instant::now() < deadline,
                "worker {round} made no progress; see {}",
                dir.display()
            );
            assert!(
                child.try_wait().unwrap().is_none(),
                "worker {round} exited; see {}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        std::thread::sleep(Duration::from_millis((seed >> 33) % 400));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(
            seen.load(Ordering::Relaxed) < n,
            "all results were out before kill {round}: make the run longer"
        );
    }
    let mut child = spawn_worker(&config_path, &dir.join("worker-final.log"));
    let deadline = Instant::now() + Duration::from_secs(180);
    while seen.load(Ordering::Relaxed) < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} results; see {}",
            seen.load(Ordering::Relaxed),
            dir.display()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the final worker exited; see {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SIGTERM: drain and exit cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(
        exit.success(),
        "the final worker exited with {exit}; see {}",
        dir.display()
    );
    stop_counting.store(true, Ordering::Relaxed);
    counter.join().unwrap();

    let results = decode_results(&read_all(
        &bus,
        &config.results_topic,
        Duration::from_secs(5),
    ));
    let (lost, dup) = tally(&results, streams, per_stream);
    println!(
        "kill9-infer in={n} out={} lost={lost} dup={dup} kills={kills}",
        results.len()
    );
    assert_eq!((lost, dup), (0, 0), "logs in {}", dir.display());
    assert_eq!(results.len() as u64, n);
    let _ = std::fs::remove_dir_all(&dir);
}

fn terminate(child: &mut Child, dir: &std::path::Path) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(
        exit.success(),
        "a worker exited with {exit}; see {}",
        dir.display()
    );
}

#[test]
fn a_second_worker_joining_and_leaving_loses_and_duplicates_nothing() {
    let kafka = kafka();
    let config = config(&kafka);
    let bus = Bus::kafka(kafka).unwrap();
    bus.create_topic(&config.frames_topic, 4, TIMEOUT).unwrap();
    let (streams, per_stream) = (8, 60);
    let n = streams as u64 * per_stream;
    let records = frame_records(&config.frames_topic, streams, per_stream);
    let (early, late) = records.split_at(records.len() / 3);
    publish(&bus, early);
    let dir = std::env::temp_dir().join(unique("orstream-infer-rebalance"));
    std::fs::create_dir_all(&dir).unwrap();
    let a_path = dir.join("a.toml");
    std::fs::write(&a_path, config_toml(&config)).unwrap();
    let b_config = InferConfig {
        transactional_id: unique("test-infer-tx-b"),
        ..config.clone()
    };
    let b_path = dir.join("b.toml");
    std::fs::write(&b_path, config_toml(&b_config)).unwrap();

    let stop_counting = Arc::new(AtomicBool::new(false));
    let (seen, counter) = count_results(&bus, &config.results_topic, stop_counting.clone());
    let mut a = spawn_worker(&a_path, &dir.join("a.log"));
    let wait_for = |target: u64, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while seen.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < deadline,
                "{what}: stuck; see {}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(40, "worker a alone");
    let mut b = spawn_worker(&b_path, &dir.join("b.log"));
    // Frames keep coming while the group rebalances onto two members.
    for chunk in late.chunks(40) {
        publish(&bus, chunk);
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(Duration::from_secs(3));
    terminate(&mut b, &dir);
    wait_for(n, "worker a after b left");
    terminate(&mut a, &dir);
    stop_counting.store(true, Ordering::Relaxed);
    counter.join().unwrap();

    let results = decode_results(&read_all(
        &bus,
        &config.results_topic,
        Duration::from_secs(5),
    ));
    let (lost, dup) = tally(&results, streams, per_stream);
    // Each worker prints what it committed when it stops.
    let committed = |log: &str| {
        std::fs::read_to_string(dir.join(log))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("orstream infer:"))
            .map(str::to_owned)
            .unwrap_or_default()
    };
    println!(
        "rebalance-infer in={n} out={} lost={lost} dup={dup}\n  a: {}\n  b: {}",
        results.len(),
        committed("a.log"),
        committed("b.log")
    );
    assert_eq!((lost, dup), (0, 0), "logs in {}", dir.display());
    let _ = std::fs::remove_dir_all(&dir);
}
