//! The conformance suite against a real Kafka broker at `$ORSTREAM_KAFKA_BOOTSTRAP` (default
//! `127.0.0.1:9092`), as `scripts/kafka.sh start` runs it. A broker that does not answer fails
//! every test: these tests never pass without having talked to Kafka.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

mod conformance;

use std::time::Duration;

use orstream_bus::{Bus, KafkaConfig};

fn kafka_bus() -> Bus {
    let config = KafkaConfig::from_env();
    if let Err(err) = config.probe(Duration::from_secs(3)) {
        panic!(
            "{err}: run `scripts/kafka.sh start` (or point ORSTREAM_KAFKA_BOOTSTRAP at a broker)"
        );
    }
    Bus::kafka(config).unwrap()
}

conformance::conformance_tests!(kafka_bus);
