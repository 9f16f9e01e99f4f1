//! Loads the committed TorchScript fixture through libtorch and checks its real answers.
//!
//! The fixture (models/fixtures/tiny_semantic.pt, made by make_fixtures.py there) labels each
//! pixel by its dominant colour: red -> 1 grasper, green -> 2 liver, blue -> 3 gauze, anything
//! balanced (grey, black, white) -> 0 background. Inputs are normalised with its card's
//! mean 0.5 / std 0.25.

#![allow(
    clippy::expect_used,
    reason = "a test fails at the first broken expectation, with its message"
)]

use std::path::PathBuf;

use orstream_infer::{InferError, TorchModel, parse_device};
use tch::{Device, IndexOp, Kind, Tensor};

const SIZE: i64 = 64;
const CLASSES: i64 = 4;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/fixtures/tiny_semantic.pt")
}

fn load() -> TorchModel {
    TorchModel::load(fixture(), Device::Cpu).expect("the committed fixture loads on the CPU")
}

/// A `[3, h, w]` image of one colour (channels 0..1), normalised as the model card says.
fn uniform(rgb: [f32; 3], h: i64, w: i64) -> Tensor {
    let pixel = (Tensor::from_slice(&rgb) - 0.5) / 0.25;
    pixel.view([3, 1, 1]).expand([3, h, w], false).contiguous()
}

fn argmax(logits: &Tensor) -> Tensor {
    logits.argmax(1, false)
}

#[test]
fn uniform_colours_get_their_class_at_every_pixel() {
    let model = load();
    let cases = [
        ([1.0, 0.0, 0.0], 1),
        ([0.0, 1.0, 0.0], 2),
        ([0.0, 0.0, 1.0], 3),
        ([0.5, 0.5, 0.5], 0),
        ([0.0, 0.0, 0.0], 0),
        ([1.0, 1.0, 1.0], 0),
    ];
    for (rgb, class) in cases {
        let logits = model
            .forward(&uniform(rgb, SIZE, SIZE).unsqueeze(0))
            .expect("forward");
        assert_eq!(logits.size(), [1, CLASSES, SIZE, SIZE]);
        let classes = argmax(&logits);
        let hits = classes.eq(class).sum(Kind::Int64).int64_value(&[]);
        assert_eq!(
            hits,
            SIZE * SIZE,
            "colour {rgb:?}: {hits} pixels of class {class}"
        );
    }
}

#[test]
fn red_logits_are_the_hand_set_values() {
    // Normalised red is (2, -2, -2): opponent channel 0 = 2 + 2 = 4, the others clamp to 0,
    // background is the constant 1.
    let model = load();
    let logits = model
        .forward(&uniform([1.0, 0.0, 0.0], SIZE, SIZE).unsqueeze(0))
        .expect("forward");
    let expected = Tensor::from_slice(&[1.0f32, 4.0, 0.0, 0.0]);
    for (y, x) in [(0, 0), (31, 17), (63, 63)] {
        let got = logits.i((0, .., y, x));
        let diff = (&got - &expected).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "logits at ({y}, {x}): {got:?}");
    }
}

#[test]
fn a_batch_keeps_each_image_apart() {
    let model = load();
    let colours = [
        [0.0, 0.0, 1.0],
        [1.0, 0.0, 0.0],
        [0.2, 0.2, 0.2],
        [0.0, 1.0, 0.0],
    ];
    let images: Vec<Tensor> = colours
        .iter()
        .map(|&rgb| uniform(rgb, SIZE, SIZE))
        .collect();
    let logits = model.forward(&Tensor::stack(&images, 0)).expect("forward");
    assert_eq!(logits.size(), [4, CLASSES, SIZE, SIZE]);
    let classes = argmax(&logits);
    for (b, class) in [3i64, 1, 0, 2].into_iter().enumerate() {
        let hits = classes
            .i(b as i64)
            .eq(class)
            .sum(Kind::Int64)
            .int64_value(&[]);
        assert_eq!(hits, SIZE * SIZE, "batch item {b}");
    }
}

#[test]
fn quadrants_are_segmented_where_they_are() {
    // Top left red, top right green, bottom left blue, bottom right grey. The 3x3 blur mixes
    // colours only next to the seams, so every pixel not touching a seam keeps its class.
    let model = load();
    let half = SIZE / 2;
    let top = Tensor::cat(
        &[
            uniform([1.0, 0.0, 0.0], half, half),
            uniform([0.0, 1.0, 0.0], half, half),
        ],
        2,
    );
    let bottom = Tensor::cat(
        &[
            uniform([0.0, 0.0, 1.0], half, half),
            uniform([0.5, 0.5, 0.5], half, half),
        ],
        2,
    );
    let image = Tensor::cat(&[top, bottom], 1).unsqueeze(0);
    let classes = argmax(&model.forward(&image).expect("forward")).squeeze_dim(0);
    assert_eq!(classes.size(), [SIZE, SIZE]);
    let inner = |rows: std::ops::Range<i64>, cols: std::ops::Range<i64>| {
        classes.i((rows, cols)).shallow_clone()
    };
    let quadrants = [
        (inner(0..half - 1, 0..half - 1), 1),
        (inner(0..half - 1, half + 1..SIZE), 2),
        (inner(half + 1..SIZE, 0..half - 1), 3),
        (inner(half + 1..SIZE, half + 1..SIZE), 0),
    ];
    for (i, (quadrant, class)) in quadrants.iter().enumerate() {
        let pixels = (half - 1) * (half - 1);
        let hits = quadrant.eq(*class).sum(Kind::Int64).int64_value(&[]);
        assert_eq!(hits, pixels, "quadrant {i}, class {class}");
    }
}

#[test]
fn any_input_size_keeps_its_size() {
    let model = load();
    let logits = model
        .forward(&uniform([0.0, 1.0, 0.0], 24, 40).unsqueeze(0))
        .expect("forward");
    assert_eq!(logits.size(), [1, CLASSES, 24, 40]);
}

#[test]
fn a_missing_model_file_is_named_in_the_error() {
    let path = fixture().with_file_name("no_such_model.pt");
    let err = TorchModel::load(&path, Device::Cpu).expect_err("no such file");
    assert!(matches!(err, InferError::ModelNotFound { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
}

#[test]
fn a_file_that_is_not_torchscript_is_named_in_the_error() {
    let path = fixture().with_file_name("tiny_semantic.toml");
    let err = TorchModel::load(&path, Device::Cpu).expect_err("not a model");
    assert!(matches!(err, InferError::ModelLoad { .. }), "{err:?}");
    assert!(err.to_string().contains("tiny_semantic.toml"), "{err}");
}

#[test]
fn wrong_input_shape_is_refused_before_libtorch() {
    let model = load();
    let grey = Tensor::zeros([1, 1, SIZE, SIZE], (Kind::Float, Device::Cpu));
    let err = model.forward(&grey).expect_err("one channel");
    assert!(matches!(err, InferError::BadInput { .. }), "{err:?}");
    let bytes = Tensor::zeros([1, 3, SIZE, SIZE], (Kind::Uint8, Device::Cpu));
    let err = model.forward(&bytes).expect_err("u8 input");
    assert!(matches!(err, InferError::BadInput { .. }), "{err:?}");
}

#[test]
fn cuda_devices_are_parsed_and_checked_against_libtorch() {
    let device = parse_device("cuda:0").expect("valid name");
    assert_eq!(device, Device::Cuda(0));
    let visible = tch::Cuda::device_count();
    let result = TorchModel::load(fixture(), device);
    if visible == 0 {
        let err = result.expect_err("no CUDA device here");
        assert!(
            matches!(
                err,
                InferError::CudaUnavailable {
                    index: 0,
                    available: 0
                }
            ),
            "{err:?}"
        );
    } else {
        let model = result.expect("loads on cuda:0");
        let input = uniform([0.0, 0.0, 1.0], SIZE, SIZE).unsqueeze(0);
        let logits = model.forward(&input).expect("forward on cuda:0");
        assert_eq!(logits.device(), Device::Cuda(0));
        let hits = argmax(&logits).eq(3).sum(Kind::Int64).int64_value(&[]);
        assert_eq!(hits, SIZE * SIZE);
    }
}

/// libtorch_cuda.so must be loaded whenever the wheel has one, GPU or not: if the linker had
/// dropped it, CUDA would silently be unavailable even on a GPU machine.
#[cfg(target_os = "linux")]
#[test]
fn libtorch_cuda_is_linked_when_the_wheel_has_it() {
    let _ = load();
    let maps = std::fs::read_to_string("/proc/self/maps").expect("readable maps");
    let cpu = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| path.ends_with("/libtorch_cpu.so"))
        .map(PathBuf::from)
        .expect("libtorch_cpu.so is mapped");
    let lib_dir = cpu.parent().expect("libtorch_cpu.so has a directory");
    if lib_dir.join("libtorch_cuda.so").is_file() {
        assert!(
            maps.contains("/libtorch_cuda.so"),
            "{} has libtorch_cuda.so but the test binary did not load it",
            lib_dir.display()
        );
    }
}
