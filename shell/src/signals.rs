//! One root cancellation token for the whole process, cancelled by SIGINT or SIGTERM.
//!
//! Services take child tokens and stop in order (sources, drain, flush, commit). A second
//! signal means "stop now": the process exits at once with [`crate::exit::FORCED`].

use std::sync::OnceLock;

use tokio_util::sync::CancellationToken;

static ROOT: OnceLock<CancellationToken> = OnceLock::new();

/// The process's root token. The first call installs the SIGINT/SIGTERM handlers before it
/// returns (so a signal that arrives right after start-up drains instead of killing the
/// process) and watches them on a small thread of its own, so sync and async services can
/// both use it.
pub fn root() -> CancellationToken {
    ROOT.get_or_init(|| {
        let token = CancellationToken::new();
        if let Err(error) = install(token.clone()) {
            tracing::error!(%error, "cannot watch for SIGINT/SIGTERM; stop with SIGKILL");
        }
        token
    })
    .clone()
}

fn install(token: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Registering the streams installs the process-wide handlers, here and now.
    let (mut term, mut int) = {
        let _context = runtime.enter();
        (
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
        )
    };
    std::thread::Builder::new()
        .name("orstream-signals".into())
        .spawn(move || {
            runtime.block_on(async {
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
                std::process::exit(i32::from(crate::exit::FORCED));
            });
        })?;
    Ok(())
}
