//! orstream-infer: frames from the bus -> micro-batched TorchScript inference (libtorch through
//! `tch`, CPU or CUDA) -> exactly one `FrameResult` per frame, committed with the consumed
//! offsets.
//!
//! # Using it
//!
//! ```no_run
//! # fn main() -> Result<(), orstream_infer::InferError> {
//! use orstream_infer::{InferConfig, Model, Worker};
//! let config = InferConfig::default(); // or Layers::load("infer", file)?.extract()?
//! let model = Model::open(&config.model)?; // card, digest, torchvision ops if maskrcnn
//! let bus = orstream_bus::Bus::memory(); // or Bus::kafka(config.kafka.clone())?
//! let worker = Worker::new(config, bus, model)?;
//! let stats = worker.run(tokio_util::sync::CancellationToken::new())?;
//! println!("{} results", stats.results());
//! # Ok(()) }
//! ```
//!
//! [`Worker::run`] blocks until the token is cancelled (then drains and commits) or a stage
//! fails; [`Worker::counters`] gives live figures meanwhile.
//!
//! # The way of a frame
//!
//! Data comes in as `Frame` messages on `or.frames.v1` (consumed as a group) and goes out as
//! `FrameResult`s on `or.results.v1` keyed by stream_id, plus dead letters on
//! `or.frames.v1.dlq`. Stages, each on its own threads, joined by bounded channels
//! ([`worker`] starts them, and has the picture):
//!
//! 1. poll (`worker::poll`): the consumer loop; never blocked by inference, bounded by
//!    `max_in_flight`;
//! 2. decode pool (`worker::poll`, [`decode`], [`preprocess`]): contract decode, JPEG header
//!    checked before allocating, antialiased resize or letterbox, normalisation (on the device
//!    for CUDA);
//! 3. batcher (`worker::batch`, [`batcher`]): cross-stream batches at `max_batch_size` or
//!    `max_linger`; live-mode deadlines (`SKIPPED_STALE`) and newest-frame-wins
//!    (`SKIPPED_OVERLOAD`); optional AIMD batch sizing;
//! 4. replicas (`worker::replica`, [`runner`], [`model`], [`postprocess`]): one OS thread and
//!    module copy each, checked against the model card and warmed up before the worker joins
//!    its group; semantic logits -> connected components, or torchvision Mask R-CNN
//!    detections -> instances;
//! 5. output ([`produce`]): results in intake order, in Kafka transactions with the offsets
//!    (or at-least-once), aborting and rewinding whatever a rebalance or an error makes
//!    uncertain.
//!
//! Poison (undecodable protobuf, corrupt JPEG, absurd dimensions, unknown schema version)
//! goes to the dead-letter topic with its source topic/partition/offset and the reason, and
//! still gets an error `FrameResult` when its identity is readable.
//!
//! # Modules
//!
//! In the order a frame meets them:
//!
//! - [`worker`]: [`Worker`], the stages on their threads: `worker::poll` (consume, then the
//!   decode pool), `worker::batch` (intake order restored, batches handed to the replicas),
//!   `worker::replica` (device and host threads per model copy);
//! - [`decode`]: one message -> a prepared frame or a rejection with its dead letter;
//! - [`preprocess`]: JPEG decode, resize or letterbox, normalisation;
//! - [`batcher`]: the batching policy, a state machine driven with explicit times;
//! - [`runner`]: a model with its card ([`Model`]) and one loaded copy of it ([`Runner`]);
//! - [`model`]: device names, loading TorchScript ([`TorchModel`]);
//! - [`ops`]: torchvision's operator library for detection models;
//! - [`postprocess`]: class maps and detections -> instances with RLE masks;
//! - [`produce`]: the output stage, results and offsets in transactions;
//! - [`stats`]: [`Stats`] counted as output becomes visible.
//!
//! Around them: [`config`] ([`InferConfig`]: serde, validated, example in
//! `config/infer.example.toml`); [`card`] (model cards, [`ModelCard`], and file digests);
//! [`error`] (the crate's errors, [`InferError`]); `telemetry` (metrics, spans, health and
//! the broker check); `clock` (the wall clock results are stamped by); [`synthetic`]
//! (generated JPEG frames for tests and benchmarks).
//!
//! # How libtorch is found and linked
//!
//! libtorch is the one inside the PyPI `torch` wheel in the project's venv (`.venv`, made by
//! `scripts/install-python.sh`), pinned to the version `tch` expects (torch 2.11.0 for tch 0.24).
//! `.cargo/config.toml` points `LIBTORCH` at it; `LIBTORCH_USE_PYTORCH=1` with a Python that
//! imports torch works too.
//!
//! The build script (`build_support/torch_link.rs`, also included by the `orstream` binary's
//! build script) finds the same directory and adds two linker arguments that torch-sys does not:
//! `--no-as-needed` around `-ltorch_cuda`, because the linker otherwise drops `libtorch_cuda.so`
//! (no symbol of it is used directly) and CUDA then silently reports itself unavailable; and an
//! rpath to torch's `lib/` directory, so tests and binaries run without `LD_LIBRARY_PATH`.
//! A binary that links this crate needs the same two arguments from its own build script: cargo
//! passes linker arguments only to the targets of the package whose build script printed them.

pub mod batcher;
pub mod card;
mod clock;
pub mod config;
pub mod decode;
pub mod error;
pub mod model;
pub mod ops;
pub mod postprocess;
pub mod preprocess;
pub mod produce;
pub mod runner;
pub mod stats;
pub mod synthetic;
mod telemetry;
pub mod worker;

pub use card::ModelCard;
pub use config::InferConfig;
pub use error::InferError;
pub use model::{TorchModel, parse_device};
pub use runner::{Model, Runner};
pub use stats::{Counters, Stats};
pub use worker::Worker;
