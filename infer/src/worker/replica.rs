//! The run stage: model replicas, each a device thread with a host thread behind it.
//!
//! libtorch modules are not shared between threads, so each replica loads its own copy on
//! its own OS thread (which is also where `no_grad` holds), checks it against the card and
//! warms it up; the worker joins its group only once every replica said it is ready. A
//! replica does the device work only and hands the batch to its postprocessing thread (class
//! maps -> instances, timings, answers), so the device never waits for the host's connected
//! components.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded};
use orstream_proto::{FrameStatus, Timings};

use super::Stages;
use super::batch::{Feedback, Job};
use crate::config::InferConfig;
use crate::decode::micros;
use crate::error::InferError;
use crate::produce::Answer;
use crate::runner::{self, BatchInput, Model, Postprocessor, Runner};
use crate::stats::Counters;
use crate::telemetry::{Instruments, batch_span};

/// The replicas' ends of the channels, shared by all of them.
pub(super) struct ReplicaLinks {
    pub batches: Receiver<Vec<Job>>,
    pub feedback: Sender<Feedback>,
    pub answers: Sender<Answer>,
}

/// What the replicas are made from.
pub(super) struct Replicas {
    pub model: Model,
    pub config: InferConfig,
    pub links: ReplicaLinks,
    pub counters: Arc<Counters>,
    pub instruments: Arc<Instruments>,
}

/// Each replica's word that it loaded and warmed up (with the last warm-up pass's time), or
/// why not.
pub(super) struct Ready {
    replies: Receiver<Result<Duration, InferError>>,
    replicas: usize,
}

impl Ready {
    /// Waits for every replica; the slowest warm-up pass is the first estimate of a batch's
    /// latency.
    pub(super) fn wait(self) -> Result<Duration, InferError> {
        let mut warm_latency = Duration::ZERO;
        for _ in 0..self.replicas {
            match self.replies.recv() {
                Ok(Ok(latency)) => warm_latency = warm_latency.max(latency),
                Ok(Err(err)) => return Err(err),
                Err(_) => {
                    return Err(InferError::Stage {
                        stage: "replica".to_owned(),
                        reason: "a replica thread ended before it was ready".to_owned(),
                    });
                }
            }
        }
        Ok(warm_latency)
    }
}

/// Starts every replica and its postprocessing thread; they load while the caller waits on
/// the returned [`Ready`].
pub(super) fn spawn(replicas: Replicas, stages: &mut Stages) -> Result<Ready, InferError> {
    let Replicas {
        model,
        config,
        links,
        counters,
        instruments,
    } = replicas;
    let count = config.model.replicas;
    let (ready_tx, ready_rx) = bounded(count);
    for index in 0..count {
        // One batch may wait for postprocessing while the replica runs the next.
        let (forwarded_tx, forwarded_rx) = bounded::<ForwardedBatch>(1);
        let host = HostHalf {
            post: Postprocessor::new(model.card.clone(), config.postprocess.clone()),
            forwarded: forwarded_rx,
            answers: links.answers.clone(),
            instruments: instruments.clone(),
        };
        stages.spawn(&format!("post-{index}"), move || host.run())?;
        let replica = Replica {
            model: model.clone(),
            config: config.clone(),
            ready: ready_tx.clone(),
            device: DeviceHalf {
                batches: links.batches.clone(),
                forwarded: forwarded_tx,
                feedback: links.feedback.clone(),
                counters: counters.clone(),
                instruments: instruments.clone(),
            },
        };
        stages.spawn(&format!("replica-{index}"), move || replica.run())?;
    }
    Ok(Ready {
        replies: ready_rx,
        replicas: count,
    })
}

/// One replica before it loads.
struct Replica {
    model: Model,
    config: InferConfig,
    ready: Sender<Result<Duration, InferError>>,
    device: DeviceHalf,
}

/// The batch sizes below `max` warmed up besides it: every one up to 16, then the powers of two
/// (a large maximum on a slow device would otherwise take minutes to warm).
fn warm_up_sizes(max: usize) -> Vec<usize> {
    if max <= 16 {
        (1..max).collect()
    } else {
        std::iter::successors(Some(1usize), |n| n.checked_mul(2))
            .take_while(|&n| n < max)
            .collect()
    }
}

impl Replica {
    fn run(self) {
        let Replica {
            model,
            config,
            ready,
            device,
        } = self;
        let runner = Runner::load(&model, &config.model, &config.postprocess).and_then(|runner| {
            let max = config.batch.max_batch_size;
            let warm = runner.check_and_warm_up(max, config.model.warmup_runs)?;
            // TorchScript specialises its graph per input shape, and the first runs of a new
            // batch size are several times slower: run every size the batcher may form now,
            // so no frame pays for it later.
            for size in warm_up_sizes(max) {
                runner.check_and_warm_up(size, config.model.warmup_runs)?;
            }
            Ok((runner, warm))
        });
        let runner = match runner {
            Ok((runner, warm)) => {
                let _ = ready.send(Ok(warm));
                runner
            }
            Err(err) => {
                let _ = ready.send(Err(err));
                return;
            }
        };
        // Dropped before serving, so the wait sees a replica that dies before its word.
        drop(ready);
        device.run(&runner);
    }
}

/// A batch whose device step is done, on its way to the host postprocessing.
struct ForwardedBatch {
    batch: Vec<Job>,
    outcome: Result<runner::Forwarded, String>,
    started: Instant,
    latency: Duration,
}

/// A replica's device thread once loaded.
struct DeviceHalf {
    batches: Receiver<Vec<Job>>,
    forwarded: Sender<ForwardedBatch>,
    feedback: Sender<Feedback>,
    counters: Arc<Counters>,
    instruments: Arc<Instruments>,
}

impl DeviceHalf {
    /// Device work only, so the replica starts the next batch while its postprocessing
    /// thread turns the last one into instances.
    fn run(&self, runner: &Runner) {
        for batch in self.batches.iter() {
            if batch.is_empty() {
                continue;
            }
            let span = batch_span(batch.len(), batch.iter().map(|job| &job.prepared.span));
            let entered = span.enter();
            let started = Instant::now();
            let inputs: Vec<BatchInput<'_>> = batch
                .iter()
                .map(|job| BatchInput {
                    pixels: &job.prepared.pixels,
                    placement: job.prepared.placement,
                })
                .collect();
            let forwarding = self.instruments.forward_started();
            let outcome = runner.forward(&inputs).map_err(|err| {
                tracing::warn!(%err, batch = batch.len(), "batch failed; answering MODEL_ERROR");
                err.to_string()
            });
            drop(forwarding);
            drop(inputs);
            let latency = started.elapsed();
            drop(entered);
            self.instruments.forwarded(batch.len(), latency);
            let _ = self.feedback.try_send((batch.len(), latency));
            self.counters.batches.fetch_add(1, Ordering::Relaxed);
            self.counters
                .batched_frames
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            let done = ForwardedBatch {
                batch,
                outcome,
                started,
                latency,
            };
            if self.forwarded.send(done).is_err() {
                return;
            }
        }
    }
}

/// A replica's host thread: instances, timings and answers.
struct HostHalf {
    post: Postprocessor,
    forwarded: Receiver<ForwardedBatch>,
    answers: Sender<Answer>,
    instruments: Arc<Instruments>,
}

/// Per frame of a batch, its instances or why it has none.
type Found = Result<Vec<orstream_proto::Instance>, String>;

impl HostHalf {
    fn run(&self) {
        for forwarded in self.forwarded.iter() {
            if !self.answer(forwarded) {
                return;
            }
        }
    }

    /// Answers every frame of a batch; `false` once the output stage is gone.
    fn answer(&self, forwarded: ForwardedBatch) -> bool {
        let ForwardedBatch {
            batch,
            outcome,
            started,
            latency,
        } = forwarded;
        let size = u32::try_from(batch.len()).unwrap_or(u32::MAX);
        let (mut instances, forward, post_times) = self.finish(&batch, outcome, latency);
        instances.resize_with(batch.len(), || Err("no output for this frame".to_owned()));
        self.instruments.postprocessed(
            post_times.iter().sum(),
            batch
                .iter()
                .map(|job| started.saturating_duration_since(job.origin.polled_at)),
        );
        for (i, (job, found)) in batch.into_iter().zip(instances).enumerate() {
            let Job { origin, prepared } = job;
            let mut result = prepared.result;
            match found {
                Ok(list) => {
                    result.status = FrameStatus::Ok as i32;
                    result.instances = list;
                    // What the model made must hold the contract's values (finite scores, boxes
                    // in the picture, names without control characters), as every consumer
                    // checks: a result that breaks it is the model's fault, said here.
                    if let Err((field, reason)) = orstream_proto::Wire::validate(&result) {
                        tracing::warn!(field, %reason, "model output breaks the contract; answering MODEL_ERROR");
                        result.status = FrameStatus::ModelError as i32;
                        result.status_detail =
                            format!("the model's output breaks the contract: {field}: {reason}");
                        result.instances.clear();
                    }
                }
                Err(message) => {
                    result.status = FrameStatus::ModelError as i32;
                    result.status_detail = message;
                }
            }
            result.timings = Some(Timings {
                queue_wait_us: micros(started.saturating_duration_since(origin.polled_at)),
                batch_size: size,
                preprocess_us: prepared.preprocess_us,
                forward_us: micros(forward),
                postprocess_us: post_times.get(i).copied().map(micros).unwrap_or(0),
            });
            let answer = Answer {
                origin,
                result: Some(result),
                dead_letter: None,
                traceparent: prepared.traceparent,
                span: prepared.span,
            };
            if self.answers.send(answer).is_err() {
                return false;
            }
        }
        true
    }

    /// The host half of a batch's device step: instances per frame, the forward time and
    /// the postprocessing times (all frames answer MODEL_ERROR when either half failed).
    fn finish(
        &self,
        batch: &[Job],
        outcome: Result<runner::Forwarded, String>,
        latency: Duration,
    ) -> (Vec<Found>, Duration, Vec<Duration>) {
        match outcome {
            Ok(device) => {
                let placements: Vec<_> = batch.iter().map(|job| job.prepared.placement).collect();
                let out = self.post.finish(device, &placements);
                let instances = match out.failure {
                    Some(failure) => {
                        tracing::warn!(%failure, batch = batch.len(), "answering MODEL_ERROR");
                        batch.iter().map(|_| Err(failure.clone())).collect()
                    }
                    None => {
                        let mut faults = out.faults;
                        out.instances
                            .into_iter()
                            .enumerate()
                            .map(|(i, list)| faults.remove(&i).map_or(Ok(list), Err))
                            .collect::<Vec<_>>()
                    }
                };
                (instances, out.forward, out.postprocess)
            }
            Err(message) => (
                batch.iter().map(|_| Err(message.clone())).collect(),
                latency,
                Vec::new(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::warm_up_sizes;

    #[test]
    fn every_batch_size_is_warmed_up_below_a_small_maximum() {
        assert_eq!(warm_up_sizes(1), Vec::<usize>::new());
        assert_eq!(warm_up_sizes(4), vec![1, 2, 3]);
        assert_eq!(warm_up_sizes(64), vec![1, 2, 4, 8, 16, 32]);
    }
}
