//! The files the compose stack hands the services: every file it names exists (the secrets as
//! `scripts/compose-secrets.sh` makes them), no secret is written in a compose file, and each
//! service's configuration (its file under its variables) parses and validates, both in the
//! secure stack (Kafka over SASL_SSL, PostgreSQL with verify-full) and in the plaintext one
//! (`deploy/compose.plaintext.yaml`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

use std::path::Path;

use orstream::telemetry::split_telemetry;
use orstream_bus::KafkaConfig;
use orstream_bus::security::Protocol;
use orstream_shell::config::Layers;

const COMPOSE: &str = include_str!("../docker-compose.yml");
const PLAINTEXT: &str = include_str!("../deploy/compose.plaintext.yaml");

/// The value of every `key: value` line in a compose file, unquoted.
fn values<'a>(text: &'static str, key: &'a str) -> impl Iterator<Item = &'static str> + 'a {
    text.lines().filter_map(move |line| {
        let rest = line.trim().strip_prefix(key)?.strip_prefix(':')?;
        Some(rest.trim().trim_matches('"'))
    })
}

/// The stack's secrets as `scripts/compose-secrets.sh` makes them, in a directory of their
/// own (the stack takes them from `deploy/secrets/`).
fn secrets() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("scripts/compose-secrets.sh")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "scripts/compose-secrets.sh failed");
    dir
}

/// The plaintext stack's secrets: each name copied from the file of `deploy/plaintext/` that
/// deploy/compose.plaintext.yaml maps it to.
fn plaintext_secrets() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut name = None;
    for line in PLAINTEXT.lines().map(str::trim) {
        if let Some(key) = line.strip_suffix(':') {
            name = Some(key.to_owned());
        } else if let (Some(secret), Some(file)) =
            (&name, line.strip_prefix("file: ./deploy/plaintext/"))
        {
            std::fs::copy(format!("deploy/plaintext/{file}"), dir.path().join(secret)).unwrap();
        }
    }
    dir
}

/// Each service's variables in the compose `files` (a later file's value wins), with
/// `/run/secrets/NAME` found in `secrets`.
fn variables(service: &str, files: &[&str], secrets: &Path) -> Vec<(String, String)> {
    let prefix = orstream_shell::config::prefix(service);
    let mut vars = std::collections::BTreeMap::new();
    for text in files {
        for line in text.lines() {
            let Some((key, value)) = line.trim().split_once(':') else {
                continue;
            };
            let value = value.trim().trim_matches('"');
            let value = match value.strip_prefix("/run/secrets/") {
                Some(name) => secrets.join(name).display().to_string(),
                None => value.to_owned(),
            };
            if key.starts_with(&prefix) {
                vars.insert(key.to_owned(), value);
            }
        }
    }
    vars.into_iter().collect()
}

#[test]
fn every_file_the_stack_names_exists() {
    let secrets = secrets();
    let files: Vec<&str> = values(COMPOSE, "file")
        .chain(values(PLAINTEXT, "file"))
        .collect();
    assert!(files.len() >= 5, "{files:?}");
    for file in files {
        let path = match file.strip_prefix("./deploy/secrets/") {
            Some(name) => secrets.path().join(name),
            None => Path::new(file).to_owned(),
        };
        assert!(path.is_file(), "{file} is named by the compose files");
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
fn no_secret_is_written_in_the_compose_files() {
    for (name, text) in [
        ("docker-compose.yml", COMPOSE),
        ("compose.plaintext.yaml", PLAINTEXT),
    ] {
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            let key = key.trim().to_ascii_uppercase();
            let holds_a_secret = ["PASSWORD", "SECRET", "TOKEN", "STORE"]
                .iter()
                .any(|k| key.contains(k));
            let value = value.trim().trim_matches('"');
            assert!(
                !holds_a_secret || key.ends_with("_FILE") || value.is_empty(),
                "{name}: {key} holds a value; a secret comes from a file"
            );
        }
    }
}

/// The service's Kafka settings and the sink's store, from its file under `vars`, after
/// checking its telemetry (the same in both stacks).
fn configured(service: &str, vars: Vec<(String, String)>) -> (KafkaConfig, Option<String>) {
    let prometheus = std::fs::read_to_string("deploy/prometheus.yml").unwrap();
    let path = format!("deploy/orstream/{service}.toml");
    assert!(
        COMPOSE.contains(&format!("file: ./{path}")),
        "the stack hands {service} {path}"
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let mut layers = Layers::from_sources(service, Some((Path::new(&path), &text)), vars).unwrap();
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
            (config.kafka, None)
        }
        "infer" => {
            let config: orstream_infer::InferConfig = layers.extract().unwrap();
            config.validate().unwrap();
            assert_eq!(config.transactional_id, "orstream-infer-compose-0");
            (config.kafka, None)
        }
        _ => {
            let config: orstream_sink::SinkConfig = layers.extract().unwrap();
            config.validate().unwrap();
            assert!(!config.store.ends_with('\n'));
            (config.kafka, Some(config.store))
        }
    }
}

#[test]
fn every_service_configuration_of_the_secure_stack_parses_and_validates() {
    let secrets = secrets();
    for service in ["ingest", "infer", "sink"] {
        let (kafka, store) = configured(service, variables(service, &[COMPOSE], secrets.path()));
        kafka.validate().unwrap();
        assert_eq!(kafka.bootstrap_servers, "kafka:9092");
        assert_eq!(kafka.security.protocol, Protocol::SaslSsl, "{service}");
        assert_eq!(kafka.security.username.as_deref(), Some(service));
        assert!(
            kafka.security.password.is_some(),
            "{service}: from its secret"
        );
        assert_eq!(kafka.security.ca, Some(secrets.path().join("ca")));
        if let Some(store) = store {
            assert!(
                store.starts_with("postgres://") && store.contains("sslmode=verify-full"),
                "the sink's store is reached over verified TLS"
            );
        }
    }
}

#[test]
fn every_service_configuration_of_the_plaintext_stack_parses_and_validates() {
    let secrets = plaintext_secrets();
    for service in ["ingest", "infer", "sink"] {
        let vars = variables(service, &[COMPOSE, PLAINTEXT], secrets.path());
        let (kafka, store) = configured(service, vars);
        kafka.validate().unwrap();
        assert_eq!(kafka.security.protocol, Protocol::Plaintext, "{service}");
        assert_eq!(kafka.security.username, None);
        if let Some(store) = store {
            assert_eq!(store, "postgres://orstream:orstream@postgres:5432/orstream");
        }
    }
}

/// The metric names (as Prometheus shows them) a monitoring file uses: every `orstream_...`
/// word that is not a label (an attribute key, dots as underscores), histogram suffixes taken
/// off.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let labels: Vec<String> = orstream_bus::metrics::ALLOWED_ATTRIBUTES
        .iter()
        .map(|key| key.replace('.', "_"))
        .collect();
    let mut names = std::collections::BTreeSet::new();
    for (at, _) in text.match_indices("orstream_") {
        if at > 0
            && text[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        let name: String = text[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(&name)
            .to_owned();
        if !labels.contains(&base) {
            names.insert(base);
        }
    }
    names
}

#[test]
fn the_dashboard_and_the_rules_use_only_the_metrics_listed_for_them() {
    let listed: std::collections::BTreeSet<String> =
        include_str!("../deploy/monitoring/metrics-used.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
    for (file, text) in [
        (
            "deploy/grafana/dashboards/orstream-pipeline.json",
            include_str!("../deploy/grafana/dashboards/orstream-pipeline.json"),
        ),
        (
            "deploy/prometheus/rules.yml",
            include_str!("../deploy/prometheus/rules.yml"),
        ),
    ] {
        let used = metric_names(text);
        assert!(!used.is_empty(), "{file} uses no orstream metric");
        let unlisted: Vec<_> = used.difference(&listed).collect();
        assert!(
            unlisted.is_empty(),
            "{file} uses metrics missing from deploy/monitoring/metrics-used.txt: {unlisted:?}"
        );
    }
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    // Fails, never skips, where promtool is missing: scripts/install-packages.sh installs it.
    let out = orstream_test_support::scripts::run("promtool-check.sh", &[]);
    println!("{out}");
}
