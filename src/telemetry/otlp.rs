//! OTLP over HTTP with protobuf bodies: the exporters for spans and metrics, and the small
//! blocking HTTP client they post with.
//!
//! The SDK exports from threads of its own (the batch span processor, the periodic metric
//! reader) and drives the exporter's future there to completion, so a blocking client is the
//! right fit: no async runtime is needed, and no TLS stack or gRPC is linked. The collector the
//! spans go to is nearby (same host or network) and forwards onwards.

use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};

/// Largest response body read from the collector; its answers are small status messages.
const MAX_RESPONSE_BYTES: u64 = 1024 * 1024;

/// `<base>/<path>` without a doubled slash.
fn signal_url(base: &str, path: &str) -> String {
    format!("{}/{path}", base.trim_end_matches('/'))
}

/// The span exporter posting to `<base>/v1/traces`.
pub(crate) fn span_exporter(
    base: &str,
    timeout: Duration,
) -> Result<opentelemetry_otlp::SpanExporter> {
    let url = signal_url(base, "v1/traces");
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(UreqClient::new(timeout))
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .with_timeout(timeout)
        .build()
        .with_context(|| format!("creating the OTLP span exporter for {url}"))
}

/// The metric exporter posting to `<base>/v1/metrics` (cumulative temporality, as Prometheus
/// expects downstream of a collector).
pub(crate) fn metric_exporter(
    base: &str,
    timeout: Duration,
) -> Result<opentelemetry_otlp::MetricExporter> {
    let url = signal_url(base, "v1/metrics");
    opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_http_client(UreqClient::new(timeout))
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.clone())
        .with_timeout(timeout)
        .build()
        .with_context(|| format!("creating the OTLP metric exporter for {url}"))
}

/// A blocking HTTP/1.1 client for the exporters.
#[derive(Debug)]
pub(crate) struct UreqClient {
    agent: ureq::Agent,
}

impl UreqClient {
    pub(crate) fn new(timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            // The exporter classifies statuses itself (retry on 429/503, give up on 400).
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .new_agent();
        Self { agent }
    }
}

#[async_trait]
impl HttpClient for UreqClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let request = ureq::http::Request::from_parts(parts, body.as_ref());
        let mut response = self.agent.run(request)?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()?;
        let mut answer = Response::builder().status(status).body(Bytes::from(body))?;
        *answer.headers_mut() = headers;
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            signal_url("http://c:4318", "v1/traces"),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            signal_url("http://c:4318/", "v1/metrics"),
            "http://c:4318/v1/metrics"
        );
        assert_eq!(
            signal_url("http://c:4318/otlp/", "v1/traces"),
            "http://c:4318/otlp/v1/traces"
        );
    }

    #[test]
    fn the_client_posts_the_body_and_returns_any_status() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            // Read until the 5-byte body after the blank line has arrived.
            loop {
                let n = stream.read(&mut buf).unwrap();
                seen.extend_from_slice(&buf[..n]);
                if let Some(at) = seen.windows(4).position(|w| w == b"\r\n\r\n")
                    && (seen.len() >= at + 4 + 5 || n == 0)
                {
                    break;
                }
            }
            stream
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nretry-after: 1\r\n\r\nbusy")
                .unwrap();
            String::from_utf8_lossy(&seen).into_owned()
        });
        let client = UreqClient::new(Duration::from_secs(10));
        let request = Request::post(format!("http://{addr}/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(Bytes::from_static(b"hello"))
            .unwrap();
        let response = futures::executor::block_on(client.send_bytes(request)).unwrap();
        assert_eq!(response.status().as_u16(), 503);
        assert_eq!(response.body().as_ref(), b"busy");
        assert_eq!(response.headers()["retry-after"], "1");
        let seen = server.join().unwrap();
        assert!(seen.starts_with("POST /v1/traces HTTP/1.1\r\n"), "{seen}");
        assert!(seen.ends_with("hello"), "{seen}");
    }
}
