//! The decode step: one bus message -> a prepared frame for the batcher, or a rejection
//! (a `FrameResult` with an error status when the frame's identity is readable, and a dead
//! letter).
//!
//! Checks, in order: the schema version header (required: `orstream_proto::check_schema_version`), the bounded and
//! validating protobuf decode of the contract, the encoding, the JPEG header's dimensions
//! against the pixel budget and against the frame's own `width`/`height`, then the JPEG data.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use orstream_bus::{Headers, Message};
use orstream_proto::wire::is_valid_id;
use orstream_proto::{
    Frame, FrameResult, FrameStatus, ModelIdentity, Timings, check_schema_version, headers,
};

use crate::card::ModelCard;
use crate::preprocess::{PixelFormat, Pixels, Placement, decode_jpeg, prepare};

/// What the decode step needs to know.
#[derive(Debug, Clone)]
pub struct DecodeContext {
    /// The model card (input size, resize mode, mean/std).
    pub card: Arc<ModelCard>,
    /// The model identity put in every result.
    pub identity: ModelIdentity,
    /// Which pixels to make.
    pub format: PixelFormat,
    /// Pixel budget of a decoded JPEG.
    pub max_pixels: u64,
}

/// A frame ready for the batcher.
#[derive(Debug)]
pub struct PreparedFrame {
    /// The result to fill in, identity and model already set.
    pub result: FrameResult,
    /// The model input.
    pub pixels: Pixels,
    /// Where the image lies in it.
    pub placement: Placement,
    /// Microseconds spent decoding and preprocessing.
    pub preprocess_us: u64,
    /// The trace context of the frame, passed on to its result.
    pub traceparent: Option<Vec<u8>>,
    /// The frame's `infer.frame` span (disabled when tracing is off), open until its result
    /// is produced.
    pub span: tracing::Span,
}

/// A message that will not run.
#[derive(Debug)]
pub struct Rejected {
    /// The error result, when the frame's identity could be read.
    pub result: Option<FrameResult>,
    /// Why, for the dead-letter header and the result's detail.
    pub reason: String,
    /// The trace context, if the message had one.
    pub traceparent: Option<Vec<u8>>,
}

/// The result of `frame` with `status` and no instances yet: identity, model and time fields.
pub fn result_for(frame: &Frame, identity: &ModelIdentity, status: FrameStatus) -> FrameResult {
    FrameResult {
        stream_id: frame.stream_id.clone(),
        case_id: frame.case_id.clone(),
        session_epoch: frame.session_epoch,
        seq: frame.seq,
        capture_time_ns: frame.capture_time_ns,
        clock_source: frame.clock_source,
        status: status as i32,
        status_detail: String::new(),
        model: Some(identity.clone()),
        instances: Vec::new(),
        timings: Some(Timings::default()),
        result_time_ns: 0,
        width: frame.width,
        height: frame.height,
    }
}

/// Reads a frame's identity from a payload that failed validation, for the error result.
/// The size was already checked by the validating decode, so this decode is bounded.
fn identity_of(payload: &[u8]) -> Option<Frame> {
    use prost::Message as _;
    if payload.len() > <Frame as orstream_proto::Wire>::MAX_ENCODED_LEN {
        return None;
    }
    let mut frame = Frame::decode(payload).ok()?;
    if !is_valid_id(&frame.stream_id) || (!frame.case_id.is_empty() && !is_valid_id(&frame.case_id))
    {
        return None;
    }
    // The image bytes are not needed for the result.
    frame.data = Bytes::new();
    Some(frame)
}

/// A frame read and validated from its message, its image not yet decoded.
#[derive(Debug)]
pub struct Incoming {
    /// The frame message, its JPEG still encoded.
    pub frame: Frame,
    /// The trace context, if the message had one.
    pub traceparent: Option<Vec<u8>>,
    started: Instant,
}

impl Incoming {
    /// The frame's result with identity, model and time fields set, status OK.
    pub fn result(&self, ctx: &DecodeContext) -> FrameResult {
        result_for(&self.frame, &ctx.identity, FrameStatus::Ok)
    }

    /// Microseconds since reading began.
    pub fn elapsed_us(&self) -> u64 {
        micros(self.started.elapsed())
    }
}

fn rejected(
    ctx: &DecodeContext,
    frame: Option<&Frame>,
    status: FrameStatus,
    reason: String,
    traceparent: Option<Vec<u8>>,
) -> Box<Rejected> {
    let result = frame.map(|f| {
        let mut result = result_for(f, &ctx.identity, status);
        result.status_detail = reason.clone();
        result
    });
    Box::new(Rejected {
        result,
        reason,
        traceparent,
    })
}

/// Reads and validates one message's frame (schema version, bounded protobuf decode), without
/// touching its image: cheap, so a frame already past its deadline costs no JPEG decode.
pub fn read_message(message: &Message, ctx: &DecodeContext) -> Result<Incoming, Box<Rejected>> {
    let started = Instant::now();
    let traceparent = message
        .headers
        .get(headers::TRACEPARENT)
        .map(<[u8]>::to_vec);
    if let Err(refused) = check_schema_version(message.headers.get(headers::SCHEMA_VERSION)) {
        let reason = refused.to_string();
        let frame = identity_of(&message.payload);
        return Err(rejected(
            ctx,
            frame.as_ref(),
            FrameStatus::Invalid,
            reason,
            traceparent,
        ));
    }
    match orstream_proto::decode::<Frame>(&message.payload) {
        Ok(frame) => Ok(Incoming {
            frame,
            traceparent,
            started,
        }),
        Err(err) => {
            let frame = identity_of(&message.payload);
            Err(rejected(
                ctx,
                frame.as_ref(),
                FrameStatus::Invalid,
                err.to_string(),
                traceparent,
            ))
        }
    }
}

/// Decodes a read frame's JPEG (dimensions checked before allocating) and prepares the model
/// input.
pub fn prepare_frame(
    incoming: Incoming,
    ctx: &DecodeContext,
) -> Result<PreparedFrame, Box<Rejected>> {
    let Incoming {
        frame,
        traceparent,
        started,
    } = incoming;
    let image = decode_jpeg(&frame.data, ctx.max_pixels).and_then(|image| {
        if (image.width, image.height) == (frame.width, frame.height) {
            Ok(image)
        } else {
            Err(format!(
                "the JPEG is {}x{} but the frame says {}x{}",
                image.width, image.height, frame.width, frame.height
            ))
        }
    });
    let image = match image {
        Ok(image) => image,
        Err(reason) => {
            return Err(rejected(
                ctx,
                Some(&frame),
                FrameStatus::DecodeError,
                reason,
                traceparent,
            ));
        }
    };
    let (pixels, placement) = prepare(&image, &ctx.card, ctx.format);
    let result = result_for(&frame, &ctx.identity, FrameStatus::Ok);
    Ok(PreparedFrame {
        result,
        pixels,
        placement,
        preprocess_us: micros(started.elapsed()),
        traceparent,
        span: tracing::Span::none(),
    })
}

/// Decodes and prepares one message: [`read_message`] then [`prepare_frame`].
pub fn decode_message(
    message: &Message,
    ctx: &DecodeContext,
) -> Result<PreparedFrame, Box<Rejected>> {
    prepare_frame(read_message(message, ctx)?, ctx)
}

/// The dead letter of a rejected message: its key, payload (cut to `max_payload` bytes) and
/// headers, plus the source topic, partition, offset and the reason.
pub fn dead_letter_headers(message: &Message, reason: &str) -> Headers {
    let mut out = message.headers.clone();
    out.push(headers::DLQ_SOURCE_TOPIC, message.topic.as_bytes());
    out.push(
        headers::DLQ_SOURCE_PARTITION,
        message.partition.to_string().into_bytes(),
    );
    out.push(
        headers::DLQ_SOURCE_OFFSET,
        message.offset.to_string().into_bytes(),
    );
    out.push(headers::DLQ_ERROR, reason.as_bytes());
    out
}

/// Microseconds of a duration, saturating.
pub fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::{ClassCategory, ClassInfo, OutputKind, ResizeMode};
    use crate::synthetic;
    use orstream_proto::SCHEMA_VERSION;

    fn ctx() -> DecodeContext {
        DecodeContext {
            card: Arc::new(ModelCard {
                name: "t".into(),
                version: "1".into(),
                description: String::new(),
                output: OutputKind::Semantic,
                input_width: 32,
                input_height: 32,
                resize: ResizeMode::Stretch,
                mean: [0.5; 3],
                std: [0.25; 3],
                classes: vec![ClassInfo {
                    id: 0,
                    name: "background".into(),
                    category: ClassCategory::Background,
                }],
            }),
            identity: ModelIdentity::default(),
            format: PixelFormat::Normalized,
            max_pixels: 1 << 20,
        }
    }

    fn message(payload: Vec<u8>) -> Message {
        Message {
            topic: "f".into(),
            partition: 2,
            offset: 9,
            key: None,
            payload: payload.into(),
            headers: Headers::new().with(headers::SCHEMA_VERSION, SCHEMA_VERSION),
            timestamp_ms: None,
        }
    }

    fn good_frame() -> Frame {
        let image = synthetic::scene(64, 48, 3);
        let jpeg = synthetic::encode_jpeg(&image, 80).unwrap();
        synthetic::frame("s", 3, 1, 64, 48, jpeg)
    }

    #[test]
    fn a_good_frame_is_prepared() {
        let prepared =
            decode_message(&message(orstream_proto::encode(&good_frame())), &ctx()).unwrap();
        assert_eq!(prepared.result.stream_id, "s");
        assert_eq!(prepared.result.status, FrameStatus::Ok as i32);
        assert!(matches!(prepared.pixels, Pixels::Normalized(ref p) if p.len() == 3 * 32 * 32));
    }

    #[test]
    fn poison_is_rejected_with_identity_when_readable() {
        let mut corrupt = good_frame();
        corrupt.data = Bytes::from_static(b"\xFF\xD8\xFFnot really");
        let rejected =
            decode_message(&message(orstream_proto::encode(&corrupt)), &ctx()).unwrap_err();
        let result = rejected.result.unwrap();
        assert_eq!(result.status, FrameStatus::DecodeError as i32);
        assert_eq!(result.seq, 3);

        let mut lying = good_frame();
        lying.width = 640;
        let rejected =
            decode_message(&message(orstream_proto::encode(&lying)), &ctx()).unwrap_err();
        assert!(
            rejected.reason.contains("frame says 640x48"),
            "{}",
            rejected.reason
        );

        let mut huge = good_frame();
        huge.width = 65_535;
        let rejected = decode_message(&message(orstream_proto::encode(&huge)), &ctx()).unwrap_err();
        assert_eq!(rejected.result.unwrap().status, FrameStatus::Invalid as i32);

        let rejected = decode_message(&message(vec![0xFF; 40]), &ctx()).unwrap_err();
        assert!(rejected.result.is_none(), "garbage has no identity");
        assert!(rejected.reason.contains("Frame"), "{}", rejected.reason);

        let mut v2 = message(orstream_proto::encode(&good_frame()));
        v2.headers = Headers::new().with(headers::SCHEMA_VERSION, "2");
        let rejected = decode_message(&v2, &ctx()).unwrap_err();
        assert!(
            rejected.reason.contains("schema version"),
            "{}",
            rejected.reason
        );
        assert_eq!(rejected.result.unwrap().status, FrameStatus::Invalid as i32);

        let mut unversioned = message(orstream_proto::encode(&good_frame()));
        unversioned.headers = Headers::new();
        let rejected = decode_message(&unversioned, &ctx()).unwrap_err();
        assert!(
            rejected
                .reason
                .contains("no orstream-schema-version header"),
            "{}",
            rejected.reason
        );
        assert_eq!(rejected.result.unwrap().status, FrameStatus::Invalid as i32);
    }

    #[test]
    fn dead_letter_headers_name_the_source() {
        let dlq = dead_letter_headers(&message(vec![1]), "bad");
        assert_eq!(dlq.get(headers::DLQ_SOURCE_TOPIC), Some(&b"f"[..]));
        assert_eq!(dlq.get(headers::DLQ_SOURCE_PARTITION), Some(&b"2"[..]));
        assert_eq!(dlq.get(headers::DLQ_SOURCE_OFFSET), Some(&b"9"[..]));
        assert_eq!(dlq.get(headers::DLQ_ERROR), Some(&b"bad"[..]));
    }
}
