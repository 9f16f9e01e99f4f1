//! Kafka with encryption, authentication and authorization, against the stack's broker
//! (`scripts/kafka.sh start`: a SASL_SSL listener with SCRAM-SHA-512 users and a mutual-TLS
//! listener, both with the stack's CA, and the standard authorizer) and the least-privilege
//! ACLs of `scripts/kafka-acls.sh`, given on this run's own topic, group and transactional-id
//! prefixes:
//! - ingest, infer and the sink run a clip over SASL_SSL, each as its own principal with its
//!   password from a file, and the record holds every frame; no log line, metric or exported
//!   span (OTLP, every trace kept, logs at debug) holds a password;
//! - a principal without a permission it needs stops its service with an error naming the
//!   permission, instead of retrying for ever;
//! - the bus works over mutual TLS, the client certificate's name being the principal.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use orstream_bus::security::Protocol;
use orstream_bus::{Bus, KafkaConfig, KafkaSecurity, Record};
use orstream_record::BackendKind;
use orstream_test_support::kafka;
use orstream_test_support::metrics::get;
use orstream_test_support::names::unique_identifier;
use orstream_test_support::otlp::{contains, fake_collector};
use orstream_test_support::scripts::run as script;
use orstream_test_support::service::Service;
use orstream_test_support::store::{IsolatedStore, isolated};
use orstream_test_support::tls::{client_certificate, stack_ca};
use orstream_test_support::wait::wait_for;

/// How long any one step may take.
const STEP: Duration = Duration::from_secs(120);

/// Frames of the clip.
const FRAMES: i64 = 60;

/// This run's names, under ACLs that grant each service principal what it needs on them.
struct Secured {
    topics: String,
    groups: String,
    transactional_ids: String,
}

impl Secured {
    fn new() -> Self {
        let id = unique_identifier("s").replace('_', "-");
        let secured = Self {
            topics: format!("test.secure.{id}."),
            groups: format!("test-secure-{id}-"),
            transactional_ids: format!("test-secure-{id}-infer"),
        };
        script(
            "kafka-acls.sh",
            &[
                "--topic-prefix",
                &secured.topics,
                "--group-prefix",
                &secured.groups,
                "--transactional-id-prefix",
                &secured.transactional_ids,
            ],
        );
        secured
    }

    fn topic(&self, name: &str) -> String {
        format!("{}{name}", self.topics)
    }

    /// Creates the run's topics (as the broker's super user, over the plaintext listener).
    fn create_topics(&self, names: &[&str]) {
        let bus = Bus::kafka(kafka::config()).unwrap();
        for name in names {
            bus.create_topic(&self.topic(name), 1, STEP).unwrap();
        }
    }
}

/// A service's `[kafka]` tables over SASL_SSL as `user`, and the variable that hands it the
/// user's password file.
fn over_sasl(service: &str, user: &str) -> (String, (String, String)) {
    let table = format!(
        "[kafka]\nbootstrap_servers = \"{}\"\nsession_timeout = \"6s\"\n\
         [kafka.security]\nprotocol = \"sasl_ssl\"\nca = \"{}\"\nusername = \"{user}\"\n",
        script("kafka.sh", &["sasl-bootstrap"]),
        stack_ca().display(),
    );
    let password = (
        format!(
            "ORSTREAM_{}_KAFKA__SECURITY__PASSWORD_FILE",
            service.to_uppercase()
        ),
        script("kafka.sh", &["password", user]),
    );
    (table, password)
}

/// `orstream <name>` as `user` over SASL_SSL, with the rest of its configuration `body`, its
/// telemetry exported to `otlp` when given (every trace kept), logging at debug.
fn secured_service(
    name: &'static str,
    user: &str,
    otlp: Option<SocketAddr>,
    body: impl FnOnce(SocketAddr) -> String,
) -> Service {
    let (kafka_tables, password) = over_sasl(name, user);
    let export = otlp.map_or(String::new(), |addr| {
        format!("otlp_endpoint = \"http://{addr}\"\nsampling_ratio = 1.0\n")
    });
    Service::start_with(
        env!("CARGO_BIN_EXE_orstream"),
        env!("CARGO_MANIFEST_DIR"),
        name,
        &[password],
        |listen| {
            format!(
                "{}\n{kafka_tables}[telemetry]\nmetrics_listen = \"{listen}\"\n\
                 log_filter = \"debug\"\n{export}",
                body(listen)
            )
        },
    )
}

fn sink(
    secured: &Secured,
    store: &IsolatedStore,
    user: &str,
    group: &str,
    otlp: Option<SocketAddr>,
) -> Service {
    secured_service("sink", user, otlp, |_| {
        format!(
            "store = \"{}\"\ngroup_id = \"{group}\"\nresults_topic = \"{}\"\n\
             streams_topic = \"{}\"\nevents_topic = \"{}\"\ntracks_topic = \"{}\"\n\
             publish_events = false\npublish_tracks = false\n\
             retry_initial = \"50ms\"\nretry_max = \"1s\"",
            store.url(),
            secured.topic("results"),
            secured.topic("streams"),
            secured.topic("events"),
            secured.topic("tracks"),
        )
    })
}

fn infer(
    secured: &Secured,
    user: &str,
    transactional_id: &str,
    otlp: Option<SocketAddr>,
) -> Service {
    secured_service("infer", user, otlp, |_| {
        format!(
            "frames_topic = \"{}\"\nresults_topic = \"{}\"\ndlq_topic = \"{}\"\n\
             group_id = \"{}infer\"\ntransactional_id = \"{transactional_id}\"\n\
             mode = \"archive\"\ndrain_timeout = \"4s\"\n\
             [model]\npath = \"models/demo/seg.pt\"\ntorch_threads = 1",
            secured.topic("frames"),
            secured.topic("results"),
            secured.topic("frames.dlq"),
            secured.groups,
        )
    })
}

/// Waits for `service` to exit; its exit status must be a failure. Its log.
fn stops_failing(mut service: Service) -> String {
    let started = Instant::now();
    wait_for(&format!("{} to stop", service.name), STEP, || {
        service.has_exited().then_some(())
    });
    let status = service.child.wait().unwrap();
    let log = service.log();
    assert!(!status.success(), "{} exited 0:\n{log}", service.name);
    println!(
        "security | {} stopped {:.1} s after start: {status}",
        service.name,
        started.elapsed().as_secs_f64()
    );
    log
}

fn frames_stored(store: &IsolatedStore) -> i64 {
    store
        .open()
        .unwrap()
        .query("SELECT COUNT(*) FROM frames", &[])
        .unwrap()[0][0]
        .int()
}

#[test]
fn the_pipeline_runs_over_sasl_ssl_each_service_as_its_own_principal() {
    let secured = Secured::new();
    secured.create_topics(&["frames", "streams", "results", "frames.dlq"]);
    let store = isolated(BackendKind::Postgres).unwrap();
    let (collector, exported) = fake_collector();
    let started = Instant::now();
    let sink = sink(
        &secured,
        &store,
        "sink",
        &format!("{}sink", secured.groups),
        Some(collector),
    );
    let infer = infer(
        &secured,
        "infer",
        &secured.transactional_ids,
        Some(collector),
    );
    let ingest = secured_service("ingest", "ingest", Some(collector), |_| {
        format!(
            "frames_topic = \"{}\"\nevents_topic = \"{}\"\ncreate_topics = false\n\
             [[streams]]\nstream_id = \"cam\"\ncase_id = \"secured\"\nmode = \"archive\"\n\
             source = {{ kind = \"test\", num_buffers = {FRAMES} }}\n\
             output = {{ width = 320, height = 240 }}",
            secured.topic("frames"),
            secured.topic("streams"),
        )
    });
    wait_for("every frame recorded", STEP, || {
        (frames_stored(&store) >= FRAMES).then_some(())
    });
    let wall = started.elapsed();
    // Everything the services said: logs, metrics, and the spans and metrics they exported.
    let mut said: Vec<u8> = Vec::new();
    let mut scraped = 0;
    for service in [&ingest, &infer, &sink] {
        if let Some((_, metrics)) = get(service.listen, "/metrics") {
            said.extend(metrics.as_bytes());
            scraped += 1;
        }
    }
    // Ingest's source ends: it exits by itself, 0. Infer and the sink drain on SIGTERM.
    let mut ingest = ingest;
    wait_for("ingest to end", STEP, || ingest.has_exited().then_some(()));
    assert!(ingest.child.wait().unwrap().success(), "{}", ingest.log());
    said.extend(ingest.log().as_bytes());
    for service in [infer, sink] {
        said.extend(service.stop().as_bytes());
    }
    assert_eq!(frames_stored(&store), FRAMES);
    let mut traces = 0;
    for received in exported.try_iter() {
        traces += usize::from(received.path == "/v1/traces");
        said.extend(received.body);
    }
    assert!(
        scraped >= 2 && traces > 0,
        "nothing to search: {scraped} scrapes, {traces} trace exports"
    );
    let holds = |needle: &[u8]| contains(&said, needle);
    // The search sees what the services said: the run's topic names are there.
    assert!(
        holds(secured.topics.as_bytes()),
        "the topics are named nowhere"
    );
    for user in ["ingest", "infer", "sink"] {
        let password = std::fs::read_to_string(script("kafka.sh", &["password", user])).unwrap();
        let password = password.trim().as_bytes();
        assert!(
            !holds(password),
            "{user}'s password is in a log line, a metric or an exported span"
        );
    }
    println!(
        "security | {FRAMES} frames over SASL_SSL (SCRAM-SHA-512), three principals: all \
         recorded in {:.1} s",
        wall.as_secs_f64()
    );
}

#[test]
fn a_sink_without_read_on_its_group_stops_naming_the_permission() {
    let secured = Secured::new();
    secured.create_topics(&["streams", "results"]);
    let store = isolated(BackendKind::Postgres).unwrap();
    // A group outside the prefix the ACLs grant.
    let group = format!("test-unlisted-{}", unique_identifier("g").replace('_', "-"));
    let log = stops_failing(sink(&secured, &store, "sink", &group, None));
    assert!(
        log.contains("Group authorization failed"),
        "the sink's log does not name the permission:\n{log}"
    );
}

#[test]
fn infer_without_its_transactional_id_stops_naming_the_permission() {
    let secured = Secured::new();
    secured.create_topics(&["frames", "results", "frames.dlq"]);
    let log = stops_failing(infer(&secured, "infer", "test-unlisted-infer", None));
    assert!(
        log.contains("Transactional Id authorization failed"),
        "infer's log does not name the permission:\n{log}"
    );
}

#[test]
fn the_bus_works_over_mutual_tls_as_the_certificate_s_principal() {
    let secured = Secured::new();
    secured.create_topics(&["results"]);
    let (certificate, key) = client_certificate("infer");
    let config = KafkaConfig {
        bootstrap_servers: script("kafka.sh", &["ssl-bootstrap"]),
        security: KafkaSecurity {
            protocol: Protocol::Ssl,
            ca: Some(stack_ca()),
            certificate: Some(certificate),
            key: Some(key),
            ..KafkaSecurity::default()
        },
        ..KafkaConfig::default()
    };
    config.validate().unwrap();
    let bus = Bus::kafka(config).unwrap();
    let topic = secured.topic("results");
    bus.producer()
        .unwrap()
        .send(&Record::new(topic.clone(), b"over mTLS".to_vec()), STEP)
        .unwrap()
        .wait(STEP)
        .unwrap();
    let consumer = bus.consumer(&format!("{}reader", secured.groups)).unwrap();
    consumer.subscribe(&[topic.as_str()]).unwrap();
    let message = wait_for("the message back", STEP, || {
        consumer.poll(Duration::from_millis(500)).unwrap()
    });
    assert_eq!(&message.payload[..], b"over mTLS");
}
