//! The in-process backend: Kafka's semantics inside one process, for `orstream demo` and tests.
//!
//! One mutex guards the whole state (topics, groups, transactional ids); one condvar wakes
//! blocked polls whenever something becomes readable or an assignment changes. What it keeps
//! from Kafka:
//!
//! - topics with N partitions; a key picks its partition with Kafka's murmur2 rule, no key goes
//!   round-robin; offsets count from 0 per partition and order is kept per partition;
//! - consumer groups: members join on `subscribe` and leave on `unsubscribe`/drop; every change
//!   recomputes the assignment (range assignor, members in join order) and bumps the group's
//!   generation; like Kafka's eager protocol, every member then restarts each of its
//!   partitions from the group's committed offset (or the start of the log);
//! - read_committed: a transaction's messages get their offsets at send time but stay invisible
//!   and hold back the partition (last stable offset) until the commit; an abort hides them for
//!   good. Commit and abort each leave one marker offset per partition written, as Kafka does,
//!   so offsets line up with a broker's;
//! - `send_offsets_to_transaction` stores group offsets that take effect only with the commit,
//!   and fails (abortable) when the consumer's group generation has moved on;
//! - a newer producer with the same transactional id fences the older one (its later calls
//!   fail with a fatal error) and aborts the transaction it left open.
//!
//! Retention: none. Everything produced stays in memory until the bus is dropped, which suits
//! demos and tests, not a long live run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{BusError, ErrorKind};
use crate::message::{
    Delivery, Headers, Message, Offsets, Record, TopicPartition, partition_for_key, render_offsets,
    validate_topic_name,
};

/// The shared in-process bus; clones are handles to the same topics and groups.
#[derive(Clone, Default)]
pub(crate) struct MemoryBus {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Signalled whenever a poll might now find something: new committed data, a finished
    /// transaction, a seek, an assignment change.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation of the state completes without panicking points in between, so a
        // poisoned lock still guards consistent data; refusing it would turn one panicking
        // caller into a failure of the whole bus.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct State {
    topics: HashMap<String, Topic>,
    groups: HashMap<String, Group>,
    transactional_ids: HashMap<String, TransactionalId>,
    next_member: u64,
    next_transaction: u64,
    /// Assignment changes seen by each consumer (by member number), for `rebalances`.
    rebalances: HashMap<u64, u64>,
}

struct Topic {
    partitions: Vec<Partition>,
    /// The retention it was created with (reported, not applied: nothing expires here).
    retention: Option<Duration>,
    /// Where the next unkeyed message goes.
    next_round_robin: usize,
}

#[derive(Default)]
struct Partition {
    entries: Vec<Entry>,
    /// First offset of each open transaction that wrote here -> its transaction number. The
    /// smallest key is the last stable offset: read_committed readers stop there.
    open_transactions: BTreeMap<i64, u64>,
}

impl Partition {
    fn last_stable_offset(&self) -> i64 {
        self.open_transactions
            .keys()
            .next()
            .copied()
            .unwrap_or_else(|| to_offset(self.entries.len()))
    }

    fn end_offset(&self) -> i64 {
        to_offset(self.entries.len())
    }
}

struct Entry {
    /// `None` marks a transaction's commit or abort marker, which takes an offset but is never
    /// delivered.
    body: Option<Body>,
    state: EntryState,
}

struct Body {
    key: Option<Bytes>,
    payload: Bytes,
    headers: Headers,
    timestamp_ms: i64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EntryState {
    Committed,
    Pending,
    Aborted,
}

#[derive(Default)]
struct Group {
    generation: i32,
    members: BTreeMap<u64, Member>,
    committed: HashMap<TopicPartition, i64>,
}

#[derive(Default)]
struct Member {
    /// What the member reports as its client id.
    client_id: String,
    subscription: BTreeSet<String>,
    assignment: Vec<TopicPartition>,
    positions: HashMap<TopicPartition, i64>,
    /// Index into `assignment` where the next fetch starts, so partitions take turns.
    cursor: usize,
}

#[derive(Default)]
struct TransactionalId {
    /// Bumped by every `init`; a producer holding an older epoch is fenced.
    epoch: u64,
    open: Option<OpenTransaction>,
}

struct OpenTransaction {
    number: u64,
    writes: BTreeMap<TopicPartition, Vec<i64>>,
    offsets: BTreeMap<String, Offsets>,
    /// The group memberships the offsets were sent under, checked again at commit.
    members: Vec<MemberMeta>,
    /// Set when a step failed in a way that forbids committing (abortable).
    failed: Option<String>,
}

/// Group metadata of an in-process consumer, as handed to `send_offsets_to_transaction`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberMeta {
    group: String,
    generation: i32,
    /// `None` while the consumer has not joined (no subscription): its offsets are then
    /// accepted without a generation check, like Kafka's for a consumer outside the group.
    member: Option<u64>,
}

fn to_offset(index: usize) -> i64 {
    i64::try_from(index).unwrap_or(i64::MAX)
}

fn to_index(offset: i64) -> Option<usize> {
    usize::try_from(offset).ok()
}

impl State {
    fn partition(&self, tp: &TopicPartition) -> Option<&Partition> {
        self.topics
            .get(&tp.topic)?
            .partitions
            .get(usize::try_from(tp.partition).ok()?)
    }

    fn partition_mut(&mut self, tp: &TopicPartition) -> Option<&mut Partition> {
        self.topics
            .get_mut(&tp.topic)?
            .partitions
            .get_mut(usize::try_from(tp.partition).ok()?)
    }

    /// Why offsets sent under `meta` may no longer be committed (the group moved to another
    /// generation, or the member left); `None` when they still may.
    fn stale(&self, meta: &MemberMeta) -> Option<String> {
        let member = meta.member?;
        let group = self.groups.get(&meta.group);
        let current = group.map_or(-1, |g| g.generation);
        let joined = group.is_some_and(|g| g.members.contains_key(&member));
        (!joined || current != meta.generation).then(|| {
            format!(
                "consumer group {} moved to generation {current} (metadata has {}{}): its \
                 partitions may belong to another member now",
                meta.group,
                meta.generation,
                if joined { "" } else { ", and the member left" }
            )
        })
    }

    /// Appends a record, choosing its partition like Kafka's default partitioner would.
    fn append(&mut self, record: &Record, state: EntryState) -> Result<Delivery, BusError> {
        validate_topic_name(&record.topic)?;
        let Some(topic) = self.topics.get_mut(&record.topic) else {
            return Err(BusError::Produce {
                topic: record.topic.clone(),
                partition: None,
                reason: "unknown topic (create it first)".to_owned(),
                kind: ErrorKind::Retriable,
            });
        };
        let count = topic.partitions.len();
        let index = match &record.key {
            Some(key) => {
                let p = partition_for_key(key, u32::try_from(count).unwrap_or(u32::MAX));
                usize::try_from(p).unwrap_or(0)
            }
            None => {
                let i = topic.next_round_robin % count.max(1);
                topic.next_round_robin = topic.next_round_robin.wrapping_add(1);
                i
            }
        };
        let Some(partition) = topic.partitions.get_mut(index) else {
            return Err(BusError::Produce {
                topic: record.topic.clone(),
                partition: None,
                reason: "topic has no partitions".to_owned(),
                kind: ErrorKind::Fatal,
            });
        };
        let offset = partition.end_offset();
        partition.entries.push(Entry {
            body: Some(Body {
                key: record.key.clone(),
                payload: record.payload.clone(),
                headers: record.headers.clone(),
                timestamp_ms: orstream_shell::clock::now_ms(),
            }),
            state,
        });
        Ok(Delivery {
            topic: record.topic.clone(),
            partition: i32::try_from(index).unwrap_or(i32::MAX),
            offset,
        })
    }

    /// Recomputes a group's assignment after a change of members, subscriptions or topics.
    fn rebalance(&mut self, group_name: &str) {
        let State {
            topics,
            groups,
            rebalances,
            ..
        } = self;
        let Some(Group {
            generation,
            members,
            committed,
        }) = groups.get_mut(group_name)
        else {
            return;
        };
        *generation += 1;
        let mut assignments: BTreeMap<u64, Vec<TopicPartition>> =
            members.keys().map(|id| (*id, Vec::new())).collect();
        let subscribed: BTreeSet<&String> = members
            .values()
            .flat_map(|m| m.subscription.iter())
            .collect();
        for topic in subscribed {
            let Some(t) = topics.get(topic) else { continue };
            let takers: Vec<u64> = members
                .iter()
                .filter(|(_, m)| m.subscription.contains(topic))
                .map(|(id, _)| *id)
                .collect();
            // Range assignment: consecutive partitions, the first members take one extra.
            let per_member = t.partitions.len() / takers.len().max(1);
            let extra = t.partitions.len() % takers.len().max(1);
            let mut next = 0usize;
            for (i, id) in takers.iter().enumerate() {
                let take = per_member + usize::from(i < extra);
                let mine = assignments.entry(*id).or_default();
                for p in next..next + take {
                    mine.push(TopicPartition::new(
                        topic.clone(),
                        i32::try_from(p).unwrap_or(0),
                    ));
                }
                next += take;
            }
        }
        for (id, member) in members.iter_mut() {
            *rebalances.entry(*id).or_default() += 1;
            member.assignment = assignments.remove(id).unwrap_or_default();
            member.positions = member
                .assignment
                .iter()
                .map(|tp| (tp.clone(), committed.get(tp).copied().unwrap_or(0)))
                .collect();
            member.cursor = 0;
        }
    }

    /// The next visible message for a member, advancing its position past anything a
    /// read_committed reader skips (aborted messages, markers).
    fn fetch(&mut self, group: &str, member_id: u64) -> Option<Message> {
        let State { topics, groups, .. } = self;
        let member = groups.get_mut(group)?.members.get_mut(&member_id)?;
        let count = member.assignment.len();
        for step in 0..count {
            let index = (member.cursor + step) % count;
            let tp = &member.assignment[index];
            let Some(partition) = topics
                .get(&tp.topic)
                .and_then(|t| t.partitions.get(usize::try_from(tp.partition).ok()?))
            else {
                continue;
            };
            let position = member.positions.entry(tp.clone()).or_insert(0);
            if *position > partition.end_offset() {
                // Out of range: auto.offset.reset=earliest, as the Kafka backend is configured.
                *position = 0;
            }
            let stable = partition.last_stable_offset();
            while *position < stable {
                let offset = *position;
                *position += 1;
                let Some(entry) = to_index(offset).and_then(|i| partition.entries.get(i)) else {
                    break;
                };
                if let (EntryState::Committed, Some(body)) = (entry.state, &entry.body) {
                    member.cursor = index + 1;
                    return Some(Message {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        offset,
                        key: body.key.clone(),
                        payload: body.payload.clone(),
                        headers: body.headers.clone(),
                        timestamp_ms: Some(body.timestamp_ms),
                    });
                }
            }
        }
        None
    }

    /// Commits or aborts an open transaction: flips its messages, writes one marker per
    /// partition and applies (or drops) its group offsets.
    fn finish(&mut self, transaction: OpenTransaction, commit: bool) {
        let state = if commit {
            EntryState::Committed
        } else {
            EntryState::Aborted
        };
        for (tp, offsets) in &transaction.writes {
            let Some(partition) = self.partition_mut(tp) else {
                continue;
            };
            for offset in offsets {
                if let Some(entry) = to_index(*offset).and_then(|i| partition.entries.get_mut(i)) {
                    entry.state = state;
                }
            }
            partition
                .open_transactions
                .retain(|_, n| *n != transaction.number);
            partition.entries.push(Entry { body: None, state });
        }
        if commit {
            for (group, offsets) in transaction.offsets {
                let committed = &mut self.groups.entry(group).or_default().committed;
                committed.extend(offsets);
            }
        }
    }
}

impl MemoryBus {
    /// The retention `topic` was created with.
    pub(crate) fn topic_retention(&self, topic: &str) -> Result<Option<Duration>, BusError> {
        validate_topic_name(topic)?;
        let state = self.shared.lock();
        state
            .topics
            .get(topic)
            .map(|t| t.retention)
            .ok_or_else(|| BusError::Admin {
                topic: topic.to_owned(),
                op: "describe configs",
                reason: "no such topic".to_owned(),
                kind: ErrorKind::Fatal,
            })
    }

    pub(crate) fn create_topic(
        &self,
        topic: &str,
        partitions: u32,
        retention: Option<Duration>,
    ) -> Result<(), BusError> {
        validate_topic_name(topic)?;
        if partitions == 0 || partitions > i32::MAX as u32 {
            return Err(BusError::Admin {
                topic: topic.to_owned(),
                op: "create",
                reason: format!("partition count {partitions} is outside 1..={}", i32::MAX),
                kind: ErrorKind::Fatal,
            });
        }
        let mut state = self.shared.lock();
        if state.topics.contains_key(topic) {
            // Idempotent, like the Kafka backend which accepts "already exists".
            return Ok(());
        }
        let count = usize::try_from(partitions).unwrap_or(1);
        state.topics.insert(
            topic.to_owned(),
            Topic {
                partitions: (0..count).map(|_| Partition::default()).collect(),
                retention,
                next_round_robin: 0,
            },
        );
        // Groups subscribed ahead of the topic's creation pick it up now, as Kafka consumers
        // do on their next metadata refresh.
        let waiting: Vec<String> = state
            .groups
            .iter()
            .filter(|(_, g)| g.members.values().any(|m| m.subscription.contains(topic)))
            .map(|(name, _)| name.clone())
            .collect();
        for group in waiting {
            state.rebalance(&group);
        }
        drop(state);
        self.shared.changed.notify_all();
        Ok(())
    }

    pub(crate) fn partitions(&self, topic: &str) -> Result<Vec<TopicPartition>, BusError> {
        let state = self.shared.lock();
        let t = state.topics.get(topic).ok_or_else(|| BusError::Admin {
            topic: topic.to_owned(),
            op: "list partitions",
            reason: "unknown topic".to_owned(),
            kind: ErrorKind::Retriable,
        })?;
        Ok((0..t.partitions.len())
            .map(|p| TopicPartition::new(topic, i32::try_from(p).unwrap_or(i32::MAX)))
            .collect())
    }

    pub(crate) fn producer(&self) -> MemoryProducer {
        MemoryProducer {
            shared: Arc::clone(&self.shared),
        }
    }

    pub(crate) fn transactional_producer(&self, transactional_id: &str) -> MemoryTxProducer {
        MemoryTxProducer {
            shared: Arc::clone(&self.shared),
            transactional_id: transactional_id.to_owned(),
            local: Mutex::new(TxLocal::default()),
        }
    }

    /// A consumer; it reports `client_id` to its group, or the bus's own, `orstream`.
    pub(crate) fn consumer(&self, group: &str, client_id: Option<&str>) -> MemoryConsumer {
        let mut state = self.shared.lock();
        let member = state.next_member;
        state.next_member += 1;
        MemoryConsumer {
            shared: Arc::clone(&self.shared),
            group: group.to_owned(),
            member,
            client_id: client_id.unwrap_or("orstream").to_owned(),
            paused: AtomicBool::new(false),
        }
    }

    /// The members that joined `group` (subscribed) and have not left.
    pub(crate) fn group_members(&self, group: &str) -> Vec<crate::GroupMember> {
        let state = self.shared.lock();
        state
            .groups
            .get(group)
            .map(|g| {
                g.members
                    .values()
                    .map(|m| crate::GroupMember {
                        client_id: m.client_id.clone(),
                        host: String::new(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A non-transactional in-process producer: every send is delivered at once.
pub(crate) struct MemoryProducer {
    shared: Arc<Shared>,
}

impl MemoryProducer {
    pub(crate) fn send(&self, record: &Record) -> Result<Delivery, BusError> {
        let delivery = self.shared.lock().append(record, EntryState::Committed)?;
        self.shared.changed.notify_all();
        Ok(delivery)
    }
}

/// What a transactional producer knows about itself; the shared state knows the rest.
#[derive(Default)]
struct TxLocal {
    /// The epoch `init` obtained; `None` before `init`.
    epoch: Option<u64>,
    in_transaction: bool,
    /// Set once fenced; every later call fails with it.
    fatal: Option<String>,
}

/// An in-process transactional producer.
pub(crate) struct MemoryTxProducer {
    shared: Arc<Shared>,
    transactional_id: String,
    local: Mutex<TxLocal>,
}

impl MemoryTxProducer {
    fn error(&self, op: &'static str, reason: impl Into<String>, kind: ErrorKind) -> BusError {
        BusError::Transaction {
            transactional_id: self.transactional_id.clone(),
            op,
            reason: reason.into(),
            kind,
        }
    }

    fn lock_local(&self) -> MutexGuard<'_, TxLocal> {
        // Same reasoning as `Shared::lock`: updates to `TxLocal` are single assignments.
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks that this producer may act: initialised, not fenced, and (when `in_transaction`
    /// is given) inside or outside a transaction as required. Marks it fenced when a newer
    /// producer took its transactional id.
    fn check(
        &self,
        op: &'static str,
        local: &mut TxLocal,
        state: &State,
        in_transaction: Option<bool>,
    ) -> Result<u64, BusError> {
        if let Some(reason) = &local.fatal {
            return Err(self.error(op, reason.clone(), ErrorKind::Fatal));
        }
        let Some(epoch) = local.epoch else {
            return Err(self.error(op, "init was not called", ErrorKind::Fatal));
        };
        let current = state
            .transactional_ids
            .get(&self.transactional_id)
            .map_or(0, |t| t.epoch);
        if current != epoch {
            let reason = format!(
                "fenced: a newer producer with the same transactional id took over (epoch {epoch} \
                 < {current}); recreate the producer"
            );
            local.fatal = Some(reason.clone());
            local.in_transaction = false;
            return Err(self.error(op, reason, ErrorKind::Fatal));
        }
        match in_transaction {
            Some(true) if !local.in_transaction => {
                Err(self.error(op, "no transaction is open (call begin)", ErrorKind::Fatal))
            }
            Some(false) if local.in_transaction => {
                Err(self.error(op, "a transaction is already open", ErrorKind::Fatal))
            }
            _ => Ok(epoch),
        }
    }

    pub(crate) fn init(&self) -> Result<(), BusError> {
        let mut local = self.lock_local();
        if local.epoch.is_some() {
            return Err(self.error("init", "already initialised", ErrorKind::Fatal));
        }
        let mut state = self.shared.lock();
        let entry = state
            .transactional_ids
            .entry(self.transactional_id.clone())
            .or_default();
        entry.epoch += 1;
        let epoch = entry.epoch;
        // The previous holder's open transaction is aborted, as Kafka's coordinator does
        // when a new producer initialises with the same transactional id.
        if let Some(open) = entry.open.take() {
            state.finish(open, false);
        }
        drop(state);
        self.shared.changed.notify_all();
        local.epoch = Some(epoch);
        Ok(())
    }

    pub(crate) fn begin(&self) -> Result<(), BusError> {
        let mut local = self.lock_local();
        let mut state = self.shared.lock();
        self.check("begin", &mut local, &state, Some(false))?;
        let number = state.next_transaction;
        state.next_transaction += 1;
        let id = state
            .transactional_ids
            .entry(self.transactional_id.clone())
            .or_default();
        id.open = Some(OpenTransaction {
            number,
            writes: BTreeMap::new(),
            offsets: BTreeMap::new(),
            members: Vec::new(),
            failed: None,
        });
        local.in_transaction = true;
        Ok(())
    }

    pub(crate) fn send(&self, record: &Record) -> Result<Delivery, BusError> {
        let mut local = self.lock_local();
        let mut state = self.shared.lock();
        self.check("produce", &mut local, &state, Some(true))?;
        let delivery = state.append(record, EntryState::Pending)?;
        let tp = TopicPartition::new(delivery.topic.clone(), delivery.partition);
        let number = state
            .transactional_ids
            .get_mut(&self.transactional_id)
            .and_then(|id| id.open.as_mut())
            .map(|open| {
                open.writes
                    .entry(tp.clone())
                    .or_default()
                    .push(delivery.offset);
                open.number
            });
        if let (Some(number), Some(partition)) = (number, state.partition_mut(&tp))
            && !partition.open_transactions.values().any(|n| *n == number)
        {
            partition.open_transactions.insert(delivery.offset, number);
        }
        Ok(delivery)
    }

    pub(crate) fn send_offsets(
        &self,
        offsets: &Offsets,
        meta: &MemberMeta,
    ) -> Result<(), BusError> {
        const OP: &str = "send_offsets_to_transaction";
        let mut local = self.lock_local();
        let mut state = self.shared.lock();
        self.check(OP, &mut local, &state, Some(true))?;
        let stale = state.stale(meta);
        let unknown: Vec<String> = offsets
            .keys()
            .filter(|tp| state.partition(tp).is_none())
            .map(ToString::to_string)
            .collect();
        let Some(open) = state
            .transactional_ids
            .get_mut(&self.transactional_id)
            .and_then(|id| id.open.as_mut())
        else {
            return Err(self.error(OP, "no transaction is open", ErrorKind::Fatal));
        };
        let failure = stale.or_else(|| {
            (!unknown.is_empty()).then(|| format!("unknown partitions {}", unknown.join(", ")))
        });
        if let Some(reason) = failure {
            let reason = format!("{reason} (offsets {})", render_offsets(offsets));
            open.failed = Some(reason.clone());
            return Err(self.error(OP, reason, ErrorKind::Abortable));
        }
        open.offsets
            .entry(meta.group.clone())
            .or_default()
            .extend(offsets.iter().map(|(tp, o)| (tp.clone(), *o)));
        open.members.push(meta.clone());
        Ok(())
    }

    pub(crate) fn commit(&self) -> Result<(), BusError> {
        let mut local = self.lock_local();
        let mut state = self.shared.lock();
        self.check("commit", &mut local, &state, Some(true))?;
        let open = state
            .transactional_ids
            .get(&self.transactional_id)
            .and_then(|id| id.open.as_ref());
        let failed = open.and_then(|open| {
            open.failed.clone().or_else(|| {
                // Stricter than a broker, which checks the generation only when the offsets
                // are sent: here a member's partitions move the moment another member joins,
                // not at its next poll, so the window between the two calls counts too.
                open.members.iter().find_map(|meta| state.stale(meta))
            })
        });
        let Some(id) = state.transactional_ids.get_mut(&self.transactional_id) else {
            return Err(self.error("commit", "no transaction is open", ErrorKind::Fatal));
        };
        if let Some(reason) = failed {
            if let Some(open) = id.open.as_mut() {
                // Once failed, the transaction can only be aborted, as with Kafka.
                open.failed = Some(reason.clone());
            }
            return Err(self.error(
                "commit",
                format!("the transaction must be aborted: {reason}"),
                ErrorKind::Abortable,
            ));
        }
        if let Some(open) = id.open.take() {
            state.finish(open, true);
        }
        drop(state);
        local.in_transaction = false;
        self.shared.changed.notify_all();
        Ok(())
    }

    pub(crate) fn abort(&self) -> Result<(), BusError> {
        let mut local = self.lock_local();
        let mut state = self.shared.lock();
        self.check("abort", &mut local, &state, Some(true))?;
        let open = state
            .transactional_ids
            .get_mut(&self.transactional_id)
            .and_then(|id| id.open.take());
        if let Some(open) = open {
            state.finish(open, false);
        }
        drop(state);
        local.in_transaction = false;
        self.shared.changed.notify_all();
        Ok(())
    }
}

impl Drop for MemoryTxProducer {
    fn drop(&mut self) {
        // An open transaction would hold back every read_committed reader of its partitions
        // (Kafka ends it only at transaction.timeout); end it now.
        let in_transaction = self.lock_local().in_transaction;
        if in_transaction && let Err(err) = self.abort() {
            tracing::debug!(%err, "abort on drop of an in-process transactional producer");
        }
    }
}

/// An in-process group consumer.
pub(crate) struct MemoryConsumer {
    shared: Arc<Shared>,
    group: String,
    member: u64,
    client_id: String,
    /// Set by `pause`: polls deliver nothing until `resume`.
    paused: AtomicBool,
}

impl MemoryConsumer {
    pub(crate) fn group(&self) -> &str {
        &self.group
    }

    pub(crate) fn subscribe(&self, topics: &[&str]) -> Result<(), BusError> {
        for topic in topics {
            validate_topic_name(topic)?;
        }
        let mut state = self.shared.lock();
        let group = state.groups.entry(self.group.clone()).or_default();
        let member = group.members.entry(self.member).or_default();
        member.subscription = topics.iter().map(|t| (*t).to_owned()).collect();
        member.client_id.clone_from(&self.client_id);
        state.rebalance(&self.group);
        drop(state);
        self.shared.changed.notify_all();
        Ok(())
    }

    pub(crate) fn unsubscribe(&self) {
        let mut state = self.shared.lock();
        let left = state
            .groups
            .get_mut(&self.group)
            .is_some_and(|g| g.members.remove(&self.member).is_some());
        if left {
            // Losing every partition is an assignment change too.
            *state.rebalances.entry(self.member).or_default() += 1;
            state.rebalance(&self.group);
            drop(state);
            self.shared.changed.notify_all();
        }
    }

    pub(crate) fn poll(&self, timeout: Duration) -> Result<Option<Message>, BusError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.shared.lock();
        loop {
            if !self.is_paused()
                && let Some(message) = state.fetch(&self.group, self.member)
            {
                return Ok(Some(message));
            }
            let remaining = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if remaining.is_zero() {
                return Ok(None);
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, remaining)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    pub(crate) fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    pub(crate) fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        // Wake a poll waiting in another thread: messages may already be there.
        self.shared.changed.notify_all();
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    pub(crate) fn commit(&self, offsets: &Offsets) -> Result<(), BusError> {
        let mut state = self.shared.lock();
        let bad: Vec<String> = offsets
            .iter()
            .filter(|(tp, o)| **o < 0 || state.partition(tp).is_none())
            .map(|(tp, o)| format!("{tp}@{o}"))
            .collect();
        if !bad.is_empty() {
            return Err(BusError::Commit {
                group: self.group.clone(),
                offsets: render_offsets(offsets),
                reason: format!("unknown partition or negative offset: {}", bad.join(", ")),
                kind: ErrorKind::Fatal,
            });
        }
        let group = state.groups.entry(self.group.clone()).or_default();
        group
            .committed
            .extend(offsets.iter().map(|(tp, o)| (tp.clone(), *o)));
        Ok(())
    }

    pub(crate) fn committed(&self, partitions: &[TopicPartition]) -> Offsets {
        let state = self.shared.lock();
        let Some(group) = state.groups.get(&self.group) else {
            return Offsets::new();
        };
        partitions
            .iter()
            .filter_map(|tp| group.committed.get(tp).map(|o| (tp.clone(), *o)))
            .collect()
    }

    pub(crate) fn seek(&self, tp: &TopicPartition, offset: i64) -> Result<(), BusError> {
        let error = |reason: &str, kind| BusError::Seek {
            group: self.group.clone(),
            topic: tp.topic.clone(),
            partition: tp.partition,
            offset,
            reason: reason.to_owned(),
            kind,
        };
        if offset < 0 {
            return Err(error("negative offset", ErrorKind::Fatal));
        }
        let mut state = self.shared.lock();
        let position = state
            .groups
            .get_mut(&self.group)
            .and_then(|g| g.members.get_mut(&self.member))
            .filter(|m| m.assignment.contains(tp))
            .and_then(|m| m.positions.get_mut(tp))
            .ok_or_else(|| {
                error(
                    "partition is not assigned to this consumer",
                    ErrorKind::Retriable,
                )
            })?;
        *position = offset;
        drop(state);
        self.shared.changed.notify_all();
        Ok(())
    }

    pub(crate) fn rebalances(&self) -> u64 {
        self.shared
            .lock()
            .rebalances
            .get(&self.member)
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn lag(&self) -> Vec<(TopicPartition, i64)> {
        let state = self.shared.lock();
        let Some(member) = state
            .groups
            .get(&self.group)
            .and_then(|g| g.members.get(&self.member))
        else {
            return Vec::new();
        };
        member
            .assignment
            .iter()
            .filter_map(|tp| {
                let position = *member.positions.get(tp)?;
                let end = state.partition(tp)?.last_stable_offset();
                Some((tp.clone(), (end - position).max(0)))
            })
            .collect()
    }

    pub(crate) fn end_offset(&self, tp: &TopicPartition) -> Result<i64, BusError> {
        let state = self.shared.lock();
        state
            .partition(tp)
            .map(Partition::end_offset)
            .ok_or_else(|| BusError::Admin {
                topic: tp.topic.clone(),
                op: "end offset",
                reason: format!("no partition {}", tp.partition),
                kind: ErrorKind::Retriable,
            })
    }

    pub(crate) fn assignment(&self) -> Vec<TopicPartition> {
        let state = self.shared.lock();
        state
            .groups
            .get(&self.group)
            .and_then(|g| g.members.get(&self.member))
            .map(|m| m.assignment.clone())
            .unwrap_or_default()
    }

    pub(crate) fn group_metadata(&self) -> MemberMeta {
        let state = self.shared.lock();
        let group = state.groups.get(&self.group);
        let member = group
            .filter(|g| g.members.contains_key(&self.member))
            .map(|_| self.member);
        MemberMeta {
            group: self.group.clone(),
            generation: if member.is_some() {
                group.map_or(-1, |g| g.generation)
            } else {
                -1
            },
            member,
        }
    }
}

impl Drop for MemoryConsumer {
    fn drop(&mut self) {
        // Leaving hands the partitions to the remaining members at once, like a Kafka
        // consumer's LeaveGroup on close.
        self.unsubscribe();
        self.shared.lock().rebalances.remove(&self.member);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(topic: &str, key: &str, payload: &str) -> Record {
        Record::new(topic, payload.to_owned()).with_key(key.to_owned())
    }

    #[test]
    fn an_open_transaction_holds_back_later_messages_until_it_ends() {
        let bus = MemoryBus::default();
        bus.create_topic("t", 1, None).unwrap();
        let tx = bus.transactional_producer("tx");
        tx.init().unwrap();
        tx.begin().unwrap();
        tx.send(&record("t", "k", "in-txn")).unwrap();
        bus.producer().send(&record("t", "k", "after")).unwrap();
        let consumer = bus.consumer("g", None);
        consumer.subscribe(&["t"]).unwrap();
        assert_eq!(consumer.poll(Duration::from_millis(20)).unwrap(), None);
        tx.commit().unwrap();
        let first = consumer.poll(Duration::from_millis(20)).unwrap().unwrap();
        let second = consumer.poll(Duration::from_millis(20)).unwrap().unwrap();
        assert_eq!((first.offset, &first.payload[..]), (0, &b"in-txn"[..]));
        assert_eq!((second.offset, &second.payload[..]), (1, &b"after"[..]));
        // The commit marker took offset 2, as on a broker.
        tx.begin().unwrap();
        assert_eq!(tx.send(&record("t", "k", "x")).unwrap().offset, 3);
    }

    #[test]
    fn stale_group_generation_makes_the_transaction_abortable() {
        let bus = MemoryBus::default();
        bus.create_topic("in", 2, None).unwrap();
        let a = bus.consumer("g", None);
        a.subscribe(&["in"]).unwrap();
        let meta = a.group_metadata();
        let b = bus.consumer("g", None);
        b.subscribe(&["in"]).unwrap();
        let tx = bus.transactional_producer("tx");
        tx.init().unwrap();
        tx.begin().unwrap();
        let offsets = Offsets::from([(TopicPartition::new("in", 0), 1)]);
        let err = tx.send_offsets(&offsets, &meta).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Abortable, "{err}");
        assert_eq!(tx.commit().unwrap_err().kind(), ErrorKind::Abortable);
        tx.abort().unwrap();
        tx.begin().unwrap();
        tx.send_offsets(&offsets, &a.group_metadata()).unwrap();
        tx.commit().unwrap();
        assert_eq!(a.committed(&[TopicPartition::new("in", 0)]), offsets);
    }

    #[test]
    fn a_rebalance_between_send_offsets_and_commit_forbids_the_commit() {
        let bus = MemoryBus::default();
        bus.create_topic("in", 2, None).unwrap();
        let a = bus.consumer("g", None);
        a.subscribe(&["in"]).unwrap();
        let before = a.rebalances();
        let tx = bus.transactional_producer("tx");
        tx.init().unwrap();
        tx.begin().unwrap();
        let offsets = Offsets::from([(TopicPartition::new("in", 1), 3)]);
        tx.send_offsets(&offsets, &a.group_metadata()).unwrap();
        let b = bus.consumer("g", None);
        b.subscribe(&["in"]).unwrap();
        assert!(a.rebalances() > before);
        let err = tx.commit().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Abortable, "{err}");
        tx.abort().unwrap();
        assert!(a.committed(&[TopicPartition::new("in", 1)]).is_empty());
    }

    #[test]
    fn poll_wakes_when_a_message_arrives() {
        let bus = MemoryBus::default();
        bus.create_topic("t", 1, None).unwrap();
        let consumer = bus.consumer("g", None);
        consumer.subscribe(&["t"]).unwrap();
        let producer = bus.producer();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            producer.send(&record("t", "k", "late")).unwrap();
        });
        let got = consumer.poll(Duration::from_secs(30)).unwrap();
        sender.join().unwrap();
        assert_eq!(got.map(|m| m.payload), Some(Bytes::from_static(b"late")));
    }

    #[test]
    fn seek_beyond_the_end_restarts_from_the_beginning() {
        let bus = MemoryBus::default();
        bus.create_topic("t", 1, None).unwrap();
        bus.producer().send(&record("t", "k", "0")).unwrap();
        let consumer = bus.consumer("g", None);
        consumer.subscribe(&["t"]).unwrap();
        consumer.seek(&TopicPartition::new("t", 0), 10).unwrap();
        assert_eq!(
            consumer
                .poll(Duration::from_millis(10))
                .unwrap()
                .map(|m| m.offset),
            Some(0)
        );
        let err = consumer.seek(&TopicPartition::new("t", 1), 0).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Retriable);
    }
}
