//! An `orstream <service> --config <file>` process under test, with its health endpoint: its
//! readiness and liveness, its log (the last lines shown when a case fails), its memory, and a
//! SIGTERM stop that must exit 0. It is killed on the way out, whatever happened.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use crate::metrics::{free_port, get};
use crate::process;
use crate::wait::wait_for;

/// How long a service may take to get ready or to stop.
const PATIENCE: Duration = Duration::from_secs(120);

/// Lines of a service's log a failed case shows (the last ones).
const LOG_TAIL: usize = 60;

/// The last `lines` lines of `log`, saying how many came before.
pub fn tail(log: &str, lines: usize) -> String {
    let all: Vec<&str> = log.lines().collect();
    let skipped = all.len().saturating_sub(lines);
    let shown = all[skipped..].join("\n");
    if skipped == 0 {
        shown
    } else {
        format!("[… {skipped} earlier lines]\n{shown}")
    }
}

/// `(ready, alive)` from `/readyz` and `/healthz`; None while the endpoint does not answer.
pub fn health(addr: SocketAddr) -> (Option<bool>, Option<bool>) {
    let status = |path| get(addr, path).map(|(status, _)| status == 200);
    (status("/readyz"), status("/healthz"))
}

/// A running `orstream <service>`.
pub struct Service {
    /// The subcommand.
    pub name: &'static str,
    /// Its health and metrics endpoint.
    pub listen: SocketAddr,
    /// The process.
    pub child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Service {
    /// Starts `<binary> <name> --config <file>` in `dir`, the file holding what `config`
    /// gives for the health endpoint's address; none of the caller's `ORSTREAM_*` variables.
    pub fn start(
        binary: &str,
        dir: &str,
        name: &'static str,
        config: impl FnOnce(SocketAddr) -> String,
    ) -> Self {
        Self::start_with(binary, dir, name, &[], config)
    }

    /// [`start`](Self::start), with the variables `env` set (a secret's `_FILE` variable).
    pub fn start_with(
        binary: &str,
        dir: &str,
        name: &'static str,
        env: &[(String, String)],
        config: impl FnOnce(SocketAddr) -> String,
    ) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let listen = free_port();
        let path = temp.path().join(format!("{name}.toml"));
        std::fs::write(&path, config(listen)).unwrap();
        let log = temp.path().join(format!("{name}.log"));
        let child = process::command(
            binary,
            &[name, "--config", path.to_str().unwrap()],
            dir,
            &log,
        )
        .envs(env.iter().map(|(k, v)| (k, v)))
        .spawn()
        .unwrap();
        Self {
            name,
            listen,
            child,
            log,
            _dir: temp,
        }
    }

    /// Waits until `/readyz` says ready; fails naming `what`.
    pub fn wait_ready(&self, what: &str) {
        wait_for(what, PATIENCE, || {
            (health(self.listen).0 == Some(true)).then_some(())
        });
    }

    /// Its log (standard error) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Fails the case at once, with the service's exit status, when it has exited.
    pub fn still_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited with {status}", self.name);
        }
    }

    /// Resident memory now, in MiB (0 once the process is gone).
    pub fn rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    }

    /// SIGTERM; the service must exit 0. Its whole log.
    pub fn stop(mut self) -> String {
        let status = process::terminate(&mut self.child, self.name, PATIENCE);
        let log = self.log();
        assert!(
            status.success(),
            "{} exited with {status}:\n{log}",
            self.name
        );
        log
    }
}

impl Drop for Service {
    /// A failed case shows the end of the service's log, and leaves no process running.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, tail(&self.log(), LOG_TAIL));
        }
        let _killed = self.child.kill();
        let _reaped = self.child.wait();
    }
}
