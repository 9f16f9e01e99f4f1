//! Loading a TorchScript model onto a device and running its forward pass.
//!
//! A [`TorchModel`] takes a normalised `[B, 3, H, W]` f32 batch and returns the logits of a
//! `semantic` model, `[B, C, H', W']` ([`TorchModel::forward`]), or runs any call on
//! TorchScript values ([`TorchModel::forward_values`], for detection models that take a list
//! of images). Batching, output kinds and instances live in [`crate::runner`].

use std::fmt;
use std::path::{Path, PathBuf};

use tch::{CModule, Device, IValue, Kind, Tensor};

use crate::error::InferError;

/// Parses a device name from configuration: `cpu` or `cuda:N`.
///
/// Whether the CUDA device exists is checked when a model is loaded, not here.
pub fn parse_device(spec: &str) -> Result<Device, InferError> {
    let invalid = || InferError::InvalidDevice {
        spec: spec.to_owned(),
    };
    match spec {
        "cpu" => Ok(Device::Cpu),
        _ => {
            let index = spec.strip_prefix("cuda:").ok_or_else(invalid)?;
            // usize::from_str takes a leading `+`; a device index never has one.
            if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid());
            }
            index.parse().map(Device::Cuda).map_err(|_| invalid())
        }
    }
}

/// A TorchScript module loaded on one device, in eval mode.
///
/// Gradients are never tracked: every forward pass runs under a no-grad guard on the calling
/// thread.
pub struct TorchModel {
    module: CModule,
    /// The file it came from, named in every error.
    path: PathBuf,
    device: Device,
}

impl fmt::Debug for TorchModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TorchModel")
            .field("path", &self.path)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl TorchModel {
    /// Loads the TorchScript file at `path` onto `device` and switches it to eval mode.
    pub fn load(path: impl AsRef<Path>, device: Device) -> Result<Self, InferError> {
        Self::load_with(path, device, false)
    }

    /// Like [`load`](Self::load); with `half`, the module's floating point parameters are
    /// cast to f16 (CUDA only: half-precision convolutions on the CPU are slow or missing).
    pub fn load_with(
        path: impl AsRef<Path>,
        device: Device,
        half: bool,
    ) -> Result<Self, InferError> {
        let path = path.as_ref().to_path_buf();
        if let Device::Cuda(index) = device {
            let available = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
            if index >= available {
                return Err(InferError::CudaUnavailable { index, available });
            }
        }
        // libtorch's own message for a missing file does not always say which file.
        if !path.is_file() {
            return Err(InferError::ModelNotFound { path });
        }
        let mut module = match CModule::load_on_device(&path, device) {
            Ok(module) => module,
            Err(source) => return Err(InferError::ModelLoad { path, source }),
        };
        if let Err(source) = module.f_set_eval() {
            return Err(InferError::ModelLoad { path, source });
        }
        if half {
            module.to(device, Kind::Half, false);
        }
        Ok(Self {
            module,
            path,
            device,
        })
    }

    /// The file the model was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Runs the model on a normalised `[B, 3, H, W]` f32 batch (on any device; it is moved to
    /// the model's) and returns the logits `[B, C, H', W']` on the model's device.
    ///
    /// Accepts both a plain tensor output and torchvision's segmentation dict (`out` key).
    pub fn forward(&self, input: &Tensor) -> Result<Tensor, InferError> {
        let size = input.size();
        let kind = input
            .f_kind()
            .map_err(|source| self.forward_error(source))?;
        if size.len() != 4 || size[1] != 3 || kind != Kind::Float {
            return Err(InferError::BadInput {
                path: self.path.clone(),
                reason: format!("expected a [B, 3, H, W] f32 tensor, got {size:?} {kind:?}"),
            });
        }
        let _no_grad = tch::no_grad_guard();
        let input = input
            .f_to_device(self.device)
            .map_err(|source| self.forward_error(source))?;
        let output = self
            .module
            .forward_is(&[IValue::Tensor(input)])
            .map_err(|source| self.forward_error(source))?;
        let logits = match output {
            IValue::Tensor(logits) => logits,
            IValue::GenericDict(entries) => entries
                .into_iter()
                .find_map(|(key, value)| match (key, value) {
                    (IValue::String(key), IValue::Tensor(logits)) if key == "out" => Some(logits),
                    _ => None,
                })
                .ok_or_else(|| self.output_error("a dict without an `out` tensor".to_owned()))?,
            other => return Err(self.output_error(format!("a {}", ivalue_kind(&other)))),
        };
        let out_size = logits.size();
        if out_size.len() != 4 || out_size[0] != size[0] {
            return Err(self.output_error(format!(
                "logits of shape {out_size:?} for an input of shape {size:?}"
            )));
        }
        Ok(logits)
    }

    /// Runs the module's `forward` on TorchScript values (no gradients) and returns what it
    /// returns.
    pub fn forward_values(&self, inputs: &[IValue]) -> Result<IValue, InferError> {
        let _no_grad = tch::no_grad_guard();
        self.module
            .forward_is(inputs)
            .map_err(|source| self.forward_error(source))
    }

    /// The shape of the named parameter (e.g. `roi_heads.box_predictor.cls_score.weight`),
    /// `None` when the module has no such parameter.
    pub fn parameter_shape(&self, name: &str) -> Result<Option<Vec<i64>>, InferError> {
        let parameters =
            self.module
                .named_parameters()
                .map_err(|source| InferError::ModelLoad {
                    path: self.path.clone(),
                    source,
                })?;
        Ok(parameters
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.size()))
    }

    fn forward_error(&self, source: tch::TchError) -> InferError {
        InferError::Forward {
            path: self.path.clone(),
            source,
        }
    }

    fn output_error(&self, got: String) -> InferError {
        InferError::BadOutput {
            path: self.path.clone(),
            reason: format!("expected logits [B, C, H, W] (or a dict with `out`), got {got}"),
        }
    }
}

/// The name of an output's variant, for error messages; the value itself may be large.
pub(crate) fn ivalue_kind(value: &IValue) -> &'static str {
    match value {
        IValue::None => "None",
        IValue::Tensor(_) => "Tensor",
        IValue::Tuple(_) => "Tuple",
        IValue::TensorList(_) => "TensorList",
        IValue::GenericList(_) => "GenericList",
        IValue::GenericDict(_) => "GenericDict",
        IValue::Object(_) => "Object",
        _ => "scalar, string or list value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_cuda_devices() {
        assert_eq!(parse_device("cpu").ok(), Some(Device::Cpu));
        assert_eq!(parse_device("cuda:0").ok(), Some(Device::Cuda(0)));
        assert_eq!(parse_device("cuda:12").ok(), Some(Device::Cuda(12)));
    }

    #[test]
    fn rejects_other_device_names_and_says_what_it_takes() {
        for spec in [
            "", "CPU", "gpu", "cuda", "cuda:", "cuda:x", "cuda:-1", "cuda:+1", "cuda:0 ", "mps",
        ] {
            let err = parse_device(spec).err();
            assert!(
                matches!(&err, Some(InferError::InvalidDevice { spec: s }) if s == spec),
                "{spec:?} gave {err:?}"
            );
            let message = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(message.contains("`cuda:N`"), "{message}");
        }
    }
}
