//! The Kafka backend, on librdkafka through rdkafka's blocking clients.
//!
//! - producers are `ThreadedProducer`s: a background thread serves delivery reports, so a
//!   caller learns each message's partition and offset without polling; they are idempotent
//!   (`enable.idempotence`, `acks=all`) and partition keys with `murmur2_random`, the Java
//!   clients' rule, which the in-process backend implements too;
//! - consumers are `BaseConsumer`s, read_committed, with automatic commits and automatic offset
//!   stores off: offsets move only through `commit` or a transaction. Rebalance callbacks run
//!   inside `poll`, so a consumer must be polled regularly (see `max_poll_interval`);
//! - transactions use librdkafka's transactional API; a commit or abort that fails without
//!   asking for an abort is reported as fatal, so the caller recreates the producer (its
//!   `init` bumps the epoch and fences whatever the old one left);
//! - topics are created through the admin API with the configured partition count, the
//!   broker's default replication factor and `max.message.bytes` = `message_max_bytes`.

use std::collections::BTreeSet;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rdkafka::admin::{
    AdminClient, AdminOptions, ConfigSource, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, ConsumerGroupMetadata, Rebalance,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::error::{BusError, ErrorKind};
use crate::message::{
    Delivery, Headers, Message, Offsets, Record, TopicPartition, render_offsets,
    validate_topic_name,
};

/// Outcome of one delivery, sent from librdkafka's delivery report to the waiting handle.
pub(crate) type DeliveryOutcome = Result<Delivery, BusError>;
type DeliverySender = mpsc::SyncSender<DeliveryOutcome>;

/// What a sent message carries to its delivery report: where to tell the outcome, and when it
/// was sent (for `messaging.client.operation.duration`).
struct Pending {
    sender: DeliverySender,
    sent_at: Instant,
}

/// How long a send waits between tries while librdkafka's queue is full; it serves delivery
/// reports meanwhile, which is what frees the queue.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_millis(10);
/// How long topic creation waits between looks at the metadata for the new topic.
const METADATA_BACKOFF: Duration = Duration::from_millis(50);

/// Classifies a librdkafka error code.
fn code_kind(code: RDKafkaErrorCode) -> ErrorKind {
    use RDKafkaErrorCode as C;
    match code {
        C::QueueFull
        | C::MessageTimedOut
        | C::OperationTimedOut
        | C::RequestTimedOut
        | C::TimedOutQueue
        | C::AllBrokersDown
        | C::BrokerTransportFailure
        | C::Resolve
        | C::NodeUpdate
        | C::ISRInsufficient
        | C::LeaderNotAvailable
        | C::NotLeaderForPartition
        | C::UnknownTopicOrPartition
        | C::UnknownTopic
        | C::UnknownPartition
        | C::BrokerNotAvailable
        | C::ReplicaNotAvailable
        | C::NetworkException
        | C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend
        | C::CoordinatorLoadInProgress
        | C::CoordinatorNotAvailable
        | C::NotCoordinator
        | C::WaitingForCoordinator
        | C::RebalanceInProgress
        | C::ConcurrentTransactions
        | C::KafkaStorageError
        | C::FencedLeaderEpoch
        | C::UnknownLeaderEpoch
        | C::NotController
        | C::InProgress
        | C::PreviousInProgress
        | C::Retry
        | C::WaitCache => ErrorKind::Retriable,
        // The group moved on (or the transaction was aborted under the message): the work since
        // the last commit will be redone from the committed offsets.
        // PollExceeded: the application did not poll within max.poll.interval (it waited on a
        // hung dependency) and left its group; the next poll joins it again.
        C::IllegalGeneration
        | C::UnknownMemberId
        | C::AssignmentLost
        | C::PollExceeded
        | C::PurgeQueue
        | C::PurgeInflight => ErrorKind::Abortable,
        _ => ErrorKind::Fatal,
    }
}

/// Classifies an rdkafka error, trusting librdkafka's own verdict on transaction errors.
fn kafka_kind(err: &KafkaError) -> ErrorKind {
    match err {
        KafkaError::Transaction(e) if e.is_fatal() => ErrorKind::Fatal,
        KafkaError::Transaction(e) if e.txn_requires_abort() => ErrorKind::Abortable,
        KafkaError::Transaction(e) if e.is_retriable() => ErrorKind::Retriable,
        KafkaError::Transaction(_) | KafkaError::MessageConsumptionFatal(_) => ErrorKind::Fatal,
        // rdkafka only keeps librdkafka's text for seeks; the usual cause is a partition whose
        // fetcher has not started yet right after an assignment.
        KafkaError::Seek(_) => ErrorKind::Retriable,
        // rdkafka gives no code for an admin operation's error (`rdkafka_error_code` is None),
        // though it holds one: without this, a broker away while a topic is created (timed
        // out, transport failure) was fatal, and a service started before the broker exited.
        KafkaError::AdminOp(code) => code_kind(*code),
        other => other
            .rdkafka_error_code()
            .map_or(ErrorKind::Fatal, code_kind),
    }
}

/// librdkafka log level matching what the tracing subscriber wants to see.
fn log_level() -> RDKafkaLogLevel {
    if tracing::enabled!(target: "librdkafka", tracing::Level::DEBUG) {
        RDKafkaLogLevel::Debug
    } else if tracing::enabled!(target: "librdkafka", tracing::Level::INFO) {
        RDKafkaLogLevel::Info
    } else {
        RDKafkaLogLevel::Warning
    }
}

fn forward_log(client: &str, level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", client, facility, "{message}");
        }
        RDKafkaLogLevel::Warning => {
            tracing::warn!(target: "librdkafka", client, facility, "{message}")
        }
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", client, facility, "{message}");
        }
        RDKafkaLogLevel::Debug => {
            tracing::debug!(target: "librdkafka", client, facility, "{message}")
        }
    }
}

/// Context of admin clients: librdkafka's logs and errors go to tracing.
struct LogContext {
    name: String,
}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward_log(&self.name, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", client = %self.name, %error, reason);
    }
}

/// Context of producers: hands each delivery report to the handle waiting for it.
struct DeliveryContext {
    name: String,
    /// `messaging.client.sent.messages`, counted at each delivery report.
    sent: opentelemetry::metrics::Counter<u64>,
    /// `messaging.client.operation.duration` of `send`: sent -> acknowledged (or failed).
    duration: opentelemetry::metrics::Histogram<f64>,
}

impl DeliveryContext {
    fn new(name: String) -> Self {
        let meter = crate::metrics::meter();
        Self {
            name,
            sent: crate::metrics::MESSAGING_SENT.build(&meter),
            duration: crate::metrics::MESSAGING_OPERATION_DURATION.build(&meter),
        }
    }

    /// Counts one delivery report of a message sent to `topic`; `error` names the class of a
    /// failure.
    fn record(&self, topic: &str, error: Option<&'static str>, took: Duration) {
        use crate::metrics::{attr, value};
        use opentelemetry::KeyValue;
        let mut attributes = vec![
            KeyValue::new(attr::MESSAGING_SYSTEM, value::KAFKA),
            KeyValue::new(attr::MESSAGING_DESTINATION_NAME, topic.to_owned()),
        ];
        if let Some(error) = error {
            attributes.push(KeyValue::new(attr::ERROR_TYPE, error));
        }
        self.sent.add(1, &attributes);
        attributes.push(KeyValue::new(attr::MESSAGING_OPERATION_NAME, "send"));
        self.duration.record(took.as_secs_f64(), &attributes);
    }
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward_log(&self.name, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", producer = %self.name, %error, reason);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Pending>;

    fn delivery(&self, result: &DeliveryResult<'_>, pending: Self::DeliveryOpaque) {
        let took = pending.sent_at.elapsed();
        let outcome = match result {
            Ok(message) => {
                self.record(message.topic(), None, took);
                Ok(Delivery {
                    topic: message.topic().to_owned(),
                    partition: message.partition(),
                    offset: message.offset(),
                })
            }
            Err((error, message)) => {
                self.record(message.topic(), Some(error_type(error)), took);
                let err = BusError::Produce {
                    topic: message.topic().to_owned(),
                    partition: (message.partition() >= 0).then(|| message.partition()),
                    reason: error.to_string(),
                    kind: kafka_kind(error),
                };
                // Logged here as well: fire-and-forget senders never look at their handle.
                tracing::warn!(producer = %self.name, %err, "delivery failed");
                Err(err)
            }
        };
        // A dropped handle means nobody waits for this delivery; that is allowed.
        let _ = pending.sender.try_send(outcome);
    }
}

/// Context of consumers: logs and counts rebalances, which librdkafka runs inside `poll`.
struct GroupContext {
    group: String,
    rebalances: AtomicU64,
    /// Set by `pause`: partitions assigned while it is set are paused on arrival.
    paused: AtomicBool,
    /// Partitions this consumer paused and has not resumed. librdkafka keeps a partition's
    /// pause across a revoke, so one handed back after `resume` is resumed on arrival.
    paused_partitions: Mutex<BTreeSet<(String, i32)>>,
}

impl GroupContext {
    fn paused_set(&self) -> MutexGuard<'_, BTreeSet<(String, i32)>> {
        self.paused_partitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Pauses `tpl` if the consumer is paused, else resumes those of it left paused earlier.
    fn apply_pause(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let keys = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition()))
            .collect::<Vec<_>>();
        let mut set = self.paused_set();
        let outcome = if self.paused.load(Ordering::SeqCst) {
            set.extend(keys);
            consumer.pause(tpl)
        } else {
            let stale: Vec<_> = keys.into_iter().filter(|k| set.remove(k)).collect();
            if stale.is_empty() {
                return;
            }
            let mut list = TopicPartitionList::with_capacity(stale.len());
            for (topic, partition) in &stale {
                list.add_partition(topic, *partition);
            }
            consumer.resume(&list)
        };
        if let Err(error) = outcome {
            tracing::warn!(group = %self.group, %error, "pause/resume of new partitions");
        }
    }
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        forward_log(&self.group, level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(target: "librdkafka", group = %self.group, %error, reason);
    }
}

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if !matches!(rebalance, Rebalance::Error(_)) {
            self.rebalances.fetch_add(1, Ordering::SeqCst);
        }
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(group = %self.group, partitions = %render_tpl(tpl), "assigned");
                self.apply_pause(consumer, tpl);
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(group = %self.group, partitions = %render_tpl(tpl), "revoked");
            }
            Rebalance::Error(error) => tracing::warn!(group = %self.group, %error, "rebalance"),
        }
    }
}

fn render_tpl(tpl: &TopicPartitionList) -> String {
    let items: Vec<String> = tpl
        .elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect();
    items.join(",")
}

fn tpl_from_offsets(offsets: &Offsets) -> Result<TopicPartitionList, KafkaError> {
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for (tp, offset) in offsets {
        tpl.add_partition_offset(&tp.topic, tp.partition, Offset::Offset(*offset))?;
    }
    Ok(tpl)
}

fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

/// A Kafka cluster as seen by the bus: its configuration and an admin client.
pub(crate) struct KafkaBus {
    config: KafkaConfig,
    admin: AdminClient<LogContext>,
}

impl KafkaBus {
    pub(crate) fn new(config: KafkaConfig) -> Result<Self, BusError> {
        config.validate()?;
        let admin = client_config(&config, &[])
            .create_with_context(LogContext {
                name: format!("{} admin", config.client_id),
            })
            .map_err(|e| BusError::Client {
                client: "admin client".to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self { config, admin })
    }

    /// The topic's own `retention.ms`, if it has one (not the broker's default).
    pub(crate) fn topic_retention(
        &self,
        topic: &str,
        timeout: Duration,
    ) -> Result<Option<Duration>, BusError> {
        validate_topic_name(topic)?;
        let error = |reason: String, kind| BusError::Admin {
            topic: topic.to_owned(),
            op: "describe configs",
            reason,
            kind,
        };
        let options = AdminOptions::new().request_timeout(Some(timeout));
        let results = futures::executor::block_on(
            self.admin
                .describe_configs([&ResourceSpecifier::Topic(topic)], &options),
        )
        .map_err(|e| error(e.to_string(), kafka_kind(&e)))?;
        let resource = results
            .into_iter()
            .next()
            .ok_or_else(|| error("no answer".to_owned(), ErrorKind::Retriable))?
            .map_err(|code| error(code.to_string(), code_kind(code)))?;
        Ok(resource
            .get("retention.ms")
            .filter(|entry| matches!(entry.source, ConfigSource::DynamicTopic))
            .and_then(|entry| entry.value.as_deref()?.parse::<u64>().ok())
            .map(Duration::from_millis))
    }

    pub(crate) fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
        retention: Option<Duration>,
        timeout: Duration,
    ) -> Result<(), BusError> {
        self.create_topic_with(topic, partitions, retention, false, timeout)
    }

    /// [`Self::create_topic`], compacted when `compact`.
    pub(crate) fn create_topic_with(
        &self,
        topic: &str,
        partitions: u32,
        retention: Option<Duration>,
        compact: bool,
        timeout: Duration,
    ) -> Result<(), BusError> {
        validate_topic_name(topic)?;
        let error = |reason: String, kind| BusError::Admin {
            topic: topic.to_owned(),
            op: "create",
            reason,
            kind,
        };
        let count = i32::try_from(partitions)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                error(
                    format!("partition count {partitions} is outside 1..={}", i32::MAX),
                    ErrorKind::Fatal,
                )
            })?;
        let max_bytes = self.config.message_max_bytes.to_string();
        // -1: the broker's default.replication.factor, so the same code suits one node and a
        // production cluster.
        let retention_ms = retention.map(millis);
        let mut new_topic = NewTopic::new(topic, count, TopicReplication::Fixed(-1))
            .set("max.message.bytes", &max_bytes);
        if let Some(ms) = &retention_ms {
            new_topic = new_topic.set("retention.ms", ms);
        }
        if compact {
            new_topic = new_topic.set("cleanup.policy", "compact");
        }
        let started = Instant::now();
        let options = AdminOptions::new()
            .operation_timeout(Some(timeout))
            .request_timeout(Some(timeout));
        let results = futures::executor::block_on(self.admin.create_topics([&new_topic], &options))
            .map_err(|e| error(e.to_string(), kafka_kind(&e)))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(error(code.to_string(), code_kind(code))),
            }
        }
        // The controller has the topic now, but the broker's metadata cache learns of it a
        // moment later; return only once clients can see it with a leader for every partition,
        // so a subscribe or `partitions` right after this call does not race the creation.
        loop {
            let remaining = timeout.saturating_sub(started.elapsed());
            let last = match self.metadata(topic, remaining) {
                Ok(partitions)
                    if !partitions.is_empty()
                        && partitions.iter().all(|(_, leader)| *leader >= 0) =>
                {
                    return Ok(());
                }
                Ok(_) => "created, but not every partition has a leader yet".to_owned(),
                Err(err) if err.is_retriable() => err.to_string(),
                Err(err) => return Err(err),
            };
            if remaining < METADATA_BACKOFF {
                return Err(error(
                    format!("not usable within {timeout:?}: {last}"),
                    ErrorKind::Retriable,
                ));
            }
            std::thread::sleep(METADATA_BACKOFF);
        }
    }

    /// Partition ids and their leaders (-1: none) of `topic`, from the broker's metadata.
    fn metadata(&self, topic: &str, timeout: Duration) -> Result<Vec<(i32, i32)>, BusError> {
        let error = |reason: String, kind| BusError::Admin {
            topic: topic.to_owned(),
            op: "list partitions",
            reason,
            kind,
        };
        let started = Instant::now();
        let metadata = match self.admin.inner().fetch_metadata(Some(topic), timeout) {
            Ok(metadata) => metadata,
            // After the broker restarts, the long-lived admin client was seen failing every
            // fetch for minutes while new clients connected at once: ask a fresh client once
            // before calling the broker away.
            Err(e) if kafka_kind(&e) == ErrorKind::Retriable => {
                let fresh: Result<AdminClient<LogContext>, KafkaError> =
                    client_config(&self.config, &[]).create_with_context(LogContext {
                        name: format!("{} admin (fresh)", self.config.client_id),
                    });
                let left = timeout.saturating_sub(started.elapsed());
                fresh
                    .and_then(|client| client.inner().fetch_metadata(Some(topic), left))
                    .map_err(|_| error(e.to_string(), kafka_kind(&e)))?
            }
            Err(e) => return Err(error(e.to_string(), kafka_kind(&e))),
        };
        let Some(found) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Err(error(
                "not in the broker's metadata".to_owned(),
                ErrorKind::Retriable,
            ));
        };
        if let Some(err) = found.error() {
            let code = RDKafkaErrorCode::from(err);
            return Err(error(code.to_string(), code_kind(code)));
        }
        let mut partitions: Vec<(i32, i32)> = found
            .partitions()
            .iter()
            .map(|p| (p.id(), p.leader()))
            .collect();
        partitions.sort_unstable();
        Ok(partitions)
    }

    pub(crate) fn partitions(
        &self,
        topic: &str,
        timeout: Duration,
    ) -> Result<Vec<TopicPartition>, BusError> {
        validate_topic_name(topic)?;
        Ok(self
            .metadata(topic, timeout)?
            .into_iter()
            .map(|(p, _)| TopicPartition::new(topic, p))
            .collect())
    }

    pub(crate) fn producer(&self) -> Result<KafkaProducer, BusError> {
        let name = self.config.client_id.clone();
        let core = ProducerCore::new(&self.config, name, &[])?;
        Ok(KafkaProducer { core })
    }

    /// `message.timeout.ms = 0`: librdkafka's "never": delivery is retried until it succeeds
    /// or the producer is closed.
    pub(crate) fn patient_producer(&self) -> Result<KafkaProducer, BusError> {
        let name = format!("{} (patient)", self.config.client_id);
        let core = ProducerCore::new(
            &self.config,
            name,
            &[("message.timeout.ms", "0".to_owned())],
        )?;
        Ok(KafkaProducer { core })
    }

    pub(crate) fn transactional_producer(
        &self,
        transactional_id: &str,
    ) -> Result<KafkaTxProducer, BusError> {
        let extra = [
            ("transactional.id", transactional_id.to_owned()),
            (
                "transaction.timeout.ms",
                millis(self.config.transaction_timeout),
            ),
        ];
        let core = ProducerCore::new(&self.config, transactional_id.to_owned(), &extra)?;
        Ok(KafkaTxProducer {
            core,
            transactional_id: transactional_id.to_owned(),
            in_transaction: AtomicBool::new(false),
        })
    }

    /// The group's members, from the group coordinator (DescribeGroups).
    pub(crate) fn group_members(
        &self,
        group: &str,
        timeout: Duration,
    ) -> Result<Vec<crate::GroupMember>, BusError> {
        let list = self
            .admin
            .inner()
            .fetch_group_list(Some(group), timeout)
            .map_err(|e| BusError::Consumer {
                group: group.to_owned(),
                op: "describe group",
                reason: e.to_string(),
                kind: kafka_kind(&e),
            })?;
        Ok(list
            .groups()
            .iter()
            .filter(|g| g.name() == group)
            .flat_map(|g| g.members())
            .map(|m| crate::GroupMember {
                client_id: m.client_id().to_owned(),
                host: m.client_host().to_owned(),
            })
            .collect())
    }

    pub(crate) fn consumer(
        &self,
        group: &str,
        client_id: Option<&str>,
    ) -> Result<KafkaConsumer, BusError> {
        let extra = [
            ("group.id", group.to_owned()),
            ("isolation.level", "read_committed".to_owned()),
            ("enable.auto.commit", "false".to_owned()),
            ("enable.auto.offset.store", "false".to_owned()),
            (
                "queued.max.messages.kbytes",
                self.config.queued_max_messages_kbytes.to_string(),
            ),
            ("session.timeout.ms", millis(self.config.session_timeout)),
            (
                "max.poll.interval.ms",
                millis(self.config.max_poll_interval),
            ),
        ];
        let defaults = [("auto.offset.reset", "earliest")];
        let mut cc = client_config(&self.config, &defaults);
        for (k, v) in extra {
            cc.set(k, v);
        }
        if let Some(client_id) = client_id {
            cc.set("client.id", client_id);
        }
        let inner = cc
            .create_with_context(GroupContext {
                group: group.to_owned(),
                rebalances: AtomicU64::new(0),
                paused: AtomicBool::new(false),
                paused_partitions: Mutex::new(BTreeSet::new()),
            })
            .map_err(|e| BusError::Client {
                client: format!("consumer of group {group}"),
                reason: e.to_string(),
            })?;
        Ok(KafkaConsumer {
            inner: ManuallyDrop::new(inner),
            group: group.to_owned(),
            close_timeout: self.config.close_timeout,
        })
    }
}

/// A client configuration: overridable defaults first, then the common properties (which
/// include the pass-through map, so it wins over the defaults).
fn client_config(config: &KafkaConfig, defaults: &[(&str, &str)]) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set_log_level(log_level());
    for (k, v) in defaults {
        cc.set(*k, *v);
    }
    for (k, v) in config.common_properties() {
        cc.set(k, v);
    }
    cc
}

/// The `error.type` of a failed delivery: a short fixed word, never the message.
fn error_type(error: &KafkaError) -> &'static str {
    match error.rdkafka_error_code() {
        Some(RDKafkaErrorCode::MessageTimedOut) => "timeout",
        Some(RDKafkaErrorCode::MessageSizeTooLarge) => "message_too_large",
        Some(RDKafkaErrorCode::TopicAuthorizationFailed) => "not_authorized",
        Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight) => "purged",
        Some(RDKafkaErrorCode::InvalidProducerEpoch | RDKafkaErrorCode::ProducerFenced) => "fenced",
        _ => "_OTHER",
    }
}

/// The producers' default `linger.ms` (the pass-through map may set another).
const LINGER_MS: &str = "1";
/// How often a flush or a commit looks whether the producer's messages are all acknowledged.
const DELIVERY_LOOK: Duration = Duration::from_micros(250);

/// What plain and transactional producers share.
struct ProducerCore {
    inner: ThreadedProducer<DeliveryContext>,
    name: String,
    close_timeout: Duration,
}

impl ProducerCore {
    fn new(config: &KafkaConfig, name: String, extra: &[(&str, String)]) -> Result<Self, BusError> {
        // librdkafka waits up to 5 ms for a batch to fill; at video rates the batches fill
        // anyway while earlier requests are in flight, and every result's visibility would pay
        // the wait (a transaction's commit flushes, but sends made before it still linger).
        let defaults = [("partitioner", "murmur2_random"), ("linger.ms", LINGER_MS)];
        let mut cc = client_config(config, &defaults);
        cc.set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.max.bytes", config.message_max_bytes.to_string());
        for (k, v) in extra {
            cc.set(*k, v);
        }
        let inner = cc
            .create_with_context(DeliveryContext::new(name.clone()))
            .map_err(|e| BusError::Client {
                client: format!("producer {name}"),
                reason: e.to_string(),
            })?;
        Ok(Self {
            inner,
            name,
            close_timeout: config.close_timeout,
        })
    }

    fn send(
        &self,
        record: &Record,
        timeout: Duration,
    ) -> Result<mpsc::Receiver<DeliveryOutcome>, BusError> {
        validate_topic_name(&record.topic)?;
        let (sender, receiver) = mpsc::sync_channel(1);
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in record.headers.iter() {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let pending = Box::new(Pending {
            sender,
            sent_at: Instant::now(),
        });
        let mut base: BaseRecord<'_, [u8], [u8], Box<Pending>> =
            BaseRecord::with_opaque_to(&record.topic, pending)
                .payload(&record.payload[..])
                .headers(headers);
        if let Some(key) = &record.key {
            base = base.key(&key[..]);
        }
        let deadline = Instant::now().checked_add(timeout);
        loop {
            match self.inner.send(base) {
                Ok(()) => return Ok(receiver),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if deadline.is_none_or(|d| Instant::now() < d) =>
                {
                    base = back;
                    self.inner.poll(QUEUE_FULL_BACKOFF);
                }
                Err((error, _)) => {
                    return Err(BusError::Produce {
                        topic: record.topic.clone(),
                        partition: None,
                        reason: error.to_string(),
                        kind: kafka_kind(&error),
                    });
                }
            }
        }
    }

    /// Waits, looking every [`DELIVERY_LOOK`], until no message is unacknowledged or
    /// `timeout` passes. rdkafka's own flush (and the flush that starts its transaction
    /// commit), while a message is unacknowledged, polls in steps of 100 ms that the
    /// acknowledgement does not cut short (the threaded producer's own thread takes the
    /// delivery reports): every flush or commit with a message in flight took 100 ms more
    /// than its round trips. After this wait theirs has nothing left to wait for.
    /// Returns what is left of `timeout`.
    fn wait_delivered(&self, timeout: Duration) -> Duration {
        let deadline = Instant::now() + timeout;
        while self.inner.in_flight_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(DELIVERY_LOOK);
        }
        deadline.saturating_duration_since(Instant::now())
    }

    fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        let left = self.wait_delivered(timeout);
        self.inner.flush(left).map_err(|e| BusError::Flush {
            producer: self.name.clone(),
            reason: format!(
                "{e} ({} messages still queued)",
                self.inner.in_flight_count()
            ),
            kind: kafka_kind(&e),
        })
    }
}

impl Drop for ProducerCore {
    fn drop(&mut self) {
        // rdkafka purges whatever is still queued when the producer is dropped: deliver it first.
        if let Err(err) = self.flush(self.close_timeout) {
            tracing::error!(%err, "producer closed with undelivered messages; they are lost");
        }
    }
}

/// A plain (idempotent, non-transactional) Kafka producer.
pub(crate) struct KafkaProducer {
    core: ProducerCore,
}

impl KafkaProducer {
    pub(crate) fn send(
        &self,
        record: &Record,
        timeout: Duration,
    ) -> Result<mpsc::Receiver<DeliveryOutcome>, BusError> {
        self.core.send(record, timeout)
    }

    pub(crate) fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        self.core.flush(timeout)
    }

    pub(crate) fn prepare(&self, topic: &str, timeout: Duration) -> Result<(), BusError> {
        validate_topic_name(topic)?;
        self.core
            .inner
            .client()
            .fetch_metadata(Some(topic), timeout)
            .map(|_| ())
            .map_err(|e| BusError::Produce {
                topic: topic.to_owned(),
                partition: None,
                reason: format!("reading its metadata: {e}"),
                kind: kafka_kind(&e),
            })
    }
}

/// A transactional Kafka producer.
pub(crate) struct KafkaTxProducer {
    core: ProducerCore,
    transactional_id: String,
    /// Whether a transaction is open, so drop can abort it instead of leaving it to hold back
    /// read_committed readers until `transaction_timeout`.
    in_transaction: AtomicBool,
}

impl KafkaTxProducer {
    fn error(&self, op: &'static str, err: &KafkaError, kind: ErrorKind) -> BusError {
        BusError::Transaction {
            transactional_id: self.transactional_id.clone(),
            op,
            reason: err.to_string(),
            kind,
        }
    }

    /// Commit and abort are final steps: librdkafka calls their timeouts retriable, but a
    /// transaction in an unknown state cannot be reasoned about, so the producer is to be
    /// recreated (which fences this one and resolves the transaction).
    fn final_step_error(&self, op: &'static str, err: &KafkaError) -> BusError {
        let kind = match kafka_kind(err) {
            ErrorKind::Abortable if op == "commit" => ErrorKind::Abortable,
            _ => ErrorKind::Fatal,
        };
        self.error(op, err, kind)
    }

    pub(crate) fn init(&self, timeout: Duration) -> Result<(), BusError> {
        self.core
            .inner
            .init_transactions(timeout)
            .map_err(|e| self.error("init", &e, kafka_kind(&e)))
    }

    pub(crate) fn begin(&self) -> Result<(), BusError> {
        self.core
            .inner
            .begin_transaction()
            .map_err(|e| self.error("begin", &e, kafka_kind(&e)))?;
        self.in_transaction.store(true, Ordering::SeqCst);
        Ok(())
    }

    pub(crate) fn send(
        &self,
        record: &Record,
        timeout: Duration,
    ) -> Result<mpsc::Receiver<DeliveryOutcome>, BusError> {
        self.core.send(record, timeout)
    }

    pub(crate) fn send_offsets(
        &self,
        offsets: &Offsets,
        meta: &ConsumerGroupMetadata,
        timeout: Duration,
    ) -> Result<(), BusError> {
        const OP: &str = "send_offsets_to_transaction";
        let tpl = tpl_from_offsets(offsets).map_err(|e| self.error(OP, &e, ErrorKind::Fatal))?;
        self.core
            .inner
            .send_offsets_to_transaction(&tpl, meta, timeout)
            .map_err(|e| {
                let mut err = self.error(OP, &e, kafka_kind(&e));
                if let BusError::Transaction { reason, .. } = &mut err {
                    reason.push_str(&format!(" (offsets {})", render_offsets(offsets)));
                }
                err
            })
    }

    pub(crate) fn commit(&self, timeout: Duration) -> Result<(), BusError> {
        // rdkafka's commit flushes first (see `wait_delivered`); the commit keeps its whole
        // timeout for its own round trips.
        self.core.wait_delivered(timeout);
        let result = self.core.inner.commit_transaction(timeout);
        let result = result.map_err(|e| self.final_step_error("commit", &e));
        if !matches!(&result, Err(e) if e.kind() == ErrorKind::Abortable) {
            self.in_transaction.store(false, Ordering::SeqCst);
        }
        result
    }

    pub(crate) fn abort(&self, timeout: Duration) -> Result<(), BusError> {
        let result = self.core.inner.abort_transaction(timeout);
        self.in_transaction.store(false, Ordering::SeqCst);
        result.map_err(|e| self.final_step_error("abort", &e))
    }

    pub(crate) fn flush(&self, timeout: Duration) -> Result<(), BusError> {
        self.core.flush(timeout)
    }
}

impl Drop for KafkaTxProducer {
    fn drop(&mut self) {
        if self.in_transaction.load(Ordering::SeqCst)
            && let Err(err) = self.abort(self.core.close_timeout)
        {
            tracing::warn!(%err, "abort of the open transaction on drop");
        }
    }
}

/// A Kafka group consumer.
pub(crate) struct KafkaConsumer {
    /// Taken only by [`Drop`], which closes it on a thread of its own.
    inner: ManuallyDrop<BaseConsumer<GroupContext>>,
    group: String,
    close_timeout: Duration,
}

impl Drop for KafkaConsumer {
    /// Closing leaves the group, which waits for the coordinator; after a broker restart a
    /// librdkafka consumer's close has been seen never to return. The close runs on a thread
    /// of its own and is waited for up to `close_timeout`; past that the thread is left to
    /// finish (or to end with the process) and the broker times the member's session out, so
    /// a stopping service is never held by it.
    fn drop(&mut self) {
        // SAFETY: `inner` is taken here, once, and not used after: the struct is being dropped.
        let consumer = unsafe { ManuallyDrop::take(&mut self.inner) };
        let (closed, done) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("kafka-consumer-close".into())
            .spawn(move || {
                drop(consumer);
                let _ = closed.send(());
            });
        match spawned {
            Ok(_) => {
                if done.recv_timeout(self.close_timeout).is_err() {
                    tracing::warn!(
                        group = %self.group,
                        timeout = ?self.close_timeout,
                        "the consumer did not leave its group in time; going on without \
                         waiting (the broker ends its session)"
                    );
                }
            }
            Err(error) => {
                tracing::warn!(group = %self.group, %error, "closing the consumer in place");
            }
        }
    }
}

impl KafkaConsumer {
    fn error(&self, op: &'static str, err: &KafkaError) -> BusError {
        BusError::Consumer {
            group: self.group.clone(),
            op,
            reason: err.to_string(),
            kind: kafka_kind(err),
        }
    }

    pub(crate) fn group(&self) -> &str {
        &self.group
    }

    pub(crate) fn subscribe(&self, topics: &[&str]) -> Result<(), BusError> {
        for topic in topics {
            validate_topic_name(topic)?;
        }
        self.inner
            .subscribe(topics)
            .map_err(|e| self.error("subscribe", &e))
    }

    pub(crate) fn unsubscribe(&self) {
        self.inner.unsubscribe();
    }

    pub(crate) fn poll(&self, timeout: Duration) -> Result<Option<Message>, BusError> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let remaining = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            match self.inner.poll(remaining) {
                Some(Ok(message)) => return Ok(Some(to_message(&message))),
                // Only reported with enable.partition.eof, which a caller may pass through.
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => return Err(self.error("poll", &e)),
                // rdkafka returns early after serving a rebalance or commit event; keep waiting
                // for a message until the caller's deadline.
                None if remaining.is_zero() => return Ok(None),
                None => {}
            }
        }
    }

    pub(crate) fn commit(&self, offsets: &Offsets) -> Result<(), BusError> {
        self.commit_with(offsets, CommitMode::Sync)
    }

    pub(crate) fn commit_async(&self, offsets: &Offsets) -> Result<(), BusError> {
        self.commit_with(offsets, CommitMode::Async)
    }

    fn commit_with(&self, offsets: &Offsets, mode: CommitMode) -> Result<(), BusError> {
        let error = |e: &KafkaError| BusError::Commit {
            group: self.group.clone(),
            offsets: render_offsets(offsets),
            reason: e.to_string(),
            kind: kafka_kind(e),
        };
        let tpl = tpl_from_offsets(offsets).map_err(|e| error(&e))?;
        self.inner.commit(&tpl, mode).map_err(|e| error(&e))
    }

    pub(crate) fn committed(
        &self,
        partitions: &[TopicPartition],
        timeout: Duration,
    ) -> Result<Offsets, BusError> {
        let mut tpl = TopicPartitionList::with_capacity(partitions.len());
        for tp in partitions {
            tpl.add_partition(&tp.topic, tp.partition);
        }
        let tpl = self
            .inner
            .committed_offsets(tpl, timeout)
            .map_err(|e| self.error("committed offsets", &e))?;
        Ok(tpl
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(o) => Some((TopicPartition::new(e.topic(), e.partition()), o)),
                _ => None,
            })
            .collect())
    }

    pub(crate) fn seek(
        &self,
        tp: &TopicPartition,
        offset: i64,
        timeout: Duration,
    ) -> Result<(), BusError> {
        self.inner
            .seek(&tp.topic, tp.partition, Offset::Offset(offset), timeout)
            .map_err(|e| BusError::Seek {
                group: self.group.clone(),
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset,
                reason: e.to_string(),
                kind: kafka_kind(&e),
            })
    }

    pub(crate) fn rebalances(&self) -> u64 {
        self.inner.context().rebalances.load(Ordering::SeqCst)
    }

    pub(crate) fn pause(&self) -> Result<(), BusError> {
        self.set_paused(true)
    }

    pub(crate) fn resume(&self) -> Result<(), BusError> {
        self.set_paused(false)
    }

    /// Sets the flag new assignments follow, then applies it to the current assignment.
    fn set_paused(&self, paused: bool) -> Result<(), BusError> {
        let context = self.inner.context();
        context.paused.store(paused, Ordering::SeqCst);
        let tpl = self
            .inner
            .assignment()
            .map_err(|e| self.error("assignment", &e))?;
        context.apply_pause(&self.inner, &tpl);
        Ok(())
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.inner.context().paused.load(Ordering::SeqCst)
    }

    pub(crate) fn lag(&self, timeout: Duration) -> Result<Vec<(TopicPartition, i64)>, BusError> {
        let positions = self
            .inner
            .position()
            .map_err(|e| self.error("position", &e))?;
        let mut out = Vec::new();
        for element in positions.elements() {
            let Offset::Offset(position) = element.offset() else {
                continue;
            };
            let (_, high) = self
                .inner
                .fetch_watermarks(element.topic(), element.partition(), timeout)
                .map_err(|e| self.error("watermarks", &e))?;
            out.push((
                TopicPartition::new(element.topic(), element.partition()),
                (high - position).max(0),
            ));
        }
        out.sort();
        Ok(out)
    }

    pub(crate) fn end_offset(
        &self,
        partition: &TopicPartition,
        timeout: Duration,
    ) -> Result<i64, BusError> {
        let (_, high) = self
            .inner
            .fetch_watermarks(&partition.topic, partition.partition, timeout)
            .map_err(|e| self.error("watermarks", &e))?;
        Ok(high)
    }

    pub(crate) fn assignment(&self) -> Result<Vec<TopicPartition>, BusError> {
        let tpl = self
            .inner
            .assignment()
            .map_err(|e| self.error("assignment", &e))?;
        let mut out: Vec<TopicPartition> = tpl
            .elements()
            .iter()
            .map(|e| TopicPartition::new(e.topic(), e.partition()))
            .collect();
        out.sort();
        Ok(out)
    }

    pub(crate) fn group_metadata(&self) -> Result<ConsumerGroupMetadata, BusError> {
        self.inner
            .group_metadata()
            .ok_or_else(|| BusError::Consumer {
                group: self.group.clone(),
                op: "group metadata",
                reason: "librdkafka has no group metadata for this consumer".to_owned(),
                kind: ErrorKind::Fatal,
            })
    }
}

/// Copies a message out of librdkafka's buffer. A null header value (other clients can send
/// one; the bus never does) reads as empty, as does a null payload (a tombstone).
fn to_message(m: &BorrowedMessage<'_>) -> Message {
    let headers: Headers = m
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Message {
        topic: m.topic().to_owned(),
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(Bytes::copy_from_slice),
        payload: m.payload().map(Bytes::copy_from_slice).unwrap_or_default(),
        headers,
        timestamp_ms: m.timestamp().to_millis(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admin_operation_that_timed_out_or_lost_the_broker_is_retriable() {
        for code in [
            RDKafkaErrorCode::OperationTimedOut,
            RDKafkaErrorCode::BrokerTransportFailure,
            RDKafkaErrorCode::AllBrokersDown,
        ] {
            assert_eq!(
                kafka_kind(&KafkaError::AdminOp(code)),
                ErrorKind::Retriable,
                "{code}"
            );
        }
        assert_eq!(
            kafka_kind(&KafkaError::AdminOp(
                RDKafkaErrorCode::TopicAuthorizationFailed
            )),
            ErrorKind::Fatal
        );
    }
}
