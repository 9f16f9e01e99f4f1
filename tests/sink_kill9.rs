//! kill -9 of the sink, repeatedly, mid-stream, against the real broker and PostgreSQL: the
//! record equals the one an uninterrupted sink builds from the same input (same rows, no
//! duplicates, same events, tool tracks, trajectory points and derivation state: a restart
//! resumes the same tracks).
//!
//! Needs `scripts/kafka.sh start` and `scripts/postgres.sh start`; fails (never skips) when
//! either is down. Prints one line of figures.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

use orstream_shell::config::variable;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use orstream_bus::{Bus, TopicPartition};
use orstream_proto::SurgicalEvent;
use orstream_record::BackendKind;
use orstream_test_support::names::unique;
use orstream_test_support::script::Script;
use orstream_test_support::store::{IsolatedStore, isolated};
use orstream_test_support::topic::{result_record, stream_record};
use orstream_test_support::{kafka, process, topic, wait};

const TIMEOUT: Duration = Duration::from_secs(180);

struct Setup {
    results: String,
    streams: String,
    dir: PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes a sink configuration for `store` and returns its path.
fn sink_config(setup: &Setup, name: &str, store: &IsolatedStore, events: &str) -> PathBuf {
    let kafka = orstream_test_support::kafka::settings();
    let text = format!(
        r#"store = "{store}"
group_id = "{group}"
results_topic = "{results}"
streams_topic = "{streams}"
events_topic = "{events}"
batch_max_messages = 150
batch_max_wait = "40ms"
retry_initial = "50ms"
retry_max = "1s"

[kafka]
bootstrap_servers = "{bootstrap}"
session_timeout = "6s"
# Static membership: a restarted sink takes its partitions back at once instead of waiting
# for the killed member's session to expire.
[kafka.librdkafka]
"group.instance.id" = "{group}-member"
"#,
        store = store.url(),
        group = unique(&format!("kill9-{name}")),
        results = setup.results,
        streams = setup.streams,
        bootstrap = kafka.bootstrap_servers,
    );
    let path = setup.dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn spawn_sink(config: &Path, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_orstream"))
        .arg("sink")
        .arg("--config")
        .arg(config)
        .env(variable("sink", "telemetry.log_filter"), "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// SIGTERM once the sink handles it; it must drain and exit 0.
fn terminate(mut child: Child) {
    let status = process::terminate(&mut child, "the sink", Duration::from_secs(60));
    assert!(
        status.success(),
        "the sink exited with {status} after SIGTERM"
    );
}

/// Whether the store's offsets reached `ends` on every partition.
fn caught_up(store: &IsolatedStore, ends: &BTreeMap<TopicPartition, i64>) -> bool {
    // The store may not exist yet (schema created by the sink) or be busy: just not yet.
    let Ok(mut s) = store.open() else {
        return false;
    };
    let Ok(offsets) = s.offsets() else {
        return false;
    };
    ends.iter().all(|(tp, end)| offsets.get(tp) == Some(end))
}

fn wait_caught_up(store: &IsolatedStore, ends: &BTreeMap<TopicPartition, i64>, child: &mut Child) {
    wait::until("the sink to catch up", TIMEOUT, || {
        assert!(child.try_wait().unwrap().is_none(), "the sink exited early");
        caught_up(store, ends)
    });
}

#[test]
fn kill_9_the_sink_repeatedly_and_the_record_is_the_same() {
    let kafka = kafka::config();
    let reference = isolated(BackendKind::Postgres).unwrap_or_else(|e| panic!("{e}"));
    let killed = isolated(BackendKind::Postgres).unwrap_or_else(|e| panic!("{e}"));
    let bus = Bus::kafka(kafka).unwrap();
    let id = unique("kill9");
    let setup = Setup {
        results: format!("test.results.{id}"),
        streams: format!("test.streams.{id}"),
        dir: std::env::temp_dir().join(&id),
    };
    std::fs::create_dir_all(&setup.dir).unwrap();
    for t in [&setup.results, &setup.streams] {
        bus.create_topic(t, 3, TIMEOUT).unwrap();
    }
    let events_killed = format!("test.events.{id}.killed");
    let events_reference = format!("test.events.{id}.reference");
    let log = setup.dir.join("sink.log");

    // The input: 4 cameras, 40 s at 30 fps, published over about eight seconds while the
    // sink is killed again and again.
    let script = Script::new(&id, 4, 1_200);
    let producer_bus = bus.clone();
    let (results_topic, streams_topic) = (setup.results.clone(), setup.streams.clone());
    let script_for_producer = script.clone();
    let producer = std::thread::spawn(move || {
        let producer = producer_bus.producer().unwrap();
        let mut ends: BTreeMap<TopicPartition, i64> = BTreeMap::new();
        let mut handles = Vec::new();
        for e in script_for_producer.all_stream_events() {
            handles.push(
                producer
                    .send(&stream_record(&streams_topic, &e), TIMEOUT)
                    .unwrap(),
            );
        }
        for (i, r) in script_for_producer.results().iter().enumerate() {
            handles.push(
                producer
                    .send(&result_record(&results_topic, r), TIMEOUT)
                    .unwrap(),
            );
            if i % 100 == 99 {
                std::thread::sleep(Duration::from_millis(170));
            }
        }
        for h in handles {
            let d = h.wait(TIMEOUT).unwrap();
            let end = ends
                .entry(TopicPartition::new(d.topic, d.partition))
                .or_default();
            *end = (*end).max(d.offset + 1);
        }
        ends
    });

    let config = sink_config(&setup, "killed", &killed, &events_killed);
    let mut seed = std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15;
    let mut next_delay = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        Duration::from_millis(400 + seed % 1_100)
    };
    let mut kills = 0;
    let mut child = spawn_sink(&config, &log);
    while !producer.is_finished() || kills < 8 {
        std::thread::sleep(next_delay());
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        child = spawn_sink(&config, &log);
    }
    let ends = producer.join().unwrap();
    let messages: i64 = ends.values().sum();
    wait_caught_up(&killed, &ends, &mut child);
    terminate(child);

    // The same input, once, uninterrupted.
    let config = sink_config(&setup, "reference", &reference, &events_reference);
    let mut child = spawn_sink(&config, &log);
    wait_caught_up(&reference, &ends, &mut child);
    terminate(child);

    let a = reference.open().unwrap().snapshot().unwrap();
    let b = killed.open().unwrap().snapshot().unwrap();
    for table in a.keys() {
        assert_eq!(
            a[table].len(),
            b[table].len(),
            "table {table}: {} rows uninterrupted, {} after kills",
            a[table].len(),
            b[table].len()
        );
        assert_eq!(a[table], b[table], "table {table} differs");
    }
    assert_eq!(a["frames"].len(), 4 * 1_200);
    assert!(!a["tracks"].is_empty() && !a["track_points"].is_empty());

    // Every derived event reached the events topic; kills may publish one twice, with the
    // same id (consumers deduplicate on it).
    let stored: BTreeSet<String> = {
        let mut s = killed.open().unwrap();
        let mut ids = BTreeSet::new();
        for table in ["events", "gaps", "tracks"] {
            for r in s
                .query(&format!("SELECT event_id FROM {table}"), &[])
                .unwrap()
            {
                ids.insert(r[0].text().to_owned());
            }
        }
        ids
    };
    // Until nothing new for three seconds after the first (its assignment takes a moment).
    let published = topic::read_until_quiet(&bus, &events_killed, 1, Duration::from_secs(3));
    let ids: BTreeSet<String> = topic::decode_all::<SurgicalEvent>(&published)
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(ids, stored, "published events = stored events");
    let duplicates = published.len() - ids.len();
    println!(
        "kill9-sink in={messages} frames={} events={} gaps={} tracks={} track_points={} \
         kills={kills} lost=0 dup_rows=0 republished_events={duplicates}",
        b["frames"].len(),
        b["events"].len(),
        b["gaps"].len(),
        b["tracks"].len(),
        b["track_points"].len(),
    );
    if std::env::var_os("ORSTREAM_KEEP_LOGS").is_some() {
        let _ = std::fs::copy(&log, std::env::temp_dir().join(format!("{id}.log")));
    }
}
