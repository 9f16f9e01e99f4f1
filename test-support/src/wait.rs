//! Waiting for a condition that other threads or processes bring about.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// How often a condition is checked again.
const EVERY: Duration = Duration::from_millis(50);

/// Checks `done` until it gives a value and returns it; fails naming `what` after `limit`.
/// `done` may itself assert (that a process still runs, say) to fail sooner.
pub fn wait_for<T>(what: &str, limit: Duration, mut done: impl FnMut() -> Option<T>) -> T {
    showing(what, limit, || done().ok_or(""))
}

/// [`wait_for`] a condition without a value.
pub fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    wait_for(what, limit, || done().then_some(()));
}

/// [`wait_for`], where `done` answers `Err(state)` while not there yet: a timeout shows the
/// last state (counters, say), which tells where it got stuck.
pub fn showing<T, S: Display>(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> Result<T, S>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        match done() {
            Ok(value) => return value,
            Err(state) => {
                if Instant::now() >= deadline {
                    let state = state.to_string();
                    let sep = if state.is_empty() { "" } else { ": " };
                    panic!("timed out after {limit:?} waiting for {what}{sep}{state}");
                }
            }
        }
        std::thread::sleep(EVERY);
    }
}
