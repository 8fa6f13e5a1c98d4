//! What a request's trace says, at each step of the pipeline: its opening (the client's trace
//! continued), its decision (policy, rule, refusals), its failure or its answer (model, usage,
//! cost, openness, license), the commit point and a stream's end. Each is a no-op when the
//! request is not traced.

use bytes::Bytes;
use http::HeaderMap;

use crate::config::Deployment;
use crate::error::GatewayError;
use crate::exchange::Usage;
use crate::exchange::answer::EndReason;
use crate::live::Current;
use crate::policy::{self, Decision, PolicyError};
use crate::telemetry::traces::{self, Trace};

/// Refusals listed on a span, at most (the count is always there).
const MAX_REFUSALS: usize = 50;
/// Bytes of a prompt or an answer on a span, at most: the export queue is bounded in spans,
/// and a collector refuses a batch with one oversized span.
const MAX_CONTENT: usize = 16 << 10;

/// Puts a prompt or an answer on the span under `key`, cut to [`MAX_CONTENT`] bytes (at a
/// character boundary) and marked when cut.
fn put_content(a: &mut traces::Attributes, key: &str, mut text: String) {
    let cut = text.len() > MAX_CONTENT;
    if cut {
        let mut end = MAX_CONTENT;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    a.str(key, text);
    if cut {
        a.bool("modelgate.content_truncated", true);
    }
}

/// A request's trace, when traces are exported and it is sampled.
pub(super) fn open(current: &Current, headers: &HeaderMap, endpoint: &str) -> Trace {
    let tracer = current.tracer.as_ref()?;
    // Counting tokens asks no model for an answer: not a GenAI operation to trace.
    if endpoint == "count_tokens" {
        return None;
    }
    let parent = headers
        .get(&traces::TRACEPARENT)
        .and_then(|v| traces::parse_traceparent(v.as_bytes()));
    let operation = if endpoint == "embeddings" {
        "embeddings"
    } else {
        "chat"
    };
    let trace = tracer.begin(parent, operation);
    traces::with(&trace, |t| {
        t.name(operation.to_owned());
        t.attributes(|a| {
            a.str("gen_ai.operation.name", operation)
                .str("modelgate.endpoint", endpoint);
        });
    });
    trace
}

/// Who asked: tenant, key and request id.
pub(super) fn caller(trace: &Trace, caller: &crate::auth::Caller, request_id: &str) {
    traces::with(trace, |t| {
        t.attributes(|a| {
            a.str("modelgate.tenant", &*caller.tenant)
                .str("modelgate.request_id", request_id);
            if let Some(k) = &caller.key_id {
                a.str("modelgate.key", &**k);
            }
        });
    });
}

/// The decision: the span is named for the model asked for, and says which policy and rule
/// decided, what they allowed and what they refused and why.
pub(super) fn decided(
    trace: &Trace,
    ask: &policy::Ask,
    live: &Result<Decision, PolicyError>,
    shadow: Option<&policy::Shadowed>,
) {
    traces::with(trace, |t| {
        t.name(format!("{} {}", t.operation(), ask.model));
        t.attributes(|a| {
            a.str("gen_ai.request.model", ask.model);
            if let Some(m) = ask.max_output {
                a.int("gen_ai.request.max_tokens", i64::from(m));
            }
            if let Some(n) = ask.needs.choices {
                a.int("gen_ai.request.choice.count", i64::from(n));
            }
            match live {
                Ok(d) => {
                    a.str("modelgate.policy", &*d.policy)
                        .str("modelgate.rule", &*d.rule)
                        .strs(
                            "modelgate.allowed",
                            d.candidates().ranked().map(|c| c.name.clone()),
                        )
                        .int("modelgate.allowed.count", d.candidates().len() as i64)
                        .int("modelgate.refused", d.refused_count() as i64);
                    if d.refused_count() > 0 {
                        let listed = d.refused();
                        a.strs(
                            "modelgate.refused.reasons",
                            listed.iter().take(MAX_REFUSALS).map(|(c, r)| {
                                format!("{}: {}: {}", c.name, r.kind.as_str(), r.detail)
                            }),
                        );
                    }
                }
                Err(e) => refusal(a, e),
            }
            if let Some(s) = shadow {
                a.str("modelgate.shadow", &*s.policy)
                    .str("modelgate.shadow.agreement", s.agreement.as_str())
                    .str("modelgate.shadow.deployment", s.deployment().unwrap_or("-"));
            }
        });
    });
}

fn refusal(a: &mut traces::Attributes, e: &PolicyError) {
    match e {
        PolicyError::Refused {
            policy,
            rule,
            refused,
            ..
        } => {
            a.str("modelgate.policy", &**policy)
                .str("modelgate.rule", &**rule)
                .int("modelgate.refused", refused.len() as i64)
                .strs(
                    "modelgate.refused.reasons",
                    refused
                        .iter()
                        .take(MAX_REFUSALS)
                        .map(|(name, r)| format!("{name}: {}: {}", r.kind.as_str(), r.detail)),
                );
        }
        PolicyError::NoRule { policy } => {
            a.str("modelgate.policy", &**policy);
        }
        PolicyError::UnknownModel(_) | PolicyError::Withheld { .. } => {}
    }
}

/// The request's parameters, and its prompt where the decision allows it.
pub(super) fn asked(
    trace: &Trace,
    req: &crate::exchange::chat::ChatRequest,
    decision: &Decision,
    labels: &[(String, String)],
    caller: &crate::auth::Caller,
) {
    parameters(trace, req);
    content(trace, decision, labels, caller);
}

/// The request's parameters that the conventions name.
fn parameters(trace: &Trace, req: &crate::exchange::chat::ChatRequest) {
    traces::with(trace, |t| {
        t.attributes(|a| {
            if let Some(v) = req.temperature {
                a.float("gen_ai.request.temperature", v);
            }
            if let Some(v) = req.top_p {
                a.float("gen_ai.request.top_p", v);
            }
            a.bool("modelgate.stream", req.stream);
        });
    });
}

/// Keeps the request's body until the decision says whether its content goes on the span.
pub(super) fn keep(trace: &Trace, body: &Bytes) {
    traces::with(trace, |t| t.keep(body));
}

/// The prompt on the span, when the policy asks for content and the request is not
/// confidential.
fn content(
    trace: &Trace,
    decision: &Decision,
    labels: &[(String, String)],
    caller: &crate::auth::Caller,
) {
    let mut kept = None;
    traces::with(trace, |t| kept = t.take_kept());
    let Some(body) = kept else { return };
    if !decision.trace_content || confidential(labels, caller) {
        return;
    }
    let input = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            let messages = v.get("messages").or_else(|| v.get("input"))?;
            serde_json::to_string(messages).ok()
        });
    traces::with(trace, |t| {
        t.content = true;
        if let Some(input) = input {
            t.attributes(|a| put_content(a, "gen_ai.input.messages", input));
        }
    });
}

/// The answer's text on the span, when [`content`] let the prompt on it.
pub(super) fn output(trace: &Trace, body: &Bytes) {
    let Some(t) = trace else { return };
    let mut t = t.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !t.content {
        return;
    }
    let output = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let out = v
                .get("choices")
                .or_else(|| v.get("content"))
                .or_else(|| v.get("output"))?;
            serde_json::to_string(out).ok()
        });
    if let Some(output) = output {
        t.attributes(|a| put_content(a, "gen_ai.output.messages", output));
    }
}

/// A request labelled `data: confidential` (by itself or its caller): its content is never
/// exported, whatever a policy says.
fn confidential(labels: &[(String, String)], caller: &crate::auth::Caller) -> bool {
    labels
        .iter()
        .chain(caller.labels.iter())
        .any(|(k, v)| k == "data" && v == "confidential")
}

/// The request failed: the status and error on the span. A bad request's message is left
/// out: a parser's message can quote the request, which only `trace_content` may export.
pub(super) fn failed(trace: &Trace, e: &GatewayError) {
    traces::with(trace, |t| {
        t.attributes(|a| {
            a.int("http.response.status_code", i64::from(e.status().as_u16()));
        });
        let kind = e.kind();
        let message = match kind {
            crate::error::ErrorKind::BadRequest => String::new(),
            _ => e.to_string(),
        };
        t.fail(kind.as_str(), &message);
        t.finished();
    });
}

/// The answer's first content is ready for the client: the commit point, and the time to
/// first token on the answering attempt.
pub(super) fn committed(trace: &Trace, since_start: std::time::Duration) {
    traces::with(trace, |t| {
        let secs = since_start.as_secs_f64();
        t.event("modelgate.commit", |a| {
            a.float("gen_ai.server.time_to_first_token", secs);
        });
        // The answering attempt's own: from its start, not the request's.
        t.last_attempt(|a, took| {
            a.float("gen_ai.server.time_to_first_token", took.as_secs_f64());
        });
    });
}

/// The answer, settled: who served it, what it used and cost; a stream's end.
pub(super) fn served(
    trace: &Trace,
    d: &Deployment,
    usage: &Usage,
    cost: f64,
    attempts: usize,
    stream: Option<EndReason>,
) {
    traces::with(trace, |t| {
        t.attributes(|a| {
            a.str(
                "gen_ai.provider.name",
                traces::provider_name(d.endpoint.provider.as_str()),
            )
            .str("gen_ai.response.model", d.upstream_model.as_str())
            .int("gen_ai.usage.input_tokens", usage.prompt_tokens as i64)
            .int("gen_ai.usage.output_tokens", usage.completion_tokens as i64)
            .bool("modelgate.tokens_estimated", usage.estimated)
            .float("modelgate.cost_usd", cost)
            .str("modelgate.deployment", d.name.as_str())
            .str("modelgate.model", d.model.id.as_str())
            .str("modelgate.openness", d.model.openness.as_str())
            .str("modelgate.license", d.model.license.id.as_str())
            .int("modelgate.attempts", attempts as i64)
            .int("http.response.status_code", 200);
        });
        t.finished();
        if let Some(end) = stream {
            t.event("modelgate.stream_end", |a| {
                a.str("modelgate.end_reason", end.as_str());
            });
            if end != EndReason::Completed && end != EndReason::ClientGone {
                t.fail(
                    end.as_str(),
                    "the stream ended before its answer was complete",
                );
            }
        }
    });
}
