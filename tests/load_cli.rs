//! `orstream load` against the real broker and PostgreSQL: an infer worker and a sink on
//! topics of the run's own, the load tool playing two cameras into them. The report (its JSON)
//! must account for every frame: each published frame answered once, none lost or duplicated,
//! each recorded, and every latency measured for every frame. No figure is judged here: the
//! latencies are the benchmark's (`scripts/bench-latency.sh`), printed, never asserted.
//!
//! Needs `scripts/kafka.sh start` and `scripts/postgres.sh start`; fails (never skips) when
//! either is down.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

use std::process::Command;

use orstream_record::BackendKind;
use orstream_test_support::names::unique;
use orstream_test_support::service::Service;
use orstream_test_support::store::isolated;
use orstream_test_support::{kafka, process};

const ORSTREAM: &str = env!("CARGO_BIN_EXE_orstream");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn service(name: &'static str, config: impl FnOnce(std::net::SocketAddr) -> String) -> Service {
    Service::start(ORSTREAM, ROOT, name, config)
}

/// `orstream load ARGS` with no `ORSTREAM_*` variables of the caller; its status and output.
fn load(args: &[&str]) -> (Option<i32>, String) {
    let out = process::without_orstream_variables(
        Command::new(ORSTREAM)
            .current_dir(ROOT)
            .arg("load")
            .args(args),
    )
    .output()
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn a_load_run_accounts_for_every_frame_through_infer_and_the_sink() {
    let bootstrap = kafka::config().bootstrap_servers;
    let store = isolated(BackendKind::Postgres).unwrap();
    let (frames, streams, results) = (
        unique("test.load.frames"),
        unique("test.load.streams"),
        unique("test.load.results"),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("load.toml");
    std::fs::write(
        &config,
        format!(
            "frames_topic = \"{frames}\"\nstreams_topic = \"{streams}\"\n\
             results_topic = \"{results}\"\ntopic_partitions = 2\n\
             [kafka]\nbootstrap_servers = \"{bootstrap}\"\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let (status, out) = load(&["--config", config, "--prepare"]);
    assert_eq!(status, Some(0), "{out}");

    let mut infer = service("infer", |listen| {
        format!(
            "frames_topic = \"{frames}\"\nresults_topic = \"{results}\"\ndlq_topic = \"{}\"\n\
             group_id = \"{}\"\ntransactional_id = \"{}\"\nmode = \"live\"\n\
             [model]\npath = \"models/demo/seg.pt\"\ntorch_threads = 1\n\
             [kafka]\nbootstrap_servers = \"{bootstrap}\"\n\
             [telemetry]\nmetrics_listen = \"{listen}\"\nlog_filter = \"info\"\n",
            unique("test.load.frames.dlq"),
            unique("test-load-infer"),
            unique("test-load-infer-tx"),
        )
    });
    let mut sink = service("sink", |listen| {
        format!(
            "store = \"{}\"\ngroup_id = \"{}\"\nresults_topic = \"{results}\"\n\
             streams_topic = \"{streams}\"\nevents_topic = \"{}\"\ntracks_topic = \"{}\"\n\
             [kafka]\nbootstrap_servers = \"{bootstrap}\"\n\
             [telemetry]\nmetrics_listen = \"{listen}\"\nlog_filter = \"info\"\n",
            store.url(),
            unique("test-load-sink"),
            unique("test.load.events"),
            unique("test.load.tracks"),
        )
    });
    infer.wait_ready("infer ready");
    sink.wait_ready("the sink ready");

    let json = dir.path().join("report.json");
    let (status, out) = load(&[
        "--config",
        config,
        "--store",
        store.url(),
        "--cameras",
        "2",
        "--fps",
        "8",
        "--duration",
        "3s",
        "--size",
        "320x180",
        "--drain",
        "120s",
        "--json",
        json.to_str().unwrap(),
    ]);
    infer.still_running();
    sink.still_running();
    println!("{out}");
    assert_eq!(
        status,
        Some(0),
        "{out}\ninfer:\n{}\nsink:\n{}",
        infer.log(),
        sink.log()
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let frames = &report["frames"];
    let count = |v: &serde_json::Value| v.as_u64().unwrap();
    // 2 cameras x 8 fps x 3 s.
    assert_eq!(count(&frames["published"]), 48, "{report:#}");
    assert_eq!(count(&frames["lost"]), 0, "{report:#}");
    assert_eq!(count(&frames["duplicated"]), 0, "{report:#}");
    assert_eq!(count(&frames["not_recorded"]), 0, "{report:#}");
    assert_eq!(
        count(&frames["ok"]) + count(&frames["skipped"]) + count(&frames["failed"]),
        48,
        "{report:#}"
    );
    for latency in ["stamped", "visible", "recorded"] {
        assert_eq!(
            count(&report[latency]["count"]),
            48,
            "{latency}: {report:#}"
        );
        let (p50, max) = (
            report[latency]["p50_ms"].as_f64().unwrap(),
            report[latency]["max_ms"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p50 <= max, "{latency}: {report:#}");
    }
    // A result is visible only after it was stamped, and recorded after it was visible to the
    // sink: the medians keep that order (each is a median over the same frames).
    let p50 = |latency: &str| report[latency]["p50_ms"].as_f64().unwrap();
    assert!(p50("stamped") <= p50("visible"), "{report:#}");
    assert!(
        report["stages"]["mean_batch"].as_f64().unwrap() >= 1.0,
        "{report:#}"
    );
    // What the record holds for the run's case agrees.
    let mut record = store.open().unwrap();
    let case = report["played"]["case_id"].as_str().unwrap().to_owned();
    let rows = record
        .query(
            "SELECT COUNT(*) FROM frames WHERE case_id = $1",
            &[case.as_str().into()],
        )
        .unwrap();
    assert_eq!(rows[0][0].int(), 48);
    sink.stop();
    infer.stop();
}

#[test]
fn a_bad_plan_is_refused_naming_what_is_wrong() {
    for (args, named) in [
        (&["--cameras", "0"][..], "cameras"),
        (&["--fps", "NaN"][..], "fps"),
        (&["--case", "bad\tcase"][..], "case"),
        (&["--size", "640by360"][..], "WIDTHxHEIGHT"),
        (&["--quality", "0"][..], "quality"),
    ] {
        let (status, out) = load(args);
        assert_ne!(status, Some(0), "{args:?} was taken:\n{out}");
        assert!(out.contains(named), "{args:?}: {out}");
    }
}
