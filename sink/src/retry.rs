//! Waiting between tries. Every retry of the sink (creating topics, loading offsets and
//! state, sending dead letters, storing a batch, publishing the outbox) paces itself with the
//! same doubling [`backoff`] and waits with [`pause`], which wakes at shutdown: a sink waiting
//! for its store or broker must still stop at once when asked.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// The pause before retry number `attempt` (0-based): `initial` doubling up to `max`.
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    initial
        .checked_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max)
}

/// Waits `d`, waking early when `shutdown` is cancelled; false when it was.
pub(crate) fn pause(d: Duration, shutdown: &CancellationToken) -> bool {
    let until = Instant::now() + d;
    while !shutdown.is_cancelled() {
        let now = Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(1));
        let got: Vec<u128> = (0..6).map(|a| backoff(a, i, m).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(200, i, m), m);
    }

    #[test]
    fn pause_wakes_on_shutdown() {
        let token = CancellationToken::new();
        token.cancel();
        assert!(!pause(Duration::from_secs(3600), &token));
    }
}
