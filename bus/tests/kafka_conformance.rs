//! The conformance suite against a real Kafka broker at `$ORSTREAM_KAFKA_BOOTSTRAP` (default
//! `127.0.0.1:9092`), as `scripts/kafka.sh start` runs it. A broker that does not answer fails
//! every test: these tests never pass without having talked to Kafka.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

mod conformance;

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use orstream_bus::{Bus, KafkaConfig};

fn kafka_bus() -> Bus {
    let bootstrap =
        std::env::var("ORSTREAM_KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let first = bootstrap
        .split(',')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let answered = first
        .to_socket_addrs()
        .map_err(|e| e.to_string())
        .and_then(|mut addrs| addrs.next().ok_or_else(|| "no address".to_owned()))
        .and_then(|addr| {
            TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(|e| e.to_string())
        });
    if let Err(err) = answered {
        panic!(
            "no Kafka broker answers at {first} ({err}): run `scripts/kafka.sh start` \
             (or point ORSTREAM_KAFKA_BOOTSTRAP at a broker)"
        );
    }
    Bus::kafka(KafkaConfig {
        bootstrap_servers: bootstrap,
        ..KafkaConfig::default()
    })
    .unwrap()
}

conformance::conformance_tests!(kafka_bus);
