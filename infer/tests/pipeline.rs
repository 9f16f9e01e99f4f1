//! The whole worker over the in-process bus (same semantics as Kafka: keys, partitions, group
//! offsets, read_committed transactions): frames in, exactly one result per frame out, in
//! order per stream; poison to the dead-letter topic; live-mode skipping; a second worker
//! joining and leaving the group mid-stream.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails at the first broken expectation, with its message"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use orstream_bus::{Bus, Message, Record};
use orstream_infer::config::{DeliveryGuarantee, Mode};
use orstream_infer::{InferConfig, Model, Stats, Worker, synthetic};
use orstream_proto::{Frame, FrameResult, FrameStatus, SCHEMA_VERSION, headers};
use orstream_test_support::names::unique;
use orstream_test_support::tally::{self, Tally};
use orstream_test_support::{topic, wait};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(120);

fn config() -> InferConfig {
    let mut config = InferConfig {
        frames_topic: unique("frames"),
        results_topic: unique("results"),
        dlq_topic: unique("dlq"),
        group_id: unique("group"),
        transactional_id: unique("tx"),
        mode: Mode::Archive,
        commit_interval: Duration::from_millis(20),
        ..InferConfig::default()
    };
    config.model.path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/tiny_semantic.pt");
    config.batch.max_batch_size = 4;
    config.batch.max_linger = Duration::from_millis(2);
    config
}

fn frame(stream: &str, seq: u64, capture_time_ns: i64) -> Frame {
    let image = synthetic::scene(64, 48, seq);
    let jpeg = synthetic::encode_jpeg(&image, 80).unwrap();
    synthetic::frame(stream, seq, capture_time_ns, 64, 48, jpeg)
}

fn frames(config: &InferConfig, streams: usize, per_stream: u64) -> Vec<Record> {
    let mut records = Vec::new();
    for seq in 0..per_stream {
        for s in 0..streams {
            let f = frame(&format!("cam-{s}"), seq, synthetic::now_ns());
            records.push(synthetic::frame_record(&config.frames_topic, &f));
        }
    }
    records
}

/// A running worker: its thread, stop token and counters.
struct Running {
    stop: CancellationToken,
    thread: std::thread::JoinHandle<Result<Stats, orstream_infer::InferError>>,
    counters: std::sync::Arc<orstream_infer::Counters>,
}

fn start(config: InferConfig, bus: &Bus) -> Running {
    let model = Model::open(&config.model).unwrap();
    let worker = Worker::new(config, bus.clone(), model).unwrap();
    let counters = worker.counters();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let thread = std::thread::spawn(move || worker.run(token));
    Running {
        stop,
        thread,
        counters,
    }
}

impl Running {
    /// Waits until `done` holds for the counters, then stops and returns the final figures.
    fn finish_when(self, done: impl Fn(&Stats) -> bool) -> Stats {
        wait::showing("the worker to get there", WAIT, || {
            let stats = self.counters.snapshot();
            if done(&stats) {
                return Ok(());
            }
            assert!(!self.thread.is_finished(), "the worker stopped early");
            Err(format!("{stats:?}"))
        });
        self.stop.cancel();
        self.thread.join().unwrap().unwrap()
    }
}

/// Everything committed on `topic`, read by a fresh group.
fn read_all(bus: &Bus, topic: &str) -> Vec<Message> {
    topic::read_until_quiet(bus, topic, 0, Duration::from_millis(300))
}

fn results(bus: &Bus, topic: &str) -> Vec<FrameResult> {
    read_all(bus, topic)
        .iter()
        .map(|m| {
            let result: FrameResult = orstream_proto::decode(&m.payload).unwrap();
            assert_eq!(m.key.as_deref(), Some(result.stream_id.as_bytes()));
            assert_eq!(
                m.headers.get(headers::SCHEMA_VERSION),
                Some(SCHEMA_VERSION.as_bytes())
            );
            result
        })
        .collect()
}

/// Checks exactly one result per (stream, seq) and order within each stream.
fn check_exactly_once(results: &[FrameResult], streams: usize, per_stream: u64) {
    // Synthetic frames are all of session 1.
    let sent = tally::frames((0..streams).map(|s| format!("cam-{s}")), 1, per_stream);
    assert_eq!(
        tally::tally(results, &sent),
        Tally {
            lost: 0,
            duplicated: 0
        },
        "lost or duplicated results"
    );
}

#[test]
fn every_frame_gets_exactly_one_result_in_order() {
    let bus = Bus::memory();
    let config = config();
    bus.create_topic(&config.frames_topic, 3, WAIT).unwrap();
    topic::publish(&bus, &frames(&config, 3, 16));
    let running = start(config.clone(), &bus);
    let stats = running.finish_when(|s| s.results() >= 48);
    assert_eq!(stats.ok, 48, "{stats:?}");
    let results = results(&bus, &config.results_topic);
    assert_eq!(results.len(), 48);
    check_exactly_once(&results, 3, 16);
    for r in &results {
        assert_eq!(r.status, FrameStatus::Ok as i32, "{r:?}");
        let model = r.model.as_ref().unwrap();
        assert_eq!(model.name, "tiny_semantic");
        assert!(model.digest.starts_with("sha256:"));
        let timings = r.timings.unwrap();
        assert!((1..=4).contains(&timings.batch_size), "{timings:?}");
        assert!(r.result_time_ns >= r.capture_time_ns);
        // The scene has a red and a green block in every frame.
        let labels: BTreeSet<&str> = r.instances.iter().map(|i| i.label.as_str()).collect();
        assert!(
            labels.contains("grasper") && labels.contains("liver"),
            "{labels:?}"
        );
    }
    assert!(read_all(&bus, &config.dlq_topic).is_empty());
}

#[test]
fn a_worker_started_before_its_frames_topic_waits_for_it() {
    let bus = Bus::memory();
    let config = config();
    let running = start(config.clone(), &bus);
    // No frames topic yet (ingest creates it): the worker waits, it does not give up.
    std::thread::sleep(Duration::from_millis(1_500));
    assert!(
        !running.thread.is_finished(),
        "the worker gave up waiting for its frames topic"
    );
    bus.create_topic(&config.frames_topic, 2, WAIT).unwrap();
    topic::publish(&bus, &frames(&config, 2, 8));
    let stats = running.finish_when(|s| s.results() >= 16);
    assert_eq!(stats.ok, 16, "{stats:?}");
    check_exactly_once(&results(&bus, &config.results_topic), 2, 8);
}

/// Two workers left on one transactional id fence each other in turn; instead of doing so
/// for ever, one stops with an error that names the id and says what to do.
#[test]
fn two_workers_on_one_transactional_id_stop_with_the_reason() {
    let bus = Bus::memory();
    let config = config();
    bus.create_topic(&config.frames_topic, 2, WAIT).unwrap();
    let (first, second) = (start(config.clone(), &bus), start(config.clone(), &bus));
    let feeder = {
        let (bus, config) = (bus.clone(), config.clone());
        std::thread::spawn(move || {
            // The same frames again and again, of 8 streams so that both workers' partitions
            // have some: enough output for the two to keep taking the id from each other.
            for _ in 0..40 {
                topic::publish(&bus, &frames(&config, 8, 4));
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    wait::showing("one worker to stop", WAIT, || {
        if first.thread.is_finished() || second.thread.is_finished() {
            Ok(())
        } else {
            Err("both still running")
        }
    });
    feeder.join().unwrap();
    let errors: Vec<String> = [first, second]
        .into_iter()
        .filter_map(|running| {
            running.stop.cancel();
            running.thread.join().unwrap().err().map(|e| e.to_string())
        })
        .collect();
    assert!(
        errors.iter().any(|e| e.contains(&format!(
            "transactional id {} is in use by another worker",
            config.transactional_id
        ))),
        "{errors:?}"
    );
}

#[test]
fn poison_goes_to_the_dead_letter_topic_and_valid_frames_are_unaffected() {
    let bus = Bus::memory();
    let config = config();
    bus.create_topic(&config.frames_topic, 2, WAIT).unwrap();
    let topic = config.frames_topic.as_str();
    let mut records = Vec::new();
    let good = |seq| synthetic::frame_record(topic, &frame("good", seq, synthetic::now_ns()));
    records.push(good(0));
    // Random bytes, a truncated protobuf, an empty payload, an oversized one: no identity.
    // Each with the version header, so the payload is what is refused.
    records.push(topic::versioned(topic, "junk", vec![0x8Fu8; 333]));
    let whole = orstream_proto::encode(&frame("cut", 0, 1));
    records.push(topic::versioned(
        topic,
        "cut",
        whole[..whole.len() / 2].to_vec(),
    ));
    records.push(topic::versioned(topic, "empty", Vec::new()));
    records.push(topic::versioned(topic, "huge", vec![0u8; 17 << 20]));
    records.push(good(1));
    // Identity readable: a corrupt JPEG, a JPEG header of 65535x65535, a frame of 65535
    // columns, a frame whose JPEG is another size, an unknown schema version.
    let mut corrupt = frame("bad", 0, 1);
    corrupt.data = Bytes::from_static(b"\xFF\xD8\xFF\xE0 definitely not a jpeg");
    records.push(synthetic::frame_record(topic, &corrupt));
    let mut absurd = frame("bad", 1, 1);
    let mut jpeg = absurd.data.to_vec();
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0xFF; 4]);
    absurd.data = jpeg.into();
    records.push(synthetic::frame_record(topic, &absurd));
    let mut wide = frame("bad", 2, 1);
    wide.width = 65_535;
    records.push(synthetic::frame_record(topic, &wide));
    let mut lying = frame("bad", 3, 1);
    lying.height = 480;
    records.push(synthetic::frame_record(topic, &lying));
    let future = synthetic::frame_record(topic, &frame("bad", 4, 1));
    let future = Record {
        headers: orstream_bus::Headers::new().with(headers::SCHEMA_VERSION, "2"),
        ..future
    };
    records.push(future);
    records.push(good(2));
    topic::publish(&bus, &records);

    let running = start(config.clone(), &bus);
    let stats = running.finish_when(|s| s.results() + s.unanswerable >= 12);
    assert_eq!(stats.ok, 3, "{stats:?}");
    assert_eq!(stats.dead_letters, 9, "{stats:?}");
    assert_eq!(stats.unanswerable, 4, "{stats:?}");

    let results = results(&bus, &config.results_topic);
    let good: Vec<&FrameResult> = results.iter().filter(|r| r.stream_id == "good").collect();
    assert_eq!(good.len(), 3);
    assert!(good.iter().all(|r| r.status == FrameStatus::Ok as i32));
    let bad: BTreeMap<u64, &FrameResult> = results
        .iter()
        .filter(|r| r.stream_id == "bad")
        .map(|r| (r.seq, r))
        .collect();
    assert_eq!(bad.len(), 5, "{bad:?}");
    assert_eq!(bad[&0].status, FrameStatus::DecodeError as i32);
    assert_eq!(bad[&1].status, FrameStatus::DecodeError as i32);
    assert!(
        bad[&1].status_detail.contains("65535x65535"),
        "{}",
        bad[&1].status_detail
    );
    assert_eq!(bad[&2].status, FrameStatus::Invalid as i32);
    assert_eq!(bad[&3].status, FrameStatus::DecodeError as i32);
    assert_eq!(bad[&4].status, FrameStatus::Invalid as i32);
    assert!(bad[&4].status_detail.contains("schema version"));

    let letters = read_all(&bus, &config.dlq_topic);
    assert_eq!(letters.len(), 9);
    for letter in &letters {
        assert_eq!(
            letter.headers.get(headers::DLQ_SOURCE_TOPIC),
            Some(config.frames_topic.as_bytes())
        );
        assert!(letter.headers.get(headers::DLQ_SOURCE_PARTITION).is_some());
        assert!(letter.headers.get(headers::DLQ_SOURCE_OFFSET).is_some());
        let reason = letter.headers.get(headers::DLQ_ERROR).unwrap();
        assert!(!reason.is_empty());
    }
    let keys: BTreeSet<&[u8]> = letters.iter().filter_map(|m| m.key.as_deref()).collect();
    for key in ["junk", "cut", "empty", "huge", "bad"] {
        assert!(keys.contains(key.as_bytes()), "{key} missing from the DLQ");
    }
}

#[test]
fn live_mode_answers_stale_frames_without_running_them() {
    let bus = Bus::memory();
    let mut config = config();
    config.mode = Mode::Live;
    config.latency_budget = Duration::from_secs(5);
    bus.create_topic(&config.frames_topic, 1, WAIT).unwrap();
    let topic = config.frames_topic.clone();
    let an_hour_ago = synthetic::now_ns() - 3_600_000_000_000;
    let mut records = Vec::new();
    for seq in 0..5 {
        records.push(synthetic::frame_record(
            &topic,
            &frame("old", seq, an_hour_ago),
        ));
    }
    topic::publish(&bus, &records);
    let running = start(config.clone(), &bus);
    // Fresh frames are stamped when they are sent, after the worker is up. Each comes from its own
    // stream: on a slow machine frames of one stream may queue behind a batch, and then the newest
    // of the stream rightly supersedes the rest (SKIPPED_OVERLOAD), which is not what this tests.
    std::thread::sleep(Duration::from_millis(300));
    let fresh: Vec<Record> = (0..5)
        .map(|n| {
            let stream = format!("fresh-{n}");
            synthetic::frame_record(&topic, &frame(&stream, 0, synthetic::now_ns()))
        })
        .collect();
    topic::publish(&bus, &fresh);
    let stats = running.finish_when(|s| s.results() >= 10);
    assert_eq!(stats.skipped_stale, 5, "{stats:?}");
    assert_eq!(stats.ok, 5, "{stats:?}");
    for r in results(&bus, &config.results_topic) {
        let expected = if r.stream_id == "old" {
            FrameStatus::SkippedStale
        } else {
            FrameStatus::Ok
        };
        assert_eq!(r.status, expected as i32, "{r:?}");
        if r.stream_id == "old" {
            assert!(r.instances.is_empty());
            assert!(r.status_detail.contains("deadline"));
        }
    }
}

/// A frame ingest's privacy gate withheld carries no image: it is answered REDACTED with the
/// gate's reason, without running, never dead-lettered, in order with the frames around it;
/// in live mode even when it is stale.
#[test]
fn frames_the_privacy_gate_withheld_are_answered_redacted_without_running() {
    use orstream_proto::{Encoding, Redaction, RedactionReason};
    for mode in [Mode::Archive, Mode::Live] {
        let bus = Bus::memory();
        let mut config = config();
        config.mode = mode;
        bus.create_topic(&config.frames_topic, 1, WAIT).unwrap();
        let now = synthetic::now_ns();
        let records: Vec<Record> = (0..9)
            .map(|seq| {
                let withheld = (3..6).contains(&seq);
                // Live: the withheld frames are an hour old, past any deadline.
                let capture = if withheld && mode == Mode::Live {
                    now - 3_600_000_000_000
                } else {
                    now
                };
                let mut f = frame("cam-0", seq, capture);
                if withheld {
                    f.encoding = Encoding::Unspecified as i32;
                    f.data = Default::default();
                    f.redaction = Some(Redaction {
                        reason: if seq == 4 {
                            RedactionReason::OutOfBody
                        } else {
                            RedactionReason::Margin
                        } as i32,
                        score: 0.9,
                        detail: "p(out of body) 0.90".into(),
                        model: None,
                    });
                }
                synthetic::frame_record(&config.frames_topic, &f)
            })
            .collect();
        topic::publish(&bus, &records);
        let stats = start(config.clone(), &bus).finish_when(|s| s.results() >= 9);
        // Live: the newest frames of the stream may supersede older ones (SKIPPED_OVERLOAD);
        // never a withheld one, which is answered before the batcher sees anything.
        let run = stats.ok + stats.skipped_overload;
        assert_eq!((stats.redacted, run), (3, 6), "{mode:?}: {stats:?}");
        assert_eq!(stats.dead_letters, 0);
        let results = results(&bus, &config.results_topic);
        check_exactly_once(&results, 1, 9);
        for r in &results {
            if (3..6).contains(&r.seq) {
                assert_eq!(r.status, FrameStatus::Redacted as i32, "{r:?}");
                assert!(r.instances.is_empty());
                let reason = if r.seq == 4 { "OUT_OF_BODY" } else { "MARGIN" };
                assert_eq!(
                    r.status_detail,
                    format!("withheld by ingest's privacy gate: {reason}: p(out of body) 0.90")
                );
            } else {
                assert!(
                    r.status == FrameStatus::Ok as i32
                        || (mode == Mode::Live && r.status == FrameStatus::SkippedOverload as i32),
                    "{r:?}"
                );
            }
        }
        assert!(read_all(&bus, &config.dlq_topic).is_empty());
    }
}

/// A live backlog of one stream (a burst read at once): the newest frames run, the older ones
/// are answered SKIPPED_OVERLOAD, every frame exactly once and in order.
#[test]
fn live_backlog_runs_the_newest_frames_of_a_stream() {
    let bus = Bus::memory();
    let mut config = config();
    config.mode = Mode::Live;
    config.latency_budget = Duration::from_secs(30);
    config.max_pending_per_stream = 2;
    bus.create_topic(&config.frames_topic, 1, WAIT).unwrap();
    let topic = config.frames_topic.clone();
    let records: Vec<Record> = (0..40)
        .map(|seq| synthetic::frame_record(&topic, &frame("burst", seq, synthetic::now_ns())))
        .collect();
    topic::publish(&bus, &records);
    let stats = start(config.clone(), &bus).finish_when(|s| s.results() >= 40);
    let results = results(&bus, &config.results_topic);
    let seqs: Vec<u64> = results.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (0..40).collect::<Vec<_>>(), "{stats:?}");
    assert!(stats.skipped_overload > 0, "{stats:?}");
    assert_eq!(stats.ok + stats.skipped_overload, 40, "{stats:?}");
    let last = results.last().unwrap();
    assert_eq!(
        last.status,
        FrameStatus::Ok as i32,
        "the newest frame must run"
    );
    for r in &results {
        if r.status == FrameStatus::SkippedOverload as i32 {
            assert!(r.status_detail.contains("superseded"), "{r:?}");
        }
    }
}

#[test]
fn a_worker_joining_and_leaving_mid_stream_loses_and_duplicates_nothing() {
    let bus = Bus::memory();
    let config = config();
    bus.create_topic(&config.frames_topic, 4, WAIT).unwrap();
    let all = frames(&config, 4, 30);
    let (first, rest) = all.split_at(40);
    topic::publish(&bus, first);
    let a = start(config.clone(), &bus);
    std::thread::sleep(Duration::from_millis(300));
    let b_config = InferConfig {
        transactional_id: unique("tx-b"),
        ..config.clone()
    };
    let b = start(b_config, &bus);
    let (second, third) = rest.split_at(40);
    topic::publish(&bus, second);
    std::thread::sleep(Duration::from_millis(500));
    // b leaves while frames keep coming.
    b.stop.cancel();
    let b_stats = b.thread.join().unwrap().unwrap();
    topic::publish(&bus, third);
    let a_stats = a.finish_when(|_| {
        let results = results(&bus, &config.results_topic);
        results.len() >= 120
    });
    eprintln!("rebalance figures: a {a_stats:?}\nb {b_stats:?}");
    let results = results(&bus, &config.results_topic);
    assert_eq!(results.len(), 120);
    check_exactly_once(&results, 4, 30);
    assert_eq!(
        a_stats.ok + b_stats.ok,
        120,
        "counted output matches the topic"
    );
}

#[test]
fn the_trace_context_follows_the_frame_to_its_result() {
    let bus = Bus::memory();
    let config = config();
    bus.create_topic(&config.frames_topic, 1, WAIT).unwrap();
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let record = synthetic::frame_record(&config.frames_topic, &frame("t", 0, synthetic::now_ns()))
        .with_header(headers::TRACEPARENT, traceparent);
    topic::publish(&bus, &[record]);
    start(config.clone(), &bus).finish_when(|s| s.results() >= 1);
    let messages = read_all(&bus, &config.results_topic);
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].headers.get(headers::TRACEPARENT),
        Some(traceparent.as_bytes())
    );
}

#[test]
fn at_least_once_delivers_every_result() {
    let bus = Bus::memory();
    let config = InferConfig {
        delivery: DeliveryGuarantee::AtLeastOnce,
        ..config()
    };
    bus.create_topic(&config.frames_topic, 2, WAIT).unwrap();
    topic::publish(&bus, &frames(&config, 2, 10));
    let running = start(config.clone(), &bus);
    let stats = running.finish_when(|s| s.results() >= 20);
    assert_eq!(stats.ok, 20);
    let results = results(&bus, &config.results_topic);
    check_exactly_once(&results, 2, 10);
}

#[test]
fn a_wide_decode_pool_out_of_order_never_stalls_the_batcher() {
    // Decode threads finish out of order; the batcher must keep taking input while it waits
    // for the missing ticket, or it deadlocks with the channel full of later ones.
    let bus = Bus::memory();
    let mut config = config();
    config.decode.workers = 4;
    config.decode.queue = 4;
    config.batch.max_batch_size = 2;
    bus.create_topic(&config.frames_topic, 1, WAIT).unwrap();
    topic::publish(&bus, &frames(&config, 2, 100));
    let running = start(config.clone(), &bus);
    let stats = running.finish_when(|s| s.results() >= 200);
    assert_eq!(stats.ok, 200);
    check_exactly_once(&results(&bus, &config.results_topic), 2, 100);
}
