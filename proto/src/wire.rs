//! Bounded, validating encode/decode of the v1 messages.

use prost::Message;

use crate::v1::{
    Category, ClockSource, Encoding, EventKind, Frame, FrameResult, FrameStatus, StreamEvent,
    SurgicalEvent, TrackFrame,
};

/// Largest accepted stream_id / case_id, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Largest accepted frame side, in pixels (8K is 7680).
pub const MAX_FRAME_SIDE: u32 = 16_384;

/// Why bytes were not accepted as a message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The payload was empty.
    #[error("{message}: empty payload")]
    Empty {
        /// Message type expected.
        message: &'static str,
    },
    /// The payload is larger than allowed; it was not decoded.
    #[error("{message}: payload of {len} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// Message type expected.
        message: &'static str,
        /// Payload length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a valid protobuf encoding of the message.
    #[error("{message}: malformed protobuf: {source}")]
    Malformed {
        /// Message type expected.
        message: &'static str,
        /// What prost reported.
        source: prost::DecodeError,
    },
    /// The message decoded but breaks a rule of the contract.
    #[error("{message}: invalid field {field}: {reason}")]
    Invalid {
        /// Message type expected.
        message: &'static str,
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// A message of the v1 contract: its name, its size limit and its validation rules.
pub trait Wire: Message + Default {
    /// Message name used in errors.
    const NAME: &'static str;
    /// Largest encoded size accepted by [`decode`].
    const MAX_ENCODED_LEN: usize;
    /// Checks the fields consumers rely on. Returns the first offending field and why.
    fn validate(&self) -> Result<(), (&'static str, String)>;
}

/// Encodes a message to a fresh buffer.
pub fn encode<M: Wire>(message: &M) -> Vec<u8> {
    message.encode_to_vec()
}

/// Decodes and validates a message, refusing payloads over `M::MAX_ENCODED_LEN`.
pub fn decode<M: Wire>(bytes: &[u8]) -> Result<M, DecodeError> {
    decode_with_limit(bytes, M::MAX_ENCODED_LEN)
}

/// Decodes and validates a message, refusing payloads over `max_len` bytes before decoding.
pub fn decode_with_limit<M: Wire>(bytes: &[u8], max_len: usize) -> Result<M, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty { message: M::NAME });
    }
    if bytes.len() > max_len {
        return Err(DecodeError::Oversized {
            message: M::NAME,
            len: bytes.len(),
            max: max_len,
        });
    }
    let message = M::decode(bytes).map_err(|source| DecodeError::Malformed {
        message: M::NAME,
        source,
    })?;
    message
        .validate()
        .map_err(|(field, reason)| DecodeError::Invalid {
            message: M::NAME,
            field,
            reason,
        })?;
    Ok(message)
}

/// Whether `value` is a usable stream or case id: non-empty, at most [`MAX_ID_LEN`] bytes, no
/// control characters. The rule [`decode`] applies to every id field.
pub fn is_valid_id(value: &str) -> bool {
    check_id("", value, true).is_ok()
}

fn check_id(
    field: &'static str,
    value: &str,
    required: bool,
) -> Result<(), (&'static str, String)> {
    if value.is_empty() {
        return if required {
            Err((field, "must not be empty".into()))
        } else {
            Ok(())
        };
    }
    if value.len() > MAX_ID_LEN {
        return Err((
            field,
            format!("{} bytes, longer than {MAX_ID_LEN}", value.len()),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err((field, "contains control characters".into()));
    }
    Ok(())
}

fn check_enum<E: TryFrom<i32>>(
    field: &'static str,
    value: i32,
    unspecified_ok: bool,
) -> Result<(), (&'static str, String)> {
    if E::try_from(value).is_err() {
        return Err((field, format!("unknown value {value}")));
    }
    if value == 0 && !unspecified_ok {
        return Err((field, "must be specified".into()));
    }
    Ok(())
}

fn check_dimensions(width: u32, height: u32) -> Result<(), (&'static str, String)> {
    for (field, side) in [("width", width), ("height", height)] {
        if side == 0 || side > MAX_FRAME_SIDE {
            return Err((field, format!("{side} is outside 1..={MAX_FRAME_SIDE}")));
        }
    }
    Ok(())
}

impl Wire for Frame {
    const NAME: &'static str = "Frame";
    const MAX_ENCODED_LEN: usize = 16 << 20;
    fn validate(&self) -> Result<(), (&'static str, String)> {
        check_id("stream_id", &self.stream_id, true)?;
        check_id("case_id", &self.case_id, false)?;
        check_enum::<ClockSource>("clock_source", self.clock_source, true)?;
        check_enum::<Encoding>("encoding", self.encoding, false)?;
        check_dimensions(self.width, self.height)?;
        if self.data.is_empty() {
            return Err(("data", "no image bytes".into()));
        }
        Ok(())
    }
}

impl Wire for StreamEvent {
    const NAME: &'static str = "StreamEvent";
    const MAX_ENCODED_LEN: usize = 64 << 10;
    fn validate(&self) -> Result<(), (&'static str, String)> {
        check_id("stream_id", &self.stream_id, true)?;
        check_id("case_id", &self.case_id, false)?;
        if self.kind.is_none() {
            return Err(("kind", "no event kind set".into()));
        }
        Ok(())
    }
}

impl Wire for FrameResult {
    const NAME: &'static str = "FrameResult";
    const MAX_ENCODED_LEN: usize = 16 << 20;
    fn validate(&self) -> Result<(), (&'static str, String)> {
        check_id("stream_id", &self.stream_id, true)?;
        check_id("case_id", &self.case_id, false)?;
        check_enum::<ClockSource>("clock_source", self.clock_source, true)?;
        check_enum::<FrameStatus>("status", self.status, false)?;
        for instance in &self.instances {
            check_enum::<Category>("instances.category", instance.category, true)?;
            if let Some(mask) = &instance.mask {
                crate::rle::check(mask).map_err(|reason| ("instances.mask", reason))?;
            }
        }
        Ok(())
    }
}

impl Wire for SurgicalEvent {
    const NAME: &'static str = "SurgicalEvent";
    const MAX_ENCODED_LEN: usize = 64 << 10;
    fn validate(&self) -> Result<(), (&'static str, String)> {
        check_id("event_id", &self.event_id, true)?;
        check_id("stream_id", &self.stream_id, true)?;
        check_id("case_id", &self.case_id, false)?;
        check_enum::<EventKind>("kind", self.kind, false)?;
        check_enum::<Category>("category", self.category, true)?;
        if self.end_time_ns < self.start_time_ns {
            return Err(("end_time_ns", "before start_time_ns".into()));
        }
        if self.kind == EventKind::Track as i32 && self.track.is_none() {
            return Err(("track", "a track event without its motion".into()));
        }
        Ok(())
    }
}

impl Wire for TrackFrame {
    const NAME: &'static str = "TrackFrame";
    const MAX_ENCODED_LEN: usize = 64 << 10;
    fn validate(&self) -> Result<(), (&'static str, String)> {
        check_id("stream_id", &self.stream_id, true)?;
        check_id("case_id", &self.case_id, false)?;
        if let Some(t) = self.tracks.iter().find(|t| t.track_id == 0) {
            return Err((
                "tracks.track_id",
                format!("0 for {:?}; ids start at 1", t.label),
            ));
        }
        Ok(())
    }
}
