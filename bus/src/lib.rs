//! orstream-bus: the message bus every orstream service talks to.
//!
//! One small, blocking API with explicit timeouts, over two backends with the same semantics:
//! Kafka (librdkafka, for the local stack and production) and an in-process bus (for
//! `orstream demo` and tests without servers). Services call it from dedicated threads or
//! `spawn_blocking`; every client is `Send + Sync`.
//!
//! What it offers:
//! - produce keyed messages with ordered headers and learn where each landed
//!   ([`Producer`], [`DeliveryHandle`]); equal keys share a partition and keep their order;
//! - consume as a group with explicit offsets ([`Consumer`]): subscribe, poll with a timeout,
//!   commit the next offset to read per partition, read committed offsets, seek, see the
//!   assignment and count its changes ([`Consumer::rebalances`]); only committed
//!   transactional messages are read (read_committed);
//! - transactions ([`TransactionalProducer`]): messages plus the consumer's offsets commit
//!   atomically (consume-transform-produce); a newer producer with the same transactional id
//!   fences the older one;
//! - topic admin ([`Bus::create_topic`], [`Bus::partitions`]).
//!
//! Errors are one enum, [`BusError`], classified by [`BusError::kind`] into
//! retriable / abortable / fatal ([`ErrorKind`]).
//!
//! Design: each client type is an enum over the two backends rather than a trait object, so
//! the API is concrete, needs no boxing or generics in the services, and a backend mismatch
//! (group metadata of one handed to the other) is caught with a clear error. [`Bus`] picks
//! the backend once: [`Bus::kafka`] or [`Bus::memory`].
//!
//! Modules:
//! - `config`: [`KafkaConfig`] (serde, validated, librdkafka pass-through map);
//! - `error`: [`BusError`], [`ErrorKind`];
//! - `message`: [`Record`] in, [`Message`] out, [`Headers`], [`TopicPartition`], [`Offsets`],
//!   [`Delivery`], the key -> partition rule;
//! - `client`: the clients above, dispatching to
//! - `kafka`: the Kafka backend (rdkafka `ThreadedProducer`, `BaseConsumer`, admin client);
//! - `memory`: the in-process backend (one mutex and condvar; keeps everything, no retention);
//! - [`trace`]: W3C trace context (`traceparent`) in [`Headers`]: inject a span's context on
//!   produce, extract it on consume to continue the trace or link to it;
//! - [`metrics`]: the metric names, units, buckets and attribute keys every service records
//!   with (OpenTelemetry global meter), and [`metrics::HealthReporter`], where service loops
//!   report liveness and readiness.
//!
//! Data comes in as [`Record`]s given to a producer and goes out as [`Message`]s returned by
//! [`Consumer::poll`]; in between it lives in Kafka, or in the memory of the process.

mod client;
mod config;
mod error;
mod kafka;
mod memory;
mod message;
pub mod metrics;
pub mod security;
pub mod trace;

pub use client::{
    Backend, Bus, Consumer, DeliveryHandle, GroupMember, GroupMetadata, Producer,
    TransactionalProducer,
};
pub use config::KafkaConfig;
pub use error::{BusError, ErrorKind};
pub use message::{
    Delivery, Headers, Message, Offsets, Record, TopicPartition, partition_for_key,
    validate_topic_name,
};
pub use security::{KafkaSecurity, Secret};
