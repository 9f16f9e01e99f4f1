//! The API service's settings: where it listens, the record it reads, the tokens' file, the
//! rate limit and the topics the live feed follows.
//! Read in layers as every service's (`ORSTREAM_API_<KEY>`; `ORSTREAM_API_STORE_FILE` reads a
//! connection string holding a password from a file).

use std::net::SocketAddr;
use std::path::PathBuf;

use orstream_bus::KafkaConfig;
use serde::Deserialize;

use crate::live::Follow;

/// The `<SERVICE>` of the API's `ORSTREAM_API_<KEY>` variables.
pub const SERVICE: &str = "api";

/// The API service.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Address to serve the API and the page on.
    pub listen: SocketAddr,
    /// The record: `sqlite://PATH` or `postgres://...` (the sink's store).
    pub store: String,
    /// The tokens' file: `NAME ROLE ROOMS TOKEN` lines ([`crate::access`]); required.
    pub tokens_file: Option<PathBuf>,
    /// Requests a caller may make per second over time ([`crate::limit`]).
    pub rate_per_second: u32,
    /// Requests a caller may make at once.
    pub burst: u32,
    /// Follow the bus and push what happens to the clients of `/v1/live` ([`crate::live`]).
    pub live: bool,
    /// The derived events followed.
    pub events_topic: String,
    /// The stream and case lifecycle followed.
    pub streams_topic: String,
    /// The consumer group that follows them.
    pub group_id: String,
    /// How the API reaches Kafka (the `[kafka]` table, as every service's).
    pub kafka: KafkaConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        let follow = Follow::default();
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9480)),
            store: "sqlite://demo-output/record.db".to_owned(),
            tokens_file: None,
            rate_per_second: 20,
            burst: 60,
            live: true,
            events_topic: follow.events_topic,
            streams_topic: follow.streams_topic,
            group_id: follow.group_id,
            kafka: KafkaConfig::default(),
        }
    }
}

impl ApiConfig {
    /// Every problem at once, each naming its key.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if !(self.store.starts_with("sqlite:")
            || self.store.starts_with("postgres://")
            || self.store.starts_with("postgresql://"))
        {
            problems.push(format!(
                "store: {:?} is not sqlite://PATH or postgres://...",
                orstream_record::store::redact(&self.store)
            ));
        }
        if self.tokens_file.is_none() {
            problems.push(
                "tokens_file: the API needs its tokens' file (it answers nobody without one)"
                    .to_owned(),
            );
        }
        if self.rate_per_second == 0 || self.burst == 0 {
            problems.push("rate_per_second and burst: must be at least 1".to_owned());
        }
        if self.live {
            for (key, value) in [
                ("events_topic", &self.events_topic),
                ("streams_topic", &self.streams_topic),
                ("group_id", &self.group_id),
            ] {
                if value.trim().is_empty() {
                    problems.push(format!("{key}: must not be empty while live is on"));
                }
            }
            if let Err(e) = self.kafka.validate() {
                problems.push(e.to_string());
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}
