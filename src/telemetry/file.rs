//! Where a service's settings come from: its configuration file, then its
//! `ORSTREAM_<SERVICE>_<KEY>` variables, then the command line, put together by
//! [`orstream_shell::config::Layers`] the same way for every service.
//!
//! The service crates know nothing of telemetry, and their configurations refuse unknown keys,
//! so the `[telemetry]` table is set apart ([`layers`]) before the rest is given to the
//! service's own configuration type; [`configure`] reads it.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result};
use orstream_shell::config::Layers;
use orstream_shell::exit::ExitReason;

use super::TelemetryConfig;

/// Name of the table that holds a service's telemetry settings.
pub const TABLE: &str = "telemetry";

/// The settings of `service` (`ingest`, `infer`, `sink`: the `<SERVICE>` of its variables)
/// from `file` and the environment, without the `[telemetry]` table. Errors carry
/// [`ExitReason::Config`].
pub fn layers(service: &str, file: Option<&Path>) -> Result<Layers> {
    let mut layers = Layers::load(service, file).context(ExitReason::Config)?;
    layers.split(TABLE);
    Ok(layers)
}

/// The full telemetry service name of `service`: `orstream-sink`.
pub fn service_name(service: &str) -> String {
    format!("orstream-{service}")
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

/// The telemetry of `service`: its file's `[telemetry]` table (when it has a file), then its
/// `ORSTREAM_<SERVICE>_TELEMETRY__<KEY>` variables, then `args`; validated. Errors carry
/// [`ExitReason::Config`].
pub fn configure(
    service: &str,
    file: Option<&Path>,
    args: &TelemetryArgs,
) -> Result<TelemetryConfig> {
    let mut layers = Layers::load(service, file).context(ExitReason::Config)?;
    let mut config = split_telemetry(&mut layers, service)?;
    args.apply(&mut config);
    config.validate().context(ExitReason::Config)?;
    Ok(config)
}

/// Sets the `[telemetry]` table of `service`'s layers apart and types it; `service_name`
/// defaults to `orstream-<service>`. Not validated. Errors carry [`ExitReason::Config`].
pub fn split_telemetry(layers: &mut Layers, service: &str) -> Result<TelemetryConfig> {
    let mut table = layers.split(TABLE);
    table.default_value("service_name", service_name(service));
    table.extract().context(ExitReason::Config)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use orstream_shell::exit::{self, exit_code};

    use super::*;

    fn sink_telemetry(file: Option<&str>, vars: &[(&str, &str)]) -> Result<TelemetryConfig> {
        let mut layers = Layers::from_sources(
            "sink",
            file.map(|text| (Path::new("sink.toml"), text)),
            vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )?;
        split_telemetry(&mut layers, "sink")
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Service {
        topic: String,
    }

    #[test]
    fn the_telemetry_table_is_set_apart_from_the_service_keys() {
        let text = r#"
            topic = "or.frames.v1"
            [telemetry]
            metrics_listen = "127.0.0.1:0"
            sampling_ratio = 1.0
            liveness_timeout = "5s"
            "#;
        let mut layers =
            Layers::from_sources("sink", Some((Path::new("svc.toml"), text)), []).unwrap();
        layers.split(TABLE);
        let service: Service = layers.extract().unwrap();
        assert_eq!(service.topic, "or.frames.v1");
        let telemetry = sink_telemetry(Some(text), &[]).unwrap();
        assert_eq!(telemetry.service_name, "orstream-sink");
        assert_eq!(telemetry.sampling_ratio, 1.0);
        assert_eq!(telemetry.liveness_timeout, Duration::from_secs(5));
        assert!(telemetry.otlp_endpoint.is_none());
    }

    #[test]
    fn without_a_table_the_defaults_apply_under_the_services_name() {
        assert_eq!(
            sink_telemetry(Some("topic = \"t\""), &[]).unwrap(),
            TelemetryConfig::for_service("orstream-sink"),
            "nothing exported, nothing served"
        );
    }

    #[test]
    fn the_environment_replaces_the_table_and_an_empty_value_turns_a_key_off() {
        let config = sink_telemetry(
            Some("[telemetry]\notlp_endpoint = \"http://a:4318\"\nmetrics_listen = \"127.0.0.1:1\"\n"),
            &[
                ("ORSTREAM_SINK_TELEMETRY__LOG_FILTER", "debug"),
                ("ORSTREAM_SINK_TELEMETRY__SAMPLING_RATIO", "0.25"),
                ("ORSTREAM_SINK_TELEMETRY__OTLP_METRICS", "false"),
                ("ORSTREAM_SINK_TELEMETRY__OTLP_ENDPOINT", ""),
                ("ORSTREAM_SINK_TELEMETRY__SERVICE_NAME", "orstream-sink-or3"),
            ],
        )
        .unwrap();
        assert_eq!(config.log_filter, "debug");
        assert_eq!(config.sampling_ratio, 0.25);
        assert!(!config.otlp_metrics);
        assert_eq!(config.otlp_endpoint, None);
        assert_eq!(config.metrics_listen, Some("127.0.0.1:1".parse().unwrap()));
        assert_eq!(config.service_name, "orstream-sink-or3");

        let bad = sink_telemetry(None, &[("ORSTREAM_SINK_TELEMETRY__METRICS_LISTEN", "nine")])
            .unwrap_err();
        assert!(
            format!("{bad:#}")
                .contains("ORSTREAM_SINK_TELEMETRY__METRICS_LISTEN: telemetry.metrics_listen:"),
            "{bad:#}"
        );
    }

    #[test]
    fn unknown_keys_are_configuration_errors_in_both_parts() {
        let error = configure_text("topic = \"t\"\n[telemetry]\nsampling = 1.0\n").unwrap_err();
        assert_eq!(exit_code(&error), exit::CONFIG);
        assert!(format!("{error:#}").contains("sampling"), "{error:#}");

        let error = layers_text("topik = \"t\"")
            .and_then(|layers| Ok(layers.extract::<Service>()?))
            .unwrap_err();
        assert!(format!("{error:#}").contains("topik"), "{error:#}");
    }

    /// A configuration file holding `text`, removed when dropped.
    fn file_with(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    /// [`configure`] on a file with `text`.
    fn configure_text(text: &str) -> Result<TelemetryConfig> {
        configure(
            "sink",
            Some(file_with(text).path()),
            &TelemetryArgs::default(),
        )
    }

    /// [`layers`] on a file with `text`.
    fn layers_text(text: &str) -> Result<Layers> {
        layers("sink", Some(file_with(text).path()))
    }

    #[test]
    fn the_example_configurations_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        for (service, file) in [
            ("ingest", "ingest.example.toml"),
            ("sink", "sink.example.toml"),
            ("infer", "infer.example.toml"),
        ] {
            let path = root.join(file);
            let telemetry = configure(service, Some(&path), &TelemetryArgs::default()).unwrap();
            assert_eq!(telemetry.service_name, format!("orstream-{service}"));
            let layers = layers(service, Some(&path)).unwrap();
            match service {
                "ingest" => orstream_ingest::ServiceConfig::from_layers(layers)
                    .unwrap()
                    .validate()
                    .unwrap(),
                "sink" => layers
                    .extract::<orstream_sink::SinkConfig>()
                    .unwrap()
                    .validate()
                    .unwrap(),
                _ => layers
                    .extract::<orstream_infer::InferConfig>()
                    .unwrap()
                    .validate()
                    .unwrap(),
            }
        }
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
