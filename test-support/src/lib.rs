//! One copy of what orstream's integration tests need around the code under test, used only as
//! a dev-dependency (by `tests/`, `bus/tests`, `ingest/tests`, `infer/tests`, `sink/tests`).
//!
//! - [`kafka`]: the broker the project's scripts start, probed so that a test that needs it
//!   fails with the way out instead of passing silently.
//! - [`names`]: topic, group and file names no other test or run uses.
//! - [`topic`]: publishing records, reading a topic back with a fresh group and decoding what
//!   was read (on either bus).
//! - [`wait`]: polling a condition until it holds, failing after a deadline.
//! - [`process`]: signals to a spawned `orstream` process and its SIGTERM drain.
//! - [`metrics`]: `GET` on a service's endpoint and Prometheus text scraping.
//! - [`tally`]: lost and duplicated frames in a set of results.
//!
//! It depends on the bus and the contract only, so every service crate's integration tests
//! can use it; a crate's unit tests (in `src/`) cannot, since they build another instance of
//! that crate.

// A helper's panic is the failing test's report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod kafka;
pub mod metrics;
pub mod names;
pub mod process;
pub mod tally;
pub mod topic;
pub mod wait;
