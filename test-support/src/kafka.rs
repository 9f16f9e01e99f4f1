//! The test broker: `$ORSTREAM_KAFKA_BOOTSTRAP`, or the project's local one.

use std::time::Duration;

use orstream_bus::{Bus, KafkaConfig};

/// How long the broker may take to answer the probe.
const PROBE: Duration = Duration::from_secs(5);

/// The default settings pointed at the test broker, `$ORSTREAM_KAFKA_BOOTSTRAP` when it is set
/// (the services themselves never read that variable). Not probed.
pub fn settings() -> KafkaConfig {
    let mut config = KafkaConfig::default();
    if let Ok(bootstrap) = std::env::var("ORSTREAM_KAFKA_BOOTSTRAP") {
        config.bootstrap_servers = bootstrap;
    }
    config
}

/// The broker's configuration from the environment ([`settings`]), once it answers; panics
/// with the way out when it does not.
pub fn config() -> KafkaConfig {
    let config = settings();
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
