//! The wall clock the worker stamps and measures results by, in the contract's unit
//! (nanoseconds since the Unix epoch, UTC).
//!
//! Production code reads time here rather than through [`crate::synthetic`], which is test
//! data; the generated frames take their capture time from this same clock.

/// Nanoseconds since the Unix epoch now (0 if the clock is before 1970).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
