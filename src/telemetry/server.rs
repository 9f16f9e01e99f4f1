//! The service's small HTTP endpoint: `/metrics`, `/healthz`, `/readyz`.
//!
//! It runs on one OS thread of its own (tiny_http reads requests on its own threads and hands
//! them over complete), so it answers while the service's threads and runtimes are busy or
//! stuck, which is what a liveness probe needs. Scrapes and probes are rare and small; they are
//! answered one at a time.

use std::net::SocketAddr;

use anyhow::{Result, anyhow};

use super::health::Health;
use super::prometheus::PrometheusMetrics;

/// Content type of the Prometheus text exposition format.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// A running endpoint; stops when dropped.
#[derive(Debug)]
pub struct Server(orstream_shell::http::Endpoint);

impl Server {
    /// Binds `listen` (port 0 picks a free one) and serves `health` and, when given, `metrics`.
    pub fn start(
        listen: SocketAddr,
        health: Health,
        metrics: Option<PrometheusMetrics>,
    ) -> Result<Self> {
        let endpoint = orstream_shell::http::Endpoint::start(
            "metrics and health endpoint",
            listen,
            "orstream-http",
            move |http| serve(http, &health, metrics.as_ref()),
        )
        .map_err(|e| anyhow!(e))?;
        tracing::info!(addr = %endpoint.local_addr(), "serving /metrics, /healthz and /readyz");
        Ok(Self(endpoint))
    }

    /// The address bound: with port 0 asked for, the port the system chose.
    pub fn local_addr(&self) -> SocketAddr {
        self.0.local_addr()
    }
}

fn serve(http: &tiny_http::Server, health: &Health, metrics: Option<&PrometheusMetrics>) {
    // Ends when `unblock` is called.
    for request in http.incoming_requests() {
        let (status, content_type, body) = answer(request.method(), request.url(), health, metrics);
        let mut response = tiny_http::Response::from_string(body).with_status_code(status);
        if let Ok(header) = tiny_http::Header::from_bytes("Content-Type", content_type) {
            response.add_header(header);
        }
        if let Ok(header) = tiny_http::Header::from_bytes("Cache-Control", "no-store") {
            response.add_header(header);
        }
        if let Err(error) = request.respond(response) {
            // The prober hung up; nothing to do for it.
            tracing::debug!(%error, "answering a metrics or health request");
        }
    }
}

/// Status, content type and body for one request.
fn answer(
    method: &tiny_http::Method,
    url: &str,
    health: &Health,
    metrics: Option<&PrometheusMetrics>,
) -> (u16, &'static str, String) {
    if !matches!(method, tiny_http::Method::Get | tiny_http::Method::Head) {
        return (405, TEXT, "only GET and HEAD\n".to_owned());
    }
    let path = url.split_once('?').map_or(url, |(path, _)| path);
    match path {
        "/metrics" => match metrics {
            Some(metrics) => match metrics.render() {
                Ok(text) => (200, PROMETHEUS_TEXT, text),
                Err(error) => {
                    tracing::warn!(%error, "rendering metrics");
                    (500, TEXT, format!("rendering metrics: {error}\n"))
                }
            },
            None => (
                404,
                TEXT,
                "metrics are not served by this process\n".to_owned(),
            ),
        },
        "/healthz" | "/livez" => {
            let liveness = health.liveness();
            let status = if liveness.alive { 200 } else { 503 };
            (status, JSON, liveness.to_json())
        }
        "/readyz" => {
            let readiness = health.readiness();
            let status = if readiness.ready() { 200 } else { 503 };
            (status, JSON, readiness.to_json())
        }
        "/" => (
            200,
            TEXT,
            "orstream: /metrics (Prometheus), /healthz (liveness), /readyz (readiness)\n"
                .to_owned(),
        ),
        _ => (404, TEXT, "not found\n".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn routes() {
        let health = Health::new(Duration::from_secs(30));
        let get = tiny_http::Method::Get;
        assert_eq!(answer(&get, "/healthz", &health, None).0, 200);
        assert_eq!(answer(&get, "/readyz", &health, None).0, 503);
        health.set_ready("running", true);
        assert_eq!(answer(&get, "/readyz?verbose", &health, None).0, 200);
        assert_eq!(answer(&get, "/metrics", &health, None).0, 404);
        assert_eq!(answer(&get, "/nope", &health, None).0, 404);
        assert_eq!(
            answer(&tiny_http::Method::Post, "/readyz", &health, None).0,
            405
        );
    }
}
