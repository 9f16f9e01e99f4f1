//! orstream-shell: what ingest, infer and the sink share around their work, so each service
//! starts, waits, retries, reads the time and stops the same way.
//!
//! Modules:
//! - [`config`]: one way to layer configuration (file, then `ORSTREAM_<SERVICE>_<KEY>`
//!   variables, then flags), with secrets read from files.
//! - [`signals`]: the process's root cancellation token, cancelled by SIGINT/SIGTERM; a second
//!   signal exits at once.
//! - [`retry`](mod@retry): one retry policy: exponential backoff with full jitter under a cap,
//!   waits that wake at shutdown, and the give-up rule (an error retrying cannot fix, or
//!   shutdown).
//! - [`clock`]: the wall clock in the contract's units.
//! - [`digest`]: `sha256:<hex>` of a model file, the digest results and frames carry.
//! - [`exit`]: exit codes and the reasons that pick them (a configuration error is 2 in every
//!   service).
//! - [`http`]: a small HTTP endpoint on a thread of its own (metrics and health, ingest's
//!   admin API), stopped when dropped.
//! - [`tokens`]: bearer tokens of the services' HTTP APIs: checked when read, compared in
//!   constant time.

pub mod clock;
pub mod config;
pub mod digest;
pub mod exit;
pub mod http;
pub mod retry;
pub mod signals;
pub mod tokens;

pub use retry::{Backoff, Streak, pause, pause_while, retry};
