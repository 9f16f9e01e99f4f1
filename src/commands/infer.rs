//! `orstream infer`: the inference worker on Kafka.
//!
//! Configuration comes in layers: built-in defaults, then the TOML file given with `--config`,
//! then the `ORSTREAM_INFER_<KEY>` variables (`ORSTREAM_INFER_MODEL__DEVICE`,
//! `ORSTREAM_INFER_KAFKA__BOOTSTRAP_SERVERS`, `ORSTREAM_INFER_TRANSACTIONAL_ID`, ...), then the
//! flags below. `config/infer.example.toml`
//! documents every key. SIGTERM or SIGINT drains and commits; a second signal exits at once.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use orstream_bus::Bus;
use orstream_infer::config::{DeliveryGuarantee, Mode};
use orstream_infer::{InferConfig, InferError, Model, Worker};

use orstream_shell::exit::ExitReason;

/// Options of `orstream infer`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML configuration file (keys as in config/infer.example.toml).
    #[arg(long, env = "ORSTREAM_INFER_CONFIG")]
    pub config: Option<PathBuf>,
    /// TorchScript model file (its card is the same path with .toml unless --card is given).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Model card file.
    #[arg(long)]
    pub card: Option<PathBuf>,
    /// Device: cpu or cuda:N.
    #[arg(long)]
    pub device: Option<String>,
    /// Model replicas on the device.
    #[arg(long)]
    pub replicas: Option<usize>,
    /// Kafka bootstrap servers (host:port,...).
    #[arg(long, value_name = "BOOTSTRAP", alias = "bootstrap")]
    pub kafka: Option<String>,
    /// Consumer group shared by the workers.
    #[arg(long)]
    pub group: Option<String>,
    /// Transactional id of this worker: unique per worker, the same across its restarts.
    #[arg(long)]
    pub transactional_id: Option<String>,
    /// live (skip stale frames) or archive (run every frame).
    #[arg(long, value_parser = ["live", "archive"])]
    pub mode: Option<String>,
    /// exactly-once (Kafka transactions) or at-least-once.
    #[arg(long, value_parser = ["exactly-once", "at-least-once"])]
    pub delivery: Option<String>,
    /// Load the model, check it against its card and warm it up, then exit without joining
    /// the group.
    #[arg(long)]
    pub check: bool,
}

/// Builds the configuration from its layers.
fn configuration(args: &Args) -> Result<InferConfig> {
    // Without its `[telemetry]` table, which the `orstream` command has read already.
    let mut config: InferConfig =
        crate::telemetry::layers(orstream_infer::config::SERVICE, args.config.as_deref())?
            .extract()
            .context(ExitReason::Config)?;
    if let Some(model) = &args.model {
        config.model.path = model.clone();
    }
    if let Some(card) = &args.card {
        config.model.card = Some(card.clone());
    }
    if let Some(device) = &args.device {
        config.model.device = device.clone();
    }
    if let Some(replicas) = args.replicas {
        config.model.replicas = replicas;
    }
    if let Some(bootstrap) = &args.kafka {
        config.kafka.bootstrap_servers = bootstrap.clone();
    }
    if let Some(group) = &args.group {
        config.group_id = group.clone();
    }
    if let Some(id) = &args.transactional_id {
        config.transactional_id = id.clone();
    }
    match args.mode.as_deref() {
        Some("live") => config.mode = Mode::Live,
        Some("archive") => config.mode = Mode::Archive,
        _ => {}
    }
    match args.delivery.as_deref() {
        Some("exactly-once") => config.delivery = DeliveryGuarantee::ExactlyOnce,
        Some("at-least-once") => config.delivery = DeliveryGuarantee::AtLeastOnce,
        _ => {}
    }
    config.validate().context(ExitReason::Config)?;
    Ok(config)
}

/// Runs the service until it is stopped.
pub fn run(args: Args) -> Result<()> {
    let config = configuration(&args)?;
    let model = Model::open(&config.model)
        .with_context(|| format!("opening model {}", config.model.path.display()))?;
    if args.check {
        let runner = orstream_infer::Runner::load(&model, &config.model, &config.postprocess)?;
        let latency = runner
            .check_and_warm_up(config.batch.max_batch_size, config.model.warmup_runs.max(1))?;
        println!(
            "model {} {} ({}) matches its card; batch of {} in {:.1} ms on {}",
            model.card.name,
            model.card.version,
            model.digest,
            config.batch.max_batch_size,
            latency.as_secs_f64() * 1e3,
            config.model.device
        );
        return Ok(());
    }
    if let Err(err) = config.kafka.probe(Duration::from_secs(5)) {
        // librdkafka retries in the background; say it once, clearly, and go on.
        tracing::warn!("{err}; waiting for the broker");
    }
    let bus = Bus::kafka(config.kafka.clone()).context("creating the Kafka clients")?;
    let group = config.group_id.clone();
    let mut worker = Worker::new(config, bus, model)?;
    if let Some(health) = crate::telemetry::health() {
        worker = worker.with_health(std::sync::Arc::new(health));
    }
    let stats = match worker.run(orstream_shell::signals::root()) {
        Ok(stats) => stats,
        Err(error) => {
            // Two workers on one transactional id is a configuration mistake: a supervisor
            // restarting either would only repeat it.
            let reason = match error {
                InferError::TransactionalIdHeld { .. }
                | InferError::TransactionalIdInUse { .. } => ExitReason::Config,
                _ => ExitReason::Failure,
            };
            return Err(anyhow::Error::from(error)
                .context(format!("inference worker of group {group}"))
                .context(reason));
        }
    };
    tracing::info!(?stats, "stopped");
    eprintln!(
        "orstream infer: {} results committed ({} ok, {} skipped, {} errors, {} redacted), {} \
         dead letters, {} transactions committed, {} aborted, {} pauses",
        stats.results(),
        stats.ok,
        stats.skipped_stale + stats.skipped_overload,
        stats.decode_error + stats.invalid + stats.model_error,
        stats.redacted,
        stats.dead_letters,
        stats.commits,
        stats.aborts,
        stats.pauses
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use orstream_shell::exit::{self, exit_code};

    /// Wraps [`Args`] as the command line does, so the flags parse as they would.
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn an_invalid_configuration_exits_as_a_configuration_error() {
        let cli = Cli::try_parse_from(["infer", "--group", " "]).unwrap();
        let error = configuration(&cli.args).unwrap_err();
        assert!(format!("{error:#}").contains("group_id"), "{error:#}");
        assert_eq!(exit_code(&error), exit::CONFIG);
    }
}
