//! `POST /v1/messages/count_tokens`: asked of the deployment when it is Anthropic's, else
//! estimated (the answer then says `x-modelgate-estimated: true`).

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderValue;

use crate::accounting::tokens::PromptText;
use crate::api::{self, Front};
use crate::auth::Authed;
use crate::config::spec::Kind;
use crate::error::GatewayError;
use crate::exchange::RequestError;
use crate::exchange::chat::RequestLimits;
use crate::policy::{self, Ask, Needs};
use crate::stream::respond;
use crate::upstream;

use super::{Ctx, Failure, Opened, Outcome, Sent, undecided};

/// `POST /v1/messages/count_tokens`.
pub(crate) async fn count_tokens<B>(ctx: Arc<Ctx>, authed: Authed<B>) -> Outcome
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (opened, unread) = Opened::open(authed, "count_tokens", Front::Anthropic);
    let result = match super::read(unread).await {
        Ok(sent) => count(&ctx, &opened, sent).await,
        Err(f) => Err(f),
    };
    opened.exit(result)
}

async fn count(ctx: &Ctx, opened: &Opened, sent: Sent) -> Result<Outcome, Failure> {
    let limits = opened.current.config.limits;
    let mut value: serde_json::Value = serde_json::from_slice(&sent.body)
        .map_err(|e| undecided(RequestError::Json(e.to_string())))?;
    // A count needs no answer length; the Messages format requires one.
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
    )
    .map_err(undecided)?;
    let labels = super::labels(&sent.headers, None)?;
    // Decided (and estimated) before any await: the prompt's lazy count stays here.
    let (decision, estimate) = {
        let prompt = PromptText::new(&req);
        let ask = Ask {
            model: &req.model,
            endpoint: policy::EndpointName::Messages,
            caller: &opened.caller,
            labels: &labels,
            needs: Needs::default(),
            prompt: &prompt,
            max_output: None,
        };
        let decision = opened.decided(ctx, policy::decide(&ask, &opened.current))?;
        let estimate = decision
            .candidates()
            .first()
            .filter(|d| d.kind() != Kind::Anthropic)
            .map(|d| policy::PromptSize::tokens(&prompt, &d.model));
        (decision, estimate)
    };
    let policy = Some(decision.policy.clone());
    let Some(d) = decision.candidates().first() else {
        return Err((GatewayError::Internal("no candidate".into()), policy));
    };
    let (body, estimated) = match estimate {
        Some(n) => (
            Bytes::from(
                serde_json::to_vec(&serde_json::json!({"input_tokens": n})).unwrap_or_default(),
            ),
            true,
        ),
        None => {
            match upstream::count_tokens(&ctx.pools, opened.current.health.of(d), d, &value).await {
                Ok(b) => (b, false),
                Err(e) => {
                    let failed = upstream::UpstreamError {
                        attempts: vec![upstream::Attempt {
                            deployment: d.clone(),
                            error: e.cleaned(&d.endpoint.masks),
                        }],
                        skipped: Vec::new(),
                        retries: Vec::new(),
                    };
                    return Err((failed.into(), policy));
                }
            }
        }
    };
    let mut res = respond::json(body, d, &decision);
    if estimated {
        res.headers_mut()
            .insert("x-modelgate-estimated", HeaderValue::from_static("true"));
    }
    // Its line is the boundary's: nothing was served to settle.
    Ok(Outcome {
        response: res,
        policy,
        logged: false,
    })
}
