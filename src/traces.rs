//! Distributed tracing (`[tracing]`): the W3C trace context a request
//! brings (`traceparent`, `tracestate`), a server span for the request
//! and a client span for each upstream attempt, whose id goes upstream in
//! a fresh `traceparent`; sampled spans are exported over OTLP/gRPC in
//! batches by the OpenTelemetry SDK, on its own thread.
//!
//! Without the section nothing here runs: no header is read or written
//! (a client's `traceparent` passes through as any header) and requests
//! carry no span.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator, RandomIdGenerator, Sampler,
    SamplingDecision, SdkTracer, SdkTracerProvider, ShouldSample, SpanData, SpanExporter,
};

use crate::config::TracingConfig;
use crate::telemetry::names;

/// The header names of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
pub const TRACEPARENT_NAME: http::HeaderName = http::HeaderName::from_static(TRACEPARENT);
pub const TRACESTATE_NAME: http::HeaderName = http::HeaderName::from_static(TRACESTATE);

/// A `traceparent` value's length: `00-` 32 hex `-` 16 hex `-` 2 hex.
pub const TRACEPARENT_LEN: usize = 55;

/// Spans waiting for export at most; beyond, new ones are dropped (the
/// SDK logs how many at shutdown) rather than growing memory.
const MAX_QUEUED_SPANS: usize = 4096;

/// The tracer every request's spans come from.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// Parent-based, new traces by ratio; asked before any span is made:
    /// an unsampled request makes no SDK span at all, only the ids its
    /// `traceparent` needs (the provider itself samples everything it is
    /// given).
    sampler: Sampler,
}

impl Tracing {
    /// Starts the exporter. Needs the tokio runtime (tonic's channel runs
    /// on it); connects lazily, so an absent collector fails exports (and
    /// counts them), never the start.
    pub fn start(config: &TracingConfig) -> Result<Tracing, String> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.otlp_endpoint.clone())
            .with_timeout(config.export_timeout)
            .build()
            .map_err(|e| format!("[tracing] otlp_endpoint: {e}"))?;
        let batches = BatchConfigBuilder::default()
            .with_max_queue_size(MAX_QUEUED_SPANS)
            .with_scheduled_delay(config.export_interval)
            .build();
        let processor = BatchSpanProcessor::builder(Counted(exporter))
            .with_batch_config(batches)
            .build();
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .build();
        let sampler =
            Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::AlwaysOn)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("cutover");
        Ok(Tracing {
            provider,
            tracer,
            sampler,
        })
    }

    /// The trace of a request that arrived at `start` with these header
    /// values: a child of a valid `traceparent`, else a new trace (a
    /// malformed one is ignored, as W3C asks).
    pub fn request<'m>(
        &self,
        start: Instant,
        traceparent: Option<&[u8]>,
        tracestate: Option<&[u8]>,
        method: impl FnOnce() -> &'m str,
    ) -> RequestTrace {
        let incoming = Incoming {
            traceparent: traceparent.and_then(|v| std::str::from_utf8(v).ok()),
            tracestate: tracestate.and_then(|v| std::str::from_utf8(v).ok()),
        };
        let parent = match incoming.traceparent {
            Some(_) => TraceContextPropagator::new().extract(&incoming),
            None => Context::new(),
        };
        let parent_span = parent.span().span_context().clone();
        // A new trace's id, drawn here for the ratio's decision; if
        // sampled, the SDK draws the span's own.
        let trace_id = if parent_span.is_valid() {
            parent_span.trace_id()
        } else {
            RandomIdGenerator::default().new_trace_id()
        };
        let decision = self
            .sampler
            .should_sample(Some(&parent), trace_id, "", &SpanKind::Server, &[], &[])
            .decision;
        if decision != SamplingDecision::RecordAndSample {
            return RequestTrace {
                trace_id,
                sampled: None,
                attempts: 0,
            };
        }
        let started = SystemTime::now()
            .checked_sub(start.elapsed())
            .unwrap_or_else(SystemTime::now);
        let span = self
            .tracer
            .span_builder(method().to_string())
            .with_kind(SpanKind::Server)
            .with_start_time(started)
            .start_with_context(&self.tracer, &parent);
        RequestTrace {
            trace_id: span.span_context().trace_id(),
            sampled: Some(Box::new(Sampled {
                tracer: self.tracer.clone(),
                span,
            })),
            attempts: 0,
        }
    }

    /// Exports what is queued, waiting at most a few seconds (a graceful
    /// stop).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown_with_timeout(Duration::from_secs(5)) {
            tracing::debug!(error = %e, "trace exporter shut down");
        }
    }
}

/// The incoming trace context, as the SDK's propagator reads it.
struct Incoming<'a> {
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
}

impl Extractor for Incoming<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent,
            TRACESTATE => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

/// A request's trace: its id, and with it sampled, its server span.
pub struct RequestTrace {
    trace_id: TraceId,
    sampled: Option<Box<Sampled>>,
    attempts: u32,
}

/// A sampled request's server span, and the tracer its attempts' spans
/// come from.
struct Sampled {
    tracer: SdkTracer,
    span: opentelemetry_sdk::trace::Span,
}

impl RequestTrace {
    /// The trace id, 32 hex digits (the access log's `trace_id`).
    pub fn trace_id(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// Whether this request's spans are exported.
    pub fn sampled(&self) -> bool {
        self.sampled.is_some()
    }

    /// Facts known once the request is routed; only a sampled span keeps
    /// them.
    pub fn describe(&mut self, facts: impl FnOnce() -> Vec<KeyValue>) {
        if let Some(sampled) = &mut self.sampled {
            sampled.span.set_attributes(facts());
        }
    }

    /// A client span for the next attempt, to `addr` of `pool`; its
    /// `traceparent` goes upstream with the attempt. Unsampled: only a
    /// fresh span id for it.
    pub fn attempt<'m>(
        &mut self,
        pool: &str,
        addr: SocketAddr,
        method: impl FnOnce() -> &'m str,
    ) -> AttemptSpan {
        self.attempts += 1;
        let Some(sampled) = &self.sampled else {
            let context = SpanContext::new(
                self.trace_id,
                RandomIdGenerator::default().new_span_id(),
                TraceFlags::default(),
                false,
                Default::default(),
            );
            return AttemptSpan {
                span: None,
                traceparent: TraceParent::of(&context),
            };
        };
        let parent = Context::new().with_remote_span_context(sampled.span.span_context().clone());
        let mut span = sampled
            .tracer
            .span_builder(method().to_string())
            .with_kind(SpanKind::Client)
            .start_with_context(&sampled.tracer, &parent);
        span.set_attributes([
            KeyValue::new("server.address", addr.ip().to_string()),
            KeyValue::new("server.port", i64::from(addr.port())),
            KeyValue::new("cutover.pool", pool.to_string()),
            KeyValue::new("cutover.attempt", i64::from(self.attempts)),
        ]);
        let traceparent = TraceParent::of(span.span_context());
        AttemptSpan {
            span: Some(Box::new(span)),
            traceparent,
        }
    }

    /// Ends the server span with the status the client got.
    pub fn finish(self, status: u16) {
        let Some(mut sampled) = self.sampled else {
            return;
        };
        let span = &mut sampled.span;
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        // A server span is an error for 5xx only (the client's 4xx is not
        // the server's fault: OpenTelemetry's HTTP conventions).
        if status >= 500 {
            span.set_status(Status::error(""));
        }
        span.end();
    }
}

/// One upstream attempt's client span (when sampled) and its
/// `traceparent`.
pub struct AttemptSpan {
    span: Option<Box<opentelemetry_sdk::trace::Span>>,
    traceparent: TraceParent,
}

impl AttemptSpan {
    /// The `traceparent` the attempt carries upstream.
    pub fn traceparent(&self) -> &TraceParent {
        &self.traceparent
    }

    /// Ends the span when the response head came (`Ok(status)`) or the
    /// attempt failed (`Err(kind)`, e.g. `timeout`).
    pub fn finish(self, outcome: Result<u16, &'static str>) {
        let Some(mut span) = self.span else {
            return;
        };
        match outcome {
            Ok(status) => {
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status),
                ));
                if status >= 400 {
                    span.set_status(Status::error(""));
                }
            }
            Err(kind) => {
                span.set_attribute(KeyValue::new("error.type", kind));
                span.set_status(Status::error(kind));
            }
        }
        span.end();
    }
}

/// A `traceparent` value, written without allocating: the direct path
/// copies it into the upstream head in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent([u8; TRACEPARENT_LEN]);

impl TraceParent {
    pub fn of(context: &SpanContext) -> TraceParent {
        let mut out = [b'-'; TRACEPARENT_LEN];
        out[..2].copy_from_slice(b"00");
        hex(&context.trace_id().to_bytes(), &mut out[3..35]);
        hex(&context.span_id().to_bytes(), &mut out[36..52]);
        hex(&[context.trace_flags().to_u8()], &mut out[53..55]);
        TraceParent(out)
    }

    pub fn as_bytes(&self) -> &[u8; TRACEPARENT_LEN] {
        &self.0
    }

    pub fn header_value(&self) -> http::HeaderValue {
        // Hex digits and dashes: always a valid value.
        http::HeaderValue::from_bytes(&self.0)
            .unwrap_or_else(|_| http::HeaderValue::from_static("-"))
    }
}

/// Each byte's two hex digits: a `traceparent` is written on every
/// request with tracing on, sampled or not.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        pairs[i] = [HEX[i >> 4], HEX[i & 0xf]];
        i += 1;
    }
    pairs
};

fn hex(bytes: &[u8], out: &mut [u8]) {
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*b)]);
    }
}

/// The OTLP exporter, counting what it sends and what fails
/// (`cutover_trace_spans_exported_total{result}`).
#[derive(Debug)]
struct Counted<E>(E);

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len() as u64;
        let result = self.0.export(batch).await;
        let label = if result.is_ok() { "ok" } else { "error" };
        metrics::counter!(names::TRACE_SPANS_EXPORTED_TOTAL, "result" => label).increment(spans);
        if let Err(e) = &result {
            tracing::warn!(error = %e, spans, "trace export failed");
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource);
    }
}

/// Shared by the proxy; `None` without `[tracing]`.
pub type SharedTracing = Option<Arc<Tracing>>;

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{SpanId, TraceFlags, TraceId, TraceState};

    #[test]
    fn a_traceparent_is_written_in_w3c_form() {
        let context = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        assert_eq!(
            TraceParent::of(&context).as_bytes(),
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
    }

    #[test]
    fn an_incoming_context_is_read_and_a_malformed_one_ignored() {
        let read = |tp: &str| {
            let incoming = Incoming {
                traceparent: Some(tp),
                tracestate: Some("vendor=x"),
            };
            let cx = TraceContextPropagator::new().extract(&incoming);
            cx.span().span_context().clone()
        };
        let good = read("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert!(good.is_valid() && good.is_sampled());
        assert_eq!(good.trace_state().header(), "vendor=x");
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "zz-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx: y",
        ] {
            assert!(!read(bad).is_valid(), "{bad}");
        }
    }
}
