//! `telemetry::init` end to end in one process: the global meter feeds `/metrics`, and with an
//! OTLP endpoint spans and metrics are posted to it; a span's trace id travels through message
//! headers and arrives in the exported spans.
//!
//! One test only: `init` installs process-wide state.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

use std::time::Duration;

use orstream::telemetry::{self, TelemetryConfig, checks};
use orstream_bus::Headers;
use orstream_bus::metrics;
use orstream_bus::trace;
use orstream_test_support::otlp::{contains, fake_collector};

fn hex_to_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn init_exports_spans_and_metrics_and_serves_the_endpoint() {
    let (collector, received) = fake_collector();
    let config = TelemetryConfig {
        service_name: "orstream-otlp-test".into(),
        service_instance_id: Some("otlp-test-instance-7".into()),
        log_filter: "warn".into(),
        otlp_endpoint: Some(format!("http://{collector}")),
        sampling_ratio: 1.0,
        otlp_metrics_interval: Duration::from_secs(3600),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..TelemetryConfig::default()
    };
    let guard = telemetry::init(&config).unwrap();
    let addr = guard.metrics_addr().unwrap();

    // A library records through the global meter.
    let consumed = metrics::MESSAGING_CONSUMED.build(&metrics::meter());
    consumed.add(7, &[]);
    let health = guard.health();
    health.set_ready(checks::RUNNING, true);

    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut response = agent.get(format!("http://{addr}/metrics")).call().unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body = response.body_mut().read_to_string().unwrap();
    assert!(
        body.lines()
            .any(|l| l == "messaging_client_consumed_messages_total 7"),
        "{body}"
    );
    assert_eq!(
        agent
            .get(format!("http://{addr}/readyz"))
            .call()
            .unwrap()
            .status()
            .as_u16(),
        200
    );

    // A frame's span, its context into the headers, a child on the other side.
    let mut headers = Headers::new();
    {
        let capture = tracing::info_span!("frame.capture");
        trace::inject_span(&mut headers, &capture);
        let store = tracing::info_span!("frame.store");
        assert!(trace::set_parent(&store, &headers));
        store.in_scope(|| tracing::info!("stored"));
    }
    let traceparent = std::str::from_utf8(headers.get(trace::TRACEPARENT).unwrap()).unwrap();
    let trace_id = hex_to_bytes(traceparent.split('-').nth(1).unwrap());
    assert_eq!(trace_id.len(), 16);

    guard.shutdown().unwrap();

    let mut traces = Vec::new();
    let mut metrics_posts = Vec::new();
    while let Ok(request) = received.recv_timeout(Duration::from_secs(30)) {
        assert_eq!(request.content_type, "application/x-protobuf");
        match request.path.as_str() {
            "/v1/traces" => traces.push(request.body),
            "/v1/metrics" => metrics_posts.push(request.body),
            other => panic!("unexpected post to {other}"),
        }
        if !traces.is_empty() && !metrics_posts.is_empty() {
            break;
        }
    }
    let spans: Vec<u8> = traces.concat();
    assert!(contains(&spans, b"frame.capture"), "capture span exported");
    assert!(contains(&spans, b"frame.store"), "store span exported");
    assert!(
        contains(&spans, b"orstream-otlp-test"),
        "service name exported"
    );
    assert!(
        contains(&spans, b"service.instance.id") && contains(&spans, b"otlp-test-instance-7"),
        "service instance id exported"
    );
    assert!(
        contains(&spans, &trace_id),
        "the header's trace id is the exported one"
    );
    let pushed: Vec<u8> = metrics_posts.concat();
    assert!(contains(&pushed, b"messaging.client.consumed.messages"));
}
