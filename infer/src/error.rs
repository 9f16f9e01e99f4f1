//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in orstream-infer.
///
/// Errors about one frame (undecodable bytes, a corrupt JPEG) are not here: they become a
/// [`FrameResult`](orstream_proto::FrameResult) with an error status and a dead letter, and the
/// service goes on. These are the errors that stop a start or a run.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The configuration is invalid; every problem is listed, each naming its key.
    #[error("invalid inference configuration: {}", problems.join("; "))]
    Config {
        /// One line per problem, starting with the key it concerns.
        problems: Vec<String>,
    },
    /// A configuration or model card file could not be read or parsed.
    #[error("cannot read {}: {reason}", path.display())]
    File {
        /// The configuration file or model card being read.
        path: PathBuf,
        /// What went wrong (I/O or TOML error, with line and column).
        reason: String,
    },
    /// A model card breaks a rule; every problem is listed.
    #[error("invalid model card {}: {}", path.display(), problems.join("; "))]
    Card {
        /// The card file.
        path: PathBuf,
        /// One line per problem, naming the key.
        problems: Vec<String>,
    },
    /// The model's output does not match what its card says.
    #[error("model {} does not match its card {}: {reason}", model.display(), card.display())]
    CardMismatch {
        /// The TorchScript file.
        model: PathBuf,
        /// The card file.
        card: PathBuf,
        /// What differs, with both values.
        reason: String,
    },
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
    /// A shared library (torchvision's operators, libpython) could not be loaded.
    #[error("cannot load the shared library {}: {reason}", path.display())]
    Library {
        /// The library file.
        path: PathBuf,
        /// The dynamic loader's message.
        reason: String,
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
    /// The model returned something other than what its output kind promises.
    #[error("unexpected output from model {}: {reason}", path.display())]
    BadOutput {
        /// The model file.
        path: PathBuf,
        /// What was expected and what came back.
        reason: String,
    },
    /// A bus operation failed in a way the worker cannot recover from.
    #[error("bus: {0}")]
    Bus(#[from] orstream_bus::BusError),
    /// A pipeline thread could not be started or died.
    #[error("pipeline stage {stage}: {reason}")]
    Stage {
        /// The stage (`poll`, `decode`, `batcher`, `replica 0`, `produce`).
        stage: String,
        /// What happened.
        reason: String,
    },
    /// Another live worker uses the same transactional id: each fences the other in turn.
    #[error(
        "transactional id {transactional_id} is in use by another worker: it was fenced \
         {fencings} times within {window:?}; give each worker its own transactional_id"
    )]
    TransactionalIdInUse {
        /// The id both use.
        transactional_id: String,
        /// Fencings seen within `window`.
        fencings: usize,
        /// The window they fell in.
        window: std::time::Duration,
    },
    /// A live member of the worker's group already uses its transactional id: starting would
    /// fence it, and it would fence this one back.
    #[error(
        "transactional id {transactional_id} is in use by a live member of group {group} \
         (client {client_id} on host {host}), still there after {waited:?}; give each worker \
         its own transactional_id"
    )]
    TransactionalIdHeld {
        /// The id.
        transactional_id: String,
        /// The consumer group both would join.
        group: String,
        /// The holder's client id, as the group lists it.
        client_id: String,
        /// The holder's host, as the broker saw it.
        host: String,
        /// How long this worker waited for the holder to leave.
        waited: std::time::Duration,
    },
    /// The drain after a stop request did not finish in time.
    #[error(
        "drain did not finish within {timeout:?} (still running: {}); uncommitted work is \
         redone after a restart",
        running.join(", ")
    )]
    DrainTimeout {
        /// The configured `drain_timeout`.
        timeout: std::time::Duration,
        /// The stages that had not finished.
        running: Vec<String>,
    },
}
