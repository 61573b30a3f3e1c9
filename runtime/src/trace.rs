//! W3C trace context (`traceparent`) between services: ingest puts it in the Kafka
//! headers of the raw record, transform continues the trace and puts it on what it
//! produces, the loader continues it up to the ClickHouse insert.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rdkafka::message::{Headers, Message, OwnedHeaders};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The Kafka header (and W3C field) that carries the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The `traceparent` of `span`, when tracing is on and the span has a valid context.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let mut fields = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut fields);
    fields.remove(TRACEPARENT)
}

/// Makes `span` a child of the trace in `traceparent` (nothing happens without one, or
/// when tracing is off).
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(value) = traceparent else { return };
    let fields = HashMap::from([(TRACEPARENT.to_owned(), value.to_owned())]);
    let context = TraceContextPropagator::new().extract(&fields);
    let _ = span.set_parent(context);
}

/// Kafka headers carrying `traceparent`, if any.
pub fn headers(traceparent: Option<&str>) -> Option<OwnedHeaders> {
    traceparent.map(|value| {
        OwnedHeaders::new().insert(rdkafka::message::Header {
            key: TRACEPARENT,
            value: Some(value),
        })
    })
}

/// The `traceparent` header of a Kafka message.
pub fn of_message(message: &impl Message) -> Option<String> {
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == TRACEPARENT)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_owned)
}
