//! The wall clock, in the contract's units: nanoseconds (capture and result times) and
//! milliseconds (bus timestamps) since the Unix epoch, UTC. One reading for every service, so
//! the latencies they report subtract times taken the same way.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch now; 0 if the clock is before 1970, `i64::MAX` past 2262.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// Milliseconds since the Unix epoch now; 0 if the clock is before 1970.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Seconds since the Unix epoch now; 0 if the clock is before 1970.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_units_agree() {
        let (s, ms, ns) = (now_secs(), now_ms(), now_ns());
        // Read in that order, each later reading is at least the earlier one in its unit.
        assert!(ms / 1000 >= i64::try_from(s).unwrap_or(i64::MAX));
        assert!(ns / 1_000_000 >= ms);
        assert!(s > 1_600_000_000, "the clock reads before 2020: {s}");
    }
}
