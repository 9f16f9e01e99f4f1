//! Smoke test of the real stack: a v1 `Frame` with its headers round-trips through the Kafka
//! broker that `scripts/kafka.sh start` runs, byte-exact, and decodes to the same message.

use std::time::Duration;

use orstream_bus::{Offsets, Record};
use orstream_proto::{ClockSource, Encoding, Frame, SCHEMA_VERSION, headers};
use orstream_test_support::names::unique;
use orstream_test_support::wait::wait_for;
use orstream_test_support::{kafka, topic};

const TIMEOUT: Duration = Duration::from_secs(30);

#[test]
fn a_frame_round_trips_through_kafka_with_headers() {
    let bus = kafka::bus();
    let topic = unique("test.frames");
    bus.create_topic(&topic, 3, TIMEOUT).unwrap();

    let frame = Frame {
        stream_id: "or-3-laparoscope".into(),
        case_id: "case-0042".into(),
        session_epoch: 7,
        seq: 12_345,
        capture_time_ns: 1_795_000_000_123_456_789,
        clock_source: ClockSource::CameraNtp as i32,
        pts_ns: 411_111_111,
        width: 1920,
        height: 1080,
        encoding: Encoding::Jpeg as i32,
        data: (0..200_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into(),
        redaction: None,
    };
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let record = Record::new(topic.clone(), orstream_proto::encode(&frame))
        .with_key(frame.stream_id.clone().into_bytes())
        .with_header(headers::SCHEMA_VERSION, SCHEMA_VERSION)
        .with_header(headers::TRACEPARENT, traceparent);
    let producer = bus.producer().unwrap();
    let delivery = producer
        .send(&record, TIMEOUT)
        .unwrap()
        .wait(TIMEOUT)
        .unwrap();
    assert_eq!(
        delivery.partition,
        orstream_bus::partition_for_key(frame.stream_id.as_bytes(), 3)
    );

    let consumer = topic::reader(&bus, &topic);
    let message = wait_for("the frame to come back", TIMEOUT, || {
        consumer.poll(Duration::from_millis(500)).unwrap()
    });
    assert_eq!(
        (message.partition, message.offset),
        (delivery.partition, delivery.offset)
    );
    assert_eq!(message.key.as_deref(), Some(frame.stream_id.as_bytes()));
    assert_eq!(
        message.headers.get(headers::SCHEMA_VERSION),
        Some(SCHEMA_VERSION.as_bytes())
    );
    assert_eq!(
        message.headers.get(headers::TRACEPARENT),
        Some(traceparent.as_bytes())
    );
    let decoded: Frame = orstream_proto::decode(&message.payload).unwrap();
    assert_eq!(decoded, frame);
    consumer
        .commit(&Offsets::from([(
            message.topic_partition(),
            message.next_offset(),
        )]))
        .unwrap();
}
