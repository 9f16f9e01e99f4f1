//! One root cancellation token for the whole process, cancelled by SIGINT or SIGTERM.
//!
//! Services take child tokens and stop in order (sources, drain, flush, commit). A second
//! signal means "stop now": the process exits at once with [`EXIT_FORCED`].

use std::sync::OnceLock;

use tokio_util::sync::CancellationToken;

/// Exit code when a second signal cut the drain short.
pub const EXIT_FORCED: i32 = 130;

static ROOT: OnceLock<CancellationToken> = OnceLock::new();

/// The process's root token. The first call installs the signal handlers (on a small thread
/// of its own, so sync and async services can both use it).
pub fn root() -> CancellationToken {
    ROOT.get_or_init(|| {
        let token = CancellationToken::new();
        let for_signals = token.clone();
        let spawned = std::thread::Builder::new()
            .name("orstream-signals".into())
            .spawn(move || watch_signals(&for_signals));
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot watch for SIGINT/SIGTERM; stop with SIGKILL");
        }
        token
    })
    .clone()
}

fn watch_signals(token: &CancellationToken) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the signal watcher");
            return;
        }
    };
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install SIGINT/SIGTERM handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = int.recv() => tracing::info!("SIGINT: draining"),
        }
        token.cancel();
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(EXIT_FORCED);
    });
}
