//! orstream-sink: per-frame results -> temporal surgical events -> the surgical record, stored
//! exactly once in PostgreSQL (production) or SQLite (embedded).
//!
//! # Data in and out
//!
//! In: `FrameResult`s from `or.results.v1` and `StreamEvent`s from `or.streams.v1`, read as
//! one read_committed consumer group over the [`orstream_bus`] (Kafka or in-process). Out: rows
//! of the record ([`orstream_record`]: its schema, stores and views), derived `SurgicalEvent`s
//! (presences, gaps, ended tool tracks) on `or.events.v1` keyed by case_id, per-frame tool
//! track assignments (`TrackFrame`) on `or.tracks.v1` keyed by stream_id, and rejected
//! messages on `<topic>.dlq`.
//!
//! # Modules, in the order a message goes through them
//!
//! - `config`: [`SinkConfig`] and [`DeriveConfig`] (serde, validated, example in
//!   `config/sink.example.toml`).
//! - `consume`: a batch per turn from one read_committed consumer group; after every
//!   rebalance the assigned partitions are moved to the offsets stored in the database.
//! - `decode`: header `orstream-schema-version` must be "1", then the contract's bounded,
//!   validating decoder; anything else is a [`Rejection`] (dead letter and
//!   anomaly).
//! - `prepare`: pure batch preparation: replays below the stored offsets are skipped, inputs
//!   are derived on the stream states held in `cache` (what the sink holds of the store
//!   between batches), and the record's typed rows (`prepare::rows`), states, offsets, dead
//!   letters and outbox entries make up the batch.
//! - [`mod@derive`]: pure, deterministic derivation per stream ([`derive::StreamState`]): k-of-n
//!   enter, capture-time absence, gaps that split intervals, anomalies; it runs the stream's
//!   tool tracker.
//! - [`track`]: the SORT-style tool tracker ([`track::Tracker`]: Kalman prediction, IoU and
//!   centroid cost, minimum-cost assignment) and each track's trajectory and motion.
//! - `dead_letter`: rejected messages to `<topic>.dlq`, acknowledged before the batch is
//!   stored.
//! - `commit`: the batch in one database transaction ([`orstream_record::Store::write`]),
//!   retried while the store is away; its spans and metrics.
//! - `publish`: derived events and track frames from the outbox to their topics, after the
//!   commit.
//! - `service`: [`Sink`], the loop taking each batch through these steps; its health reports
//!   ([`Sink::with_health`]).
//! - `progress`: [`Stats`] and [`Progress`], the figures and readiness of a running sink.
//! - `metrics`: the sink's instruments from [`orstream_bus::metrics`].
//! - `error`: [`SinkError`] (the store's own errors are [`orstream_record::StoreError`]).
//!
//! # Exactly once
//!
//! For each batch of messages the sink writes, in ONE database transaction: the record's rows,
//! the next offset to read of every partition in the batch, the derivation state of every
//! stream the batch touched, and the derived events into an outbox. Offsets and states are
//! compare-and-set against what the sink read, so a second sink on the same partitions, or a
//! retried commit that had in fact landed, rolls back as a conflict and the sink reloads.
//! On start and after every rebalance the consumer is moved (seek) to the offsets stored in the
//! database, never the group's: the group only spreads partitions over instances, and its
//! offsets are committed after each transaction as a hint for monitoring. Every row has a
//! natural unique key and is inserted with `ON CONFLICT DO NOTHING`, so a replay is a no-op.
//!
//! Derived events are published from the outbox after the transaction commits and deleted
//! once the broker acknowledged them. A crash in between publishes them again with the same
//! deterministic ids (SHA-256 of kind, stream, epoch, class, first seq), so consumers
//! deduplicate on `event_id`. Dead letters are sent and acknowledged before the transaction
//! that records their offsets; a crash in between can send one twice (at least once).
//!
//! The store unavailable: the sink reports not ready ([`Progress::is_ready`]), keeps the
//! batch and retries with exponential backoff; nothing is acknowledged until it is stored.
//!
//! # Library use
//!
//! ```no_run
//! use orstream_record::{Store, query};
//! use orstream_sink::derive::StreamState;
//! use orstream_sink::{Sink, SinkConfig};
//! use tokio_util::sync::CancellationToken;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = SinkConfig {
//!     store: "sqlite://record.db".into(),
//!     ..SinkConfig::default()
//! };
//! let store = Store::open(&config.store)?; // or "postgres://user:pass@host/db"
//! let bus = orstream_bus::Bus::memory(); // or Bus::kafka(config.kafka.clone())?
//! let sink = Sink::new(config, bus, store)?;
//! let progress = sink.progress(); // readiness and figures, from any thread
//! let shutdown = CancellationToken::new();
//! let stop = shutdown.clone();
//! let worker = std::thread::spawn(move || sink.run(shutdown));
//! // ... when the input is done (e.g. progress.stats().results reached the frame count):
//! stop.cancel();
//! let stats = worker.join().expect("sink thread")?;
//! println!("{} results, {} events, ready={}", stats.results, stats.presences, progress.is_ready());
//!
//! let mut store = Store::open("sqlite://record.db")?;
//! for case in query::cases::<StreamState>(&mut store)? {
//!     let timeline = query::timeline::<StreamState>(&mut store, &case.case_id)?;
//!     # let _ = timeline;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`Sink::run`] blocks its thread: the bus and the store are blocking clients, and one
//! thread per sink keeps the order of work per partition obvious.

mod cache;
mod commit;
mod config;
mod consume;
mod dead_letter;
mod decode;
pub mod derive;
mod error;
mod metrics;
mod prepare;
mod progress;
mod publish;
mod service;
pub mod track;

pub use config::{CategoryName, DeriveConfig, SERVICE, SinkConfig, TrackingConfig};
pub use decode::{Input, Rejection, Source, decode};
pub use error::SinkError;
pub use progress::{Progress, Stats};
pub use service::Sink;
