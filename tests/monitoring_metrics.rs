//! The monitoring files against the real services: ingest (a live test camera), infer and the
//! sink run over the real broker into PostgreSQL, a malformed frame goes in so a dead letter is
//! counted, and once results are stored every metric that `deploy/monitoring/metrics-used.txt`
//! lists (the metrics the Grafana dashboard and the Prometheus alert rules read) must appear
//! on one of the three `/metrics` endpoints, with its type. A metric renamed in the code, or
//! one the files use but nothing records, fails here.
//!
//! Needs `scripts/kafka.sh start` and `scripts/postgres.sh start`; fails (never skips) when
//! either is down.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

use std::collections::BTreeMap;
use std::time::Duration;

use orstream_bus::{Bus, Record};
use orstream_proto::{SCHEMA_VERSION, headers};
use orstream_record::BackendKind;
use orstream_test_support::kafka;
use orstream_test_support::metrics::{get, scraped};
use orstream_test_support::names::unique;
use orstream_test_support::service::Service;
use orstream_test_support::store::isolated;
use orstream_test_support::wait::showing;

const ORSTREAM: &str = env!("CARGO_BIN_EXE_orstream");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const LISTED: &str = include_str!("../deploy/monitoring/metrics-used.txt");
/// How long the run may take to produce every metric.
const STEP: Duration = Duration::from_secs(180);

/// Every metric an exposition declares (`# TYPE name type`), by name.
fn declared(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("# TYPE ")?.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

#[test]
fn every_metric_the_dashboard_and_the_rules_use_is_exported() {
    let listed: Vec<&str> = LISTED
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert!(!listed.is_empty());
    let bootstrap = kafka::config().bootstrap_servers;
    let bus = Bus::kafka(kafka::config()).unwrap();
    let store = isolated(BackendKind::Postgres).unwrap();
    let (frames, streams, results) = (
        unique("test.mon.frames"),
        unique("test.mon.streams"),
        unique("test.mon.results"),
    );
    for topic in [&frames, &streams, &results] {
        bus.create_topic(topic, 1, Duration::from_secs(30)).unwrap();
    }
    let service = |name: &'static str, config: &dyn Fn(std::net::SocketAddr) -> String| {
        Service::start(ORSTREAM, ROOT, name, config)
    };
    let telemetry =
        |listen| format!("[telemetry]\nmetrics_listen = \"{listen}\"\nlog_filter = \"info\"\n");
    let ingest = service("ingest", &|listen| {
        format!(
            "frames_topic = \"{frames}\"\nevents_topic = \"{streams}\"\ncreate_topics = false\n\
             [[streams]]\nstream_id = \"mon-cam\"\ncase_id = \"{}\"\nmode = \"live\"\n\
             source = {{ kind = \"test\", is_live = true }}\n\
             output = {{ width = 160, height = 120, max_fps = 10 }}\n\
             [kafka]\nbootstrap_servers = \"{bootstrap}\"\n{}",
            unique("mon-case"),
            telemetry(listen)
        )
    });
    let infer = service("infer", &|listen| {
        format!(
            "frames_topic = \"{frames}\"\nresults_topic = \"{results}\"\ndlq_topic = \"{}\"\n\
             group_id = \"{}\"\ntransactional_id = \"{}\"\nmode = \"live\"\n\
             [model]\npath = \"models/demo/seg.pt\"\ntorch_threads = 1\n\
             [kafka]\nbootstrap_servers = \"{bootstrap}\"\n{}",
            unique("test.mon.frames.dlq"),
            unique("test-mon-infer"),
            unique("test-mon-infer-tx"),
            telemetry(listen)
        )
    });
    let sink = service("sink", &|listen| {
        format!(
            "store = \"{}\"\ngroup_id = \"{}\"\nresults_topic = \"{results}\"\n\
             streams_topic = \"{streams}\"\nevents_topic = \"{}\"\ntracks_topic = \"{}\"\n\
             health_interval = \"500ms\"\n\
             [kafka]\nbootstrap_servers = \"{bootstrap}\"\n{}",
            store.url(),
            unique("test-mon-sink"),
            unique("test.mon.events"),
            unique("test.mon.tracks"),
            telemetry(listen)
        )
    });
    for s in [&ingest, &infer, &sink] {
        s.wait_ready(&format!("{} ready", s.name));
    }
    // A frame that is not a frame: infer dead-letters it, and counts it.
    let producer = bus.producer().unwrap();
    producer
        .send(
            &Record::new(frames.clone(), b"not a frame".to_vec())
                .with_key(b"mon-cam".to_vec())
                .with_header(headers::SCHEMA_VERSION, SCHEMA_VERSION),
            Duration::from_secs(10),
        )
        .unwrap()
        .wait(Duration::from_secs(30))
        .unwrap();

    let services = [&ingest, &infer, &sink];
    let exported = showing("every listed metric exported", STEP, || {
        let mut all = BTreeMap::new();
        for s in services {
            let Some((_, text)) = get(s.listen, "/metrics") else {
                return Err(format!("{}'s /metrics does not answer", s.name));
            };
            all.extend(declared(&text));
        }
        let stored = get(sink.listen, "/metrics")
            .and_then(|(_, text)| scraped(&text, "orstream_sink_results_stored_total"))
            .unwrap_or(0.0);
        let missing: Vec<&str> = listed
            .iter()
            .copied()
            .filter(|name| !all.contains_key(*name))
            .collect();
        if stored >= 20.0 && missing.is_empty() {
            Ok(all)
        } else {
            Err(format!(
                "{stored} results stored; not exported yet: {missing:?}"
            ))
        }
    });
    println!(
        "monitoring: {} metrics listed, all exported among {} declared by ingest, infer and the sink",
        listed.len(),
        exported.len()
    );
    for s in [sink, infer, ingest] {
        s.stop();
    }
}
