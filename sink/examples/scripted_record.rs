//! Builds a surgical record from scripted results over the in-process bus, to try
//! `orstream record` without cameras, a model or servers:
//!
//! ```sh
//! cargo run -p orstream-sink --example scripted_record -- record.db
//! orstream record --store sqlite://record.db cases
//! ```

use std::time::Duration;

use orstream_bus::Bus;
use orstream_record::Store;
use orstream_sink::{Sink, SinkConfig};
use orstream_test_support::script::Script;
use orstream_test_support::topic::{result_record, stream_record};
use tokio_util::sync::CancellationToken;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "orstream-record.db".to_owned());
    let config = SinkConfig {
        store: format!("sqlite://{path}"),
        ..SinkConfig::default()
    };
    let bus = Bus::memory();
    for topic in [&config.results_topic, &config.streams_topic] {
        bus.create_topic(topic, 3, Duration::from_secs(5))?;
    }
    // Two cases: a two-camera one and a shorter single-camera one.
    let scripts = [Script::new("case-0001", 2, 3_600), {
        let mut s = Script::new("case-0002", 1, 1_800);
        s.t0_ns += 7_200_000_000_000;
        s
    }];
    let producer = bus.producer()?;
    let mut total = 0;
    for script in &scripts {
        for e in script.all_stream_events() {
            producer
                .send(&stream_record(&config.streams_topic, &e), Duration::ZERO)?
                .wait(Duration::from_secs(5))?;
            total += 1;
        }
        for r in script.results() {
            producer
                .send(&result_record(&config.results_topic, &r), Duration::ZERO)?
                .wait(Duration::from_secs(5))?;
            total += 1;
        }
    }
    let sink = Sink::new(config.clone(), bus, Store::open(&config.store)?)?;
    let progress = sink.progress();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let worker = std::thread::spawn(move || sink.run(token));
    while progress.stats().messages < total {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.cancel();
    let stats = worker.join().map_err(|_| "the sink thread panicked")??;
    println!(
        "{path}: {} results, {} events, {} gaps",
        stats.results, stats.presences, stats.gaps
    );
    Ok(())
}
