//! The wall clock the worker stamps and measures results by: the services' one clock
//! ([`orstream_shell::clock`]), in the contract's unit (nanoseconds since the Unix epoch, UTC).
//!
//! Production code reads time here rather than through [`crate::synthetic`], which is test
//! data; the generated frames take their capture time from this same clock. [`TICK`] is how
//! often a waiting stage looks again (at cancellation, at a queue), shared so every stage of the
//! worker answers a stop within the same time.

use std::time::Duration;

/// How long a blocking poll or channel wait lasts before the loop looks at the stop token.
pub(crate) const TICK: Duration = Duration::from_millis(50);

pub use orstream_shell::clock::now_ns;
