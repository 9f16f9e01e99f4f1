//! The record's page during the demo: the API ([`orstream_api`]) over the demo's record,
//! following the demo's bus, with one admin token made for the run.

use std::net::SocketAddr;
use std::path::Path;
use std::thread::{self, JoinHandle};

use anyhow::{Context, Result};
use orstream_api::Api;
use orstream_api::access::Tokens;
use orstream_api::live::{Follow, Live};
use orstream_bus::Bus;
use tokio_util::sync::CancellationToken;

/// The page being served.
#[derive(Debug)]
pub struct PageServer {
    /// Where it is served.
    pub url: String,
    /// The token to sign in with (also in the tokens' file of the output directory).
    pub token: String,
    stop: CancellationToken,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl PageServer {
    /// Serves the page on `listen` (another free port of loopback when that one is taken),
    /// reading the record at `store_url` and following `bus`; the tokens' file is written to
    /// `out_dir`.
    pub fn start(listen: SocketAddr, bus: &Bus, store_url: &str, out_dir: &Path) -> Result<Self> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let tokens_file = out_dir.join("page.tokens");
        let text = format!("demo admin * {token}\n");
        super::write_secret(&tokens_file, &text)?;
        let tokens = Tokens::parse(&text).map_err(anyhow::Error::msg)?;
        let listener = match std::net::TcpListener::bind(listen) {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%listen, %error, "the page's address is taken; serving on another port");
                std::net::TcpListener::bind(SocketAddr::new(listen.ip(), 0))
                    .context("binding the record page")?
            }
        };
        listener.set_nonblocking(true)?;
        let url = format!("http://{}/", listener.local_addr()?);
        let stop = CancellationToken::new();
        let live = Live::new();
        let follow = Follow {
            group_id: "orstream-demo-page".to_owned(),
            ..Follow::default()
        };
        let follower = live
            .follow(bus, &follow, store_url, stop.clone())
            .map_err(anyhow::Error::msg)?;
        let api = Api::new(store_url, tokens)
            .with_live(live)
            .with_stop(stop.clone());
        let serving = stop.clone();
        let server = thread::Builder::new()
            .name("orstream-demo-page".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        tracing::error!(%error, "the record page could not start");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let served = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => {
                            axum::serve(listener, api.router())
                                .with_graceful_shutdown(serving.cancelled_owned())
                                .await
                        }
                        Err(error) => Err(error),
                    };
                    if let Err(error) = served {
                        tracing::error!(%error, "the record page stopped");
                    }
                });
            })
            .context("starting the record page's thread")?;
        Ok(Self {
            url,
            token,
            stop,
            threads: vec![server, follower],
        })
    }

    /// Stops serving (open pages lose their connection) and waits for its threads.
    pub fn finish(mut self) {
        self.stop.cancel();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
