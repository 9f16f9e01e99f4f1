//! [`TelemetryConfig`]: logs, traces, metrics and the health endpoint of one service.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// Telemetry of one service; the `[telemetry]` table of its configuration file. Every key is
/// optional. `ORSTREAM_<SERVICE>_TELEMETRY__<KEY>` variables override the file
/// ([`crate::telemetry::configure`]).
///
/// ```toml
/// [telemetry]
/// service_name = "orstream-infer"
/// log_filter = "info,orstream_infer=debug"
/// otlp_endpoint = "http://otel-collector:4318"
/// sampling_ratio = 0.1
/// metrics_listen = "0.0.0.0:9464"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `service.name` of every span and metric (and `target_info` in Prometheus). One per kind
    /// of service: `orstream-ingest`, `orstream-infer`, `orstream-sink`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// `service.instance.id` of every span and metric: which process of the service they came
    /// from (two infer workers share `service.name`). Unset (the default): a random UUID per
    /// process, as the OpenTelemetry conventions advise; set it to a stable name (the pod's or
    /// the host's) to follow one instance across restarts.
    #[serde(default)]
    pub service_instance_id: Option<String>,
    /// Which log lines reach stderr: `tracing` filter directives, e.g. `info` or
    /// `warn,orstream_infer=debug`. Default `warn`.
    #[serde(default = "default_log_filter")]
    pub log_filter: String,
    /// Base URL of an OTLP/HTTP (protobuf) receiver, usually an OpenTelemetry collector on the
    /// same host or network: `http://otel-collector:4318`. Spans go to `<url>/v1/traces`,
    /// metrics to `<url>/v1/metrics`. Plain HTTP only: a collector forwards onwards with TLS.
    /// Unset (the default): nothing is exported and spans are not even recorded.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Fraction of new traces kept, 0.0 to 1.0. A frame's trace starts at capture, so at 30
    /// frames per second and camera 0.1 keeps about 3 traces per second per camera.
    /// Downstream services follow the decision made at capture (parent-based sampling).
    #[serde(default = "default_sampling_ratio")]
    pub sampling_ratio: f64,
    /// Which spans are exported: `tracing` filter directives, applied to spans only when
    /// `otlp_endpoint` is set.
    #[serde(default = "default_trace_filter")]
    pub trace_filter: String,
    /// Whether metrics are also pushed over OTLP (when `otlp_endpoint` is set). Turn off when
    /// Prometheus scrapes `metrics_listen` and the same numbers should not arrive twice.
    #[serde(default = "default_true")]
    pub otlp_metrics: bool,
    /// How often metrics are pushed over OTLP.
    #[serde(default = "default_otlp_metrics_interval", with = "humantime_serde")]
    pub otlp_metrics_interval: Duration,
    /// Longest an OTLP export request may take, retries included.
    #[serde(default = "default_otlp_timeout", with = "humantime_serde")]
    pub otlp_timeout: Duration,
    /// Address of the HTTP endpoint serving `/metrics` (Prometheus text), `/healthz`
    /// (liveness) and `/readyz` (readiness), e.g. `0.0.0.0:9464`. Port 0 picks a free port.
    /// Unset (the default): not served.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// `/healthz` answers 503 when the service's main loop has not reported for this long.
    /// Longer than the longest pause the loop may take (a model warm-up, a drain).
    #[serde(default = "default_liveness_timeout", with = "humantime_serde")]
    pub liveness_timeout: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            service_name: default_service_name(),
            service_instance_id: None,
            log_filter: default_log_filter(),
            otlp_endpoint: None,
            sampling_ratio: default_sampling_ratio(),
            trace_filter: default_trace_filter(),
            otlp_metrics: true,
            otlp_metrics_interval: default_otlp_metrics_interval(),
            otlp_timeout: default_otlp_timeout(),
            metrics_listen: None,
            liveness_timeout: default_liveness_timeout(),
        }
    }
}

fn default_service_name() -> String {
    "orstream".to_owned()
}
fn default_log_filter() -> String {
    "warn".to_owned()
}
fn default_sampling_ratio() -> f64 {
    0.1
}
fn default_trace_filter() -> String {
    "info".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_otlp_metrics_interval() -> Duration {
    Duration::from_secs(15)
}
fn default_otlp_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_liveness_timeout() -> Duration {
    Duration::from_secs(30)
}

impl TelemetryConfig {
    /// The defaults, named for one service.
    pub fn for_service(service_name: impl Into<String>) -> Self {
        Self {
            service_name: service_name.into(),
            ..Self::default()
        }
    }

    /// Checks every key, reporting every problem at once, each naming its key under
    /// `telemetry.`.
    pub fn validate(&self) -> Result<(), TelemetryConfigError> {
        let mut problems = Vec::new();
        if self.service_name.trim().is_empty() {
            problems.push("telemetry.service_name: must not be empty".to_owned());
        }
        if let Some(id) = &self.service_instance_id
            && !orstream_proto::wire::is_valid_id(id)
        {
            problems.push(format!(
                "telemetry.service_instance_id: {id:?} must be non-empty, at most 128 bytes, \
                 without control characters"
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.log_filter) {
            problems.push(format!("telemetry.log_filter: {e}"));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(&self.trace_filter) {
            problems.push(format!("telemetry.trace_filter: {e}"));
        }
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            problems.push(format!(
                "telemetry.sampling_ratio: {} is not from 0.0 to 1.0",
                self.sampling_ratio
            ));
        }
        if let Some(endpoint) = &self.otlp_endpoint
            && let Err(why) = check_endpoint(endpoint)
        {
            problems.push(format!("telemetry.otlp_endpoint: `{endpoint}` {why}"));
        }
        for (key, value) in [
            ("otlp_metrics_interval", self.otlp_metrics_interval),
            ("otlp_timeout", self.otlp_timeout),
            ("liveness_timeout", self.liveness_timeout),
        ] {
            if value.is_zero() {
                problems.push(format!("telemetry.{key}: must be longer than 0s"));
            }
        }
        TelemetryConfigError::from_problems(problems)
    }
}

/// Whether `endpoint` is a plain-HTTP base URL an OTLP exporter can post to.
fn check_endpoint(endpoint: &str) -> Result<(), &'static str> {
    let uri: ureq::http::Uri = endpoint.parse().map_err(|_| "is not a URL")?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err("uses https; this build exports over plain HTTP to a collector nearby");
        }
        _ => return Err("must start with http://"),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("names no host");
    }
    if uri.query().is_some() {
        return Err("must not have a query");
    }
    Ok(())
}

/// What is wrong with a telemetry configuration: every problem, each naming its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryConfigError {
    /// One line per problem, `key: what is wrong`.
    pub problems: Vec<String>,
}

impl TelemetryConfigError {
    fn from_problems(problems: Vec<String>) -> Result<(), Self> {
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Self { problems })
        }
    }
}

impl fmt::Display for TelemetryConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid telemetry configuration: {}",
            self.problems.join("; ")
        )
    }
}

impl std::error::Error for TelemetryConfigError {}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn defaults_are_valid_and_export_nothing() {
        let config = TelemetryConfig::default();
        config.validate().unwrap();
        assert!(config.otlp_endpoint.is_none());
        assert!(config.metrics_listen.is_none());
    }

    #[test]
    fn parses_every_key() {
        let config: TelemetryConfig = toml::from_str(
            r#"
            service_name = "orstream-infer"
            log_filter = "warn,orstream_infer=debug"
            otlp_endpoint = "http://otel-collector:4318"
            sampling_ratio = 1.0
            trace_filter = "orstream_infer=debug"
            otlp_metrics = false
            otlp_metrics_interval = "5s"
            otlp_timeout = "2s"
            metrics_listen = "0.0.0.0:9464"
            liveness_timeout = "1m"
            "#,
        )
        .unwrap();
        config.validate().unwrap();
        assert_eq!(config.service_name, "orstream-infer");
        assert_eq!(config.otlp_metrics_interval, Duration::from_secs(5));
        assert_eq!(config.metrics_listen, Some("0.0.0.0:9464".parse().unwrap()));
        assert_eq!(config.liveness_timeout, Duration::from_secs(60));
        assert!(!config.otlp_metrics);
    }

    #[test]
    fn the_module_example_parses() {
        #[derive(Deserialize)]
        struct Service {
            telemetry: TelemetryConfig,
        }
        let service: Service = toml::from_str(
            r#"
            [telemetry]
            service_name = "orstream-infer"
            log_filter = "info,orstream_infer=debug"
            otlp_endpoint = "http://otel-collector:4318"
            sampling_ratio = 0.1
            metrics_listen = "0.0.0.0:9464"
            "#,
        )
        .unwrap();
        service.telemetry.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err =
            toml::from_str::<TelemetryConfig>("otlp_endpont = \"http://x:4318\"").unwrap_err();
        assert!(err.to_string().contains("otlp_endpont"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_naming_its_key() {
        let config = TelemetryConfig {
            service_name: " ".into(),
            log_filter: "info,[".into(),
            sampling_ratio: 1.5,
            otlp_endpoint: Some("https://collector:4318".into()),
            otlp_timeout: Duration::ZERO,
            ..TelemetryConfig::default()
        };
        let err = config.validate().unwrap_err();
        let text = err.to_string();
        for key in [
            "telemetry.service_name",
            "telemetry.log_filter",
            "telemetry.sampling_ratio",
            "telemetry.otlp_endpoint",
            "telemetry.otlp_timeout",
        ] {
            assert!(text.contains(key), "{key} missing from: {text}");
        }
        assert_eq!(err.problems.len(), 5);
        assert!(
            TelemetryConfig {
                sampling_ratio: f64::NAN,
                ..TelemetryConfig::default()
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn endpoints() {
        assert!(check_endpoint("http://127.0.0.1:4318").is_ok());
        assert!(check_endpoint("http://collector:4318/prefix/").is_ok());
        assert!(check_endpoint("collector:4318").is_err());
        assert!(check_endpoint("grpc://collector:4317").is_err());
        assert!(check_endpoint("http://collector:4318/?a=b").is_err());
        assert!(check_endpoint("not a url").is_err());
    }
}
