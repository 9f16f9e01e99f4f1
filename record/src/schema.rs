//! The record's schema, written once: one typed row per table, its fields named and ordered
//! as the table's columns. The sink builds these rows, the stores turn them into statements
//! ([`Row::to_values`], [`Table::TABLE`], [`Row::COLUMNS`]) and the queries read them back
//! ([`Row::from_values`]), so a column is named in one place besides the migrations
//! (`migrations/`, described in `SCHEMA.md`).
//!
//! Also here: what the record stores that the sink derives and the record reads ([`GapKind`],
//! and [`DerivationState`], the view of a stream's stored derivation state the timeline needs
//! for intervals and tracks still open).

use serde::de::DeserializeOwned;

use crate::value::Value;

/// A typed row: the fields are the columns, in [`Row::COLUMNS`] order.
pub trait Row: Sized {
    /// Column names, in field order.
    const COLUMNS: &'static [&'static str];
    /// The values to bind, in [`Row::COLUMNS`] order.
    fn to_values(&self) -> Vec<Value>;
    /// A row read with `SELECT` of [`Row::COLUMNS`] (or the view's own columns, in field
    /// order).
    fn from_values(values: Vec<Value>) -> Self;
}

/// A row of a table of the record.
pub trait Table: Row {
    /// The table's name, as the migrations create it.
    const TABLE: &'static str;

    /// `SELECT <columns> FROM <table> <rest>`.
    fn select(rest: &str) -> String {
        format!(
            "SELECT {} FROM {} {rest}",
            Self::COLUMNS.join(", "),
            Self::TABLE
        )
    }
}

/// A field type and its database value.
pub trait Cell: Sized {
    /// The value to bind.
    fn to_value(&self) -> Value;
    /// The field read back (the type's zero for NULL or another type, as the stores never
    /// write those).
    fn from_value(value: Value) -> Self;
}

impl Cell for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
    fn from_value(value: Value) -> Self {
        match value {
            Value::Text(v) => v,
            _ => String::new(),
        }
    }
}

impl Cell for i64 {
    fn to_value(&self) -> Value {
        Value::Int(*self)
    }
    fn from_value(value: Value) -> Self {
        value.int()
    }
}

impl Cell for i32 {
    fn to_value(&self) -> Value {
        Value::from(*self)
    }
    fn from_value(value: Value) -> Self {
        value.int() as i32
    }
}

impl Cell for u64 {
    fn to_value(&self) -> Value {
        Value::from(*self)
    }
    fn from_value(value: Value) -> Self {
        u64::try_from(value.int()).unwrap_or(0)
    }
}

impl Cell for u32 {
    fn to_value(&self) -> Value {
        Value::from(*self)
    }
    fn from_value(value: Value) -> Self {
        u32::try_from(value.int()).unwrap_or(0)
    }
}

impl Cell for Option<i64> {
    fn to_value(&self) -> Value {
        self.map_or(Value::Null, Value::Int)
    }
    fn from_value(value: Value) -> Self {
        match value {
            Value::Null => None,
            value => Some(value.int()),
        }
    }
}

impl Cell for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }
    fn from_value(value: Value) -> Self {
        value.real()
    }
}

impl Cell for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
    fn from_value(value: Value) -> Self {
        match value {
            Value::Blob(v) => v,
            _ => Vec::new(),
        }
    }
}

/// Declares a row struct whose field names are its columns; with `= "table"`, a table's row.
macro_rules! row {
    (
        $(#[$meta:meta])*
        $name:ident $(= $table:literal)? {
            $( $(#[$field_meta:meta])* $field:ident: $ty:ty, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            $( $(#[$field_meta])* pub $field: $ty, )*
        }

        impl $crate::schema::Row for $name {
            const COLUMNS: &'static [&'static str] = &[$(stringify!($field)),*];

            fn to_values(&self) -> Vec<$crate::value::Value> {
                vec![$($crate::schema::Cell::to_value(&self.$field)),*]
            }

            fn from_values(values: Vec<$crate::value::Value>) -> Self {
                let mut cells = values.into_iter();
                Self {
                    $( $field: $crate::schema::Cell::from_value(
                        cells.next().unwrap_or($crate::value::Value::Null),
                    ), )*
                }
            }
        }

        $( impl $crate::schema::Table for $name { const TABLE: &'static str = $table; } )?
    };
}
pub(crate) use row;

row! {
    /// A case: its start is the capture time of its earliest first frame.
    CaseRow = "cases" {
        /// The opaque case id the results carry (never patient data); the key.
        case_id: String,
        /// Capture time of its first frame (UTC ns).
        started_ns: i64,
    }
}

row! {
    /// A case of an operating room, as staff (or the scheduling system) opened and closed it
    /// through ingest: the room's `CaseStarted` and `CaseEnded` events. A case configured on
    /// a stream without a room has none.
    CaseRoomRow = "case_rooms" {
        /// The case; the key.
        case_id: String,
        /// The room it took place in.
        room_id: String,
        /// When the case was started (UTC ns); None until its start is stored.
        opened_ns: Option<i64>,
        /// When it was ended (UTC ns); None while it is open.
        closed_ns: Option<i64>,
        /// Why it ended, as ingest said.
        close_detail: String,
    }
}

impl CaseRoomRow {
    /// When the case began as far as the record knows before any frame of it is stored: its
    /// start, else its end (a start lost), else 0.
    pub fn started_ns(&self) -> i64 {
        self.opened_ns.or(self.closed_ns).unwrap_or(0)
    }
}

row! {
    /// A camera (a stream) that served a room's case: those of the room at its start and
    /// every one added before its end.
    CaseCameraRow = "case_cameras" {
        /// The case; with `stream_id`, the key.
        case_id: String,
        /// The camera's stream.
        stream_id: String,
    }
}

row! {
    /// A stream's figures within a case (upserted with absolute values).
    StreamRow = "streams" {
        /// The case; with `stream_id`, the key: a stream has one row per case it served.
        case_id: String,
        /// The stream.
        stream_id: String,
        /// Capture time of its first frame in the case.
        first_frame_ns: i64,
        /// Capture time of its last frame in the case so far.
        last_frame_ns: i64,
        /// Results stored for it in the case.
        results: u64,
    }
}

row! {
    /// A lifecycle event of a stream, as ingest reported it.
    StreamEventRow = "stream_events" {
        /// The stream.
        stream_id: String,
        /// The case.
        case_id: String,
        /// The epoch it concerns.
        session_epoch: u64,
        /// When (UTC ns).
        time_ns: i64,
        /// started, discontinuity, ended, dropped, error.
        kind: String,
        /// The event's figures as JSON.
        detail: String,
    }
}

row! {
    /// A closed presence interval of a class on a stream.
    EventRow = "events" {
        /// Deterministic id (as published on the events topic).
        event_id: String,
        /// The case.
        case_id: String,
        /// The stream.
        stream_id: String,
        /// Class id from the model card.
        class_id: u32,
        /// Class label.
        label: String,
        /// tool, organ, ... (the proto `Category` name).
        category: String,
        /// UTC ns of the first frame that saw it.
        start_ns: i64,
        /// UTC ns of the last frame that saw it.
        end_ns: i64,
        /// Session epoch of the frames.
        session_epoch: u64,
        /// First frame that saw it.
        first_seq: u64,
        /// Last frame that saw it.
        last_seq: u64,
        /// Frames that saw it.
        frames_seen: u64,
        /// Best score.
        peak_confidence: f64,
        /// Mean score over the frames that saw it.
        mean_confidence: f64,
        /// Model name.
        model_name: String,
        /// Model version.
        model_version: String,
        /// Model digest.
        model_digest: String,
        /// Tool tracks seen in the interval: ascending ids, space-separated.
        track_ids: String,
    }
}

row! {
    /// A closed gap of a stream: no usable frames, a discontinuity or missing results.
    GapRow = "gaps" {
        /// Deterministic id.
        event_id: String,
        /// The case.
        case_id: String,
        /// The stream.
        stream_id: String,
        /// [`GapKind::as_str`].
        kind: String,
        /// Session epoch of the unusable or missing frames, or of the first frame after a
        /// discontinuity.
        session_epoch: u64,
        /// First frame inside the gap.
        first_seq: u64,
        /// Last frame inside the gap.
        last_seq: u64,
        /// UTC ns of the start.
        start_ns: i64,
        /// UTC ns of the end.
        end_ns: i64,
        /// Frames inside the gap.
        frames: u64,
        /// For people: the statuses with their counts, the missing seq range, or the epoch
        /// change.
        reason: String,
    }
}

row! {
    /// An ended tool track with its motion figures.
    TrackRow = "tracks" {
        /// Deterministic id (as published on the events topic).
        event_id: String,
        /// The case.
        case_id: String,
        /// The stream.
        stream_id: String,
        /// Per-stream track id (from 1).
        track_id: u64,
        /// Class id from the model card.
        class_id: u32,
        /// Tool label.
        label: String,
        /// Session epoch of its frames.
        session_epoch: u64,
        /// First assigned frame.
        first_seq: u64,
        /// Last assigned frame.
        last_seq: u64,
        /// UTC ns of its first assignment.
        start_ns: i64,
        /// UTC ns of its last assignment.
        end_ns: i64,
        /// Frames assigned to it.
        frames_seen: u64,
        /// Distance travelled by the filtered centroid (frame units).
        path_length: f64,
        /// Path over its duration (frame units per second).
        mean_speed: f64,
        /// Highest filtered speed (frame units per second).
        peak_speed: f64,
        /// Time spent under the idle speed (ns).
        idle_ns: i64,
        /// Times it came back after being unseen.
        reentries: u64,
        /// Best score of its instances.
        peak_confidence: f64,
        /// Model name.
        model_name: String,
        /// Model version.
        model_version: String,
        /// Model digest.
        model_digest: String,
    }
}

row! {
    /// One point of a track's trajectory (filtered, normalized image coordinates).
    TrackPointRow = "track_points" {
        /// The stream; with `track_id` and `seq`, the key.
        stream_id: String,
        /// The track's id within the stream.
        track_id: u64,
        /// Seq of the frame the point was kept at.
        seq: u64,
        /// The case.
        case_id: String,
        /// Capture time of the frame (UTC ns).
        time_ns: i64,
        /// Centroid, x / width.
        cx: f64,
        /// Centroid, y / height.
        cy: f64,
        /// Box left.
        x0: f64,
        /// Box top.
        y0: f64,
        /// Box right.
        x1: f64,
        /// Box bottom.
        y1: f64,
        /// Filtered speed (frame units per second).
        speed: f64,
    }
}

row! {
    /// One result as stored (when `store_frames` is on).
    FrameRow = "frames" {
        /// The stream; with `session_epoch` and `seq`, the frame's identity and the key.
        stream_id: String,
        /// Session epoch.
        session_epoch: u64,
        /// Frame seq.
        seq: u64,
        /// The case.
        case_id: String,
        /// Capture time (UTC ns).
        capture_ns: i64,
        /// The proto `FrameStatus` name.
        status: String,
        /// Model version.
        model_version: String,
        /// The instances as JSON.
        instances: String,
    }
}

row! {
    /// Something odd about an input message.
    AnomalyRow = "anomalies" {
        /// Topic of the message.
        source_topic: String,
        /// Its partition.
        source_partition: i32,
        /// Its offset.
        source_offset: i64,
        /// `undecodable`, `schema_version`, `out_of_order`, `missing_results`,
        /// `unknown_stream` or `epoch_reset` (see `SCHEMA.md`).
        kind: String,
        /// The stream (or the message key).
        stream_id: String,
        /// What exactly, for people.
        detail: String,
    }
}

row! {
    /// The next offset to read of a partition.
    OffsetRow = "consumer_offsets" {
        /// A topic the sink consumes; with `partition_id`, the key.
        topic: String,
        /// The partition.
        partition_id: i32,
        /// The next offset to read.
        next_offset: i64,
    }
}

row! {
    /// A stream's derivation state (JSON) and its compare-and-set version.
    StateRow = "derivation_state" {
        /// The stream the state is kept for; the key.
        stream_id: String,
        /// Transactions that wrote it.
        version: i64,
        /// The state as JSON.
        state: String,
    }
}

row! {
    /// An encoded message waiting in the outbox.
    OutboxRow = "event_outbox" {
        /// Its deterministic id.
        event_id: String,
        /// The case.
        case_id: String,
        /// The encoded message.
        payload: Vec<u8>,
        /// `events` or `tracks`.
        topic: String,
        /// Partitioning key (empty: the case_id).
        message_key: String,
        /// The input topic whose message derived it.
        source_topic: String,
        /// That message's partition: the sink holding it publishes the entry (-1: any sink).
        source_partition: i32,
    }
}

row! {
    /// An outbox entry read back, with its insertion order.
    QueuedRow {
        /// Insertion order.
        position: i64,
        /// Its deterministic id.
        event_id: String,
        /// The case.
        case_id: String,
        /// The encoded message.
        payload: Vec<u8>,
        /// `events` or `tracks`.
        topic: String,
        /// Partitioning key (empty: the case_id).
        message_key: String,
        /// The input topic whose message derived it.
        source_topic: String,
        /// That message's partition: the sink holding it publishes the entry (-1: any sink).
        source_partition: i32,
    }
}

/// Why a stream had no usable frames for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GapKind {
    /// A run of results with a non-OK status.
    Unusable,
    /// The source reconnected under a new session epoch.
    Discontinuity,
    /// Results are missing (a seq jump within an epoch).
    Missing,
    /// A run of frames ingest's privacy gate withheld: the camera was out of the body (or the
    /// gate could not judge, and failed closed).
    OutOfBody,
}

impl GapKind {
    /// Name stored in the record.
    pub fn as_str(self) -> &'static str {
        match self {
            GapKind::Unusable => "unusable",
            GapKind::Discontinuity => "discontinuity",
            GapKind::Missing => "missing",
            GapKind::OutOfBody => "out_of_body",
        }
    }

    /// Parses [`GapKind::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "unusable" => Some(GapKind::Unusable),
            "discontinuity" => Some(GapKind::Discontinuity),
            "missing" => Some(GapKind::Missing),
            "out_of_body" => Some(GapKind::OutOfBody),
            _ => None,
        }
    }
}

/// A stream's derivation state as stored in `derivation_state`, seen from the record: which
/// case it is on and what it holds open. The sink owns the state (and implements this); the
/// record only reads it, so the timeline shows intervals and tracks that have not closed yet.
pub trait DerivationState: DeserializeOwned {
    /// The case its latest results belong to.
    fn case_id(&self) -> &str;
    /// Presence intervals open right now, as the rows they will be once closed.
    fn open_events(&self) -> Vec<EventRow>;
    /// Tracks live right now, with their figures so far.
    fn open_tracks(&self) -> Vec<TrackRow>;
}
