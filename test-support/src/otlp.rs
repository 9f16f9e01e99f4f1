//! A fake OTLP/HTTP collector: what services export over OTLP, as a test sees it.

use std::net::SocketAddr;
use std::sync::mpsc;

/// One request the fake collector received.
pub struct Received {
    /// The request's path (`/v1/traces`, `/v1/metrics`, `/v1/logs`).
    pub path: String,
    /// Its content type.
    pub content_type: String,
    /// Its body (protobuf).
    pub body: Vec<u8>,
}

/// An OTLP/HTTP receiver on 127.0.0.1 that answers 200 to everything and reports each request.
/// Its thread lives as long as the test process.
pub fn fake_collector() -> (SocketAddr, mpsc::Receiver<Received>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let addr = server.server_addr().to_ip().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for mut request in server.incoming_requests() {
            let mut body = Vec::new();
            std::io::Read::read_to_end(request.as_reader(), &mut body).unwrap();
            let content_type = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("content-type"))
                .map(|h| h.value.as_str().to_owned())
                .unwrap_or_default();
            let path = request.url().to_owned();
            let _ = tx.send(Received {
                path,
                content_type,
                body,
            });
            let _ = request.respond(tiny_http::Response::empty(200));
        }
    });
    (addr, rx)
}

/// Whether `needle` occurs in `haystack` (an exported body, a log): OTLP bodies are protobuf,
/// where text fields stand as they are.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
