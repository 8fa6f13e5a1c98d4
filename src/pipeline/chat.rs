//! `POST /v1/chat/completions` (OpenAI's format) and `POST /v1/messages` (Anthropic's): parse,
//! decide, admit, call, respond, whatever dialect answers.

use std::sync::Arc;

use bytes::Bytes;

use crate::accounting::tokens::PromptText;
use crate::adapters::{AdapterError, AnswerBody};
use crate::api::responses::output::ResponsesEncoder;
use crate::api::{self, Front};
use crate::auth::Authed;
use crate::config::Deployment;
use crate::error::GatewayError;
use crate::exchange::answer::EndReason;
use crate::exchange::chat::{ChatRequest, RequestLimits};
use crate::exchange::encode::Encoder;
use crate::policy::recheck::Asked;
use crate::policy::{Ask, Decision, Needs};
use crate::stream::body::ResponseBody;
use crate::stream::respond;
use crate::upstream::relay::{OnEnd, StreamEnd};
use crate::upstream::{self, Answer, Plan, Served, StreamSetup};

use super::admit::{deadline_of, reservation};
use super::record::{Cancelled, Record};
use super::responses::Turn;
use super::{Ctx, Failure, Opened, Outcome, Unread, undecided};

/// `POST /v1/chat/completions`: OpenAI's format in and out.
pub(crate) fn chat_completions<B>(ctx: Arc<Ctx>, authed: Authed<B>) -> impl Future<Output = Outcome>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve(ctx, Front::OpenAi, authed)
}

/// `POST /v1/messages`: Anthropic's format in and out, any dialect behind.
pub(crate) fn messages<B>(ctx: Arc<Ctx>, authed: Authed<B>) -> impl Future<Output = Outcome>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve(ctx, Front::Anthropic, authed)
}

/// Not async itself (nor the two above): its future is made already opened, and holds neither
/// the request nor a copy of the futures it awaits from a level above (see `Opened::open`).
fn serve<B>(ctx: Arc<Ctx>, front: Front, authed: Authed<B>) -> impl Future<Output = Outcome>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (opened, unread) = Opened::open(authed, front.endpoint().as_str(), front);
    async move {
        let result = match unread {
            Ok(unread) => chat(&ctx, &opened, unread).await,
            Err(f) => Err(f),
        };
        opened.exit(result)
    }
}

async fn chat<B>(ctx: &Ctx, opened: &Opened, unread: Unread<B>) -> Result<Outcome, Failure>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // In a block, so that the body and its headers are not kept beside the call's future.
    let (req, labels) = {
        let sent = unread.read().await?;
        let limits = opened.current.config.limits;
        let request_limits = RequestLimits {
            max_messages: limits.max_messages,
            max_depth: limits.max_json_depth,
        };
        let req = match opened.front {
            Front::Anthropic => api::messages::parse(&sent.body, request_limits),
            Front::OpenAi => ChatRequest::parse_forwardable(&sent.body, request_limits),
            Front::Responses => ChatRequest::parse(&sent.body, request_limits),
        }
        .map_err(undecided)?;
        let labels = super::labels(&sent.headers, req.metadata.as_deref())?;
        super::trace::keep(&opened.trace, &sent.body);
        (req, labels)
    };
    serve_chat(ctx, opened, req, labels, None).await
}

/// A chat request from its decision to its answer; `turn` is set for the Responses API, whose
/// answers have their own shape and may be kept.
///
/// Not an `async fn`, which would keep the request and its labels twice (as given, and as its
/// body's own): 330 bytes more in every chat request's future, copied with it into its box.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice"
)]
pub(super) fn serve_chat<'a>(
    ctx: &'a Ctx,
    opened: &'a Opened,
    mut req: ChatRequest,
    labels: Vec<(String, String)>,
    turn: Option<&'a Turn>,
) -> impl Future<Output = Result<Outcome, Failure>> + 'a {
    async move {
        let (current, caller, front) = (&opened.current, &opened.caller, opened.front);
        let limits = current.config.limits;
        let (decision, needs, prompt_estimate) = decide(ctx, opened, &req, &labels)?;
        let policy = decision.policy.clone();
        super::trace::asked(&opened.trace, &req, &decision, &labels, caller);

        // ④ Count it against the caller's rates and budgets, reserving what it can cost at most.
        // With a budget and no `max_tokens`, the upstream is asked for no longer an answer than
        // the reservation assumed, so what it costs can never pass what was reserved.
        req.cap_output = caller.limits.iter().any(|s| s.limits.has_spend());
        // Tokens per minute count the client's `max_tokens`, as OpenAI counts them.
        let tokens = prompt_estimate
            + u64::from(req.max_output_tokens().unwrap_or(0)) * u64::from(req.n.unwrap_or(1));
        let charge = (!caller.limits.is_empty()).then(|| charge(&req, &decision, tokens));
        // Boxed, as the call: this future (and the four above it) holds pointers, not their size.
        // Not made at all for a caller without limits: a kilobyte built, boxed and polled once
        // for nothing, on the way to every first token.
        let ticket = match charge {
            Some(charge) => {
                crate::base::pinned(|| opened.admit(ctx, &policy, Some(charge))).await?
            }
            None => None,
        };
        // ⑤⑥ Call.
        let recheck = opened.recheck(
            ctx,
            Asked {
                model: &req.model,
                endpoint: front.endpoint(),
                labels: &labels,
                needs,
                bytes: req.text_len(),
                max_output: req.max_output_tokens(),
            },
        );
        let plan = Plan {
            deadline: tokio::time::Instant::now() + deadline_of(&decision),
            allowed: &|d: &Deployment| recheck.allows(d),
            gate: Some((&current.limiter, tokens)),
            health: &current.health,
            trace: &opened.trace,
        };
        let output_limit = req
            .max_output_tokens()
            .map(|m| u64::from(m) * u64::from(req.n.unwrap_or(1)));
        let encoder = |d: &Deployment| -> Box<dyn Encoder> {
            let model = api::answer_model(d, &req.model);
            match turn {
                Some(t) => Box::new(ResponsesEncoder::new(
                    t.head(model.to_owned()),
                    prompt_estimate,
                    output_limit,
                    t.keep(),
                )),
                None => front.encoder(
                    req.wants_stream_usage(),
                    prompt_estimate,
                    output_limit,
                    model,
                ),
            }
        };
        let record_for = |d: &Arc<Deployment>, attempts| {
            crate::base::boxed(|| {
                Record::new(opened, &decision, d, attempts, front.endpoint(), None)
                    .with_estimates(prompt_estimate, output_limit)
            })
        };
        // The answer's record and headers, made for the deployment the first attempt went to
        // while its answer is on the way; remade if another deployment answers.
        let prepared = std::sync::OnceLock::<Prepared>::new();
        let waiting = |d: &Arc<Deployment>| {
            let head = respond::head(d, &decision, req.stream);
            let _ = prepared.set(Prepared {
                head,
                record: record_for(d, 1),
            });
        };
        let setup = StreamSetup {
            encoder: &encoder,
            drain: &|| ctx.deadline(),
            waiting: &waiting,
        };
        let mut cancelled = Cancelled::new(ctx);
        let call = || upstream::call(&ctx.pools, &decision, &plan, &req, &limits, &setup);
        let called = crate::base::pinned(call).await;
        cancelled.disarm();
        let served = called.map_err(|e| {
            ctx.metrics.failed_call(&e);
            (GatewayError::from(e), Some(policy.clone()))
        })?;
        let answer = settled(served, prepared.into_inner(), ticket, record_for);

        // ⑦ Respond.
        let whole = |body: AnswerBody, d: &Deployment| {
            let model = api::answer_model(d, &req.model);
            match turn {
                Some(t) => t.whole(body, model.to_owned()),
                None => front.whole(body, model),
            }
        };
        let response = respond_with(ctx, opened, &decision, answer, &encoder, &whole)?;
        Ok(Outcome {
            response,
            policy: Some(policy),
            logged: true,
        })
    }
}

/// ④ The request's decision, what it needs of a deployment, and its prompt's estimated tokens.
fn decide(
    ctx: &Ctx,
    opened: &Opened,
    req: &ChatRequest,
    labels: &[(String, String)],
) -> Result<(Decision, Needs, u64), Failure> {
    let needs = Needs {
        tools: req.uses_tools(),
        vision: req.has_images(),
        choices: req.n,
        hosted_tool: req.hosted_tool,
    };
    let prompt = PromptText::new(req);
    let ask = Ask {
        model: &req.model,
        endpoint: opened.front.endpoint(),
        caller: &opened.caller,
        labels,
        needs,
        prompt: &prompt,
        max_output: req.max_output_tokens(),
    };
    let decision = opened.decide(ctx, &ask)?;
    Ok((decision, needs, prompt.approximate()))
}

/// Who answered, after how many failures and skips, and whether it was a fallback.
struct Tally {
    failed: Vec<upstream::Attempt>,
    skipped: Vec<upstream::Skip>,
    retries: Vec<Arc<Deployment>>,
    /// The policy, when its first choice did not answer.
    fell_back: Option<Arc<str>>,
    operation: &'static str,
}

impl Tally {
    fn count(&self, metrics: &crate::metrics::Metrics, record: &Record) {
        metrics.served(&self.failed, &self.skipped, &self.retries);
        metrics.answered(&record.current.series, &record.deployment, self.operation);
        if let Some(policy) = &self.fell_back {
            metrics.fallbacks.with_label_values(&[&**policy]).inc();
        }
    }
}

/// A served answer with its record and headers: those made while it was on its way when they
/// were made for the deployment that answered (after retries on it too), made now otherwise.
fn settled(
    served: Served<Answer>,
    prepared: Option<Prepared>,
    ticket: Option<crate::limits::Ticket>,
    record_for: impl FnOnce(&Arc<Deployment>, usize) -> Box<Record>,
) -> Respond {
    let attempts = served.failed.len() + 1;
    let (head, mut record) = match prepared {
        Some(p) if Arc::ptr_eq(&p.record.deployment, &served.deployment) => {
            (Some(p.head), p.record)
        }
        _ => (None, record_for(&served.deployment, attempts)),
    };
    record.attempts = attempts;
    record.ticket = ticket;
    Respond {
        served,
        record,
        head,
    }
}

/// What a request is charged on admission: its tokens, and the most it can cost reserved for
/// as long as it can take.
fn charge(req: &ChatRequest, decision: &Decision, tokens: u64) -> crate::limits::Charge {
    let prompt = PromptText::new(req);
    // The spend reservation counts the longest answer the upstream may give.
    let reserve = reservation(
        decision,
        |d| prompt.upper_bound(&d.model),
        req.max_output_tokens(),
        req.n,
    );
    let stream = if req.stream {
        decision
            .candidates()
            .unordered()
            .map(|d| d.endpoint.timeouts.stream_total)
            .max()
            .unwrap_or_default()
    } else {
        std::time::Duration::ZERO
    };
    crate::limits::Charge {
        tokens,
        reserve_micros: reserve,
        lifetime: deadline_of(decision) + stream + crate::limits::RESERVATION_MARGIN,
    }
}

/// What the answer from the deployment an attempt went to needs, made while it is on its way.
struct Prepared {
    head: http::HeaderMap,
    record: Box<Record>,
}

/// A served answer, its record, and its headers if they were made while it was on its way.
struct Respond {
    served: Served<Answer>,
    record: Box<Record>,
    head: Option<http::HeaderMap>,
}

/// A whole answer in the client's shape, naming the deployment's model.
type Whole<'a> = dyn Fn(AnswerBody, &Deployment) -> Result<Bytes, AdapterError> + 'a;

/// The client's response to a served answer: whole, made locally, or relayed as it streams
/// (settled when the stream ends).
fn respond_with(
    ctx: &Ctx,
    opened: &Opened,
    decision: &Decision,
    answer: Respond,
    encoder: &dyn Fn(&Deployment) -> Box<dyn Encoder>,
    whole: &Whole<'_>,
) -> Result<http::Response<ResponseBody>, Failure> {
    let Respond {
        served,
        record,
        head,
    } = answer;
    let Served {
        deployment: d,
        answer,
        failed,
        skipped,
        retries,
    } = served;
    let first = decision.candidates().first();
    let tally = Tally {
        failed,
        skipped,
        retries,
        fell_back: (!first.is_some_and(|first| Arc::ptr_eq(first, &d)))
            .then(|| decision.policy.clone()),
        operation: opened.front.endpoint().operation(),
    };
    let head_of = |stream| head.unwrap_or_else(|| respond::head(&d, decision, stream));
    if !matches!(answer, Answer::Stream(_)) {
        tally.count(&ctx.metrics, &record);
    }
    Ok(match answer {
        Answer::Complete(done) => {
            let usage = done.usage.unwrap_or_else(|| record.estimate(0));
            let body = whole(done.body, &d).map_err(|e| {
                let policy = Some(decision.policy.clone());
                (GatewayError::Internal(e.to_string()), policy)
            })?;
            super::trace::committed(&opened.trace, opened.started.elapsed());
            super::trace::output(&opened.trace, &body);
            let cost = record.finish(&ctx.metrics, &usage, None);
            let mut res = respond::with_head(ResponseBody::full(body), head_of(false));
            respond::cost(&mut res, cost);
            res
        }
        Answer::Local(c) => {
            super::trace::committed(&opened.trace, opened.started.elapsed());
            let cost = record.finish(&ctx.metrics, &c.usage, Some(EndReason::Completed));
            let frames = respond::local_stream(&c, encoder(&d).as_mut());
            let mut res = respond::frames(frames, &d, decision);
            respond::cost(&mut res, cost);
            res
        }
        Answer::Stream(mut relay) => {
            let metrics = ctx.metrics.clone();
            // The stream ends after the request's future: its line goes in the request's span.
            let span = tracing::Span::current();
            relay.later(move |relay| {
                tally.count(&metrics, &record);
                // The first content is written: the time to first token, as the client sees it.
                let took = record.started.elapsed();
                let series = metrics.series(&record.current.series, &record.deployment, "chat");
                if let Some(s) = &series.stream {
                    s.ttft.observe(took.as_secs_f64());
                }
                super::trace::committed(&record.trace, took);
                metrics.open_streams.inc();
                relay.on_end(stream_end(metrics, span, record));
            });
            respond::relay(relay, head_of(true))
        }
    })
}

/// What happens when a relayed stream ends: the deployment's health told, the usage settled.
fn stream_end(
    metrics: Arc<crate::metrics::Metrics>,
    span: tracing::Span,
    record: Box<Record>,
) -> OnEnd {
    crate::base::boxed(|| {
        move |end: StreamEnd| {
            let _in_request = span.enter();
            metrics.open_streams.dec();
            if end.reason == EndReason::ClientGone {
                metrics.cancelled.with_label_values(&["stream"]).inc();
            }
            // A stream that broke after its commit point still tells on its deployment.
            let d = &record.deployment;
            if end.reason.is_upstream_fault() && d.endpoint.breaker.is_some() {
                (record.current.health.of(d).breaker).record(false, tokio::time::Instant::now());
            }
            let usage = end
                .usage
                .unwrap_or_else(|| record.estimate(end.output_chars));
            let series = metrics.series(&record.current.series, d, "chat");
            if let Some(s) = &series.stream {
                s.ended(end.reason).inc();
            }
            record.finish(&metrics, &usage, Some(end.reason));
        }
    })
}
