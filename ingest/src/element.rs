//! GStreamer elements by factory name. A factory is missing when its plugin package is not
//! installed: the error names the factory and the stream, so the fix (install the package) is
//! obvious. Shared by the source half of a pipeline and the rest of it.

use gstreamer as gst;

use crate::error::IngestError;

/// Creates element `factory` named `name`, or says which factory is missing.
pub(crate) fn make_element(
    stream_id: &str,
    factory: &str,
    name: &str,
) -> Result<gst::Element, IngestError> {
    gst::ElementFactory::make(factory)
        .name(name)
        .build()
        .map_err(|e| IngestError::MissingElement {
            stream_id: stream_id.to_owned(),
            factory: factory.to_owned(),
            cause: e.to_string(),
        })
}
