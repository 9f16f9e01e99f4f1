//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in orstream-infer.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// A device string is neither `cpu` nor `cuda:N`.
    #[error("invalid device `{spec}`: expected `cpu` or `cuda:N` (for example `cuda:0`)")]
    InvalidDevice {
        /// The string as given.
        spec: String,
    },
    /// A CUDA device was asked for that this process cannot use.
    #[error("device cuda:{index} is not available ({available} CUDA devices visible to libtorch)")]
    CudaUnavailable {
        /// The requested CUDA device index.
        index: usize,
        /// How many CUDA devices libtorch sees; 0 without a GPU or without libtorch_cuda linked.
        available: usize,
    },
    /// The model file does not exist.
    #[error("model file {} not found", path.display())]
    ModelNotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// libtorch could not load the model file.
    #[error("cannot load TorchScript model {}: {source}", path.display())]
    ModelLoad {
        /// The model file.
        path: PathBuf,
        /// libtorch's error.
        source: tch::TchError,
    },
    /// The input tensor does not have the shape or type the model takes.
    #[error("bad input for model {}: {reason}", path.display())]
    BadInput {
        /// The model file.
        path: PathBuf,
        /// What is wrong with the input.
        reason: String,
    },
    /// The forward pass failed inside libtorch.
    #[error("forward pass of model {} failed: {source}", path.display())]
    Forward {
        /// The model file.
        path: PathBuf,
        /// libtorch's error.
        source: tch::TchError,
    },
    /// The model returned something other than semantic segmentation logits.
    #[error("unexpected output from model {}: {reason}", path.display())]
    BadOutput {
        /// The model file.
        path: PathBuf,
        /// What was expected and what came back.
        reason: String,
    },
}
