//! W3C trace context in message headers, so one trace follows a frame from capture to the row.
//!
//! A producer writes the context of the span that made a message into its [`Headers`]
//! ([`inject`], or [`inject_span`] from a `tracing` span); a consumer reads it back
//! ([`extract`], [`span_context`]) and either continues the trace ([`set_parent`]: the sink's
//! transaction under the frame's trace) or links to it ([`add_link`]: one inference batch span
//! linked to each of its frames' spans, since a batch has many parents).
//!
//! The format is fixed by the wire contract, not by whatever propagator a process installed:
//! always W3C Trace Context, the `traceparent` header
//! ([`orstream_proto::headers::TRACEPARENT`]) plus `tracestate` when it is not empty. A message
//! without a valid `traceparent` yields an empty context, never an error: tracing is optional
//! and a malformed header must not cost a frame.
//!
//! The `tracing` helpers work through the `tracing-opentelemetry` layer that the service
//! installs; without it (tracing off) they do nothing, and [`inject_span`] writes no header.

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::message::Headers;

/// The W3C `traceparent` header: version, trace id, parent span id, flags.
pub const TRACEPARENT: &str = orstream_proto::headers::TRACEPARENT;

/// The W3C `tracestate` header: vendor-specific trace data, carried only when not empty.
pub const TRACESTATE: &str = "tracestate";

/// Longest header value read as trace context. W3C allows `tracestate` up to 512 characters
/// and `traceparent` is 55; anything longer is ignored rather than parsed.
const MAX_VALUE_LEN: usize = 512;

/// Writes the trace context of `cx`'s span into `headers`, replacing any trace context they
/// held. Writes nothing (and removes nothing) when `cx` has no valid span, e.g. tracing is off
/// or the span was not sampled into existence.
pub fn inject(headers: &mut Headers, cx: &Context) {
    let mut fields = Fields::default();
    TraceContextPropagator::new().inject_context(cx, &mut fields);
    if fields.0.is_empty() {
        return;
    }
    let kept: Headers = headers
        .iter()
        .filter(|(name, _)| !is_trace_header(name))
        .map(|(name, value)| (name.to_owned(), value.to_vec()))
        .collect();
    *headers = kept;
    for (name, value) in fields.0 {
        headers.push(name, value);
    }
}

/// Writes the trace context of a `tracing` span into `headers` (see [`inject`]).
pub fn inject_span(headers: &mut Headers, span: &tracing::Span) {
    inject(headers, &span.context());
}

/// Writes the trace context of the current `tracing` span into `headers` (see [`inject`]).
pub fn inject_current(headers: &mut Headers) {
    inject_span(headers, &tracing::Span::current());
}

/// Reads the trace context from `headers`: a context whose remote span is the message's
/// parent, or an empty context when the headers carry none or a malformed one.
pub fn extract(headers: &Headers) -> Context {
    TraceContextPropagator::new().extract(&HeaderReader(headers))
}

/// The span context carried by `headers`, when they carry a valid one; what a span links to.
pub fn span_context(headers: &Headers) -> Option<SpanContext> {
    let cx = extract(headers);
    let span_context = cx.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// Makes the message's span the parent of `span`, so `span` continues the message's trace.
/// Returns whether it did: `false` when the headers carry no trace context, or when no
/// OpenTelemetry layer is installed (tracing off), or when `span` has already started.
pub fn set_parent(span: &tracing::Span, headers: &Headers) -> bool {
    match span_context(headers) {
        Some(remote) => span
            .set_parent(Context::new().with_remote_span_context(remote))
            .is_ok(),
        None => false,
    }
}

/// Links `span` to the message's span, for a span with many parents (a batch of frames).
/// Returns whether the headers carried a trace context to link to.
pub fn add_link(span: &tracing::Span, headers: &Headers) -> bool {
    match span_context(headers) {
        Some(remote) => {
            span.add_link(remote);
            true
        }
        None => false,
    }
}

fn is_trace_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(TRACEPARENT) || name.eq_ignore_ascii_case(TRACESTATE)
}

/// What the propagator writes, collected before the headers are touched.
#[derive(Default)]
struct Fields(Vec<(String, String)>);

impl Injector for Fields {
    fn set(&mut self, key: &str, value: String) {
        // An empty tracestate is legal to omit and saves bytes on every message.
        if !value.is_empty() {
            self.0.push((key.to_owned(), value));
        }
    }
}

/// Headers as the propagator reads them: the last value of a name wins, as in
/// [`Headers::get`]; non-UTF-8 and overlong values count as absent.
struct HeaderReader<'a>(&'a Headers);

impl Extractor for HeaderReader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let value = self
            .0
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(key))
            .last()
            .map(|(_, value)| value)?;
        if value.len() > MAX_VALUE_LEN {
            return None;
        }
        std::str::from_utf8(value).ok()
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer, TracerProvider,
    };
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn remote(flags: TraceFlags, state: TraceState) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128),
            SpanId::from(0x00f0_67aa_0ba9_02b7_u64),
            flags,
            true,
            state,
        ))
    }

    #[test]
    fn header_name_is_the_contracts() {
        assert_eq!(TRACEPARENT, "traceparent");
    }

    #[test]
    fn inject_writes_traceparent_only_when_tracestate_is_empty() {
        let mut headers = Headers::new().with("orstream-schema-version", "1");
        inject(&mut headers, &remote(TraceFlags::SAMPLED, TraceState::NONE));
        assert_eq!(headers.len(), 2);
        assert_eq!(headers.get(TRACEPARENT), Some(PARENT.as_bytes()));
        assert_eq!(headers.get(TRACESTATE), None);
        assert_eq!(headers.get("orstream-schema-version"), Some(&b"1"[..]));
    }

    #[test]
    fn round_trip_keeps_ids_flags_and_state() {
        let state = TraceState::from_key_value([("vendor", "x1")]).unwrap();
        let cx = remote(TraceFlags::SAMPLED, state);
        let mut headers = Headers::new();
        inject(&mut headers, &cx);
        let back = span_context(&headers).expect("a valid span context");
        let sent = cx.span().span_context().clone();
        assert_eq!(back.trace_id(), sent.trace_id());
        assert_eq!(back.span_id(), sent.span_id());
        assert!(back.is_sampled());
        assert!(back.is_remote());
        assert_eq!(back.trace_state().get("vendor"), Some("x1"));
    }

    #[test]
    fn unsampled_flag_survives() {
        let mut headers = Headers::new();
        inject(
            &mut headers,
            &remote(TraceFlags::default(), TraceState::NONE),
        );
        let back = span_context(&headers).unwrap();
        assert!(!back.is_sampled());
    }

    #[test]
    fn inject_replaces_earlier_trace_context() {
        let mut headers = Headers::new()
            .with(
                TRACEPARENT,
                "00-11111111111111111111111111111111-2222222222222222-01",
            )
            .with(TRACESTATE, "old=1")
            .with("other", "kept");
        inject(&mut headers, &remote(TraceFlags::SAMPLED, TraceState::NONE));
        let names: Vec<&str> = headers.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["other", TRACEPARENT]);
        assert_eq!(headers.get(TRACEPARENT), Some(PARENT.as_bytes()));
    }

    #[test]
    fn no_span_writes_nothing() {
        let mut headers = Headers::new()
            .with(TRACEPARENT, PARENT)
            .with("other", "kept");
        let before = headers.clone();
        inject(&mut headers, &Context::new());
        assert_eq!(headers, before);
    }

    #[test]
    fn missing_or_malformed_headers_yield_an_empty_context() {
        let bad: [&[u8]; 6] = [
            b"",
            b"garbage",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"\xff\xfe not utf-8",
        ];
        assert!(span_context(&Headers::new()).is_none());
        assert!(!extract(&Headers::new()).has_active_span());
        for value in bad {
            let headers = Headers::new().with(TRACEPARENT, value);
            assert!(span_context(&headers).is_none(), "{value:?}");
        }
        let long = format!("{PARENT}{}", "-x".repeat(MAX_VALUE_LEN));
        assert!(span_context(&Headers::new().with(TRACEPARENT, long)).is_none());
    }

    #[test]
    fn the_last_traceparent_wins() {
        let headers = Headers::new()
            .with(
                TRACEPARENT,
                "00-11111111111111111111111111111111-2222222222222222-01",
            )
            .with(TRACEPARENT, PARENT);
        let back = span_context(&headers).unwrap();
        assert_eq!(
            back.trace_id(),
            TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128)
        );
    }

    #[test]
    fn tracing_spans_carry_the_trace_across_headers() {
        let provider = SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            // Producer side: a span per frame, its context into the headers.
            let capture = tracing::info_span!("capture");
            let mut headers = Headers::new();
            inject_span(&mut headers, &capture);
            let sent = capture.context().span().span_context().clone();
            assert!(sent.is_valid());
            assert!(headers.get(TRACEPARENT).is_some());

            // Consumer side: a child in the same trace.
            let store = tracing::info_span!("store");
            assert!(set_parent(&store, &headers));
            let child = store.context().span().span_context().clone();
            assert_eq!(child.trace_id(), sent.trace_id());
            assert_ne!(child.span_id(), sent.span_id());

            // A batch links to its frames instead.
            let batch = tracing::info_span!("batch");
            assert!(add_link(&batch, &headers));
            assert!(!add_link(&batch, &Headers::new()));
            assert!(!set_parent(&tracing::info_span!("orphan"), &Headers::new()));

            let _entered = store.enter();
            let mut again = Headers::new();
            inject_current(&mut again);
            let forwarded = span_context(&again).unwrap();
            assert_eq!(forwarded.trace_id(), sent.trace_id());
            assert_eq!(forwarded.span_id(), child.span_id());
        });
        // With an SDK tracer (not the tracing layer) the context goes the same way.
        let tracer = provider.tracer("test");
        let span = tracer.start("direct");
        let cx = Context::new().with_span(span);
        let mut headers = Headers::new();
        inject(&mut headers, &cx);
        assert_eq!(
            span_context(&headers).unwrap().trace_id(),
            cx.span().span_context().trace_id()
        );
    }

    #[test]
    fn without_an_opentelemetry_layer_nothing_is_written() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("capture");
            let mut headers = Headers::new();
            inject_span(&mut headers, &span);
            assert!(headers.is_empty());
            let incoming = Headers::new().with(TRACEPARENT, PARENT);
            assert!(!set_parent(&span, &incoming));
        });
    }
}
