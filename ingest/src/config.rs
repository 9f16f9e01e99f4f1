//! Configuration of one ingested stream: where its video comes from, the JPEG frames it yields,
//! and the queue between the GStreamer streaming thread and the consumer.

use serde::Deserialize;

use crate::error::IngestError;

/// Default width of the JPEG frames, in pixels.
pub const DEFAULT_WIDTH: u32 = 640;
/// Default height of the JPEG frames, in pixels.
pub const DEFAULT_HEIGHT: u32 = 480;
/// Default JPEG quality (libjpeg scale, 0..=100); 85 is `jpegenc`'s own default.
pub const DEFAULT_JPEG_QUALITY: u8 = 85;
/// Default number of frames held between the streaming thread and the consumer.
pub const DEFAULT_FRAME_QUEUE: usize = 8;

/// One stream: a source, the frames it is turned into, and how many frames may wait for the
/// consumer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// Stable identifier of the stream (a camera, a file); names the pipeline and appears in every
    /// error and log line about it. Opaque, never patient data.
    pub stream_id: String,
    /// Where the video comes from.
    pub source: SourceConfig,
    /// Size and quality of the JPEG frames.
    #[serde(default)]
    pub output: OutputConfig,
    /// Frames buffered between the GStreamer streaming thread and the consumer. When the queue is
    /// full the newest frame is dropped and counted, so a slow consumer never stalls capture.
    #[serde(default = "default_frame_queue")]
    pub frame_queue: usize,
    /// What happens when the frame queue is full: `drop_newest` (live: never stall the camera,
    /// count the drop) or `block` (archive: backpressure, every frame kept).
    #[serde(default)]
    pub full_policy: FullPolicy,
}

/// What the streaming thread does with a frame when the consumer's queue is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FullPolicy {
    /// Drop the new frame and count it: a live camera is never stalled.
    #[default]
    DropNewest,
    /// Wait for room: the source slows to the consumer's pace and no frame is lost.
    Block,
}

fn default_frame_queue() -> usize {
    DEFAULT_FRAME_QUEUE
}

/// The kinds of video source; the `kind` key selects one.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceConfig {
    /// GStreamer's `videotestsrc`: synthetic frames, for tests, demos and benchmarks.
    Test(TestSourceConfig),
}

/// Settings of the `videotestsrc` source.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestSourceConfig {
    /// Frames to produce before end of stream; absent means run until stopped.
    pub num_buffers: Option<u32>,
    /// Produce frames at the pace of the pipeline clock, like a camera (true), or as fast as the
    /// pipeline accepts them, like a recorded file (false).
    pub is_live: bool,
}

impl Default for TestSourceConfig {
    fn default() -> Self {
        Self {
            num_buffers: None,
            is_live: true,
        }
    }
}

/// The JPEG frames a stream yields.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Frame width in pixels; the source is scaled to it.
    pub width: u32,
    /// Frame height in pixels; the source is scaled to it.
    pub height: u32,
    /// JPEG quality, 0..=100.
    pub jpeg_quality: u8,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            width: DEFAULT_WIDTH,
            height: DEFAULT_HEIGHT,
            jpeg_quality: DEFAULT_JPEG_QUALITY,
        }
    }
}

impl StreamConfig {
    /// A stream from `videotestsrc` with default output settings.
    pub fn test(stream_id: impl Into<String>, source: TestSourceConfig) -> Self {
        Self {
            stream_id: stream_id.into(),
            source: SourceConfig::Test(source),
            output: OutputConfig::default(),
            frame_queue: DEFAULT_FRAME_QUEUE,
            full_policy: FullPolicy::default(),
        }
    }

    /// Checks the rules no single field can express and reports every problem at once, each
    /// naming its key.
    ///
    /// Limits of particular elements (for example JPEG's 65535-pixel dimensions) are left to caps
    /// negotiation, which reports them as a pipeline error, so this check cannot drift from what
    /// the installed plugins accept.
    pub fn validate(&self) -> Result<(), IngestError> {
        let mut problems = Vec::new();
        if self.stream_id.trim().is_empty() {
            problems.push("stream_id must not be empty".to_owned());
        }
        for (key, value) in [
            ("output.width", self.output.width),
            ("output.height", self.output.height),
        ] {
            if value == 0 || i32::try_from(value).is_err() {
                problems.push(format!(
                    "{key} must be between 1 and {}, got {value}",
                    i32::MAX
                ));
            }
        }
        if self.output.jpeg_quality > 100 {
            problems.push(format!(
                "output.jpeg_quality must be between 0 and 100, got {}",
                self.output.jpeg_quality
            ));
        }
        if self.frame_queue == 0 {
            problems.push("frame_queue must be at least 1".to_owned());
        }
        match &self.source {
            SourceConfig::Test(test) => {
                if test.num_buffers.is_some_and(|n| i32::try_from(n).is_err()) {
                    problems.push(format!("source.num_buffers must be at most {}", i32::MAX));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(IngestError::InvalidConfig {
                stream_id: self.stream_id.clone(),
                problems,
            })
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::expect_used,
    reason = "a failed expectation is the test failing"
)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_test_stream_from_toml() {
        let config: StreamConfig = toml::from_str(
            r#"
            stream_id = "or1-tower"
            frame_queue = 4

            [source]
            kind = "test"
            num_buffers = 30
            is_live = false

            [output]
            width = 320
            height = 240
            jpeg_quality = 90
            "#,
        )
        .expect("valid config");
        assert_eq!(
            config.source,
            SourceConfig::Test(TestSourceConfig {
                num_buffers: Some(30),
                is_live: false
            })
        );
        assert_eq!(config.output.width, 320);
        assert_eq!(config.frame_queue, 4);
        config.validate().expect("valid");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<StreamConfig>(
            r#"
            stream_id = "s"
            [source]
            kind = "test"
            num_bufers = 3
            "#,
        )
        .expect_err("typo must be rejected");
        assert!(err.to_string().contains("num_bufers"), "{err}");
    }

    #[test]
    fn validate_reports_every_problem_naming_the_key() {
        let mut config = StreamConfig::test("", TestSourceConfig::default());
        config.output.width = 0;
        config.output.jpeg_quality = 101;
        config.frame_queue = 0;
        let Err(IngestError::InvalidConfig { problems, .. }) = config.validate() else {
            panic!("expected InvalidConfig");
        };
        let all = problems.join("\n");
        for key in [
            "stream_id",
            "output.width",
            "output.jpeg_quality",
            "frame_queue",
        ] {
            assert!(all.contains(key), "{key} missing from: {all}");
        }
        assert_eq!(problems.len(), 4);
    }
}
