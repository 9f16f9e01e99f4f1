//! Input that decodes but must not be believed, and a record that no longer matches its topic:
//! the sink names what is wrong and goes on (hostile values: dead letters and anomaly rows,
//! the rest of the stream recorded), or stops with both offsets named (a topic recreated under
//! a record), never loops, never drops anything without a word.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

mod common;

use std::collections::BTreeMap;

use orstream_bus::{Bus, Record};
use orstream_proto::{BBox, FrameResult, Instance, Point, headers, topics};
use orstream_record::BackendKind;
use orstream_sink::SinkError;
use orstream_test_support::script::Script;
use orstream_test_support::topic::result_record;

use common::{Topics, config, publish, read_topic, start, store};

fn send_all(bus: &Bus, records: Vec<Record>) {
    let producer = bus.producer().unwrap();
    for record in records {
        producer
            .send(&record, common::TIMEOUT)
            .unwrap()
            .wait(common::TIMEOUT)
            .unwrap();
    }
}

/// Spoils a good result the way one hostile message did.
type Spoil = fn(&mut FrameResult);

fn tool(score: f32, x: f32) -> Instance {
    Instance {
        class_id: 1,
        label: "grasper".into(),
        category: orstream_proto::Category::Tool as i32,
        score,
        bbox: Some(BBox {
            x0: 0.1,
            y0: 0.1,
            x1: 0.3,
            y1: 0.3,
        }),
        area: 0.04,
        centroid: Some(Point { x, y: 0.2 }),
        mask: None,
    }
}

/// Each hostile result of the issue that found them, one after another in one stream among 40
/// good results before and 10 after: every hostile one is dead-lettered with its field named
/// and recorded as an `invalid_value` anomaly; every good one is stored; the sink runs on.
fn hostile_values_are_dead_lettered_and_the_rest_is_recorded(kind: BackendKind) {
    let bus = Bus::memory();
    let topics = Topics::unique();
    topics.create(&bus, 1);
    let script = Script::new("case-h", 1, 60);
    let mut records: Vec<Record> = (0..40)
        .map(|seq| result_record(&topics.results, &script.result(0, seq)))
        .collect();
    let hostile: Vec<(&str, Spoil)> = vec![
        ("instances.centroid", |r: &mut FrameResult| {
            r.instances = vec![tool(0.9, f32::NAN)]
        }),
        ("instances.centroid", |r: &mut FrameResult| {
            r.instances = vec![tool(0.9, f32::INFINITY)]
        }),
        ("instances.score", |r: &mut FrameResult| {
            r.instances = vec![tool(f32::INFINITY, 0.2)]
        }),
        ("instances.score", |r: &mut FrameResult| {
            r.instances = vec![tool(f32::NAN, 0.2)]
        }),
        ("instances.label", |r: &mut FrameResult| {
            let mut t = tool(0.9, 0.2);
            t.label = "gras\0per".into();
            r.instances = vec![t];
        }),
        ("model.name", |r: &mut FrameResult| {
            r.model.as_mut().unwrap().name = "m\0".into()
        }),
        ("instances", |r: &mut FrameResult| {
            r.instances = vec![tool(0.9, 0.2); 5_000]
        }),
    ];
    // The hostile results take seqs 40.. and are refused, so the stream's next good result
    // follows a hole: recorded as missing results, never bridged.
    for (i, (_, spoil)) in hostile.iter().enumerate() {
        let mut result = script.result(0, 40 + i as u64);
        spoil(&mut result);
        records.push(result_record(&topics.results, &result));
    }
    for seq in 47..57 {
        records.push(result_record(&topics.results, &script.result(0, seq)));
    }
    send_all(&bus, records);

    let isolated = store(kind);
    let sink = start(&bus, config(&isolated, &topics));
    sink.wait_for("every message handled", |s| s.messages >= 57);
    assert!(sink.is_running(), "hostile values never stop the sink");
    let stats = sink.stop();
    assert_eq!(stats.dead_letters, hostile.len() as u64);

    let dlq = read_topic(&bus, &topics::dlq(&topics.results), hostile.len());
    assert_eq!(dlq.len(), hostile.len());
    for (message, (field, _)) in dlq.iter().zip(&hostile) {
        let error = String::from_utf8_lossy(message.headers.get(headers::DLQ_ERROR).unwrap());
        assert!(
            error.contains(&format!("invalid field {field}")),
            "{error} names {field}"
        );
    }
    let mut s = isolated.open().unwrap();
    let kinds: BTreeMap<String, i64> = s
        .query("SELECT kind, COUNT(*) FROM anomalies GROUP BY kind", &[])
        .unwrap()
        .iter()
        .map(|r| (r[0].text().to_owned(), r[1].int()))
        .collect();
    assert_eq!(kinds.get("invalid_value"), Some(&(hostile.len() as i64)));
    let frames = s.query("SELECT COUNT(*) FROM frames", &[]).unwrap();
    assert_eq!(frames[0][0].int(), 50, "every good result is stored");
}

/// The record was read from a topic that is gone: the topic of the same name (here, on a new
/// broker) ends before the stored position. The sink stops with both offsets named instead of
/// dropping every message until the new topic reaches the old position.
fn offsets_ahead_of_the_topic_stop_the_sink_with_both_named(kind: BackendKind) {
    let topics = Topics::unique();
    let isolated = store(kind);
    let first = Bus::memory();
    topics.create(&first, 1);
    let total = publish(&first, &topics, &Script::new("case-a", 1, 50));
    let sink = start(&first, config(&isolated, &topics));
    sink.wait_for("the first topic stored", |s| s.messages >= total);
    sink.stop();

    let recreated = Bus::memory();
    topics.create(&recreated, 1);
    publish(&recreated, &topics, &Script::new("case-b", 1, 5));
    let error = start(&recreated, config(&isolated, &topics))
        .ended()
        .expect_err("a stored position beyond the topic's end stops the sink");
    let SinkError::OffsetsAhead {
        topic,
        partition,
        stored,
        end,
    } = &error
    else {
        panic!("not the offsets error: {error}");
    };
    assert_eq!((partition, stored, end), (&0, &50, &5), "{error}");
    assert_eq!(topic, &topics.results);
    assert!(
        error.to_string().contains("Offsets ahead of the topic"),
        "{error}"
    );
}

on_both_backends!(
    hostile_values_are_dead_lettered_and_the_rest_is_recorded,
    offsets_ahead_of_the_topic_stop_the_sink_with_both_named,
);
