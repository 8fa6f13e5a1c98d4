//! Traces: each request as an OpenTelemetry span (named and attributed as the GenAI semantic
//! conventions say, with modelgate's policy facts beside), a child span per upstream attempt,
//! events for the commit point and a stream's end; exported over OTLP/HTTP.
//!
//! Off unless configured: then no request makes a span, takes a clock reading or allocates
//! for tracing (`Trace` is `None` all the way). When on, spans are built only for sampled
//! requests and handed to a bounded queue (see `export`).

mod context;
mod export;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::{Span, Status, status::StatusCode};

pub(crate) use context::{Parent, TRACEPARENT, parse as parse_traceparent};
pub(crate) use export::Counters;

use crate::config::otlp::OtlpSettings;

/// The exporter of one configuration (kept across reloads that leave its settings alone).
pub(crate) struct Tracer {
    pub(crate) settings: Arc<OtlpSettings>,
    queue: export::Queue,
}

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The headers (an API key, typically) stay out.
        // The endpoint's user part and query may carry a token too: the host only.
        let host = reqwest::Url::parse(&self.settings.endpoint)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned));
        f.debug_struct("Tracer")
            .field("host", &host)
            .finish_non_exhaustive()
    }
}

impl Tracer {
    /// Starts exporting on the current runtime.
    pub(crate) fn start(
        settings: Arc<OtlpSettings>,
        client: reqwest::Client,
        counters: Counters,
    ) -> Arc<Tracer> {
        let queue = export::Queue::start(settings.clone(), client, counters);
        Arc::new(Tracer { settings, queue })
    }

    /// Sends what is queued, waiting at most `within`: at shutdown, after the drain.
    pub(crate) async fn flush(&self, within: std::time::Duration) {
        self.queue.flush(within).await;
    }

    /// A request's trace, when it is to be recorded: a client's sampled trace is continued,
    /// an unsampled one is not recorded, and a new one is sampled at the configured ratio.
    pub(crate) fn begin(
        self: &Arc<Self>,
        parent: Option<Parent>,
        operation: &'static str,
    ) -> Trace {
        let (trace_id, parent_span_id) = match parent {
            Some(p) if !p.sampled => return None,
            Some(p) => (p.trace_id, Some(p.span_id)),
            None => {
                let id = context::trace_id();
                if !context::sampled_at(&id, self.settings.sample_ratio) {
                    return None;
                }
                (id, None)
            }
        };
        Some(Arc::new(Mutex::new(RequestTrace {
            tracer: self.clone(),
            span: Span {
                trace_id: trace_id.to_vec(),
                span_id: context::span_id().to_vec(),
                parent_span_id: parent_span_id.map(|s| s.to_vec()).unwrap_or_default(),
                flags: 1,
                kind: Kind::Server as i32,
                start_time_unix_nano: now(),
                ..Span::default()
            },
            operation,
            children: Vec::new(),
            upstream: None,
            kept: None,
            attempt: None,
            finished: false,
            content: false,
        })))
    }
}

/// A request's trace, shared by what records into it (the pipeline, its attempts, the
/// stream); exported when the last holder lets go. `None` when tracing is off or the request
/// is not sampled.
pub(crate) type Trace = Option<Arc<Mutex<RequestTrace>>>;

/// GenAI's `gen_ai.provider.name` for a deployment's provider: the conventions' well-known
/// names where there is one, else the provider as configured (`vllm`, `ollama`).
pub(crate) fn provider_name(provider: &str) -> &str {
    match provider {
        "gemini" | "google" => "gcp.gemini",
        other => other,
    }
}

/// Which side of a call a span is.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Server = SpanKind::Server as isize,
    Client = SpanKind::Client as isize,
}

/// The request's span being recorded, and its finished attempts.
pub(crate) struct RequestTrace {
    tracer: Arc<Tracer>,
    span: Span,
    /// `chat`, `embeddings`: the first word of the spans' names.
    operation: &'static str,
    children: Vec<Span>,
    /// The `traceparent` for the attempt in progress, when its deployment may have it.
    upstream: Option<http::HeaderValue>,
    /// The request's body, kept until the policy says whether its content goes on the span.
    kept: Option<bytes::Bytes>,
    /// The attempt in progress.
    attempt: Option<Span>,
    /// Answered or refused (see [`RequestTrace::finished`]).
    finished: bool,
    /// Its prompt and answer go on the span.
    pub(crate) content: bool,
}

/// Nanoseconds since the epoch, now.
fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        key_strindex: 0,
    }
}

/// Attributes, as a span or an event carries them.
#[derive(Default)]
pub(crate) struct Attributes(Vec<KeyValue>);

impl Attributes {
    pub(crate) fn str(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.0.push(kv(key, Value::StringValue(value.into())));
        self
    }

    pub(crate) fn int(&mut self, key: &str, value: i64) -> &mut Self {
        self.0.push(kv(key, Value::IntValue(value)));
        self
    }

    pub(crate) fn float(&mut self, key: &str, value: f64) -> &mut Self {
        self.0.push(kv(key, Value::DoubleValue(value)));
        self
    }

    pub(crate) fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.0.push(kv(key, Value::BoolValue(value)));
        self
    }

    pub(crate) fn strs(
        &mut self,
        key: &str,
        values: impl IntoIterator<Item = String>,
    ) -> &mut Self {
        let values = values
            .into_iter()
            .map(|v| AnyValue {
                value: Some(Value::StringValue(v)),
            })
            .collect();
        self.0
            .push(kv(key, Value::ArrayValue(ArrayValue { values })));
        self
    }
}

impl RequestTrace {
    /// The span's name (`chat gpt-4o`).
    pub(crate) fn name(&mut self, name: String) {
        self.span.name = name;
    }

    /// Adds attributes to the request's span.
    pub(crate) fn attributes(&mut self, f: impl FnOnce(&mut Attributes)) {
        let mut a = Attributes(std::mem::take(&mut self.span.attributes));
        f(&mut a);
        self.span.attributes = a.0;
    }

    /// An event on the request's span, now.
    pub(crate) fn event(&mut self, name: &str, f: impl FnOnce(&mut Attributes)) {
        let mut a = Attributes::default();
        f(&mut a);
        self.span.events.push(Event {
            time_unix_nano: now(),
            name: name.to_owned(),
            attributes: a.0,
            dropped_attributes_count: 0,
        });
    }

    /// The request failed: the span's status says so, and `error.type` which way.
    pub(crate) fn fail(&mut self, error_type: &str, message: &str) {
        self.attributes(|a| {
            a.str("error.type", error_type);
        });
        self.span.status = Some(Status {
            message: message.to_owned(),
            code: StatusCode::Error as i32,
        });
    }

    /// Starts timing an attempt (a child span) of `model`; with `propagate`, its
    /// `traceparent` is what the attempt sends upstream. An attempt not ended (its request
    /// was dropped mid-call) is exported as cancelled with the request.
    pub(crate) fn start_attempt(&mut self, model: &str, propagate: bool) {
        let span_id = context::span_id();
        self.upstream = propagate.then(|| {
            let mut t = [0u8; 16];
            t.copy_from_slice(&self.span.trace_id);
            context::format(&t, &span_id, true)
        });
        self.attempt = Some(Span {
            trace_id: self.span.trace_id.clone(),
            span_id: span_id.to_vec(),
            parent_span_id: self.span.span_id.clone(),
            flags: 1,
            name: format!("{} {model}", self.operation),
            kind: Kind::Client as i32,
            start_time_unix_nano: now(),
            ..Span::default()
        });
    }

    /// The request was answered or refused: what [`Drop`] finds otherwise is a request
    /// that ended without either (its client went away, or the gateway panicked).
    pub(crate) fn finished(&mut self) {
        self.finished = true;
    }

    /// Keeps the request's body (a reference, not a copy) until [`Self::take_kept`].
    pub(crate) fn keep(&mut self, body: &bytes::Bytes) {
        self.kept = Some(body.clone());
    }

    pub(crate) fn take_kept(&mut self) -> Option<bytes::Bytes> {
        self.kept.take()
    }

    /// The operation (`chat`, `embeddings`) this request's spans are named by.
    pub(crate) fn operation(&self) -> &'static str {
        self.operation
    }

    /// Ends the attempt in progress now, with its attributes and, if it failed, its error.
    pub(crate) fn end_attempt(
        &mut self,
        error: Option<(&str, &str)>,
        f: impl FnOnce(&mut Attributes),
    ) {
        self.upstream = None;
        let Some(mut attempt) = self.attempt.take() else {
            return;
        };
        let mut a = Attributes::default();
        f(&mut a);
        if let Some((kind, message)) = error {
            a.str("error.type", kind);
            attempt.status = Some(Status {
                message: message.to_owned(),
                code: StatusCode::Error as i32,
            });
        }
        attempt.attributes = a.0;
        attempt.end_time_unix_nano = now();
        self.children.push(attempt);
    }

    /// Adds attributes to the last attempt (the one that answered), given how long it took.
    pub(crate) fn last_attempt(&mut self, f: impl FnOnce(&mut Attributes, std::time::Duration)) {
        if let Some(last) = self.children.last_mut() {
            let took = last
                .end_time_unix_nano
                .saturating_sub(last.start_time_unix_nano);
            let mut a = Attributes(std::mem::take(&mut last.attributes));
            f(&mut a, std::time::Duration::from_nanos(took));
            last.attributes = a.0;
        }
    }
}

impl Drop for RequestTrace {
    fn drop(&mut self) {
        let end = now();
        let why = if std::thread::panicking() {
            "the gateway panicked"
        } else {
            "cancelled: the client went away"
        };
        // An attempt cut off with its request.
        if self.attempt.is_some() {
            self.end_attempt(Some(("cancelled", why)), |_| {});
        } else if let Some(last) = self.children.last_mut()
            && last.status.is_none()
        {
            // The answering attempt lasts as long as its answer (a stream's end).
            last.end_time_unix_nano = last.end_time_unix_nano.max(end);
        }
        if !self.finished {
            self.fail("cancelled", why);
        }
        self.span.end_time_unix_nano = end;
        let mut spans = std::mem::take(&mut self.children);
        spans.push(std::mem::take(&mut self.span));
        self.tracer.queue.push_all(spans);
    }
}

/// The `traceparent` the attempt in progress sends upstream, if any.
pub(crate) fn upstream_traceparent(trace: &Trace) -> Option<http::HeaderValue> {
    let t = trace.as_ref()?;
    t.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .upstream
        .clone()
}

/// Records into a trace, if there is one.
pub(crate) fn with(trace: &Trace, f: impl FnOnce(&mut RequestTrace)) {
    if let Some(t) = trace {
        f(&mut t.lock().unwrap_or_else(PoisonError::into_inner));
    }
}
