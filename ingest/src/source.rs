//! The first element of a stream's pipeline, chosen by [`SourceConfig`]. Camera, file and RTSP
//! sources will join `videotestsrc` here; everything downstream of the source is shared.

use gstreamer as gst;
use gstreamer::prelude::*;

use crate::config::{SourceConfig, TestSourceConfig};
use crate::error::IngestError;
use crate::pipeline::make_element;

/// Name of the source element inside a stream's pipeline; error messages show it.
pub(crate) const SOURCE_NAME: &str = "source";

/// Builds the source element for `config`.
pub(crate) fn build_source(
    stream_id: &str,
    config: &SourceConfig,
) -> Result<gst::Element, IngestError> {
    match config {
        SourceConfig::Test(test) => test_source(stream_id, test),
    }
}

fn test_source(stream_id: &str, config: &TestSourceConfig) -> Result<gst::Element, IngestError> {
    let source = make_element(stream_id, "videotestsrc", SOURCE_NAME)?;
    // `num-buffers` is a gint where -1 means unlimited; `validate()` has kept the value in range.
    let num_buffers = config
        .num_buffers
        .map_or(-1, |n| i32::try_from(n).unwrap_or(i32::MAX));
    source.set_property("num-buffers", num_buffers);
    source.set_property("is-live", config.is_live);
    Ok(source)
}
