//! Settings of the Kafka backend.
//!
//! The typed fields cover what the bus must get right for orstream's guarantees (prefetch cap,
//! session and transaction timeouts, message size); everything else librdkafka knows can be
//! passed through `librdkafka`. The settings that the guarantees rest on (idempotence, acks,
//! isolation level, manual offsets) are not settable at all.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::BusError;
use crate::security::{KafkaSecurity, SECURITY_KEYS};

/// How the bus reaches and talks to Kafka.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list of brokers to bootstrap from (`bootstrap.servers`).
    pub bootstrap_servers: String,
    /// Client id reported to the brokers (`client.id`); shows up in broker logs and quotas.
    pub client_id: String,
    /// Cap on the messages a consumer prefetches per partition, in KiB
    /// (`queued.max.messages.kbytes`). Frames are JPEGs of hundreds of KiB, so librdkafka's
    /// default (64 MiB per partition) would hold gigabytes for a worker with many partitions.
    pub queued_max_messages_kbytes: u32,
    /// How long the group coordinator waits for a consumer's heartbeat before it hands the
    /// consumer's partitions to another member (`session.timeout.ms`).
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Longest allowed gap between two polls of a consumer before it leaves its group
    /// (`max.poll.interval.ms`). Must be at least `session_timeout`.
    #[serde(with = "humantime_serde")]
    pub max_poll_interval: Duration,
    /// How long the transaction coordinator lets a transaction stay open before it aborts it
    /// (`transaction.timeout.ms`). Also bounds how long a dead producer's open transaction holds
    /// back read_committed readers. Must not exceed the broker's `transaction.max.timeout.ms`
    /// (15 minutes by default).
    #[serde(with = "humantime_serde")]
    pub transaction_timeout: Duration,
    /// Largest message the producer will send (`message.max.bytes`); topics created by the bus
    /// get the same `max.message.bytes` so the broker accepts what the producer sends.
    pub message_max_bytes: u32,
    /// How long dropping a producer waits for its queued messages to be delivered (anything
    /// still queued afterwards is lost and logged), and dropping a consumer for it to leave
    /// its group (afterwards the broker ends its session).
    #[serde(with = "humantime_serde")]
    pub close_timeout: Duration,
    /// Further librdkafka properties, passed through as they are (e.g. `"linger.ms" = "5"`,
    /// `"security.protocol" = "SASL_SSL"`). A key that one of the typed fields above sets, or
    /// that the bus manages for its guarantees, is an error.
    pub librdkafka: BTreeMap<String, String>,
    /// Encryption and authentication (`[kafka.security]`): TLS, mutual TLS or SASL over TLS.
    pub security: KafkaSecurity,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".to_owned(),
            client_id: "orstream".to_owned(),
            queued_max_messages_kbytes: 16_384,
            session_timeout: Duration::from_secs(45),
            max_poll_interval: Duration::from_secs(300),
            transaction_timeout: Duration::from_secs(60),
            message_max_bytes: 8 * 1024 * 1024,
            close_timeout: Duration::from_secs(10),
            librdkafka: BTreeMap::new(),
            security: KafkaSecurity::default(),
        }
    }
}

/// librdkafka properties that the typed fields set (the pass-through map must not repeat them),
/// with their aliases, paired with the field that owns them.
const TYPED_KEYS: &[(&str, &str)] = &[
    ("bootstrap.servers", "bootstrap_servers"),
    ("metadata.broker.list", "bootstrap_servers"),
    ("client.id", "client_id"),
    ("queued.max.messages.kbytes", "queued_max_messages_kbytes"),
    ("session.timeout.ms", "session_timeout"),
    ("max.poll.interval.ms", "max_poll_interval"),
    ("transaction.timeout.ms", "transaction_timeout"),
    ("message.max.bytes", "message_max_bytes"),
];

/// librdkafka properties that the bus sets itself because a guarantee depends on them:
/// exactly-once needs idempotent, fully acknowledged writes, read_committed reads and offsets
/// that move only when the application says so; ids are given per client by the API.
const MANAGED_KEYS: &[&str] = &[
    "enable.idempotence",
    "acks",
    "request.required.acks",
    "isolation.level",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "group.id",
    "transactional.id",
];

/// Upper bound of librdkafka's `queued.max.messages.kbytes`.
const MAX_QUEUED_KBYTES: u32 = 2_097_151;
/// librdkafka's bounds for `message.max.bytes`.
const MESSAGE_MAX_BYTES_RANGE: std::ops::RangeInclusive<u32> = 1_000..=1_000_000_000;
/// librdkafka takes timeouts as `i32` milliseconds.
const MAX_MS: u128 = i32::MAX as u128;
/// The broker's default `transaction.max.timeout.ms`; a longer transaction timeout is refused
/// by `init` on a broker with default settings.
const BROKER_TRANSACTION_MAX: Duration = Duration::from_secs(15 * 60);

impl KafkaConfig {
    /// Opens a TCP connection to the first bootstrap server: a cheap "is a broker there?"
    /// check for start-up and tests, before librdkafka retries silently in the background.
    /// The error names the address and the cause.
    pub fn probe(&self, timeout: Duration) -> Result<(), String> {
        use std::net::{TcpStream, ToSocketAddrs};
        let first = self
            .bootstrap_servers
            .split(',')
            .next()
            .unwrap_or_default()
            .trim();
        first
            .to_socket_addrs()
            .map_err(|e| e.to_string())
            .and_then(|mut addrs| addrs.next().ok_or_else(|| "no address".to_owned()))
            .and_then(|addr| TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string()))
            .map(drop)
            .map_err(|cause| format!("no Kafka broker answers at {first} ({cause})"))
    }

    /// Checks every field and cross-field rule, and reports all problems at once, each naming
    /// its key.
    pub fn validate(&self) -> Result<(), BusError> {
        let mut problems = Vec::new();
        if self.bootstrap_servers.trim().is_empty() {
            problems.push("bootstrap_servers: must name at least one host:port".to_owned());
        }
        if self.client_id.trim().is_empty() {
            problems.push("client_id: must not be empty".to_owned());
        }
        if !(1..=MAX_QUEUED_KBYTES).contains(&self.queued_max_messages_kbytes) {
            problems.push(format!(
                "queued_max_messages_kbytes: {} is outside 1..={MAX_QUEUED_KBYTES}",
                self.queued_max_messages_kbytes
            ));
        }
        for (key, value, min) in [
            (
                "session_timeout",
                self.session_timeout,
                Duration::from_millis(1),
            ),
            (
                "max_poll_interval",
                self.max_poll_interval,
                Duration::from_millis(1),
            ),
            (
                "transaction_timeout",
                self.transaction_timeout,
                Duration::from_secs(1),
            ),
        ] {
            if value < min || value.as_millis() > MAX_MS {
                problems.push(format!("{key}: {value:?} is outside {min:?}..={MAX_MS}ms"));
            }
        }
        if self.session_timeout > self.max_poll_interval {
            problems.push(format!(
                "session_timeout: {:?} must not exceed max_poll_interval ({:?})",
                self.session_timeout, self.max_poll_interval
            ));
        }
        if self.transaction_timeout > BROKER_TRANSACTION_MAX {
            problems.push(format!(
                "transaction_timeout: {:?} exceeds the broker's default \
                 transaction.max.timeout.ms ({BROKER_TRANSACTION_MAX:?})",
                self.transaction_timeout
            ));
        }
        if !MESSAGE_MAX_BYTES_RANGE.contains(&self.message_max_bytes) {
            problems.push(format!(
                "message_max_bytes: {} is outside {}..={}",
                self.message_max_bytes,
                MESSAGE_MAX_BYTES_RANGE.start(),
                MESSAGE_MAX_BYTES_RANGE.end()
            ));
        }
        for key in self.librdkafka.keys() {
            if let Some((_, field)) = TYPED_KEYS.iter().find(|(k, _)| k == key) {
                problems.push(format!(
                    "librdkafka.\"{key}\": clashes with the typed field `{field}`; set that instead"
                ));
            } else if SECURITY_KEYS.contains(&key.as_str()) {
                problems.push(format!(
                    "librdkafka.\"{key}\": set through [kafka.security] instead"
                ));
            } else if MANAGED_KEYS.contains(&key.as_str()) {
                problems.push(format!(
                    "librdkafka.\"{key}\": is managed by the bus (exactly-once depends on it)"
                ));
            } else if key.trim().is_empty() {
                problems.push("librdkafka: an empty key".to_owned());
            }
        }
        problems.extend(self.incremental_rebalancing());
        problems.extend(self.security.problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(BusError::Config { problems })
        }
    }

    /// Pass-through settings that make the group rebalance incrementally (the cooperative
    /// assignor, the consumer group protocol of KIP-848). Refused: after a rebalance every
    /// consumer here drops what it read and starts again from the committed offsets of its
    /// whole new assignment, which is only right when a rebalance revokes every partition
    /// (eager rebalancing, librdkafka's default `range,roundrobin`).
    fn incremental_rebalancing(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(strategy) = self.librdkafka.get("partition.assignment.strategy")
            && strategy.to_ascii_lowercase().contains("cooperative")
        {
            problems.push(format!(
                "librdkafka.\"partition.assignment.strategy\": {strategy:?} rebalances \
                 incrementally, which exactly-once here does not support; use \"range\", \
                 \"roundrobin\" or both (the default)"
            ));
        }
        if let Some(protocol) = self.librdkafka.get("group.protocol")
            && !protocol.eq_ignore_ascii_case("classic")
        {
            problems.push(format!(
                "librdkafka.\"group.protocol\": {protocol:?} rebalances incrementally, which \
                 exactly-once here does not support; leave it \"classic\" (the default)"
            ));
        }
        problems
    }

    /// Properties every client gets: connection, identity and the pass-through map.
    pub(crate) fn common_properties(&self) -> Vec<(String, String)> {
        let mut props = vec![
            (
                "bootstrap.servers".to_owned(),
                self.bootstrap_servers.clone(),
            ),
            ("client.id".to_owned(), self.client_id.clone()),
            // Topics are created explicitly with their partition count; a topic that springs
            // into existence with the broker's default of one partition would silently
            // serialise a whole stage.
            ("allow.auto.create.topics".to_owned(), "false".to_owned()),
        ];
        props.extend(self.security.properties());
        props.extend(self.librdkafka.iter().map(|(k, v)| (k.clone(), v.clone())));
        props
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        KafkaConfig::default().validate().unwrap();
    }

    #[test]
    fn parses_durations_and_pass_through() {
        let text = r#"
            bootstrap_servers = "broker-1:9092,broker-2:9092"
            session_timeout = "10s"
            transaction_timeout = "30s"
            [librdkafka]
            "linger.ms" = "5"
        "#;
        let config: KafkaConfig = toml::from_str(text).unwrap();
        assert_eq!(config.session_timeout, Duration::from_secs(10));
        assert_eq!(config.transaction_timeout, Duration::from_secs(30));
        assert_eq!(config.librdkafka["linger.ms"], "5");
        assert_eq!(config.queued_max_messages_kbytes, 16_384);
        config.validate().unwrap();
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = toml::from_str::<KafkaConfig>("bootstrap = \"x:1\"").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_its_key() {
        let mut config = KafkaConfig {
            client_id: String::new(),
            queued_max_messages_kbytes: 0,
            session_timeout: Duration::from_secs(600),
            message_max_bytes: 10,
            ..KafkaConfig::default()
        };
        config
            .librdkafka
            .insert("session.timeout.ms".into(), "1000".into());
        config
            .librdkafka
            .insert("enable.auto.commit".into(), "true".into());
        config.librdkafka.insert("linger.ms".into(), "5".into());
        let Err(BusError::Config { problems }) = config.validate() else {
            panic!("expected a configuration error");
        };
        let text = problems.join("\n");
        for needle in [
            "client_id",
            "queued_max_messages_kbytes",
            "session_timeout: 600s must not exceed max_poll_interval",
            "message_max_bytes",
            "librdkafka.\"session.timeout.ms\": clashes with the typed field `session_timeout`",
            "librdkafka.\"enable.auto.commit\": is managed by the bus",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert!(
            !text.contains("linger.ms"),
            "a free key was refused:\n{text}"
        );
        assert_eq!(problems.len(), 6, "{text}");
    }

    #[test]
    fn incremental_rebalancing_is_refused_and_eager_assignors_are_not() {
        let mut config = KafkaConfig::default();
        for strategy in ["range", "roundrobin", "range,roundrobin"] {
            config
                .librdkafka
                .insert("partition.assignment.strategy".into(), strategy.into());
            assert!(config.validate().is_ok(), "{strategy}");
        }
        config.librdkafka.insert(
            "partition.assignment.strategy".into(),
            "cooperative-sticky".into(),
        );
        config
            .librdkafka
            .insert("group.protocol".into(), "consumer".into());
        let Err(BusError::Config { problems }) = config.validate() else {
            panic!("expected a configuration error");
        };
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("\"cooperative-sticky\" rebalances incrementally"));
        assert!(problems[1].contains("librdkafka.\"group.protocol\""));
    }
}
