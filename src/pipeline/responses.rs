//! `POST /v1/responses` (OpenAI's Responses API), and the stored responses it keeps:
//! `GET /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`, `DELETE /v1/responses/{id}`.
//!
//! A turn that continues a stored response replays that conversation's items before its own
//! input, and is decided with the labels the conversation was decided with, so a conversation
//! labelled `data=confidential` keeps that label on every turn whatever a later request says.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Value, json};

use crate::adapters::{AdapterError, AnswerBody};
use crate::api::Front;
use crate::api::responses::output::{self, Finished, Head, OnFinished};
use crate::api::responses::{request, response_id};
use crate::auth::Authed;
use crate::conversations::{ConversationError, Conversations, Stored};
use crate::error::GatewayError;
use crate::exchange::chat::RequestLimits;
use crate::stream::respond::json_response;

use super::chat::serve_chat;
use super::{Ctx, Failure, Opened, Outcome, Sent, undecided};

/// What a Responses turn adds to a chat request: the response's id and settings, and what to
/// keep once it completes.
pub(super) struct Turn {
    id: String,
    created_at: u64,
    echo: serde_json::Map<String, Value>,
    namespaced: Arc<crate::api::responses::Namespaced>,
    keep: Option<Keep>,
}

/// What a completed response is kept with.
#[derive(Clone)]
struct Keep {
    conversations: Arc<Conversations>,
    tenant: String,
    labels: Vec<(String, String)>,
    /// The conversation before this response's output: the history, then this input.
    items: Vec<Value>,
    input_at: usize,
}

impl Turn {
    pub(super) fn head(&self, model: String) -> Head {
        Head {
            id: self.id.clone(),
            created_at: self.created_at,
            model,
            echo: self.echo.clone(),
            namespaced: self.namespaced.clone(),
        }
    }

    /// Told when the response completes: keeps it, if it is to be kept.
    pub(super) fn keep(&self) -> Option<OnFinished> {
        let keep = self.keep.clone()?;
        let id = self.id.clone();
        Some(Box::new(move |f: Finished| {
            let Keep {
                conversations,
                tenant,
                labels,
                mut items,
                input_at,
            } = keep;
            let output_at = items.len();
            items.extend(f.output);
            let stored = Stored {
                tenant,
                labels,
                items,
                input_at,
                output_at,
                response: f.response,
            };
            if let Err(e) = conversations.put(&id, &stored) {
                tracing::warn!(response = %id, error = %e, "response not stored");
            }
        }))
    }

    /// A whole answer as a response object.
    pub(super) fn whole(&self, body: AnswerBody, model: String) -> Result<Bytes, AdapterError> {
        let mut c = match body {
            AnswerBody::OpenAi(b, _) => crate::adapters::openai_compat::parse_completion(&b)?,
            AnswerBody::Parsed(c) => c,
            AnswerBody::Responses(b) => {
                return output::native_whole(&b, &self.head(model), self.keep());
            }
        };
        c.model.clone_from(&model);
        Ok(output::whole(&c, &self.head(model), self.keep()))
    }
}

/// `POST /v1/responses`.
pub(crate) async fn create<B>(ctx: Arc<Ctx>, authed: Authed<B>) -> Outcome
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (opened, unread) = Opened::open(authed, "responses", Front::Responses);
    let result = match super::read(unread).await {
        Ok(sent) => respond(&ctx, &opened, sent).await,
        Err(f) => Err(f),
    };
    opened.exit(result)
}

async fn respond(ctx: &Ctx, opened: &Opened, sent: Sent) -> Result<Outcome, Failure> {
    let limits = opened.current.config.limits;
    let limits = RequestLimits {
        max_messages: limits.max_messages,
        max_depth: limits.max_json_depth,
    };
    let parsed = request::parse(&sent.body, limits).map_err(undecided)?;
    let conversations = &ctx.conversations;
    let tenant = &*opened.caller.tenant;
    // The conversation so far, and the labels it was decided with.
    let (history, stored_labels) = match &parsed.previous_response_id {
        Some(id) => {
            let s = conversations.get(tenant, id).await.map_err(undecided)?;
            (s.items, s.labels)
        }
        None => (Vec::new(), Vec::new()),
    };
    let mut items = history;
    let input_at = items.len();
    items.extend(parsed.input.iter().cloned());
    conversations.check(&items).map_err(undecided)?;
    let size: usize = items.iter().map(|i| i.to_string().len()).sum();
    if parsed.store && size > conversations.max_bytes() {
        return Err(undecided(ConversationError::TooLarge(format!(
            "the conversation holds about {size} bytes, more than the {} a stored conversation may hold",
            conversations.max_bytes()
        ))));
    }
    let (mut req, dropped) = parsed
        .to_chat(&items[..input_at], limits)
        .map_err(undecided)?;
    req.native = native_body(&sent.body, &items).map(Arc::new);
    req.hosted_tool = parsed.hosted;
    let metadata: Option<Vec<(String, String)>> = parsed.metadata.as_ref().map(|m| {
        m.iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect()
    });
    let asked = super::labels(&sent.headers, metadata.as_deref())?;
    super::trace::keep(&opened.trace, &sent.body);
    drop(sent);
    let caller_labels = opened.caller.labels.to_vec();
    // A key's own labels are fixed and decide before a request's: one that sets a label of
    // the conversation otherwise cannot continue it (it would relabel the history).
    if let Some((k, _)) = stored_labels
        .iter()
        .find(|(k, v)| caller_labels.iter().any(|(ck, cv)| ck == k && cv != v))
    {
        let message = format!(
            "this conversation was decided with label '{}', which this key sets otherwise; continue it with a key that agrees",
            crate::base::printable(k)
        );
        return Err(undecided(crate::exchange::RequestError::Invalid {
            message,
            param: Some("previous_response_id".into()),
            code: "conversation_label_conflict",
        }));
    }
    let labels = crate::policy::labels::inherit(stored_labels, asked);
    // What it is kept with: every label it was decided with, the key's too, so that a later
    // turn by another key of the tenant is decided with them.
    let kept_labels = crate::policy::labels::inherit(caller_labels, labels.clone());
    let turn = Turn {
        id: response_id(),
        created_at: crate::base::unix_now(),
        echo: parsed.echo.clone(),
        namespaced: Arc::new(parsed.namespaced.clone()),
        keep: parsed.store.then(|| Keep {
            conversations: conversations.clone(),
            tenant: tenant.to_owned(),
            labels: kept_labels,
            items,
            input_at,
        }),
    };
    let hosted = parsed.hosted;
    let mut outcome = serve_chat(ctx, opened, req, labels, Some(&turn))
        .await
        .map_err(|(e, policy)| (hosted_tool_error(e, hosted), policy))?;
    // Reasoning items of earlier turns are kept in the conversation but no chat dialect can
    // take them (OpenAI's own Responses API got them): say so rather than drop them silently.
    let served_by = outcome
        .response
        .headers()
        .get(&crate::exchange::headers::X_DEPLOYMENT)
        .and_then(|v| v.to_str().ok());
    let native = opened.current.deployments.iter().any(|d| {
        Some(d.name.as_str()) == served_by && d.endpoint.kind == crate::config::spec::Kind::Openai
    });
    if dropped > 0
        && !native
        && let Ok(v) = http::HeaderValue::from_str(&format!("reasoning={dropped}"))
    {
        outcome
            .response
            .headers_mut()
            .insert("x-modelgate-dropped-items", v);
    }
    Ok(outcome)
}

/// A policy refusal only for a built-in tool: no deployment the policy allows can run it, which
/// is the request's trouble, named as such (400 `unsupported_tool`).
fn hosted_tool_error(e: GatewayError, hosted: Option<&'static str>) -> GatewayError {
    match (&e, hosted) {
        (GatewayError::Policy(p), Some(tool)) if p.only_for_hosted_tools() => {
            GatewayError::Request(crate::exchange::RequestError::Invalid {
                message: format!(
                    "the built-in tool '{tool}' runs only on OpenAI's own API, and no deployment allowed for this request is one; declare a function tool instead"
                ),
                param: Some("tools".into()),
                code: "unsupported_tool",
            })
        }
        _ => e,
    }
}

/// The request as OpenAI's own Responses API takes it: the client's body with the whole
/// conversation as its `input` (OpenAI does not know this gateway's response ids) and the
/// gateway's own ids left off the items OpenAI gives no id.
fn native_body(body: &[u8], items: &[Value]) -> Option<serde_json::Map<String, Value>> {
    let mut m: serde_json::Map<String, Value> = serde_json::from_slice(body).ok()?;
    m.remove("previous_response_id");
    m.remove("model");
    let input = items
        .iter()
        .map(|item| {
            let mut item = item.clone();
            let kind = item.get("type").and_then(Value::as_str).unwrap_or("");
            let role = item.get("role").and_then(Value::as_str).unwrap_or("");
            let no_id =
                (kind == "message" && role != "assistant") || kind == "function_call_output";
            if let (true, Some(o)) = (no_id, item.as_object_mut()) {
                o.remove("id");
            }
            item
        })
        .collect();
    m.insert("input".into(), Value::Array(input));
    Some(m)
}

/// `GET /v1/responses/{id}`, `GET /v1/responses/{id}/input_items` and
/// `DELETE /v1/responses/{id}`.
pub(crate) async fn stored<B>(ctx: Arc<Ctx>, authed: Authed<B>) -> Outcome {
    let (method, uri) = (
        authed.request.method().clone(),
        authed.request.uri().clone(),
    );
    let caller = authed.caller;
    drop(authed.request);
    let tenant = &*caller.tenant;
    let path = uri.path();
    let rest = path.strip_prefix("/v1/responses/").unwrap_or("");
    let (id, items) = match rest.split_once('/') {
        Some((id, "input_items")) => (id, true),
        Some(_) => return GatewayError::NotFound(path.to_owned()).into(),
        None => (rest, false),
    };
    let conversations = &ctx.conversations;
    let result: Result<Value, GatewayError> = match (&method, items) {
        (&http::Method::DELETE, false) => conversations
            .delete(tenant, id)
            .await
            .map(|()| json!({"id": id, "object": "response", "deleted": true}))
            .map_err(GatewayError::from),
        (_, false) => conversations
            .get(tenant, id)
            .await
            .map(|s| s.response)
            .map_err(GatewayError::from),
        (_, true) => match conversations.get(tenant, id).await {
            Ok(s) => input_items(&s, uri.query()),
            Err(e) => Err(e.into()),
        },
    };
    match result {
        Ok(v) => Outcome::unlogged(json_response(
            StatusCode::OK,
            Bytes::from(serde_json::to_vec(&v).unwrap_or_default()),
        )),
        Err(e) => e.into(),
    }
}

/// A page of a stored response's input items: `limit` (1–100, default 20), `order` (`desc`,
/// the default, or `asc`) and `after` (an item id), as OpenAI pages them.
fn input_items(s: &Stored, query: Option<&str>) -> Result<Value, GatewayError> {
    let (mut limit, mut asc, mut after) = (20usize, false, None);
    for (k, v) in query
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
    {
        match k {
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| bad_query("limit", "'limit' is between 1 and 100"))?;
            }
            "order" if v == "asc" || v == "desc" => asc = v == "asc",
            "order" => return Err(bad_query("order", "'order' is 'asc' or 'desc'")),
            "after" => after = Some(v),
            _ => {}
        }
    }
    let input = s.items.get(s.input_at..s.output_at).unwrap_or_default();
    let mut ordered: Vec<&Value> = input.iter().collect();
    if !asc {
        ordered.reverse();
    }
    let start = match after {
        Some(a) => ordered
            .iter()
            .position(|i| i.get("id").and_then(Value::as_str) == Some(a))
            .map_or(ordered.len(), |p| p + 1),
        None => 0,
    };
    let page: Vec<&Value> = ordered.iter().skip(start).take(limit).copied().collect();
    let id = |v: Option<&&Value>| v.and_then(|i| i.get("id")).cloned().unwrap_or(Value::Null);
    Ok(json!({
        "object": "list",
        "data": page,
        "first_id": id(page.first()),
        "last_id": id(page.last()),
        "has_more": start + page.len() < ordered.len(),
    }))
}

fn bad_query(param: &str, message: &str) -> GatewayError {
    crate::exchange::RequestError::invalid(param, message).into()
}
