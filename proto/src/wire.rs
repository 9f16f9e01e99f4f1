//! Bounded, validating encode/decode of the v1 messages.

use prost::Message;

use crate::v1::{
    BBox, Category, ClockSource, Encoding, EndReason, EventKind, Frame, FrameResult, FrameStatus,
    Instance, ModelIdentity, Point, RedactionReason, StreamEvent, SurgicalEvent, TrackFrame,
    TrackSummary, stream_event,
};

/// Largest accepted stream_id / case_id, in bytes.
pub const MAX_ID_LEN: usize = 128;
/// Most cameras a room's case event may list.
pub const MAX_CASE_CAMERAS: usize = 64;
/// Largest accepted frame side, in pixels (8K is 7680).
pub const MAX_FRAME_SIDE: u32 = 16_384;
/// Largest accepted label, model name, version or digest, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Largest accepted free-text detail (a status detail, a gap reason), in bytes.
pub const MAX_DETAIL_LEN: usize = 4096;
/// Most instances one result may carry, and most tracks one track frame may carry. A real
/// frame holds tens at most; the cap bounds what one message can cost the tracker.
pub const MAX_INSTANCES: usize = 1024;

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

/// A name (label, model name, version, digest): at most [`MAX_NAME_LEN`] bytes, no control
/// characters (NUL included). Empty is allowed: whether a name is required is the reader's rule.
fn check_name(field: &'static str, value: &str) -> Result<(), (&'static str, String)> {
    check_text(field, value, MAX_NAME_LEN, false)
}

/// Free text for people: at most [`MAX_DETAIL_LEN`] bytes; line breaks and tabs allowed, no
/// other control character.
fn check_detail(field: &'static str, value: &str) -> Result<(), (&'static str, String)> {
    check_text(field, value, MAX_DETAIL_LEN, true)
}

fn check_text(
    field: &'static str,
    value: &str,
    max: usize,
    lines: bool,
) -> Result<(), (&'static str, String)> {
    if value.len() > max {
        return Err((field, format!("{} bytes, longer than {max}", value.len())));
    }
    let allowed = |c: char| lines && (c == '\n' || c == '\t');
    if let Some(c) = value.chars().find(|&c| c.is_control() && !allowed(c)) {
        return Err((field, format!("contains the control character {c:?}")));
    }
    Ok(())
}

/// `text` made into a valid detail: control characters other than line breaks and tabs become
/// spaces, and it is cut to [`MAX_DETAIL_LEN`] bytes (at a character boundary). For producers
/// whose details come from elsewhere (a GStreamer error), so what they send passes [`decode`].
pub fn fit_detail(text: &str) -> String {
    let mut fitted: String = text
        .chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                ' '
            } else {
                c
            }
        })
        .collect();
    if fitted.len() > MAX_DETAIL_LEN {
        let mut end = MAX_DETAIL_LEN;
        while !fitted.is_char_boundary(end) {
            end -= 1;
        }
        fitted.truncate(end);
    }
    fitted
}

/// Fits every free-text field of a lifecycle event with [`fit_detail`].
pub fn fit_event_text(kind: &mut stream_event::Kind) {
    use stream_event::Kind;
    let text = match kind {
        Kind::Started(_) | Kind::CaseStarted(_) => return,
        Kind::CaseEnded(c) => &mut c.detail,
        Kind::Discontinuity(d) => &mut d.reason,
        Kind::Ended(e) => &mut e.detail,
        Kind::Dropped(d) => &mut d.reason,
        Kind::Error(e) => &mut e.message,
    };
    *text = fit_detail(text);
}

/// A finite number in `min..=max`; `what` says which element (an instance's index).
fn check_range(
    field: &'static str,
    what: &str,
    value: f64,
    min: f64,
    max: f64,
) -> Result<(), (&'static str, String)> {
    if value.is_finite() && (min..=max).contains(&value) {
        Ok(())
    } else {
        Err((
            field,
            format!("{what}{value} is not a finite number in {min}..={max}"),
        ))
    }
}

/// A finite number, any size.
fn check_finite(field: &'static str, what: &str, value: f64) -> Result<(), (&'static str, String)> {
    check_range(field, what, value, f64::MIN, f64::MAX)
}

fn check_unit_point(
    field: &'static str,
    what: &str,
    point: Option<&Point>,
) -> Result<(), (&'static str, String)> {
    if let Some(p) = point {
        check_range(field, what, p.x.into(), 0.0, 1.0)?;
        check_range(field, what, p.y.into(), 0.0, 1.0)?;
    }
    Ok(())
}

fn check_unit_box(
    field: &'static str,
    what: &str,
    bbox: Option<&BBox>,
) -> Result<(), (&'static str, String)> {
    let Some(b) = bbox else { return Ok(()) };
    for side in [b.x0, b.y0, b.x1, b.y1] {
        check_range(field, what, side.into(), 0.0, 1.0)?;
    }
    if b.x1 < b.x0 || b.y1 < b.y0 {
        return Err((
            field,
            format!("{what}its far corner is before its near corner"),
        ));
    }
    Ok(())
}

fn check_count(field: &'static str, len: usize, max: usize) -> Result<(), (&'static str, String)> {
    if len > max {
        return Err((field, format!("{len} entries, more than {max}")));
    }
    Ok(())
}

fn check_model(model: Option<&ModelIdentity>) -> Result<(), (&'static str, String)> {
    let Some(m) = model else { return Ok(()) };
    check_name("model.name", &m.name)?;
    check_name("model.version", &m.version)?;
    check_name("model.digest", &m.digest)
}

/// One instance of a result; `index` names it in the reason.
fn check_instance(index: usize, instance: &Instance) -> Result<(), (&'static str, String)> {
    let what = format!("instance {index}: ");
    check_enum::<Category>("instances.category", instance.category, true)?;
    check_name("instances.label", &instance.label)?;
    check_range("instances.score", &what, instance.score.into(), 0.0, 1.0)?;
    check_range("instances.area", &what, instance.area.into(), 0.0, 1.0)?;
    check_unit_box("instances.bbox", &what, instance.bbox.as_ref())?;
    check_unit_point("instances.centroid", &what, instance.centroid.as_ref())?;
    if let Some(mask) = &instance.mask {
        if mask.width > MAX_FRAME_SIDE || mask.height > MAX_FRAME_SIDE {
            return Err((
                "instances.mask",
                format!(
                    "{what}{}x{} is larger than {MAX_FRAME_SIDE} a side",
                    mask.width, mask.height
                ),
            ));
        }
        crate::rle::check(mask).map_err(|reason| ("instances.mask", format!("{what}{reason}")))?;
    }
    Ok(())
}

fn check_track_summary(track: &TrackSummary) -> Result<(), (&'static str, String)> {
    for (field, value) in [
        ("track.path_length", track.path_length),
        ("track.mean_speed", track.mean_speed),
        ("track.peak_speed", track.peak_speed),
    ] {
        check_range(field, "", value, 0.0, f64::MAX)?;
    }
    for (field, point) in [
        ("track.first_centroid", track.first_centroid.as_ref()),
        ("track.last_centroid", track.last_centroid.as_ref()),
    ] {
        if let Some(p) = point {
            check_finite(field, "", p.x.into())?;
            check_finite(field, "", p.y.into())?;
        }
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
        check_dimensions(self.width, self.height)?;
        if let Some(redaction) = &self.redaction {
            // Withheld by the privacy gate: a marker, never an image.
            check_enum::<RedactionReason>("redaction.reason", redaction.reason, false)?;
            check_range("redaction.score", "", redaction.score.into(), 0.0, 1.0)?;
            check_detail("redaction.detail", &redaction.detail)?;
            check_model(redaction.model.as_ref())?;
            check_enum::<Encoding>("encoding", self.encoding, true)?;
            if self.encoding != Encoding::Unspecified as i32 {
                return Err(("encoding", "must be UNSPECIFIED on a redacted frame".into()));
            }
            if !self.data.is_empty() {
                return Err((
                    "data",
                    format!(
                        "{} image bytes on a redacted frame, which may carry none",
                        self.data.len()
                    ),
                ));
            }
            return Ok(());
        }
        check_enum::<Encoding>("encoding", self.encoding, false)?;
        if self.data.is_empty() {
            return Err(("data", "no image bytes".into()));
        }
        Ok(())
    }
}

/// A case event's camera list: stream ids, at most [`MAX_CASE_CAMERAS`], none twice.
fn check_cameras(field: &'static str, cameras: &[String]) -> Result<(), (&'static str, String)> {
    if cameras.len() > MAX_CASE_CAMERAS {
        return Err((
            field,
            format!("{} cameras, more than {MAX_CASE_CAMERAS}", cameras.len()),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for camera in cameras {
        check_id(field, camera, true)?;
        if !seen.insert(camera.as_str()) {
            return Err((field, format!("{camera:?} listed twice")));
        }
    }
    Ok(())
}

impl Wire for StreamEvent {
    const NAME: &'static str = "StreamEvent";
    const MAX_ENCODED_LEN: usize = 64 << 10;
    fn validate(&self) -> Result<(), (&'static str, String)> {
        use stream_event::Kind;
        let case_event = matches!(self.kind, Some(Kind::CaseStarted(_) | Kind::CaseEnded(_)));
        if case_event {
            // A room's event: the room and the case named, no stream.
            if !self.stream_id.is_empty() {
                return Err(("stream_id", "must be empty on a case event".into()));
            }
            check_id("room_id", &self.room_id, true)?;
            check_id("case_id", &self.case_id, true)?;
        } else {
            check_id("stream_id", &self.stream_id, true)?;
            check_id("room_id", &self.room_id, false)?;
            check_id("case_id", &self.case_id, false)?;
        }
        match &self.kind {
            None => Err(("kind", "no event kind set".into())),
            Some(Kind::CaseStarted(c)) => check_cameras("case_started.cameras", &c.cameras),
            Some(Kind::CaseEnded(c)) => {
                check_cameras("case_ended.cameras", &c.cameras)?;
                check_detail("case_ended.detail", &c.detail)
            }
            Some(Kind::Started(s)) => {
                check_name("started.source_kind", &s.source_kind)?;
                check_range("started.fps", "", s.fps, 0.0, 1_000.0)
            }
            Some(Kind::Discontinuity(d)) => check_detail("discontinuity.reason", &d.reason),
            Some(Kind::Ended(e)) => {
                check_enum::<EndReason>("ended.reason", e.reason, true)?;
                check_detail("ended.detail", &e.detail)
            }
            Some(Kind::Dropped(d)) => check_detail("dropped.reason", &d.reason),
            Some(Kind::Error(e)) => check_detail("error.message", &e.message),
        }
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
        check_detail("status_detail", &self.status_detail)?;
        check_model(self.model.as_ref())?;
        check_count("instances", self.instances.len(), MAX_INSTANCES)?;
        for (index, instance) in self.instances.iter().enumerate() {
            check_instance(index, instance)?;
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
        check_name("label", &self.label)?;
        check_detail("gap_reason", &self.gap_reason)?;
        check_model(self.model.as_ref())?;
        check_range("peak_confidence", "", self.peak_confidence.into(), 0.0, 1.0)?;
        check_range("mean_confidence", "", self.mean_confidence.into(), 0.0, 1.0)?;
        check_count("track_ids", self.track_ids.len(), MAX_INSTANCES)?;
        if let Some(track) = &self.track {
            check_track_summary(track)?;
        }
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
        check_count("tracks", self.tracks.len(), MAX_INSTANCES)?;
        if let Some(t) = self.tracks.iter().find(|t| t.track_id == 0) {
            return Err((
                "tracks.track_id",
                format!("0 for {:?}; ids start at 1", t.label),
            ));
        }
        for (index, track) in self.tracks.iter().enumerate() {
            let what = format!("track {index}: ");
            check_name("tracks.label", &track.label)?;
            check_range("tracks.score", &what, track.score.into(), 0.0, 1.0)?;
            check_unit_box("tracks.bbox", &what, track.bbox.as_ref())?;
            for (field, point) in [
                ("tracks.centroid", track.centroid.as_ref()),
                ("tracks.velocity", track.velocity.as_ref()),
            ] {
                if let Some(p) = point {
                    check_finite(field, &what, p.x.into())?;
                    check_finite(field, &what, p.y.into())?;
                }
            }
        }
        Ok(())
    }
}
