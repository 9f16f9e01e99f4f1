//! The inference benchmark: for one model on one device, in one run, it prints
//!
//! 1. model-only throughput at batch 1/2/4/8: the module's forward pass on a batch already on
//!    the device, nothing else (the ceiling);
//! 2. the pipeline's throughput through the bus at the same batch sizes: JPEG frames on the
//!    in-process bus -> decode pool -> batcher -> replica -> results committed in
//!    transactions, archive mode;
//! 3. their ratio;
//! 4. end-to-end latency minus model time, p50/p99 (the engine's own overhead: decode,
//!    preprocessing, batching waits, postprocessing, producing), with frames arriving at half
//!    the pipeline's throughput, from several streams;
//! 5. the seed's two experiments: replicas x concurrent streams, and batch 1 vs 8.
//!
//! It needs no GStreamer, so it runs wherever libtorch does:
//!
//! ```text
//! cargo bench -p orstream-infer --bench pipeline -- --model models/demo/seg.pt [--device cuda:0]
//!     [--frames 320] [--batches 1,2,4,8] [--width 640 --height 360]
//!     [--torch-threads N] [--replicas 1,2] [--streams 1,4,8]
//!     [--torchvision-ops PATH --libpython PATH]   (maskrcnn models)
//! ```
//!
//! Model-only figures are the best of five 0.6 s windows; pipeline figures are single runs,
//! sustained (results between the 10th and 90th percentile of their production times, so the
//! first batches' start and the last commit's wait are left out, as the ceiling leaves out its
//! warm-up) and over the whole run. The ratio is sustained pipeline / model-only.
//! On a machine shared with other work, read the load average printed in the header.
//!
//! ```text
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a benchmark stops at the first failure, with its message"
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use orstream_bus::{Bus, Record};
use orstream_infer::card::OutputKind;
use orstream_infer::config::{DeliveryGuarantee, Mode};
use orstream_infer::preprocess::{PixelFormat, Pixels, decode_jpeg, prepare};
use orstream_infer::{InferConfig, Model, Stats, TorchModel, Worker, parse_device, synthetic};
use orstream_proto::{FrameResult, FrameStatus};
use tch::{Device, IValue, Kind, Tensor};
use tokio_util::sync::CancellationToken;

struct Options {
    model: PathBuf,
    card: Option<PathBuf>,
    device: String,
    frames: u64,
    batches: Vec<usize>,
    width: u32,
    height: u32,
    torchvision_ops: Option<PathBuf>,
    libpython: Option<PathBuf>,
    replicas: Vec<usize>,
    streams: Vec<usize>,
    torch_threads: usize,
}

fn options() -> Options {
    let mut args = std::env::args().skip(1);
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let demo = repo.join("models/demo/seg.pt");
    let mut o = Options {
        model: if demo.is_file() {
            demo
        } else {
            repo.join("models/fixtures/tiny_semantic.pt")
        },
        card: None,
        device: "cpu".to_owned(),
        frames: 320,
        batches: vec![1, 2, 4, 8],
        width: 640,
        height: 360,
        torchvision_ops: None,
        libpython: None,
        replicas: vec![1, 2],
        streams: vec![1, 4, 8],
        torch_threads: 0,
    };
    let list =
        |v: String| -> Vec<usize> { v.split(',').map(|x| x.trim().parse().unwrap()).collect() };
    // cargo runs benches in the package directory; paths may be given from the repository root.
    let path = |v: String| -> PathBuf {
        let given = PathBuf::from(&v);
        if given.is_relative() && !given.exists() && repo.join(&given).exists() {
            repo.join(given)
        } else {
            given
        }
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--model" => o.model = path(value()),
            "--card" => o.card = Some(path(value())),
            "--device" => o.device = value(),
            "--frames" => o.frames = value().parse().unwrap(),
            "--batches" => o.batches = list(value()),
            "--replicas" => o.replicas = list(value()),
            "--streams" => o.streams = list(value()),
            "--torch-threads" => o.torch_threads = value().parse().unwrap(),
            "--width" => o.width = value().parse().unwrap(),
            "--height" => o.height = value().parse().unwrap(),
            "--torchvision-ops" => o.torchvision_ops = Some(path(value())),
            "--libpython" => o.libpython = Some(path(value())),
            // cargo passes --bench to harness-less benches.
            "--bench" => {}
            other => panic!("unknown option {other}"),
        }
    }
    o
}

fn base_config(o: &Options) -> InferConfig {
    let mut config = InferConfig {
        mode: Mode::Archive,
        delivery: DeliveryGuarantee::ExactlyOnce,
        commit_interval: Duration::from_millis(100),
        max_in_flight: 512,
        ..InferConfig::default()
    };
    config.model.path = o.model.clone();
    config.model.card = o.card.clone();
    config.model.device = o.device.clone();
    config.model.torchvision_ops = o.torchvision_ops.clone();
    config.model.libpython = o.libpython.clone();
    config.model.torch_threads = o.torch_threads;
    config.batch.max_linger = Duration::from_millis(5);
    config
}

/// A few distinct JPEG frames of the configured size, reused with new sequence numbers.
fn jpeg_pool(o: &Options) -> Vec<Vec<u8>> {
    (0..16)
        .map(|n| synthetic::encode_jpeg(&synthetic::scene(o.width, o.height, n * 7), 85).unwrap())
        .collect()
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn synchronize(device: Device) {
    if let Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
}

/// Frames per second of the bare forward pass at `batch`.
fn ceiling(o: &Options, model: &Model, batch: usize, pool: &[Vec<u8>]) -> f64 {
    let device = parse_device(&o.device).unwrap();
    let module = TorchModel::load_with(&model.path, device, false).unwrap();
    let image = decode_jpeg(&pool[0], u64::MAX).unwrap();
    let (Pixels::Normalized(pixels), _) = prepare(&image, &model.card, PixelFormat::Normalized)
    else {
        unreachable!("asked for f32");
    };
    let (w, h) = (
        i64::from(model.card.input_width),
        i64::from(model.card.input_height),
    );
    let one = Tensor::from_slice(&pixels).view([1, 3, h, w]);
    let input = one
        .repeat([batch as i64, 1, 1, 1])
        .to_device(device)
        .to_kind(Kind::Float);
    let call = |input: &Tensor| match model.card.output {
        OutputKind::Semantic => {
            module
                .forward_values(&[IValue::Tensor(input.shallow_clone())])
                .unwrap();
        }
        OutputKind::Maskrcnn => {
            let list = (0..batch as i64).map(|i| input.get(i)).collect();
            module.forward_values(&[IValue::TensorList(list)]).unwrap();
        }
    };
    for _ in 0..3 {
        call(&input);
    }
    synchronize(device);
    // The best of several windows: on a shared machine the slow windows measure the
    // neighbours, not the model.
    let mut best = 0f64;
    for _ in 0..5 {
        let started = Instant::now();
        let mut runs = 0u64;
        while started.elapsed() < Duration::from_millis(600) || runs < 2 {
            call(&input);
            runs += 1;
        }
        synchronize(device);
        best = best.max((runs * batch as u64) as f64 / started.elapsed().as_secs_f64());
    }
    best
}

struct Run {
    /// Frames over the whole run, first poll to last commit.
    fps: f64,
    /// Sustained rate: results produced between the 10th and the 90th percentile of their
    /// production times (leaves out the first batches' start and the last commit's wait, as
    /// the model-only ceiling leaves out its warm-up).
    steady_fps: f64,
    results: Vec<FrameResult>,
    stats: Stats,
}

/// Runs the worker over the in-process bus on `frames` frames from `streams` streams,
/// published all at once (`pace` None) or at `pace` frames per second.
fn pipeline(
    o: &Options,
    config: InferConfig,
    streams: usize,
    frames: u64,
    pace: Option<f64>,
    pool: &[Vec<u8>],
) -> Run {
    let bus = Bus::memory();
    bus.create_topic(&config.frames_topic, 8, Duration::from_secs(5))
        .unwrap();
    let model = Model::open(&config.model).unwrap();
    let topic = config.frames_topic.clone();
    let make = |i: u64| -> Record {
        let stream = (i as usize) % streams;
        let seq = i / streams as u64;
        let frame = synthetic::frame(
            &format!("cam-{stream}"),
            seq,
            synthetic::now_ns(),
            o.width,
            o.height,
            pool[(i as usize) % pool.len()].clone(),
        );
        synthetic::frame_record(&topic, &frame)
    };
    let producer = bus.producer().unwrap();
    if pace.is_none() {
        for i in 0..frames {
            let _ = producer.send(&make(i), Duration::from_secs(5)).unwrap();
        }
    }
    let worker = Worker::new(config.clone(), bus.clone(), model).unwrap();
    let counters = worker.counters();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let thread = std::thread::spawn(move || worker.run(token));
    let mut started = None;
    let mut published = if pace.is_none() { frames } else { 0 };
    loop {
        let stats = counters.snapshot();
        if started.is_none() && stats.consumed > 0 {
            started = Some(Instant::now());
        }
        if stats.results() >= frames {
            break;
        }
        assert!(!thread.is_finished(), "the worker stopped: {:?}", stats);
        if let Some(rate) = pace {
            // One frame at once (it waits for the warm-up and is left out of the latency
            // figures), the rest on schedule from when the worker consumes.
            let due = match started {
                Some(s) => ((s.elapsed().as_secs_f64() * rate) as u64 + 1).min(frames),
                None => 1,
            };
            while published < due {
                let _ = producer
                    .send(&make(published), Duration::from_secs(5))
                    .unwrap();
                published += 1;
            }
            std::thread::sleep(Duration::from_micros(500));
        } else {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let elapsed = started.map_or(Duration::ZERO, |s| s.elapsed());
    stop.cancel();
    let stats = thread.join().unwrap().unwrap();
    let consumer = bus.consumer("bench-reader").unwrap();
    consumer
        .subscribe(&[config.results_topic.as_str()])
        .unwrap();
    let mut results = Vec::new();
    while let Some(m) = consumer.poll(Duration::from_millis(200)).unwrap() {
        results.push(orstream_proto::decode::<FrameResult>(&m.payload).unwrap());
    }
    assert!(
        results.iter().all(|r| r.status == FrameStatus::Ok as i32),
        "not every frame ran"
    );
    Run {
        fps: frames as f64 / elapsed.as_secs_f64(),
        steady_fps: steady_rate(&results),
        results,
        stats,
    }
}

/// Results per second between the 10th and 90th percentile of production times.
fn steady_rate(results: &[FrameResult]) -> f64 {
    let mut times: Vec<i64> = results.iter().map(|r| r.result_time_ns).collect();
    times.sort_unstable();
    let (lo, hi) = (times.len() / 10, times.len() * 9 / 10);
    if hi <= lo || times[hi] <= times[lo] {
        return f64::NAN;
    }
    (hi - lo) as f64 / ((times[hi] - times[lo]) as f64 / 1e9)
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let index = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[index]
}

/// End-to-end latency and the same minus model time (forward), in ms: (e2e p50, e2e p99,
/// overhead p50, overhead p99).
fn latencies(results: &[FrameResult]) -> (f64, f64, f64, f64) {
    let mut e2e: Vec<f64> = Vec::new();
    let mut overhead: Vec<f64> = Vec::new();
    let first = results.iter().map(|r| r.capture_time_ns).min();
    for r in results.iter().filter(|r| Some(r.capture_time_ns) != first) {
        let total_ms = (r.result_time_ns - r.capture_time_ns) as f64 / 1e6;
        let forward_ms = r.timings.map_or(0.0, |t| t.forward_us as f64 / 1e3);
        e2e.push(total_ms);
        overhead.push(total_ms - forward_ms);
    }
    (
        percentile(&mut e2e.clone(), 0.5),
        percentile(&mut e2e, 0.99),
        percentile(&mut overhead.clone(), 0.5),
        percentile(&mut overhead, 0.99),
    )
}

fn main() {
    let o = options();
    if o.torch_threads > 0 {
        tch::set_num_threads(o.torch_threads as i32);
    }
    let base = base_config(&o);
    let model = Model::open(&base.model).unwrap();
    let pool = jpeg_pool(&o);
    println!(
        "orstream-infer bench: model {} {} ({}), card input {}x{}, {} output; device {}; \
         {} CPU cores (load average {}), torch threads {}; frames {}x{} JPEG; {} frames per \
         pipeline run",
        model.card.name,
        model.card.version,
        o.model.display(),
        model.card.input_width,
        model.card.input_height,
        match model.card.output {
            OutputKind::Semantic => "semantic",
            OutputKind::Maskrcnn => "maskrcnn",
        },
        o.device,
        cores(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?"),
        tch::get_num_threads(),
        o.width,
        o.height,
        o.frames,
    );

    // Host cost of one frame, on one thread with nothing else running in this process.
    let (mut decode_s, mut prepare_s) = (0f64, 0f64);
    let rounds = 64;
    for i in 0..rounds {
        let started = Instant::now();
        let image = decode_jpeg(&pool[i % pool.len()], u64::MAX).unwrap();
        decode_s += started.elapsed().as_secs_f64();
        let started = Instant::now();
        let _ = prepare(&image, &model.card, PixelFormat::Normalized);
        prepare_s += started.elapsed().as_secs_f64();
    }
    println!(
        "host work per frame on one thread: JPEG decode {:.2} ms, resize + normalise {:.2} ms",
        decode_s * 1e3 / rounds as f64,
        prepare_s * 1e3 / rounds as f64
    );

    println!();
    println!(
        "batch | model-only fps | pipeline fps sustained (whole run) | ratio | forward ms/batch model-only, pipeline | e2e p50 / p99 ms | overhead p50 / p99 ms"
    );
    println!(
        "------|----------------|-----------------------------------|-------|---------------------------------------|------------------|----------------------"
    );
    let mut by_batch = Vec::new();
    let mut stages = Vec::new();
    for &batch in &o.batches {
        let ceiling = ceiling(&o, &model, batch, &pool);
        let mut config = base.clone();
        config.batch.max_batch_size = batch;
        let through = pipeline(&o, config.clone(), 4, o.frames, None, &pool);
        // Latency: frames arrive at half the pipeline's throughput, from 4 streams.
        let paced = pipeline(&o, config, 4, o.frames, Some(through.fps * 0.5), &pool);
        let (p50, p99, o50, o99) = latencies(&paced.results);
        let mean = |f: &dyn Fn(&orstream_proto::Timings) -> u64| {
            through
                .results
                .iter()
                .map(|r| r.timings.map_or(0.0, |t| f(&t) as f64 / 1e3))
                .sum::<f64>()
                / through.results.len().max(1) as f64
        };
        let mean_forward_ms = mean(&|t| t.forward_us);
        stages.push((
            batch,
            mean(&|t| t.preprocess_us),
            mean(&|t| t.postprocess_us),
        ));
        println!(
            "{batch:>5} | {ceiling:>14.1} | {:>24.1} ({:>6.1}) | {:>4.0}% | {:>17.2}, {:>8.2} (mean batch {:.1}) | {p50:>7.1} / {p99:>6.1} | {o50:>9.1} / {o99:>6.1}",
            through.steady_fps,
            through.fps,
            100.0 * through.steady_fps / ceiling,
            1e3 * batch as f64 / ceiling,
            mean_forward_ms,
            through.stats.batched_frames as f64 / through.stats.batches.max(1) as f64,
        );
        let mean_batch = through.stats.batched_frames as f64 / through.stats.batches.max(1) as f64;
        by_batch.push((batch, through.fps, mean_batch, p50));
    }

    println!();
    for (batch, pre, post) in &stages {
        println!(
            "batch {batch}: per frame, decode + preprocess {pre:.2} ms (decode pool), postprocess \
             {post:.2} ms"
        );
    }

    println!();
    println!(
        "seed experiment 1: replicas x concurrent streams (archive, batch 4, torch threads = \
         --torch-threads, else cores / replicas)"
    );
    println!("replicas | streams | pipeline fps | e2e p50 ms (frames at 0.8x that rate)");
    println!("---------|---------|--------------|------------------------------------");
    for &replicas in &o.replicas {
        for &streams in &o.streams {
            let mut config = base.clone();
            config.batch.max_batch_size = 4;
            config.model.replicas = replicas;
            config.model.torch_threads = if o.torch_threads > 0 {
                o.torch_threads
            } else {
                (cores() / replicas).max(1)
            };
            let through = pipeline(&o, config.clone(), streams, o.frames, None, &pool);
            let paced = pipeline(
                &o,
                config,
                streams,
                o.frames,
                Some(through.fps * 0.8),
                &pool,
            );
            let (p50, _, _, _) = latencies(&paced.results);
            println!(
                "{replicas:>8} | {streams:>7} | {:>12.1} | {p50:>8.1}",
                through.fps
            );
        }
    }

    println!();
    println!("seed experiment 2: batch 1 vs 8 (from the table above)");
    let first = by_batch.iter().find(|b| b.0 == 1);
    let eighth = by_batch.iter().find(|b| b.0 == 8);
    if let (Some(one), Some(eight)) = (first, eighth) {
        println!(
            "batch 1: {:.1} fps, e2e p50 {:.1} ms at half load; batch 8: {:.1} fps (mean batch {:.1}), \
             e2e p50 {:.1} ms at half load; throughput x{:.2}",
            one.1,
            one.3,
            eight.1,
            eight.2,
            eight.3,
            eight.1 / one.1
        );
    }
}
