//! PostgreSQL going away under a running sink (its connections cut by a TCP proxy in between,
//! new ones refused): the sink reports not ready, acknowledges nothing while the database is
//! down, and stores the backlog once it is back, exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

mod common;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orstream_bus::Bus;
use orstream_record::BackendKind;
use orstream_sink::derive::Rules;
use orstream_test_support::script::Script;
use orstream_test_support::store::postgres_url;
use orstream_test_support::topic::{result_record, stream_record};
use orstream_test_support::wait;

use common::{Topics, config, expected, expected_ids, start, store};

/// Forwards TCP connections to `upstream` while up; cuts them all when put down.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (up2, open2) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !up2.load(Ordering::SeqCst) {
                    drop(client); // refused: closed at once
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let mut open = open2.lock().unwrap();
                open.push(client.try_clone().unwrap());
                open.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self { addr, up, open }
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[test]
fn postgres_down_means_not_ready_nothing_acknowledged_then_the_backlog_drains() {
    let isolated = store(BackendKind::Postgres);
    let pg: postgres::Config = postgres_url().parse().unwrap();
    let (host, port) = match (&pg.get_hosts()[0], pg.get_ports()[0]) {
        (postgres::config::Host::Tcp(h), p) => (h.clone(), p),
        other => panic!("the test database must be reached over TCP: {other:?}"),
    };
    let upstream: SocketAddr = format!("{host}:{port}").parse().unwrap();
    let proxy = Proxy::start(upstream);
    let through_proxy = isolated
        .url()
        .replace(&format!("{host}:{port}"), &proxy.addr.to_string());
    assert_ne!(through_proxy, isolated.url());

    let bus = Bus::memory();
    let topics = Topics::unique();
    topics.create(&bus, 2);
    let script = Script::new("case-down", 2, 400);
    let mut config = config(&isolated, &topics);
    config.store = through_proxy;
    config.retry_max = Duration::from_millis(200);
    let rules = Rules::from(&config.derive);
    let producer = bus.producer().unwrap();
    let send = |records: Vec<orstream_bus::Record>| {
        for r in records {
            producer
                .send(&r, common::TIMEOUT)
                .unwrap()
                .wait(common::TIMEOUT)
                .unwrap();
        }
    };
    let results = script.results();
    let (before, after) = results.split_at(300);
    send(
        script
            .all_stream_events()
            .iter()
            .map(|e| stream_record(&topics.streams, e))
            .chain(before.iter().map(|r| result_record(&topics.results, r)))
            .collect(),
    );
    let stream_events = script.all_stream_events().len() as u64;

    let sink = start(&bus, config);
    sink.wait_for("the first part", |s| s.messages >= stream_events + 300);
    assert!(sink.progress.is_ready());

    proxy.down();
    send(
        after
            .iter()
            .map(|r| result_record(&topics.results, r))
            .collect(),
    );
    wait::until(
        "the sink to notice the database was gone",
        common::TIMEOUT,
        || !sink.progress.is_ready(),
    );
    let acknowledged = sink.progress.stats().messages;
    // While down, retries happen and nothing more is acknowledged, in the sink or the store.
    sink.wait_for("a few retries", |s| s.store_retries >= 3);
    assert_eq!(sink.progress.stats().messages, acknowledged);
    let stored: i64 = isolated
        .open()
        .unwrap()
        .query("SELECT COUNT(*) FROM frames", &[])
        .unwrap()[0][0]
        .int();
    assert_eq!(stored as u64, acknowledged - stream_events);

    proxy.up();
    let total = stream_events + results.len() as u64;
    sink.wait_for("the backlog", |s| s.messages >= total);
    assert!(sink.progress.is_ready());
    let stats = sink.stop();
    assert_eq!(stats.messages, total, "every message stored once");

    let (presences, gaps) = expected_ids(&expected(&script, &rules));
    let snapshot = isolated.open().unwrap().snapshot().unwrap();
    assert_eq!(snapshot["frames"].len(), results.len());
    assert_eq!(snapshot["events"].len(), presences.len());
    assert_eq!(snapshot["gaps"].len(), gaps.len());
}
