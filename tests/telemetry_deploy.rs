//! The files the compose stack hands the services: every file it names exists, and each
//! service's configuration (its file under its variables) parses and validates.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

use std::path::Path;

use orstream::telemetry::split_telemetry;
use orstream_shell::config::Layers;

const COMPOSE: &str = include_str!("../docker-compose.yml");

/// The value of every `key: value` line in the compose file, unquoted.
fn values<'a>(key: &'a str) -> impl Iterator<Item = &'static str> + 'a {
    COMPOSE.lines().filter_map(move |line| {
        let rest = line.trim().strip_prefix(key)?.strip_prefix(':')?;
        Some(rest.trim().trim_matches('"'))
    })
}

#[test]
fn every_file_the_stack_names_exists() {
    let files: Vec<&str> = values("file").collect();
    assert!(files.len() >= 5, "{files:?}");
    for file in files {
        assert!(
            Path::new(file).is_file(),
            "{file} is named by docker-compose.yml"
        );
    }
    for file in [
        "Dockerfile",
        "deploy/compose.gpu.yaml",
        "models/demo/clip.mp4",
    ] {
        assert!(Path::new(file).is_file(), "{file}");
    }
}

/// Each service's variables in the compose file, with secret files read from where the
/// stack's `secrets` take them (`/run/secrets/NAME` is `deploy/orstream/secrets/NAME`).
fn variables(service: &str) -> Vec<(String, String)> {
    let prefix = orstream_shell::config::prefix(service);
    COMPOSE
        .lines()
        .filter_map(|line| {
            let (key, value) = line.trim().split_once(':')?;
            let value = value.trim().trim_matches('"');
            let value = match value.strip_prefix("/run/secrets/") {
                Some(name) => format!("deploy/orstream/secrets/{name}"),
                None => value.to_owned(),
            };
            key.starts_with(&prefix).then(|| (key.to_owned(), value))
        })
        .collect()
}

#[test]
fn every_service_configuration_of_the_stack_parses_and_validates() {
    let prometheus = std::fs::read_to_string("deploy/prometheus.yml").unwrap();
    for service in ["ingest", "infer", "sink"] {
        let path = format!("deploy/orstream/{service}.toml");
        assert!(
            COMPOSE.contains(&format!("file: ./{path}")),
            "the stack hands {service} {path}"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let mut layers =
            Layers::from_sources(service, Some((Path::new(&path), &text)), variables(service))
                .unwrap();
        let telemetry = split_telemetry(&mut layers, service).unwrap();
        telemetry.validate().unwrap();
        assert_eq!(telemetry.service_name, format!("orstream-{service}"));
        assert_eq!(
            telemetry.otlp_endpoint.as_deref(),
            Some("http://otel-collector:4318")
        );
        // Prometheus scrapes that port on every service.
        assert_eq!(telemetry.metrics_listen.map(|a| a.port()), Some(9464));
        assert!(
            prometheus.contains(&format!("\"{service}:9464\"")),
            "{service}"
        );
        match service {
            "ingest" => {
                let config = orstream_ingest::ServiceConfig::from_layers(layers).unwrap();
                config.validate().unwrap();
                assert_eq!(config.ingest.streams.len(), 1);
                assert_eq!(config.kafka.bootstrap_servers, "kafka:9092");
            }
            "infer" => {
                let config: orstream_infer::InferConfig = layers.extract().unwrap();
                config.validate().unwrap();
                assert_eq!(config.transactional_id, "orstream-infer-compose-0");
                assert_eq!(config.kafka.bootstrap_servers, "kafka:9092");
            }
            _ => {
                let config: orstream_sink::SinkConfig = layers.extract().unwrap();
                config.validate().unwrap();
                assert!(
                    config.store.starts_with("postgres://"),
                    "from the secret file"
                );
                assert!(!config.store.ends_with('\n'));
                assert_eq!(config.kafka.bootstrap_servers, "kafka:9092");
            }
        }
    }
}
