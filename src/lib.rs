//! The `orstream` command's library: everything the binary does, testable without it.
//!
//! - [`demo`]: the embedded demo — sources through the in-process bus, every frame accounted.
//! - [`commands`]: the service subcommands (`ingest`, `infer`, `sink`, ...).
//! - [`shutdown`]: the root cancellation token (SIGINT/SIGTERM).
//!
//! `src/main.rs` only parses arguments and calls in here.

pub mod commands;
pub mod demo;
pub mod shutdown;
pub mod telemetry;
