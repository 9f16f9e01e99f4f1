//! Observability of the services as separate `orstream` processes over the real Kafka broker
//! (`scripts/kafka.sh start`) and PostgreSQL (`scripts/postgres.sh start`); fails, never
//! skips, when they do not answer.
//!
//! One run of the pipeline, shared by the first three tests: `orstream ingest` publishes a
//! short test pattern (archive mode, every frame), then `orstream infer` (the tiny semantic
//! fixture model) and `orstream sink` (an SQLite record) process it. Each reads a `[telemetry]`
//! table from its configuration file: every trace sampled, logs at debug level, spans and
//! metrics posted to an OTLP/HTTP receiver inside this test. On that run:
//!
//! - every frame's `frame capture` span (ingest) and its `store result` span (sink) are in one
//!   trace, the sink's span a child of the frame's span or of an inference span of that trace;
//!   the sink's `sink transaction` span is in a frame's trace; each frame's `infer.frame` span
//!   is a child of its capture span and the parent of its store span, and `infer.batch` spans
//!   link to the frames they ran;
//! - neither the logs of the three processes nor any exported span carries JPEG bytes
//!   (`FF D8 FF`, or base64 `/9j/`) or the run's case id;
//! - the sink's `/metrics` counts every result stored and its capture-to-record latency, and
//!   ingest's metrics (pushed over OTLP when it exits) count every frame captured and
//!   published.
//!
//! The readiness test puts TCP proxies in front of the broker and the database: the sink's
//! `/readyz` says not ready while the broker cannot be reached (the proxy covers the bootstrap
//! connection only, so the broker is away at start and then comes) and while the database is
//! cut off, and ready again once each is back. The live-stream test runs `orstream ingest` on a
//! live test pattern: ready (`broker`, `running`), alive, and its `/metrics` counting frames
//! captured, published and encoded and the stream as live.
//!
//! The broker-restart test starts a broker of its own (so stopping it disturbs no other test)
//! and stops and starts it under a running infer worker and sink with frames flowing: both turn
//! not ready (the broker check failing) and ready again, and every frame still gets exactly one
//! result.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails at the first broken expectation, with its message"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use orstream_bus::Bus;
use orstream_test_support::metrics::{free_port, get, scraped};
use orstream_test_support::names::unique;
use orstream_test_support::wait::wait_for;
use orstream_test_support::{kafka, process};
use prost::Message as _;

/// Frames the test pattern produces.
const FRAMES: u64 = 12;
/// Longest wait for any one step of a run.
const STEP: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// The OTLP receiver.
// ---------------------------------------------------------------------------------------------

/// One request an OTLP/HTTP receiver got: its path and body.
type Request = (String, Vec<u8>);

/// What an OTLP/HTTP receiver on 127.0.0.1 got, in order of arrival.
#[derive(Clone, Default)]
struct Received {
    bodies: Arc<Mutex<Vec<Request>>>,
}

impl Received {
    fn start() -> (SocketAddr, Self) {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let addr = server.server_addr().to_ip().unwrap();
        let received = Self::default();
        let bodies = Arc::clone(&received.bodies);
        std::thread::spawn(move || {
            for mut request in server.incoming_requests() {
                let mut body = Vec::new();
                if request.as_reader().read_to_end(&mut body).is_ok() {
                    let path = request.url().to_owned();
                    bodies.lock().unwrap().push((path, body));
                }
                let _answered = request.respond(tiny_http::Response::empty(200));
            }
        });
        (addr, received)
    }

    fn bodies(&self, path: &str) -> Vec<Vec<u8>> {
        self.bodies
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, body)| body.clone())
            .collect()
    }
}

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    links: Vec<Vec<u8>>,
    attributes: Vec<KeyValue>,
    /// Names and attribute values of the span's events.
    event_texts: Vec<Vec<u8>>,
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
}

/// Every byte string an attribute value holds (strings, bytes, nested values).
fn value_bytes(value: &AnyValue, out: &mut Vec<Vec<u8>>) {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => out.push(s.as_bytes().to_vec()),
        Some(any_value::Value::BytesValue(b)) => out.push(b.clone()),
        Some(any_value::Value::ArrayValue(a)) => {
            a.values.iter().for_each(|v| value_bytes(v, out));
        }
        Some(any_value::Value::KvlistValue(l)) => {
            for kv in &l.values {
                out.push(kv.key.as_bytes().to_vec());
                if let Some(v) = &kv.value {
                    value_bytes(v, out);
                }
            }
        }
        _ => {}
    }
}

fn attribute_bytes(attributes: &[KeyValue]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for kv in attributes {
        out.push(kv.key.as_bytes().to_vec());
        if let Some(v) = &kv.value {
            value_bytes(v, &mut out);
        }
    }
    out
}

fn spans(received: &Received) -> Vec<Span> {
    let mut spans = Vec::new();
    for body in received.bodies("/v1/traces") {
        let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        for resource_spans in request.resource_spans {
            let resource = resource_spans.resource.unwrap_or_default();
            let service = string_attribute(&resource.attributes, "service.name").unwrap();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    let mut event_texts = Vec::new();
                    for event in &span.events {
                        event_texts.push(event.name.as_bytes().to_vec());
                        event_texts.extend(attribute_bytes(&event.attributes));
                    }
                    spans.push(Span {
                        service: service.clone(),
                        name: span.name,
                        trace_id: span.trace_id,
                        span_id: span.span_id,
                        parent_span_id: span.parent_span_id,
                        links: span.links.into_iter().map(|l| l.trace_id).collect(),
                        attributes: span.attributes,
                        event_texts,
                    });
                }
            }
        }
    }
    spans
}

/// The last value each sum metric of `service` was exported with (the exports are
/// cumulative), summed over its attribute sets.
fn sums(received: &Received, service: &str) -> BTreeMap<String, f64> {
    let mut latest: BTreeMap<(String, String), f64> = BTreeMap::new();
    for body in received.bodies("/v1/metrics") {
        let request = ExportMetricsServiceRequest::decode(body.as_slice()).unwrap();
        for resource_metrics in request.resource_metrics {
            let resource = resource_metrics.resource.unwrap_or_default();
            if string_attribute(&resource.attributes, "service.name").as_deref() != Some(service) {
                continue;
            }
            for scope in resource_metrics.scope_metrics {
                for m in scope.metrics {
                    let Some(metric::Data::Sum(sum)) = m.data else {
                        continue;
                    };
                    for point in sum.data_points {
                        let value = match point.value {
                            Some(number_data_point::Value::AsInt(v)) => v as f64,
                            Some(number_data_point::Value::AsDouble(v)) => v,
                            None => continue,
                        };
                        let labels = format!("{:?}", point.attributes);
                        latest.insert((m.name.clone(), labels), value);
                    }
                }
            }
        }
    }
    let mut totals = BTreeMap::new();
    for ((name, _), value) in latest {
        *totals.entry(name).or_insert(0.0) += value;
    }
    totals
}

// ---------------------------------------------------------------------------------------------
// Processes and endpoints.
// ---------------------------------------------------------------------------------------------

/// `orstream <args>` with its stderr in `log`, no `ORSTREAM_*` telemetry variables (the
/// configuration files say it all).
fn orstream(args: &[&str], log: &Path) -> Child {
    orstream_command(args, log).spawn().unwrap()
}

/// The `orstream` command with `args`, stderr to `log`, without the caller's `ORSTREAM_*`
/// variables.
fn orstream_command(args: &[&str], log: &Path) -> Command {
    process::command(
        env!("CARGO_BIN_EXE_orstream"),
        args,
        env!("CARGO_MANIFEST_DIR"),
        log,
    )
}

/// SIGTERM, then waits for a clean exit.
fn stop(mut child: Child, name: &str) {
    let status = process::terminate(&mut child, name, STEP);
    assert!(status.success(), "{name} exited with {status}");
}

// ---------------------------------------------------------------------------------------------
// The shared run.
// ---------------------------------------------------------------------------------------------

/// What the pipeline run left behind.
struct Run {
    case_id: String,
    received: Received,
    /// stderr of ingest, infer and sink.
    logs: Vec<(&'static str, Vec<u8>)>,
    /// The sink's `/metrics` once every result was stored.
    sink_metrics: String,
    _dir: tempfile::TempDir,
}

fn telemetry_table(collector: SocketAddr, listen: Option<SocketAddr>) -> String {
    let listen = listen.map_or_else(String::new, |a| format!("metrics_listen = \"{a}\"\n"));
    format!(
        "[telemetry]\notlp_endpoint = \"http://{collector}\"\nsampling_ratio = 1.0\n\
         log_filter = \"debug\"\notlp_metrics_interval = \"1h\"\n{listen}"
    )
}

/// Writes `dir/infer.toml`: `orstream infer` from the frames to the results topic on the
/// broker at `bootstrap`, fresh group and transactional ids, the tiny semantic fixture, archive
/// mode, then `tail` (a `[telemetry]` table).
fn write_infer(dir: &Path, [frames, results, bootstrap]: [&str; 3], tail: &str) -> PathBuf {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/fixtures/tiny_semantic.pt");
    let text = format!(
        "frames_topic = \"{frames}\"\nresults_topic = \"{results}\"\n\
         dlq_topic = \"{frames}.dlq\"\ngroup_id = \"{}\"\ntransactional_id = \"{}\"\n\
         mode = \"archive\"\ncommit_interval = \"50ms\"\n\
         [model]\npath = \"{}\"\n[batch]\nmax_batch_size = 4\nmax_linger = \"2ms\"\n\
         [kafka]\nbootstrap_servers = \"{bootstrap}\"\n{tail}",
        unique("test-infer"),
        unique("test-infer-tx"),
        model.display(),
    );
    write(dir, "infer.toml", &text)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(run_pipeline)
}

fn run_pipeline() -> Run {
    let kafka = kafka::config();
    let bootstrap = kafka.bootstrap_servers.clone();
    let dir = tempfile::tempdir().unwrap();
    let (collector, received) = Received::start();
    let case_id = unique("obs-case");
    let frames = unique("test.obs.frames");
    let streams = unique("test.obs.streams");
    let results = unique("test.obs.results");
    let bus = Bus::kafka(kafka).unwrap();
    for topic in [&frames, &streams, &results] {
        bus.create_topic(topic, 1, Duration::from_secs(30)).unwrap();
    }

    let ingest = write(
        dir.path(),
        "ingest.toml",
        &format!(
            "frames_topic = \"{frames}\"\nevents_topic = \"{streams}\"\n\
             [kafka]\nbootstrap_servers = \"{bootstrap}\"\n{}\n\
             [[streams]]\nstream_id = \"obs-cam\"\ncase_id = \"{case_id}\"\nmode = \"archive\"\n\
             source = {{ kind = \"test\", num_buffers = {FRAMES}, is_live = false }}\n\
             output = {{ width = 64, height = 48 }}\n",
            telemetry_table(collector, None)
        ),
    );
    let infer = write_infer(
        dir.path(),
        [&frames, &results, &bootstrap],
        &telemetry_table(collector, None),
    );
    let sink_listen = free_port();
    let sink = write(
        dir.path(),
        "sink.toml",
        &format!(
            "store = \"sqlite://{}\"\ngroup_id = \"{}\"\nresults_topic = \"{results}\"\n\
             streams_topic = \"{streams}\"\nevents_topic = \"{}\"\nbatch_max_wait = \"50ms\"\n\
             [kafka]\nbootstrap_servers = \"{bootstrap}\"\n{}",
            dir.path().join("record.db").display(),
            unique("test-obs-sink"),
            unique("test.obs.events"),
            telemetry_table(collector, Some(sink_listen))
        ),
    );

    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let mut ingest = orstream(
        &["ingest", "--config", ingest.to_str().unwrap()],
        &log("ingest"),
    );
    let status = wait_for("ingest to publish the test pattern", STEP, || {
        ingest.try_wait().unwrap()
    });
    assert!(
        status.success(),
        "ingest: {status}\n{}",
        std::fs::read_to_string(log("ingest")).unwrap_or_default()
    );
    let infer = orstream(
        &["infer", "--config", infer.to_str().unwrap()],
        &log("infer"),
    );
    let sink = orstream(&["sink", "--config", sink.to_str().unwrap()], &log("sink"));
    let results_stored = orstream_bus::metrics::prometheus_base_name(
        orstream_bus::metrics::SINK_RESULTS_STORED.name,
    ) + "_total";
    let sink_metrics = wait_for("the sink to store every result", STEP, || {
        let (_, text) = get(sink_listen, "/metrics")?;
        (scraped(&text, &results_stored)? >= FRAMES as f64).then_some(text)
    });
    stop(infer, "infer");
    stop(sink, "sink");

    let logs = ["ingest", "infer", "sink"]
        .into_iter()
        .map(|name| (name, std::fs::read(log(name)).unwrap()))
        .collect();
    Run {
        case_id,
        received,
        logs,
        sink_metrics,
        _dir: dir,
    }
}

// ---------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_frames_capture_inference_and_storage_share_one_trace() {
    let run = run();
    let spans = spans(&run.received);
    let named = |service: &str, name: &str| -> Vec<&Span> {
        spans
            .iter()
            .filter(|s| s.service == service && s.name == name)
            .collect()
    };
    let captures = named("orstream-ingest", "frame capture");
    let stored = named("orstream-sink", "store result");
    let transactions = named("orstream-sink", "sink transaction");
    let summary = || {
        let mut names: BTreeMap<(String, String), usize> = BTreeMap::new();
        for s in &spans {
            *names
                .entry((s.service.clone(), s.name.clone()))
                .or_default() += 1;
        }
        format!("{names:?}")
    };

    // 1. Every frame has its capture span, each in a trace of its own.
    assert_eq!(captures.len() as u64, FRAMES, "{}", summary());
    let frame_traces: BTreeSet<&[u8]> = captures.iter().map(|s| s.trace_id.as_slice()).collect();
    assert_eq!(frame_traces.len() as u64, FRAMES);
    for capture in &captures {
        assert_eq!(capture.trace_id.len(), 16);
        assert!(
            capture.parent_span_id.is_empty(),
            "capture starts the trace"
        );
        assert_eq!(
            string_attribute(&capture.attributes, "orstream.source.kind").as_deref(),
            Some("test")
        );
    }

    // 2. Every frame's result is stored under a span of the frame's trace, whose parent is the
    //    frame's capture span or a span of the same trace (inference).
    assert_eq!(stored.len() as u64, FRAMES, "{}", summary());
    let ids_by_trace: BTreeMap<&[u8], BTreeSet<&[u8]>> =
        spans.iter().fold(BTreeMap::new(), |mut map, s| {
            map.entry(s.trace_id.as_slice())
                .or_default()
                .insert(s.span_id.as_slice());
            map
        });
    for store in &stored {
        assert!(
            frame_traces.contains(store.trace_id.as_slice()),
            "a stored result outside every frame's trace"
        );
        assert!(
            ids_by_trace[store.trace_id.as_slice()].contains(store.parent_span_id.as_slice()),
            "the store span's parent is not in the frame's trace"
        );
        assert_eq!(
            string_attribute(&store.attributes, "orstream.transaction.outcome").as_deref(),
            Some("committed")
        );
        assert_eq!(
            string_attribute(&store.attributes, "orstream.status").as_deref(),
            Some("ok")
        );
    }

    // 3. The database transaction is in a frame's trace and links to the other frames it
    //    stored.
    assert!(!transactions.is_empty(), "{}", summary());
    for transaction in &transactions {
        assert!(frame_traces.contains(transaction.trace_id.as_slice()));
        assert!(
            transaction
                .links
                .iter()
                .all(|l| frame_traces.contains(l.as_slice()))
        );
    }
    let linked: usize = transactions.iter().map(|t| 1 + t.links.len()).sum();
    assert_eq!(linked as u64, FRAMES, "every frame reached one transaction");

    // 4. Inference: one `infer.frame` span per frame, a child of its capture span, and the
    //    parent of the span that stores its result; `infer.batch` spans linked to every frame
    //    span they ran.
    let inferred = named("orstream-infer", "infer.frame");
    assert_eq!(inferred.len() as u64, FRAMES, "{}", summary());
    let capture_ids: BTreeSet<&[u8]> = captures.iter().map(|s| s.span_id.as_slice()).collect();
    let inferred_ids: BTreeSet<&[u8]> = inferred.iter().map(|s| s.span_id.as_slice()).collect();
    for span in &inferred {
        assert!(frame_traces.contains(span.trace_id.as_slice()));
        assert!(
            capture_ids.contains(span.parent_span_id.as_slice()),
            "an infer.frame span whose parent is not a capture span"
        );
        assert_eq!(
            string_attribute(&span.attributes, "orstream.status").as_deref(),
            Some("ok")
        );
    }
    for store in &stored {
        assert!(
            inferred_ids.contains(store.parent_span_id.as_slice()),
            "a stored result whose parent is not its frame's inference span"
        );
    }
    let batches = named("orstream-infer", "infer.batch");
    assert!(!batches.is_empty(), "{}", summary());
    let batch_links: usize = batches.iter().map(|b| b.links.len()).sum();
    assert_eq!(
        batch_links as u64, FRAMES,
        "every frame span linked from one batch"
    );
    for batch in &batches {
        assert!(
            batch
                .links
                .iter()
                .all(|l| frame_traces.contains(l.as_slice()))
        );
    }
    println!("spans: {}", summary());
}

#[test]
fn logs_and_spans_carry_no_frame_bytes_and_no_case_id() {
    let run = run();
    let needles: [(&str, &[u8]); 3] = [
        ("JPEG magic bytes", &[0xFF, 0xD8, 0xFF]),
        ("base64 JPEG", b"/9j/"),
        ("the case id", run.case_id.as_bytes()),
    ];
    let contains =
        |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).any(|w| w == needle);

    let mut log_bytes = 0;
    for (service, log) in &run.logs {
        log_bytes += log.len();
        assert!(
            contains(log, b"DEBUG"),
            "{service} did not log at debug level"
        );
        for (what, needle) in needles {
            assert!(!contains(log, needle), "{what} in the log of {service}");
        }
    }

    let spans = spans(&run.received);
    assert!(!spans.is_empty());
    for span in &spans {
        let mut texts = vec![span.name.as_bytes().to_vec()];
        texts.extend(attribute_bytes(&span.attributes));
        texts.extend(span.event_texts.iter().cloned());
        for text in &texts {
            for (what, needle) in needles {
                assert!(
                    !contains(text, needle),
                    "{what} in span {} of {}",
                    span.name,
                    span.service
                );
            }
        }
    }
    // The case id is text: look for it in the raw export bodies (resources, scopes) too.
    for (_, body) in run.received.bodies.lock().unwrap().iter() {
        assert!(
            !contains(body, run.case_id.as_bytes()),
            "the case id exported"
        );
    }
    println!(
        "scanned {log_bytes} bytes of logs and {} spans",
        spans.len()
    );
}

#[test]
fn the_services_count_every_frame_and_result() {
    let run = run();
    let metrics = &run.sink_metrics;
    let base = |name: &str| orstream_bus::metrics::prometheus_base_name(name).into_owned();
    use orstream_bus::metrics as m;
    assert_eq!(
        scraped(metrics, &(base(m::SINK_RESULTS_STORED.name) + "_total")),
        Some(FRAMES as f64),
        "{metrics}"
    );
    assert_eq!(
        scraped(
            metrics,
            &(base(m::SINK_CAPTURE_TO_RECORD.name) + "_seconds_count")
        ),
        Some(FRAMES as f64),
        "{metrics}"
    );
    let committed = metrics
        .lines()
        .filter(|l| l.starts_with(&(base(m::TRANSACTIONS.name) + "_total")))
        .filter(|l| l.contains("orstream_transaction_outcome=\"committed\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(committed >= 1.0, "{metrics}");
    assert!(
        metrics.contains(&base(m::SINK_EVENTS_WRITTEN.name))
            || metrics.contains(&base(m::TRANSACTION_DURATION.name)),
        "{metrics}"
    );

    let ingest = sums(&run.received, "orstream-ingest");
    assert_eq!(
        ingest.get(m::INGEST_FRAMES_CAPTURED.name),
        Some(&(FRAMES as f64)),
        "{ingest:?}"
    );
    assert_eq!(
        ingest.get(m::INGEST_FRAMES_PUBLISHED.name),
        Some(&(FRAMES as f64)),
        "{ingest:?}"
    );
    assert_eq!(
        ingest.get(m::INGEST_FRAMES_DROPPED.name),
        None,
        "{ingest:?}"
    );
    // The stream has ended: it is counted in no state any more.
    assert_eq!(ingest.get(m::INGEST_STREAMS.name), Some(&0.0), "{ingest:?}");

    // Inference, pushed over OTLP when it stopped: every frame consumed and answered.
    let infer = sums(&run.received, "orstream-infer");
    assert_eq!(
        infer.get(m::INFER_RESULTS.name),
        Some(&(FRAMES as f64)),
        "{infer:?}"
    );
    assert_eq!(
        infer.get(m::MESSAGING_CONSUMED.name),
        Some(&(FRAMES as f64)),
        "{infer:?}"
    );
    assert!(
        infer.get(m::TRANSACTIONS.name).is_some_and(|&t| t >= 1.0),
        "{infer:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Readiness.
// ---------------------------------------------------------------------------------------------

/// A TCP proxy on 127.0.0.1 that can be cut (every connection closed, new ones closed at once)
/// and restored.
struct Proxy {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: SocketAddr, open: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = Self {
            addr: listener.local_addr().unwrap(),
            open: Arc::new(AtomicBool::new(open)),
            connections: Arc::default(),
        };
        let is_open = Arc::clone(&proxy.open);
        let connections = Arc::clone(&proxy.connections);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if !is_open.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let mut open = connections.lock().unwrap();
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    std::thread::spawn(move || {
                        let _copied = std::io::copy(&mut from, &mut to);
                        let _closed = to.shutdown(Shutdown::Both);
                    });
                }
                open.extend([client, server]);
            }
        });
        proxy
    }

    fn set_open(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
        if !open {
            for connection in self.connections.lock().unwrap().drain(..) {
                let _closed = connection.shutdown(Shutdown::Both);
            }
        }
    }
}

/// The sink's readiness: (ready, the failing checks).
fn readiness(addr: SocketAddr) -> Option<(bool, String)> {
    let (status, body) = get(addr, "/readyz")?;
    let body: serde_json::Value = serde_json::from_str(&body).ok()?;
    Some((status == 200, body["failing"].to_string()))
}

#[test]
fn sink_readiness_follows_the_database_and_the_broker() {
    let kafka = kafka::config();
    let store =
        orstream_test_support::store::isolated(orstream_record::BackendKind::Postgres).unwrap();
    let database: SocketAddr = "127.0.0.1:55432".parse().unwrap();
    let database = orstream_test_support::store::postgres_url()
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|host| host.to_socket_addrs().ok()?.next())
        .unwrap_or(database);
    let broker = kafka
        .bootstrap_servers
        .split(',')
        .next()
        .and_then(|b| b.to_socket_addrs().ok()?.next())
        .unwrap();
    let database_proxy = Proxy::start(database, true);
    let broker_proxy = Proxy::start(broker, false);
    let proxied_store =
        store
            .url()
            .replacen(&database.to_string(), &database_proxy.addr.to_string(), 1);
    assert_ne!(proxied_store, store.url(), "the store URL names {database}");

    let results = unique("test.ready.results");
    let streams = unique("test.ready.streams");
    let bus = Bus::kafka(kafka).unwrap();
    for topic in [&results, &streams] {
        bus.create_topic(topic, 1, Duration::from_secs(30)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let config = write(
        dir.path(),
        "sink.toml",
        &format!(
            "store = \"{proxied_store}\"\ngroup_id = \"{}\"\nresults_topic = \"{results}\"\n\
             streams_topic = \"{streams}\"\npublish_events = false\nhealth_interval = \"200ms\"\n\
             retry_initial = \"50ms\"\nretry_max = \"500ms\"\n\
             [kafka]\nbootstrap_servers = \"{}\"\n\
             [telemetry]\nmetrics_listen = \"{listen}\"\nlog_filter = \"info\"\n",
            unique("test-ready-sink"),
            broker_proxy.addr
        ),
    );
    let log = dir.path().join("sink.log");
    let sink = orstream(&["sink", "--config", config.to_str().unwrap()], &log);
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // The broker cannot be reached yet: not ready, and the broker is what fails.
    wait_for("not ready while the broker is away", STEP, || {
        readiness(listen).filter(|(ready, failing)| !*ready && failing.contains("broker"))
    });

    let started = Instant::now();
    broker_proxy.set_open(true);
    wait_for("ready once the broker answers", STEP, || {
        readiness(listen).filter(|(ready, _)| *ready)
    });
    let broker_back = started.elapsed();

    let started = Instant::now();
    database_proxy.set_open(false);
    wait_for("not ready without the database", STEP, || {
        readiness(listen).filter(|(ready, failing)| !*ready && failing.contains("database"))
    });
    let database_gone = started.elapsed();
    assert!(
        show_log().contains("the store does not answer"),
        "{}",
        show_log()
    );

    let started = Instant::now();
    database_proxy.set_open(true);
    wait_for("ready once the database is back", STEP, || {
        readiness(listen).filter(|(ready, _)| *ready)
    });
    let database_back = started.elapsed();
    stop(sink, "sink");
    println!(
        "readiness: broker back -> ready {broker_back:?}; database gone -> not ready \
         {database_gone:?}; database back -> ready {database_back:?}"
    );
}

#[test]
fn ingest_reports_ready_and_counts_a_live_stream() {
    let kafka = kafka::config();
    let frames = unique("test.live.frames");
    let streams = unique("test.live.streams");
    let dir = tempfile::tempdir().unwrap();
    let listen = free_port();
    let config = write(
        dir.path(),
        "ingest.toml",
        &format!(
            "frames_topic = \"{frames}\"\nevents_topic = \"{streams}\"\ntopic_partitions = 1\n\
             [kafka]\nbootstrap_servers = \"{}\"\n\
             [telemetry]\nmetrics_listen = \"{listen}\"\n\
             [[streams]]\nstream_id = \"live-cam\"\ncase_id = \"{}\"\n\
             source = {{ kind = \"test\", is_live = true }}\n\
             output = {{ width = 64, height = 48, max_fps = 10 }}\n",
            kafka.bootstrap_servers,
            unique("live-case")
        ),
    );
    let log = dir.path().join("ingest.log");
    let ingest = orstream(&["ingest", "--config", config.to_str().unwrap()], &log);

    let checks = wait_for("ingest to be ready", STEP, || {
        let (status, body) = get(listen, "/readyz")?;
        (status == 200).then_some(body)
    });
    assert!(
        checks.contains("\"broker\":true") && checks.contains("\"running\":true"),
        "{checks}"
    );
    use orstream_bus::metrics as m;
    let base = |name: &str| m::prometheus_base_name(name).into_owned();
    let published = base(m::INGEST_FRAMES_PUBLISHED.name) + "_total";
    let metrics = wait_for("frames published", STEP, || {
        let (_, text) = get(listen, "/metrics")?;
        (scraped(&text, &published)? >= 5.0).then_some(text)
    });
    let live = metrics
        .lines()
        .find(|l| {
            l.starts_with(&base(m::INGEST_STREAMS.name))
                && l.contains("orstream_stream_state=\"live\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert_eq!(live, Some(1.0), "{metrics}");
    assert!(
        scraped(&metrics, &(base(m::INGEST_FRAMES_CAPTURED.name) + "_total")).unwrap()
            >= scraped(&metrics, &published).unwrap(),
        "{metrics}"
    );
    assert!(
        scraped(
            &metrics,
            &(base(m::INGEST_ENCODE_DURATION.name) + "_seconds_count")
        )
        .unwrap()
            >= 5.0,
        "{metrics}"
    );
    let (status, _) = get(listen, "/healthz").unwrap();
    assert_eq!(status, 200);
    stop(ingest, "ingest");
}

// ---------------------------------------------------------------------------------------------
// The broker going away mid-run.
// ---------------------------------------------------------------------------------------------

/// A single-node Kafka of this test's own (`scripts/kafka.sh` with its own state directory and
/// ports, sharing the jars already resolved), so stopping it disturbs no other test. Stopped
/// when dropped.
struct OwnBroker {
    state: tempfile::TempDir,
    port: u16,
    controller: u16,
}

impl OwnBroker {
    fn start() -> Self {
        let state = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let shared = std::env::var_os("ORSTREAM_STATE_DIR")
            .map_or_else(|| root.join(".stack"), PathBuf::from)
            .join("kafka/libs");
        assert!(
            shared.is_dir(),
            "no resolved Kafka jars in {}",
            shared.display()
        );
        std::fs::create_dir_all(state.path().join("kafka")).unwrap();
        std::os::unix::fs::symlink(&shared, state.path().join("kafka/libs")).unwrap();
        let broker = Self {
            state,
            port: free_port().port(),
            controller: free_port().port(),
        };
        broker.script("start");
        broker
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn script(&self, action: &str) {
        let status = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh"))
            .arg(action)
            .env("ORSTREAM_STATE_DIR", self.state.path())
            .env("ORSTREAM_KAFKA_PORT", self.port.to_string())
            .env(
                "ORSTREAM_KAFKA_CONTROLLER_PORT",
                self.controller.to_string(),
            )
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "scripts/kafka.sh {action} failed");
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/kafka.sh"))
            .arg("stop")
            .env("ORSTREAM_STATE_DIR", self.state.path())
            .env("ORSTREAM_KAFKA_PORT", self.port.to_string())
            .env(
                "ORSTREAM_KAFKA_CONTROLLER_PORT",
                self.controller.to_string(),
            )
            .status();
    }
}

/// The broker stops under a running infer worker and sink with frames flowing, and starts
/// again: both report not ready (the broker check failing) while it is away and ready again
/// once it is back, and every frame published across the restart gets exactly one result.
#[test]
fn readiness_follows_the_broker_through_a_restart_and_nothing_is_lost() {
    use orstream_infer::synthetic;

    let broker = OwnBroker::start();
    let bootstrap = broker.bootstrap();
    let mut kafka = orstream_test_support::kafka::settings();
    kafka.bootstrap_servers = bootstrap.clone();
    let bus = Bus::kafka(kafka).unwrap();
    let (frames, results, streams) = (
        unique("test.restart.frames"),
        unique("test.restart.results"),
        unique("test.restart.streams"),
    );
    for topic in [&frames, &results, &streams] {
        bus.create_topic(topic, 2, Duration::from_secs(60)).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (infer_listen, sink_listen) = (free_port(), free_port());
    let infer = write_infer(
        dir.path(),
        [&frames, &results, &bootstrap],
        &format!("[telemetry]\nmetrics_listen = \"{infer_listen}\"\nlog_filter = \"info\"\n"),
    );
    let sink = write(
        dir.path(),
        "sink.toml",
        &format!(
            "store = \"sqlite://{}\"\ngroup_id = \"{}\"\nresults_topic = \"{results}\"\n\
             streams_topic = \"{streams}\"\npublish_events = false\nhealth_interval = \"200ms\"\n\
             [kafka]\nbootstrap_servers = \"{bootstrap}\"\n\
             [telemetry]\nmetrics_listen = \"{sink_listen}\"\nlog_filter = \"info\"\n",
            dir.path().join("record.db").display(),
            unique("test-restart-sink"),
        ),
    );
    let log = |name: &str| dir.path().join(format!("{name}.log"));
    let on_own_broker =
        |args: &[&str], name: &str| orstream_command(args, &log(name)).spawn().unwrap();
    let infer = on_own_broker(&["infer", "--config", infer.to_str().unwrap()], "infer");
    let sink = on_own_broker(&["sink", "--config", sink.to_str().unwrap()], "sink");
    let services = [("infer", infer_listen), ("sink", sink_listen)];
    let all = |ready: bool| {
        services.iter().all(|(_, listen)| {
            readiness(*listen)
                .is_some_and(|(is, failing)| is == ready && (ready || failing.contains("broker")))
        })
    };
    wait_for("infer and sink ready", STEP, || all(true).then_some(()));

    // Frames keep coming, one per 25 ms over two streams, across the restart.
    let total: u64 = 400;
    let feeder = {
        let bus = bus.clone();
        let frames = frames.clone();
        std::thread::spawn(move || {
            let producer = bus.producer().unwrap();
            let jpeg = synthetic::encode_jpeg(&synthetic::scene(64, 48, 0), 80).unwrap();
            let handles: Vec<_> = (0..total)
                .map(|i| {
                    std::thread::sleep(Duration::from_millis(25));
                    let frame = synthetic::frame(
                        &format!("cam-{}", i % 2),
                        i / 2,
                        synthetic::now_ns(),
                        64,
                        48,
                        jpeg.clone(),
                    );
                    producer
                        .send(&synthetic::frame_record(&frames, &frame), STEP)
                        .unwrap()
                })
                .collect();
            producer.flush(STEP).unwrap();
            for handle in handles {
                handle.wait(STEP).unwrap();
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let stopped = Instant::now();
    broker.script("stop");
    let states = || {
        services
            .iter()
            .map(|(name, listen)| {
                format!(
                    "{name}: {:?} alive {:?}",
                    readiness(*listen),
                    get(*listen, "/healthz")
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let deadline = Instant::now() + STEP;
    while !all(false) {
        assert!(
            Instant::now() < deadline,
            "still ready with the broker stopped: {}\nsink log:\n{}",
            states(),
            std::fs::read_to_string(log("sink"))
                .unwrap_or_default()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let gone = stopped.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    let restarted = Instant::now();
    broker.script("start");
    wait_for("infer and sink ready again", STEP, || {
        all(true).then_some(())
    });
    let back = restarted.elapsed();
    feeder.join().unwrap();

    // Every frame answered exactly once, read_committed.
    let reader = bus.consumer(&unique("test-restart-reader")).unwrap();
    reader.subscribe(&[&results]).unwrap();
    let mut seen: BTreeMap<orstream_proto::FrameKey, usize> = BTreeMap::new();
    wait_for("every frame's result", STEP, || {
        while let Ok(Some(message)) = reader.poll(Duration::from_millis(200)) {
            let result: orstream_proto::FrameResult =
                orstream_proto::decode(&message.payload).unwrap();
            *seen.entry(result.key()).or_default() += 1;
        }
        (seen.len() as u64 >= total).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    while let Ok(Some(message)) = reader.poll(Duration::from_millis(200)) {
        let result: orstream_proto::FrameResult = orstream_proto::decode(&message.payload).unwrap();
        *seen.entry(result.key()).or_default() += 1;
    }
    let duplicated = seen.values().filter(|n| **n > 1).count();
    stop(sink, "sink");
    stop(infer, "infer");
    println!(
        "broker-restart in={total} out={} dup={duplicated}: not ready {:.2}s after the stop, \
         ready {:.2}s after the start",
        seen.len(),
        gone.as_secs_f64(),
        back.as_secs_f64()
    );
    assert_eq!(seen.len() as u64, total);
    assert_eq!(duplicated, 0);
}
