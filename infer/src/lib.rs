//! orstream-infer: TorchScript segmentation models on CPU or CUDA, through libtorch (`tch`).
//!
//! Frames come in as normalised `[B, 3, H, W]` f32 batches; per-class logits come out.
//! The Kafka consumer, the cross-stream micro-batcher and the turning of logits into instances
//! will sit around this core.
//!
//! Modules:
//! - [`model`]: device names (`cpu`, `cuda:N`), loading a TorchScript file with
//!   [`tch::CModule`], the forward pass ([`TorchModel`]).
//! - [`error`]: [`InferError`], naming the model file or device that failed.
//!
//! # How libtorch is found and linked
//!
//! libtorch is the one inside the PyPI `torch` wheel in the project's venv (`.venv`, made by
//! `scripts/install-python.sh`), pinned to the version `tch` expects (torch 2.11.0 for tch 0.24).
//! Build with the venv active (or `.venv/bin` first on `PATH`) and `LIBTORCH_USE_PYTORCH=1`:
//! `torch-sys` then asks that Python where torch is. `LIBTORCH` pointing at a libtorch directory
//! works too.
//!
//! The build script (`build_support/torch_link.rs`, also included by the `orstream` binary's
//! build script) finds the same directory and adds two linker arguments that torch-sys does not:
//! `--no-as-needed` around `-ltorch_cuda`, because the linker otherwise drops `libtorch_cuda.so`
//! (no symbol of it is used directly) and CUDA then silently reports itself unavailable; and an
//! rpath to torch's `lib/` directory, so tests and binaries run without `LD_LIBRARY_PATH`.
//! A binary that links this crate needs the same two arguments from its own build script: cargo
//! passes linker arguments only to the targets of the package whose build script printed them.

pub mod error;
pub mod model;

pub use error::InferError;
pub use model::{TorchModel, parse_device};
