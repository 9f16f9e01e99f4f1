//! A service's HTTP endpoint (`/metrics`, `/healthz`, `/readyz`) as a test sees it.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

/// A free port on 127.0.0.1 for a service's endpoint (the OS's pick, released at once).
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `GET http://addr/path`: the status and body, or `None` while nothing answers.
pub fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent();
    let mut response = agent.get(format!("http://{addr}{path}")).call().ok()?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().ok()?;
    Some((status, body))
}

/// The samples of `metric` in Prometheus text, summed over its label sets; `None` when it has
/// none.
pub fn scraped(text: &str, metric: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}
