//! One copy of what orstream's tests need around the code under test, used only as a
//! dev-dependency (by `tests/`, the crates' `tests/`, benches and examples, and the sink's unit
//! tests).
//!
//! - [`kafka`]: the broker the project's scripts start, probed so that a test that needs it
//!   fails with the way out instead of passing silently.
//! - [`otlp`]: a fake OTLP/HTTP collector that keeps what it receives.
//! - [`names`]: topic, group, schema and file names no other test or run uses.
//! - [`store`]: a PostgreSQL schema or SQLite file of the record that no other test sees.
//! - [`script`]: deterministic results and stream events of a case that exercise every
//!   derivation rule of the sink.
//! - [`topic`]: the records producers of the contract write, publishing them, reading a topic
//!   back with a fresh group and decoding what was read (on either bus).
//! - [`wait`]: polling a condition until it holds, failing after a deadline.
//! - [`process`]: signals to a spawned `orstream` process and its SIGTERM drain.
//! - [`scripts`]: the project's `scripts/*.sh`, run for what they print.
//! - [`service`]: an `orstream <service>` process with its health endpoint and log.
//! - [`metrics`]: `GET` on a service's endpoint and Prometheus text scraping.
//! - [`tally`]: lost and duplicated frames in a set of results.
//! - [`tls`]: the stack's CA and client certificates, and CAs nobody trusts.
//! - [`browser`]: headless Chromium through chromedriver, for the record page.
//!
//! It depends on the bus, the contract and the record only (never on a service crate), so every
//! service crate's tests can use it; the unit tests (in `src/`) of those three crates cannot,
//! since they build another instance of that crate.

// A helper's panic is the failing test's report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod browser;
pub mod kafka;
pub mod metrics;
pub mod names;
pub mod otlp;
pub mod process;
pub mod script;
pub mod scripts;
pub mod service;
pub mod store;
pub mod tally;
pub mod tls;
pub mod topic;
pub mod wait;
