//! The conformance suite against a real Kafka broker at `$ORSTREAM_KAFKA_BOOTSTRAP` (default
//! `127.0.0.1:9092`), as `scripts/kafka.sh start` runs it. A broker that does not answer fails
//! every test: these tests never pass without having talked to Kafka.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

mod conformance;

conformance::conformance_tests!(orstream_test_support::kafka::bus);
