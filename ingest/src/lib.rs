//! orstream-ingest turns video sources into timestamped JPEG frames.
//!
//! Each stream is one GStreamer pipeline: a source (today `videotestsrc`; cameras, files and RTSP
//! later), then conversion, scaling to the configured size and JPEG encoding, ending in an
//! `appsink`. The appsink's callback copies each encoded frame into a bounded channel without
//! ever blocking the streaming thread; frames it cannot hand over are dropped and counted.
//!
//! Modules, in the order data flows through them:
//! - [`config`]: [`StreamConfig`], what one stream is (source, output size and quality, queue).
//! - `source` (private): the source element for each kind of source.
//! - [`pipeline`]: [`FramePipeline`], which assembles and runs the pipeline, yields [`Frame`]s
//!   through a `std::sync::mpsc::Receiver`, reports end of stream and element errors from the
//!   bus, and counts every frame ([`FrameCounts`]).
//! - [`error`]: [`IngestError`], naming the stream and the element or key at fault.
//!
//! In: a [`StreamConfig`]. Out: [`Frame`]s (JPEG bytes, size, PTS and pipeline running time).
//!
//! ```no_run
//! use std::time::Duration;
//! use orstream_ingest::{FramePipeline, StreamConfig, TestSourceConfig};
//!
//! # fn main() -> Result<(), orstream_ingest::IngestError> {
//! let config = StreamConfig::test(
//!     "or1-tower",
//!     TestSourceConfig { num_buffers: Some(30), is_live: false },
//! );
//! let (pipeline, frames) = FramePipeline::build(&config)?;
//! pipeline.start()?;
//! // The channel closes once the stream has ended or failed.
//! for frame in &frames {
//!     println!("{} bytes at {} ns", frame.jpeg.len(), frame.pts_ns);
//! }
//! // End of stream, or the element error that stopped it.
//! pipeline.wait_for_eos(Duration::from_secs(10))?;
//! # Ok(())
//! # }
//! ```

pub mod config;
pub mod error;
pub mod pipeline;
mod source;

pub use config::{FullPolicy, OutputConfig, SourceConfig, StreamConfig, TestSourceConfig};
pub use error::IngestError;
pub use pipeline::{Frame, FrameCounts, FramePipeline, init};
