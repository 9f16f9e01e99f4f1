//! `orstream demo`: the whole job in one process (see [`crate::demo`]).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use orstream_ingest::config::GateConfig;

use crate::demo::{DemoOptions, DemoSource};

/// Options of `orstream demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Video file to play as a live camera.
    #[arg(long, default_value = "models/demo/clip.mp4", conflicts_with = "rtsp")]
    pub clip: PathBuf,
    /// RTSP camera to read instead of a file (runs until Ctrl-C).
    #[arg(long)]
    pub rtsp: Option<String>,
    /// Ground truth of the clip to compare the derived events with (by default the clip's
    /// path with `.timeline.json`, when there is one); `none` to skip.
    #[arg(long)]
    pub truth: Option<String>,
    /// Process every frame as fast as possible instead of at camera pace.
    #[arg(long)]
    pub archive: bool,
    /// Run over this Kafka broker (host:port) instead of the in-process bus.
    #[arg(long, value_name = "BOOTSTRAP")]
    pub kafka: Option<String>,
    /// Write the record to this PostgreSQL database instead of SQLite (needs --kafka).
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
    /// TorchScript model (its card is the same path with .toml).
    #[arg(long, default_value = "models/demo/seg.pt")]
    pub model: PathBuf,
    /// Device for the model: cpu or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Directory for the SQLite record and the timeline picture.
    #[arg(long, default_value = "demo-output")]
    pub out: PathBuf,
    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,
    /// Serve the record's page (the API's web view) here while the demo runs.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9480")]
    pub page: std::net::SocketAddr,
    /// Do not serve the record's page.
    #[arg(long)]
    pub no_page: bool,
    /// The privacy gate's model (its card is the same path with .toml): frames judged out of
    /// the body are published without their image.
    #[arg(long, default_value = "models/demo/gate.pt")]
    pub gate: PathBuf,
    /// Frames withheld before each out-of-body frame (the delay line: that many frame
    /// intervals of latency).
    #[arg(long, default_value_t = GateConfig::default().margin_before)]
    pub gate_margin_before: usize,
    /// Frames withheld after each out-of-body frame.
    #[arg(long, default_value_t = GateConfig::default().margin_after)]
    pub gate_margin_after: usize,
    /// No privacy gate: every frame is published with its image.
    #[arg(long, conflicts_with = "gate")]
    pub no_gate: bool,
}

/// Runs the demo and prints its report; `Ok(false)` when not every frame was accounted for.
pub fn run(args: Args) -> Result<bool> {
    let source = match args.rtsp {
        Some(url) => DemoSource::Rtsp(url),
        None => DemoSource::File(args.clip),
    };
    let truth = match (&source, args.truth.as_deref()) {
        (DemoSource::File(_), Some("none")) | (DemoSource::Rtsp(_), _) => None,
        (DemoSource::File(_), Some(path)) => Some(PathBuf::from(path)),
        (DemoSource::File(clip), None) => {
            let beside = clip.with_extension("timeline.json");
            beside.exists().then_some(beside)
        }
    };
    let gate = (!args.no_gate).then(|| GateConfig {
        model: args.gate,
        margin_before: args.gate_margin_before,
        margin_after: args.gate_margin_after,
        ..GateConfig::default()
    });
    let options = DemoOptions {
        source,
        truth,
        archive: args.archive,
        kafka: args.kafka,
        postgres: args.postgres,
        model: args.model,
        device: args.device,
        out_dir: args.out,
        progress_every: (!args.quiet).then_some(Duration::from_secs(1)),
        page: (!args.no_page).then_some(args.page),
        gate,
        ..DemoOptions::default()
    };
    let report = crate::demo::run(&options, &orstream_shell::signals::root())?;
    crate::demo::print_report(&report, options.archive);
    let results = &report.results;
    if results.total() > 0 && results.errors == results.total() {
        // Every frame accounted for, and not one usable: a broken model, not a quiet case.
        anyhow::bail!(
            "every one of the {} results is an error: the model failed on every frame (the \
             infer log and the results' status detail say why)",
            results.total()
        );
    }
    if let Some(privacy) = &report.privacy
        && privacy.breaches() > 0
    {
        anyhow::bail!(
            "{} frames the clip's truth has out of the body reached the bus with their image",
            privacy.breaches()
        );
    }
    Ok(report.all_accounted())
}
