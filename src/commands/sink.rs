//! `orstream sink`: per-frame results to the surgical record.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use orstream_bus::Bus;
use orstream_sink::{Sink, SinkConfig, Store, backoff};

/// Options of `orstream sink`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (TOML; see config/sink.example.toml). Without it, the defaults.
    #[arg(long, env = "ORSTREAM_SINK_CONFIG")]
    config: Option<PathBuf>,
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

/// Loads the configuration: defaults, then the file, then `ORSTREAM_*` variables, then flags.
fn load(args: &Args) -> Result<SinkConfig> {
    let mut config = match &args.config {
        Some(path) => SinkConfig::from_file(path)?,
        None => SinkConfig::default(),
    };
    config.apply_env();
    if let Some(store) = &args.store {
        config.store.clone_from(store);
    }
    if let Some(bootstrap) = &args.kafka {
        config.kafka.bootstrap_servers.clone_from(bootstrap);
    }
    if let Some(group) = &args.group {
        config.group_id.clone_from(group);
    }
    config.validate()?;
    Ok(config)
}

/// Runs the service until SIGINT/SIGTERM, then stores what it read and exits.
pub fn run(args: Args) -> Result<()> {
    let config = load(&args)?;
    let shutdown = crate::shutdown::root();
    let bus = Bus::kafka(config.kafka.clone()).context("creating the Kafka clients")?;
    // The database may come up after the sink (compose, restarts): wait for it, not ready.
    let mut attempt = 0;
    let store = loop {
        match Store::open(&config.store) {
            Ok(store) => break store,
            Err(e) if e.is_retriable() => {
                let pause = backoff(attempt, config.retry_initial, config.retry_max);
                tracing::warn!(error = %e, ?pause, "the record store is not available; retrying");
                attempt += 1;
                let until = std::time::Instant::now() + pause;
                while std::time::Instant::now() < until {
                    if shutdown.is_cancelled() {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "opening the record store {}",
                        orstream_sink::store::redact(&config.store)
                    )
                });
            }
        }
    };
    let sink = Sink::new(config, bus, store)?;
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
