//! Request rate limits: a token bucket per caller.
//!
//! Each caller (a token's name; the peer address for requests without a valid token) may make
//! `burst` requests at once and `per_second` a second over time; a request beyond that gets
//! 429 with `Retry-After`. Buckets of callers quiet for a minute are forgotten, so the table
//! stays as small as the set of recent callers.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Callers remembered before quiet ones are swept.
const SWEEP_AT: usize = 4096;

/// The limit and the buckets.
#[derive(Debug)]
pub struct Limiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Limiter {
    /// `per_second` requests a second, `burst` at once (both at least 1).
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request of `caller`: Ok, or how long until it may ask again.
    pub fn take(&self, caller: &str) -> Result<(), Duration> {
        self.take_at(caller, Instant::now())
    }

    fn take_at(&self, caller: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= SWEEP_AT {
            buckets.retain(|_, (_, at)| now.duration_since(*at) < Duration::from_secs(60));
        }
        let (tokens, at) = buckets
            .entry(caller.to_owned())
            .or_insert((self.burst, now));
        let refilled = *tokens + now.duration_since(*at).as_secs_f64() * self.per_second;
        *tokens = refilled.min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_per_caller() {
        let limiter = Limiter::new(10, 3);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(limiter.take_at("a", start).is_ok());
        }
        let wait = limiter.take_at("a", start).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        // Another caller has a bucket of its own.
        assert!(limiter.take_at("b", start).is_ok());
        // A tenth of a second later, one more.
        let later = start + Duration::from_millis(100);
        assert!(limiter.take_at("a", later).is_ok());
        assert!(limiter.take_at("a", later).is_err());
        // Long quiet refills the burst, not more.
        let much_later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(limiter.take_at("a", much_later).is_ok());
        }
        assert!(limiter.take_at("a", much_later).is_err());
    }
}
