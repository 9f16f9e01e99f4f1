//! What a load run measured: HDR histograms of each latency, the tally of every frame, the
//! printed table and the same as JSON.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds, from 1 us to an hour, with 3 significant digits.
const HIGHEST_US: u64 = 3_600_000_000;

/// One latency's histogram.
#[derive(Debug, Clone)]
pub struct Latency {
    histogram: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            // 3 significant digits within these bounds is always a valid histogram.
            histogram: Histogram::new_with_bounds(1, HIGHEST_US, 3)
                .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!())),
        }
    }
}

impl Latency {
    /// Records one latency in nanoseconds; negative ones (clocks apart) count as 0.
    pub fn record_ns(&mut self, ns: i64) {
        let us = u64::try_from(ns / 1_000).unwrap_or(0).clamp(1, HIGHEST_US);
        self.histogram.saturating_record(us);
    }

    /// How many were recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The summary in milliseconds.
    pub fn summary(&self) -> Summary {
        let ms = |q: f64| self.histogram.value_at_quantile(q) as f64 / 1e3;
        Summary {
            count: self.count(),
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: self.histogram.max() as f64 / 1e3,
            mean_ms: self.histogram.mean() / 1e3,
        }
    }
}

/// A latency's quantiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// Where an OK result's time went, from the timings infer puts in it.
#[derive(Debug, Clone, Default)]
pub struct StageLatencies {
    queue_wait: Latency,
    forward: Latency,
    postprocess: Latency,
    rest: Latency,
    batch_sizes: u64,
    batches: u64,
}

impl StageLatencies {
    /// Records one OK result whose stamp came `stamped_ns` after capture.
    pub fn record(&mut self, stamped_ns: i64, timings: &orstream_proto::Timings) {
        let ns = |us: u64| i64::try_from(us.saturating_mul(1_000)).unwrap_or(i64::MAX);
        let (queue, forward, post) = (
            ns(timings.queue_wait_us),
            ns(timings.forward_us),
            ns(timings.postprocess_us),
        );
        self.queue_wait.record_ns(queue);
        self.forward.record_ns(forward);
        self.postprocess.record_ns(post);
        self.rest
            .record_ns(stamped_ns.saturating_sub(queue + forward + post));
        self.batch_sizes += u64::from(timings.batch_size);
        self.batches += 1;
    }

    /// The summaries, or `None` when no OK result came.
    pub fn summary(&self) -> Option<Stages> {
        (self.batches > 0).then(|| Stages {
            queue_wait: self.queue_wait.summary(),
            forward: self.forward.summary(),
            postprocess: self.postprocess.summary(),
            rest: self.rest.summary(),
            mean_batch: self.batch_sizes as f64 / self.batches as f64,
        })
    }
}

/// Where an OK result's time went between capture and its stamp.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stages {
    /// Read from the bus -> its batch's forward pass started (decode, preprocess, batching).
    pub queue_wait: Summary,
    /// The batch's forward pass.
    pub forward: Summary,
    /// Its postprocessing.
    pub postprocess: Summary,
    /// The rest of capture -> stamp: the frames topic (producer, broker, infer's fetch) and
    /// the wait for the output stage.
    pub rest: Summary,
    /// Mean batch size the frames ran in.
    pub mean_batch: f64,
}

/// Every frame published ends as exactly one of these (or is duplicated besides).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Tally {
    /// Frames the broker acknowledged.
    pub published: u64,
    /// Frames the broker never took (not counted as lost: they never entered the pipeline).
    pub publish_failed: u64,
    /// Results with status OK.
    pub ok: u64,
    /// Results SKIPPED_STALE or SKIPPED_OVERLOAD.
    pub skipped: u64,
    /// Results with an error status.
    pub failed: u64,
    /// Published frames without a result by the end of the drain.
    pub lost: u64,
    /// Second (or later) results for a frame identity already answered.
    pub duplicated: u64,
    /// Frames with a result whose row the record had not committed by the end (with a store).
    pub not_recorded: u64,
}

/// What the run played.
#[derive(Debug, Clone, Serialize)]
pub struct Played {
    /// The run's case.
    pub case_id: String,
    /// Cameras.
    pub cameras: u32,
    /// Frames per second per camera.
    pub fps: f64,
    /// Frames per camera.
    pub frames_per_camera: u64,
    /// Mean JPEG size in bytes.
    pub jpeg_bytes: u64,
    /// Seconds from the first frame due to the last.
    pub seconds: f64,
}

/// A load run's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What was played.
    pub played: Played,
    /// The tally.
    pub frames: Tally,
    /// Results received per second between the first frame due and the last result.
    pub results_per_s: f64,
    /// Frames offered per second (cameras x fps).
    pub offered_per_s: f64,
    /// Capture -> result stamped by infer.
    pub stamped: Summary,
    /// Capture -> result received by a read-committed consumer.
    pub visible: Summary,
    /// Capture -> the frame's row committed in the record (absent without a store).
    pub recorded: Option<Summary>,
    /// How often the record was polled (the resolution of `recorded`), in ms.
    pub record_poll_ms: Option<f64>,
    /// How late the generator sent frames after they were due.
    pub publish_lag: Summary,
    /// Where OK results' time went before the stamp (absent when none came).
    pub stages: Option<Stages>,
    /// Every result, in arrival order (written with `--frames-csv`, not in the JSON).
    #[serde(skip)]
    pub rows: Vec<super::probe::FrameRow>,
}

impl Report {
    /// Whether every frame was answered exactly once (and recorded, with a store).
    pub fn exact(&self) -> bool {
        self.frames.lost == 0 && self.frames.duplicated == 0 && self.frames.not_recorded == 0
    }

    /// Every result as CSV: one line per frame, in arrival order.
    pub fn frames_csv(&self) -> String {
        let mut out = String::from(
            "camera,seq,capture_ns,status,stamped_ms,visible_ms,recorded_ms,batch_size,queue_wait_ms,\
             forward_ms\n",
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{},{},{},{},{:.3},{:.3},{},{},{:.3},{:.3}",
                r.camera,
                r.seq,
                r.capture_ns,
                r.status,
                r.stamped_ns as f64 / 1e6,
                r.visible_ns as f64 / 1e6,
                r.recorded_ns
                    .map_or_else(String::new, |ns| format!("{:.3}", ns as f64 / 1e6)),
                r.batch_size,
                r.queue_wait_us as f64 / 1e3,
                r.forward_us as f64 / 1e3
            );
        }
        out
    }

    /// The report as a table for people.
    pub fn render(&self) -> String {
        let p = &self.played;
        let f = &self.frames;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "load {}: {} cameras x {} fps for {:.1} s ({} frames each, JPEG {} bytes mean)",
            p.case_id, p.cameras, p.fps, p.seconds, p.frames_per_camera, p.jpeg_bytes
        );
        let _ = writeln!(
            out,
            "frames: {} published, {} ok, {} skipped, {} failed, {} lost, {} duplicated{}{}",
            f.published,
            f.ok,
            f.skipped,
            f.failed,
            f.lost,
            f.duplicated,
            if self.recorded.is_some() {
                format!(", {} not recorded", f.not_recorded)
            } else {
                String::new()
            },
            if f.publish_failed > 0 {
                format!(" ({} not taken by the broker)", f.publish_failed)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            out,
            "throughput: {:.1} results/s of {:.1} offered",
            self.results_per_s, self.offered_per_s
        );
        let _ = writeln!(
            out,
            "{:<34} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8}",
            "latency after capture (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
        );
        let mut row = |name: &str, s: &Summary| {
            let _ = writeln!(
                out,
                "{name:<34} {:>7} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
                s.count, s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms, s.max_ms
            );
        };
        row("result stamped (infer)", &self.stamped);
        row("result visible (read_committed)", &self.visible);
        if let Some(recorded) = &self.recorded {
            let poll = self.record_poll_ms.unwrap_or(0.0);
            row(&format!("record row committed (+-{poll:.0} ms)"), recorded);
        }
        row("publish lag (generator)", &self.publish_lag);
        if let Some(stages) = &self.stages {
            row("  ok: read -> forward start", &stages.queue_wait);
            row("  ok: forward", &stages.forward);
            row("  ok: postprocess", &stages.postprocess);
            row("  ok: rest (frames topic, output)", &stages.rest);
            let _ = writeln!(out, "mean batch {:.2}", stages.mean_batch);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_what_was_recorded() {
        let mut latency = Latency::default();
        for ms in 1..=100 {
            latency.record_ns(ms * 1_000_000);
        }
        latency.record_ns(-5);
        let s = latency.summary();
        assert_eq!(s.count, 101);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{s:?}");
        assert!((s.max_ms - 100.0).abs() < 0.1, "{s:?}");
    }

    #[test]
    fn a_run_is_exact_only_without_loss_or_duplicates() {
        let summary = Latency::default().summary();
        let mut report = Report {
            played: Played {
                case_id: "c".into(),
                cameras: 1,
                fps: 1.0,
                frames_per_camera: 1,
                jpeg_bytes: 1,
                seconds: 1.0,
            },
            frames: Tally {
                published: 1,
                ok: 1,
                ..Tally::default()
            },
            results_per_s: 1.0,
            offered_per_s: 1.0,
            stamped: summary,
            visible: summary,
            recorded: None,
            record_poll_ms: None,
            publish_lag: summary,
            stages: None,
            rows: Vec::new(),
        };
        assert!(report.exact());
        assert!(report.render().contains("0 lost, 0 duplicated"));
        report.frames.duplicated = 1;
        assert!(!report.exact());
        report.frames.duplicated = 0;
        report.frames.lost = 1;
        assert!(!report.exact());
    }
}
