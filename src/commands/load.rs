//! `orstream load`: plays cameras into a running deployment and measures what it makes of
//! them (see [`crate::load`]).
//!
//! Where the deployment is comes in layers like a service's settings: defaults, then the
//! `--config` file (`frames_topic`, `streams_topic`, `results_topic`, `store`, `[kafka]` with
//! its `[kafka.security]`), then `ORSTREAM_LOAD_<KEY>` variables (`ORSTREAM_LOAD_STORE_FILE`
//! reads a URL holding a password from a file), then `--kafka` and `--store`. What to play is
//! given by flags only.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use orstream_shell::exit::ExitReason;

use crate::load::{self, Plan, Target};

/// Options of `orstream load`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML file with the deployment's topics, record URL and `[kafka]` settings.
    #[arg(long, env = "ORSTREAM_LOAD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Kafka bootstrap servers (host:port,...), overriding the file.
    #[arg(long, value_name = "BOOTSTRAP", alias = "bootstrap")]
    kafka: Option<String>,
    /// The record to watch for committed rows (postgres://... or sqlite://...).
    #[arg(long)]
    store: Option<String>,
    /// Cameras (streams) to play.
    #[arg(long, default_value_t = 8)]
    cameras: u32,
    /// Frames per second of each camera.
    #[arg(long, default_value_t = 4.0)]
    fps: f64,
    /// How long the cameras play, e.g. 30s or 2m.
    #[arg(long, default_value = "30s", value_parser = humantime_serde::re::humantime::parse_duration)]
    duration: Duration,
    /// Size of synthetic frames, WIDTHxHEIGHT.
    #[arg(long, default_value = "640x360", value_parser = parse_size)]
    size: (u32, u32),
    /// JPEG quality of synthetic frames.
    #[arg(long, default_value_t = 85)]
    quality: u8,
    /// Play these JPEG files (a file, or a directory of .jpg files) instead of synthetic frames.
    #[arg(long)]
    source: Option<PathBuf>,
    /// The run's case id (default: load-<unix milliseconds>); stream ids are <case>-cam<N>.
    #[arg(long)]
    case: Option<String>,
    /// After the last frame, how long to wait for the results still due.
    #[arg(long, default_value = "30s", value_parser = humantime_serde::re::humantime::parse_duration)]
    drain: Duration,
    /// How often the record is polled for committed rows (the resolution of that latency).
    #[arg(long, default_value = "5ms", value_parser = humantime_serde::re::humantime::parse_duration)]
    record_poll: Duration,
    /// Write the report as JSON to this file too.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write every result (camera, seq, status, latencies, batch, forward) as CSV here.
    #[arg(long)]
    frames_csv: Option<PathBuf>,
    /// Only create the topics (frames, streams, results) and exit, so the services can be
    /// started before the run.
    #[arg(long)]
    prepare: bool,
}

fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text
        .split_once('x')
        .ok_or_else(|| format!("{text:?} is not WIDTHxHEIGHT"))?;
    let side = |s: &str| {
        s.parse::<u32>()
            .map_err(|e| format!("{text:?} is not WIDTHxHEIGHT: {e}"))
    };
    Ok((side(w)?, side(h)?))
}

/// Plays the load and prints the report; `Ok(false)` when a frame was lost, duplicated or not
/// recorded.
pub fn run(args: Args) -> Result<bool> {
    let mut target: Target = crate::telemetry::layers(load::SERVICE, args.config.as_deref())?
        .extract()
        .context(ExitReason::Config)?;
    if let Some(bootstrap) = &args.kafka {
        target.kafka.bootstrap_servers.clone_from(bootstrap);
    }
    if let Some(store) = &args.store {
        target.store = Some(store.clone());
    }
    target
        .kafka
        .validate()
        .map_err(|e| anyhow!("{e}"))
        .context(ExitReason::Config)?;
    let plan = Plan {
        cameras: args.cameras,
        fps: args.fps,
        duration: args.duration,
        width: args.size.0,
        height: args.size.1,
        quality: args.quality,
        source: args.source,
        case_id: args
            .case
            .unwrap_or_else(|| format!("load-{}", orstream_shell::clock::now_ms())),
        session_epoch: 1,
        drain: args.drain,
        record_poll: args.record_poll,
        join_timeout: Duration::from_secs(60),
    };
    plan.validate()
        .map_err(|e| anyhow!("{e}"))
        .context(ExitReason::Config)?;
    if args.prepare {
        load::prepare(&target)?;
        return Ok(true);
    }
    let report = load::run(&plan, &target, &orstream_shell::signals::root())?;
    print!("{}", report.render());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.frames_csv {
        std::fs::write(path, report.frames_csv())
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report.exact())
}
