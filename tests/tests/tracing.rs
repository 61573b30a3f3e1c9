//! One webhook can be followed from the HTTP request to its ClickHouse insert: the
//! trace id of ingest's `webhook` span is on transform's and the loader's spans, carried
//! by the `traceparent` Kafka header.
//!
//! Spans go to an in-memory OpenTelemetry exporter installed as this process's
//! subscriber (the services run in process and share it); the OTLP exporter the binaries
//! use is the same SDK with another exporter.

use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tests::{sample, Pipeline, Stages};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhooks_trace_id_is_on_the_spans_of_all_three_services() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("tests")))
        .with(tracing_subscriber::filter::LevelFilter::INFO)
        .init();

    let pipeline = Pipeline::start(Stages::ALL).await;
    let (status, receipt) = pipeline
        .post("call-ended", &sample("call-ended-full.json"))
        .await;
    assert_eq!(status, 200, "{receipt}");
    let event_id = receipt["event_id"].as_str().unwrap().to_owned();
    pipeline
        .wait_for_rows(
            "SELECT call_id FROM {db}.calls WHERE call_id = 880142",
            1,
            Duration::from_secs(60),
        )
        .await
        .unwrap();

    // The loader closes its spans right after the insert: wait for them briefly.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (webhook, trace) = loop {
        let spans = exporter.get_finished_spans().unwrap();
        let webhook = spans
            .iter()
            .find(|s| s.name == "webhook" && attribute(s, "event_id") == Some(event_id.clone()))
            .cloned();
        if let Some(webhook) = webhook {
            let trace_id = webhook.span_context.trace_id();
            let trace: Vec<SpanData> = spans
                .into_iter()
                .filter(|s| s.span_context.trace_id() == trace_id)
                .collect();
            if trace.iter().any(|s| s.name == "load") || Instant::now() > deadline {
                break (webhook, trace);
            }
        }
        assert!(Instant::now() < deadline, "no webhook span for {event_id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let names: Vec<&str> = trace.iter().map(|s| s.name.as_ref()).collect();
    for service_span in ["webhook", "transform", "load"] {
        assert!(
            names.contains(&service_span),
            "{service_span} missing in {names:?}"
        );
    }
    // Each hop is a child of the previous one.
    let by_name = |name: &str| trace.iter().find(|s| s.name == name).unwrap();
    assert_eq!(
        by_name("transform").parent_span_id,
        webhook.span_context.span_id()
    );
    assert_eq!(
        by_name("load").parent_span_id,
        by_name("transform").span_context.span_id()
    );
    // The load span names the ClickHouse block it was inserted with.
    let block = attribute(by_name("load"), "block").expect("the load span has its block");
    assert!(block.contains(".normalized:"), "{block}");
    pipeline.stop().await;
    let _ = provider.shutdown();
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}
