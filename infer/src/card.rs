//! Model cards: what a TorchScript file takes and returns, and what its classes mean.
//!
//! A card is a flat TOML file next to the model:
//!
//! ```toml
//! name = "seg"
//! version = "1.2.0"
//! description = "what it was trained on, and its limits"
//! output = "semantic"            # or "maskrcnn"
//! input_width = 320
//! input_height = 192
//! resize = "stretch"             # or "letterbox"
//! mean = [0.485, 0.456, 0.406]   # applied to RGB in 0..1: (x - mean) / std
//! std = [0.229, 0.224, 0.225]
//!
//! [[classes]]
//! id = 0
//! name = "background"
//! category = "background"        # tool | organ | background | other
//! ```
//!
//! The file's digest is not in the card: the runner computes it from the `.pt` it loads
//! ([`file_digest`]), so a result always names the bytes that produced it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::InferError;

/// Largest input side a card may ask for; far beyond any segmentation model in use.
const MAX_INPUT_SIDE: u32 = 4096;

/// What the model returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Per-pixel logits `[B, C, H, W]` (or torchvision's dict with `out`), channel = class id.
    Semantic,
    /// torchvision detection TorchScript: `forward(List[Tensor[3, H, W]]) -> (losses,
    /// detections)` with boxes, labels, scores and masks per image.
    Maskrcnn,
}

/// How a frame is brought to the model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    /// Scale each axis on its own to fill the input (the aspect ratio may change).
    Stretch,
    /// Scale to fit inside the input keeping the aspect ratio; pad the rest with the mean
    /// colour (zero after normalisation).
    Letterbox,
}

/// What a class is, for event derivation downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassCategory {
    /// A surgical instrument.
    Tool,
    /// An organ or tissue.
    Organ,
    /// Not a finding: never turned into an instance.
    Background,
    /// Anything else (gauze, clips, smoke).
    Other,
}

impl ClassCategory {
    /// The wire enum value.
    pub fn to_proto(self) -> orstream_proto::Category {
        match self {
            ClassCategory::Tool => orstream_proto::Category::Tool,
            ClassCategory::Organ => orstream_proto::Category::Organ,
            ClassCategory::Background => orstream_proto::Category::Background,
            ClassCategory::Other => orstream_proto::Category::Other,
        }
    }
}

/// One class of the model.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassInfo {
    /// Output channel (semantic) or detection label (maskrcnn).
    pub id: u32,
    /// Label carried in results, e.g. `grasper`.
    pub name: String,
    /// Tool, organ, background or other.
    pub category: ClassCategory,
}

/// A parsed and checked model card.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelCard {
    /// Model name, carried in every result.
    pub name: String,
    /// Model version, carried in every result; bump it when the weights change.
    pub version: String,
    /// What the model was trained on and its limits.
    #[serde(default)]
    pub description: String,
    /// What the model returns.
    pub output: OutputKind,
    /// Width of the model's input, in pixels.
    pub input_width: u32,
    /// Height of the model's input, in pixels.
    pub input_height: u32,
    /// How frames are brought to the input size.
    pub resize: ResizeMode,
    /// Per-channel mean of RGB in 0..1, subtracted before dividing by `std`.
    pub mean: [f32; 3],
    /// Per-channel standard deviation of RGB in 0..1.
    pub std: [f32; 3],
    /// The classes, one per output channel or detection label.
    pub classes: Vec<ClassInfo>,
}

impl ModelCard {
    /// Reads and checks the card at `path`.
    pub fn load(path: &Path) -> Result<Self, InferError> {
        let text = std::fs::read_to_string(path).map_err(|e| InferError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks card text; `path` is only named in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, InferError> {
        let card: ModelCard = toml::from_str(text).map_err(|e| InferError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        card.validate(path)?;
        Ok(card)
    }

    /// Checks every rule and reports all problems at once, each naming its key.
    pub fn validate(&self, path: &Path) -> Result<(), InferError> {
        let mut problems = Vec::new();
        if self.name.trim().is_empty() {
            problems.push("name: must not be empty".to_owned());
        }
        if self.version.trim().is_empty() {
            problems.push("version: must not be empty".to_owned());
        }
        for (key, side) in [
            ("input_width", self.input_width),
            ("input_height", self.input_height),
        ] {
            if side == 0 || side > MAX_INPUT_SIDE {
                problems.push(format!("{key}: {side} is outside 1..={MAX_INPUT_SIDE}"));
            }
        }
        for (i, std) in self.std.iter().enumerate() {
            if !(std.is_finite() && *std > 0.0) {
                problems.push(format!("std[{i}]: {std} must be a positive number"));
            }
        }
        for (i, mean) in self.mean.iter().enumerate() {
            if !mean.is_finite() {
                problems.push(format!("mean[{i}]: {mean} must be a number"));
            }
        }
        if self.classes.is_empty() {
            problems.push("classes: at least one [[classes]] entry is needed".to_owned());
        }
        let mut ids: Vec<u32> = self.classes.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        for pair in ids.windows(2) {
            if pair[0] == pair[1] {
                problems.push(format!("classes: id {} appears more than once", pair[0]));
            }
        }
        for class in &self.classes {
            if class.name.trim().is_empty() {
                problems.push(format!("classes: id {} has an empty name", class.id));
            }
        }
        // Channel c of a semantic model is class id c: the ids must be exactly 0..C.
        if self.output == OutputKind::Semantic
            && ids.iter().enumerate().any(|(i, id)| *id as usize != i)
        {
            problems.push(format!(
                "classes: a semantic model's ids are its output channels and must be 0..{} \
                 without gaps, got {ids:?}",
                self.classes.len()
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InferError::Card {
                path: path.to_path_buf(),
                problems,
            })
        }
    }

    /// The class with output channel or label `id`.
    pub fn class(&self, id: u32) -> Option<&ClassInfo> {
        self.classes.iter().find(|c| c.id == id)
    }

    /// The number of output channels (semantic) or labels (maskrcnn) the card describes:
    /// one past the largest id.
    pub fn class_count(&self) -> usize {
        self.classes
            .iter()
            .map(|c| c.id as usize + 1)
            .max()
            .unwrap_or(0)
    }
}

/// `sha256:<hex>` of the file at `path`, the model digest carried in results.
pub fn file_digest(path: &Path) -> Result<String, InferError> {
    let error = |e: std::io::Error| InferError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    orstream_shell::digest::file_sha256(path).map_err(error)
}

/// The card that sits next to a model file: the same name with `.toml`.
pub fn card_path_for(model: &Path) -> PathBuf {
    model.with_extension("toml")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: &str = r#"
        name = "seg"
        version = "1.0.0"
        output = "semantic"
        input_width = 320
        input_height = 192
        resize = "stretch"
        mean = [0.485, 0.456, 0.406]
        std = [0.229, 0.224, 0.225]
        [[classes]]
        id = 0
        name = "background"
        category = "background"
        [[classes]]
        id = 1
        name = "grasper"
        category = "tool"
    "#;

    #[test]
    fn parses_a_flat_card() {
        let card = ModelCard::parse(CARD, Path::new("seg.toml")).unwrap();
        assert_eq!(card.output, OutputKind::Semantic);
        assert_eq!((card.input_width, card.input_height), (320, 192));
        assert_eq!(card.class(1).map(|c| c.category), Some(ClassCategory::Tool));
        assert_eq!(card.class_count(), 2);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = format!("sha256 = \"x\"\n{CARD}");
        let err = ModelCard::parse(&text, Path::new("seg.toml")).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_naming_its_key() {
        let text = CARD
            .replace("input_width = 320", "input_width = 0")
            .replace("std = [0.229", "std = [0.0")
            .replace("id = 1", "id = 3")
            .replace("version = \"1.0.0\"", "version = \"\"");
        let err = ModelCard::parse(&text, Path::new("seg.toml")).unwrap_err();
        let InferError::Card { problems, .. } = &err else {
            panic!("{err}");
        };
        let all = problems.join("\n");
        for needle in ["input_width", "std[0]", "0..2 without gaps", "version"] {
            assert!(all.contains(needle), "{needle} missing from {all}");
        }
    }
}
