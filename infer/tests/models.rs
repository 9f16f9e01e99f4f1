//! Both output kinds on the committed fixtures, through the runner the worker uses (card,
//! preprocessing, forward, postprocessing), and cards that do not match their model.
//!
//! The Mask R-CNN fixture needs torchvision's operator library: it is taken from the project's
//! venv (`.venv`, made by scripts/install-python.sh), and the test fails, not skips, without it.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    reason = "a test fails at the first broken expectation, with its message"
)]

use std::path::{Path, PathBuf};

use orstream_infer::InferError;
use orstream_infer::config::{ModelConfig, PostprocessConfig};
use orstream_infer::preprocess::{PixelFormat, RgbImage, prepare};
use orstream_infer::runner::{BatchInput, Model, Runner};
use orstream_proto::Category;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(name: &str) -> PathBuf {
    repo().join("models/fixtures").join(name)
}

/// torchvision/_C.so and the libpython it was built against, from the project's venv.
fn torchvision_paths() -> (PathBuf, PathBuf) {
    let python = repo().join(".venv/bin/python");
    let script = "import sysconfig, os, torchvision; \
        print(os.path.join(os.path.dirname(torchvision.__file__), '_C.so')); \
        print(os.path.join(sysconfig.get_config_var('LIBDIR'), sysconfig.get_config_var('INSTSONAME')))";
    let output = std::process::Command::new(&python)
        .args(["-c", script])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}; run scripts/install-python.sh",
                python.display()
            )
        });
    assert!(
        output.status.success(),
        "{} cannot import torchvision: {}",
        python.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let ops = PathBuf::from(lines.next().expect("ops path"));
    let libpython = PathBuf::from(lines.next().expect("libpython path"));
    assert!(ops.is_file(), "{} missing", ops.display());
    assert!(libpython.is_file(), "{} missing", libpython.display());
    (ops, libpython)
}

fn semantic_config() -> ModelConfig {
    ModelConfig {
        path: fixture("tiny_semantic.pt"),
        ..ModelConfig::default()
    }
}

fn maskrcnn_config() -> ModelConfig {
    let (ops, libpython) = torchvision_paths();
    ModelConfig {
        path: fixture("tiny_maskrcnn.pt"),
        torchvision_ops: Some(ops),
        libpython: Some(libpython),
        ..ModelConfig::default()
    }
}

/// A grey image with one coloured rectangle (pixels, end exclusive).
fn picture(w: u32, h: u32, rect: (u32, u32, u32, u32), rgb: [u8; 3]) -> RgbImage {
    let mut data = [128u8, 128, 128].repeat((w * h) as usize);
    for y in rect.1..rect.3 {
        for x in rect.0..rect.2 {
            let p = ((y * w + x) * 3) as usize;
            data[p..p + 3].copy_from_slice(&rgb);
        }
    }
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

fn write_card(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn semantic_blobs_come_out_where_they_are_with_card_labels() {
    let model = Model::open(&semantic_config()).expect("fixture opens");
    assert!(model.digest.starts_with("sha256:"), "{}", model.digest);
    assert_eq!(model.identity().name, "tiny_semantic");
    let post = PostprocessConfig::default();
    let runner = Runner::load(&model, &semantic_config(), &post).expect("loads");
    runner.check_and_warm_up(2, 1).expect("matches its card");

    // 256x128 frame: a red block in the left half, a green one lower right.
    let mut image = picture(256, 128, (32, 32, 96, 96), [240, 10, 10]);
    for y in 80..120 {
        for x in 160..240 {
            let p = (y * 256 + x) * 3;
            image.data[p..p + 3].copy_from_slice(&[10, 240, 10]);
        }
    }
    let (pixels, placement) = prepare(&image, &model.card, PixelFormat::Normalized);
    let grey = picture(256, 128, (0, 0, 0, 0), [0, 0, 0]);
    let (grey_pixels, grey_placement) = prepare(&grey, &model.card, PixelFormat::Normalized);
    let output = runner
        .run(&[
            BatchInput {
                pixels: &pixels,
                placement,
            },
            BatchInput {
                pixels: &grey_pixels,
                placement: grey_placement,
            },
        ])
        .expect("runs");
    assert_eq!(output.instances.len(), 2);
    assert!(output.instances[1].is_empty(), "{:?}", output.instances[1]);
    let found = &output.instances[0];
    assert_eq!(found.len(), 2, "{found:?}");
    let grasper = found
        .iter()
        .find(|i| i.label == "grasper")
        .expect("grasper");
    assert_eq!(grasper.class_id, 1);
    assert_eq!(grasper.category, Category::Tool as i32);
    let bbox = grasper.bbox.expect("bbox");
    // The block covers x 32..96 of 256 and y 32..96 of 128; the blur and the 64x64 resize
    // move the edges by a cell or two.
    assert!((bbox.x0 - 0.125).abs() < 0.04, "{bbox:?}");
    assert!((bbox.x1 - 0.375).abs() < 0.04, "{bbox:?}");
    assert!((bbox.y0 - 0.25).abs() < 0.04, "{bbox:?}");
    assert!((bbox.y1 - 0.75).abs() < 0.04, "{bbox:?}");
    assert!((grasper.area - 0.125).abs() < 0.03, "{}", grasper.area);
    assert!(
        grasper.score > 0.5 && grasper.score <= 1.0,
        "{}",
        grasper.score
    );
    let mask = grasper.mask.as_ref().expect("mask");
    assert_eq!(
        (mask.width, mask.height),
        (post.mask_width, post.mask_height)
    );
    let cells = orstream_proto::rle::decode(mask).unwrap();
    let set = cells.iter().filter(|c| **c == 1).count() as f32;
    assert!((set / cells.len() as f32 - grasper.area).abs() < 0.02);
    let liver = found.iter().find(|i| i.label == "liver").expect("liver");
    assert_eq!(liver.category, Category::Organ as i32);
}

#[test]
fn the_device_normalisation_path_gives_the_same_answer() {
    let model = Model::open(&semantic_config()).unwrap();
    let runner = Runner::load(&model, &semantic_config(), &PostprocessConfig::default()).unwrap();
    let image = picture(96, 64, (10, 10, 50, 40), [20, 20, 230]);
    let (f32_pixels, placement) = prepare(&image, &model.card, PixelFormat::Normalized);
    let (u8_pixels, _) = prepare(&image, &model.card, PixelFormat::Rgb8);
    let a = runner
        .run(&[BatchInput {
            pixels: &f32_pixels,
            placement,
        }])
        .unwrap();
    let b = runner
        .run(&[BatchInput {
            pixels: &u8_pixels,
            placement,
        }])
        .unwrap();
    assert_eq!(a.instances[0].len(), 1);
    assert_eq!(a.instances[0][0].label, "gauze");
    assert_eq!(a.instances[0][0].mask, b.instances[0][0].mask);
}

#[test]
fn a_semantic_card_with_other_classes_is_refused_naming_both_counts() {
    let dir = tempfile::tempdir().unwrap();
    let card = std::fs::read_to_string(fixture("tiny_semantic.toml")).unwrap()
        + "\n[[classes]]\nid = 4\nname = \"smoke\"\ncategory = \"other\"\n";
    let config = ModelConfig {
        card: Some(write_card(dir.path(), "five.toml", &card)),
        ..semantic_config()
    };
    let model = Model::open(&config).unwrap();
    let runner = Runner::load(&model, &config, &PostprocessConfig::default()).unwrap();
    let err = runner
        .check_and_warm_up(1, 1)
        .expect_err("5 classes vs 4 channels");
    assert!(matches!(err, InferError::CardMismatch { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("5 classes"), "{message}");
    assert!(message.contains("4 channels"), "{message}");
    assert!(message.contains("five.toml"), "{message}");

    let kind = std::fs::read_to_string(fixture("tiny_semantic.toml"))
        .unwrap()
        .replace("output = \"semantic\"", "output = \"maskrcnn\"");
    let config = ModelConfig {
        card: Some(write_card(dir.path(), "kind.toml", &kind)),
        ..maskrcnn_config()
    };
    let config = ModelConfig {
        path: fixture("tiny_semantic.pt"),
        ..config
    };
    let model = Model::open(&config).unwrap();
    let runner = Runner::load(&model, &config, &PostprocessConfig::default()).unwrap();
    let err = runner.check_and_warm_up(1, 1).expect_err("not a detector");
    assert!(err.to_string().contains("roi_heads.box_predictor"), "{err}");
}

#[test]
fn maskrcnn_detections_become_instances() {
    let config = maskrcnn_config();
    let model = Model::open(&config).expect("opens with torchvision ops");
    let post = PostprocessConfig {
        min_area: 0.0,
        ..PostprocessConfig::default()
    };
    let runner = Runner::load(&model, &config, &post).unwrap();
    runner.check_and_warm_up(2, 1).expect("matches its card");
    // The fixture's probe picture, at twice its input size.
    let mut image = picture(224, 128, (60, 40, 180, 80), [204, 204, 204]);
    for p in image.data.chunks_exact_mut(3) {
        if p[0] == 128 {
            p.copy_from_slice(&[128, 38, 26]);
        }
    }
    let (pixels, placement) = prepare(&image, &model.card, PixelFormat::Normalized);
    let output = runner
        .run(&[BatchInput {
            pixels: &pixels,
            placement,
        }])
        .unwrap();
    let found = &output.instances[0];
    assert!(!found.is_empty(), "the fixture always detects something");
    for instance in found {
        assert_eq!(instance.class_id, 1);
        assert_eq!(instance.label, "grasper");
        assert_eq!(instance.category, Category::Tool as i32);
        assert!((instance.score - 0.7112).abs() < 1e-3, "{}", instance.score);
        let bbox = instance.bbox.unwrap();
        assert!(
            0.0 <= bbox.x0 && bbox.x0 <= bbox.x1 && bbox.x1 <= 1.0,
            "{bbox:?}"
        );
        assert!(
            0.0 <= bbox.y0 && bbox.y0 <= bbox.y1 && bbox.y1 <= 1.0,
            "{bbox:?}"
        );
        assert!(instance.area > 0.0 && instance.area <= 1.0);
        orstream_proto::rle::check(instance.mask.as_ref().unwrap()).unwrap();
    }
}

#[test]
fn a_maskrcnn_card_with_other_classes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(fixture("tiny_maskrcnn.toml")).unwrap()
        + "\n[[classes]]\nid = 4\nname = \"smoke\"\ncategory = \"other\"\n";
    let config = ModelConfig {
        card: Some(write_card(dir.path(), "five.toml", &text)),
        ..maskrcnn_config()
    };
    let model = Model::open(&config).unwrap();
    let runner = Runner::load(&model, &config, &PostprocessConfig::default()).unwrap();
    let err = runner.check_and_warm_up(1, 1).expect_err("5 classes vs 4");
    let message = err.to_string();
    assert!(
        message.contains("5 classes") && message.contains("4 outputs"),
        "{message}"
    );
}

#[test]
fn a_maskrcnn_card_without_torchvision_ops_is_refused_at_open() {
    let config = ModelConfig {
        path: fixture("tiny_maskrcnn.pt"),
        ..ModelConfig::default()
    };
    let err = Model::open(&config).expect_err("needs the ops library");
    assert!(err.to_string().contains("model.torchvision_ops"), "{err}");
}

/// A model of tiny_semantic's shape whose logits are NaN for frames with any red in them and
/// finite for the rest, scripted to TorchScript with the venv's torch into `dir`.
fn poisoned_model(dir: &Path) -> PathBuf {
    let path = dir.join("poisoned.pt");
    let script = format!(
        "import torch\n\
         class Poisoned(torch.nn.Module):\n\
         \x20   def forward(self, x: torch.Tensor) -> torch.Tensor:\n\
         \x20       b, _, h, w = x.shape\n\
         \x20       logits = torch.zeros(b, 4, h, w)\n\
         \x20       logits[:, 0] = 1.0\n\
         \x20       red = (x[:, 0] > 1.0).flatten(1).any(dim=1).view(b, 1, 1, 1)\n\
         \x20       return torch.where(red, torch.full_like(logits, float('nan')), logits)\n\
         torch.jit.script(Poisoned()).save({:?})\n",
        path.display().to_string()
    );
    // TorchScript reads the module's source, so it must come from a file.
    let source = dir.join("poisoned.py");
    std::fs::write(&source, script).unwrap();
    let python = repo().join(".venv/bin/python");
    let status = std::process::Command::new(&python)
        .arg(&source)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    assert!(status.success(), "scripting the poisoned model failed");
    path
}

#[test]
fn a_non_finite_output_is_a_fault_of_that_frame_not_an_empty_picture() {
    let dir = tempfile::tempdir().unwrap();
    let model_path = poisoned_model(dir.path());
    let card = std::fs::read_to_string(fixture("tiny_semantic.toml")).unwrap();
    write_card(dir.path(), "poisoned.toml", &card);
    let config = ModelConfig {
        path: model_path,
        ..ModelConfig::default()
    };
    let model = Model::open(&config).expect("opens with the tiny card");
    let runner = Runner::load(&model, &config, &PostprocessConfig::default()).expect("loads");

    let red = picture(64, 64, (8, 8, 40, 40), [240, 10, 10]);
    let grey = picture(64, 64, (0, 0, 0, 0), [0, 0, 0]);
    let (red_pixels, red_placement) = prepare(&red, &model.card, PixelFormat::Normalized);
    let (grey_pixels, grey_placement) = prepare(&grey, &model.card, PixelFormat::Normalized);
    let output = runner
        .run(&[
            BatchInput {
                pixels: &red_pixels,
                placement: red_placement,
            },
            BatchInput {
                pixels: &grey_pixels,
                placement: grey_placement,
            },
        ])
        .expect("the batch runs; the fault is per frame");
    assert_eq!(output.instances.len(), 2);
    let fault = output
        .faults
        .get(&0)
        .expect("the red frame's output is NaN");
    assert!(fault.contains("not finite"), "{fault}");
    assert!(
        !output.faults.contains_key(&1),
        "the grey frame's output is finite: {:?}",
        output.faults
    );
}
