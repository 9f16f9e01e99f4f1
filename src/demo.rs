//! The embedded demo: what the pipeline can do today, in one process, over the in-process bus.
//!
//! Ingest (GStreamer test sources, one pipeline per stream) publishes v1 `Frame`s to
//! `or.frames.v1` keyed by stream_id; a consumer group reads them back, decodes them with the
//! contract's bounded decoder and checks the frame identity rules (gap-free `seq` per stream and
//! epoch). The report counts every frame: captured, dropped before publishing, published,
//! consumed, rejected. Later stages (inference, the record) join here as they are built.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use orstream_bus::{Bus, Offsets, Record};
use orstream_ingest::{FramePipeline, FullPolicy, StreamConfig, TestSourceConfig};
use orstream_proto::{ClockSource, Encoding, Frame, SCHEMA_VERSION, headers, topics};

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Concurrent streams (one GStreamer pipeline each).
    pub streams: usize,
    /// Frames per stream.
    pub frames: u32,
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Pace sources like cameras (true) or run them as fast as possible (false).
    pub live: bool,
    /// Print a progress line this often (None: quiet).
    pub progress_every: Option<Duration>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            streams: 2,
            frames: 150,
            width: 640,
            height: 360,
            live: true,
            progress_every: Some(Duration::from_secs(1)),
        }
    }
}

/// Per-stream figures of a demo run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamTally {
    /// Samples that reached the end of the GStreamer pipeline.
    pub captured: u64,
    /// Captured but dropped before publishing (ingest queue full, or invalid sample).
    pub dropped: u64,
    /// Published to `or.frames.v1`.
    pub published: u64,
    /// Read back by the consumer group and accepted by the decoder.
    pub consumed: u64,
    /// Read back but rejected by the decoder, or out of sequence.
    pub rejected: u64,
    /// Bytes of JPEG consumed.
    pub jpeg_bytes: u64,
}

/// The outcome of a demo run.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// Figures per stream_id.
    pub streams: BTreeMap<String, StreamTally>,
    /// Wall time from start to the last frame consumed.
    pub wall: Duration,
}

impl DemoReport {
    /// Every captured frame is published or counted as dropped, and every published frame is
    /// consumed exactly once and accepted.
    pub fn all_accounted(&self) -> bool {
        self.streams.values().all(|t| {
            t.captured == t.published + t.dropped && t.published == t.consumed && t.rejected == 0
        })
    }

    /// Total frames consumed.
    pub fn consumed(&self) -> u64 {
        self.streams.values().map(|t| t.consumed).sum()
    }
}

const CASE_ID: &str = "demo-case";
const GROUP: &str = "orstream-demo";
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Runs the demo to completion and reports what happened to every frame.
pub fn run(options: &DemoOptions) -> Result<DemoReport> {
    if options.streams == 0 || options.frames == 0 {
        bail!("the demo needs at least one stream and one frame");
    }
    let bus = Bus::memory();
    let partitions = u32::try_from(options.streams).context("too many streams")?;
    bus.create_topic(topics::FRAMES, partitions, Duration::from_secs(5))
        .context("creating or.frames.v1 on the in-process bus")?;
    let producer = Arc::new(bus.producer().context("creating the frame producer")?);
    let consumer = bus.consumer(GROUP).context("creating the consumer")?;
    consumer
        .subscribe(&[topics::FRAMES])
        .context("subscribing to or.frames.v1")?;

    let started = Instant::now();
    let published = Arc::new(AtomicU64::new(0));
    let sources_done = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for i in 0..options.streams {
        let stream_id = format!("demo-or-{i}");
        let mut config = StreamConfig::test(
            stream_id.clone(),
            TestSourceConfig {
                num_buffers: Some(options.frames),
                is_live: options.live,
            },
        );
        config.output.width = options.width;
        config.output.height = options.height;
        if !options.live {
            config.full_policy = FullPolicy::Block;
        }
        let producer = Arc::clone(&producer);
        let published = Arc::clone(&published);
        handles.push(thread::spawn(move || {
            publish_stream(&config, &producer, &published)
        }));
    }

    // Consume on this thread while the sources run; stop once they are done and the topic is
    // drained (an idle poll after the last publish).
    let mut tallies: BTreeMap<String, StreamTally> = BTreeMap::new();
    let mut next_seq: BTreeMap<(String, u64), u64> = BTreeMap::new();
    let mut offsets = Offsets::new();
    let mut consumed_total = 0u64;
    let mut last_progress = Instant::now();
    loop {
        let message = consumer
            .poll(Duration::from_millis(100))
            .context("polling or.frames.v1")?;
        match message {
            Some(message) => {
                offsets.insert(message.topic_partition(), message.next_offset());
                let key = message
                    .key
                    .as_deref()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default();
                match orstream_proto::decode::<Frame>(&message.payload) {
                    Ok(frame) => {
                        let tally = tallies.entry(frame.stream_id.clone()).or_default();
                        let expected = next_seq
                            .entry((frame.stream_id.clone(), frame.session_epoch))
                            .or_insert(0);
                        if frame.seq == *expected {
                            *expected += 1;
                            tally.consumed += 1;
                            tally.jpeg_bytes += frame.data.len() as u64;
                        } else {
                            tracing::warn!(stream_id = %frame.stream_id, expected = *expected,
                                seq = frame.seq, "frame out of sequence");
                            tally.rejected += 1;
                        }
                        consumed_total += 1;
                    }
                    Err(error) => {
                        tracing::warn!(partition = message.partition, offset = message.offset,
                            %error, "rejected frame");
                        tallies.entry(key).or_default().rejected += 1;
                    }
                }
            }
            None if sources_done.load(Ordering::Acquire) => break,
            None => {
                if handles.iter().all(|h| h.is_finished()) {
                    // One more idle poll after this confirms the topic is drained.
                    sources_done.store(true, Ordering::Release);
                }
            }
        }
        if let Some(every) = options.progress_every
            && last_progress.elapsed() >= every
        {
            let secs = started.elapsed().as_secs_f64();
            println!(
                "[{secs:6.1}s] published {:>6}  consumed {:>6}  {:6.1} frames/s",
                published.load(Ordering::Relaxed),
                consumed_total,
                consumed_total as f64 / secs.max(1e-9),
            );
            last_progress = Instant::now();
        }
    }
    consumer
        .commit(&offsets)
        .context("committing consumed offsets")?;
    let wall = started.elapsed();

    for handle in handles {
        let (stream_id, source) = match handle.join() {
            Ok(result) => result?,
            Err(_) => bail!("a source thread panicked"),
        };
        let tally = tallies.entry(stream_id).or_default();
        tally.captured = source.captured;
        tally.dropped = source.dropped;
        tally.published = source.published;
    }
    Ok(DemoReport {
        streams: tallies,
        wall,
    })
}

struct SourceTally {
    captured: u64,
    dropped: u64,
    published: u64,
}

/// Runs one stream's pipeline to its end, publishing every frame it yields.
fn publish_stream(
    config: &StreamConfig,
    producer: &orstream_bus::Producer,
    published: &AtomicU64,
) -> Result<(String, SourceTally)> {
    let stream_id = config.stream_id.clone();
    let (pipeline, frames) = FramePipeline::build(config)
        .with_context(|| format!("building the pipeline of stream {stream_id}"))?;
    pipeline
        .start()
        .with_context(|| format!("starting stream {stream_id}"))?;
    // Host clock at the pipeline's running time zero: capture time = base + running time.
    let base_ns = now_ns();
    let mut seq = 0u64;
    for frame in &frames {
        let message = Frame {
            stream_id: stream_id.clone(),
            case_id: CASE_ID.into(),
            session_epoch: 1,
            seq,
            capture_time_ns: base_ns.saturating_add(i64::try_from(frame.running_time_ns)?),
            clock_source: ClockSource::Host as i32,
            pts_ns: i64::try_from(frame.pts_ns)?,
            width: frame.width,
            height: frame.height,
            encoding: Encoding::Jpeg as i32,
            data: frame.jpeg,
        };
        let record = Record::new(topics::FRAMES, orstream_proto::encode(&message))
            .with_key(stream_id.clone().into_bytes())
            .with_header(headers::SCHEMA_VERSION, SCHEMA_VERSION);
        producer
            .send(&record, SEND_TIMEOUT)
            .and_then(|delivery| delivery.wait(SEND_TIMEOUT))
            .with_context(|| format!("publishing frame {seq} of stream {stream_id}"))?;
        seq += 1;
        published.fetch_add(1, Ordering::Relaxed);
    }
    pipeline
        .wait_for_eos(Duration::from_secs(5))
        .with_context(|| format!("stream {stream_id} did not end cleanly"))?;
    let counts = pipeline.counts();
    Ok((
        stream_id,
        SourceTally {
            captured: counts.total(),
            dropped: counts.total() - counts.delivered,
            published: seq,
        },
    ))
}

/// Prints the report as a table with totals.
pub fn print_report(report: &DemoReport) {
    println!();
    println!(
        "{:<12} {:>9} {:>8} {:>10} {:>9} {:>9} {:>11}",
        "stream", "captured", "dropped", "published", "consumed", "rejected", "JPEG KiB/fr"
    );
    for (stream_id, t) in &report.streams {
        let per_frame = t.jpeg_bytes as f64 / 1024.0 / (t.consumed.max(1)) as f64;
        println!(
            "{stream_id:<12} {:>9} {:>8} {:>10} {:>9} {:>9} {per_frame:>11.1}",
            t.captured, t.dropped, t.published, t.consumed, t.rejected
        );
    }
    let secs = report.wall.as_secs_f64();
    println!(
        "\n{} frames in {secs:.2} s ({:.1} frames/s); every frame accounted for: {}",
        report.consumed(),
        report.consumed() as f64 / secs.max(1e-9),
        if report.all_accounted() { "yes" } else { "NO" }
    );
    println!(
        "Stages run: ingest (GStreamer) -> or.frames.v1 (in-process bus) -> consumer group. \
         Inference and the surgical record are not part of this build yet."
    );
}
