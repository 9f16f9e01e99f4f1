//! [`Health`]: liveness (a heartbeat the main loop keeps up) and readiness (named checks).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use orstream_bus::metrics::HealthReporter;

/// Monotonic time for [`Health`]: the time elapsed since an origin of the clock's choosing.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Time since the clock's origin; never goes backwards.
    fn now(&self) -> Duration;
}

/// The process's monotonic clock ([`Instant`]).
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to: for tests and simulations of liveness.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at its origin.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(nanos(by), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::SeqCst))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A service's health, shared between its loops (which report) and the HTTP endpoint (which
/// answers `/healthz` and `/readyz`). Cheap to clone; every clone is the same health.
///
/// - Liveness: the main loop calls [`Health::beat`] each time round (a relaxed atomic store,
///   fine to call per poll). The service is alive while the last beat is younger than the
///   staleness limit; creating the handle counts as a beat.
/// - Readiness: the service sets named checks ([`Health::set_ready`], names from
///   `orstream_bus::metrics::checks`); it is ready when it has set at least one check and
///   every check is true. A service declares its checks as false at start and turns each true
///   as it comes up.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    clock: Arc<dyn Clock>,
    stale_after: Duration,
    /// Clock time of the last beat, in nanoseconds.
    last_beat: AtomicU64,
    checks: Mutex<BTreeMap<String, bool>>,
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health")
            .field("liveness", &self.liveness())
            .field("readiness", &self.readiness())
            .finish()
    }
}

impl Health {
    /// Health on the system clock; not alive once no beat came for `stale_after`.
    pub fn new(stale_after: Duration) -> Self {
        Self::with_clock(stale_after, Arc::new(SystemClock::new()))
    }

    /// Health on a given clock (a [`ManualClock`] in tests).
    pub fn with_clock(stale_after: Duration, clock: Arc<dyn Clock>) -> Self {
        let now = nanos(clock.now());
        Self {
            inner: Arc::new(Inner {
                clock,
                stale_after,
                last_beat: AtomicU64::new(now),
                checks: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    /// The main loop went round once more.
    pub fn beat(&self) {
        let now = nanos(self.inner.clock.now());
        self.inner.last_beat.fetch_max(now, Ordering::Relaxed);
    }

    /// Sets the readiness check `check` (added the first time it is set).
    pub fn set_ready(&self, check: &str, ready: bool) {
        let mut checks = self
            .inner
            .checks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match checks.get_mut(check) {
            Some(value) => *value = ready,
            None => {
                checks.insert(check.to_owned(), ready);
            }
        }
    }

    /// Whether the main loop beat recently enough.
    pub fn liveness(&self) -> Liveness {
        let now = self.inner.clock.now();
        let last = Duration::from_nanos(self.inner.last_beat.load(Ordering::Relaxed));
        let since_beat = now.saturating_sub(last);
        Liveness {
            alive: since_beat <= self.inner.stale_after,
            since_beat,
            stale_after: self.inner.stale_after,
        }
    }

    /// Every readiness check and its value.
    pub fn readiness(&self) -> Readiness {
        let checks = self
            .inner
            .checks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Readiness {
            checks: checks.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }
}

impl HealthReporter for Health {
    fn beat(&self) {
        Health::beat(self);
    }

    fn set_ready(&self, check: &str, ready: bool) {
        Health::set_ready(self, check, ready);
    }
}

/// The answer to "is the main loop turning?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// Whether the last beat is younger than `stale_after`.
    pub alive: bool,
    /// Time since the last beat.
    pub since_beat: Duration,
    /// The staleness limit.
    pub stale_after: Duration,
}

impl Liveness {
    /// The `/healthz` body: JSON with the status and the timings in seconds.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "status": if self.alive { "alive" } else { "stale" },
            "since_last_beat_s": self.since_beat.as_secs_f64(),
            "stale_after_s": self.stale_after.as_secs_f64(),
        })
        .to_string()
    }
}

/// The answer to "can this service do its work?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Every check set so far and its value, by name.
    pub checks: BTreeMap<String, bool>,
}

impl Readiness {
    /// Ready: at least one check was set and every check is true.
    pub fn ready(&self) -> bool {
        !self.checks.is_empty() && self.checks.values().all(|ok| *ok)
    }

    /// The names of the checks that are false.
    pub fn failing(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|(_, ok)| !**ok)
            .map(|(name, _)| name.as_str())
            .collect()
    }

    /// The `/readyz` body: JSON with the status, every check, and the failing ones.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "status": if self.ready() { "ready" } else { "not_ready" },
            "checks": self.checks,
            "failing": self.failing(),
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_follows_the_heartbeat() {
        let clock = ManualClock::new();
        let health = Health::with_clock(Duration::from_secs(5), Arc::new(clock.clone()));
        assert!(health.liveness().alive, "creation counts as a beat");
        clock.advance(Duration::from_secs(5));
        assert!(
            health.liveness().alive,
            "exactly at the limit is still alive"
        );
        clock.advance(Duration::from_millis(1));
        let stale = health.liveness();
        assert!(!stale.alive);
        assert_eq!(stale.since_beat, Duration::from_millis(5001));
        health.beat();
        assert!(health.liveness().alive);
        assert_eq!(health.liveness().since_beat, Duration::ZERO);
    }

    #[test]
    fn clones_share_one_state() {
        let clock = ManualClock::new();
        let health = Health::with_clock(Duration::from_secs(1), Arc::new(clock.clone()));
        let reporter: Box<dyn HealthReporter> = Box::new(health.clone());
        clock.advance(Duration::from_secs(2));
        reporter.beat();
        reporter.set_ready("database", true);
        assert!(health.liveness().alive);
        assert!(health.readiness().ready());
    }

    #[test]
    fn readiness_needs_every_check_and_at_least_one() {
        let health = Health::new(Duration::from_secs(30));
        assert!(!health.readiness().ready(), "nothing reported yet");
        health.set_ready("model_warm", false);
        health.set_ready("partitions_assigned", true);
        let readiness = health.readiness();
        assert!(!readiness.ready());
        assert_eq!(readiness.failing(), ["model_warm"]);
        health.set_ready("model_warm", true);
        assert!(health.readiness().ready());
        assert_eq!(health.readiness().checks.len(), 2);
    }

    #[test]
    fn bodies_are_json() {
        let health = Health::new(Duration::from_secs(30));
        health.set_ready("database", false);
        let body: serde_json::Value = serde_json::from_str(&health.readiness().to_json()).unwrap();
        assert_eq!(body["status"], "not_ready");
        assert_eq!(body["checks"]["database"], false);
        assert_eq!(body["failing"][0], "database");
        let body: serde_json::Value = serde_json::from_str(&health.liveness().to_json()).unwrap();
        assert_eq!(body["status"], "alive");
        assert_eq!(body["stale_after_s"], 30.0);
    }
}
