//! `orstream sink`: per-frame results to the surgical record.
//!
//! Settings come in layers: built-in defaults, then the `--config` file (the sink keys plus an
//! optional `[telemetry]` table, which the `orstream` command reads before this runs), then the
//! `ORSTREAM_SINK_<KEY>` variables (`ORSTREAM_SINK_STORE`, `ORSTREAM_SINK_KAFKA__BOOTSTRAP_SERVERS`;
//! `ORSTREAM_SINK_STORE_FILE` reads a connection string holding a password from a file), then
//! the flags. The sink reports its health to the [`Health`]
//! given: not ready while the database or the broker does not answer.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use orstream_bus::Bus;
use orstream_record::Store;
use orstream_shell::retry::{Backoff, retry};
use orstream_sink::{Sink, SinkConfig};

use orstream_shell::exit::ExitReason;

use crate::telemetry::{Health, checks};

/// Options of `orstream sink`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (TOML; see config/sink.example.toml). Without it, the defaults.
    #[arg(long, env = "ORSTREAM_SINK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the record is stored, overriding the file: sqlite://PATH or postgres://...
    #[arg(long)]
    store: Option<String>,
    /// Kafka bootstrap servers (host:port,...), overriding the file.
    #[arg(long, value_name = "BOOTSTRAP", alias = "bootstrap-servers")]
    kafka: Option<String>,
    /// Consumer group, overriding the file.
    #[arg(long)]
    group: Option<String>,
}

/// Loads the configuration: defaults, then the file, then `ORSTREAM_SINK_*` variables, then
/// flags.
fn load(args: &Args) -> Result<SinkConfig> {
    let mut config: SinkConfig =
        crate::telemetry::layers(orstream_sink::SERVICE, args.config.as_deref())?
            .extract()
            .context(ExitReason::Config)?;
    if let Some(store) = &args.store {
        config.store.clone_from(store);
    }
    if let Some(bootstrap) = &args.kafka {
        config.kafka.bootstrap_servers.clone_from(bootstrap);
    }
    if let Some(group) = &args.group {
        config.group_id.clone_from(group);
    }
    config.validate().context(ExitReason::Config)?;
    Ok(config)
}

/// Runs the service until SIGINT/SIGTERM, then stores what it read and exits; reports to
/// `health`.
pub fn run(args: Args, health: Health) -> Result<()> {
    let config = load(&args)?;
    health.set_ready(checks::DATABASE, false);
    let shutdown = orstream_shell::signals::root();
    let bus = Bus::kafka(config.kafka.clone()).context("creating the Kafka clients")?;
    // The database may come up after the sink (compose, restarts): wait for it, not ready.
    let schedule = Backoff {
        initial: config.retry_initial,
        max: config.retry_max,
    };
    let opened = retry(
        schedule,
        &shutdown,
        || {
            health.beat();
            Store::open(&config.store)
        },
        |e| e.is_retriable(),
        |e, attempt| {
            tracing::warn!(error = %e, attempt, "the record store is not available; retrying");
        },
    );
    let store = match opened {
        Ok(Some(store)) => store,
        Ok(None) => return Ok(()),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "opening the record store {}",
                    orstream_record::store::redact(&config.store)
                )
            });
        }
    };
    let sink = Sink::new(config, bus, store)
        .context(ExitReason::Config)?
        .with_health(Arc::new(health));
    let stats = sink.run(shutdown).context("the sink stopped")?;
    eprintln!(
        "sink: {} messages stored ({} results, {} lifecycle events), {} events, {} gaps, \
         {} anomalies, {} dead letters, {} published, {} transactions",
        stats.messages,
        stats.results,
        stats.stream_events,
        stats.presences,
        stats.gaps,
        stats.anomalies,
        stats.dead_letters,
        stats.published,
        stats.transactions
    );
    Ok(())
}
