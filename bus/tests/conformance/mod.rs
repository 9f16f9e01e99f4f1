//! The conformance suite: one set of checks that both backends must pass, written against the
//! public API only. Each backend's test file instantiates it with `conformance_tests!(factory)`,
//! where `factory()` returns a fresh `Bus`. Every check uses its own random topic and group
//! names, so checks can run in parallel against one broker.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use orstream_bus::{
    Bus, Consumer, ErrorKind, Headers, Message, Offsets, Record, TopicPartition, partition_for_key,
};
use orstream_proto::headers::{
    SCHEMA_VERSION as SCHEMA_VERSION_HEADER, TRACEPARENT as TRACEPARENT_HEADER,
};
use orstream_test_support::{names, topic};

/// Upper bound for anything awaited. Waits end as soon as their condition holds, so this only
/// bounds how long a broken backend takes to fail (group joins and the first transaction on a
/// fresh broker take seconds).
const PATIENCE: Duration = Duration::from_secs(60);
/// One poll; short so that two consumers polled in turn both keep up with their group.
const POLL: Duration = Duration::from_millis(100);

/// Generates one `#[test]` per check, each with a fresh bus from `$factory()`.
macro_rules! conformance_tests {
    ($factory:path) => {
        #[test]
        fn ordering_per_key() {
            crate::conformance::ordering_per_key(&$factory());
        }
        #[test]
        fn offsets_resume_after_restart() {
            crate::conformance::offsets_resume_after_restart(&$factory());
        }
        #[test]
        fn transactions_commit_or_vanish() {
            crate::conformance::transactions_commit_or_vanish(&$factory());
        }
        #[test]
        fn headers_round_trip() {
            crate::conformance::headers_round_trip(&$factory());
        }
        #[test]
        fn zombie_is_fenced() {
            crate::conformance::zombie_is_fenced(&$factory());
        }
        #[test]
        fn group_members_split_partitions() {
            crate::conformance::group_members_split_partitions(&$factory());
        }
        #[test]
        fn pause_holds_and_resume_continues() {
            crate::conformance::pause_holds_and_resume_continues(&$factory());
        }
        #[test]
        fn lag_counts_what_is_left_to_read() {
            crate::conformance::lag_counts_what_is_left_to_read(&$factory());
        }
        #[test]
        fn end_offset_is_where_the_next_message_goes() {
            crate::conformance::end_offset_is_where_the_next_message_goes(&$factory());
        }

        #[test]
        fn a_topic_keeps_the_retention_it_was_created_with() {
            crate::conformance::a_topic_keeps_the_retention_it_was_created_with(&$factory());
        }

        #[test]
        fn a_group_lists_its_members() {
            crate::conformance::a_group_lists_its_members(&$factory());
        }
    };
}
pub(crate) use conformance_tests;

/// A name no other test (or earlier run against the same broker) uses.
fn unique(what: &str) -> String {
    names::unique(&format!("conformance-{what}"))
}

fn new_topic(bus: &Bus, what: &str, partitions: u32) -> String {
    let topic = unique(what);
    bus.create_topic(&topic, partitions, PATIENCE).unwrap();
    // Creating again is fine (idempotent).
    bus.create_topic(&topic, partitions, PATIENCE).unwrap();
    let listed = bus.partitions(&topic, PATIENCE).unwrap();
    let expected: Vec<TopicPartition> = (0..partitions as i32)
        .map(|p| TopicPartition::new(topic.clone(), p))
        .collect();
    assert_eq!(listed, expected, "partitions of {topic}");
    topic
}

fn text(message: &Message) -> String {
    String::from_utf8(message.payload.to_vec()).unwrap()
}

/// Sends and waits for each delivery, returning where each landed.
fn send_all(bus: &Bus, records: &[Record]) -> Vec<(i32, i64)> {
    topic::publish(bus, records)
        .into_iter()
        .map(|d| (d.partition, d.offset))
        .collect()
}

/// One poll that tolerates transient errors (a broker reports some while metadata settles).
fn poll_once(consumer: &Consumer) -> Option<Message> {
    match consumer.poll(POLL) {
        Ok(message) => message,
        Err(err) if err.kind() == ErrorKind::Retriable => {
            eprintln!("transient poll error: {err}");
            None
        }
        Err(err) => panic!("poll failed: {err}"),
    }
}

/// Polls until `done(received)` holds; fails after `PATIENCE`.
fn read_until(consumer: &Consumer, done: impl Fn(&[Message]) -> bool) -> Vec<Message> {
    let start = Instant::now();
    let mut received = Vec::new();
    while !done(&received) {
        assert!(
            start.elapsed() < PATIENCE,
            "group {}: gave up after {PATIENCE:?} with {} messages: {:?}",
            consumer.group(),
            received.len(),
            received.iter().map(text).collect::<Vec<_>>()
        );
        received.extend(poll_once(consumer));
    }
    received
}

fn read_until_payload(consumer: &Consumer, last: &str) -> Vec<String> {
    let got = read_until(consumer, |m| m.last().is_some_and(|m| text(m) == last));
    got.iter().map(text).collect()
}

/// The offsets to commit after processing `messages`: one past the highest per partition.
fn next_offsets(messages: &[Message]) -> Offsets {
    let mut offsets = Offsets::new();
    for m in messages {
        let next = offsets.entry(m.topic_partition()).or_insert(0);
        *next = (*next).max(m.next_offset());
    }
    offsets
}

/// 1. Several keys interleaved over a multi-partition topic: each key's messages arrive in
///    produce order, all on one partition (the one Kafka's Java partitioner would pick).
pub fn ordering_per_key(bus: &Bus) {
    const PARTITIONS: u32 = 4;
    const KEYS: usize = 6;
    const PER_KEY: usize = 25;
    let topic = new_topic(bus, "order", PARTITIONS);
    let records: Vec<Record> = (0..PER_KEY)
        .flat_map(|seq| (0..KEYS).map(move |k| (k, seq)))
        .map(|(k, seq)| {
            Record::new(topic.clone(), format!("cam-{k}:{seq}")).with_key(format!("cam-{k}"))
        })
        .collect();
    let landed = send_all(bus, &records);
    for (record, (partition, _)) in records.iter().zip(&landed) {
        let key = record.key.as_ref().unwrap();
        assert_eq!(
            *partition,
            partition_for_key(key, PARTITIONS),
            "partition of {key:?}"
        );
    }

    let consumer = bus.consumer(&unique("order-group")).unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let got = read_until(&consumer, |m| m.len() >= records.len());
    assert_eq!(got.len(), records.len(), "extra messages");

    let mut per_key: BTreeMap<String, (BTreeSet<i32>, Vec<usize>)> = BTreeMap::new();
    for m in &got {
        let payload = text(m);
        let (key, seq) = payload.split_once(':').unwrap();
        assert_eq!(m.key.as_deref(), Some(key.as_bytes()));
        let entry = per_key.entry(key.to_owned()).or_default();
        entry.0.insert(m.partition);
        entry.1.push(seq.parse().unwrap());
    }
    assert_eq!(per_key.len(), KEYS);
    for (key, (partitions, seqs)) in per_key {
        assert_eq!(partitions.len(), 1, "{key} spread over {partitions:?}");
        assert_eq!(seqs, (0..PER_KEY).collect::<Vec<_>>(), "{key} out of order");
    }
}

/// 2. Consume some, commit, drop the consumer: a new consumer in the group starts exactly
///    after the commit; nothing skipped, nothing repeated.
pub fn offsets_resume_after_restart(bus: &Bus) {
    const TOTAL: usize = 12;
    const FIRST: usize = 5;
    let topic = new_topic(bus, "resume", 3);
    let group = unique("resume-group");
    let records: Vec<Record> = (0..TOTAL)
        .map(|i| Record::new(topic.clone(), format!("m{i}")).with_key(format!("k{}", i % 6)))
        .collect();
    send_all(bus, &records);
    let all: BTreeSet<String> = (0..TOTAL).map(|i| format!("m{i}")).collect();

    let first = {
        let consumer = bus.consumer(&group).unwrap();
        consumer.subscribe(&[&topic]).unwrap();
        let got = read_until(&consumer, |m| m.len() >= FIRST);
        let offsets = next_offsets(&got);
        consumer.commit(&offsets).unwrap();
        let partitions = bus.partitions(&topic, PATIENCE).unwrap();
        assert_eq!(consumer.committed(&partitions, PATIENCE).unwrap(), offsets);
        (got, offsets)
    };
    let (first, committed) = first;

    let consumer = bus.consumer(&group).unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let partitions = bus.partitions(&topic, PATIENCE).unwrap();
    assert_eq!(
        consumer.committed(&partitions, PATIENCE).unwrap(),
        committed
    );
    let second = read_until(&consumer, |m| m.len() >= TOTAL - FIRST);

    let first_set: BTreeSet<String> = first.iter().map(text).collect();
    let second_list: Vec<String> = second.iter().map(text).collect();
    let second_set: BTreeSet<String> = second_list.iter().cloned().collect();
    assert_eq!(
        second_set.len(),
        second_list.len(),
        "repeated within the restart: {second_list:?}"
    );
    assert!(
        first_set.is_disjoint(&second_set),
        "re-read after restart: {first_set:?} {second_set:?}"
    );
    assert_eq!(&first_set | &second_set, all, "skipped messages");
    for m in &second {
        let start = committed.get(&m.topic_partition()).copied().unwrap_or(0);
        assert!(
            m.offset >= start,
            "{} offset {} before the commit {start}",
            m.topic_partition(),
            m.offset
        );
    }
    // Each partition resumes at exactly the committed offset.
    for (tp, offset) in &committed {
        if let Some(m) = second.iter().find(|m| &m.topic_partition() == tp) {
            assert_eq!(
                m.offset, *offset,
                "{tp} did not resume at the committed offset"
            );
        }
    }
}

/// 3. An aborted transaction leaves nothing visible and commits no offsets; a committed one is
///    fully visible and moves the group's committed offset.
pub fn transactions_commit_or_vanish(bus: &Bus) {
    let input = new_topic(bus, "txn-in", 1);
    let output = new_topic(bus, "txn-out", 1);
    let group = unique("txn-group");
    let inputs: Vec<Record> = (0..4)
        .map(|i| Record::new(input.clone(), format!("in{i}")))
        .collect();
    send_all(bus, &inputs);

    let consumer = bus.consumer(&group).unwrap();
    consumer.subscribe(&[&input]).unwrap();
    let consumed = read_until(&consumer, |m| m.len() >= 2);
    let offsets = next_offsets(&consumed);
    let input_partitions = bus.partitions(&input, PATIENCE).unwrap();

    let producer = bus.transactional_producer(&unique("txn-id")).unwrap();
    producer.init(PATIENCE).unwrap();

    producer.begin().unwrap();
    for i in 0..3 {
        let _handle = producer
            .send(
                &Record::new(output.clone(), format!("aborted{i}")),
                PATIENCE,
            )
            .unwrap();
    }
    producer
        .send_offsets_to_transaction(&offsets, &consumer.group_metadata().unwrap(), PATIENCE)
        .unwrap();
    producer.abort(PATIENCE).unwrap();
    assert_eq!(
        consumer.committed(&input_partitions, PATIENCE).unwrap(),
        Offsets::new(),
        "an aborted transaction committed offsets"
    );

    producer.begin().unwrap();
    let handles: Vec<_> = (0..3)
        .map(|i| {
            producer
                .send(
                    &Record::new(output.clone(), format!("committed{i}")),
                    PATIENCE,
                )
                .unwrap()
        })
        .collect();
    producer
        .send_offsets_to_transaction(&offsets, &consumer.group_metadata().unwrap(), PATIENCE)
        .unwrap();
    producer.commit(PATIENCE).unwrap();
    for handle in handles {
        assert_eq!(handle.wait(PATIENCE).unwrap().topic, output);
    }
    assert_eq!(
        consumer.committed(&input_partitions, PATIENCE).unwrap(),
        offsets
    );

    // A plain message after the transactions marks the end of what the reader must see.
    send_all(bus, &[Record::new(output.clone(), "end")]);
    let reader = bus.consumer(&unique("txn-reader")).unwrap();
    reader.subscribe(&[&output]).unwrap();
    assert_eq!(
        read_until_payload(&reader, "end"),
        ["committed0", "committed1", "committed2", "end"]
    );
}

/// 4. Headers survive the round trip byte-exact, in order, repeats included.
pub fn headers_round_trip(bus: &Bus) {
    let topic = new_topic(bus, "headers", 1);
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let headers = Headers::new()
        .with(SCHEMA_VERSION_HEADER, b"1".to_vec())
        .with(TRACEPARENT_HEADER, traceparent.as_bytes().to_vec())
        .with("binary", vec![0u8, 1, 2, 0x7f, 0x80, 0xfe, 0xff, 0])
        .with("empty", Vec::new())
        .with("repeat", b"first".to_vec())
        .with("repeat", b"second".to_vec());
    let key = vec![0u8, 0xff, b'k'];
    let payload: Vec<u8> = (0..=255u8).collect();
    let with_headers = Record::new(topic.clone(), payload.clone())
        .with_key(key.clone())
        .with_headers(headers.clone());
    let without = Record::new(topic.clone(), "plain");
    send_all(bus, &[with_headers, without]);

    let consumer = bus.consumer(&unique("headers-group")).unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let got = read_until(&consumer, |m| m.len() >= 2);
    assert_eq!(got[0].headers, headers);
    assert_eq!(
        got[0].headers.get(TRACEPARENT_HEADER),
        Some(traceparent.as_bytes())
    );
    assert_eq!(got[0].headers.get(SCHEMA_VERSION_HEADER), Some(&b"1"[..]));
    assert_eq!(got[0].headers.get("repeat"), Some(&b"second"[..]));
    assert_eq!(got[0].key.as_deref(), Some(&key[..]));
    assert_eq!(&got[0].payload[..], &payload[..]);
    assert!(
        got[0].timestamp_ms.is_some_and(|t| t > 0),
        "timestamp {:?}",
        got[0].timestamp_ms
    );
    assert!(got[1].headers.is_empty());
    assert_eq!(got[1].key, None);
}

/// 5. A second transactional producer with the same transactional id fences the first: the
///    first one's commit fails fatally and its transaction never becomes visible.
pub fn zombie_is_fenced(bus: &Bus) {
    let topic = new_topic(bus, "fence", 1);
    let id = unique("fence-id");

    let zombie = bus.transactional_producer(&id).unwrap();
    zombie.init(PATIENCE).unwrap();
    zombie.begin().unwrap();
    zombie
        .send(&Record::new(topic.clone(), "zombie"), PATIENCE)
        .unwrap()
        .wait(PATIENCE)
        .unwrap();

    let successor = bus.transactional_producer(&id).unwrap();
    successor.init(PATIENCE).unwrap();

    let err = zombie
        .commit(PATIENCE)
        .expect_err("the fenced producer committed");
    assert_eq!(err.kind(), ErrorKind::Fatal, "{err}");
    assert!(
        err.to_string().contains(&id),
        "error does not name the transactional id: {err}"
    );
    assert!(err.is_fenced(), "not recognised as fenced: {err}");
    eprintln!("fenced as expected: {err}");
    drop(zombie);

    successor.begin().unwrap();
    let _handle = successor
        .send(&Record::new(topic.clone(), "successor"), PATIENCE)
        .unwrap();
    successor.commit(PATIENCE).unwrap();

    send_all(bus, &[Record::new(topic.clone(), "end")]);
    let reader = bus.consumer(&unique("fence-reader")).unwrap();
    reader.subscribe(&[&topic]).unwrap();
    assert_eq!(read_until_payload(&reader, "end"), ["successor", "end"]);
}

/// 6. Two consumers in one group split the partitions and together read every message
///    exactly once, each only from its own partitions.
pub fn group_members_split_partitions(bus: &Bus) {
    const PARTITIONS: u32 = 4;
    const TOTAL: usize = 40;
    let topic = new_topic(bus, "split", PARTITIONS);
    let group = unique("split-group");
    let all: Vec<TopicPartition> = bus.partitions(&topic, PATIENCE).unwrap();

    let members = [bus.consumer(&group).unwrap(), bus.consumer(&group).unwrap()];
    for m in &members {
        m.subscribe(&[&topic]).unwrap();
    }
    // Poll both in turn until the group settles on a split (Kafka rebalances only while the
    // members poll). Nothing is produced yet, so nothing is read twice across a rebalance.
    let start = Instant::now();
    let assignments = loop {
        for m in &members {
            assert!(poll_once(m).is_none(), "a message before any was produced");
        }
        let a: Vec<Vec<TopicPartition>> = members.iter().map(|m| m.assignment().unwrap()).collect();
        let union: BTreeSet<&TopicPartition> = a.iter().flatten().collect();
        let disjoint = a[0].iter().all(|tp| !a[1].contains(tp));
        if !a[0].is_empty() && !a[1].is_empty() && disjoint && union.len() == all.len() {
            break a;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the group did not settle: {a:?}"
        );
    };

    for m in &members {
        assert!(
            m.rebalances() > 0,
            "an assignment arrived without counting as a rebalance"
        );
    }

    let records: Vec<Record> = (0..TOTAL)
        .map(|i| Record::new(topic.clone(), format!("m{i}")).with_key(format!("key-{}", i % 20)))
        .collect();
    let landed = send_all(bus, &records);
    let used: BTreeSet<i32> = landed.iter().map(|(p, _)| *p).collect();
    for a in &assignments {
        assert!(
            a.iter().any(|tp| used.contains(&tp.partition)),
            "no message for {a:?}: keys chosen badly"
        );
    }

    let mut received: Vec<Vec<Message>> = vec![Vec::new(), Vec::new()];
    let start = Instant::now();
    while received.iter().map(Vec::len).sum::<usize>() < TOTAL {
        assert!(
            start.elapsed() < PATIENCE,
            "read {:?} of {TOTAL}",
            received.iter().map(Vec::len).collect::<Vec<_>>()
        );
        for (i, m) in members.iter().enumerate() {
            received[i].extend(poll_once(m));
        }
    }
    let mut seen = BTreeSet::new();
    for (i, messages) in received.iter().enumerate() {
        assert!(!messages.is_empty(), "member {i} read nothing");
        for m in messages {
            assert!(
                assignments[i].contains(&m.topic_partition()),
                "member {i} read {} outside its assignment",
                m.topic_partition()
            );
            assert!(seen.insert(text(m)), "{} read twice", text(m));
        }
    }
    let expected: BTreeSet<String> = (0..TOTAL).map(|i| format!("m{i}")).collect();
    assert_eq!(seen, expected);
}

/// Polls for `how_long` and fails on any message: the consumer is paused.
fn assert_nothing_while_paused(consumer: &Consumer, how_long: Duration) {
    let start = Instant::now();
    while start.elapsed() < how_long {
        if let Some(m) = poll_once(consumer) {
            panic!("paused consumer delivered {} at {}", text(&m), m.offset);
        }
    }
}

/// 7. A paused consumer stays in its group but delivers nothing, also from partitions
///    assigned while paused; after resume every message arrives exactly once, in order per
///    partition, whether it was produced before the pause (prefetched) or during it.
pub fn pause_holds_and_resume_continues(bus: &Bus) {
    const PARTITIONS: u32 = 2;
    let topic = new_topic(bus, "pause", PARTITIONS);
    let group = unique("pause-group");
    let record =
        |i: usize| Record::new(topic.clone(), format!("m{i}")).with_key(format!("k{}", i % 4));
    send_all(bus, &(0..10).map(record).collect::<Vec<_>>());

    // Paused before it has partitions: the assignment arrives paused.
    let consumer = bus.consumer(&group).unwrap();
    consumer.pause().unwrap();
    assert!(consumer.is_paused());
    consumer.subscribe(&[&topic]).unwrap();
    let start = Instant::now();
    while consumer.assignment().unwrap().len() < PARTITIONS as usize {
        assert!(start.elapsed() < PATIENCE, "no assignment while paused");
        if let Some(m) = poll_once(&consumer) {
            panic!("paused consumer delivered {} before resume", text(&m));
        }
    }
    assert_nothing_while_paused(&consumer, Duration::from_millis(500));

    consumer.resume().unwrap();
    assert!(!consumer.is_paused());
    let mut received = read_until(&consumer, |m| m.len() >= 4);

    // Paused mid-stream, with more produced meanwhile.
    consumer.pause().unwrap();
    assert_nothing_while_paused(&consumer, Duration::from_millis(500));
    send_all(bus, &(10..16).map(record).collect::<Vec<_>>());
    assert_nothing_while_paused(&consumer, Duration::from_millis(1500));

    consumer.resume().unwrap();
    let start = Instant::now();
    while received.len() < 16 {
        assert!(start.elapsed() < PATIENCE, "read {} of 16", received.len());
        received.extend(poll_once(&consumer));
    }
    assert_nothing_while_paused(&consumer, Duration::from_millis(300));

    let payloads: Vec<String> = received.iter().map(text).collect();
    let unique_payloads: BTreeSet<&String> = payloads.iter().collect();
    assert_eq!(unique_payloads.len(), 16, "repeated or lost: {payloads:?}");
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for m in &received {
        by_partition.entry(m.partition).or_default().push(m.offset);
    }
    for (partition, offsets) in by_partition {
        let expected: Vec<i64> = (0..offsets.len() as i64).collect();
        assert_eq!(
            offsets, expected,
            "partition {partition} out of order or with holes"
        );
    }
}

/// 8. Lag per partition is what is left to read: it falls as the consumer reads and is zero
///    once it has read everything; an asynchronous commit of the end lands.
pub fn lag_counts_what_is_left_to_read(bus: &Bus) {
    let topic = new_topic(bus, "lag", 1);
    let group = unique("lag-group");
    send_all(
        bus,
        &(0..10)
            .map(|i| Record::new(topic.clone(), format!("m{i}")))
            .collect::<Vec<_>>(),
    );
    let consumer = bus.consumer(&group).unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let read = read_until(&consumer, |m| m.len() >= 4);
    let tp = TopicPartition::new(topic.clone(), 0);
    let lag = consumer.lag(PATIENCE).unwrap();
    assert_eq!(lag, vec![(tp.clone(), 10 - read.len() as i64)]);
    let rest = read_until(&consumer, |m| m.len() >= 10 - read.len());
    assert_eq!(consumer.lag(PATIENCE).unwrap(), vec![(tp.clone(), 0)]);

    // An asynchronous commit returns at once and lands soon after (served while polling).
    let offsets = next_offsets(&rest);
    consumer.commit_async(&offsets).unwrap();
    let start = Instant::now();
    while consumer
        .committed(std::slice::from_ref(&tp), PATIENCE)
        .unwrap()
        != offsets
    {
        assert!(
            start.elapsed() < PATIENCE,
            "the asynchronous commit never landed"
        );
        assert!(poll_once(&consumer).is_none());
    }
}

/// A partition's end offset is the offset its next message gets, whether or not the consumer
/// is assigned it: what the sink compares its stored positions with.
pub fn end_offset_is_where_the_next_message_goes(bus: &Bus) {
    let topic = new_topic(bus, "end", 2);
    let consumer = bus.consumer(&unique("end-group")).unwrap();
    let written = partition_for_key(b"k", 2);
    let (full, empty) = (
        TopicPartition::new(topic.clone(), written),
        TopicPartition::new(topic.clone(), 1 - written),
    );
    assert_eq!(consumer.end_offset(&full, PATIENCE).unwrap(), 0);
    let sent = send_all(
        bus,
        &(0..3)
            .map(|i| Record::new(topic.clone(), format!("m{i}")).with_key("k"))
            .collect::<Vec<_>>(),
    );
    assert_eq!(sent.last(), Some(&(written, 2)));
    assert_eq!(consumer.end_offset(&full, PATIENCE).unwrap(), 3);
    assert_eq!(consumer.end_offset(&empty, PATIENCE).unwrap(), 0);
}

/// A member that joined shows in `group_members` with the client id it was given, until it
/// leaves; a group nobody joined has no members.
pub fn a_group_lists_its_members(bus: &Bus) {
    let topic = new_topic(bus, "members", 1);
    let group = unique("members-group");
    assert_eq!(bus.group_members(&group, PATIENCE).unwrap(), Vec::new());
    let client_id = unique("worker-a");
    let consumer = bus.consumer_as(&group, &client_id).unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let start = Instant::now();
    while consumer.assignment().unwrap().is_empty() {
        assert!(poll_once(&consumer).is_none());
        assert!(start.elapsed() < PATIENCE, "never assigned");
    }
    let members = bus.group_members(&group, PATIENCE).unwrap();
    assert_eq!(
        members
            .iter()
            .map(|m| m.client_id.as_str())
            .collect::<Vec<_>>(),
        vec![client_id.as_str()],
        "{members:?}"
    );
    drop(consumer);
    let start = Instant::now();
    while !bus.group_members(&group, PATIENCE).unwrap().is_empty() {
        assert!(start.elapsed() < PATIENCE, "the member never left");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A topic created with a retention reports it; one created without has none of its own.
pub fn a_topic_keeps_the_retention_it_was_created_with(bus: &Bus) {
    let hour = Duration::from_secs(3600);
    let short = unique("retained");
    bus.create_topic_retained(&short, 1, Some(hour), PATIENCE)
        .unwrap();
    assert_eq!(bus.topic_retention(&short, PATIENCE).unwrap(), Some(hour));
    let plain = new_topic(bus, "plain", 1);
    assert_eq!(bus.topic_retention(&plain, PATIENCE).unwrap(), None);
}
