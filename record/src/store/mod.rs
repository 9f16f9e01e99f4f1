//! The record store: one interface ([`Store`]) over two real backends, PostgreSQL
//! (production) and SQLite (embedded), with the same schema, the same migrations (in each
//! dialect, `migrations/` beside this crate) and the same statements.
//!
//! Everything the sink writes for a batch goes through [`Store::write`] as one [`WriteBatch`]
//! in one transaction: rows, consumer offsets, derivation states and the event outbox. The
//! offsets and states are compare-and-set (the version the sink read must still be there), so
//! a second writer, or a commit whose acknowledgement was lost, surfaces as
//! [`StoreError::Conflict`] instead of a double write. Every row has a natural unique key and
//! is inserted with `ON CONFLICT DO NOTHING`, so a replay changes nothing.
//!
//! Backends implement two small traits (a statement runner and a transaction scope); all SQL
//! is written once with `$N` placeholders (translated to `?N` for SQLite) and in the subset
//! both dialects share. Integers are BIGINT, floats double precision, times nanoseconds.

mod pg_tls;
mod postgres;
mod sqlite;

use std::collections::BTreeMap;

use orstream_bus::TopicPartition;

use serde::de::DeserializeOwned;

use crate::error::StoreError;
use crate::schema::{
    AnomalyRow, CaseCameraRow, CaseRoomRow, CaseRow, DerivationState, EventRow, FrameRow, GapRow,
    OffsetRow, OutboxRow, QueuedRow, Row, StateRow, StreamEventRow, StreamRow, Table,
    TrackPointRow, TrackRow,
};

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// PostgreSQL (production).
    Postgres,
    /// SQLite (embedded).
    Sqlite,
}

impl BackendKind {
    /// Name used in messages.
    pub const fn name(self) -> &'static str {
        match self {
            BackendKind::Postgres => "PostgreSQL",
            BackendKind::Sqlite => "SQLite",
        }
    }
}

pub use crate::value::Value;

/// Runs statements (inside a transaction, or on their own).
pub(crate) trait Sql {
    /// Runs one statement; returns the rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, StoreError>;
    /// Runs one query; returns its rows.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, StoreError>;
    /// Runs several statements without parameters (migrations).
    fn batch(&mut self, sql: &str) -> Result<(), StoreError>;
}

/// A connection of one backend.
pub(crate) trait Connection: Send {
    /// Runs `work` in one transaction: commits if it returns Ok, rolls back otherwise.
    fn transaction(
        &mut self,
        work: &mut dyn FnMut(&mut dyn Sql) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
    /// Statements outside a transaction (reads).
    fn autocommit(&mut self) -> &mut dyn Sql;
    /// Whether the connection is gone and must be replaced.
    fn is_broken(&self) -> bool;
}

/// A migration: version, name, SQL per backend.
struct Migration {
    version: i64,
    name: &'static str,
    postgres: &'static str,
    sqlite: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "record",
        postgres: include_str!("../../migrations/postgres/0001_record.sql"),
        sqlite: include_str!("../../migrations/sqlite/0001_record.sql"),
    },
    Migration {
        version: 2,
        name: "tracks",
        postgres: include_str!("../../migrations/postgres/0002_tracks.sql"),
        sqlite: include_str!("../../migrations/sqlite/0002_tracks.sql"),
    },
    Migration {
        version: 3,
        name: "outbox_source",
        postgres: include_str!("../../migrations/postgres/0003_outbox_source.sql"),
        sqlite: include_str!("../../migrations/sqlite/0003_outbox_source.sql"),
    },
    Migration {
        version: 4,
        name: "audit",
        postgres: include_str!("../../migrations/postgres/0004_audit.sql"),
        sqlite: include_str!("../../migrations/sqlite/0004_audit.sql"),
    },
    Migration {
        version: 5,
        name: "rooms",
        postgres: include_str!("../../migrations/postgres/0005_rooms.sql"),
        sqlite: include_str!("../../migrations/sqlite/0005_rooms.sql"),
    },
];

/// The tables that hold a case's rows, each by its `case_id` column, in the order a deletion
/// empties them.
const CASE_TABLES: &[&str] = &[
    "track_points",
    "tracks",
    "events",
    "gaps",
    "frames",
    "stream_events",
    "streams",
    "event_outbox",
    "case_cameras",
    "case_rooms",
    "cases",
];

/// What one deletion of a case removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    /// The case.
    pub case_id: String,
    /// Rows removed per table (the derivation states of its streams as `derivation_state`);
    /// tables it had no rows in are left out.
    pub rows: BTreeMap<String, u64>,
}

impl Deletion {
    /// Rows removed over every table.
    pub fn total(&self) -> u64 {
        self.rows.values().sum()
    }
}

/// Who deletes, and why: what the audit row keeps besides the counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleter<'a> {
    /// Who asked (a person or a job).
    pub actor: &'a str,
    /// The command, e.g. `delete` or `purge --older-than 30d`.
    pub action: &'a str,
}

/// One row of the append-only audit of deletions.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRow {
    /// When, Unix nanoseconds.
    pub at_ns: i64,
    /// Who asked.
    pub actor: String,
    /// The command.
    pub action: String,
    /// The case deleted.
    pub case_id: String,
    /// Rows removed over every table.
    pub rows_deleted: i64,
    /// Rows removed per table, as `table=count` pairs.
    pub detail: String,
}

/// A consumer offset to store: the next offset to read of a partition, compare-and-set
/// against the one the sink last read from the store (`None`: the store had none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetWrite {
    /// The consumed partition (of the results or the streams topic).
    pub partition: TopicPartition,
    /// What the store held when the sink read it.
    pub expected: Option<i64>,
    /// The next offset to read.
    pub next: i64,
}

/// A derivation state to store, compare-and-set on its version (0: the store had none).
#[derive(Debug, Clone, PartialEq)]
pub struct StateWrite {
    /// The stream whose state this is: the store keeps one per stream.
    pub stream_id: String,
    /// The version the sink read (0 when absent); the stored one becomes `expected + 1`.
    pub expected_version: i64,
    /// The state as JSON.
    pub json: String,
}

/// One batch of the record, written in one transaction by [`Store::write`], each row typed
/// by its table ([`crate::schema`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WriteBatch {
    /// Consumer offsets (compare-and-set).
    pub offsets: Vec<OffsetWrite>,
    /// Derivation states (compare-and-set).
    pub states: Vec<StateWrite>,
    /// Cases with the capture time of a first frame: the case's start becomes the minimum.
    pub cases: Vec<CaseRow>,
    /// Rooms' cases opened (`opened_ns` set) or closed (`closed_ns` set); a row sets only
    /// what it holds, so a case's start and end may come in different batches.
    pub case_rooms: Vec<CaseRoomRow>,
    /// Cameras that served a room's case.
    pub case_cameras: Vec<CaseCameraRow>,
    /// `streams` rows (upserted with absolute values).
    pub streams: Vec<StreamRow>,
    /// `stream_events` rows.
    pub stream_events: Vec<StreamEventRow>,
    /// `events` rows with their outbox payload (None: not published).
    pub events: Vec<(EventRow, Option<Outbox>)>,
    /// `gaps` rows with their outbox payload.
    pub gaps: Vec<(GapRow, Option<Outbox>)>,
    /// `anomalies` rows.
    pub anomalies: Vec<AnomalyRow>,
    /// `frames` rows.
    pub frames: Vec<FrameRow>,
    /// `tracks` rows with their outbox payload.
    pub tracks: Vec<(TrackRow, Option<Outbox>)>,
    /// `track_points` rows.
    pub track_points: Vec<TrackPointRow>,
    /// Per-frame track assignments to publish (no table of their own).
    pub track_frames: Vec<Outbox>,
}

impl WriteBatch {
    /// Rows of the record in the batch (not counting offsets, states and the outbox).
    pub fn rows(&self) -> usize {
        self.cases.len()
            + self.case_rooms.len()
            + self.case_cameras.len()
            + self.streams.len()
            + self.stream_events.len()
            + self.events.len()
            + self.gaps.len()
            + self.anomalies.len()
            + self.frames.len()
            + self.tracks.len()
            + self.track_points.len()
    }
}

/// Which topic an outbox entry goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxTopic {
    /// `SurgicalEvent`s, keyed by case_id.
    Events,
    /// `TrackFrame`s, keyed by stream_id.
    Tracks,
}

impl OutboxTopic {
    /// Name stored in the outbox.
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxTopic::Events => "events",
            OutboxTopic::Tracks => "tracks",
        }
    }
}

/// An encoded message waiting to be published: a `SurgicalEvent`, or a `TrackFrame`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbox {
    /// Its deterministic id.
    pub event_id: String,
    /// The case.
    pub case_id: String,
    /// Where it goes.
    pub topic: OutboxTopic,
    /// Partitioning key: the case_id for events, the stream_id for track frames.
    pub key: String,
    /// The encoded message.
    pub payload: Vec<u8>,
    /// The input partition whose message derived it (topic, partition): the sink that holds
    /// that partition publishes it. Partition -1: any sink may.
    pub source: (String, i32),
}

/// An outbox entry read back, with its position for deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxItem {
    /// Insertion order.
    pub position: i64,
    /// The entry as it was written: an event or a track frame.
    pub entry: Outbox,
}

/// The tables of the record and their keys, in the order [`Store::snapshot`] renders them.
const SNAPSHOT: &[(&str, &str, &str)] = &[
    ("cases", "*", "case_id"),
    ("case_rooms", "*", "case_id"),
    ("case_cameras", "*", "case_id, stream_id"),
    ("streams", "*", "case_id, stream_id"),
    (
        "stream_events",
        "*",
        "stream_id, session_epoch, kind, time_ns",
    ),
    ("events", "*", "event_id"),
    ("gaps", "*", "event_id"),
    ("tracks", "*", "event_id"),
    ("track_points", "*", "stream_id, track_id, seq"),
    ("frames", "*", "stream_id, session_epoch, seq"),
    (
        "anomalies",
        "*",
        "source_topic, source_partition, source_offset, kind",
    ),
    ("consumer_offsets", "*", "topic, partition_id"),
    // The version counts transactions, which differ with batch boundaries; the state itself
    // must not.
    ("derivation_state", "stream_id, state", "stream_id"),
];

/// The record store. Reconnects by itself after a lost connection; every call says whether
/// its failure is worth retrying ([`StoreError::is_retriable`]).
pub struct Store {
    url: String,
    kind: BackendKind,
    conn: Option<Box<dyn Connection>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.kind)
            .field("url", &redact(&self.url))
            .finish()
    }
}

/// `url` with any password replaced by `***`, for messages and logs: the one in its user
/// information (`user:PASSWORD@host`) and the value of every query parameter that holds a
/// secret (`?password=`, `sslpassword=`, any key naming a password, secret or token).
pub fn redact(url: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    let mut out = match head.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((userinfo, host)) if userinfo.contains(':') => {
                    let user = userinfo.split(':').next().unwrap_or_default();
                    format!("{scheme}://{user}:***@{host}{path}")
                }
                _ => head.to_owned(),
            }
        }
        None => head.to_owned(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if is_secret_key(key) => format!("{key}=***"),
                _ => param.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

/// Whether a URL query key names a secret.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "passwd", "secret", "token"]
        .iter()
        .any(|word| key.contains(word))
}

impl Store {
    /// Opens the store at `url` and brings its schema up to date: `sqlite://PATH` (the file
    /// is created if missing), `sqlite::memory:` (a private in-memory database), or a
    /// `postgres://` / `postgresql://` URL (libpq style parameters such as `options` and
    /// `connect_timeout` are honoured).
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let kind = Self::kind_of(url)?;
        let mut store = Self {
            url: url.to_owned(),
            kind,
            conn: None,
        };
        store.connection()?;
        Ok(store)
    }

    /// Which backend `url` names.
    pub fn kind_of(url: &str) -> Result<BackendKind, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(BackendKind::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(BackendKind::Postgres)
        } else {
            Err(StoreError::Url { url: redact(url) })
        }
    }

    /// Which database this store runs on, as its URL's scheme said.
    pub fn backend(&self) -> BackendKind {
        self.kind
    }

    /// The URL without its password.
    pub fn url(&self) -> String {
        redact(&self.url)
    }

    /// The connection, (re)connecting and migrating when there is none.
    fn connection(&mut self) -> Result<&mut Box<dyn Connection>, StoreError> {
        if self.conn.as_ref().is_some_and(|c| c.is_broken()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let mut conn: Box<dyn Connection> = match self.kind {
                BackendKind::Postgres => Box::new(postgres::PgConnection::connect(&self.url)?),
                BackendKind::Sqlite => Box::new(sqlite::SqliteConnection::open(&self.url)?),
            };
            migrate(conn.as_mut(), self.kind)?;
            self.conn = Some(conn);
        }
        self.conn.as_mut().ok_or_else(|| StoreError::Database {
            backend: self.kind.name(),
            op: "connect".to_owned(),
            reason: "no connection".to_owned(),
            retriable: true,
        })
    }

    /// Runs `f` on the connection; a retriable failure drops the connection so the next call
    /// starts from a fresh one.
    fn with<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.connection()?;
        let result = f(conn.as_mut());
        if let Err(e) = &result
            && matches!(
                e,
                StoreError::Database {
                    retriable: true,
                    ..
                }
            )
            && self.kind == BackendKind::Postgres
        {
            self.conn = None;
        }
        result
    }

    /// Checks that the database answers, reconnecting when the connection was lost.
    pub fn ping(&mut self) -> Result<(), StoreError> {
        self.query("SELECT 1", &[]).map(|_| ())
    }

    /// Runs a read query (for record views).
    pub fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>, StoreError> {
        self.with(|c| c.autocommit().query(sql, params))
    }

    /// Writes `batch` in one transaction. [`StoreError::Conflict`] means nothing was written
    /// because an offset or state moved since it was read.
    pub fn write(&mut self, batch: &WriteBatch) -> Result<(), StoreError> {
        self.with(|c| c.transaction(&mut |sql| write_batch(sql, batch)))
    }

    /// Runs a read query whose columns are `R`'s fields, in order; returns typed rows.
    pub fn rows<R: Row>(&mut self, sql: &str, params: &[Value]) -> Result<Vec<R>, StoreError> {
        Ok(self
            .query(sql, params)?
            .into_iter()
            .map(R::from_values)
            .collect())
    }

    /// Every stored consumer offset (next offset to read per partition).
    pub fn offsets(&mut self) -> Result<BTreeMap<TopicPartition, i64>, StoreError> {
        let rows: Vec<OffsetRow> = self.rows(&OffsetRow::select(""), &[])?;
        Ok(rows
            .into_iter()
            .map(|r| (TopicPartition::new(r.topic, r.partition_id), r.next_offset))
            .collect())
    }

    /// A stream's stored derivation state and its version.
    pub fn load_state<S: DeserializeOwned>(
        &mut self,
        stream_id: &str,
    ) -> Result<Option<(i64, S)>, StoreError> {
        let rows: Vec<StateRow> = self.rows(
            &StateRow::select("WHERE stream_id = $1"),
            &[stream_id.into()],
        )?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        Ok(Some((row.version, parse_state(&row)?)))
    }

    /// Every stored derivation state of streams whose latest results belong to `case_id`.
    pub fn states_of_case<S: DerivationState>(
        &mut self,
        case_id: &str,
    ) -> Result<Vec<S>, StoreError> {
        let rows: Vec<StateRow> = self.rows(&StateRow::select("ORDER BY stream_id"), &[])?;
        let mut out = Vec::new();
        for row in rows {
            let state: S = parse_state(&row)?;
            if state.case_id() == case_id {
                out.push(state);
            }
        }
        Ok(out)
    }

    /// Deletes everything the record holds of `case_id`, in one transaction: its rows in every
    /// table that has a `case_id`, its outbox entries not yet published, and the derivation
    /// states whose latest results belong to it; and in the same transaction appends an
    /// audit row saying who, when, what and how many rows. A case with no rows still gets its
    /// audit row (the request is on record). Anomalies (keyed by their source message, not
    /// by case) stay.
    pub fn delete_case<S: DerivationState>(
        &mut self,
        case_id: &str,
        by: &Deleter<'_>,
    ) -> Result<Deletion, StoreError> {
        let mut deletion = Deletion {
            case_id: case_id.to_owned(),
            rows: BTreeMap::new(),
        };
        let at_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        self.with(|c| {
            c.transaction(&mut |sql| {
                deletion.rows.clear();
                for table in CASE_TABLES {
                    let removed = sql.execute(
                        &format!("DELETE FROM {table} WHERE case_id = $1"),
                        &[case_id.into()],
                    )?;
                    if removed > 0 {
                        deletion.rows.insert((*table).to_owned(), removed);
                    }
                }
                let mut removed = 0;
                for values in sql.query(&StateRow::select(""), &[])? {
                    let row = StateRow::from_values(values);
                    if parse_state::<S>(&row)?.case_id() == case_id {
                        removed += sql.execute(
                            "DELETE FROM derivation_state WHERE stream_id = $1",
                            &[row.stream_id.as_str().into()],
                        )?;
                    }
                }
                if removed > 0 {
                    deletion.rows.insert("derivation_state".to_owned(), removed);
                }
                let detail: Vec<String> = deletion
                    .rows
                    .iter()
                    .map(|(table, n)| format!("{table}={n}"))
                    .collect();
                sql.execute(
                    "INSERT INTO record_audit (at_ns, actor, action, case_id, rows_deleted, \
                     detail) VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        at_ns.into(),
                        by.actor.into(),
                        by.action.into(),
                        case_id.into(),
                        i64::try_from(deletion.total()).unwrap_or(i64::MAX).into(),
                        detail.join(" ").into(),
                    ],
                )?;
                Ok(())
            })
        })?;
        Ok(deletion)
    }

    /// The cases whose last sign of life (a frame's capture, a stream event) is before
    /// `cutoff_ns`, oldest first: closed for at least that long, as far as the record knows.
    pub fn cases_quiet_since(&mut self, cutoff_ns: i64) -> Result<Vec<String>, StoreError> {
        let rows = self.query(
            "SELECT c.case_id FROM cases c \
             LEFT JOIN (SELECT case_id, MAX(last_frame_ns) AS last_ns FROM streams \
                        GROUP BY case_id) s ON s.case_id = c.case_id \
             LEFT JOIN (SELECT case_id, MAX(time_ns) AS last_ns FROM stream_events \
                        GROUP BY case_id) e ON e.case_id = c.case_id \
             WHERE COALESCE(s.last_ns, c.started_ns) < $1 \
               AND COALESCE(e.last_ns, c.started_ns) < $1 \
               AND c.started_ns < $1 \
             ORDER BY c.started_ns, c.case_id",
            &[cutoff_ns.into()],
        )?;
        Ok(rows.into_iter().map(|r| r[0].text().to_owned()).collect())
    }

    /// Appends a read of `case_id`'s record by `actor` at `at_ns` (UTC) to the audit
    /// (`action`, e.g. `read timeline`), with no rows deleted.
    pub fn audit_read(
        &mut self,
        at_ns: i64,
        actor: &str,
        action: &str,
        case_id: &str,
    ) -> Result<(), StoreError> {
        self.with(|c| {
            c.autocommit()
                .execute(
                    "INSERT INTO record_audit (at_ns, actor, action, case_id, rows_deleted, \
                     detail) VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        at_ns.into(),
                        actor.into(),
                        action.into(),
                        case_id.into(),
                        0i64.into(),
                        "".into(),
                    ],
                )
                .map(|_| ())
        })
    }

    /// The audit of deletions and reads, oldest first.
    pub fn audit(&mut self) -> Result<Vec<AuditRow>, StoreError> {
        let rows = self.query(
            "SELECT at_ns, actor, action, case_id, rows_deleted, detail FROM record_audit \
             ORDER BY position",
            &[],
        )?;
        Ok(rows
            .into_iter()
            .map(|r| AuditRow {
                at_ns: r[0].int(),
                actor: r[1].text().to_owned(),
                action: r[2].text().to_owned(),
                case_id: r[3].text().to_owned(),
                rows_deleted: r[4].int(),
                detail: r[5].text().to_owned(),
            })
            .collect())
    }

    /// The stored start of a case (capture time of its first frame), if any.
    pub fn case_start(&mut self, case_id: &str) -> Result<Option<i64>, StoreError> {
        let rows: Vec<CaseRow> =
            self.rows(&CaseRow::select("WHERE case_id = $1"), &[case_id.into()])?;
        Ok(rows.first().map(|r| r.started_ns))
    }

    /// The room a case took place in, if it was a room's case and its start or end is stored.
    pub fn room_of_case(&mut self, case_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.case_room(case_id)?.map(|r| r.room_id))
    }

    /// A room's case as the room opened and closed it, if its start or end is stored.
    pub fn case_room(&mut self, case_id: &str) -> Result<Option<CaseRoomRow>, StoreError> {
        let rows: Vec<CaseRoomRow> = self.rows(
            &CaseRoomRow::select("WHERE case_id = $1"),
            &[case_id.into()],
        )?;
        Ok(rows.into_iter().next())
    }

    /// Up to `limit` events waiting to be published, oldest first.
    pub fn outbox(&mut self, limit: usize) -> Result<Vec<OutboxItem>, StoreError> {
        self.outbox_of(limit, None)
    }

    /// The oldest `limit` outbox entries derived from the input partitions `sources` (and the
    /// entries of no partition), in insertion order: what a sink that holds those partitions
    /// publishes. `None`: every entry.
    pub fn outbox_of(
        &mut self,
        limit: usize,
        sources: Option<&[(String, i32)]>,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let mut params: Vec<Value> = vec![(limit as u64).into()];
        let mut filter = String::new();
        if let Some(sources) = sources {
            let mut any = vec!["source_partition < 0".to_owned()];
            for (topic, partition) in sources {
                params.push(topic.clone().into());
                params.push(i64::from(*partition).into());
                any.push(format!(
                    "(source_topic = ${} AND source_partition = ${})",
                    params.len() - 1,
                    params.len()
                ));
            }
            filter = format!("WHERE {}", any.join(" OR "));
        }
        let rows: Vec<QueuedRow> = self.rows(
            &format!(
                "SELECT {} FROM event_outbox {filter} ORDER BY position LIMIT $1",
                QueuedRow::COLUMNS.join(", ")
            ),
            &params,
        )?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let topic = match r.topic.as_str() {
                    "tracks" => OutboxTopic::Tracks,
                    _ => OutboxTopic::Events,
                };
                let key = match r.message_key.as_str() {
                    "" => r.case_id.clone(),
                    _ => r.message_key,
                };
                OutboxItem {
                    position: r.position,
                    entry: Outbox {
                        event_id: r.event_id,
                        case_id: r.case_id,
                        topic,
                        key,
                        payload: r.payload,
                        source: (r.source_topic, r.source_partition),
                    },
                }
            })
            .collect())
    }

    /// Forgets the published outbox entries at `positions`: exactly those, so an entry another
    /// sink added meanwhile (a position in between, committed later) stays.
    pub fn delete_outbox(&mut self, positions: &[i64]) -> Result<(), StoreError> {
        if positions.is_empty() {
            return Ok(());
        }
        let marks: Vec<String> = (1..=positions.len()).map(|i| format!("${i}")).collect();
        let statement = format!(
            "DELETE FROM event_outbox WHERE position IN ({})",
            marks.join(", ")
        );
        let values: Vec<Value> = positions.iter().map(|&p| p.into()).collect();
        self.with(|c| c.autocommit().execute(&statement, &values).map(drop))
    }

    /// Every row of the record, table by table in key order, each rendered canonically (equal
    /// records give equal snapshots, on either backend). The outbox is left out (it empties
    /// as events are published) and so are state versions (they count transactions).
    pub fn snapshot(&mut self) -> Result<BTreeMap<String, Vec<String>>, StoreError> {
        let mut out = BTreeMap::new();
        for (table, columns, key) in SNAPSHOT {
            let rows = self.query(
                &format!("SELECT {columns} FROM {table} ORDER BY {key}"),
                &[],
            )?;
            out.insert(
                (*table).to_owned(),
                rows.iter()
                    .map(|r| r.iter().map(Value::render).collect::<Vec<_>>().join(" | "))
                    .collect(),
            );
        }
        Ok(out)
    }
}

fn parse_state<S: DeserializeOwned>(row: &StateRow) -> Result<S, StoreError> {
    serde_json::from_str(&row.state).map_err(|e| StoreError::State {
        stream_id: row.stream_id.clone(),
        reason: e.to_string(),
    })
}

fn migrate(conn: &mut dyn Connection, kind: BackendKind) -> Result<(), StoreError> {
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    conn.transaction(&mut |sql| {
        if kind == BackendKind::Postgres {
            // Two sinks starting together must not both create the tables.
            sql.query("SELECT pg_advisory_xact_lock(7461626)", &[])?;
        }
        sql.batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (\
                 version BIGINT PRIMARY KEY, name TEXT NOT NULL)",
        )?;
        let rows = sql.query("SELECT version FROM schema_migrations", &[])?;
        let applied: Vec<i64> = rows
            .iter()
            .flat_map(|r| r.first().map(Value::int))
            .collect();
        if let Some(&found) = applied.iter().max()
            && found > known
        {
            return Err(StoreError::SchemaTooNew {
                backend: kind.name(),
                found,
                known,
            });
        }
        for m in MIGRATIONS {
            if applied.contains(&m.version) {
                continue;
            }
            sql.batch(match kind {
                BackendKind::Postgres => m.postgres,
                BackendKind::Sqlite => m.sqlite,
            })?;
            sql.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[m.version.into(), m.name.into()],
            )?;
            tracing::info!(
                backend = kind.name(),
                version = m.version,
                name = m.name,
                "migrated"
            );
        }
        Ok(())
    })
}

fn conflict(what: String) -> StoreError {
    StoreError::Conflict { what }
}

fn write_batch(sql: &mut dyn Sql, batch: &WriteBatch) -> Result<(), StoreError> {
    // Offsets and states first: if another writer moved them, nothing else is attempted.
    compare_and_set(sql, batch)?;
    write_rows(sql, batch)
}

/// Moves the batch's offsets and states on from the versions the sink read, or fails with a
/// conflict.
fn compare_and_set(sql: &mut dyn Sql, batch: &WriteBatch) -> Result<(), StoreError> {
    for o in &batch.offsets {
        let changed = match o.expected {
            None => sql.execute(
                "INSERT INTO consumer_offsets (topic, partition_id, next_offset) \
                 VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[
                    o.partition.topic.as_str().into(),
                    o.partition.partition.into(),
                    o.next.into(),
                ],
            )?,
            Some(expected) => sql.execute(
                "UPDATE consumer_offsets SET next_offset = $1 \
                 WHERE topic = $2 AND partition_id = $3 AND next_offset = $4",
                &[
                    o.next.into(),
                    o.partition.topic.as_str().into(),
                    o.partition.partition.into(),
                    expected.into(),
                ],
            )?,
        };
        if changed != 1 {
            return Err(conflict(format!("offset of {}", o.partition)));
        }
    }
    for s in &batch.states {
        let changed = if s.expected_version == 0 {
            sql.execute(
                "INSERT INTO derivation_state (stream_id, version, state) VALUES ($1, 1, $2) \
                 ON CONFLICT DO NOTHING",
                &[s.stream_id.as_str().into(), s.json.as_str().into()],
            )?
        } else {
            sql.execute(
                "UPDATE derivation_state SET version = version + 1, state = $1 \
                 WHERE stream_id = $2 AND version = $3",
                &[
                    s.json.as_str().into(),
                    s.stream_id.as_str().into(),
                    s.expected_version.into(),
                ],
            )?
        };
        if changed != 1 {
            return Err(conflict(format!("state of stream {}", s.stream_id)));
        }
    }
    Ok(())
}

/// The record's rows; each table's natural key makes a replayed row a no-op.
fn write_rows(sql: &mut dyn Sql, batch: &WriteBatch) -> Result<(), StoreError> {
    for case in &batch.cases {
        // The case starts at its earliest first frame, whichever stream's result came first.
        sql.execute(
            "INSERT INTO cases (case_id, started_ns) VALUES ($1, $2) \
             ON CONFLICT (case_id) DO UPDATE SET started_ns = \
             CASE WHEN excluded.started_ns < cases.started_ns \
             THEN excluded.started_ns ELSE cases.started_ns END",
            &case.to_values(),
        )?;
    }
    for row in &batch.case_rooms {
        // A replayed start or end rewrites the same values; an end never reopens a case and
        // a start never clears its end.
        sql.execute(
            "INSERT INTO case_rooms (case_id, room_id, opened_ns, closed_ns, close_detail) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (case_id) DO UPDATE SET \
             room_id = excluded.room_id, \
             opened_ns = COALESCE(excluded.opened_ns, case_rooms.opened_ns), \
             closed_ns = COALESCE(excluded.closed_ns, case_rooms.closed_ns), \
             close_detail = CASE WHEN excluded.closed_ns IS NULL \
             THEN case_rooms.close_detail ELSE excluded.close_detail END",
            &row.to_values(),
        )?;
    }
    for row in &batch.case_cameras {
        sql.execute(
            "INSERT INTO case_cameras (case_id, stream_id) VALUES ($1, $2) \
             ON CONFLICT (case_id, stream_id) DO NOTHING",
            &row.to_values(),
        )?;
    }
    for row in &batch.streams {
        sql.execute(
            "INSERT INTO streams (case_id, stream_id, first_frame_ns, last_frame_ns, results) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (case_id, stream_id) DO UPDATE SET \
             first_frame_ns = excluded.first_frame_ns, last_frame_ns = excluded.last_frame_ns, \
             results = excluded.results",
            &row.to_values(),
        )?;
    }
    insert_rows(sql, &batch.stream_events)?;
    insert_published(sql, &batch.events)?;
    insert_published(sql, &batch.gaps)?;
    insert_published(sql, &batch.tracks)?;
    insert_rows(sql, &batch.anomalies)?;
    insert_rows(sql, &batch.frames)?;
    insert_rows(sql, &batch.track_points)?;
    // Track frames have no row to deduplicate on: they come only from input read past the
    // stored offsets, which this same transaction moves on. One per frame with a tool, so
    // they go in multi-row statements.
    let track_frames: Vec<OutboxRow> = batch.track_frames.iter().map(outbox_row).collect();
    insert_rows(sql, &track_frames)?;
    Ok(())
}

/// Inserts rows that are published once stored: only a first insert goes to the outbox, as
/// a replayed one is already in the outbox or out.
fn insert_published<R: Table>(
    sql: &mut dyn Sql,
    rows: &[(R, Option<Outbox>)],
) -> Result<(), StoreError> {
    let statement = insert_statement(R::TABLE, R::COLUMNS, 1);
    for (row, outbox) in rows {
        let inserted = sql.execute(&statement, &row.to_values())?;
        if inserted == 1
            && let Some(o) = outbox
        {
            insert_rows(sql, std::slice::from_ref(&outbox_row(o)))?;
        }
    }
    Ok(())
}

fn outbox_row(o: &Outbox) -> OutboxRow {
    OutboxRow {
        event_id: o.event_id.clone(),
        case_id: o.case_id.clone(),
        payload: o.payload.clone(),
        topic: o.topic.as_str().to_owned(),
        message_key: o.key.clone(),
        source_topic: o.source.0.clone(),
        source_partition: o.source.1,
    }
}

/// `INSERT INTO table (columns) VALUES (...), ... ON CONFLICT DO NOTHING` for `rows` rows.
fn insert_statement(table: &str, columns: &[&str], rows: usize) -> String {
    let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
    let mut n = 1;
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for c in 0..columns.len() {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&n.to_string());
            n += 1;
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT DO NOTHING");
    sql
}

/// Inserts rows in multi-row statements of a few fixed sizes, so the backends can keep the
/// statements prepared and the number of round trips stays small.
fn insert_rows<R: Table>(sql: &mut dyn Sql, rows: &[R]) -> Result<(), StoreError> {
    const CHUNKS: [usize; 4] = [128, 32, 8, 1];
    let mut rest = rows;
    while !rest.is_empty() {
        let size = CHUNKS.into_iter().find(|&c| c <= rest.len()).unwrap_or(1);
        let (chunk, tail) = rest.split_at(size);
        let params: Vec<Value> = chunk.iter().flat_map(Row::to_values).collect();
        sql.execute(&insert_statement(R::TABLE, R::COLUMNS, size), &params)?;
        rest = tail;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://orstream:secret@127.0.0.1:55432/db?x=1"),
            "postgres://orstream:***@127.0.0.1:55432/db?x=1"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://record.db"), "sqlite://record.db");
        assert_eq!(
            redact("postgres://u@h/db?password=hunter2&sslmode=verify-full&sslpassword=k3y"),
            "postgres://u@h/db?password=***&sslmode=verify-full&sslpassword=***"
        );
        assert_eq!(
            redact("postgres://u:p@h/db?options=-c%20x%3D1&api_token=t"),
            "postgres://u:***@h/db?options=-c%20x%3D1&api_token=***"
        );
    }

    #[test]
    fn insert_statements_number_their_placeholders() {
        assert_eq!(
            insert_statement("t", &["a", "b"], 2),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4) ON CONFLICT DO NOTHING"
        );
    }

    #[test]
    fn unknown_urls_are_refused() {
        assert!(matches!(
            Store::open("mysql://x"),
            Err(StoreError::Url { .. })
        ));
    }
}
