//! What travels on the bus: records to produce, consumed messages, headers, partitions and
//! offsets, and the rules both backends share (topic names, key -> partition).

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;

use crate::error::BusError;

/// One partition of one topic.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: String,
    /// Partition number, from 0.
    pub partition: i32,
}

impl TopicPartition {
    /// The partition `partition` of `topic`.
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// Offsets per partition. In commits and committed offsets the value is the *next* offset to
/// read, i.e. one past the last message processed.
pub type Offsets = BTreeMap<TopicPartition, i64>;

/// Renders offsets as `topic/partition@offset` items for error messages and logs.
pub(crate) fn render_offsets(offsets: &Offsets) -> String {
    let items: Vec<String> = offsets.iter().map(|(tp, o)| format!("{tp}@{o}")).collect();
    format!("[{}]", items.join(", "))
}

/// Message headers: an ordered list of name -> bytes. Names may repeat (Kafka allows it), and
/// order is kept byte-exact through the bus.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, Vec<u8>)>,
}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a header and returns the list, for building in one expression.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.push(name, value);
        self
    }

    /// Appends a header.
    pub fn push(&mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) {
        self.entries.push((name.into(), value.into()));
    }

    /// The value of the last header named `name` (the latest one wins, as in Kafka's
    /// `lastHeader`).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.entries
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// All headers in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<N: Into<String>, V: Into<Vec<u8>>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Self {
            entries: iter
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        }
    }
}

/// A message to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Destination topic.
    pub topic: String,
    /// Partitioning key: equal keys go to the same partition, in produce order. `None` spreads
    /// messages over the partitions.
    pub key: Option<Bytes>,
    /// The message body.
    pub payload: Bytes,
    /// Headers, in order.
    pub headers: Headers,
}

impl Record {
    /// A record without key or headers.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            key: None,
            payload: payload.into(),
            headers: Headers::new(),
        }
    }

    /// Sets the partitioning key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Appends a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push(name, value);
        self
    }

    /// Replaces the headers.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }
}

/// A consumed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic it was read from.
    pub topic: String,
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
    /// Partitioning key, if it had one.
    pub key: Option<Bytes>,
    /// The body (empty for a Kafka tombstone).
    pub payload: Bytes,
    /// Headers, in the order they were produced.
    pub headers: Headers,
    /// Milliseconds since the Unix epoch: the producer's create time, or the broker's append
    /// time for topics configured so; `None` when the broker did not say.
    pub timestamp_ms: Option<i64>,
}

impl Message {
    /// The partition it came from.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(self.topic.clone(), self.partition)
    }

    /// The offset to commit once this message is processed (the next one to read).
    pub fn next_offset(&self) -> i64 {
        self.offset + 1
    }
}

/// Where a produced message landed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Delivery {
    /// Topic written to.
    pub topic: String,
    /// Partition written to.
    pub partition: i32,
    /// Offset it got.
    pub offset: i64,
}

/// Checks a topic name against Kafka's rules, so both backends refuse the same names (and
/// librdkafka never sees an interior NUL, which it cannot represent).
pub fn validate_topic_name(topic: &str) -> Result<(), BusError> {
    let reason = if topic.is_empty() {
        Some("empty")
    } else if topic == "." || topic == ".." {
        Some("\".\" and \"..\" are reserved")
    } else if topic.len() > 249 {
        Some("longer than 249 characters")
    } else if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(BusError::InvalidTopic {
            topic: topic.to_owned(),
            reason: reason.to_owned(),
        }),
        None => Ok(()),
    }
}

/// The partition a key goes to among `partitions`: Kafka's Java client rule,
/// `(murmur2(key) & 0x7fffffff) % partitions`, which the Kafka backend configures librdkafka
/// to use too (`partitioner=murmur2_random`), so both backends and every Java client agree.
///
/// # Panics
/// Never; `partitions` of 0 is treated as 1.
pub fn partition_for_key(key: &[u8], partitions: u32) -> i32 {
    let positive = murmur2(key) & 0x7fff_ffff;
    // Fits in i32: the modulus is below 2^31.
    (positive % partitions.max(1)) as i32
}

/// Kafka's murmur2 (org.apache.kafka.common.utils.Utils.murmur2), seed 0x9747b28c.
fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    // Kafka's Java code uses an int length; keys are far below 2 GiB, wrapping is harmless.
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if let Some(&first) = rest.first() {
        h ^= u32::from(first);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_java_test_vectors() {
        // From Kafka's UtilsTest.testMurmur2 (signed Java ints).
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (data, want) in cases {
            assert_eq!(
                murmur2(data) as i32,
                *want,
                "{:?}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn partition_for_key_is_stable_and_in_range() {
        for n in 1..16 {
            for key in [&b"cam-1"[..], b"", b"or-3/laparoscope"] {
                let p = partition_for_key(key, n);
                assert!((0..n as i32).contains(&p));
                assert_eq!(p, partition_for_key(key, n));
            }
        }
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        validate_topic_name("or.frames.v1").unwrap();
        validate_topic_name("or.frames.v1.dlq").unwrap();
        for bad in ["", ".", "..", "a b", "a\0b", "ü", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn headers_keep_order_and_repeats() {
        let h = Headers::new()
            .with("a", b"1".to_vec())
            .with("b", vec![0, 255])
            .with("a", b"2".to_vec());
        let all: Vec<_> = h.iter().collect();
        assert_eq!(
            all,
            vec![("a", &b"1"[..]), ("b", &[0u8, 255][..]), ("a", &b"2"[..])]
        );
        assert_eq!(h.get("a"), Some(&b"2"[..]));
        assert_eq!(h.get("c"), None);
    }
}
