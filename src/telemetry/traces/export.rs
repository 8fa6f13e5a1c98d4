//! The exporter: finished spans wait in a bounded queue (a request never waits for it; a full
//! queue drops spans and counts them) and a task sends them in batches, as OTLP/HTTP protobuf
//! `ExportTraceServiceRequest`s, to the collector.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use crate::config::otlp::OtlpSettings as Settings;

/// Spans sent in one request, at most.
const BATCH: usize = 512;
/// How long a batch waits to fill once its first span is in.
const LINGER: Duration = Duration::from_millis(500);
/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the exporter counts: spans dropped with a full queue, and spans lost with a failed
/// export.
#[derive(Clone)]
pub(crate) struct Counters {
    pub(crate) queue_full: prometheus::IntCounter,
    pub(crate) export_failed: prometheus::IntCounter,
    pub(crate) exported: prometheus::IntCounter,
}

/// The sending side of the queue.
pub(crate) struct Queue {
    tx: mpsc::Sender<Span>,
    /// Asks the task to send everything queued now, and to say when it has.
    flush: mpsc::Sender<oneshot::Sender<()>>,
    counters: Counters,
}

impl Queue {
    /// Starts the export task on the current runtime.
    pub(crate) fn start(
        settings: Arc<Settings>,
        client: reqwest::Client,
        counters: Counters,
    ) -> Queue {
        let (tx, rx) = mpsc::channel(settings.queue);
        let (flush, flushes) = mpsc::channel(1);
        tokio::spawn(export_loop(rx, flushes, settings, client, counters.clone()));
        Queue {
            tx,
            flush,
            counters,
        }
    }

    /// Sends every span queued so far, waiting at most `within` (at shutdown).
    pub(crate) async fn flush(&self, within: Duration) {
        let (done, sent) = oneshot::channel();
        let asked = self.flush.send(done);
        let _ = tokio::time::timeout(within, async {
            if asked.await.is_ok() {
                let _ = sent.await;
            }
        })
        .await;
    }

    /// Queues a request's finished spans, all or none (a parent dropped without its children,
    /// or the reverse, would leave orphans); what is dropped is counted.
    pub(crate) fn push_all(&self, spans: Vec<Span>) {
        match self.tx.try_reserve_many(spans.len()) {
            Ok(permits) => {
                for (permit, span) in permits.zip(spans) {
                    permit.send(span);
                }
            }
            Err(_) => self.counters.queue_full.inc_by(spans.len() as u64),
        }
    }
}

async fn export_loop(
    mut rx: mpsc::Receiver<Span>,
    mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
    settings: Arc<Settings>,
    client: reqwest::Client,
    counters: Counters,
) {
    let resource = Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(settings.service_name.clone())),
            }),
            key_strindex: 0,
        }],
        ..Resource::default()
    };
    let scope = InstrumentationScope {
        name: "modelgate".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..InstrumentationScope::default()
    };
    let export = |spans: Vec<Span>| {
        let n = spans.len() as u64;
        let body = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope.clone()),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
        .encode_to_vec();
        let (client, settings, counters) = (&client, &settings, &counters);
        async move {
            if send(client, settings, body).await {
                counters.exported.inc_by(n);
            } else {
                counters.export_failed.inc_by(n);
            }
        }
    };
    let mut batch = Vec::with_capacity(BATCH);
    // Ends when every sender is gone (a reload replaced the exporter), after sending what is
    // left.
    loop {
        let first = tokio::select! {
            span = rx.recv() => span,
            Some(done) = flushes.recv() => {
                // Everything queued now, in batches, then say so.
                while let Ok(span) = rx.try_recv() {
                    batch.push(span);
                    if batch.len() == BATCH {
                        export(std::mem::take(&mut batch)).await;
                    }
                }
                if !batch.is_empty() {
                    export(std::mem::take(&mut batch)).await;
                }
                let _ = done.send(());
                continue;
            }
        };
        let Some(first) = first else { break };
        batch.push(first);
        let until = tokio::time::Instant::now() + LINGER;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(until, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        export(std::mem::take(&mut batch)).await;
    }
}

/// One POST; whether the collector took it. Its answer is not logged as it is (a collector's
/// error text could echo the authorization header back).
async fn send(client: &reqwest::Client, settings: &Settings, body: Vec<u8>) -> bool {
    let mut req = client
        .post(settings.endpoint.as_str())
        .timeout(EXPORT_TIMEOUT)
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(body);
    for (name, value) in &settings.headers {
        req = req.header(name, value);
    }
    match req.send().await {
        Ok(res) if res.status().is_success() => true,
        Ok(res) => {
            tracing::warn!(
                status = res.status().as_u16(),
                "trace export refused by the collector"
            );
            false
        }
        Err(e) => {
            tracing::warn!(error = %crate::base::printable(&e.without_url().to_string()), "trace export failed");
            false
        }
    }
}
