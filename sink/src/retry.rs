//! Waiting between tries. Every retry of the sink (creating topics, loading offsets and
//! state, sending dead letters, storing a batch, publishing the outbox) paces itself with the
//! same doubling [`backoff`] and waits with [`pause`], which wakes at shutdown: a sink waiting
//! for its store or broker must still stop at once when asked.
//!
//! Two shapes: [`retry`] blocks in place until the call succeeds (the batch in hand cannot
//! go on without it); [`Streak`] counts consecutive failures of work that is tried again on a
//! later turn of the loop instead, so polling (and with it group membership) goes on.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// The pause before retry number `attempt` (0-based): `initial` doubling up to `max`.
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    initial
        .checked_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max)
}

/// The sink's [`backoff`] schedule, from `retry_initial` and `retry_max`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
}

impl Backoff {
    pub(crate) fn delay(self, attempt: u32) -> Duration {
        backoff(attempt, self.initial, self.max)
    }
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

/// Calls `call` until it succeeds, pausing between tries while `retriable` says the failure
/// may pass; `on_retry` reports each such failure with its attempt number (0-based).
/// `Ok(None)` when shutdown came during a pause: the caller gives up the work in hand, which
/// is read again on the next start.
pub(crate) fn retry<T, E>(
    backoff: Backoff,
    shutdown: &CancellationToken,
    mut call: impl FnMut() -> Result<T, E>,
    retriable: impl Fn(&E) -> bool,
    mut on_retry: impl FnMut(&E, u32),
) -> Result<Option<T>, E> {
    let mut attempt = 0;
    loop {
        match call() {
            Ok(done) => return Ok(Some(done)),
            Err(e) if retriable(&e) => {
                on_retry(&e, attempt);
                if !pause(backoff.delay(attempt), shutdown) {
                    return Ok(None);
                }
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Consecutive failures of work retried on a later turn of the loop, for its next pause.
#[derive(Debug, Default)]
pub(crate) struct Streak(u32);

impl Streak {
    /// Counts a failure and returns the pause before the next try.
    pub(crate) fn failed(&mut self, backoff: Backoff) -> Duration {
        let delay = backoff.delay(self.0);
        self.0 = self.0.saturating_add(1);
        delay
    }

    pub(crate) fn reset(&mut self) {
        self.0 = 0;
    }
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

    const NO_WAIT: Backoff = Backoff {
        initial: Duration::ZERO,
        max: Duration::ZERO,
    };

    #[test]
    fn retry_tries_until_the_call_succeeds() {
        let mut calls = 0;
        let mut attempts = Vec::new();
        let got: Result<Option<u32>, &str> = retry(
            NO_WAIT,
            &CancellationToken::new(),
            || {
                calls += 1;
                if calls < 3 { Err("away") } else { Ok(calls) }
            },
            |_| true,
            |_, attempt| attempts.push(attempt),
        );
        assert_eq!(got, Ok(Some(3)));
        assert_eq!(attempts, vec![0, 1]);
    }

    #[test]
    fn retry_returns_an_error_retrying_cannot_fix() {
        let got: Result<Option<()>, &str> = retry(
            NO_WAIT,
            &CancellationToken::new(),
            || Err("fatal"),
            |_| false,
            |_, _| {},
        );
        assert_eq!(got, Err("fatal"));
    }

    #[test]
    fn retry_gives_up_at_shutdown() {
        let token = CancellationToken::new();
        token.cancel();
        let got: Result<Option<()>, &str> =
            retry(NO_WAIT, &token, || Err("away"), |_| true, |_, _| {});
        assert_eq!(got, Ok(None));
    }

    #[test]
    fn a_streak_backs_off_until_reset() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let mut streak = Streak::default();
        assert_eq!(streak.failed(b), Duration::from_millis(100));
        assert_eq!(streak.failed(b), Duration::from_millis(200));
        streak.reset();
        assert_eq!(streak.failed(b), Duration::from_millis(100));
    }
}
