//! The sink against the real broker (`scripts/kafka.sh start`) and PostgreSQL
//! (`scripts/postgres.sh start`): the scripted record end to end, and resuming from the
//! store's offsets when the group's are ahead (the seek after a real group assignment).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests state expectations this way

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use orstream_bus::Offsets;
use orstream_proto::{SurgicalEvent, TrackFrame};
use orstream_record::{BackendKind, query};
use orstream_sink::derive::StreamState;
use orstream_sink::derive::{Derived, Rules};
use orstream_test_support::script::Script;
use orstream_test_support::topic;

use common::{Topics, config, expected, expected_ids, publish, read_topic, start, store};

#[test]
fn the_scripted_record_through_kafka_into_postgres() {
    let bus = orstream_test_support::kafka::bus();
    let topics = Topics::unique();
    topics.create(&bus, 3);
    let script = Script::new("case-k", 3, 300);
    let total = publish(&bus, &topics, &script);
    let isolated = store(BackendKind::Postgres);
    let config = config(&isolated, &topics);
    let rules = Rules::from(&config.derive);
    let sink = start(&bus, config);
    sink.wait_for("every message stored", |s| s.messages >= total);
    let expected = expected(&script, &rules);
    let tracks = expected
        .iter()
        .filter(|o| matches!(o, Derived::Track(_)))
        .count();
    let track_frames: BTreeSet<(String, u64, u64)> = expected
        .iter()
        .filter_map(|o| match o {
            Derived::Tracked(f) => Some((f.stream_id.clone(), f.epoch, f.seq)),
            _ => None,
        })
        .collect();
    assert!(
        tracks > 0 && !track_frames.is_empty(),
        "the script has tool tracks"
    );
    sink.wait_for("every event and track frame published", |s| {
        s.published >= s.presences + s.gaps + s.tracks + track_frames.len() as u64
    });
    let stats = sink.stop();
    assert_eq!(stats.messages, total);
    assert_eq!(stats.tracks, tracks as u64);

    let (presences, gaps) = expected_ids(&expected);
    let mut s = isolated.open().unwrap();
    let timeline = query::timeline::<StreamState>(&mut s, "case-k")
        .unwrap()
        .unwrap();
    let got: BTreeSet<String> = timeline.events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(got, presences.keys().cloned().collect());
    assert_eq!(timeline.gaps.len(), gaps.len());
    assert_eq!(timeline.tracks.len(), tracks);

    let n_events = presences.len() + gaps.len() + tracks;
    let published = read_topic(&bus, &topics.events, n_events);
    let ids: BTreeSet<String> = topic::decode_all::<SurgicalEvent>(&published)
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(ids.len(), published.len(), "no event published twice");
    assert_eq!(ids.len(), n_events);

    // Per-frame track assignments, keyed by stream, each frame once.
    let published = read_topic(&bus, &topics.tracks, track_frames.len());
    let frames: Vec<(String, u64, u64)> = published
        .iter()
        .map(|m| {
            let f = orstream_proto::decode::<TrackFrame>(&m.payload).unwrap();
            assert_eq!(m.key.as_deref(), Some(f.stream_id.as_bytes()));
            (f.stream_id, f.session_epoch, f.seq)
        })
        .collect();
    assert_eq!(
        frames.len(),
        track_frames.len(),
        "no track frame published twice"
    );
    assert_eq!(frames.into_iter().collect::<BTreeSet<_>>(), track_frames);
}

#[test]
fn a_group_ahead_of_the_store_is_moved_back_to_the_stores_offsets() {
    let bus = orstream_test_support::kafka::bus();
    let topics = Topics::unique();
    topics.create(&bus, 2);
    let script = Script::new("case-g", 2, 150);
    let total = publish(&bus, &topics, &script);
    let isolated = store(BackendKind::Postgres);
    let config = config(&isolated, &topics);
    {
        // Read everything as the group and commit its ends, as a sink whose database was
        // lost or restored from an older backup would have.
        let consumer = bus.consumer(&config.group_id).unwrap();
        consumer
            .subscribe(&[&topics.results, &topics.streams])
            .unwrap();
        let deadline = std::time::Instant::now() + common::TIMEOUT;
        let mut ends = Offsets::new();
        let mut read = 0;
        while read < total {
            assert!(
                std::time::Instant::now() < deadline,
                "read {read} of {total}"
            );
            if let Some(m) = consumer.poll(Duration::from_millis(200)).unwrap() {
                ends.insert(m.topic_partition(), m.next_offset());
                read += 1;
            }
        }
        consumer.commit(&ends).unwrap();
        assert_eq!(
            consumer
                .committed(&ends.keys().cloned().collect::<Vec<_>>(), common::TIMEOUT)
                .unwrap(),
            ends
        );
    }
    let sink = start(&bus, config);
    sink.wait_for("every message", |s| s.messages >= total);
    assert_eq!(sink.stop().results, 300);
}
