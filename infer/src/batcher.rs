//! The cross-stream micro-batcher, as a state machine driven with explicit times (so it is
//! tested with paused tokio time, and driven by a thread in the worker).
//!
//! Frames wait in arrival order. A batch is due when `batch_size` frames wait, or when the
//! oldest has waited `max_linger`, or when no other frame is expected before that (the
//! smoothed gap between arrivals says the next one comes after the linger ends, so waiting
//! would add latency and no frame); the driver takes it when a replica is free. Nothing is
//! reordered: a batch is the oldest waiting frames, so each stream's frames leave in order.
//!
//! Live mode adds freshness: a frame whose deadline (capture time + latency budget) falls
//! before the moment its batch would finish (now + the measured batch latency) is answered
//! [`Skip::Stale`] instead of run; and when more frames wait than the next batch takes (the
//! replicas cannot keep up) and more than `max_pending_per_stream` of them are one stream's,
//! the oldest of those is answered [`Skip::Overload`] — the newest frame per stream wins.
//! Archive mode runs every frame.
//!
//! Adaptive batch size (AIMD): after each batch the measured latency is compared with a
//! target; under it the batch size grows by one, over it the size halves, within
//! `1..=max_batch_size`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A frame waiting for a batch, with what the batcher needs to know about it.
#[derive(Debug)]
pub struct Pending<T> {
    /// Position in the worker's intake; increasing.
    pub ticket: u64,
    /// The stream it belongs to.
    pub stream: Arc<str>,
    /// When it reached the batcher.
    pub arrived: Instant,
    /// Live mode: when its result is due; `None` runs it whatever the time.
    pub deadline: Option<Instant>,
    /// The payload (the prepared frame).
    pub item: T,
}

/// Why a frame was answered without running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// It could not meet its deadline.
    Stale,
    /// A newer frame of its stream superseded it under overload.
    Overload,
    /// Ingest's privacy gate withheld its image: there is nothing to run.
    Redacted,
}

/// The limits a batch is built within, from the `[batch]` table and the mode.
#[derive(Debug, Clone, PartialEq)]
pub struct BatcherSettings {
    /// Most frames in one forward pass (also the ceiling of the adaptive size).
    pub max_batch_size: usize,
    /// Longest the oldest frame waits for a batch to fill.
    pub max_linger: Duration,
    /// Live mode: frames of one stream that may wait; `None` (archive) never supersedes.
    pub max_pending_per_stream: Option<usize>,
    /// Adaptive batch size: the batch latency to stay under; `None` keeps `max_batch_size`.
    pub target_latency: Option<Duration>,
}

/// Frames waiting for a batch and the measured batch latency; the driver feeds it frames and
/// times and takes the batches and skips it gives (see the module doc for when).
#[derive(Debug)]
pub struct Batcher<T> {
    settings: BatcherSettings,
    queue: VecDeque<Pending<T>>,
    per_stream: HashMap<Arc<str>, usize>,
    skipped: Vec<(Pending<T>, Skip)>,
    batch_size: usize,
    /// Smoothed latency of a batch (forward + postprocess), for the stale check.
    expected_latency: Duration,
    /// When the last frame arrived, and the smoothed gap between arrivals (weight 1/8 on the
    /// newest), once two frames came.
    last_arrival: Option<Instant>,
    mean_gap: Option<Duration>,
}

impl<T> Batcher<T> {
    /// An empty batcher. With adaptive sizing the batch size starts at 1 and grows.
    pub fn new(settings: BatcherSettings) -> Self {
        let max = settings.max_batch_size.max(1);
        let batch_size = if settings.target_latency.is_some() {
            1
        } else {
            max
        };
        Self {
            settings: BatcherSettings {
                max_batch_size: max,
                ..settings
            },
            queue: VecDeque::new(),
            per_stream: HashMap::new(),
            skipped: Vec::new(),
            batch_size,
            expected_latency: Duration::ZERO,
            last_arrival: None,
            mean_gap: None,
        }
    }

    /// Frames waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no frame waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The batch size now (fixed, or the adaptive one).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Seeds the expected batch latency (from the warm-up) before any batch was measured.
    pub fn set_expected_latency(&mut self, latency: Duration) {
        self.expected_latency = latency;
    }

    fn is_stale(&self, pending: &Pending<T>, now: Instant) -> bool {
        pending
            .deadline
            .is_some_and(|deadline| deadline < now + self.expected_latency)
    }

    /// Adds a frame that arrived at `now`; frames must come in ticket order.
    pub fn push(&mut self, pending: Pending<T>, now: Instant) {
        if let Some(last) = self.last_arrival {
            let gap = now.saturating_duration_since(last);
            self.mean_gap = Some(match self.mean_gap {
                Some(mean) => (mean * 7 + gap) / 8,
                None => gap,
            });
        }
        self.last_arrival = Some(now);
        if self.is_stale(&pending, now) {
            self.skipped.push((pending, Skip::Stale));
            return;
        }
        *self.per_stream.entry(pending.stream.clone()).or_insert(0) += 1;
        let stream = pending.stream.clone();
        self.queue.push_back(pending);
        // Overload is more waiting than the next batch takes; below that, frames of one stream
        // lingering together all run in that batch and nothing is superseded.
        let over = self.queue.len() > self.batch_size
            && self
                .settings
                .max_pending_per_stream
                .is_some_and(|max| self.per_stream.get(&stream).is_some_and(|n| *n > max));
        if over
            && let Some(index) = self.queue.iter().position(|p| p.stream == stream)
            && let Some(oldest) = self.queue.remove(index)
        {
            self.forget(&oldest.stream);
            self.skipped.push((oldest, Skip::Overload));
        }
    }

    fn forget(&mut self, stream: &Arc<str>) {
        if let Some(waiting) = self.per_stream.get_mut(stream) {
            *waiting -= 1;
            if *waiting == 0 {
                self.per_stream.remove(stream);
            }
        }
    }

    /// Whether a batch is due at `now`: enough frames wait, or the oldest has lingered long
    /// enough, or the next frame is not expected before the linger ends.
    pub fn is_due(&self, now: Instant) -> bool {
        let Some(oldest) = self.queue.front() else {
            return false;
        };
        self.queue.len() >= self.batch_size
            || now >= oldest.arrived + self.settings.max_linger
            || !self.expects_arrival_in_linger()
    }

    /// Whether, by the smoothed gap between arrivals, another frame is expected before the
    /// oldest waiting frame's linger ends (always, until two frames have come).
    pub fn expects_arrival_in_linger(&self) -> bool {
        let (Some(oldest), Some(last), Some(gap)) =
            (self.queue.front(), self.last_arrival, self.mean_gap)
        else {
            return true;
        };
        last + gap <= oldest.arrived + self.settings.max_linger
    }

    /// When the next batch falls due by linger (`None` when nothing waits).
    pub fn next_due(&self) -> Option<Instant> {
        self.queue
            .front()
            .map(|p| p.arrived + self.settings.max_linger)
    }

    /// Takes the next batch: the oldest waiting frames, at most the batch size, after
    /// answering those that can no longer meet their deadline. Call it when [`is_due`]
    /// (or to flush at shutdown). May return an empty batch when every frame was stale.
    ///
    /// [`is_due`]: Self::is_due
    pub fn take_batch(&mut self, now: Instant) -> Vec<Pending<T>> {
        let mut batch = Vec::with_capacity(self.batch_size);
        while batch.len() < self.batch_size {
            let Some(pending) = self.queue.pop_front() else {
                break;
            };
            self.forget(&pending.stream);
            if self.is_stale(&pending, now) {
                self.skipped.push((pending, Skip::Stale));
            } else {
                batch.push(pending);
            }
        }
        batch
    }

    /// The frames answered without running since the last call, in the order they were
    /// skipped.
    pub fn take_skipped(&mut self) -> Vec<(Pending<T>, Skip)> {
        std::mem::take(&mut self.skipped)
    }

    /// Feeds back the measured latency of a finished batch: smooths the stale estimate and,
    /// when adaptive, grows or shrinks the batch size.
    pub fn record_latency(&mut self, batch_len: usize, latency: Duration) {
        self.expected_latency = if self.expected_latency.is_zero() {
            latency
        } else {
            // Exponential smoothing, weight 1/4 on the newest batch.
            (self.expected_latency * 3 + latency) / 4
        };
        if let Some(target) = self.settings.target_latency {
            if latency > target {
                self.batch_size = (self.batch_size / 2).max(1);
            } else if batch_len >= self.batch_size {
                // Grow only from full batches: a partial batch says nothing about a larger one.
                self.batch_size = (self.batch_size + 1).min(self.settings.max_batch_size);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(live: bool) -> BatcherSettings {
        BatcherSettings {
            max_batch_size: 4,
            max_linger: Duration::from_millis(10),
            max_pending_per_stream: live.then_some(1),
            target_latency: None,
        }
    }

    fn pending(ticket: u64, stream: &str, at: Instant, deadline: Option<Instant>) -> Pending<u64> {
        Pending {
            ticket,
            stream: Arc::from(stream),
            arrived: at,
            deadline,
            item: ticket,
        }
    }

    #[test]
    fn newest_frame_per_stream_wins_in_live_mode() {
        let t0 = Instant::now();
        let mut b = Batcher::new(BatcherSettings {
            max_batch_size: 2,
            ..settings(true)
        });
        b.push(pending(0, "a", t0, None), t0);
        b.push(pending(1, "b", t0, None), t0);
        b.push(pending(2, "a", t0, None), t0);
        let skipped: Vec<(u64, Skip)> = b
            .take_skipped()
            .into_iter()
            .map(|(p, s)| (p.ticket, s))
            .collect();
        assert_eq!(skipped, [(0, Skip::Overload)]);
        let batch: Vec<u64> = b.take_batch(t0).into_iter().map(|p| p.ticket).collect();
        assert_eq!(batch, [1, 2]);
    }

    #[test]
    fn sparse_arrivals_do_not_linger_and_dense_ones_do() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Frames 30 ms apart, linger 10 ms: waiting would bring no company.
        let mut sparse = Batcher::new(settings(false));
        for (i, at) in [0, 30, 60].into_iter().enumerate() {
            let now = t0 + ms(at);
            sparse.push(pending(i as u64, "a", now, None), now);
            if i > 0 {
                assert!(sparse.is_due(now), "frame {i} lingered for nothing");
                assert_eq!(sparse.take_batch(now).len(), 1);
            } else {
                // One frame says nothing about the rate yet: it lingers.
                assert!(!sparse.is_due(now));
                assert_eq!(sparse.take_batch(now + ms(10)).len(), 1);
            }
        }
        // Frames 2 ms apart: the batch waits to fill (or for its linger).
        let mut dense = Batcher::new(settings(false));
        for (i, at) in [0, 2, 4].into_iter().enumerate() {
            let now = t0 + ms(at);
            dense.push(pending(i as u64, "a", now, None), now);
            assert!(
                !dense.is_due(now),
                "frame {i}: a batch of 4 is still filling"
            );
        }
        assert!(dense.is_due(t0 + ms(10)));
    }

    #[test]
    fn stale_frames_are_answered_not_run() {
        let t0 = Instant::now();
        let mut b = Batcher::new(settings(true));
        b.set_expected_latency(Duration::from_millis(20));
        b.push(pending(0, "a", t0, Some(t0 + Duration::from_millis(5))), t0);
        b.push(
            pending(1, "b", t0, Some(t0 + Duration::from_millis(40))),
            t0,
        );
        assert_eq!(b.take_skipped().len(), 1);
        let later = t0 + Duration::from_millis(30);
        assert!(b.take_batch(later).is_empty());
        assert_eq!(b.take_skipped()[0].1, Skip::Stale);
    }

    #[test]
    fn aimd_grows_on_full_fast_batches_and_halves_on_slow_ones() {
        let mut b: Batcher<u64> = Batcher::new(BatcherSettings {
            target_latency: Some(Duration::from_millis(50)),
            max_batch_size: 8,
            ..settings(false)
        });
        assert_eq!(b.batch_size(), 1);
        for _ in 0..10 {
            let size = b.batch_size();
            b.record_latency(size, Duration::from_millis(10));
        }
        assert_eq!(b.batch_size(), 8);
        b.record_latency(8, Duration::from_millis(80));
        assert_eq!(b.batch_size(), 4);
        b.record_latency(2, Duration::from_millis(10));
        assert_eq!(b.batch_size(), 4, "a partial batch does not grow the size");
    }
}
