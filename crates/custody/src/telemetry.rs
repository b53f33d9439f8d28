//! OpenTelemetry traces (`[telemetry]`): a server span for each MCP request toward the client,
//! a client span toward an HTTP upstream (its `traceparent` passed on), and child spans for
//! authentication, policy, masking, the audit append and an approval wait, following the
//! OpenTelemetry semantic conventions for MCP. The entry index of each audited message is an
//! attribute, so a trace leads to its evidence.
//!
//! The request's span travels in the OpenTelemetry [`Context`] its future runs with, together
//! with the tracer ([`Tracing`]): code deep in the relay opens a child span with
//! [`child`] and needs no handle. Without `[telemetry]` no context is set, and [`child`] is one
//! thread-local lookup that finds nothing.
//!
//! Spans never carry arguments or results, unless `payloads = "masked"`: then the log's masked
//! copy of each message, as an event.

mod export;
pub mod mcp;

use std::borrow::Cow;
use std::time::SystemTime;

use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider};

pub use opentelemetry::context::FutureExt;

use crate::config::{Sampling, TelemetryConfig};

/// The tracer, as the request's [`Context`] carries it.
#[derive(Clone)]
pub struct Tracing {
    tracer: SdkTracer,
    /// Whether spans carry the masked copy of each message.
    pub masked_payloads: bool,
}

/// The running exporter; flushes what is left when shut down.
pub struct Telemetry {
    provider: SdkTracerProvider,
    pub tracing: Tracing,
    propagator: TraceContextPropagator,
}

fn sampler(s: Sampling) -> Sampler {
    match s {
        Sampling::AlwaysOn => Sampler::AlwaysOn,
        Sampling::AlwaysOff => Sampler::AlwaysOff,
        Sampling::Ratio(r) => Sampler::TraceIdRatioBased(r),
        Sampling::ParentBased(inner) => Sampler::ParentBased(Box::new(sampler(*inner))),
    }
}

impl Telemetry {
    /// Starts the exporter (on the current runtime) for `config`.
    ///
    /// # Errors
    /// The exporter cannot be built (a sentence saying why).
    pub fn start(config: &TelemetryConfig) -> Result<Self, String> {
        let headers = config.headers.iter().cloned().collect();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(config.endpoint.clone())
            .with_headers(headers)
            .with_http_client(export::Exporter::new())
            .build()
            .map_err(|e| {
                format!(
                    "the OTLP exporter for {} cannot be built: {e}",
                    config.endpoint
                )
            })?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter).build())
            .with_sampler(sampler(config.sampler))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("custody");
        tracing::info!(endpoint = %config.endpoint, "exporting traces over OTLP/HTTP");
        Ok(Self {
            provider,
            tracing: Tracing {
                tracer,
                masked_payloads: config.masked_payloads,
            },
            propagator: TraceContextPropagator::new(),
        })
    }

    /// The trace context a request arrives with: `params._meta.traceparent` (MCP's own
    /// carrier) when present, else the HTTP `traceparent` header.
    pub fn parent(&self, headers: &http::HeaderMap, meta: Option<&serde_json::Value>) -> Context {
        use opentelemetry::propagation::TextMapPropagator as _;
        if let Some(meta) = meta.and_then(serde_json::Value::as_object)
            && meta.contains_key("traceparent")
        {
            return self.propagator.extract(&mcp::MetaCarrier(meta));
        }
        self.propagator
            .extract(&opentelemetry_http::HeaderExtractor(headers))
    }

    /// Starts the server span of a request that began at `start`, as a child of `parent`; the
    /// returned context carries it and the tracer.
    pub fn server(
        &self,
        parent: &Context,
        name: String,
        start: SystemTime,
        attributes: Vec<KeyValue>,
    ) -> Context {
        let span_name = SpanName(name.clone());
        let span = self
            .tracing
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&self.tracing.tracer, parent);
        parent
            .with_span(span)
            .with_value(self.tracing.clone())
            .with_value(span_name)
    }

    /// Records a finished step (`name`, from `start` to `end`) as a child of `cx`'s span.
    pub fn finished(&self, cx: &Context, name: &'static str, start: SystemTime, end: SystemTime) {
        let mut span = self
            .tracing
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .start_with_context(&self.tracing.tracer, cx);
        span.end_with_timestamp(end);
    }

    /// Sends what is buffered and stops.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("traces could not all be sent at shutdown: {e}");
        }
    }
}

/// A child span of the current request; ends when dropped.
pub struct Child(opentelemetry_sdk::trace::Span);

impl Child {
    /// Sets an attribute.
    pub fn set(&mut self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        self.0.set_attribute(KeyValue::new(key, value));
    }

    /// Marks the step failed.
    pub fn fail(&mut self, why: impl Into<Cow<'static, str>>) {
        self.0.set_status(Status::error(why));
    }

    /// Adds an event (a message's masked copy).
    pub fn event(&mut self, name: &'static str, attributes: Vec<KeyValue>) {
        self.0.add_event(name, attributes);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// Opens a child span of the current request's span, if the request is traced.
pub fn child(name: &'static str) -> Option<Child> {
    child_of_kind(name, SpanKind::Internal)
}

fn child_of_kind(name: impl Into<Cow<'static, str>>, kind: SpanKind) -> Option<Child> {
    Context::map_current(|cx| {
        let t = cx.get::<Tracing>()?;
        let span = t
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .start_with_context(&t.tracer, cx);
        Some(Child(span))
    })
}

/// Whether the current request is traced with payloads.
pub fn with_payloads() -> bool {
    Context::map_current(|cx| cx.get::<Tracing>().is_some_and(|t| t.masked_payloads))
}

/// Sets an attribute on the current request's span (the server span), if traced.
pub fn annotate(key: &'static str, value: impl Into<opentelemetry::Value>) {
    Context::map_current(|cx| {
        if cx.get::<Tracing>().is_some() {
            cx.span().set_attribute(KeyValue::new(key, value));
        }
    });
}

/// The request's span name, as its context carries it.
#[derive(Clone)]
struct SpanName(String);

/// Opens the client span of the current request's call to its upstream, named as the server
/// span; with `headers` (an HTTP upstream), writes its `traceparent` (and `tracestate`) there,
/// replacing the client's.
pub fn upstream_call(headers: Option<&mut http::HeaderMap>) -> Option<Child> {
    use opentelemetry::propagation::TextMapPropagator as _;
    let name = Context::map_current(|cx| cx.get::<SpanName>().map(|n| n.0.clone()))?;
    let child = child_of_kind(name, SpanKind::Client)?;
    if let Some(headers) = headers {
        let cx =
            Context::map_current(|cx| cx.with_remote_span_context(child.0.span_context().clone()));
        headers.remove("traceparent");
        headers.remove("tracestate");
        TraceContextPropagator::new()
            .inject_context(&cx, &mut opentelemetry_http::HeaderInjector(headers));
    }
    Some(child)
}

/// What the trace says about an audited message, taken before the draft goes to the log.
pub struct Recorded {
    key: &'static str,
    error: Option<(String, Option<String>)>,
    body: Option<(&'static str, String)>,
}

/// The most of a message a span event carries.
const MAX_BODY_EVENT: usize = 4096;

impl Recorded {
    /// What to note of `d` (call only when traced).
    pub fn of(d: &crate::audit::Draft) -> Self {
        use crate::audit::{Direction, Kind};
        let key = match d.direction {
            Direction::ClientToUpstream => "custody.entry.request",
            Direction::UpstreamToClient => "custody.entry.answer",
            Direction::Gateway => "custody.entry.gateway",
        };
        let error = matches!(d.kind, Kind::Error | Kind::Response | Kind::Rejected)
            .then(|| mcp::answer_error(&d.message))
            .flatten();
        let body = with_payloads().then(|| {
            let name = if d.direction == Direction::ClientToUpstream {
                "mcp.request.body"
            } else {
                "mcp.response.body"
            };
            let text = String::from_utf8_lossy(&d.message);
            let cut = text
                .char_indices()
                .map(|(i, _)| i)
                .take_while(|i| *i <= MAX_BODY_EVENT)
                .last()
                .unwrap_or(0);
            let text = if text.len() > MAX_BODY_EVENT {
                &text[..cut]
            } else {
                &text[..]
            };
            (name, text.to_string())
        });
        Self { key, error, body }
    }

    /// Notes the entry's index on `span` (the audit append) and on the request's span, with
    /// the answer's error, if any.
    pub fn annotate(self, span: &mut Child, index: u64) {
        let index = i64::try_from(index).unwrap_or(i64::MAX);
        span.set("custody.entry.index", index);
        annotate(self.key, index);
        if let Some((kind, code)) = self.error {
            annotate("error.type", kind);
            if let Some(code) = code {
                annotate("rpc.response.status_code", code);
            }
        }
        if let Some((name, text)) = self.body {
            span.event(name, vec![KeyValue::new("body", text)]);
        }
    }
}
