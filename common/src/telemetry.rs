//! Logging, tracing and metrics set-up shared by both binaries.
//!
//! Logs go to stderr (JSON or text). When an OTLP endpoint is configured
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`), the same `tracing` spans are exported as
//! OpenTelemetry traces over OTLP/HTTP (protobuf), batched on the tokio
//! runtime. The W3C trace context of a span can be carried to another
//! process (inside a queue job) and continued there, so one trace covers an
//! *Execute* request and every target it starts.

use std::{collections::BTreeMap, io::IsTerminal};

use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{
    Resource, propagation::TraceContextPropagator, runtime,
    trace::span_processor_with_async_runtime::BatchSpanProcessor,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, Layer, fmt, fmt::MakeWriter, prelude::*};

use crate::config::{LogFormat, OtelSettings};

/// Crates whose own spans must not be exported: the exporter's HTTP stack
/// would otherwise trace its own exports; the session layer's span adds
/// nothing to the request's.
const NOT_EXPORTED: &str = "hyper=off,hyper_util=off,h2=off,tower=off,opentelemetry=off,\
                            opentelemetry_sdk=off,opentelemetry_otlp=off,opentelemetry_http=off,\
                            tower_sessions=off";

/// What was set up; keep it until the process ends and call
/// [`Telemetry::shutdown`] so the last spans are exported.
#[must_use = "dropping the guard without shutdown loses the last spans"]
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Whether traces are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans ended so far. Blocks until the export is done: call
    /// it outside the async runtime's threads (e.g. `spawn_blocking`).
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(err) = provider.force_flush()
        {
            eprintln!("telemetry: flushing traces failed: {err}");
        }
    }

    /// Exports the remaining spans and stops the exporter. Call it from
    /// outside the runtime (after `block_on` returned) while the runtime is
    /// still alive: the exporter's batch task runs on it.
    pub fn shutdown(mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("telemetry: shutting down the trace exporter failed: {err}");
        }
    }
}

/// Logs to stderr, and traces when `otel` is set. Must be called inside a
/// tokio runtime when `otel` is set (the exporter's batch task starts on it).
/// Levels come from `RUST_LOG` (default `info`).
pub fn init(format: Option<LogFormat>, otel: Option<&OtelSettings>) -> Telemetry {
    init_with_writer(format, otel, std::io::stderr)
}

/// [`init`] with log lines going to `writer` (tests capture them).
pub fn init_with_writer<W>(
    format: Option<LogFormat>,
    otel: Option<&OtelSettings>,
    writer: W,
) -> Telemetry
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let logs = match format {
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(writer)
            .boxed(),
        LogFormat::Text => fmt::layer().with_writer(writer).boxed(),
    }
    .with_filter(env_filter(""));
    let provider = otel.and_then(|settings| match tracer_provider(settings) {
        Ok(provider) => Some(provider),
        Err(err) => {
            eprintln!(
                "telemetry: traces are not exported to {}: {err}",
                settings.traces_endpoint
            );
            None
        }
    });
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("migrate-hub"))
            .with_filter(env_filter(NOT_EXPORTED))
    });
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init()
        .is_ok();
    if !installed {
        // A second initialisation (tests) keeps the first subscriber; this
        // exporter would receive nothing.
        if let Some(provider) = provider {
            let _ = provider.shutdown();
        }
        return Telemetry::default();
    }
    Telemetry { provider }
}

/// `RUST_LOG` (default `info`) plus `extra` directives.
fn env_filter(extra: &str) -> EnvFilter {
    let base = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "info".into());
    let directives = if extra.is_empty() {
        base
    } else {
        format!("{base},{extra}")
    };
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"))
}

fn tracer_provider(
    settings: &OtelSettings,
) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(settings.traces_endpoint.clone())
        .build()?;
    // The thread-based batch processor needs a reactor of its own; this one
    // runs its exports as tasks of the process's tokio runtime.
    let processor = BatchSpanProcessor::builder(exporter, runtime::Tokio).build();
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

/// A W3C trace context (`traceparent`, `tracestate`) as carried in jobs.
pub type TraceContext = BTreeMap<String, String>;

struct Carrier<'a>(&'a mut TraceContext);

impl Injector for Carrier<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct Reader<'a>(&'a TraceContext);

impl Extractor for Reader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The W3C trace context of `span`; empty when traces are not exported.
pub fn trace_context(span: &tracing::Span) -> TraceContext {
    let mut carrier = TraceContext::new();
    let context = span.context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut Carrier(&mut carrier));
    }
    carrier
}

/// The `traceparent` of `span`, when traces are exported.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    trace_context(span).remove("traceparent")
}

/// Makes `span` continue the trace in `carrier` (a remote parent). Does
/// nothing when the carrier holds no valid context or traces are off.
pub fn continue_trace(span: &tracing::Span, carrier: &TraceContext) {
    if carrier.is_empty() {
        return;
    }
    let context = TraceContextPropagator::new().extract(&Reader(carrier));
    if context.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed: nothing to join.
        let _ = span.set_parent(context);
    }
}

/// Renames `span` in the exported trace (e.g. after routing found the route
/// template). Does nothing when traces are not exported.
pub fn rename(span: &tracing::Span, name: String) {
    let context = span.context();
    let otel_span = context.span();
    if otel_span.span_context().is_valid() {
        otel_span.update_name(name);
    }
}

/// The process-wide Prometheus recorder, installed on first use. Both
/// binaries (and tests that run both in one process) share it, so every
/// recorded metric shows up in the process's `/metrics`.
pub fn metrics_handle() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    const SECONDS: [f64; 16] = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
        600.0,
    ];
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)
            .expect("buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed by a host program; then
        // nothing is recorded here and `/metrics` shows only what is computed.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_exporter_there_is_no_context_to_carry() {
        let span = tracing::info_span!("no_subscriber");
        assert!(trace_context(&span).is_empty());
        assert_eq!(traceparent(&span), None);
        // Joining an absent or garbage context is harmless.
        continue_trace(&span, &TraceContext::new());
        continue_trace(
            &span,
            &TraceContext::from([("traceparent".to_owned(), "garbage".to_owned())]),
        );
    }

    #[test]
    fn a_context_survives_the_round_trip_through_a_job() {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let tracer = provider.tracer("test");
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
        tracing::subscriber::with_default(subscriber, || {
            let parent = tracing::info_span!("execute");
            let carried = trace_context(&parent);
            let header = carried.get("traceparent").expect("traceparent is carried");
            let parent_cx = parent.context();
            let parent_ids = parent_cx.span().span_context().clone();
            assert_eq!(
                header,
                &format!("00-{}-{}-01", parent_ids.trace_id(), parent_ids.span_id())
            );
            // A span in another process (no local parent) joins the trace.
            let child = tracing::info_span!(parent: None, "target_execution");
            continue_trace(&child, &carried);
            let child_cx = child.context();
            let child_ids = child_cx.span().span_context().clone();
            assert_eq!(child_ids.trace_id(), parent_ids.trace_id());
            assert_ne!(child_ids.span_id(), parent_ids.span_id());
        });
    }
}
