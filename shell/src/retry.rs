//! Waiting between tries, the same way in every service.
//!
//! The policy: the pause before try `n` is drawn uniformly from zero to `initial * 2^n`, capped
//! at `max` ("full jitter"). Doubling backs off from a dependency that is down; the cap bounds
//! how late a recovery is noticed; the jitter keeps many clients that failed together (every
//! camera of a theatre when the broker restarts) from coming back in lockstep. Every wait wakes
//! at shutdown: a service waiting for its store or broker still stops at once when asked.
//!
//! The give-up rule: a retry stops at the first error the caller says retrying cannot fix, or
//! at shutdown (the work in hand is then read again at the next start); a dependency that is
//! merely away is waited for, however long, while readiness reports it.
//!
//! Two shapes: [`retry`] blocks in place until the call succeeds (the work in hand cannot go on
//! without it); [`Streak`] counts consecutive failures of work that is tried again on a later
//! turn of a loop instead, so the loop (polling, group membership) goes on.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

/// How often a wait looks at the shutdown token (and calls its tick).
const TICK: Duration = Duration::from_millis(50);

/// A backoff schedule: `initial` doubling up to `max`, each pause jittered below that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first pause.
    pub initial: Duration,
    /// The ceiling of every pause.
    pub max: Duration,
}

impl Backoff {
    /// The ceiling of the pause before retry number `attempt` (0-based): `initial` doubled
    /// `attempt` times, at most `max`.
    pub fn ceiling(self, attempt: u32) -> Duration {
        self.initial
            .checked_mul(1u32.checked_shl(attempt.min(30)).unwrap_or(u32::MAX))
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The pause before retry number `attempt`: uniform in zero..=[`ceiling`](Self::ceiling).
    pub fn delay(self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(0..=nanos))
    }
}

/// Waits `d`, waking early when `shutdown` is cancelled; false when it was.
pub fn pause(d: Duration, shutdown: &CancellationToken) -> bool {
    pause_while(d, shutdown, || {})
}

/// [`pause`], calling `tick` at least every 50 ms while it waits (a liveness beat: a service
/// waiting on purpose is alive).
pub fn pause_while(d: Duration, shutdown: &CancellationToken, mut tick: impl FnMut()) -> bool {
    let until = Instant::now() + d;
    while !shutdown.is_cancelled() {
        let now = Instant::now();
        if now >= until {
            return true;
        }
        tick();
        std::thread::sleep((until - now).min(TICK));
    }
    false
}

/// Calls `call` until it succeeds, pausing between tries while `retriable` says the failure
/// may pass; `on_retry` reports each such failure with its attempt number (0-based).
/// `Ok(None)` when shutdown came during a pause: the caller gives up the work in hand, which
/// is read again on the next start.
pub fn retry<T, E>(
    backoff: Backoff,
    shutdown: &CancellationToken,
    call: impl FnMut() -> Result<T, E>,
    retriable: impl Fn(&E) -> bool,
    on_retry: impl FnMut(&E, u32),
) -> Result<Option<T>, E> {
    retry_at_most(u32::MAX, backoff, shutdown, call, retriable, on_retry)
}

/// [`retry`], giving up after `tries` calls: the last failure is returned, retriable or not.
pub fn retry_at_most<T, E>(
    tries: u32,
    backoff: Backoff,
    shutdown: &CancellationToken,
    mut call: impl FnMut() -> Result<T, E>,
    retriable: impl Fn(&E) -> bool,
    mut on_retry: impl FnMut(&E, u32),
) -> Result<Option<T>, E> {
    let mut attempt: u32 = 0;
    loop {
        match call() {
            Ok(done) => return Ok(Some(done)),
            Err(e) if retriable(&e) && attempt.saturating_add(1) < tries => {
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
pub struct Streak(u32);

impl Streak {
    /// Counts a failure and returns the pause before the next try.
    pub fn failed(&mut self, backoff: Backoff) -> Duration {
        let delay = backoff.delay(self.0);
        self.0 = self.0.saturating_add(1);
        delay
    }

    /// Failures counted since the last success.
    pub fn failures(&self) -> u32 {
        self.0
    }

    /// The work succeeded: the next failure pauses briefly again.
    pub fn reset(&mut self) {
        self.0 = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };

    #[test]
    fn the_ceiling_doubles_up_to_the_cap() {
        let got: Vec<u128> = (0..6).map(|a| SCHEDULE.ceiling(a).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(SCHEDULE.ceiling(200), SCHEDULE.max);
    }

    #[test]
    fn delays_are_jittered_below_the_ceiling() {
        for attempt in 0..8 {
            let delays: Vec<Duration> = (0..200).map(|_| SCHEDULE.delay(attempt)).collect();
            assert!(delays.iter().all(|d| *d <= SCHEDULE.ceiling(attempt)));
            // 200 draws from a continuous range: all equal would mean no jitter.
            assert!(
                delays.iter().any(|d| *d != delays[0]),
                "no jitter: {delays:?}"
            );
        }
    }

    #[test]
    fn pause_wakes_on_shutdown() {
        let token = CancellationToken::new();
        token.cancel();
        assert!(!pause(Duration::from_secs(3600), &token));
    }

    #[test]
    fn pause_while_ticks_as_it_waits() {
        let mut ticks = 0;
        assert!(pause_while(
            Duration::from_millis(120),
            &CancellationToken::new(),
            || ticks += 1
        ));
        assert!(ticks >= 1, "{ticks}");
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
    fn retry_at_most_gives_up_after_its_tries() {
        let mut calls = 0;
        let mut attempts = Vec::new();
        let got: Result<Option<()>, &str> = retry_at_most(
            3,
            NO_WAIT,
            &CancellationToken::new(),
            || {
                calls += 1;
                Err("away")
            },
            |_| true,
            |_, attempt| attempts.push(attempt),
        );
        assert_eq!(got, Err("away"));
        assert_eq!((calls, attempts), (3, vec![0, 1]));
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
        let mut streak = Streak::default();
        assert!(streak.failed(SCHEDULE) <= SCHEDULE.ceiling(0));
        assert!(streak.failed(SCHEDULE) <= SCHEDULE.ceiling(1));
        assert_eq!(streak.failures(), 2);
        streak.reset();
        assert_eq!(streak.failures(), 0);
        assert!(streak.failed(SCHEDULE) <= SCHEDULE.ceiling(0));
    }
}
