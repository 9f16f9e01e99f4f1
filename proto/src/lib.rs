//! orstream's wire contract, version 1.
//!
//! - [`v1`]: the protobuf messages generated from `proto/orstream/v1/orstream.proto` into
//!   `OUT_DIR` (re-exported at the crate root): [`Frame`], [`StreamEvent`], [`FrameResult`],
//!   [`Instance`], [`SurgicalEvent`] and their parts.
//! - [`topics`] and [`headers`]: the names every service agrees on.
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
    /// `unspecified`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Ok => "ok",
            Self::SkippedStale => "skipped_stale",
            Self::SkippedOverload => "skipped_overload",
            Self::DecodeError => "decode_error",
            Self::Invalid => "invalid",
            Self::ModelError => "model_error",
        }
    }

    /// [`label`](Self::label) of a status as carried on the wire (`unspecified` when unknown).
    pub fn label_of(status: i32) -> &'static str {
        Self::try_from(status).map_or("unspecified", Self::label)
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
}

#[cfg(test)]
mod tests {
    use super::FrameStatus;

    #[test]
    fn status_labels_are_the_contract_names_in_lower_case() {
        for value in 0..=6 {
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
}
