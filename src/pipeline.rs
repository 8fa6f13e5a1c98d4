//! ③→⑦ The life of one request, top to bottom: parse, decide, call, respond. The only caller
//! of the phases in order.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use tokio::sync::watch;

use crate::accounting::{self, tokens::PromptText};
use crate::api::models::{ModelList, ModelObject};
use crate::api::{self, Front};
use crate::auth::{Authed, Caller};
use crate::config::{Deployment, Route, Snapshot};
use crate::error::{GatewayError, json_response};
use crate::exchange::Usage;
use crate::exchange::answer::EndReason;
use crate::exchange::chat::{ChatRequest, RequestLimits};
use crate::exchange::embeddings::EmbeddingsRequest;
use crate::exchange::headers::X_REQUEST_ID;
use crate::metrics::{Metrics, model_labels};
use crate::policy::recheck::{Asked, ByteSize, Recheck};
use crate::policy::{self, Ask, Needs, PolicyError};
use crate::stream::body::ResponseBody;
use crate::stream::respond;
use crate::upstream::relay::{Deadline, StreamEnd};
use crate::upstream::{self, Answer, Plan, StreamSetup};

/// What every request shares: metrics, the live configuration, and the drain signal.
pub struct Ctx {
    pub metrics: Arc<Metrics>,
    /// The newest snapshot, for attempts that start after a reload.
    pub live: crate::config::Live,
    /// Turns true when the drain deadline of a shutdown has passed.
    pub drain_deadline: watch::Receiver<bool>,
    /// One permit per request in flight (`server.max_concurrent_requests`); a stream holds its
    /// permit until it ends.
    pub admission: Arc<tokio::sync::Semaphore>,
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

/// `POST /v1/chat/completions`: OpenAI's format in and out.
pub async fn chat_completions<B>(ctx: &Arc<Ctx>, authed: Authed<B>) -> Outcome
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve(ctx, Front::OpenAi, authed).await
}

/// `POST /v1/messages`: Anthropic's format in and out, any dialect behind.
pub async fn messages<B>(ctx: &Arc<Ctx>, authed: Authed<B>) -> Outcome
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve(ctx, Front::Anthropic, authed).await
}

async fn serve<B>(ctx: &Arc<Ctx>, front: Front, authed: Authed<B>) -> Outcome
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
    let request_id = request
        .headers()
        .get(&X_REQUEST_ID)
        .cloned()
        .unwrap_or(HeaderValue::from_static("-"));
    match chat(
        ctx,
        front,
        &caller,
        &request_id,
        &snapshot,
        request,
        started,
    )
    .await
    {
        Ok(o) => o,
        Err((e, policy)) => {
            let status = e.status();
            tracing::info!(
                endpoint = front.endpoint().as_str(),
                request_id = request_id.to_str().unwrap_or("-"),
                tenant = &*caller.tenant,
                policy = policy.as_deref().unwrap_or("-"),
                status = status.as_u16(),
                error = e.kind().as_str(),
                detail = e.to_string().as_str(),
                duration_ms = started.elapsed().as_millis() as u64,
                "request failed"
            );
            Outcome {
                response: e.into_response_for(front),
                policy,
            }
        }
    }
}

type Failure = (GatewayError, Option<Arc<str>>);

async fn chat<B>(
    ctx: &Arc<Ctx>,
    front: Front,
    caller: &Caller,
    request_id: &HeaderValue,
    snapshot: &Snapshot,
    request: Request<B>,
    started: Instant,
) -> Result<Outcome, Failure>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limits = snapshot.config.limits;
    let no_policy = |e: GatewayError| (e, None);
    let (parts, body) = request.into_parts();
    api::check_json_content_type(&parts.headers).map_err(|e| no_policy(e.into()))?;
    let body = api::read_body(body, limits.max_body_bytes, limits.body_read_timeout)
        .await
        .map_err(|e| no_policy(e.into()))?;
    let request_limits = RequestLimits {
        max_messages: limits.max_messages,
        max_depth: limits.max_json_depth,
    };
    let req = match front {
        Front::OpenAi => ChatRequest::parse(&body, request_limits),
        Front::Anthropic => api::messages::parse(&body, request_limits),
    }
    .map_err(|e| no_policy(e.into()))?;
    drop(body);
    let labels = policy::labels::collect(&parts.headers, req.metadata.as_deref())
        .map_err(|e| no_policy(e.into()))?;

    // ④ Decide.
    let (decided, prompt_estimate) = {
        let prompt = PromptText::new(&req);
        let ask = Ask {
            model: &req.model,
            endpoint: front.endpoint(),
            caller,
            labels: &labels,
            needs: Needs {
                tools: req.uses_tools(),
                vision: req.has_images(),
                choices: req.n,
            },
            prompt: &prompt,
            max_output: req.max_output_tokens(),
        };
        (policy::decide(&ask, snapshot), prompt.approximate())
    };
    let decision = match decided {
        Ok(d) => d,
        Err(e) => {
            let name = ctx.metrics.refusal(&e);
            return Err((e.into(), name));
        }
    };
    ctx.metrics.decision(&decision);
    if tracing::enabled!(tracing::Level::DEBUG) {
        let refused: Vec<String> = decision
            .refused
            .iter()
            .map(|(d, r)| format!("{}: {}", d.name, r.detail))
            .collect();
        let allowed: Vec<&str> = decision
            .candidates()
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        tracing::debug!(
            request_id = request_id.to_str().unwrap_or("-"),
            policy = &*decision.policy,
            rule = &*decision.rule,
            base_rule = decision.base_rule.as_deref().unwrap_or("-"),
            allowed = ?allowed,
            refused = ?refused,
            "decision"
        );
    }
    let policy = decision.policy.clone();

    // ④ Count it against the caller's rates and budgets, reserving what it can cost at most.
    // With a budget and no `max_tokens`, the upstream is asked for no longer an answer than
    // the reservation assumed, so what it costs can never pass what was reserved.
    let mut req = req;
    req.cap_output = caller.limits.iter().any(|s| s.limits.has_spend());
    // Tokens per minute count the client's `max_tokens`, as OpenAI counts them; the spend
    // reservation counts the longest answer the upstream may give.
    let max_output = req.max_output_tokens();
    let tokens =
        prompt_estimate + u64::from(max_output.unwrap_or(0)) * u64::from(req.n.unwrap_or(1));
    let charge = (!caller.limits.is_empty()).then(|| {
        let prompt = PromptText::new(&req);
        let reserve = reservation(
            &decision,
            |d| prompt.upper_bound(&d.model),
            max_output,
            req.n,
        );
        let stream = if req.stream {
            decision
                .candidates()
                .iter()
                .map(|d| d.endpoint.timeouts.stream_total)
                .max()
                .unwrap_or_default()
        } else {
            std::time::Duration::ZERO
        };
        crate::limits::Charge {
            tokens,
            reserve_micros: reserve,
            lifetime: deadline_of(&decision) + stream + crate::limits::RESERVATION_MARGIN,
        }
    });
    let ticket = admit(ctx, snapshot, caller, charge)
        .await
        .map_err(|e| (e, Some(policy.clone())))?;

    // ⑤⑥ Call.
    let recheck = Recheck::new(
        ctx.live.clone(),
        snapshot,
        caller,
        Asked {
            model: &req.model,
            endpoint: front.endpoint(),
            labels: &labels,
            needs: Needs {
                tools: req.uses_tools(),
                vision: req.has_images(),
                choices: req.n,
            },
            bytes: req.text_len(),
            max_output: req.max_output_tokens(),
        },
    );
    let plan = Plan {
        deadline: tokio::time::Instant::now() + deadline_of(&decision),
        allowed: &|d: &Deployment| recheck.allows(d),
        gate: Some((&snapshot.limiter, tokens)),
    };
    let output_limit = req
        .max_output_tokens()
        .map(|m| u64::from(m) * u64::from(req.n.unwrap_or(1)));
    let encoder = |d: &Deployment| {
        front.encoder(
            req.wants_stream_usage(),
            prompt_estimate,
            output_limit,
            &api::answer_model(d, &req.model),
        )
    };
    let drain = || ctx.deadline();
    let setup = StreamSetup {
        encoder: &encoder,
        drain: &drain,
    };
    let mut cancelled = Cancelled::new(ctx);
    let called = upstream::call(&decision, &plan, &req, &limits, &setup).await;
    cancelled.disarm();
    let served = match called {
        Ok(s) => s,
        Err(e) => {
            ctx.metrics.failed_call(&e);
            return Err((e.into(), Some(policy)));
        }
    };
    ctx.metrics
        .served(&served.failed, &served.skipped, &served.retries);
    let d = served.deployment.clone();
    ctx.metrics.answered(&d, front.endpoint().operation());
    if !decision
        .candidates()
        .first()
        .is_some_and(|first| Arc::ptr_eq(first, &d))
    {
        ctx.metrics.fallbacks.with_label_values(&[&policy]).inc();
    }
    let record = Record {
        endpoint: front.endpoint(),
        ticket,
        limiter: snapshot.limiter.clone(),
        request_id: request_id.clone(),
        caller: caller.clone(),
        policy: policy.clone(),
        rule: decision.rule.clone(),
        refused: decision.refused.len(),
        deployment: d.clone(),
        attempts: served.failed.len() + 1,
        started,
        prompt_estimate,
        output_limit,
    };

    // ⑦ Respond.
    let response = match served.answer {
        Answer::Complete(done) => {
            let usage = done.usage.unwrap_or_else(|| record.estimate(0));
            let body = front
                .whole(done.body, &api::answer_model(&d, &req.model))
                .map_err(|e| (GatewayError::Internal(e.to_string()), Some(policy.clone())))?;
            let cost = record.finish(&ctx.metrics, &usage, None);
            let mut res = respond::json(body, &d, &decision);
            respond::cost(&mut res, cost);
            res
        }
        Answer::Local(c) => {
            let cost = record.finish(&ctx.metrics, &c.usage, Some(EndReason::Completed));
            let mut res = respond::frames(
                respond::local_stream(&c, encoder(&d).as_mut()),
                &d,
                &decision,
            );
            respond::cost(&mut res, cost);
            res
        }
        Answer::Stream(mut relay) => {
            // The first content is ready: the time to first token, as the client sees it.
            ctx.metrics
                .ttft
                .with_label_values(&model_labels(&d, "")[..5])
                .observe(started.elapsed().as_secs_f64());
            ctx.metrics.open_streams.inc();
            let metrics = ctx.metrics.clone();
            // The stream ends after the request's future: its line goes in the request's span.
            let span = tracing::Span::current();
            relay.on_end(Box::new(move |end: StreamEnd| {
                let _in_request = span.enter();
                metrics.open_streams.dec();
                if end.reason == EndReason::ClientGone {
                    metrics.cancelled.with_label_values(&["stream"]).inc();
                }
                // A stream that broke after its commit point still tells on its deployment.
                let d = &record.deployment;
                if end.reason.is_upstream_fault() && d.endpoint.breaker.is_some() {
                    d.health.breaker.record(false, tokio::time::Instant::now());
                }
                let usage = end
                    .usage
                    .unwrap_or_else(|| record.estimate(end.output_chars));
                metrics
                    .stream_ends
                    .with_label_values(&model_labels(&record.deployment, end.reason.as_str()))
                    .inc();
                record.finish(&metrics, &usage, Some(end.reason));
            }));
            respond::relay(*relay, &d, &decision)
        }
    };
    Ok(Outcome {
        response,
        policy: Some(policy),
    })
}

/// How long a request may take to be answered (to its first content, for streams): the first
/// choice's `timeouts.total`. Retries and fallbacks cannot extend it.
fn deadline_of(decision: &policy::Decision) -> std::time::Duration {
    decision
        .candidates()
        .first()
        .map_or(std::time::Duration::from_secs(600), |d| {
            d.endpoint.timeouts.total
        })
}

/// Counts a request whose client went away while the upstream was being called: dropping the
/// call closes the upstream connection; this records that it happened.
struct Cancelled {
    metrics: Option<Arc<Metrics>>,
}

impl Cancelled {
    fn new(ctx: &Ctx) -> Cancelled {
        Cancelled {
            metrics: Some(ctx.metrics.clone()),
        }
    }

    fn disarm(&mut self) {
        self.metrics = None;
    }
}

impl Drop for Cancelled {
    fn drop(&mut self) {
        if let Some(m) = self.metrics.take() {
            // The request's line is the boundary's, which sees the same drop.
            m.cancelled.with_label_values(&["request"]).inc();
        }
    }
}

/// `POST /v1/embeddings`.
pub async fn embeddings<B>(ctx: &Arc<Ctx>, authed: Authed<B>) -> Outcome
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
    let request_id = request
        .headers()
        .get(&X_REQUEST_ID)
        .cloned()
        .unwrap_or(HeaderValue::from_static("-"));
    let limits = snapshot.config.limits;
    let result: Result<Outcome, Failure> = async {
        let (parts, body) = request.into_parts();
        api::check_json_content_type(&parts.headers).map_err(|e| (e.into(), None))?;
        let body = api::read_body(body, limits.max_body_bytes, limits.body_read_timeout)
            .await
            .map_err(|e| (e.into(), None))?;
        let req =
            EmbeddingsRequest::parse(&body, limits.max_json_depth).map_err(|e| (e.into(), None))?;
        let labels = policy::labels::collect(&parts.headers, None).map_err(|e| (e.into(), None))?;
        let size = ByteSize(req.text_len());
        let decided = policy::decide(
            &Ask {
                model: &req.model,
                endpoint: policy::EndpointName::Embeddings,
                caller: &caller,
                labels: &labels,
                needs: Needs::default(),
                prompt: &size,
                max_output: None,
            },
            &snapshot,
        );
        let decision = decided.map_err(|e| {
            let name = ctx.metrics.refusal(&e);
            (GatewayError::from(e), name)
        })?;
        ctx.metrics.decision(&decision);
        let policy = decision.policy.clone();
        // Decide, admit, call, settle: a caller over its limits costs no upstream call.
        let tokens = (req.text_len() as u64).div_ceil(4);
        // A token per byte at most, whatever the model's tokenizer, and each input's own
        // special tokens.
        let bound = req.text_len() as u64 + 16 * req.count() as u64 + 64;
        let charge = crate::limits::Charge {
            tokens,
            reserve_micros: reservation(&decision, |_| bound, Some(0), None),
            lifetime: deadline_of(&decision) + crate::limits::RESERVATION_MARGIN,
        };
        let ticket = admit(ctx, &snapshot, &caller, Some(charge))
            .await
            .map_err(|e| (e, Some(policy.clone())))?;
        let recheck = Recheck::new(
            ctx.live.clone(),
            &snapshot,
            &caller,
            Asked {
                model: &req.model,
                endpoint: policy::EndpointName::Embeddings,
                labels: &labels,
                needs: Needs::default(),
                bytes: req.text_len(),
                max_output: None,
            },
        );
        let plan = Plan {
            deadline: tokio::time::Instant::now() + deadline_of(&decision),
            allowed: &|d: &Deployment| recheck.allows(d),
            gate: Some((&snapshot.limiter, tokens)),
        };
        let served = match upstream::embed(&decision, &plan, &req, &limits).await {
            Ok(s) => s,
            Err(e) => {
                ctx.metrics.failed_call(&e);
                return Err((e.into(), Some(policy)));
            }
        };
        ctx.metrics
            .served(&served.failed, &served.skipped, &served.retries);
        let d = served.deployment.clone();
        ctx.metrics.answered(&d, "embeddings");
        let record = Record {
            endpoint: policy::EndpointName::Embeddings,
            ticket,
            limiter: snapshot.limiter.clone(),
            request_id: request_id.clone(),
            caller: caller.clone(),
            policy: policy.clone(),
            rule: decision.rule.clone(),
            refused: decision.refused.len(),
            deployment: d.clone(),
            attempts: served.failed.len() + 1,
            started,
            prompt_estimate: (req.text_len() as u64).div_ceil(4),
            output_limit: None,
        };
        let usage = served.answer.usage.unwrap_or_else(|| record.estimate(0));
        let cost = record.finish(&ctx.metrics, &usage, None);
        let body = crate::exchange::embeddings::to_json(&served.answer, req.encoding, &usage);
        let mut res = respond::json(body, &d, &decision);
        respond::cost(&mut res, cost);
        Ok(Outcome {
            response: res,
            policy: Some(policy),
        })
    }
    .await;
    result.unwrap_or_else(|(e, policy)| {
        tracing::info!(
            endpoint = "embeddings",
            request_id = request_id.to_str().unwrap_or("-"),
            tenant = &*caller.tenant,
            policy = policy.as_deref().unwrap_or("-"),
            status = e.status().as_u16(),
            error = e.kind().as_str(),
            detail = e.to_string().as_str(),
            duration_ms = started.elapsed().as_millis() as u64,
            "request failed"
        );
        Outcome {
            response: e.into_response(),
            policy,
        }
    })
}

/// `POST /v1/messages/count_tokens`: asked of the deployment when it is Anthropic's, else
/// estimated (the answer then says `x-modelgate-estimated: true`).
pub async fn count_tokens<B>(_ctx: &Arc<Ctx>, authed: Authed<B>) -> Outcome
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let Authed {
        caller,
        snapshot,
        request,
    } = authed;
    let limits = snapshot.config.limits;
    let result: Result<Outcome, GatewayError> = async {
        let (parts, body) = request.into_parts();
        let body = api::read_body(body, limits.max_body_bytes, limits.body_read_timeout).await?;
        let mut value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| crate::exchange::RequestError::Json(e.to_string()))?;
        if value.get("max_tokens").is_none()
            && let Some(o) = value.as_object_mut()
        {
            o.insert("max_tokens".into(), serde_json::json!(1));
        }
        let req = api::messages::parse(
            &serde_json::to_vec(&value).unwrap_or_default(),
            RequestLimits {
                max_messages: limits.max_messages,
                max_depth: limits.max_json_depth,
            },
        )?;
        let labels = policy::labels::collect(&parts.headers, None)?;
        // Decided (and estimated) before any await: the prompt's lazy count stays here.
        let (decision, estimate) = {
            let prompt = PromptText::new(&req);
            let ask = Ask {
                model: &req.model,
                endpoint: policy::EndpointName::Messages,
                caller: &caller,
                labels: &labels,
                needs: Needs::default(),
                prompt: &prompt,
                max_output: None,
            };
            let decision = policy::decide(&ask, &snapshot)?;
            let estimate = decision
                .candidates()
                .first()
                .filter(|d| d.kind() != crate::config::spec::Kind::Anthropic)
                .map(|d| policy::PromptSize::tokens(&prompt, &d.model));
            (decision, estimate)
        };
        let Some(d) = decision.candidates().first() else {
            return Err(GatewayError::Internal("no candidate".into()));
        };
        let (body, estimated) = if let Some(n) = estimate {
            (
                Bytes::from(
                    serde_json::to_vec(&serde_json::json!({"input_tokens": n})).unwrap_or_default(),
                ),
                true,
            )
        } else {
            match upstream::count_tokens(d, &value).await {
                Ok(b) => (b, false),
                Err(e) => {
                    return Err(upstream::UpstreamError {
                        attempts: vec![upstream::Attempt {
                            deployment: d.clone(),
                            error: e.cleaned(&d.endpoint.masks),
                        }],
                        skipped: Vec::new(),
                        retries: Vec::new(),
                    }
                    .into());
                }
            }
        };
        let mut res = respond::json(body, d, &decision);
        if estimated {
            res.headers_mut()
                .insert("x-modelgate-estimated", HeaderValue::from_static("true"));
        }
        Ok(Outcome {
            response: res,
            policy: Some(decision.policy.clone()),
        })
    }
    .await;
    result.unwrap_or_else(|e| Outcome {
        response: e.into_response_for(Front::Anthropic),
        policy: None,
    })
}

/// One answered request, for its log line and metrics.
struct Record {
    endpoint: policy::EndpointName,
    /// The caller's claim on its limits, settled when the answer is done.
    ticket: Option<crate::limits::Ticket>,
    limiter: Arc<crate::limits::Limiter>,
    request_id: HeaderValue,
    caller: Caller,
    policy: Arc<str>,
    rule: Arc<str>,
    refused: usize,
    deployment: Arc<Deployment>,
    attempts: usize,
    started: Instant,
    prompt_estimate: u64,
    /// The most output the request allowed (`max_tokens` × `n`), bounding estimates.
    output_limit: Option<u64>,
}

impl Record {
    /// Usage estimated from the text when the upstream reported none.
    fn estimate(&self, output_chars: usize) -> Usage {
        Usage {
            prompt_tokens: self.prompt_estimate,
            completion_tokens: accounting::tokens::estimate_output(output_chars, self.output_limit),
            estimated: true,
            ..Usage::default()
        }
    }

    /// Records tokens, cost and duration, writes the request's log line, returns the cost.
    fn finish(&self, m: &Metrics, usage: &Usage, stream: Option<EndReason>) -> f64 {
        let d = &self.deployment;
        let cost = accounting::cost::of(usage, &d.price);
        let took = self.started.elapsed();
        self.limiter.finish(
            self.ticket.as_ref(),
            crate::limits::UsageEntry {
                tenant: self.caller.tenant.clone(),
                model: d.usage_model.clone(),
                openness: d.model.openness.as_str(),
                input_tokens: usage.prompt_tokens,
                output_tokens: usage.completion_tokens,
                cost_micros: crate::limits::micros(cost),
            },
        );
        m.usage(d, self.endpoint.operation(), usage, cost, took);
        m.request_duration
            .with_label_values(&[
                self.endpoint.as_str(),
                if stream.is_some() { "true" } else { "false" },
            ])
            .observe(took.as_secs_f64());
        tracing::info!(
            endpoint = self.endpoint.as_str(),
            status = 200,
            request_id = self.request_id.to_str().unwrap_or("-"),
            tenant = &*self.caller.tenant,
            key = self.caller.key_id.as_deref().unwrap_or("-"),
            policy = &*self.policy,
            rule = &*self.rule,
            refused = self.refused,
            deployment = d.name.as_str(),
            model = d.model.id.as_str(),
            provider = d.endpoint.provider.as_str(),
            openness = d.model.openness.as_str(),
            license = d.model.license.id.as_str(),
            attempts = self.attempts,
            stream = stream.map_or("-", EndReason::as_str),
            prompt_tokens = usage.prompt_tokens,
            completion_tokens = usage.completion_tokens,
            tokens_estimated = usage.estimated,
            cost_usd = cost,
            duration_ms = took.as_millis() as u64,
            "request served"
        );
        cost
    }
}

/// `GET /v1/usage`: the caller's tenant's usage of the current day and month.
pub async fn usage(limiter: Arc<crate::limits::Limiter>, tenant: Arc<str>) -> Outcome {
    let outcome = match limiter.usage(Some(&tenant)).await {
        Ok(report) => Ok(report.to_json()),
        Err(e) => Err(GatewayError::from(e)),
    };
    match outcome {
        Ok(body) => Outcome {
            response: crate::error::json_response(http::StatusCode::OK, body),
            policy: None,
        },
        Err(e) => e.into(),
    }
}

/// `GET /v1/models`: the models this caller may use, with the deployments its policy allows.
pub fn list_models(authed: &Authed<impl Sized>) -> Outcome {
    let snapshot = &authed.snapshot;
    let created = upstream::unix_now();
    let data = snapshot
        .listed
        .iter()
        .filter_map(|(m, idx)| {
            let deps: Vec<&Deployment> = policy::listable(snapshot, &authed.caller, &m.id, idx)
                .into_iter()
                .filter_map(|i| snapshot.deployments.get(i).map(AsRef::as_ref))
                .collect();
            (!deps.is_empty()).then(|| ModelObject::new(&m.id, m, &deps, created))
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

/// `GET /v1/models/{id}`: one model, if this caller may use it.
pub fn get_model(authed: &Authed<impl Sized>, id: &str) -> Outcome {
    let snapshot = &authed.snapshot;
    let created = upstream::unix_now();
    let indices: Vec<usize> = match snapshot.route(id) {
        Some(Route::Model(idx)) => idx.clone(),
        Some(Route::Deployment(i)) => vec![*i],
        Some(Route::Auto) | None => Vec::new(),
    };
    let deps: Vec<&Deployment> = policy::listable(snapshot, &authed.caller, id, &indices)
        .into_iter()
        .filter_map(|i| snapshot.deployments.get(i).map(AsRef::as_ref))
        .collect();
    match deps.first() {
        Some(d) => {
            let body = serde_json::to_vec(&ModelObject::new(id, &d.model, &deps, created))
                .unwrap_or_default();
            Outcome {
                response: json_response(StatusCode::OK, Bytes::from(body)),
                policy: None,
            }
        }
        None => GatewayError::from(PolicyError::UnknownModel(id.to_owned())).into(),
    }
}

/// The most a request can cost, in micros, on the most expensive deployment it may reach: the
/// prompt at `prompt_bound` tokens (an upper bound, never an estimate) and the longest answer
/// as if the prompt took none of the context window (a loose prompt bound must not shrink
/// the answer's). More than the price cap's worst case, which estimates: a reservation must
/// hold whatever happens.
fn reservation(
    decision: &policy::Decision,
    prompt_bound: impl Fn(&Deployment) -> u64,
    max_output: Option<u32>,
    choices: Option<u32>,
) -> u64 {
    let choices = u64::from(choices.unwrap_or(1));
    let worst = decision
        .candidates()
        .iter()
        .map(|d| {
            let out = policy::worst_output(d, 0, max_output) * choices;
            // The prompt at its dearest rate: writing it to a provider's cache costs more.
            let p = &d.price;
            let input = p.cache_write.map_or(p.input, |w| w.max(p.input));
            (prompt_bound(d) as f64 * input + out as f64 * p.output) / 1e6
        })
        .fold(0.0, f64::max);
    crate::limits::micros(worst)
}

/// Counts a request against its caller's limits with its `charge` (none without limits).
async fn admit(
    ctx: &Ctx,
    snapshot: &Snapshot,
    caller: &Caller,
    charge: Option<crate::limits::Charge>,
) -> Result<Option<crate::limits::Ticket>, GatewayError> {
    let Some(charge) = charge.filter(|_| !caller.limits.is_empty()) else {
        return Ok(None);
    };
    match snapshot.limiter.admit(&caller.limits, charge).await {
        Ok(Some((ticket, levels))) => {
            for (scope, day, month) in levels {
                for (window, used, cap) in [
                    ("day", day, scope.limits.usd_micros_per_day),
                    ("month", month, scope.limits.usd_micros_per_month),
                ] {
                    if let Some(cap) = cap {
                        ctx.metrics
                            .budget_used
                            .with_label_values(&[scope.kind.as_str(), &scope.name, window])
                            .set(if cap == 0 {
                                1.0
                            } else {
                                used as f64 / cap as f64
                            });
                    }
                }
            }
            Ok(Some(ticket))
        }
        Ok(None) => Ok(None),
        Err(e) => {
            if let crate::limits::LimitError::Refused(r) = &e {
                ctx.metrics
                    .limit_rejections
                    .with_label_values(&[r.kind.as_str(), r.limit.as_str()])
                    .inc();
            }
            Err(e.into())
        }
    }
}
