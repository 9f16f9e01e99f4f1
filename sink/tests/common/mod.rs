//! Helpers shared by the sink's integration tests: running a sink on a thread, waiting for
//! it, feeding scripted input, reading topics back.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::thread::JoinHandle;
use std::time::Duration;

use orstream_bus::{Bus, Message, Record};
use orstream_record::BackendKind;
use orstream_sink::derive::{Derived, Rules, StreamState};
use orstream_sink::{Progress, Sink, SinkConfig, SinkError, Stats};
use orstream_test_support::names::unique;
use orstream_test_support::script::Script;
use orstream_test_support::store::{IsolatedStore, isolated};
use orstream_test_support::topic::{self, result_record, stream_record};
use orstream_test_support::wait;
use tokio_util::sync::CancellationToken;

pub const TIMEOUT: Duration = Duration::from_secs(90);

/// Generates one test per backend: `mod sqlite { fn name() }` and `mod postgres { ... }`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::$name(orstream_record::BackendKind::Sqlite) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::$name(orstream_record::BackendKind::Postgres) } )*
        }
    };
}

pub fn store(kind: BackendKind) -> IsolatedStore {
    isolated(kind).unwrap_or_else(|e| panic!("{e}"))
}

/// Topic names of one test.
#[derive(Debug, Clone)]
pub struct Topics {
    pub results: String,
    pub streams: String,
    pub events: String,
    pub tracks: String,
}

impl Topics {
    pub fn unique() -> Self {
        let id = unique("t");
        Self {
            results: format!("test.results.{id}"),
            streams: format!("test.streams.{id}"),
            events: format!("test.events.{id}"),
            tracks: format!("test.tracks.{id}"),
        }
    }

    pub fn create(&self, bus: &Bus, partitions: u32) {
        for t in [&self.results, &self.streams] {
            bus.create_topic(t, partitions, TIMEOUT).unwrap();
        }
    }
}

pub fn config(store: &IsolatedStore, topics: &Topics) -> SinkConfig {
    let mut config = SinkConfig {
        store: store.url().to_owned(),
        group_id: unique("sink"),
        results_topic: topics.results.clone(),
        streams_topic: topics.streams.clone(),
        events_topic: topics.events.clone(),
        tracks_topic: topics.tracks.clone(),
        batch_max_wait: Duration::from_millis(20),
        retry_initial: Duration::from_millis(20),
        retry_max: Duration::from_millis(500),
        ..SinkConfig::default()
    };
    config.kafka = orstream_test_support::kafka::settings();
    config
}

/// Publishes a script: lifecycle events and results (results in camera order).
pub fn publish(bus: &Bus, topics: &Topics, script: &Script) -> u64 {
    topic::publish(bus, &records(topics, script)).len() as u64
}

/// The script's messages in the order [`publish`] sends them: stream events, then results.
pub fn records(topics: &Topics, script: &Script) -> Vec<Record> {
    script
        .all_stream_events()
        .iter()
        .map(|e| stream_record(&topics.streams, e))
        .chain(
            script
                .results()
                .iter()
                .map(|r| result_record(&topics.results, r)),
        )
        .collect()
}

pub struct RunningSink {
    pub stop: CancellationToken,
    pub progress: Progress,
    handle: JoinHandle<Result<Stats, SinkError>>,
}

pub fn start(bus: &Bus, config: SinkConfig) -> RunningSink {
    let store = orstream_record::Store::open(&config.store).unwrap();
    let sink = Sink::new(config, bus.clone(), store).unwrap();
    let progress = sink.progress();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let handle = std::thread::spawn(move || sink.run(token));
    RunningSink {
        stop,
        progress,
        handle,
    }
}

impl RunningSink {
    /// Waits until `done(stats)` holds (panics after TIMEOUT or if the sink ended).
    pub fn wait_for(&self, what: &str, done: impl Fn(&Stats) -> bool) {
        wait::showing(what, TIMEOUT, || {
            let stats = self.progress.stats();
            if done(&stats) {
                return Ok(());
            }
            assert!(
                !self.handle.is_finished(),
                "the sink ended while waiting for {what}"
            );
            Err(format!("{stats:?}"))
        });
    }

    pub fn is_running(&self) -> bool {
        !self.handle.is_finished()
    }

    /// Waits for the sink to end by itself (an error it cannot go past); panics after TIMEOUT.
    pub fn ended(self) -> Result<Stats, SinkError> {
        wait::showing("the sink to end", TIMEOUT, || {
            if self.handle.is_finished() {
                Ok(())
            } else {
                Err(format!("{:?}", self.progress.stats()))
            }
        });
        self.handle.join().unwrap()
    }

    pub fn stop(self) -> Stats {
        self.stop.cancel();
        self.handle.join().unwrap().unwrap()
    }
}

/// Reads `topic` from the beginning until `n` messages came, then what else is already there
/// (to catch duplicates).
pub fn read_topic(bus: &Bus, topic: &str, n: usize) -> Vec<Message> {
    topic::read_until_quiet(bus, topic, n, Duration::from_millis(500))
}

/// What derivation must give for `script`, computed offline with the same pure derivation the
/// sink runs: the (closed) outputs of every stream, in stream order.
pub fn expected(script: &Script, rules: &Rules) -> Vec<Derived> {
    let mut out = Vec::new();
    for s in 0..script.streams {
        let mut state = StreamState::new(&script.stream_id(s));
        for i in 0..script.frames {
            out.extend(state.apply_result(&script.result(s, i), rules));
        }
        for e in script.stream_events(s) {
            out.extend(state.apply_stream_event(&e));
        }
    }
    out
}

/// Event ids of the tracks that end in a script's outputs.
pub fn track_event_ids(outputs: &[Derived]) -> std::collections::BTreeSet<String> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Derived::Track(t) => Some(t.event_id()),
            _ => None,
        })
        .collect()
}

/// Event id -> (start, end).
pub type Spans = BTreeMap<String, (i64, i64)>;

/// Expected (event id -> (start, end)) for presences and gaps of a script.
pub fn expected_ids(outputs: &[Derived]) -> (Spans, Spans) {
    let mut presences = BTreeMap::new();
    let mut gaps = BTreeMap::new();
    for o in outputs {
        match o {
            Derived::Presence(p) => {
                presences.insert(p.event_id(), (p.start_ns, p.end_ns));
            }
            Derived::Gap(g) => {
                gaps.insert(g.event_id(), (g.start_ns, g.end_ns));
            }
            Derived::Anomaly(_)
            | Derived::Track(_)
            | Derived::TrackPoints(..)
            | Derived::Tracked(_) => {}
        }
    }
    (presences, gaps)
}
