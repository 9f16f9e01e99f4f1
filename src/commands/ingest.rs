//! `orstream ingest`: cameras, files and test sources to JPEG frames on Kafka.
//!
//! Settings come in layers: built-in defaults, then the `--config` file (the ingest keys plus
//! optional `[kafka]` and `[telemetry]` tables), then the `ORSTREAM_INGEST_<KEY>` variables
//! (`ORSTREAM_INGEST_KAFKA__BOOTSTRAP_SERVERS`, ...), then the flags.
//! The `[telemetry]` table is read by the `orstream` command before this runs
//! ([`crate::telemetry::configure`]); the service reports its health to the [`Health`] given. Streams come from the
//! file's `[[streams]]` and from `--stream ID=URI` (repeatable), which the output flags apply to.
//! SIGTERM or SIGINT stops the sources, publishes what drains out of them, flushes the producer
//! and exits 0; a second signal exits at once.

use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use orstream_bus::Bus;
use orstream_ingest::{
    FullPolicy, Ingest, ServiceConfig, SourceConfig, Stats, StreamConfig, config::MAX_SIDE,
};
use orstream_proto::EndReason;

use orstream_shell::exit::ExitReason;

use crate::telemetry::Health;

/// Options of `orstream ingest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration: service keys, `[[streams]]` and optional `[kafka]` and
    /// `[telemetry]` tables (see config/ingest.example.toml).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A stream as ID=URI, repeatable. URI: rtsp://... or rtsps://... (TCP), file:PATH or a
    /// plain path, v4l2:DEVICE, or test: (a live test pattern).
    #[arg(long = "stream", value_name = "ID=URI")]
    pub streams: Vec<String>,
    /// Kafka bootstrap servers, host:port[,host:port...]; overrides the file's [kafka] table.
    #[arg(long, value_name = "HOST:PORT")]
    pub kafka: Option<String>,
    /// Case id for the --stream streams (opaque, never patient data).
    #[arg(long, value_name = "ID")]
    pub case_id: Option<String>,
    /// Archive mode for the --stream streams: every frame, the source waits for Kafka.
    /// Default: live (never stall a camera; drop the oldest frames and count them).
    #[arg(long)]
    pub archive: bool,
    /// Frame width in pixels for the --stream streams (letterboxed, aspect kept).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SIDE)))]
    pub width: Option<u32>,
    /// Frame height in pixels for the --stream streams.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_SIDE)))]
    pub height: Option<u32>,
    /// Cap on frames per second for the --stream streams (evenly spaced).
    #[arg(long, value_name = "FPS")]
    pub max_fps: Option<u32>,
    /// JPEG quality 0..=100 for the --stream streams.
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub jpeg_quality: Option<u8>,
    /// Play files given with --stream in a loop, seamlessly.
    #[arg(long = "loop")]
    pub looping: bool,
    /// Pace files given with --stream at their own frame rate, as a camera would.
    #[arg(long)]
    pub realtime: bool,
    /// Topic for frames (default or.frames.v1).
    #[arg(long, value_name = "TOPIC")]
    pub frames_topic: Option<String>,
    /// Topic for stream events (default or.streams.v1).
    #[arg(long, value_name = "TOPIC")]
    pub events_topic: Option<String>,
    /// Check the configuration, list the streams and exit without connecting.
    #[arg(long)]
    pub check: bool,
}

/// Reads and merges the configuration the arguments describe, and validates it.
pub fn load(args: &Args) -> Result<ServiceConfig> {
    let mut service = ServiceConfig::from_layers(crate::telemetry::layers(
        orstream_ingest::config::SERVICE,
        args.config.as_deref(),
    )?)
    .context(ExitReason::Config)?;
    if let Some(bootstrap) = &args.kafka {
        service.kafka.bootstrap_servers.clone_from(bootstrap);
    }
    if let Some(topic) = &args.frames_topic {
        service.ingest.frames_topic.clone_from(topic);
    }
    if let Some(topic) = &args.events_topic {
        service.ingest.events_topic.clone_from(topic);
    }
    for spec in &args.streams {
        service
            .ingest
            .streams
            .push(stream_from_flag(args, spec).context(ExitReason::Config)?);
    }
    service
        .validate()
        .context("invalid configuration")
        .context(ExitReason::Config)?;
    Ok(service)
}

/// One `--stream ID=URI`, with the output flags applied.
fn stream_from_flag(args: &Args, spec: &str) -> Result<StreamConfig> {
    let Some((id, uri)) = spec.split_once('=') else {
        bail!(
            "--stream expects ID=URI, got `{}`",
            spec.split(':').next().unwrap_or_default()
        );
    };
    let mut source = SourceConfig::from_uri(uri)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("--stream {id}"))?;
    if let SourceConfig::File(file) = &mut source {
        file.looping = args.looping;
        file.realtime = args.realtime;
    }
    let mut stream = StreamConfig::new(id.trim(), source);
    if let Some(case_id) = &args.case_id {
        stream.case_id.clone_from(case_id);
    }
    if args.archive {
        stream.full_policy = FullPolicy::Block;
    }
    if let Some(width) = args.width {
        stream.output.width = width;
    }
    if let Some(height) = args.height {
        stream.output.height = height;
    }
    if let Some(quality) = args.jpeg_quality {
        stream.output.jpeg_quality = quality;
    }
    stream.output.max_fps = args.max_fps;
    Ok(stream)
}

/// Runs the service until its streams end or a signal stops it, reporting to `health`.
pub fn run(args: Args, health: Health) -> Result<()> {
    let service = load(&args)?;
    if args.check {
        let cameras: Vec<_> = service
            .ingest
            .rooms
            .iter()
            .flat_map(orstream_ingest::RoomConfig::streams)
            .collect();
        for stream in service.ingest.streams.iter().chain(&cameras) {
            println!(
                "{:<24} {:<5} {}x{} {} mode={}",
                stream.stream_id,
                stream.source.kind(),
                stream.output.width,
                stream.output.height,
                stream
                    .output
                    .max_fps
                    .map_or_else(|| "source fps".to_owned(), |f| format!("<= {f} fps")),
                match stream.full_policy {
                    FullPolicy::DropOldest => "live",
                    FullPolicy::Block => "archive",
                }
            );
        }
        println!(
            "configuration OK: {} streams, {} rooms with {} cameras",
            service.ingest.streams.len(),
            service.ingest.rooms.len(),
            cameras.len()
        );
        return Ok(());
    }
    if let Err(cause) = service.kafka.probe(Duration::from_secs(5)) {
        // The service waits for the broker, not ready meanwhile (a stack may start it first);
        // say it once, clearly, and go on.
        tracing::warn!(
            "{cause}; waiting for the broker (is Kafka running? scripts/kafka.sh start)"
        );
    }
    let bus = Bus::kafka(service.kafka.clone()).context("connecting to Kafka")?;
    let shutdown = orstream_shell::signals::root();
    let ingest = Ingest::new(service.ingest, bus)
        .context("starting ingest")?
        .with_health(Arc::new(health));
    let stats = match ingest.run(shutdown) {
        Ok(stats) => stats,
        // A room another ingest owns: the configuration is at fault, restarting cannot help.
        Err(error @ orstream_ingest::IngestError::InvalidConfig { .. }) => {
            return Err(anyhow::Error::new(error)
                .context("running ingest")
                .context(ExitReason::Config));
        }
        Err(error) => return Err(anyhow::Error::new(error).context("running ingest")),
    };
    print_stats(&stats);
    if !stats.streams.is_empty() && stats.streams.iter().all(|s| s.end == EndReason::Failed) {
        bail!("every stream failed");
    }
    Ok(())
}

fn print_stats(stats: &Stats) {
    for s in &stats.streams {
        eprintln!(
            "{:<24} published {:>8}  dropped {:>6}  epochs {:>3}  errors {:>4}  ended {:?}{}",
            s.stream_id,
            s.published,
            s.dropped,
            s.epochs,
            s.errors,
            s.end,
            if s.detail.is_empty() {
                String::new()
            } else {
                format!(": {}", s.detail)
            }
        );
    }
}
