//! The errors of the ingest crate; each names the stream it happened on.

use std::time::Duration;

/// Everything that can go wrong while building or running an ingest pipeline.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The configuration breaks one or more rules; every problem is listed.
    #[error("stream {stream_id}: invalid configuration: {}", problems.join("; "))]
    InvalidConfig {
        /// The stream the configuration is for.
        stream_id: String,
        /// One line per problem, each naming its key.
        problems: Vec<String>,
    },

    /// GStreamer itself could not be initialised.
    #[error("GStreamer initialisation failed: {0}")]
    Init(String),

    /// An element factory is not installed (a missing GStreamer plugin) or refused to build.
    #[error(
        "stream {stream_id}: cannot create GStreamer element `{factory}` (is its plugin installed?): {cause}"
    )]
    MissingElement {
        /// The stream whose pipeline was being built.
        stream_id: String,
        /// The element factory name, e.g. `jpegenc`.
        factory: String,
        /// GStreamer's reason.
        cause: String,
    },

    /// The pipeline could not be assembled (adding or linking elements).
    #[error("stream {stream_id}: cannot build pipeline: {cause}")]
    Build {
        /// The stream whose pipeline was being built.
        stream_id: String,
        /// What failed.
        cause: String,
    },

    /// A state change was refused and the bus held no error explaining why.
    #[error("stream {stream_id}: pipeline refused to go to {state}")]
    StateChange {
        /// The stream whose pipeline refused.
        stream_id: String,
        /// The requested state, e.g. `Playing`.
        state: String,
    },

    /// An element posted an error on the pipeline's bus; the pipeline has stopped producing.
    #[error("stream {stream_id}: element {element} failed: {message} ({debug})")]
    Pipeline {
        /// The stream whose pipeline failed.
        stream_id: String,
        /// Path of the element that posted the error, e.g.
        /// `/GstPipeline:or1/GstVideoTestSrc:source`.
        element: String,
        /// GStreamer's error message.
        message: String,
        /// GStreamer's debug detail (often the actual cause, e.g. `not-negotiated`).
        debug: String,
    },

    /// Neither end of stream nor an error arrived within the wait.
    #[error("stream {stream_id}: no end of stream within {waited:?}")]
    Timeout {
        /// The stream that was waited on.
        stream_id: String,
        /// How long the wait lasted.
        waited: Duration,
    },
}

impl IngestError {
    /// Whether retrying the same stream later may succeed (a source that failed at run time, a
    /// wait that ran out) as opposed to a configuration or installation problem that will fail
    /// the same way again.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Pipeline { .. } | Self::Timeout { .. })
    }
}
