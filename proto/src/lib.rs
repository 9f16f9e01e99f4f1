//! orstream's wire contract, version 1.
//!
//! - [`v1`]: the protobuf messages generated from `proto/orstream/v1/orstream.proto` into
//!   `OUT_DIR` (re-exported at the crate root): [`Frame`], [`StreamEvent`], [`FrameResult`],
//!   [`Instance`], [`SurgicalEvent`] and their parts.
//! - [`topics`] and [`headers`]: the names every service agrees on.
//! - The rules every service applies alike: [`check_schema_version`], a frame's identity
//!   ([`FrameKey`]), the stored names of statuses and categories ([`FrameStatus::name`],
//!   [`Category::name`], read from the proto enums) and what a status means for accounting
//!   ([`Outcome`]).
//! - [`wire`]: bounded, validating decoding. Bytes from the bus are untrusted: the length is
//!   checked before prost sees them, and a decoded message is checked for the fields its
//!   consumers rely on, so a bad message becomes a [`DecodeError`] that says why — never a panic
//!   and never an unbounded allocation.
//! - [`rle`]: the run-length mask encoding used by [`RleMask`].
//!
//! Data comes in as bytes from a bus message and goes out as a typed message (and back).

pub mod rle;
pub mod wire;

/// Generated protobuf types of the v1 contract.
#[allow(missing_docs, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/orstream.v1.rs"));
}

pub use v1::*;
pub use wire::{DecodeError, Wire, decode, decode_with_limit, encode};

impl FrameStatus {
    /// The status as a span attribute or metric label (`orstream.status`): `ok`,
    /// `skipped_stale`, `skipped_overload`, `decode_error`, `invalid`, `model_error`,
    /// `redacted`, `unspecified`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Ok => "ok",
            Self::SkippedStale => "skipped_stale",
            Self::SkippedOverload => "skipped_overload",
            Self::DecodeError => "decode_error",
            Self::Invalid => "invalid",
            Self::ModelError => "model_error",
            Self::Redacted => "redacted",
        }
    }

    /// [`label`](Self::label) of a status as carried on the wire (`unspecified` when unknown).
    pub fn label_of(status: i32) -> &'static str {
        Self::try_from(status).map_or("unspecified", Self::label)
    }

    /// The status as the record stores and shows it: the proto enum name without its
    /// `FRAME_STATUS_` prefix (`OK`, `SKIPPED_STALE`, ...). Read from the generated enum so a
    /// status added to the proto gets its name with no code change.
    pub fn name(self) -> &'static str {
        let full = self.as_str_name();
        full.strip_prefix("FRAME_STATUS_").unwrap_or(full)
    }

    /// [`name`](Self::name) of a status as carried on the wire (`UNSPECIFIED` when unknown).
    pub fn name_of(status: i32) -> &'static str {
        Self::try_from(status).unwrap_or(Self::Unspecified).name()
    }

    /// Parses [`name`](Self::name); `None` for a name the contract does not have.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::from_str_name(&format!("FRAME_STATUS_{name}"))
    }

    /// What the status means for a frame's accounting.
    pub fn outcome(self) -> Outcome {
        match self {
            Self::Ok => Outcome::Ok,
            Self::SkippedStale | Self::SkippedOverload => Outcome::Skipped,
            Self::Redacted => Outcome::Redacted,
            Self::Unspecified | Self::DecodeError | Self::Invalid | Self::ModelError => {
                Outcome::Failed
            }
        }
    }
}

/// A frame's result in the record's accounting: every frame published ends as exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The model ran on it.
    Ok,
    /// Live mode let it go unrun (stale or superseded): counted, not an error.
    Skipped,
    /// Undecodable, invalid, or the model failed on it.
    Failed,
    /// Withheld by ingest's privacy gate (camera out of body): counted, never an image.
    Redacted,
}

impl Category {
    /// The category as the record stores and shows it: the proto enum name without its
    /// `CATEGORY_` prefix, in lower case (`tool`, `organ`, `background`, `other`,
    /// `unspecified`).
    pub fn name(self) -> &'static str {
        // Lower case is what the record has always stored; the match is tied to the proto names
        // by a test.
        match self {
            Self::Unspecified => "unspecified",
            Self::Tool => "tool",
            Self::Organ => "organ",
            Self::Background => "background",
            Self::Other => "other",
        }
    }

    /// [`name`](Self::name) of a category as carried on the wire (`unspecified` when unknown).
    pub fn name_of(category: i32) -> &'static str {
        Self::try_from(category).unwrap_or(Self::Unspecified).name()
    }

    /// Parses [`name`](Self::name); an unknown name is [`Category::Unspecified`].
    pub fn from_name(name: &str) -> Self {
        Self::from_str_name(&format!("CATEGORY_{}", name.to_ascii_uppercase()))
            .unwrap_or(Self::Unspecified)
    }
}

/// Which frame a frame message, its result or its record row is about: a stream's frame
/// number within one capture session. Results and rows are deduplicated on it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FrameKey {
    /// The camera stream.
    pub stream_id: String,
    /// The capture session: a reconnect starts a new one, and `seq` starts again.
    pub session_epoch: u64,
    /// The frame's number within the session.
    pub seq: u64,
}

impl FrameResult {
    /// The identity of the frame this result answers.
    pub fn key(&self) -> FrameKey {
        FrameKey {
            stream_id: self.stream_id.clone(),
            session_epoch: self.session_epoch,
            seq: self.seq,
        }
    }
}

impl StreamEvent {
    /// A room's case event (`CaseStarted`, `CaseEnded`): the room and the case named, no
    /// stream, no epoch.
    pub fn for_room(room_id: &str, case_id: &str, time_ns: i64, kind: stream_event::Kind) -> Self {
        Self {
            room_id: room_id.to_owned(),
            case_id: case_id.to_owned(),
            time_ns,
            kind: Some(kind),
            ..Self::default()
        }
    }
}

/// Why a message's schema version header is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The header is absent.
    #[error(
        "no {} header (every message carries version {SCHEMA_VERSION})",
        headers::SCHEMA_VERSION
    )]
    Missing,
    /// The header names a version this build does not read.
    #[error("unknown schema version {0:?} (this build reads {SCHEMA_VERSION})")]
    Unknown(String),
}

/// The contract's version rule, the same for every consumer: the
/// [`headers::SCHEMA_VERSION`] header is required and must be [`SCHEMA_VERSION`]. Required,
/// not defaulted, so a producer that never set it cannot have a later version's payload read as
/// this one's.
pub fn check_schema_version(header: Option<&[u8]>) -> Result<(), VersionError> {
    match header {
        Some(v) if v == SCHEMA_VERSION.as_bytes() => Ok(()),
        Some(v) => Err(VersionError::Unknown(
            String::from_utf8_lossy(v).into_owned(),
        )),
        None => Err(VersionError::Missing),
    }
}

/// The schema version carried in the [`headers::SCHEMA_VERSION`] header of every message.
pub const SCHEMA_VERSION: &str = "1";

/// Topic names of the v1 contract.
pub mod topics {
    /// Frames, keyed by stream_id.
    pub const FRAMES: &str = "or.frames.v1";
    /// Stream lifecycle events, keyed by stream_id.
    pub const STREAMS: &str = "or.streams.v1";
    /// One result per frame, keyed by stream_id.
    pub const RESULTS: &str = "or.results.v1";
    /// Derived surgical events, keyed by case_id.
    pub const EVENTS: &str = "or.events.v1";
    /// Tool track assignments per frame, keyed by stream_id.
    pub const TRACKS: &str = "or.tracks.v1";

    /// How long a topic the services create keeps its messages, unless it holds frames: a
    /// week, long enough to replay results into a rebuilt record or to look into a dead
    /// letter after a long weekend, short enough that the bus is not a second, unmanaged
    /// copy of the record (the database is the record, with its own deletion).
    pub const RETENTION: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

    /// How long the frames topic keeps its frames by default (ingest's `frames_retention`):
    /// an hour. Frames are raw operating-room video, the most sensitive data in the system,
    /// and are worth nothing once inferred; an hour covers an inference outage of that long.
    pub const FRAMES_RETENTION: std::time::Duration = std::time::Duration::from_secs(3600);

    /// The dead-letter topic for messages that could not be processed from `topic`.
    pub fn dlq(topic: &str) -> String {
        format!("{topic}.dlq")
    }
}

/// Header names carried on every bus message.
pub mod headers {
    /// The contract version of the payload ([`crate::SCHEMA_VERSION`]).
    pub const SCHEMA_VERSION: &str = "orstream-schema-version";
    /// W3C trace context, so one trace follows a frame from capture to the database row.
    pub const TRACEPARENT: &str = "traceparent";
    /// Dead letters: the topic the message was read from.
    pub const DLQ_SOURCE_TOPIC: &str = "orstream-dlq-source-topic";
    /// Dead letters: the partition the message was read from.
    pub const DLQ_SOURCE_PARTITION: &str = "orstream-dlq-source-partition";
    /// Dead letters: the offset the message was read at.
    pub const DLQ_SOURCE_OFFSET: &str = "orstream-dlq-source-offset";
    /// Dead letters: why the message was rejected.
    pub const DLQ_ERROR: &str = "orstream-dlq-error";
    /// Dead letters: the length of the original payload, when the dead letter carries only its
    /// beginning (the whole would not fit the broker's message limit).
    pub const DLQ_ORIGINAL_LENGTH: &str = "orstream-dlq-original-length";
}

#[cfg(test)]
mod tests {
    use super::{Category, FrameStatus};

    #[test]
    fn status_labels_are_the_contract_names_in_lower_case() {
        for value in 0..=7 {
            let status = FrameStatus::try_from(value).unwrap_or(FrameStatus::Unspecified);
            let contract = status
                .as_str_name()
                .trim_start_matches("FRAME_STATUS_")
                .to_ascii_lowercase();
            assert_eq!(status.label(), contract);
            assert_eq!(FrameStatus::label_of(value), contract);
        }
        assert_eq!(FrameStatus::label_of(99), "unspecified");
    }

    #[test]
    fn stored_names_come_from_the_proto_enums_and_parse_back() {
        for value in 0..=7 {
            let status = FrameStatus::try_from(value).unwrap();
            assert_eq!(FrameStatus::from_name(status.name()), Some(status));
            assert_eq!(status.label(), status.name().to_ascii_lowercase());
        }
        assert_eq!(FrameStatus::name_of(1), "OK");
        assert_eq!(FrameStatus::name_of(99), "UNSPECIFIED");
        assert_eq!(FrameStatus::from_name("ok"), None);
        for value in 0..=4 {
            let category = Category::try_from(value).unwrap();
            let contract = category.as_str_name().trim_start_matches("CATEGORY_");
            assert_eq!(category.name(), contract.to_ascii_lowercase());
            assert_eq!(Category::from_name(category.name()), category);
        }
        assert_eq!(Category::name_of(-3), "unspecified");
        assert_eq!(Category::from_name("scalpel"), Category::Unspecified);
    }

    #[test]
    fn the_schema_version_header_is_required() {
        use super::{VersionError, check_schema_version};
        assert_eq!(check_schema_version(Some(b"1")), Ok(()));
        assert_eq!(check_schema_version(None), Err(VersionError::Missing));
        let unknown = check_schema_version(Some(b"2")).unwrap_err();
        assert_eq!(unknown, VersionError::Unknown("2".into()));
        assert!(unknown.to_string().contains("schema version"), "{unknown}");
    }

    #[test]
    fn every_status_has_one_outcome() {
        use super::Outcome;
        let outcomes: Vec<Outcome> = (0..=7)
            .map(|v| FrameStatus::try_from(v).unwrap().outcome())
            .collect();
        assert_eq!(outcomes.iter().filter(|o| **o == Outcome::Ok).count(), 1);
        assert_eq!(
            outcomes.iter().filter(|o| **o == Outcome::Skipped).count(),
            2
        );
        assert_eq!(FrameStatus::Redacted.outcome(), Outcome::Redacted);
        assert_eq!(
            outcomes.iter().filter(|o| **o == Outcome::Redacted).count(),
            1
        );
    }
}
