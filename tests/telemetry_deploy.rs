//! The files the compose stack hands the services: every file it names exists, the ingest
//! configuration parses and validates, and each service's telemetry variables parse.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

use std::path::Path;

use orstream::telemetry::TelemetryConfig;

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

#[test]
fn the_ingest_configuration_parses_and_validates() {
    let text = std::fs::read_to_string("deploy/orstream/ingest.toml").unwrap();
    let config = orstream_ingest::ServiceConfig::from_toml(&text).unwrap();
    config.validate().unwrap();
    assert_eq!(config.ingest.streams.len(), 1);
}

#[test]
fn the_telemetry_variables_parse() {
    let vars: Vec<(String, String)> = COMPOSE
        .lines()
        .filter_map(|line| {
            let (key, value) = line.trim().split_once(':')?;
            key.starts_with("ORSTREAM_")
                .then(|| (key.to_owned(), value.trim().trim_matches('"').to_owned()))
        })
        .collect();
    assert!(vars.iter().any(|(k, _)| k == "ORSTREAM_OTLP_ENDPOINT"));
    let mut config = TelemetryConfig::default();
    config
        .apply_env(|key| vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()))
        .unwrap();
    config.validate().unwrap();
    assert_eq!(config.metrics_listen.map(|a| a.port()), Some(9464));
    // Prometheus scrapes that port on every service.
    let prometheus = std::fs::read_to_string("deploy/prometheus.yml").unwrap();
    for service in ["ingest", "infer", "sink"] {
        assert!(
            prometheus.contains(&format!("\"{service}:9464\"")),
            "{service}"
        );
    }
}
