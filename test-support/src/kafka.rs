//! The test broker: `$ORSTREAM_KAFKA_BOOTSTRAP`, or the project's local one.

use std::time::Duration;

use orstream_bus::{Bus, KafkaConfig};

/// How long the broker may take to answer the probe.
const PROBE: Duration = Duration::from_secs(5);

/// The broker's configuration from the environment, once it answers; panics with the way out
/// when it does not.
pub fn config() -> KafkaConfig {
    let config = KafkaConfig::from_env();
    if let Err(err) = config.probe(PROBE) {
        panic!(
            "{err}: this test needs the Kafka broker; run `scripts/kafka.sh start` (or point \
             ORSTREAM_KAFKA_BOOTSTRAP at a broker)"
        );
    }
    config
}

/// A Kafka bus on the broker of [`config`].
pub fn bus() -> Bus {
    Bus::kafka(config()).expect("Kafka bus")
}
