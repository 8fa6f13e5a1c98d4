//! `POST /v1/embeddings`: decide, admit, call, settle; a caller over its limits costs no
//! upstream call.

use std::sync::Arc;

use bytes::Bytes;

use crate::api::Front;
use crate::auth::Authed;
use crate::config::Deployment;
use crate::exchange::embeddings::EmbeddingsRequest;
use crate::policy::recheck::{Asked, ByteSize};
use crate::policy::{self, Ask, Needs};
use crate::stream::respond;
use crate::upstream::{self, Plan};

use super::admit::{deadline_of, reservation};
use super::record::Record;
use super::{Ctx, Failure, Opened, Outcome, Sent, undecided};

const ENDPOINT: policy::EndpointName = policy::EndpointName::Embeddings;

/// `POST /v1/embeddings`.
pub(crate) async fn embeddings<B>(ctx: Arc<Ctx>, authed: Authed<B>) -> Outcome
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (opened, unread) = Opened::open(authed, ENDPOINT.as_str(), Front::OpenAi);
    let result = match super::read(unread).await {
        Ok(sent) => embed(&ctx, &opened, sent).await,
        Err(f) => Err(f),
    };
    opened.exit(result)
}

async fn embed(ctx: &Ctx, opened: &Opened, sent: Sent) -> Result<Outcome, Failure> {
    let (current, caller) = (&opened.current, &opened.caller);
    let limits = current.config.limits;
    let req = EmbeddingsRequest::parse(&sent.body, limits.max_json_depth).map_err(undecided)?;
    let labels = super::labels(&sent.headers, None)?;
    let decision = opened.decide(
        ctx,
        &Ask {
            model: &req.model,
            endpoint: ENDPOINT,
            caller,
            labels: &labels,
            needs: Needs::default(),
            prompt: &ByteSize(req.text_len()),
            max_output: None,
        },
    )?;
    let policy = decision.policy.clone();
    let tokens = (req.text_len() as u64).div_ceil(4);
    // A token per byte at most, whatever the model's tokenizer, and each input's own
    // special tokens.
    let bound = req.text_len() as u64 + 16 * req.count() as u64 + 64;
    let charge = crate::limits::Charge {
        tokens,
        reserve_micros: reservation(&decision, |_| bound, Some(0), None),
        lifetime: deadline_of(&decision) + crate::limits::RESERVATION_MARGIN,
    };
    let ticket = opened.admit(ctx, &policy, Some(charge)).await?;
    let recheck = opened.recheck(
        ctx,
        Asked {
            model: &req.model,
            endpoint: ENDPOINT,
            labels: &labels,
            needs: Needs::default(),
            bytes: req.text_len(),
            max_output: None,
        },
    );
    let plan = Plan {
        deadline: tokio::time::Instant::now() + deadline_of(&decision),
        allowed: &|d: &Deployment| recheck.allows(d),
        gate: Some((&current.limiter, tokens)),
        health: &current.health,
        trace: &opened.trace,
    };
    let served = match upstream::embed(&ctx.pools, &decision, &plan, &req, &limits).await {
        Ok(s) => s,
        Err(e) => {
            ctx.metrics.failed_call(&e);
            return Err((e.into(), Some(policy)));
        }
    };
    ctx.metrics
        .served(&served.failed, &served.skipped, &served.retries);
    let d = served.deployment.clone();
    ctx.metrics
        .answered(&current.series, &d, ENDPOINT.operation());
    let record = Record::new(
        opened,
        &decision,
        &d,
        served.failed.len() + 1,
        ENDPOINT,
        ticket,
    )
    .with_estimates(tokens, None);
    super::trace::committed(&opened.trace, opened.started.elapsed());
    let usage = served.answer.usage.unwrap_or_else(|| record.estimate(0));
    let cost = record.finish(&ctx.metrics, &usage, None);
    let body = crate::exchange::embeddings::to_json(&served.answer, req.encoding, &usage);
    let mut res = respond::json(body, &d, &decision);
    respond::cost(&mut res, cost);
    Ok(Outcome {
        response: res,
        policy: Some(policy),
        logged: true,
    })
}
