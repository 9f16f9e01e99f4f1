//! The errors of the ingest crate; each names the stream it happened on (or `*` for the
//! service as a whole).

use std::time::Duration;

/// Everything that can go wrong while building or running an ingest pipeline.
///
/// Texts that come from GStreamer have the source's location (an RTSP URL may hold credentials,
/// a file name may name a person) replaced by `<location>`.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The configuration breaks one or more rules; every problem is listed.
    #[error("stream {stream_id}: invalid configuration: {}", problems.join("; "))]
    InvalidConfig {
        /// The stream the configuration is for (`*`: the service configuration).
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
        /// The input itself is unusable (no decoder for its codec, not a video, caps that cannot
        /// be negotiated, an undecodable file): trying again cannot help.
        unusable_input: bool,
    },

    /// Neither end of stream nor an error arrived within the wait.
    #[error("stream {stream_id}: no end of stream within {waited:?}")]
    Timeout {
        /// The stream that was waited on.
        stream_id: String,
        /// How long the wait lasted.
        waited: Duration,
    },

    /// The bus refused a request the service cannot run without (topic creation, a producer).
    #[error("{what}: {source}")]
    Bus {
        /// What was being done, naming the topic.
        what: String,
        /// The bus's error.
        #[source]
        source: orstream_bus::BusError,
    },

    /// A thread the service needs could not be started.
    #[error("stream {stream_id}: cannot start its thread: {reason}")]
    Thread {
        /// The stream (`*`: the service).
        stream_id: String,
        /// The system's reason.
        reason: String,
    },

    /// The admin API could not start (its address, its tokens' file).
    #[error("admin API: {0}")]
    Admin(String),

    /// A stream's thread panicked; the other streams went on.
    #[error("stream {stream_id}: its thread panicked")]
    Panicked {
        /// The stream whose thread panicked.
        stream_id: String,
    },
}

impl IngestError {
    /// Whether retrying the same stream later may succeed (a source that failed at run time, a
    /// wait that ran out) as opposed to a configuration, installation or input problem that
    /// will fail the same way again.
    pub fn is_retriable(&self) -> bool {
        match self {
            Self::Pipeline { unusable_input, .. } => !unusable_input,
            Self::Timeout { .. } | Self::StateChange { .. } => true,
            Self::Bus { source, .. } => source.is_retriable(),
            _ => false,
        }
    }
}

/// Replaces every occurrence of `secret` (a source location) in `text` with `<location>`, and
/// hides the user information of any `rtsp://user:password@` URL that is left.
pub(crate) fn redact(text: &str, secret: Option<&str>) -> String {
    let mut out = match secret {
        Some(secret) if !secret.is_empty() => text.replace(secret, "<location>"),
        _ => text.to_owned(),
    };
    for scheme in ["rtsp://", "rtsps://"] {
        let mut from = 0;
        while let Some(found) = out[from..].find(scheme) {
            let start = from + found + scheme.len();
            let end = out[start..]
                .find(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == '\'')
                .map_or(out.len(), |n| start + n);
            if let Some(at) = out[start..end].rfind('@') {
                out.replace_range(start..start + at, "<credentials>");
            }
            from = start.min(out.len());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_location_and_stray_credentials() {
        let secret = "rtsp://admin:hunter2@10.0.0.5:554/stream1";
        let text =
            format!("Could not open {secret}; also rtsp://bob:pw@other/x and rtsp://plain/y");
        let out = redact(&text, Some(secret));
        assert!(!out.contains("hunter2"), "{out}");
        assert!(!out.contains("bob:pw"), "{out}");
        assert!(out.contains("<location>"), "{out}");
        assert!(out.contains("rtsp://<credentials>@other/x"), "{out}");
        assert!(out.contains("rtsp://plain/y"), "{out}");
        assert_eq!(
            redact("no file \"/cases/smith.mp4\"", Some("/cases/smith.mp4")),
            "no file \"<location>\""
        );
    }
}
