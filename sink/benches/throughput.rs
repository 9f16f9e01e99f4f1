//! Sink throughput and lag, into PostgreSQL and SQLite.
//!
//! For each store and stream count it runs two measurements over the same scripted results
//! (tools and organs coming and going, gaps, a reconnect):
//! - paced: `streams` cameras at 30 fps of results in real time for `--seconds`, published
//!   while the sink runs; the lag is from a result's publication (message timestamp) to the
//!   commit of the transaction that stored it (quantiles after a 2 s warm-up; max over all).
//! - backlog: the same amount published first, then drained as fast as the sink can; the
//!   ratio to the paced rate is the headroom (three times the paced amount, timed from the
//!   moment the sink is ready).
//!
//! ```sh
//! cargo bench -p orstream-sink --bench throughput                 # Kafka + both stores
//! cargo bench -p orstream-sink --bench throughput -- --bus memory --seconds 5 --streams 8,32
//! ```
//! Needs the broker (`--bus kafka`, the default) and PostgreSQL; prints one line per run.

#![allow(clippy::expect_used)] // a benchmark that cannot run reports it by panicking

use std::time::{Duration, Instant};

use orstream_bus::Bus;
use orstream_record::{BackendKind, Store};
use orstream_sink::{Progress, Sink, SinkConfig, Stats};
use orstream_test_support::names::unique;
use orstream_test_support::script::Script;
use orstream_test_support::store::isolated;
use orstream_test_support::topic::{result_record, stream_record};
use tokio_util::sync::CancellationToken;

const TIMEOUT: Duration = Duration::from_secs(300);

struct Options {
    kafka: bool,
    seconds: u64,
    streams: Vec<usize>,
    stores: Vec<BackendKind>,
}

fn options() -> Options {
    let mut o = Options {
        kafka: true,
        seconds: 10,
        streams: vec![8, 32],
        stores: vec![BackendKind::Postgres, BackendKind::Sqlite],
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--bus" => o.kafka = value != "memory",
            "--seconds" => o.seconds = value.parse().unwrap_or(o.seconds),
            "--streams" => {
                o.streams = value.split(',').filter_map(|s| s.parse().ok()).collect();
            }
            "--store" => {
                o.stores = value
                    .split(',')
                    .map(|s| {
                        if s.starts_with("sqlite") {
                            BackendKind::Sqlite
                        } else {
                            BackendKind::Postgres
                        }
                    })
                    .collect();
            }
            // cargo bench passes --bench; anything else is ignored too.
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

fn bus(kafka: bool) -> Bus {
    if !kafka {
        return Bus::memory();
    }
    let config = orstream_test_support::kafka::settings();
    if let Err(err) = config.probe(Duration::from_secs(3)) {
        panic!("{err}: run `scripts/kafka.sh start`, or pass --bus memory");
    }
    Bus::kafka(config).expect("Kafka clients")
}

struct Run {
    stats: Stats,
    /// Messages stored before the measurement began (backlog: by the time it was ready).
    already: u64,
    wall: Duration,
    p50: Option<u64>,
    p99: Option<u64>,
}

/// Publishes `script` (paced at its frame rate when `paced`) while a sink stores it.
fn run(bus: &Bus, kind: BackendKind, script: &Script, paced: bool) -> Run {
    let store = isolated(kind).unwrap_or_else(|e| panic!("{e}"));
    let id = unique("bench");
    let config = SinkConfig {
        store: store.url().to_owned(),
        group_id: id.clone(),
        results_topic: format!("bench.results.{id}"),
        streams_topic: format!("bench.streams.{id}"),
        events_topic: format!("bench.events.{id}"),
        kafka: orstream_test_support::kafka::settings(),
        ..SinkConfig::default()
    };
    for t in [&config.results_topic, &config.streams_topic] {
        bus.create_topic(t, 6, TIMEOUT).expect("topic");
    }
    let total = publish_events(bus, &config, script);
    let results = script.results();
    let expected = total + results.len() as u64;

    let start_sink =
        |config: SinkConfig| -> (Progress, CancellationToken, std::thread::JoinHandle<Stats>) {
            let sink = Sink::new(
                config,
                bus.clone(),
                Store::open(store.url()).expect("store"),
            )
            .expect("sink");
            let progress = sink.progress();
            let stop = CancellationToken::new();
            let token = stop.clone();
            let handle = std::thread::spawn(move || sink.run(token).expect("sink run"));
            (progress, stop, handle)
        };

    let wait_ready = |progress: &Progress| {
        // Joining the group and moving to the store's offsets is start-up, not throughput.
        let deadline = Instant::now() + TIMEOUT;
        while !progress.is_ready() {
            assert!(Instant::now() < deadline, "the sink never became ready");
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    let (began, already, (progress, stop, handle)) = if paced {
        let sink = start_sink(config.clone());
        wait_ready(&sink.0);
        let began = Instant::now();
        // The first two seconds warm up (partition fetchers start after the seek): the lag
        // reported is the steady state's; the maximum (in the stats) includes the warm-up.
        let progress = sink.0.clone();
        let warm_up = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            progress.reset_lags();
        });
        publish_results(bus, &config.results_topic, &results, script, true);
        warm_up.join().expect("warm-up thread");
        (began, 0, sink)
    } else {
        publish_results(bus, &config.results_topic, &results, script, false);
        let sink = start_sink(config.clone());
        wait_ready(&sink.0);
        (Instant::now(), sink.0.stats().messages, sink)
    };
    let deadline = Instant::now() + TIMEOUT;
    while progress.stats().messages < expected {
        assert!(
            Instant::now() < deadline,
            "the sink did not catch up: {:?}",
            progress.stats()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let wall = began.elapsed();
    let (p50, p99) = (
        progress.lag_quantile_ms(0.5),
        progress.lag_quantile_ms(0.99),
    );
    stop.cancel();
    let stats = handle.join().expect("sink thread");
    Run {
        stats,
        already,
        wall,
        p50,
        p99,
    }
}

fn publish_events(bus: &Bus, config: &SinkConfig, script: &Script) -> u64 {
    let producer = bus.producer().expect("producer");
    let events = script.all_stream_events();
    for e in &events {
        producer
            .send(&stream_record(&config.streams_topic, e), TIMEOUT)
            .expect("send")
            .wait(TIMEOUT)
            .expect("delivery");
    }
    events.len() as u64
}

/// Publishes results; paced: one frame of every stream per frame period, like cameras.
fn publish_results(
    bus: &Bus,
    topic: &str,
    results: &[orstream_proto::FrameResult],
    script: &Script,
    paced: bool,
) {
    let producer = bus.producer().expect("producer");
    let period = Duration::from_secs(1) / script.fps;
    let began = Instant::now();
    let mut handles = Vec::with_capacity(results.len());
    for (i, chunk) in results.chunks(script.streams).enumerate() {
        if paced {
            let due = began + period * i as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        for r in chunk {
            handles.push(
                producer
                    .send(&result_record(topic, r), TIMEOUT)
                    .expect("send"),
            );
        }
    }
    for h in handles {
        h.wait(TIMEOUT).expect("delivery");
    }
}

fn main() {
    let o = options();
    let bus = bus(o.kafka);
    println!(
        "sink throughput: bus={} paced runs last {} s of video at 30 fps per stream",
        if o.kafka { "kafka" } else { "memory" },
        o.seconds
    );
    for &kind in &o.stores {
        for &streams in &o.streams {
            let script = Script::new(&unique("bench"), streams, o.seconds * 30);
            let rate = streams as f64 * 30.0;
            let paced = run(&bus, kind, &script, true);
            // The backlog is three times as long, so start-up weighs little.
            let big = Script::new(&unique("bench"), streams, o.seconds * 90);
            let backlog = run(&bus, kind, &big, false);
            let secs = backlog.wall.as_secs_f64();
            let s = &backlog.stats;
            // The drain measured excludes what was stored before the sink reported ready.
            let share = 1.0 - backlog.already as f64 / s.messages.max(1) as f64;
            println!(
                "store={:<10} streams={streams:<3} paced: {rate:.0} results/s lag_p50={}ms \
                 lag_p99={}ms lag_max={}ms txns={} | backlog: {:.0} results/s {:.0} rows/s \
                 {:.0} events/s ({} results, {} rows, {} events+gaps in {:.2} s) headroom={:.1}x",
                kind.name(),
                paced.p50.map_or("-".into(), |v| v.to_string()),
                paced.p99.map_or("-".into(), |v| v.to_string()),
                paced.stats.max_lag_ms,
                paced.stats.transactions,
                s.results as f64 * share / secs,
                s.rows as f64 * share / secs,
                (s.presences + s.gaps) as f64 * share / secs,
                s.results,
                s.rows,
                s.presences + s.gaps,
                secs,
                s.results as f64 * share / secs / rate,
            );
        }
    }
}
