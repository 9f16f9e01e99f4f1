//! The metrics and health endpoint over real HTTP on 127.0.0.1: a counter shows up in
//! `/metrics`, readiness follows its checks, liveness follows the heartbeat.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use orstream::telemetry::{Health, ManualClock, PrometheusMetrics, Server, checks};
use orstream_bus::metrics::{self, attr, value};

/// Status and body of `GET http://addr/path`; the endpoint must answer.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    orstream_test_support::metrics::get(addr, path)
        .unwrap_or_else(|| panic!("no answer from http://{addr}{path}"))
}

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

#[test]
fn metrics_serves_a_counter_after_it_is_incremented() {
    let (provider, prometheus) = PrometheusMetrics::provider("orstream-test").unwrap();
    let server = Server::start(
        localhost(),
        Health::new(Duration::from_secs(30)),
        Some(prometheus),
    )
    .unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);

    let meter = provider.meter(metrics::METER_NAME);
    let published = metrics::INGEST_FRAMES_PUBLISHED.build(&meter);
    let dropped = metrics::INGEST_FRAMES_DROPPED.build(&meter);
    let forward = metrics::INFER_FORWARD_DURATION.build(&meter);
    published.add(3, &[]);
    dropped.add(2, &[KeyValue::new(attr::REASON, value::QUEUE_FULL)]);
    forward.record(0.012, &[]);

    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200);
    assert!(
        body.lines()
            .any(|l| l == "orstream_ingest_frames_published_total 3"),
        "{body}"
    );
    assert!(
        body.lines()
            .any(|l| l == "orstream_ingest_frames_dropped_total{orstream_reason=\"queue_full\"} 2"),
        "{body}"
    );
    assert!(
        body.contains("orstream_infer_forward_duration_seconds_bucket{le=\"0.02\"} 1"),
        "{body}"
    );
    assert!(body.contains("service_name=\"orstream-test\""), "{body}");

    published.add(1, &[]);
    let (_, body) = get(addr, "/metrics");
    assert!(
        body.lines()
            .any(|l| l == "orstream_ingest_frames_published_total 4"),
        "{body}"
    );
}

#[test]
fn readiness_flips_with_its_checks() {
    let health = Health::new(Duration::from_secs(30));
    let server = Server::start(localhost(), health.clone(), None).unwrap();
    let addr = server.local_addr();

    let (status, body) = get(addr, "/readyz");
    assert_eq!(status, 503, "nothing reported yet: {body}");

    health.set_ready(checks::PARTITIONS_ASSIGNED, true);
    health.set_ready(checks::DATABASE, true);
    let (status, body) = get(addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"ready\""), "{body}");

    health.set_ready(checks::DATABASE, false);
    let (status, body) = get(addr, "/readyz");
    assert_eq!(status, 503, "{body}");
    let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(parsed["failing"], serde_json::json!([checks::DATABASE]));
    assert_eq!(parsed["checks"][checks::PARTITIONS_ASSIGNED], true);

    health.set_ready(checks::DATABASE, true);
    let (status, _) = get(addr, "/readyz");
    assert_eq!(status, 200);

    // No metrics were given to this server.
    assert_eq!(get(addr, "/metrics").0, 404);
}

#[test]
fn liveness_fails_when_heartbeats_stop() {
    let clock = ManualClock::new();
    let health = Health::with_clock(Duration::from_secs(5), Arc::new(clock.clone()));
    let server = Server::start(localhost(), health.clone(), None).unwrap();
    let addr = server.local_addr();

    assert_eq!(get(addr, "/healthz").0, 200);
    clock.advance(Duration::from_secs(4));
    health.beat();
    clock.advance(Duration::from_secs(4));
    assert_eq!(get(addr, "/healthz").0, 200, "8 s in, but beaten 4 s ago");

    clock.advance(Duration::from_secs(2));
    let (status, body) = get(addr, "/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"status\":\"stale\""), "{body}");

    health.beat();
    assert_eq!(get(addr, "/healthz").0, 200);
}

#[test]
fn the_endpoint_stops_when_dropped() {
    let server = Server::start(localhost(), Health::new(Duration::from_secs(30)), None).unwrap();
    let addr = server.local_addr();
    assert_eq!(get(addr, "/healthz").0, 200);
    drop(server);
    // The listener closes on tiny_http's accept thread just after the drop; allow it ample time.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "still accepting on {addr}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
