//! orstream-shell: what ingest, infer and the sink share around their work, so each service
//! waits, retries and reads the time the same way.
//!
//! Modules:
//! - [`retry`](mod@retry): one retry policy: exponential backoff with full jitter under a cap, waits that
//!   wake at shutdown, and the give-up rule (an error retrying cannot fix, or shutdown).
//! - [`clock`]: the wall clock in the contract's units.

pub mod clock;
pub mod retry;

pub use retry::{Backoff, Streak, pause, pause_while, retry};
