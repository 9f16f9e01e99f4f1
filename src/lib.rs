//! The `orstream` command's library: everything the binary does, testable without it.
//!
//! - [`demo`]: the embedded demo — sources through the in-process bus, every frame accounted.
//! - [`eval`]: `orstream eval`, the record against the ground truth of a set of clips.
//! - [`commands`]: the service subcommands (`ingest`, `infer`, `sink`, ...).
//! - [`load`]: `orstream load`, the load generator and latency probe for a deployment.
//! - [`telemetry`]: logs, traces, metrics and health endpoints; where settings come from.
//!
//! Signals, exit codes, retries and configuration layers are `orstream_shell`'s.
//!
//! `src/main.rs` only parses arguments and calls in here.

pub mod commands;
pub mod demo;
pub mod eval;
pub mod load;
pub mod telemetry;
