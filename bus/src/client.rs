//! The clients services use: [`Bus`] (topic admin and client factory), [`Producer`],
//! [`TransactionalProducer`], [`Consumer`], and the values they exchange
//! ([`DeliveryHandle`], [`GroupMetadata`]). Each is an enum over the two backends.

use std::fmt;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use orstream_shell::{Backoff, retry};
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::error::{BusError, ErrorKind};
use crate::kafka::{self, DeliveryOutcome};
use crate::memory;
use crate::message::{Delivery, Message, Offsets, Record, TopicPartition};

/// Which implementation a client runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// A Kafka cluster, through librdkafka.
    Kafka,
    /// The in-process bus.
    Memory,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Kafka => "Kafka",
            Backend::Memory => "in-process",
        }
    }
}

/// Entry point: creates topics and the clients that produce and consume them. Cheap to clone;
/// clones share the same cluster connection settings (Kafka) or the same topics (in-process).
#[derive(Clone)]
pub struct Bus {
    inner: BusInner,
}

#[derive(Clone)]
enum BusInner {
    Kafka(Arc<kafka::KafkaBus>),
    Memory(memory::MemoryBus),
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("backend", &self.backend())
            .finish()
    }
}

impl Bus {
    /// A bus on a Kafka cluster. Validates `config` (every problem at once) and creates the
    /// admin client; nothing connects until the first request.
    pub fn kafka(config: KafkaConfig) -> Result<Self, BusError> {
        Ok(Self {
            inner: BusInner::Kafka(Arc::new(kafka::KafkaBus::new(config)?)),
        })
    }

    /// A new, empty in-process bus.
    pub fn memory() -> Self {
        Self {
            inner: BusInner::Memory(memory::MemoryBus::default()),
        }
    }

    /// Which backend this bus runs on.
    pub fn backend(&self) -> Backend {
        match self.inner {
            BusInner::Kafka(_) => Backend::Kafka,
            BusInner::Memory(_) => Backend::Memory,
        }
    }

    /// Creates `topic` with `partitions` partitions. Idempotent: a topic that already exists
    /// is accepted as it is (its partition count is not changed).
    pub fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
        timeout: Duration,
    ) -> Result<(), BusError> {
        self.create_topic_retained(topic, partitions, None, timeout)
    }

    /// Like [`Bus::create_topic`], keeping messages for `retention` (Kafka's `retention.ms`;
    /// `None`: the broker's default). Set at creation only: an existing topic keeps its own.
    pub fn create_topic_retained(
        &self,
        topic: &str,
        partitions: u32,
        retention: Option<Duration>,
        timeout: Duration,
    ) -> Result<(), BusError> {
        match &self.inner {
            BusInner::Kafka(k) => k.create_topic(topic, partitions, retention, timeout),
            BusInner::Memory(m) => m.create_topic(topic, partitions, retention),
        }
    }

    /// Creates a compacted `topic` (Kafka's `cleanup.policy=compact`): the latest message of
    /// each key is kept for good, older ones are cleaned up. For state kept on the bus, one
    /// message per key. Idempotent, as [`Bus::create_topic`]; an existing topic keeps its
    /// policy. In process every message is kept (a reader takes the latest per key anyway).
    pub fn create_compacted_topic(
        &self,
        topic: &str,
        partitions: u32,
        timeout: Duration,
    ) -> Result<(), BusError> {
        match &self.inner {
            BusInner::Kafka(k) => k.create_topic_with(topic, partitions, None, true, timeout),
            BusInner::Memory(m) => m.create_topic(topic, partitions, None),
        }
    }

    /// [`Bus::create_topic_retained`] for each `(topic, retention)` of `topics`, waiting for
    /// as long as it takes while the broker is away: a retriable failure is retried after
    /// `backoff`, and `waiting` is told of it (the topic, the error, the try's number from 0)
    /// so the service can beat liveness and say why it waits. A service that creates its
    /// topics this way comes up whichever of it and the broker starts first. False when
    /// `shutdown` came first; a failure that retrying cannot mend is returned.
    pub fn create_topics_waiting(
        &self,
        topics: &[(&str, Option<Duration>)],
        partitions: u32,
        timeout: Duration,
        backoff: Backoff,
        shutdown: &CancellationToken,
        mut waiting: impl FnMut(&str, &BusError, u32),
    ) -> Result<bool, BusError> {
        for &(topic, retention) in topics {
            let created = retry(
                backoff,
                shutdown,
                || self.create_topic_retained(topic, partitions, retention, timeout),
                BusError::is_retriable,
                |error, attempt| waiting(topic, error, attempt),
            )?;
            if created.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// How long `topic` keeps its messages, as its own setting says (`None`: it has none and
    /// follows the broker's default). The in-process bus keeps every message for its life and
    /// reports the retention the topic was created with.
    pub fn topic_retention(
        &self,
        topic: &str,
        timeout: Duration,
    ) -> Result<Option<Duration>, BusError> {
        match &self.inner {
            BusInner::Kafka(k) => k.topic_retention(topic, timeout),
            BusInner::Memory(m) => m.topic_retention(topic),
        }
    }

    /// The partitions of `topic`, in order.
    pub fn partitions(
        &self,
        topic: &str,
        timeout: Duration,
    ) -> Result<Vec<TopicPartition>, BusError> {
        match &self.inner {
            BusInner::Kafka(k) => k.partitions(topic, timeout),
            BusInner::Memory(m) => m.partitions(topic),
        }
    }

    /// A new (idempotent, non-transactional) producer.
    pub fn producer(&self) -> Result<Producer, BusError> {
        Ok(Producer {
            inner: match &self.inner {
                BusInner::Kafka(k) => ProducerInner::Kafka(k.producer()?),
                BusInner::Memory(m) => ProducerInner::Memory(m.producer()),
            },
        })
    }

    /// A new (idempotent, non-transactional) producer whose messages never time out: one the
    /// broker has not acknowledged stays queued, and is retried, as long as the broker is away.
    /// For sources that must lose nothing and can wait (archives); the queue still bounds what
    /// a caller can enqueue. On the in-process bus every producer is like this.
    pub fn patient_producer(&self) -> Result<Producer, BusError> {
        Ok(Producer {
            inner: match &self.inner {
                BusInner::Kafka(k) => ProducerInner::Kafka(k.patient_producer()?),
                BusInner::Memory(m) => ProducerInner::Memory(m.producer()),
            },
        })
    }

    /// A new transactional producer. Call [`TransactionalProducer::init`] before the first
    /// transaction; that fences any earlier producer with the same `transactional_id`.
    pub fn transactional_producer(
        &self,
        transactional_id: &str,
    ) -> Result<TransactionalProducer, BusError> {
        Ok(TransactionalProducer {
            inner: match &self.inner {
                BusInner::Kafka(k) => TxInner::Kafka(k.transactional_producer(transactional_id)?),
                BusInner::Memory(m) => TxInner::Memory(m.transactional_producer(transactional_id)),
            },
        })
    }

    /// A new consumer in `group`; it joins the group on [`Consumer::subscribe`].
    pub fn consumer(&self, group: &str) -> Result<Consumer, BusError> {
        self.consumer_reporting(group, None)
    }

    /// A new consumer in `group` that reports `client_id` to the group instead of the bus's
    /// (Kafka's `client.id`), so the other members can tell who is in the group
    /// ([`Bus::group_members`]).
    pub fn consumer_as(&self, group: &str, client_id: &str) -> Result<Consumer, BusError> {
        self.consumer_reporting(group, Some(client_id))
    }

    fn consumer_reporting(
        &self,
        group: &str,
        client_id: Option<&str>,
    ) -> Result<Consumer, BusError> {
        Ok(Consumer {
            inner: match &self.inner {
                BusInner::Kafka(k) => ConsumerInner::Kafka(k.consumer(group, client_id)?),
                BusInner::Memory(m) => ConsumerInner::Memory(m.consumer(group, client_id)),
            },
        })
    }

    /// The members of `group` now: those that joined and have neither left nor missed their
    /// session timeout. Empty when the group has no members or does not exist.
    pub fn group_members(
        &self,
        group: &str,
        timeout: Duration,
    ) -> Result<Vec<GroupMember>, BusError> {
        match &self.inner {
            BusInner::Kafka(k) => k.group_members(group, timeout),
            BusInner::Memory(m) => Ok(m.group_members(group)),
        }
    }
}

/// One member of a consumer group, as the group lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The client id it reported (the bus's, or the one given to [`Bus::consumer_as`]).
    pub client_id: String,
    /// The host it connects from, as the broker saw it (empty on the in-process bus).
    pub host: String,
}

/// Where a sent message will land, once the broker has acknowledged it.
#[must_use = "a delivery handle is the only way to learn whether the message was delivered"]
pub struct DeliveryHandle {
    inner: DeliveryInner,
}

enum DeliveryInner {
    Ready(DeliveryOutcome),
    Waiting {
        receiver: mpsc::Receiver<DeliveryOutcome>,
        topic: String,
    },
}

impl fmt::Debug for DeliveryHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            DeliveryInner::Ready(outcome) => {
                f.debug_tuple("DeliveryHandle").field(outcome).finish()
            }
            DeliveryInner::Waiting { topic, .. } => f
                .debug_struct("DeliveryHandle")
                .field("waiting_on", topic)
                .finish(),
        }
    }
}

impl DeliveryHandle {
    fn ready(outcome: DeliveryOutcome) -> Self {
        Self {
            inner: DeliveryInner::Ready(outcome),
        }
    }

    fn waiting(receiver: mpsc::Receiver<DeliveryOutcome>, topic: &str) -> Self {
        Self {
            inner: DeliveryInner::Waiting {
                receiver,
                topic: topic.to_owned(),
            },
        }
    }

    /// Blocks until the message is acknowledged (or failed), at most `timeout`.
    pub fn wait(self, timeout: Duration) -> Result<Delivery, BusError> {
        match self.inner {
            DeliveryInner::Ready(outcome) => outcome,
            DeliveryInner::Waiting { receiver, topic } => match receiver.recv_timeout(timeout) {
                Ok(outcome) => outcome,
                Err(mpsc::RecvTimeoutError::Timeout) => Err(BusError::Timeout {
                    what: format!("delivery of a message to topic {topic}"),
                    timeout,
                }),
                // The producer went away without reporting (its delivery report was dropped).
                Err(mpsc::RecvTimeoutError::Disconnected) => Err(BusError::Produce {
                    topic,
                    partition: None,
                    reason: "the producer was closed before reporting the delivery".to_owned(),
                    kind: ErrorKind::Retriable,
                }),
            },
        }
    }
}

/// An idempotent producer: per key, messages land once and in order.
///
/// Dropping it waits up to the configured `close_timeout` for queued messages; call
/// [`Producer::flush`] at shutdown to know they all got out.
pub struct Producer {
    inner: ProducerInner,
}

enum ProducerInner {
    Kafka(kafka::KafkaProducer),
    Memory(memory::MemoryProducer),
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer").finish_non_exhaustive()
    }
}

impl Producer {
    /// Enqueues `record`. When the client's queue is full this blocks up to `queue_timeout`
    /// for room (then fails, retriably); pass `Duration::ZERO` never to block. The handle
    /// tells where the message landed.
    pub fn send(
        &self,
        record: &Record,
        queue_timeout: Duration,
    ) -> Result<DeliveryHandle, BusError> {
        match &self.inner {
            ProducerInner::Kafka(p) => Ok(DeliveryHandle::waiting(
                p.send(record, queue_timeout)?,
                &record.topic,
            )),
            ProducerInner::Memory(p) => Ok(DeliveryHandle::ready(p.send(record))),
        }
    }

    /// Blocks until every message sent so far is acknowledged, at most `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        match &self.inner {
            ProducerInner::Kafka(p) => p.flush(timeout),
            ProducerInner::Memory(_) => Ok(()),
        }
    }

    /// Learns where `topic`'s partitions are now, so the first sends to it do not wait for
    /// that (a latency measurement's first messages, a camera's first frames).
    pub fn prepare(&self, topic: &str, timeout: Duration) -> Result<(), BusError> {
        match &self.inner {
            ProducerInner::Kafka(p) => p.prepare(topic, timeout),
            ProducerInner::Memory(_) => Ok(()),
        }
    }
}

/// A transactional producer: messages and consumer offsets become visible to read_committed
/// readers together, at [`commit`](Self::commit), or never.
///
/// Errors say what to do: [`ErrorKind::Abortable`] -> [`abort`](Self::abort) and redo from the
/// committed offsets; [`ErrorKind::Fatal`] -> drop this producer and create a new one with the
/// same transactional id (fenced, or a commit/abort that timed out). Dropping it with a
/// transaction open aborts that transaction.
pub struct TransactionalProducer {
    inner: TxInner,
}

enum TxInner {
    Kafka(kafka::KafkaTxProducer),
    Memory(memory::MemoryTxProducer),
}

impl fmt::Debug for TransactionalProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionalProducer")
            .finish_non_exhaustive()
    }
}

impl TransactionalProducer {
    /// Registers the transactional id with the coordinator, fencing any earlier producer that
    /// used it and aborting the transaction it left open. The first call on a fresh cluster
    /// can take seconds (the coordinator creates its state topic).
    pub fn init(&self, timeout: Duration) -> Result<(), BusError> {
        match &self.inner {
            TxInner::Kafka(p) => p.init(timeout),
            TxInner::Memory(p) => p.init(),
        }
    }

    /// Opens a transaction (a local step; it does not talk to the broker).
    pub fn begin(&self) -> Result<(), BusError> {
        match &self.inner {
            TxInner::Kafka(p) => p.begin(),
            TxInner::Memory(p) => p.begin(),
        }
    }

    /// Sends `record` inside the open transaction; see [`Producer::send`] for `queue_timeout`.
    pub fn send(
        &self,
        record: &Record,
        queue_timeout: Duration,
    ) -> Result<DeliveryHandle, BusError> {
        match &self.inner {
            TxInner::Kafka(p) => Ok(DeliveryHandle::waiting(
                p.send(record, queue_timeout)?,
                &record.topic,
            )),
            TxInner::Memory(p) => Ok(DeliveryHandle::ready(p.send(record))),
        }
    }

    /// Adds consumer offsets (next offset to read, per partition) to the open transaction;
    /// they are committed for the consumer's group only if the transaction commits. Take
    /// `group` fresh from [`Consumer::group_metadata`] for every transaction: it carries the
    /// group generation, which a rebalance changes.
    pub fn send_offsets_to_transaction(
        &self,
        offsets: &Offsets,
        group: &GroupMetadata,
        timeout: Duration,
    ) -> Result<(), BusError> {
        match (&self.inner, &group.inner) {
            (TxInner::Kafka(p), GroupMetaInner::Kafka(meta)) => {
                p.send_offsets(offsets, meta, timeout)
            }
            (TxInner::Memory(p), GroupMetaInner::Memory(meta)) => p.send_offsets(offsets, meta),
            (TxInner::Kafka(_), _) => Err(mismatch(Backend::Memory, Backend::Kafka)),
            (TxInner::Memory(_), _) => Err(mismatch(Backend::Kafka, Backend::Memory)),
        }
    }

    /// Delivers everything sent in the transaction and commits it, at most `timeout`.
    pub fn commit(&self, timeout: Duration) -> Result<(), BusError> {
        match &self.inner {
            TxInner::Kafka(p) => p.commit(timeout),
            TxInner::Memory(p) => p.commit(),
        }
    }

    /// Aborts the open transaction: its messages are never shown to read_committed readers and
    /// its offsets are not committed.
    pub fn abort(&self, timeout: Duration) -> Result<(), BusError> {
        match &self.inner {
            TxInner::Kafka(p) => p.abort(timeout),
            TxInner::Memory(p) => p.abort(),
        }
    }

    /// Blocks until every message sent so far is acknowledged (not committed), at most
    /// `timeout`.
    pub fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        match &self.inner {
            TxInner::Kafka(p) => p.flush(timeout),
            TxInner::Memory(_) => Ok(()),
        }
    }
}

fn mismatch(given: Backend, expected: Backend) -> BusError {
    BusError::BackendMismatch {
        what: "group metadata",
        given: given.name(),
        expected: expected.name(),
    }
}

/// A consumer's group membership as a transaction needs it (group, generation, member).
pub struct GroupMetadata {
    inner: GroupMetaInner,
}

enum GroupMetaInner {
    Kafka(rdkafka::consumer::ConsumerGroupMetadata),
    Memory(memory::MemberMeta),
}

impl fmt::Debug for GroupMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            GroupMetaInner::Kafka(_) => f.write_str("GroupMetadata(Kafka)"),
            GroupMetaInner::Memory(meta) => f.debug_tuple("GroupMetadata").field(meta).finish(),
        }
    }
}

/// A group consumer with explicit offsets: nothing is committed unless the caller commits it
/// (directly or through a transaction), and only committed transactional messages are read.
///
/// Poll it regularly, also while busy: group membership and rebalances are served inside
/// [`poll`](Self::poll). Dropping it leaves the group, handing its partitions to the others.
pub struct Consumer {
    inner: ConsumerInner,
}

enum ConsumerInner {
    Kafka(kafka::KafkaConsumer),
    Memory(memory::MemoryConsumer),
}

impl fmt::Debug for Consumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.group())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// The consumer's group id.
    pub fn group(&self) -> &str {
        match &self.inner {
            ConsumerInner::Kafka(c) => c.group(),
            ConsumerInner::Memory(c) => c.group(),
        }
    }

    /// Joins the group for `topics` (replacing any earlier subscription). Partitions arrive
    /// with later polls; each starts at the group's committed offset, or at the beginning.
    pub fn subscribe(&self, topics: &[&str]) -> Result<(), BusError> {
        match &self.inner {
            ConsumerInner::Kafka(c) => c.subscribe(topics),
            ConsumerInner::Memory(c) => c.subscribe(topics),
        }
    }

    /// Leaves the group's assignment (the consumer can subscribe again later).
    pub fn unsubscribe(&self) {
        match &self.inner {
            ConsumerInner::Kafka(c) => c.unsubscribe(),
            ConsumerInner::Memory(c) => c.unsubscribe(),
        }
    }

    /// The next message, waiting at most `timeout`; `None` when none came.
    pub fn poll(&self, timeout: Duration) -> Result<Option<Message>, BusError> {
        match &self.inner {
            ConsumerInner::Kafka(c) => c.poll(timeout),
            ConsumerInner::Memory(c) => c.poll(timeout),
        }
    }

    /// Commits `offsets` (next offset to read, per partition) for the group, synchronously.
    /// On Kafka this waits for the coordinator's answer, however long that takes: while no
    /// broker answers it does not return. A loop that must go on turning (health, other work)
    /// commits what is only a hint with [`commit_async`](Self::commit_async).
    pub fn commit(&self, offsets: &Offsets) -> Result<(), BusError> {
        if offsets.is_empty() {
            // librdkafka treats an empty list as an error (no offset); nothing to do is fine.
            return Ok(());
        }
        match &self.inner {
            ConsumerInner::Kafka(c) => c.commit(offsets),
            ConsumerInner::Memory(c) => c.commit(offsets),
        }
    }

    /// Starts committing `offsets` for the group and returns at once; the outcome is only
    /// logged (a failed commit is retried by the next one). For offsets that are a hint, e.g.
    /// when the truth is kept elsewhere, as the sink keeps its offsets in the database.
    pub fn commit_async(&self, offsets: &Offsets) -> Result<(), BusError> {
        if offsets.is_empty() {
            return Ok(());
        }
        match &self.inner {
            ConsumerInner::Kafka(c) => c.commit_async(offsets),
            ConsumerInner::Memory(c) => c.commit(offsets),
        }
    }

    /// The group's committed offsets for `partitions`; a partition without one is absent.
    pub fn committed(
        &self,
        partitions: &[TopicPartition],
        timeout: Duration,
    ) -> Result<Offsets, BusError> {
        if partitions.is_empty() {
            return Ok(Offsets::new());
        }
        match &self.inner {
            ConsumerInner::Kafka(c) => c.committed(partitions, timeout),
            ConsumerInner::Memory(c) => Ok(c.committed(partitions)),
        }
    }

    /// Moves the read position of an assigned partition to `offset` (e.g. back to the
    /// committed offset after an aborted transaction).
    pub fn seek(
        &self,
        partition: &TopicPartition,
        offset: i64,
        timeout: Duration,
    ) -> Result<(), BusError> {
        match &self.inner {
            ConsumerInner::Kafka(c) => c.seek(partition, offset, timeout),
            ConsumerInner::Memory(c) => c.seek(partition, offset),
        }
    }

    /// How many times this consumer's assignment has changed (partitions assigned or
    /// revoked). After a change every partition restarts from the group's committed offset,
    /// so work read before it and not yet committed must be dropped: note the count when
    /// polling a batch and, if it differs when the batch's transaction is about to commit,
    /// abort instead (its partitions may already be read by another member).
    pub fn rebalances(&self) -> u64 {
        match &self.inner {
            ConsumerInner::Kafka(c) => c.rebalances(),
            ConsumerInner::Memory(c) => c.rebalances(),
        }
    }

    /// Stops delivering messages while staying in the group: [`poll`](Self::poll) goes on
    /// serving membership and rebalances but returns no message, and partitions assigned
    /// meanwhile start paused too. For flow control: a consumer whose downstream is full
    /// pauses and keeps polling, so it never overstays `max.poll.interval.ms` and leaves its
    /// group. On Kafka the prefetched messages are dropped and fetched again on resume.
    pub fn pause(&self) -> Result<(), BusError> {
        match &self.inner {
            ConsumerInner::Kafka(c) => c.pause(),
            ConsumerInner::Memory(c) => {
                c.pause();
                Ok(())
            }
        }
    }

    /// Delivers messages again after [`pause`](Self::pause): each partition continues with
    /// the first message not yet delivered, so a pause neither skips nor repeats one.
    pub fn resume(&self) -> Result<(), BusError> {
        match &self.inner {
            ConsumerInner::Kafka(c) => c.resume(),
            ConsumerInner::Memory(c) => {
                c.resume();
                Ok(())
            }
        }
    }

    /// Whether the consumer is paused.
    pub fn is_paused(&self) -> bool {
        match &self.inner {
            ConsumerInner::Kafka(c) => c.is_paused(),
            ConsumerInner::Memory(c) => c.is_paused(),
        }
    }

    /// How far this consumer is behind, per assigned partition it has read from: the
    /// partition's end minus the next offset this consumer will read. On Kafka the end is the
    /// high watermark, which also counts transaction markers and open transactions (so a
    /// read_committed consumer's lag reads a little high) and is asked from the broker for each
    /// partition, bounded by `timeout`: call it now and then, not per message. In process it
    /// is the last stable offset.
    pub fn lag(&self, timeout: Duration) -> Result<Vec<(TopicPartition, i64)>, BusError> {
        match &self.inner {
            ConsumerInner::Kafka(c) => c.lag(timeout),
            ConsumerInner::Memory(c) => Ok(c.lag()),
        }
    }

    /// The end of `partition`: the offset the next message written to it will get (on Kafka
    /// the high watermark, asked from the broker within `timeout`). A stored position beyond
    /// it means the topic is not the one the position was taken from (it was recreated).
    pub fn end_offset(
        &self,
        partition: &TopicPartition,
        timeout: Duration,
    ) -> Result<i64, BusError> {
        match &self.inner {
            ConsumerInner::Kafka(c) => c.end_offset(partition, timeout),
            ConsumerInner::Memory(c) => c.end_offset(partition),
        }
    }

    /// The partitions currently assigned to this consumer, in order.
    pub fn assignment(&self) -> Result<Vec<TopicPartition>, BusError> {
        match &self.inner {
            ConsumerInner::Kafka(c) => c.assignment(),
            ConsumerInner::Memory(c) => Ok(c.assignment()),
        }
    }

    /// The consumer's current group metadata, for
    /// [`TransactionalProducer::send_offsets_to_transaction`]. Read it anew for every
    /// transaction.
    pub fn group_metadata(&self) -> Result<GroupMetadata, BusError> {
        Ok(GroupMetadata {
            inner: match &self.inner {
                ConsumerInner::Kafka(c) => GroupMetaInner::Kafka(c.group_metadata()?),
                ConsumerInner::Memory(c) => GroupMetaInner::Memory(c.group_metadata()),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}

    #[test]
    fn clients_can_move_between_threads() {
        assert_send_sync::<Bus>();
        assert_send_sync::<Producer>();
        assert_send_sync::<TransactionalProducer>();
        assert_send_sync::<Consumer>();
        assert_send_sync::<GroupMetadata>();
        // Handles move to whoever waits for them; they need not be shared.
        assert_send::<DeliveryHandle>();
        assert_send_sync::<BusError>();
    }

    #[test]
    fn group_metadata_of_the_other_backend_is_refused() {
        let kafka = Bus::kafka(KafkaConfig::default()).unwrap();
        let producer = kafka.transactional_producer("t").unwrap();
        let meta = Bus::memory()
            .consumer("g")
            .unwrap()
            .group_metadata()
            .unwrap();
        let err = producer
            .send_offsets_to_transaction(&Offsets::new(), &meta, Duration::from_millis(1))
            .unwrap_err();
        assert!(matches!(err, BusError::BackendMismatch { .. }), "{err}");
    }
}
