//! A small HTTP endpoint on a thread of its own: bound, served and stopped the same way by the
//! services' metrics and health endpoint and ingest's admin API.
//!
//! tiny_http reads requests on its own threads and hands them over complete; the serving
//! thread answers them (one at a time, or handing each to a thread of its own). Dropping the
//! [`Endpoint`] unblocks the serving loop and waits for its thread.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A running endpoint; stops when dropped.
pub struct Endpoint {
    addr: SocketAddr,
    http: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    what: &'static str,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("what", &self.what)
            .field("addr", &self.addr)
            .finish()
    }
}

impl Endpoint {
    /// Binds `listen` (port 0 picks a free one) and runs `serve` over the server on a thread
    /// named `thread`; `serve` returns once the server is unblocked (its `incoming_requests`
    /// ends). Errors name `what`, the address and the cause.
    pub fn start(
        what: &'static str,
        listen: SocketAddr,
        thread: &str,
        serve: impl FnOnce(&tiny_http::Server) + Send + 'static,
    ) -> Result<Self, String> {
        let listener = TcpListener::bind(listen)
            .map_err(|e| format!("binding the {what} on {listen}: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("reading the address bound for the {what}: {e}"))?;
        let http = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| format!("starting the {what} on {addr}: {e}"))?;
        let http = Arc::new(http);
        let serving = Arc::clone(&http);
        let thread = std::thread::Builder::new()
            .name(thread.to_owned())
            .spawn(move || serve(&serving))
            .map_err(|e| format!("starting the {what}'s thread: {e}"))?;
        Ok(Self {
            addr,
            http,
            thread: Some(thread),
            what,
        })
    }

    /// The address bound: with port 0 asked for, the port the system chose.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.http.unblock();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the {} thread panicked", self.what);
        }
    }
}
