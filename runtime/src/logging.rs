//! Logging and tracing set-up: `tracing` to stderr as text or JSON lines, and, when an
//! OTLP endpoint is configured, the same spans exported as OpenTelemetry traces.
//!
//! Spans are exported from INFO up whatever `RUST_LOG` says (it filters the log lines
//! only), sampled per trace (parent-based, so one webhook's trace is kept or dropped
//! whole across services).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How a service logs and traces.
#[derive(clap::Args, Debug, Clone)]
pub struct LogArgs {
    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info` or `info,loader=debug`.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
    /// OTLP/HTTP endpoint that receives traces, e.g. `http://otel-collector:4318`
    /// (`/v1/traces` is appended); empty: traces are not exported.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", default_value = "", value_parser = endpoint)]
    pub otlp_endpoint: String,
    /// Share of traces exported, from 0 to 1.
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", default_value_t = 1.0, value_parser = ratio)]
    pub trace_sample_ratio: f64,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for LogArgs {
    fn default() -> LogArgs {
        LogArgs {
            log_format: LogFormat::Text,
            log_filter: "info".into(),
            otlp_endpoint: String::new(),
            trace_sample_ratio: 1.0,
        }
    }
}

/// A logging or tracing setting that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogConfigError {
    #[error("endpoint {0:?} must start with http:// or https:// (or be empty: no traces)")]
    BadEndpoint(String),
    #[error("the share of traces must be a number from 0 to 1, got {0:?}")]
    BadRatio(String),
}

/// Reads the OTLP endpoint: empty, or an http(s) URL.
pub fn endpoint(text: &str) -> Result<String, LogConfigError> {
    if text.is_empty() || text.starts_with("http://") || text.starts_with("https://") {
        Ok(text.to_owned())
    } else {
        Err(LogConfigError::BadEndpoint(text.to_owned()))
    }
}

/// Reads a share from 0 to 1.
pub fn ratio(text: &str) -> Result<f64, LogConfigError> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| LogConfigError::BadRatio(text.to_owned()))
}

/// Keeps the trace exporter alive; dropping it sends what is buffered.
#[must_use = "traces stop being exported when this is dropped"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("trace export did not finish: {e}");
            }
        }
    }
}

/// Installs the global subscriber for `service`. A second call (as in tests that start
/// several services in one process) leaves the first in place.
pub fn init(args: &LogArgs, service: &'static str) -> Telemetry {
    let filter = EnvFilter::try_new(&args.log_filter).unwrap_or_else(|e| {
        eprintln!(
            "invalid log filter {:?} ({e}); using \"info\"",
            args.log_filter
        );
        EnvFilter::new("info")
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if args.log_format == LogFormat::Json {
        fmt.json().with_filter(filter).boxed()
    } else {
        fmt.with_filter(filter).boxed()
    };
    let provider = (!args.otlp_endpoint.is_empty()).then(|| provider(args, service));
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service))
            .with_filter(LevelFilter::INFO)
    });
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    Telemetry { provider }
}

fn provider(args: &LogArgs, service: &'static str) -> SdkTracerProvider {
    let endpoint = format!("{}/v1/traces", args.otlp_endpoint.trim_end_matches('/'));
    // The blocking HTTP client must be built outside the async runtime; the exporter
    // then runs on the batch processor's own thread.
    let exporter = std::thread::spawn(move || {
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .build()
    })
    .join()
    .expect("building the OTLP exporter does not panic")
    .expect("an OTLP/HTTP exporter with a valid endpoint builds");
    SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            args.trace_sample_ratio,
        ))))
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_tracing_setting_that_is_wrong() {
        assert_eq!(endpoint(""), Ok(String::new()));
        assert_eq!(
            endpoint("http://collector:4318"),
            Ok("http://collector:4318".into())
        );
        assert_eq!(
            endpoint("collector:4318"),
            Err(LogConfigError::BadEndpoint("collector:4318".into()))
        );
        assert_eq!(ratio("0.1"), Ok(0.1));
        assert_eq!(ratio("1.5"), Err(LogConfigError::BadRatio("1.5".into())));
        assert_eq!(ratio("all"), Err(LogConfigError::BadRatio("all".into())));
    }
}
