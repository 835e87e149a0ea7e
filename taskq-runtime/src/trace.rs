//! Trace propagation: one trace follows a request into the background work it starts.
//!
//! A start stores a trace context with the task ([`NewTask::trace`](crate::store::NewTask::trace)),
//! in the W3C Trace Context `traceparent` form
//! (`00-{32 hex trace id}-{16 hex parent span id}-{2 hex flags}`), and every claim hands it
//! back. The worker's span of each attempt (`taskq.attempt`) carries it as its field
//! `trace_parent`, and with the `opentelemetry` cargo feature (and a
//! `tracing_opentelemetry` layer in the application's subscriber) that span's
//! OpenTelemetry parent is that remote context: the attempt is a child of the span that
//! started the task, in the same trace, however long after and on whichever host it runs.
//! This is what an OpenTelemetry user expects of a message or job system (a producer's
//! context injected into the message, the consumer's span a child of it).
//!
//! What is stored:
//! - by default, with the `opentelemetry` feature, [`current`]: the OpenTelemetry context
//!   of the current `tracing` span at the start (its trace id, its span id as the parent,
//!   its sampled flag); nothing when no span is current or it has no valid context;
//! - without the feature, nothing unless the start says so;
//! - what [`TaskBuilder::trace_parent`](crate::TaskBuilder::trace_parent) gives (a
//!   `traceparent` received from an incoming request, say), whatever the feature.
//!
//! An iterative run's continuation steps keep their first step's context, so every batch
//! of a run joins the trace that started it. A value that does not parse as a
//! `traceparent` is still shown in the field but links nothing.

/// The current `tracing` span's OpenTelemetry context as a W3C `traceparent` value, or
/// `None` when there is none (no current span, no OpenTelemetry layer, or an invalid
/// context). Without the `opentelemetry` feature, always `None`.
pub fn current() -> Option<String> {
    #[cfg(feature = "opentelemetry")]
    {
        otel::current()
    }
    #[cfg(not(feature = "opentelemetry"))]
    {
        None
    }
}

/// A `traceparent` value's parts, when it is well formed: version `00` (or any later
/// version but `ff`, whose first four fields are read the same way), a trace id of 32
/// lowercase or uppercase hex digits and a span id of 16, neither all zeros, and the
/// flags byte. `None` otherwise.
pub fn parse(traceparent: &str) -> Option<([u8; 16], [u8; 8], u8)> {
    let mut parts = traceparent.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    // Version 00 has exactly four fields; a later version may add some.
    if version.len() != 2 || version.eq_ignore_ascii_case("ff") {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    u8::from_str_radix(version, 16).ok()?;
    let trace = hex_bytes::<16>(trace)?;
    let span = hex_bytes::<8>(span)?;
    if flags.len() != 2 || trace == [0; 16] || span == [0; 8] {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace, span, flags))
}

/// Formats a `traceparent` value (version `00`).
pub fn format(trace_id: [u8; 16], span_id: [u8; 8], flags: u8) -> String {
    let mut s = String::with_capacity(55);
    s.push_str("00-");
    for b in trace_id {
        s.push_str(&format!("{b:02x}"));
    }
    s.push('-');
    for b in span_id {
        s.push_str(&format!("{b:02x}"));
    }
    s.push_str(&format!("-{flags:02x}"));
    s
}

fn hex_bytes<const N: usize>(hex: &str) -> Option<[u8; N]> {
    if hex.len() != 2 * N || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Makes `span` (an attempt's span, not yet entered) a child of the stored context. A
/// no-op without the `opentelemetry` feature, for a value that does not parse, or when
/// the subscriber has no OpenTelemetry layer.
pub(crate) fn attach(span: &tracing::Span, traceparent: &str) {
    #[cfg(feature = "opentelemetry")]
    otel::attach(span, traceparent);
    #[cfg(not(feature = "opentelemetry"))]
    let _ = (span, traceparent);
}

#[cfg(feature = "opentelemetry")]
mod otel {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    pub(super) fn current() -> Option<String> {
        let cx = tracing::Span::current().context();
        let span = cx.span();
        let sc = span.span_context();
        if !sc.is_valid() {
            return None;
        }
        Some(super::format(
            sc.trace_id().to_bytes(),
            sc.span_id().to_bytes(),
            sc.trace_flags().to_u8(),
        ))
    }

    pub(super) fn attach(span: &tracing::Span, traceparent: &str) {
        let Some((trace, parent, flags)) = super::parse(traceparent) else {
            return;
        };
        let remote = SpanContext::new(
            TraceId::from_bytes(trace),
            SpanId::from_bytes(parent),
            // Only the sampled bit is defined; the others are kept as sent.
            TraceFlags::new(flags),
            true,
            TraceState::default(),
        );
        let cx = opentelemetry::Context::new().with_remote_span_context(remote);
        // Fails only when the span was already started or has no OpenTelemetry layer:
        // then the attempt's span stays a root, and its `trace_parent` field still names
        // the starter.
        let _ = span.set_parent(cx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_bad_ones_are_refused() {
        let t = [0x4b; 16];
        let s = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
        let text = format(t, s, 1);
        assert_eq!(
            text,
            "00-4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b-00f067aa0ba902b7-01"
        );
        assert_eq!(parse(&text), Some((t, s, 1)));
        for bad in [
            "",
            "00-4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b-00f067aa0ba902b7",
            "ff-4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b-0000000000000000-01",
            "00-4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b-00f067aa0ba902b7-01-x",
            "00-4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4g-00f067aa0ba902b7-01",
            "00-4b4b4b4b4b4b4b4b4b4b4b4b4b4b4bé-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        // A later version may carry more fields.
        assert!(parse("01-4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b-00f067aa0ba902b7-01-x").is_some());
    }
}
