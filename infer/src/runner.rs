//! The model runner: a model on disk with its card ([`Model`]), and one loaded copy of it on a
//! device ([`Runner`]) that turns a batch of prepared frames into instances.
//!
//! A runner checks its model against the card before it serves (a blank batch through the
//! whole path): a semantic model must return `[B, C, H, W]` logits (or a dict with `out`) with
//! C = the card's class count; a maskrcnn model must have a box classifier with as many
//! classes as the card and return `(losses, detections)` with boxes, labels, scores and masks.
//! A mismatch is an [`InferError::CardMismatch`] saying what differs.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orstream_proto::{Instance, ModelIdentity};
use tch::{Device, IValue, Kind, TchError, Tensor};

use crate::card::{ModelCard, OutputKind, file_digest};
use crate::config::{ModelConfig, PostprocessConfig};
use crate::error::InferError;
use crate::model::{TorchModel, ivalue_kind, parse_device};
use crate::postprocess::{
    ClassMap, Detection, detection_instance, keep_largest, semantic_instances,
};
use crate::preprocess::{Pixels, Placement};

/// The parameter whose first dimension is a torchvision detector's class count.
const MASKRCNN_CLASSIFIER: &str = "roi_heads.box_predictor.cls_score.weight";

/// A model file with its checked card and digest: what a worker serves.
#[derive(Debug, Clone)]
pub struct Model {
    /// The TorchScript file.
    pub path: PathBuf,
    /// The card file it was described by.
    pub card_path: PathBuf,
    /// What the card says: classes, input size, resize and normalisation.
    pub card: Arc<ModelCard>,
    /// `sha256:<hex>` of the TorchScript file.
    pub digest: String,
}

impl Model {
    /// Reads the card, hashes the model file and, for `maskrcnn` models, loads torchvision's
    /// operators into the process (which must happen before a module using them is loaded).
    pub fn open(config: &ModelConfig) -> Result<Self, InferError> {
        let card_path = config.card_path();
        let card = ModelCard::load(&card_path)?;
        if !config.path.is_file() {
            return Err(InferError::ModelNotFound {
                path: config.path.clone(),
            });
        }
        let digest = file_digest(&config.path)?;
        if card.output == OutputKind::Maskrcnn {
            let Some(ops) = &config.torchvision_ops else {
                return Err(InferError::Config {
                    problems: vec![format!(
                        "model.torchvision_ops: the card {} says output = \"maskrcnn\", which \
                         needs torchvision's operator library (torchvision/_C.so)",
                        card_path.display()
                    )],
                });
            };
            crate::ops::load_torchvision_ops(ops, config.libpython.as_deref())?;
        }
        Ok(Self {
            path: config.path.clone(),
            card_path,
            card: Arc::new(card),
            digest,
        })
    }

    /// The identity carried in every result.
    pub fn identity(&self) -> ModelIdentity {
        ModelIdentity {
            name: self.card.name.clone(),
            version: self.card.version.clone(),
            digest: self.digest.clone(),
        }
    }
}

/// One frame of a batch, as the runner needs it.
#[derive(Debug, Clone, Copy)]
pub struct BatchInput<'a> {
    /// The prepared pixels.
    pub pixels: &'a Pixels,
    /// Where the image lies in the input.
    pub placement: Placement,
}

/// What a batch gave.
#[derive(Debug, Default)]
pub struct BatchOutput {
    /// Instances per input, in input order.
    pub instances: Vec<Vec<Instance>>,
    /// Time of the forward pass (with the upload and the device synchronisation).
    pub forward: Duration,
    /// Postprocessing time per input.
    pub postprocess: Vec<Duration>,
    /// Why no instances could be made, when the host half failed (every input then gets a
    /// MODEL_ERROR result with this detail).
    pub failure: Option<String>,
    /// Inputs (by index) whose output was unusable, with why: a NaN or an infinity in a
    /// class map. Such an input gets a MODEL_ERROR result, never an empty OK one, so a broken
    /// model does not pass for a quiet operation.
    pub faults: BTreeMap<usize, String>,
}

/// What a batch's device step left for the host: the class maps of a semantic model, or the
/// finished instances of a detector (whose host work is small and done already).
#[derive(Debug)]
pub enum Forwarded {
    /// Argmax class ids and their probabilities, `[B, H, W]` row-major each.
    Semantic {
        /// Class id per cell.
        ids: Vec<i32>,
        /// Probability of that class per cell.
        scores: Vec<f32>,
        /// Map width.
        width: usize,
        /// Map height.
        height: usize,
        /// Time of the device step.
        forward: Duration,
    },
    /// Raw logits `[B, C, H, W]` of a model on the CPU: softmax and argmax run on the
    /// postprocessing thread, so the replica's thread goes on to the next forward pass.
    Logits {
        /// The model's output.
        logits: Tensor,
        /// Time of the forward pass.
        forward: Duration,
    },
    /// Instances per input, already made.
    Done(BatchOutput),
}

/// Class id and its probability per cell, `[B, H, W]` row-major each, from logits
/// `[B, C, H, W]` on any device; with the map's width and height.
fn class_maps(logits: &Tensor) -> Result<(Vec<i32>, Vec<f32>, usize, usize), TchError> {
    let size = logits.size();
    let (h, w) = (size[2] as usize, size[3] as usize);
    let (scores, ids) = logits
        .f_to_kind(Kind::Float)?
        .f_softmax(1, Kind::Float)?
        .f_max_dim(1, false)?;
    let ids = ids
        .f_to_kind(Kind::Int)?
        .f_to_device(Device::Cpu)?
        .f_contiguous()?;
    let scores = scores.f_to_device(Device::Cpu)?.f_contiguous()?;
    let ids = Vec::<i32>::try_from(ids.flatten(0, -1))?;
    let scores = Vec::<f32>::try_from(scores.flatten(0, -1))?;
    Ok((ids, scores, w, h))
}

/// The host half of a batch: class maps -> instances. Cheap to clone, so it can run on its own
/// thread while the replica starts the next batch.
#[derive(Debug, Clone)]
pub struct Postprocessor {
    card: Arc<ModelCard>,
    post: PostprocessConfig,
}

impl Postprocessor {
    /// The host half for `card`'s model with these settings.
    pub fn new(card: Arc<ModelCard>, post: PostprocessConfig) -> Self {
        Self { card, post }
    }

    /// Turns a device step's output into instances, one list per placement (input order).
    pub fn finish(&self, forwarded: Forwarded, placements: &[Placement]) -> BatchOutput {
        let (ids, scores, w, h, forward) = match forwarded {
            Forwarded::Done(out) => return out,
            Forwarded::Semantic {
                ids,
                scores,
                width,
                height,
                forward,
            } => (ids, scores, width, height, forward),
            Forwarded::Logits { logits, forward } => match class_maps(&logits) {
                Ok((ids, scores, width, height)) => (ids, scores, width, height, forward),
                Err(err) => {
                    return BatchOutput {
                        forward,
                        failure: Some(format!("class maps from the logits: {err}")),
                        ..BatchOutput::default()
                    };
                }
            },
        };
        let cells = w * h;
        let mut out = BatchOutput {
            forward,
            ..BatchOutput::default()
        };
        for (i, placement) in placements.iter().enumerate() {
            let post_started = Instant::now();
            let (Some(classes), Some(probabilities)) = (
                ids.get(i * cells..(i + 1) * cells),
                scores.get(i * cells..(i + 1) * cells),
            ) else {
                break;
            };
            if let Some(bad) = probabilities.iter().position(|p| !p.is_finite()) {
                let count = probabilities.iter().filter(|p| !p.is_finite()).count();
                out.faults.insert(
                    i,
                    format!(
                        "the model's output is not finite: {count} of {cells} class map cells \
                         are NaN or infinite (the first at cell {bad})"
                    ),
                );
                out.instances.push(Vec::new());
                out.postprocess.push(post_started.elapsed());
                continue;
            }
            let map = ClassMap {
                classes,
                scores: probabilities,
                width: w,
                height: h,
                region: placement.in_map(w, h),
            };
            out.instances
                .push(semantic_instances(&map, &self.card, &self.post));
            out.postprocess.push(post_started.elapsed());
        }
        out
    }
}

/// One loaded copy of a model on one device. Not shared between threads: each replica has its
/// own.
#[derive(Debug)]
pub struct Runner {
    module: TorchModel,
    model: Model,
    device: Device,
    half: bool,
    post: PostprocessConfig,
}

impl Runner {
    /// Loads `model` onto the configured device.
    pub fn load(
        model: &Model,
        config: &ModelConfig,
        post: &PostprocessConfig,
    ) -> Result<Self, InferError> {
        let device = parse_device(&config.device)?;
        let module = TorchModel::load_with(&model.path, device, config.fp16)?;
        Ok(Self {
            module,
            model: model.clone(),
            device,
            half: config.fp16,
            post: post.clone(),
        })
    }

    fn card(&self) -> &ModelCard {
        &self.model.card
    }

    fn mismatch(&self, reason: String) -> InferError {
        InferError::CardMismatch {
            model: self.model.path.clone(),
            card: self.model.card_path.clone(),
            reason,
        }
    }

    fn bad_output(&self, reason: String) -> InferError {
        InferError::BadOutput {
            path: self.model.path.clone(),
            reason,
        }
    }

    fn tch_error(&self, source: tch::TchError) -> InferError {
        InferError::Forward {
            path: self.model.path.clone(),
            source,
        }
    }

    /// Checks the model against its card and warms it up: `runs` passes over a blank batch of
    /// `batch` frames. Returns the last pass's time (a first estimate of batch latency).
    pub fn check_and_warm_up(&self, batch: usize, runs: u32) -> Result<Duration, InferError> {
        let card = self.card();
        if card.output == OutputKind::Maskrcnn {
            match self.module.parameter_shape(MASKRCNN_CLASSIFIER)? {
                Some(shape) if shape.first().copied() == Some(card.class_count() as i64) => {}
                Some(shape) => {
                    return Err(self.mismatch(format!(
                        "the card lists {} classes (ids 0..{}) but the box classifier {} has \
                         {} outputs",
                        card.class_count(),
                        card.class_count().saturating_sub(1),
                        MASKRCNN_CLASSIFIER,
                        shape.first().copied().unwrap_or(0)
                    )));
                }
                None => {
                    return Err(self.mismatch(format!(
                        "the card says output = \"maskrcnn\" but the model has no {} \
                         parameter (not a torchvision detection model?)",
                        MASKRCNN_CLASSIFIER
                    )));
                }
            }
        }
        let plane = card.input_width as usize * card.input_height as usize * 3;
        let blank = Pixels::Normalized(vec![0.0; plane]);
        let placement = Placement::new(card, card.input_width, card.input_height);
        let inputs = vec![
            BatchInput {
                pixels: &blank,
                placement,
            };
            batch.max(1)
        ];
        let mut last = Duration::ZERO;
        for _ in 0..runs.max(1) {
            let started = Instant::now();
            let output = self.run(&inputs)?;
            if output.instances.len() != inputs.len() {
                return Err(self.mismatch(format!(
                    "{} inputs gave {} outputs",
                    inputs.len(),
                    output.instances.len()
                )));
            }
            last = started.elapsed();
        }
        Ok(last)
    }

    /// Stacks prepared frames into one `[B, 3, H, W]` float tensor on the device, normalised.
    fn batch_tensor(&self, inputs: &[BatchInput<'_>]) -> Result<Tensor, InferError> {
        let card = self.card();
        let (w, h) = (card.input_width as i64, card.input_height as i64);
        let plane = (w * h * 3) as usize;
        let b = inputs.len() as i64;
        let all_f32 = inputs
            .iter()
            .all(|i| matches!(i.pixels, Pixels::Normalized(p) if p.len() == plane));
        let all_u8 = inputs
            .iter()
            .all(|i| matches!(i.pixels, Pixels::Rgb8(p) if p.len() == plane));
        let tensor = if all_f32 {
            let mut buffer = Vec::with_capacity(plane * inputs.len());
            for input in inputs {
                if let Pixels::Normalized(p) = input.pixels {
                    buffer.extend_from_slice(p);
                }
            }
            Tensor::from_slice(&buffer)
                .f_view([b, 3, h, w])
                .and_then(|t| t.f_to_device(self.device))
                .map_err(|e| self.tch_error(e))?
        } else if all_u8 {
            let mut buffer = Vec::with_capacity(plane * inputs.len());
            for input in inputs {
                if let Pixels::Rgb8(p) = input.pixels {
                    buffer.extend_from_slice(p);
                }
            }
            // Bytes cross to the device; normalisation happens there.
            let mean = Tensor::from_slice(&card.mean).view([1, 3, 1, 1]);
            let std = Tensor::from_slice(&card.std).view([1, 3, 1, 1]);
            Tensor::from_slice(&buffer)
                .f_view([b, 3, h, w])
                .and_then(|t| t.f_to_device(self.device))
                .and_then(|t| t.f_to_kind(Kind::Float))
                .map(|t| t / 255.0)
                .and_then(|t| {
                    let mean = mean.f_to_device(self.device)?;
                    let std = std.f_to_device(self.device)?;
                    Ok((t - mean) / std)
                })
                .map_err(|e| self.tch_error(e))?
        } else {
            return Err(InferError::BadInput {
                path: self.model.path.clone(),
                reason: format!(
                    "every frame of a batch must be prepared the same way, as 3x{h}x{w}"
                ),
            });
        };
        if self.half {
            tensor.f_to_kind(Kind::Half).map_err(|e| self.tch_error(e))
        } else {
            Ok(tensor)
        }
    }

    /// Runs one batch and turns the output into instances per input.
    pub fn run(&self, inputs: &[BatchInput<'_>]) -> Result<BatchOutput, InferError> {
        let placements: Vec<Placement> = inputs.iter().map(|i| i.placement).collect();
        let forwarded = self.forward(inputs)?;
        let out = self.postprocessor().finish(forwarded, &placements);
        match out.failure {
            Some(failure) => Err(self.bad_output(failure)),
            None => Ok(out),
        }
    }

    /// The host half of [`run`](Self::run), to run elsewhere.
    pub fn postprocessor(&self) -> Postprocessor {
        Postprocessor {
            card: self.model.card.clone(),
            post: self.post.clone(),
        }
    }

    /// The device half of [`run`](Self::run): the batch through the model and the result
    /// copied to the host; finish it with [`Postprocessor::finish`].
    pub fn forward(&self, inputs: &[BatchInput<'_>]) -> Result<Forwarded, InferError> {
        if inputs.is_empty() {
            return Ok(Forwarded::Done(BatchOutput::default()));
        }
        let _no_grad = tch::no_grad_guard();
        let started = Instant::now();
        let batch = self.batch_tensor(inputs)?;
        match self.card().output {
            OutputKind::Semantic => self.forward_semantic(inputs, batch, started),
            OutputKind::Maskrcnn => self
                .run_maskrcnn(inputs, batch, started)
                .map(Forwarded::Done),
        }
    }

    fn forward_semantic(
        &self,
        inputs: &[BatchInput<'_>],
        batch: Tensor,
        started: Instant,
    ) -> Result<Forwarded, InferError> {
        let output = self.module.forward_values(&[IValue::Tensor(batch)])?;
        let logits = match output {
            IValue::Tensor(t) => t,
            IValue::GenericDict(entries) => entries
                .into_iter()
                .find_map(|(k, v)| match (k, v) {
                    (IValue::String(k), IValue::Tensor(t)) if k == "out" => Some(t),
                    _ => None,
                })
                .ok_or_else(|| {
                    self.mismatch(
                        "output = \"semantic\" expects a tensor or a dict with an `out` tensor, \
                         got a dict without `out`"
                            .to_owned(),
                    )
                })?,
            other => {
                return Err(self.mismatch(format!(
                    "output = \"semantic\" expects logits [B, C, H, W], got a {}",
                    ivalue_kind(&other)
                )));
            }
        };
        let size = logits.size();
        let classes = self.card().class_count() as i64;
        if size.len() != 4 || size[0] != inputs.len() as i64 {
            return Err(self.mismatch(format!(
                "output = \"semantic\" expects logits [B, C, H, W] with B = {}, got shape {size:?}",
                inputs.len()
            )));
        }
        if size[1] != classes {
            return Err(self.mismatch(format!(
                "the card lists {classes} classes (ids 0..{}) but the model outputs {} channels",
                classes - 1,
                size[1]
            )));
        }
        if self.device == Device::Cpu {
            return Ok(Forwarded::Logits {
                logits,
                forward: started.elapsed(),
            });
        }
        let (ids, scores, width, height) = class_maps(&logits).map_err(|e| self.tch_error(e))?;
        Ok(Forwarded::Semantic {
            ids,
            scores,
            width,
            height,
            forward: started.elapsed(),
        })
    }

    fn run_maskrcnn(
        &self,
        inputs: &[BatchInput<'_>],
        batch: Tensor,
        started: Instant,
    ) -> Result<BatchOutput, InferError> {
        let images: Vec<Tensor> = (0..inputs.len() as i64).map(|i| batch.get(i)).collect();
        let output = self.module.forward_values(&[IValue::TensorList(images)])?;
        let expected = "output = \"maskrcnn\" expects (losses, detections) with a list of dicts \
                        of boxes, labels, scores and masks";
        let detections = match output {
            IValue::Tuple(mut parts) if parts.len() == 2 => parts.remove(1),
            other => {
                return Err(self.mismatch(format!("{expected}, got a {}", ivalue_kind(&other))));
            }
        };
        let IValue::GenericList(per_image) = detections else {
            return Err(self.mismatch(format!("{expected}, got detections that are no list")));
        };
        if per_image.len() != inputs.len() {
            return Err(self.mismatch(format!(
                "{} images gave {} detection lists",
                inputs.len(),
                per_image.len()
            )));
        }
        let mut tensors = Vec::with_capacity(per_image.len());
        for entry in per_image {
            let IValue::GenericDict(fields) = entry else {
                return Err(self.mismatch(format!("{expected}, got a list entry that is no dict")));
            };
            let get = |name: &str| {
                fields.iter().find_map(|(k, v)| match (k, v) {
                    (IValue::String(k), IValue::Tensor(t)) if k == name => Some(t.shallow_clone()),
                    _ => None,
                })
            };
            match (get("boxes"), get("labels"), get("scores"), get("masks")) {
                (Some(b), Some(l), Some(s), Some(m)) => tensors.push((b, l, s, m)),
                _ => {
                    return Err(self.mismatch(format!(
                        "{expected}; a dict lacks one of boxes, labels, scores, masks"
                    )));
                }
            }
        }
        // Copy the small per-detection values first; masks only for the detections kept.
        let card = self.card();
        let (iw, ih) = (card.input_width as i64, card.input_height as i64);
        let mut host = Vec::with_capacity(tensors.len());
        for (boxes, labels, scores, masks) in &tensors {
            let to_f32 = |t: &Tensor| {
                t.f_to_kind(Kind::Float)
                    .and_then(|t| t.f_to_device(Device::Cpu))
                    .and_then(|t| t.f_contiguous())
                    .and_then(|t| Vec::<f32>::try_from(t.flatten(0, -1)))
            };
            let boxes = to_f32(boxes).map_err(|e| self.tch_error(e))?;
            let scores = to_f32(scores).map_err(|e| self.tch_error(e))?;
            let labels: Vec<i64> = labels
                .f_to_kind(Kind::Int64)
                .and_then(|t| t.f_to_device(Device::Cpu))
                .and_then(|t| Vec::<i64>::try_from(t.flatten(0, -1)))
                .map_err(|e| self.tch_error(e))?;
            let n = scores.len();
            let msize = masks.size();
            if boxes.len() != n * 4
                || labels.len() != n
                || (n > 0 && msize != [n as i64, 1, ih, iw])
            {
                return Err(self.bad_output(format!(
                    "{n} scores with {} box values, {} labels and masks of shape {msize:?} \
                     (expected [{n}, 1, {ih}, {iw}])",
                    boxes.len(),
                    labels.len()
                )));
            }
            let mut kept_masks = Vec::new();
            for (i, score) in scores.iter().enumerate() {
                if *score < self.post.min_score {
                    continue;
                }
                let mask: Vec<u8> = masks
                    .get(i as i64)
                    .f_ge(f64::from(self.post.mask_threshold))
                    .and_then(|t| t.f_to_kind(Kind::Uint8))
                    .and_then(|t| t.f_to_device(Device::Cpu))
                    .and_then(|t| t.f_contiguous())
                    .and_then(|t| Vec::<u8>::try_from(t.flatten(0, -1)))
                    .map_err(|e| self.tch_error(e))?;
                kept_masks.push((i, mask));
            }
            host.push((boxes, labels, scores, kept_masks));
        }
        let forward = started.elapsed();
        let mut out = BatchOutput {
            forward,
            ..BatchOutput::default()
        };
        for (input, (boxes, labels, scores, masks)) in inputs.iter().zip(&host) {
            let post_started = Instant::now();
            let instances = masks
                .iter()
                .filter_map(|(i, mask)| {
                    let det = Detection {
                        bbox: [
                            boxes[i * 4],
                            boxes[i * 4 + 1],
                            boxes[i * 4 + 2],
                            boxes[i * 4 + 3],
                        ],
                        label: labels[*i],
                        score: scores[*i],
                        mask,
                    };
                    detection_instance(&det, &input.placement, card, &self.post)
                })
                .collect();
            out.instances
                .push(keep_largest(instances, self.post.max_instances));
            out.postprocess.push(post_started.elapsed());
        }
        Ok(out)
    }
}
