//! `orstream api`: the surgical record over an authenticated, read-only HTTP + JSON API.
//!
//! Settings come in layers: built-in defaults, then the `--config` file (the api keys plus an
//! optional `[telemetry]` table), then the `ORSTREAM_API_<KEY>` variables
//! (`ORSTREAM_API_STORE_FILE` reads a connection string from a file), then the flags.
//! With `live` on (the default) it follows the events and streams topics on the `[kafka]`
//! broker and pushes them to `/v1/live`. SIGTERM or SIGINT stops it after the requests in
//! flight (a live feed ends with it).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use orstream_api::Api;
use orstream_api::access::Tokens;
use orstream_api::config::{ApiConfig, SERVICE};
use orstream_api::live::{Follow, Live};
use orstream_bus::Bus;
use orstream_shell::exit::ExitReason;

use crate::telemetry::Health;

/// Options of `orstream api`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (TOML). Without it, the defaults.
    #[arg(long, env = "ORSTREAM_API_CONFIG")]
    pub config: Option<PathBuf>,
    /// The record, overriding the file: sqlite://PATH or postgres://...
    #[arg(long)]
    store: Option<String>,
    /// Address to serve on, overriding the file.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The tokens' file, overriding the file.
    #[arg(long, value_name = "FILE")]
    tokens_file: Option<PathBuf>,
}

fn load(args: &Args) -> Result<ApiConfig> {
    let mut config: ApiConfig = crate::telemetry::layers(SERVICE, args.config.as_deref())?
        .extract()
        .context(ExitReason::Config)?;
    if let Some(store) = &args.store {
        config.store.clone_from(store);
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(tokens) = &args.tokens_file {
        config.tokens_file = Some(tokens.clone());
    }
    config
        .validate()
        .map_err(|e| anyhow!("invalid configuration: {e}"))
        .context(ExitReason::Config)?;
    Ok(config)
}

/// Serves the API until SIGINT/SIGTERM; ready once it listens.
pub fn run(args: Args, health: Health) -> Result<()> {
    let config = load(&args)?;
    let tokens_file = config.tokens_file.clone().unwrap_or_default();
    let tokens = Tokens::read(&tokens_file)
        .map_err(anyhow::Error::msg)
        .context(ExitReason::Config)?;
    let shutdown = orstream_shell::signals::root();
    let live = Live::new();
    let follower = if config.live {
        let bus = Bus::kafka(config.kafka.clone()).context("creating the Kafka clients")?;
        let follow = Follow {
            events_topic: config.events_topic.clone(),
            streams_topic: config.streams_topic.clone(),
            group_id: config.group_id.clone(),
        };
        let thread = live
            .follow(&bus, &follow, &config.store, shutdown.child_token())
            .map_err(anyhow::Error::msg)?;
        Some(thread)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the API's runtime")?;
    let serving = shutdown.clone();
    runtime.block_on(async move {
        let shutdown = serving;
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        tracing::info!(addr = %config.listen, "record API serving");
        health.set_ready("running", true);
        // Alive while the runtime turns: a stuck runtime stops the beats.
        let beating = health.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tick.tick().await;
                beating.beat();
            }
        });
        let router = Api::new(&config.store, tokens)
            .with_rate(config.rate_per_second, config.burst)
            .with_live(live)
            .with_stop(shutdown.clone())
            .router();
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .await
            .context("serving the record API")
    })?;
    shutdown.cancel();
    if let Some(thread) = follower {
        let _ = thread.join();
    }
    Ok(())
}
