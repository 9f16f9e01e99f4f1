//! Telemetry of the services: logs, traces, metrics and health endpoints.
//!
//! A service calls [`init`] once, first thing, with its [`TelemetryConfig`] and keeps the
//! returned [`TelemetryGuard`] until it ends (dropping it flushes what is buffered). The
//! `orstream` command does so for every subcommand, with the configuration [`configure`]
//! builds: the `[telemetry]` table of the service's file, its `ORSTREAM_<SERVICE>_TELEMETRY__*`
//! variables, then the flags ([`TelemetryArgs`]). It gets:
//!
//! - logs on stderr, filtered by `log_filter` (default `warn`);
//! - when `otlp_endpoint` is set, `tracing` spans exported as OpenTelemetry spans over
//!   OTLP/HTTP, sampled at `sampling_ratio` where a trace starts and following the parent's
//!   decision downstream; trace context travels in message headers through
//!   [`orstream_bus::trace`];
//! - the OpenTelemetry global meter provider, which the libraries record into through
//!   [`orstream_bus::metrics`]: read by Prometheus at `/metrics`, and pushed over OTLP when an
//!   endpoint is set (unless `otlp_metrics = false`);
//! - when `metrics_listen` is set, an HTTP endpoint on a thread of its own: `/metrics`,
//!   `/healthz` (liveness from [`Health::beat`]) and `/readyz` (readiness from
//!   [`Health::set_ready`]); a [`Health`] is handed to the service's loops either way
//!   ([`TelemetryGuard::health`], or [`health`] where no guard reaches).
//!
//! Nothing is exported by default. Spans and metric labels never carry frame bytes, case ids or
//! stream locations (see `orstream_bus::metrics::ALLOWED_ATTRIBUTES`).
//!
//! Exit codes and their reasons are [`orstream_shell::exit`]'s.
//!
//! Modules: `config` ([`TelemetryConfig`]), `file` ([`layers`], [`TelemetryArgs`],
//! [`configure`]), `health` ([`Health`], its clocks), `server` (the HTTP endpoint),
//! `prometheus` ([`PrometheusMetrics`]), `otlp` (exporters and their HTTP client).

mod config;
mod file;
mod health;
mod otlp;
mod prometheus;
mod server;

use std::fmt;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::OnceLock;

use anyhow::{Context, Result};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use orstream_shell::exit::ExitReason;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use config::{TelemetryConfig, TelemetryConfigError};
pub use file::{TelemetryArgs, configure, layers, service_name, split_telemetry};
pub use health::{Clock, Health, Liveness, ManualClock, Readiness, SystemClock};
pub use orstream_bus::metrics::{HealthReporter, checks};
pub use prometheus::PrometheusMetrics;
pub use server::Server;

/// What [`init`] set up; keep it for the life of the service. Dropping it stops the HTTP
/// endpoint and flushes buffered spans and metrics (bounded by `otlp_timeout`).
pub struct TelemetryGuard {
    health: Health,
    metrics: PrometheusMetrics,
    server: Option<Server>,
    tracer_provider: Option<SdkTracerProvider>,
    meter_provider: Option<SdkMeterProvider>,
}

impl fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("server", &self.server)
            .field("tracing", &self.tracer_provider.is_some())
            .finish_non_exhaustive()
    }
}

impl TelemetryGuard {
    /// The service's health: hand clones to the loops that report.
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// The address `/metrics`, `/healthz` and `/readyz` are served on, when they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.server.as_ref().map(Server::local_addr)
    }

    /// The metrics now, as a scrape would return them.
    pub fn render_metrics(&self) -> Result<String> {
        self.metrics.render()
    }

    /// Stops the endpoint and flushes, reporting what could not be flushed (dropping the
    /// guard does the same and logs the problems instead).
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        let mut problems = Vec::new();
        if let Some(provider) = self.tracer_provider.take()
            && let Err(e) = provider.shutdown()
        {
            problems.push(format!("flushing spans: {e}"));
        }
        if let Some(provider) = self.meter_provider.take()
            && let Err(e) = provider.shutdown()
        {
            problems.push(format!("flushing metrics: {e}"));
        }
        self.server.take();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(anyhow::anyhow!(problems.join("; ")))
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            tracing::warn!("telemetry: {error:#}");
        }
    }
}

/// The health [`init`] made for this process, served at `/healthz` and `/readyz`.
static PROCESS_HEALTH: OnceLock<Health> = OnceLock::new();

/// The health of the service this process runs, once [`init`] has run: for code that the
/// guard does not reach (it is the guard's [`TelemetryGuard::health`]).
pub fn health() -> Option<Health> {
    PROCESS_HEALTH.get().cloned()
}

/// Sets up logs, traces, metrics and the health endpoint for this process (see the module
/// documentation). Call once: the `tracing` subscriber and the OpenTelemetry providers are
/// process-wide. Errors carry an [`ExitReason`]: [`ExitReason::Config`] for a bad
/// configuration or an address that cannot be bound.
pub fn init(config: &TelemetryConfig) -> Result<TelemetryGuard> {
    config.validate().context(ExitReason::Config)?;
    let instance = config
        .service_instance_id
        .clone()
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let resource = Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .with_attribute(KeyValue::new("service.instance.id", instance))
        .build();

    // The wire contract fixes W3C trace context; anything using the global propagator agrees.
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let tracer_provider = match &config.otlp_endpoint {
        Some(endpoint) => {
            let exporter =
                otlp::span_exporter(endpoint, config.otlp_timeout).context(ExitReason::Config)?;
            Some(
                SdkTracerProvider::builder()
                    .with_resource(resource.clone())
                    .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                        config.sampling_ratio,
                    ))))
                    .with_batch_exporter(exporter)
                    .build(),
            )
        }
        None => None,
    };

    let (prometheus_reader, metrics) = PrometheusMetrics::reader()?;
    let mut meters = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(prometheus_reader);
    if let (Some(endpoint), true) = (&config.otlp_endpoint, config.otlp_metrics) {
        let exporter =
            otlp::metric_exporter(endpoint, config.otlp_timeout).context(ExitReason::Config)?;
        meters = meters.with_reader(
            PeriodicReader::builder(exporter)
                .with_interval(config.otlp_metrics_interval)
                .build(),
        );
    }
    let meter_provider = meters.build();

    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(EnvFilter::builder().parse_lossy(&config.log_filter));
    let spans = tracer_provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(orstream_bus::metrics::METER_NAME))
            .with_filter(EnvFilter::builder().parse_lossy(&config.trace_filter))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .context("installing the log subscriber: one is already installed in this process")?;

    if let Some(provider) = &tracer_provider {
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    opentelemetry::global::set_meter_provider(meter_provider.clone());

    let health = Health::new(config.liveness_timeout);
    readiness_gauge(&health);
    // `try_init` above has made sure this is the first call.
    let _first = PROCESS_HEALTH.set(health.clone());
    let server = match config.metrics_listen {
        Some(listen) => Some(
            Server::start(listen, health.clone(), Some(metrics.clone()))
                .context(ExitReason::Config)?,
        ),
        None => None,
    };
    tracing::debug!(
        service = %config.service_name,
        otlp = config.otlp_endpoint.is_some(),
        sampling_ratio = config.sampling_ratio,
        "telemetry started"
    );
    Ok(TelemetryGuard {
        health,
        metrics,
        server,
        tracer_provider,
        meter_provider: Some(meter_provider),
    })
}

/// Exports `health`'s readiness checks as [`READY`](orstream_bus::metrics::READY), observed at
/// each collection (a scrape of `/metrics`, an OTLP export). The SDK keeps the callback for
/// the meter provider's life.
fn readiness_gauge(health: &Health) {
    use orstream_bus::metrics::{KeyValue, READY, attr, meter};
    let health = health.clone();
    meter()
        .i64_observable_gauge(READY.name)
        .with_unit(READY.unit)
        .with_description(READY.description)
        .with_callback(move |observer| {
            for (check, passing) in health.readiness().checks {
                observer.observe(i64::from(passing), &[KeyValue::new(attr::CHECK, check)]);
            }
        })
        .build();
}

#[cfg(test)]
mod tests {
    use orstream_shell::exit::{self, exit_code};

    use super::*;

    #[test]
    fn a_bad_configuration_is_a_configuration_error() {
        let config = TelemetryConfig {
            sampling_ratio: 2.0,
            ..TelemetryConfig::default()
        };
        let error = init(&config).unwrap_err();
        assert_eq!(exit_code(&error), exit::CONFIG);
        assert!(format!("{error:#}").contains("telemetry.sampling_ratio"));
    }
}
