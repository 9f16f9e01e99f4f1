//! CPU cost of ingest: a 1080p30 H.264 source published as 720p JPEG at 10 and at 30 fps.
//!
//! `cargo bench -p orstream-ingest --bench throughput`
//!
//! A synthetic 1080p30 H.264 clip (moving colour bars at 8 Mbit/s, written once with whatever
//! H.264 encoder GStreamer has) is ingested in archive mode (every frame, as fast as the
//! machine allows) through the real service onto the in-process bus, so the figures are
//! ingest's own work: demux, H.264 decode, rate cap, scale, JPEG encode, protobuf, publish.
//! CPU time is the process's user + system time around each run. Printed per output rate:
//! frames published, CPU ms per published frame, CPU seconds per second of video, and
//! streams one core sustains in real time (= video seconds / CPU seconds). A decode-only run
//! of the same clip gives the floor that no output setting can go below.
//!
//! `ORSTREAM_BENCH_SECONDS` sets the clip length (default 10).

use std::path::Path;
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use orstream_bus::Bus;
use orstream_ingest::{
    FileSourceConfig, FullPolicy, Ingest, IngestConfig, SourceConfig, StreamConfig,
};
use tokio_util::sync::CancellationToken;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u32 = std::env::var("ORSTREAM_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    orstream_ingest::init()?;
    let dir = std::env::temp_dir().join(format!("orstream-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let clip = dir.join("1080p30.mp4");
    let encoder = write_clip(&clip, seconds * 30)?;
    let video_s = f64::from(seconds);
    println!(
        "source: {seconds} s of 1920x1080 @ 30 fps H.264 ({encoder}, 8 Mbit/s, {:.1} MiB); \
         output 1280x720 JPEG q85; archive mode, in-process bus",
        std::fs::metadata(&clip)?.len() as f64 / (1024.0 * 1024.0)
    );

    let (decode_cpu, decoded) = decode_only(&clip)?;
    println!(
        "decode only        : {decoded:>4} frames  {:>6.2} CPU s  {:>6.2} CPU ms/frame  {:>5.2} streams/core",
        decode_cpu,
        decode_cpu * 1e3 / decoded.max(1) as f64,
        video_s / decode_cpu
    );

    for fps in [10, 30] {
        let (cpu, wall, published) = ingest(&clip, fps)?;
        println!(
            "720p @ {fps:>2} fps JPEG : {published:>4} frames  {cpu:>6.2} CPU s  {:>6.2} CPU ms/frame  \
             {:>5.3} CPU s per video s  {:>5.2} streams/core  (wall {:.1} s, decode share {:.0}%)",
            cpu * 1e3 / published.max(1) as f64,
            cpu / video_s,
            video_s / cpu,
            wall.as_secs_f64(),
            100.0 * decode_cpu / cpu
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn run_to_eos(description: &str) -> Result<(), Box<dyn std::error::Error>> {
    let pipeline = gst::parse::launch(description)?;
    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().ok_or("no bus")?;
    let message = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(600),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .ok_or("timed out")?;
    pipeline.set_state(gst::State::Null)?;
    match message.view() {
        gst::MessageView::Eos(_) => Ok(()),
        other => Err(format!("{other:?}").into()),
    }
}

/// Writes the clip with the first H.264 encoder found; returns its name.
fn write_clip(path: &Path, frames: u32) -> Result<&'static str, Box<dyn std::error::Error>> {
    let (encoder, settings) = if gst::ElementFactory::find("x264enc").is_some() {
        (
            "x264enc",
            "bitrate=8000 speed-preset=veryfast key-int-max=60",
        )
    } else if gst::ElementFactory::find("openh264enc").is_some() {
        (
            "openh264enc",
            "bitrate=8000000 rate-control=bitrate gop-size=60 complexity=low",
        )
    } else {
        return Err("no H.264 encoder (x264enc or openh264enc) is installed".into());
    };
    run_to_eos(&format!(
        "videotestsrc num-buffers={frames} pattern=smpte horizontal-speed=4 ! \
         video/x-raw,width=1920,height=1080,framerate=30/1,format=I420 ! \
         {encoder} {settings} ! h264parse ! mp4mux ! filesink location=\"{}\"",
        path.display()
    ))?;
    Ok(encoder)
}

/// CPU seconds and frames to demux and decode the clip, and nothing else.
fn decode_only(path: &Path) -> Result<(f64, u64), Box<dyn std::error::Error>> {
    let before = orstream_test_support::process::cpu_seconds();
    let pipeline = gst::parse::launch(&format!(
        "filesrc location=\"{}\" ! decodebin ! fakesink name=sink sync=false",
        path.display()
    ))?;
    let pipeline = pipeline
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline")?;
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = std::sync::Arc::clone(&count);
    let sink = pipeline.by_name("sink").ok_or("no sink")?;
    let pad = sink.static_pad("sink").ok_or("no sink pad")?;
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        gst::PadProbeReturn::Ok
    });
    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().ok_or("no bus")?;
    let message = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(600),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .ok_or("timed out")?;
    pipeline.set_state(gst::State::Null)?;
    if !matches!(message.view(), gst::MessageView::Eos(_)) {
        return Err(format!("decode failed: {message:?}").into());
    }
    Ok((
        orstream_test_support::process::cpu_seconds() - before,
        count.load(std::sync::atomic::Ordering::Relaxed),
    ))
}

/// CPU seconds, wall time and frames published for one ingest run of the clip.
fn ingest(path: &Path, fps: u32) -> Result<(f64, Duration, u64), Box<dyn std::error::Error>> {
    let mut stream = StreamConfig::new(
        format!("bench-{fps}"),
        SourceConfig::File(FileSourceConfig {
            path: path.to_owned(),
            ..FileSourceConfig::default()
        }),
    );
    stream.full_policy = FullPolicy::Block;
    stream.output.width = 1280;
    stream.output.height = 720;
    stream.output.max_fps = Some(fps);
    let config = IngestConfig {
        topic_partitions: 1,
        streams: vec![stream],
        ..IngestConfig::default()
    };
    let ingest = Ingest::new(config, Bus::memory())?;
    let before = orstream_test_support::process::cpu_seconds();
    let started = Instant::now();
    let stats = ingest.run(CancellationToken::new())?;
    let wall = started.elapsed();
    let cpu = orstream_test_support::process::cpu_seconds() - before;
    let stream = &stats.streams[0];
    if stream.dropped > 0 || stream.errors > 0 {
        return Err(format!("the run was not clean: {stream:?}").into());
    }
    Ok((cpu, wall, stream.published))
}
