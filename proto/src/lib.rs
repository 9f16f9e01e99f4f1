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
