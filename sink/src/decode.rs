//! From a bus message to a typed input: the schema version header is checked first, then the
//! payload goes through the contract's bounded, validating decoder. A message that fails
//! either becomes a [`Rejection`] (dead letter plus anomaly), never a panic.

use orstream_bus::Message;
use orstream_proto::{DecodeError, FrameResult, StreamEvent, Wire, check_schema_version, headers};

use crate::derive::AnomalyKind;

/// A message the sink understood.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// From the results topic.
    Result(Box<FrameResult>),
    /// From the streams topic.
    Stream(StreamEvent),
}

impl Input {
    /// The stream the input concerns.
    pub fn stream_id(&self) -> &str {
        match self {
            Input::Result(r) => &r.stream_id,
            Input::Stream(e) => &e.stream_id,
        }
    }

    /// The case the input names.
    pub fn case_id(&self) -> &str {
        match self {
            Input::Result(r) => &r.case_id,
            Input::Stream(e) => &e.case_id,
        }
    }
}

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Schema version or undecodable.
    pub kind: AnomalyKind,
    /// What exactly, for the DLQ header and the anomaly row.
    pub reason: String,
}

/// Which of the sink's topics a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The results topic.
    Results,
    /// The streams topic.
    Streams,
}

/// Checks the header and decodes `message` as `source` says.
pub fn decode(message: &Message, source: Source) -> Result<Input, Rejection> {
    check_schema_version(message.headers.get(headers::SCHEMA_VERSION)).map_err(|refused| {
        Rejection {
            kind: AnomalyKind::SchemaVersion,
            reason: refused.to_string(),
        }
    })?;
    match source {
        Source::Results => payload::<FrameResult>(message).map(|r| Input::Result(Box::new(r))),
        Source::Streams => payload::<StreamEvent>(message).map(Input::Stream),
    }
}

fn payload<M: Wire>(message: &Message) -> Result<M, Rejection> {
    orstream_proto::decode::<M>(&message.payload).map_err(|e| Rejection {
        kind: match e {
            DecodeError::Invalid { .. } => AnomalyKind::InvalidValue,
            _ => AnomalyKind::Undecodable,
        },
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use orstream_bus::Headers;
    use orstream_proto::{ClockSource, FrameStatus};

    use super::*;

    fn message(payload: Vec<u8>, version: Option<&str>) -> Message {
        let mut headers = Headers::new();
        if let Some(v) = version {
            headers.push(headers::SCHEMA_VERSION, v.as_bytes().to_vec());
        }
        Message {
            topic: "or.results.v1".into(),
            partition: 0,
            offset: 7,
            key: None,
            payload: payload.into(),
            headers,
            timestamp_ms: None,
        }
    }

    fn result() -> Vec<u8> {
        orstream_proto::encode(&FrameResult {
            stream_id: "cam-1".into(),
            clock_source: ClockSource::Host as i32,
            status: FrameStatus::Ok as i32,
            ..FrameResult::default()
        })
    }

    #[test]
    fn a_valid_result_decodes() {
        let input = decode(&message(result(), Some("1")), Source::Results).unwrap();
        assert_eq!(input.stream_id(), "cam-1");
    }

    #[test]
    fn unknown_or_missing_versions_are_rejected() {
        for version in [Some("2"), None] {
            let err = decode(&message(result(), version), Source::Results).unwrap_err();
            assert_eq!(err.kind, AnomalyKind::SchemaVersion, "{err:?}");
        }
    }

    #[test]
    fn hostile_values_are_rejected_as_invalid_values_naming_the_field() {
        let hostile = orstream_proto::encode(&FrameResult {
            stream_id: "cam-1".into(),
            clock_source: ClockSource::Host as i32,
            status: FrameStatus::Ok as i32,
            instances: vec![orstream_proto::Instance {
                score: f32::NAN,
                ..Default::default()
            }],
            ..FrameResult::default()
        });
        let err = decode(&message(hostile, Some("1")), Source::Results).unwrap_err();
        assert_eq!(err.kind, AnomalyKind::InvalidValue, "{err:?}");
        assert!(err.reason.contains("instances.score"), "{}", err.reason);
    }

    #[test]
    fn garbage_and_wrong_types_are_rejected_with_a_reason() {
        // Not protobuf at all, then protobuf of the wrong shape (it decodes, but its status
        // is missing: a value the contract refuses).
        for (payload, kind) in [
            (vec![], AnomalyKind::Undecodable),
            (vec![0xff; 10], AnomalyKind::Undecodable),
            (b"\x0a\x05cam-1".to_vec(), AnomalyKind::InvalidValue),
        ] {
            let err = decode(&message(payload, Some("1")), Source::Results).unwrap_err();
            assert_eq!(err.kind, kind, "{}", err.reason);
            assert!(err.reason.starts_with("FrameResult"), "{}", err.reason);
        }
        let err = decode(&message(result(), Some("1")), Source::Streams).unwrap_err();
        assert!(err.reason.starts_with("StreamEvent"), "{}", err.reason);
    }
}
