//! Where a service's [`TelemetryConfig`] comes from: the `[telemetry]` table of its
//! configuration file ([`ServiceFile`]), then the `ORSTREAM_...` environment variables, then
//! the command line ([`TelemetryArgs`]); [`configure`] puts the layers together.
//!
//! The service crates know nothing of telemetry, and their configurations refuse unknown keys,
//! so the `[telemetry]` table is taken out of the file before the rest is given to the
//! service's own configuration type ([`ServiceFile::service`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

use super::{ExitReason, TelemetryConfig};

/// Name of the table that holds a service's telemetry settings.
pub const TABLE: &str = "telemetry";

/// A service's configuration file, parsed, with its `[telemetry]` table set apart.
#[derive(Debug, Clone)]
pub struct ServiceFile {
    path: PathBuf,
    telemetry: Option<toml::Table>,
    rest: toml::Table,
}

impl ServiceFile {
    /// Reads and parses the TOML file at `path`. Errors carry [`ExitReason::Config`].
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))
            .context(ExitReason::Config)?;
        Self::parse(&text, path)
    }

    /// Parses `text`; `path` is only named in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut rest: toml::Table = toml::from_str(text)
            .with_context(|| format!("parsing {}", path.display()))
            .context(ExitReason::Config)?;
        let telemetry = match rest.remove(TABLE) {
            None => None,
            Some(toml::Value::Table(table)) => Some(table),
            Some(_) => {
                return Err(anyhow::anyhow!("[{TABLE}] must be a table"))
                    .with_context(|| format!("parsing {}", path.display()))
                    .context(ExitReason::Config);
            }
        };
        Ok(Self {
            path: path.to_owned(),
            telemetry,
            rest,
        })
    }

    /// The file without its `[telemetry]` table.
    pub fn rest(&self) -> &toml::Table {
        &self.rest
    }

    /// The file without its `[telemetry]` table, as the service's configuration `T` (which
    /// refuses unknown keys as it would in the file). Errors name the file and carry
    /// [`ExitReason::Config`].
    pub fn service<T: DeserializeOwned>(&self) -> Result<T> {
        toml::Value::Table(self.rest.clone())
            .try_into::<T>()
            .with_context(|| format!("parsing {}", self.path.display()))
            .context(ExitReason::Config)
    }

    /// The `[telemetry]` table over the defaults; `service_name` when the table names none.
    pub fn telemetry(&self, service_name: &str) -> Result<TelemetryConfig> {
        let Some(table) = &self.telemetry else {
            return Ok(TelemetryConfig::for_service(service_name));
        };
        let mut table = table.clone();
        table
            .entry("service_name")
            .or_insert_with(|| toml::Value::String(service_name.to_owned()));
        toml::Value::Table(table)
            .try_into::<TelemetryConfig>()
            .with_context(|| format!("parsing [{TABLE}] of {}", self.path.display()))
            .context(ExitReason::Config)
    }
}

/// Command-line flags over the file and the environment; each replaces one key.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TelemetryArgs {
    /// Serve /metrics (Prometheus), /healthz and /readyz on this address, e.g. 0.0.0.0:9464
    /// (telemetry.metrics_listen).
    #[arg(long, global = true, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// Export spans and metrics over OTLP/HTTP to this base URL, e.g.
    /// http://otel-collector:4318 (telemetry.otlp_endpoint).
    #[arg(long, global = true, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Fraction of new traces kept, 0.0 to 1.0 (telemetry.sampling_ratio).
    #[arg(long, global = true, value_name = "RATIO")]
    pub trace_sampling_ratio: Option<f64>,
}

impl TelemetryArgs {
    /// Replaces the keys the flags name.
    pub fn apply(&self, config: &mut TelemetryConfig) {
        if let Some(listen) = self.metrics_listen {
            config.metrics_listen = Some(listen);
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            config.otlp_endpoint = Some(endpoint.clone());
        }
        if let Some(ratio) = self.trace_sampling_ratio {
            config.sampling_ratio = ratio;
        }
    }
}

/// The telemetry of the service `service_name`: its file's `[telemetry]` table (when it has a
/// file), then the environment ([`TelemetryConfig::apply_env`]), then `args`; validated.
/// Errors carry [`ExitReason::Config`].
pub fn configure(
    service_name: &str,
    file: Option<&Path>,
    args: &TelemetryArgs,
) -> Result<TelemetryConfig> {
    let mut config = match file {
        Some(path) => ServiceFile::read(path)?.telemetry(service_name)?,
        None => TelemetryConfig::for_service(service_name),
    };
    config
        .apply_env(|key| std::env::var(key).ok())
        .context(ExitReason::Config)?;
    args.apply(&mut config);
    config.validate().context(ExitReason::Config)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::telemetry::{exit, exit_code};

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Service {
        topic: String,
    }

    #[test]
    fn the_telemetry_table_is_set_apart_from_the_service_keys() {
        let file = ServiceFile::parse(
            r#"
            topic = "or.frames.v1"
            [telemetry]
            metrics_listen = "127.0.0.1:0"
            sampling_ratio = 1.0
            liveness_timeout = "5s"
            "#,
            Path::new("svc.toml"),
        )
        .unwrap();
        let service: Service = file.service().unwrap();
        assert_eq!(service.topic, "or.frames.v1");
        let telemetry = file.telemetry("orstream-sink").unwrap();
        assert_eq!(telemetry.service_name, "orstream-sink");
        assert_eq!(telemetry.sampling_ratio, 1.0);
        assert_eq!(telemetry.liveness_timeout, Duration::from_secs(5));
        assert!(telemetry.otlp_endpoint.is_none());
    }

    #[test]
    fn without_a_table_the_defaults_apply_under_the_services_name() {
        let file = ServiceFile::parse("topic = \"t\"", Path::new("svc.toml")).unwrap();
        let telemetry = file.telemetry("orstream-ingest").unwrap();
        assert_eq!(
            telemetry,
            TelemetryConfig::for_service("orstream-ingest"),
            "nothing exported, nothing served"
        );
    }

    #[test]
    fn unknown_keys_are_configuration_errors_in_both_parts() {
        let file = ServiceFile::parse(
            "topic = \"t\"\n[telemetry]\nsampling = 1.0\n",
            Path::new("svc.toml"),
        )
        .unwrap();
        let error = file.telemetry("orstream-sink").unwrap_err();
        assert_eq!(exit_code(&error), exit::CONFIG);
        assert!(format!("{error:#}").contains("sampling"), "{error:#}");

        let file = ServiceFile::parse("topik = \"t\"", Path::new("svc.toml")).unwrap();
        let error = file.service::<Service>().unwrap_err();
        assert_eq!(exit_code(&error), exit::CONFIG);
        assert!(format!("{error:#}").contains("svc.toml"), "{error:#}");

        let error = ServiceFile::parse("telemetry = 1", Path::new("svc.toml")).unwrap_err();
        assert_eq!(exit_code(&error), exit::CONFIG);
    }

    #[test]
    fn the_example_configurations_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let ingest = ServiceFile::read(&root.join("ingest.example.toml")).unwrap();
        let telemetry = ingest.telemetry("orstream-ingest").unwrap();
        telemetry.validate().unwrap();
        assert_eq!(telemetry.service_name, "orstream-ingest");
        orstream_ingest::ServiceConfig::from_table(ingest.rest().clone())
            .unwrap()
            .validate()
            .unwrap();

        let sink = ServiceFile::read(&root.join("sink.example.toml")).unwrap();
        let telemetry = sink.telemetry("orstream-sink").unwrap();
        telemetry.validate().unwrap();
        assert_eq!(telemetry.liveness_timeout, Duration::from_secs(30));
        sink.service::<orstream_sink::SinkConfig>()
            .unwrap()
            .validate()
            .unwrap();
    }

    #[test]
    fn flags_replace_the_file() {
        let mut config = TelemetryConfig::for_service("orstream-sink");
        TelemetryArgs {
            metrics_listen: Some("127.0.0.1:9464".parse().unwrap()),
            otlp_endpoint: Some("http://collector:4318".into()),
            trace_sampling_ratio: Some(0.5),
        }
        .apply(&mut config);
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(
            config.otlp_endpoint.as_deref(),
            Some("http://collector:4318")
        );
        assert_eq!(config.sampling_ratio, 0.5);
    }
}
