//! What a running sink shows of itself: [`Stats`] (work acknowledged so far) and readiness
//! through [`Progress`], readable from any thread while the sink runs, and the process's
//! health checks through [`Reporter`]. Figures are updated only once a transaction stored
//! what they count, so they never run ahead of the record.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use orstream_bus::metrics::{DEPENDENCY_PATIENCE, DependencyWatch, HealthReporter, checks};

/// Figures of a sink run. Counts are of work acknowledged (stored), unless named otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages stored (results, lifecycle events and rejected messages).
    pub messages: u64,
    /// Frame results stored.
    pub results: u64,
    /// Lifecycle events stored.
    pub stream_events: u64,
    /// Messages read again below the stored offset and skipped (after a restart or seek).
    pub skipped_replays: u64,
    /// Rows of the record written (cases, streams, lifecycle events, events, gaps, anomalies,
    /// frames).
    pub rows: u64,
    /// Presence intervals closed.
    pub presences: u64,
    /// Gaps closed.
    pub gaps: u64,
    /// Tool tracks ended.
    pub tracks: u64,
    /// Anomalies recorded.
    pub anomalies: u64,
    /// Messages sent to a dead-letter topic.
    pub dead_letters: u64,
    /// Store transactions committed.
    pub transactions: u64,
    /// Transactions rolled back because another writer moved an offset or state.
    pub conflicts: u64,
    /// Store calls retried after a retriable failure.
    pub store_retries: u64,
    /// Derived events and track frames acknowledged by their topics.
    pub published: u64,
    /// Largest lag seen: from a message's timestamp to the commit that stored it, in ms.
    pub max_lag_ms: u64,
}

/// Lags kept for quantiles: one bucket per millisecond up to this, the rest in the last.
const LAG_BUCKETS: usize = 60_001;

/// A live view of a running sink: readiness, figures and the lag distribution. Cheap to clone.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<ProgressInner>,
}

struct ProgressInner {
    ready: AtomicBool,
    stats: Mutex<Stats>,
    lags: Mutex<Vec<u64>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("ready", &self.is_ready())
            .field("stats", &self.stats())
            .finish()
    }
}

impl Default for Progress {
    fn default() -> Self {
        Self {
            inner: Arc::new(ProgressInner {
                ready: AtomicBool::new(false),
                stats: Mutex::new(Stats::default()),
                lags: Mutex::new(vec![0; LAG_BUCKETS]),
            }),
        }
    }
}

impl Progress {
    /// Whether the store is reachable and the sink is consuming. False while the store is
    /// down (nothing is acknowledged then).
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }

    /// A copy of the figures so far.
    pub fn stats(&self) -> Stats {
        self.inner
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The `q` quantile (0..=1) of the per-message lag, in ms (None before the first commit).
    pub fn lag_quantile_ms(&self, q: f64) -> Option<u64> {
        let lags = self
            .inner
            .lags
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let total: u64 = lags.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (ms, n) in lags.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(ms as u64);
            }
        }
        None
    }

    /// Forgets the lag distribution (benchmarks: after warm-up).
    pub fn reset_lags(&self) {
        let mut lags = self
            .inner
            .lags
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        lags.iter_mut().for_each(|n| *n = 0);
    }

    fn set_ready(&self, ready: bool) {
        let was = self.inner.ready.swap(ready, Ordering::SeqCst);
        if was != ready {
            if ready {
                tracing::info!("sink ready");
            } else {
                tracing::warn!("sink not ready: the store is unavailable");
            }
        }
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut Stats)) {
        f(&mut self
            .inner
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner));
    }

    pub(crate) fn record_lags(&self, lags: impl Iterator<Item = u64>) {
        let mut buckets = self
            .inner
            .lags
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for lag in lags {
            let i = usize::try_from(lag)
                .unwrap_or(usize::MAX)
                .min(LAG_BUCKETS - 1);
            buckets[i] += 1;
        }
    }
}

/// Where readiness and figures go: the [`Progress`] the sink's users read, and the health
/// reporter of the process (`/readyz`, `/healthz`), with the watch on the store's calls.
#[derive(Clone)]
pub(crate) struct Reporter {
    pub(crate) progress: Progress,
    pub(crate) health: Arc<dyn HealthReporter>,
    watch: DependencyWatch,
}

/// The process's health with the `database` check mirrored in the sink's own readiness, so
/// the dependency watch's verdict shows in both.
struct Mirrored {
    progress: Progress,
    health: Arc<dyn HealthReporter>,
}

impl HealthReporter for Mirrored {
    fn beat(&self) {
        self.health.beat();
    }

    fn set_ready(&self, check: &str, ready: bool) {
        if check == checks::DATABASE {
            self.progress.set_ready(ready);
        }
        self.health.set_ready(check, ready);
    }
}

impl Reporter {
    pub(crate) fn new(progress: Progress, health: Arc<dyn HealthReporter>) -> Self {
        let mirrored = Arc::new(Mirrored {
            progress: progress.clone(),
            health: health.clone(),
        });
        Self {
            progress,
            health,
            watch: DependencyWatch::new(mirrored, DEPENDENCY_PATIENCE),
        }
    }

    /// Runs one call to the store under the dependency watch: a store that hangs makes the
    /// sink not ready within seconds, and never fails its liveness.
    pub(crate) fn store_call<T, E>(&self, f: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        self.watch.call(checks::DATABASE, f)
    }

    /// Runs work that waits on the store and handles its failures itself (the outbox round)
    /// under the dependency watch.
    pub(crate) fn store_wait<T>(&self, f: impl FnOnce() -> T) -> T {
        self.watch.wait_on(checks::DATABASE, f)
    }

    /// Whether the store answers: the sink's readiness and the `database` check.
    pub(crate) fn store_ready(&self, ready: bool) {
        self.progress.set_ready(ready);
        self.health.set_ready(checks::DATABASE, ready);
    }

    /// A store call failed and is tried again: nothing is acknowledged until it answers, and
    /// waiting for it is the loop turning, not a hang.
    pub(crate) fn store_retry(&self) {
        self.store_ready(false);
        self.health.beat();
        self.progress.update(|s| s.store_retries += 1);
    }
}
