//! Synthetic frames for tests, benchmarks and demos without a camera: a grey scene with
//! coloured blocks that move with the frame number, JPEG-encoded and wrapped as a v1 `Frame`
//! record with the contract's headers.
//!
//! The colours match the `tiny_semantic` fixture (red -> grasper, green -> liver, blue ->
//! gauze), so its results are predictable.

use bytes::Bytes;
use orstream_bus::Record;
use orstream_proto::{ClockSource, Encoding, Frame, SCHEMA_VERSION, headers};

use crate::preprocess::RgbImage;

/// Capture times for generated frames come from the worker's own clock, so deadlines computed
/// from them are measured the way the worker measures them.
pub use crate::clock::now_ns;

/// Encodes an RGB image as a baseline JPEG of `quality` (1..=100).
pub fn encode_jpeg(image: &RgbImage, quality: u8) -> Result<Vec<u8>, String> {
    let width = u16::try_from(image.width).map_err(|_| "width over 65535".to_owned())?;
    let height = u16::try_from(image.height).map_err(|_| "height over 65535".to_owned())?;
    let mut out = Vec::new();
    let encoder = jpeg_encoder::Encoder::new(&mut out, quality);
    encoder
        .encode(&image.data, width, height, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// A `width` x `height` scene for frame `n`: mid-grey background, a red block that slides
/// right, a green block that slides down, a blue block in a corner on every other 10 frames.
pub fn scene(width: u32, height: u32, n: u64) -> RgbImage {
    let (w, h) = (width as usize, height as usize);
    let mut data = [128u8, 128, 128].repeat(w * h);
    let mut block = |x0: usize, y0: usize, bw: usize, bh: usize, rgb: [u8; 3]| {
        for y in y0.min(h)..(y0 + bh).min(h) {
            for x in x0.min(w)..(x0 + bw).min(w) {
                let p = (y * w + x) * 3;
                data[p..p + 3].copy_from_slice(&rgb);
            }
        }
    };
    let step = n as usize;
    block(
        (step * 3) % (w / 2).max(1),
        h / 8,
        w / 4,
        h / 4,
        [230, 20, 20],
    );
    block(
        w / 2,
        (step * 2) % (h / 2).max(1),
        w / 5,
        h / 3,
        [20, 220, 30],
    );
    if (n / 10).is_multiple_of(2) {
        block(w - w / 6, h - h / 5, w / 6, h / 5, [20, 30, 230]);
    }
    RgbImage {
        width,
        height,
        data,
    }
}

/// A v1 frame of stream `stream_id` with sequence number `seq`, captured `capture_time_ns`
/// (UTC), carrying `jpeg`.
pub fn frame(
    stream_id: &str,
    seq: u64,
    capture_time_ns: i64,
    width: u32,
    height: u32,
    jpeg: Vec<u8>,
) -> Frame {
    Frame {
        stream_id: stream_id.to_owned(),
        case_id: "synthetic-case".to_owned(),
        session_epoch: 1,
        seq,
        capture_time_ns,
        clock_source: ClockSource::Host as i32,
        pts_ns: i64::try_from(seq)
            .unwrap_or(i64::MAX)
            .saturating_mul(33_333_333),
        width,
        height,
        encoding: Encoding::Jpeg as i32,
        data: Bytes::from(jpeg),
        redaction: None,
    }
}

/// The record that ingest would publish for `frame` on `topic`: keyed by stream_id, with the
/// schema version header.
pub fn frame_record(topic: &str, frame: &Frame) -> Record {
    Record::new(topic, orstream_proto::encode(frame))
        .with_key(frame.stream_id.clone().into_bytes())
        .with_header(headers::SCHEMA_VERSION, SCHEMA_VERSION)
}
