//! ③→⑦ The life of one request, top to bottom: parse, decide, call, respond. The only caller
//! of the phases in order.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use tokio::sync::watch;

use crate::api::chat::{ChatRequest, RequestLimits};
use crate::api::models::{ModelList, ModelObject};
use crate::api::{self, Usage};
use crate::auth::{Authed, Caller};
use crate::config::{Deployment, Route, Snapshot};
use crate::error::{GatewayError, json_response};
use crate::metrics::{Metrics, model_labels, status_class};
use crate::policy::{self, PolicyError};
use crate::server::request_id::X_REQUEST_ID;
use crate::stream::body::ResponseBody;
use crate::stream::relay::{Deadline, EndReason, Relay, StreamEnd};
use crate::stream::respond;
use crate::upstream::{self, Answer};

/// What every request shares: metrics and the drain signal.
pub struct Ctx {
    pub metrics: Arc<Metrics>,
    /// Turns true when the drain deadline of a shutdown has passed.
    pub drain_deadline: watch::Receiver<bool>,
}

impl Ctx {
    fn deadline(&self) -> Deadline {
        let mut rx = self.drain_deadline.clone();
        Box::pin(async move {
            if rx.wait_for(|passed| *passed).await.is_err() {
                // No shutdown can come any more: never fire.
                std::future::pending::<()>().await;
            }
        })
    }
}

/// A response and the policy that decided it, for the request metrics.
pub struct Outcome {
    pub response: Response<ResponseBody>,
    pub policy: Option<Arc<str>>,
}

impl From<GatewayError> for Outcome {
    fn from(e: GatewayError) -> Outcome {
        Outcome {
            response: e.into_response(),
            policy: None,
        }
    }
}

/// What the request log line needs about the request.
struct Who {
    request_id: HeaderValue,
    caller: Caller,
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions<B>(ctx: &Arc<Ctx>, authed: Authed<B>) -> Outcome
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let started = Instant::now();
    let Authed {
        caller,
        snapshot,
        request,
    } = authed;
    let who = Who {
        request_id: request
            .headers()
            .get(&X_REQUEST_ID)
            .cloned()
            .unwrap_or(HeaderValue::from_static("-")),
        caller,
    };
    match chat(ctx, &who, &snapshot, request, started).await {
        Ok(o) => o,
        Err((e, policy)) => {
            let status = e.status();
            tracing::info!(
                request_id = ?who.request_id,
                tenant = %who.caller.tenant,
                policy = policy.as_deref().unwrap_or("-"),
                status = status.as_u16(),
                error = e.kind().as_str(),
                message = %e,
                duration_ms = started.elapsed().as_millis() as u64,
                "request failed"
            );
            Outcome {
                response: e.into_response(),
                policy,
            }
        }
    }
}

async fn chat<B>(
    ctx: &Arc<Ctx>,
    who: &Who,
    snapshot: &Snapshot,
    request: Request<B>,
    started: Instant,
) -> Result<Outcome, (GatewayError, Option<Arc<str>>)>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limits = snapshot.config.limits;
    let no_policy = |e: GatewayError| (e, None);
    api::check_json_content_type(request.headers()).map_err(|e| no_policy(e.into()))?;
    let body = api::read_body(request.into_body(), limits.max_body_bytes)
        .await
        .map_err(|e| no_policy(e.into()))?;
    let req = ChatRequest::parse(
        &body,
        RequestLimits {
            max_messages: limits.max_messages,
            max_depth: limits.max_json_depth,
        },
    )
    .map_err(|e| no_policy(e.into()))?;
    drop(body);

    let decision =
        policy::decide(&req.model, &who.caller, snapshot).map_err(|e| no_policy(e.into()))?;
    let policy = decision.policy.clone();
    let policy_header = HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("-"));
    let with_policy = |e: GatewayError| (e, Some(policy.clone()));

    let served = match upstream::call(&decision, &req, &limits).await {
        Ok(s) => s,
        Err(e) => {
            for a in &e.attempts {
                ctx.metrics.attempt(&a.deployment, a.error.label());
            }
            return Err(with_policy(e.into()));
        }
    };
    for a in &served.failed {
        ctx.metrics.attempt(&a.deployment, a.error.label());
    }
    let d = served.deployment.clone();
    ctx.metrics.attempt(&d, "ok");
    if !served.failed.is_empty() {
        ctx.metrics.fallbacks.with_label_values(&[&policy]).inc();
    }
    let attempts = served.failed.len() + 1;

    let response = match served.answer {
        Answer::Complete(done) => {
            let usage = done.usage.unwrap_or_else(|| estimate(&req, 0));
            ctx.metrics.usage(&d, &usage);
            log_done(
                who,
                &policy,
                &d,
                attempts,
                StatusCode::OK,
                &usage,
                started,
                None,
            );
            ctx.metrics
                .request_duration
                .with_label_values(&["chat_completions", "false"])
                .observe(started.elapsed().as_secs_f64());
            respond::json(done.body, &d, &policy_header)
        }
        Answer::Frames(frames, usage) => {
            ctx.metrics.usage(&d, &usage);
            log_done(
                who,
                &policy,
                &d,
                attempts,
                StatusCode::OK,
                &usage,
                started,
                Some(EndReason::Completed),
            );
            respond::frames(frames, &d, &policy_header)
        }
        Answer::Stream { body, translator } => {
            ctx.metrics.open_streams.inc();
            let on_end = stream_end_recorder(
                ctx,
                who,
                &policy,
                &d,
                attempts,
                started,
                prompt_estimate(&req),
            );
            let relay = Relay::new(
                body,
                translator,
                limits.max_sse_line_bytes,
                d.endpoint.timeouts.idle,
                Some(ctx.deadline()),
                on_end,
            );
            respond::relay(relay, &d, &policy_header)
        }
    };
    let _ = with_policy;
    Ok(Outcome {
        response,
        policy: Some(policy),
    })
}

/// What to record when a stream ends.
fn stream_end_recorder(
    ctx: &Arc<Ctx>,
    who: &Who,
    policy: &Arc<str>,
    d: &Arc<Deployment>,
    attempts: usize,
    started: Instant,
    prompt_tokens: u64,
) -> Box<dyn FnOnce(StreamEnd) + Send> {
    let ctx = ctx.clone();
    let d = d.clone();
    let policy = policy.clone();
    let request_id = who.request_id.clone();
    let caller = who.caller.clone();
    Box::new(move |end: StreamEnd| {
        let m = &ctx.metrics;
        m.open_streams.dec();
        let usage = end.usage.unwrap_or(Usage {
            prompt_tokens,
            completion_tokens: (end.output_chars as u64).div_ceil(4),
            estimated: true,
            ..Usage::default()
        });
        m.usage(&d, &usage);
        m.stream_ends
            .with_label_values(&model_labels(&d, end.reason.as_str()))
            .inc();
        if let Some(t) = end.time_to_first_byte {
            m.ttft
                .with_label_values(&model_labels(&d, "")[..5])
                .observe(t.as_secs_f64());
        }
        m.request_duration
            .with_label_values(&["chat_completions", "true"])
            .observe(started.elapsed().as_secs_f64());
        let who = Who { request_id, caller };
        log_done(
            &who,
            &policy,
            &d,
            attempts,
            StatusCode::OK,
            &usage,
            started,
            Some(end.reason),
        );
    })
}

#[expect(clippy::too_many_arguments, reason = "one log line's fields")]
fn log_done(
    who: &Who,
    policy: &str,
    d: &Deployment,
    attempts: usize,
    status: StatusCode,
    usage: &Usage,
    started: Instant,
    stream: Option<EndReason>,
) {
    tracing::info!(
        request_id = ?who.request_id,
        tenant = %who.caller.tenant,
        key = who.caller.key_id.as_deref().unwrap_or("-"),
        policy,
        deployment = %d.name,
        model = %d.model.id,
        provider = %d.endpoint.provider,
        openness = d.model.openness.as_str(),
        license = %d.model.license.id,
        attempts,
        status = status.as_u16(),
        stream = stream.map_or("-", EndReason::as_str),
        prompt_tokens = usage.prompt_tokens,
        completion_tokens = usage.completion_tokens,
        tokens_estimated = usage.estimated,
        duration_ms = started.elapsed().as_millis() as u64,
        "request served"
    );
}

/// Input tokens estimated from the text: a quarter of its bytes.
fn prompt_estimate(req: &ChatRequest) -> u64 {
    (req.text_len() as u64).div_ceil(4)
}

fn estimate(req: &ChatRequest, output_chars: usize) -> Usage {
    Usage {
        prompt_tokens: prompt_estimate(req),
        completion_tokens: (output_chars as u64).div_ceil(4),
        estimated: true,
        ..Usage::default()
    }
}

/// `GET /v1/models`: the models this caller may use.
pub fn list_models(authed: &Authed<impl Sized>) -> Outcome {
    let snapshot = &authed.snapshot;
    let created = upstream::unix_now();
    let data = snapshot
        .listed
        .iter()
        .map(|(m, idx)| {
            let deps: Vec<&Deployment> = idx
                .iter()
                .filter_map(|i| snapshot.deployments.get(*i).map(AsRef::as_ref))
                .collect();
            ModelObject::new(&m.id, m, &deps, created)
        })
        .collect();
    let body = serde_json::to_vec(&ModelList {
        object: "list",
        data,
    })
    .unwrap_or_default();
    Outcome {
        response: json_response(StatusCode::OK, Bytes::from(body)),
        policy: None,
    }
}

/// `GET /v1/models/{id}`.
pub fn get_model(authed: &Authed<impl Sized>, id: &str) -> Outcome {
    let snapshot = &authed.snapshot;
    let created = upstream::unix_now();
    let found = match snapshot.route(id) {
        Some(Route::Model(idx)) => {
            let deps: Vec<&Deployment> = idx
                .iter()
                .filter_map(|i| snapshot.deployments.get(*i).map(AsRef::as_ref))
                .collect();
            deps.first()
                .map(|d| serde_json::to_vec(&ModelObject::new(id, &d.model, &deps, created)))
        }
        Some(Route::Deployment(i)) => snapshot
            .deployments
            .get(*i)
            .map(|d| serde_json::to_vec(&ModelObject::new(id, &d.model, &[d.as_ref()], created))),
        Some(Route::Auto) | None => None,
    };
    match found {
        Some(Ok(body)) => Outcome {
            response: json_response(StatusCode::OK, Bytes::from(body)),
            policy: None,
        },
        _ => GatewayError::from(PolicyError::UnknownModel(id.to_owned())).into(),
    }
}

/// Records a request's outcome in the request metrics.
pub fn record(metrics: &Metrics, endpoint: &str, outcome: &Outcome) {
    metrics
        .requests
        .with_label_values(&[
            endpoint,
            status_class(outcome.response.status()),
            outcome.policy.as_deref().unwrap_or("none"),
        ])
        .inc();
}
