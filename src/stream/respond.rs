//! ⑦ Respond: turn the served answer into the client's response, JSON or SSE, with the headers
//! that name the decision.

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Response, StatusCode, header};

use super::body::ResponseBody;
use crate::config::Deployment;
use crate::exchange::answer::{Completion, Piece};
use crate::exchange::encode::{Encoder, End};
use crate::exchange::headers::{X_COST, X_LICENSE_NOTICE, X_POLICY, X_RULE};
use crate::policy::Decision;
use crate::upstream::relay::Relay;

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, body: Bytes) -> Response<ResponseBody> {
    let mut res = Response::new(ResponseBody::full(body));
    *res.status_mut() = status;
    // Room for the headers an answer gets (deployment, policy, cost, request id) without
    // the map growing twice on the way.
    *res.headers_mut() = http::HeaderMap::with_capacity(16);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// A whole JSON answer.
pub(crate) fn json(body: Bytes, d: &Deployment, decision: &Decision) -> Response<ResponseBody> {
    with_head(ResponseBody::full(body), head(d, decision, false))
}

/// The headers of an answer from `d` under `decision`, streamed (`sse`) or whole: made apart
/// from the answer, so that they can be made before it comes.
pub(crate) fn head(d: &Deployment, decision: &Decision, sse: bool) -> http::HeaderMap {
    let made = if sse {
        &d.response_headers.sse
    } else {
        &d.response_headers.json
    };
    let mut h = with_room(made);
    decorate(&mut h, d, decision);
    h
}

/// An answer with the headers [`head`] made.
pub(crate) fn with_head(body: ResponseBody, head: http::HeaderMap) -> Response<ResponseBody> {
    let mut res = Response::new(body);
    *res.headers_mut() = head;
    res
}

/// A streamed answer relayed from upstream, with its [`head`].
pub(crate) fn relay(relay: Box<Relay>, head: http::HeaderMap) -> Response<ResponseBody> {
    with_head(ResponseBody::Relay(relay), head)
}

/// A whole answer made locally, streamed word by word in the client's format.
pub(crate) fn local_stream(
    c: &Completion,
    enc: &mut dyn Encoder,
) -> std::collections::VecDeque<Bytes> {
    let mut frames = std::collections::VecDeque::new();
    let mut out = BytesMut::new();
    enc.piece(
        Piece::Start {
            id: &c.id,
            model: &c.model,
        },
        &mut out,
    );
    frames.push_back(out.split().freeze());
    let mut output_chars = 0;
    for (choice, n) in c.choices.iter().zip(0..) {
        if n > 0 {
            enc.piece(Piece::Choice(n), &mut out);
        }
        if let Some(text) = &choice.text {
            output_chars += text.len();
            for word in text.split_inclusive(' ') {
                enc.piece(Piece::Text(word), &mut out);
                frames.push_back(out.split().freeze());
            }
        }
        for (t, index) in choice.tool_calls.iter().zip(0..) {
            enc.piece(
                Piece::ToolCall {
                    index,
                    id: Some(&t.id),
                    name: Some(&t.name),
                    arguments: &t.arguments,
                },
                &mut out,
            );
        }
        if let Some(s) = &choice.stop_sequence {
            enc.piece(Piece::StopSequence(s), &mut out);
        }
        enc.piece(Piece::Finish(choice.finish), &mut out);
    }
    enc.done(
        End {
            usage: Some(c.usage),
            usage_relayed: false,
            output_chars,
        },
        &mut out,
    );
    frames.push_back(out.split().freeze());
    frames
}

/// A stream of frames made locally.
pub(crate) fn frames(
    frames: std::collections::VecDeque<Bytes>,
    d: &Deployment,
    decision: &Decision,
) -> Response<ResponseBody> {
    sse(ResponseBody::Frames(frames), d, decision)
}

fn sse(body: ResponseBody, d: &Deployment, decision: &Decision) -> Response<ResponseBody> {
    with_head(body, head(d, decision, true))
}

/// Headers added to an answer's after its deployment's: policy, rule, license notice, cost and
/// request id.
const ADDED: usize = 5;

/// The deployment's headers in a map with room for the ones added after. A clone of the made
/// map has room for what it holds only: the first insert then allocates the entries anew and
/// copies them (a kilobyte, on every answer).
fn with_room(made: &http::HeaderMap) -> http::HeaderMap {
    let mut h = http::HeaderMap::with_capacity(made.len() + ADDED);
    for (name, value) in made {
        h.append(name.clone(), value.clone());
    }
    h
}

/// The headers that name the decision, after the deployment's (made with it).
fn decorate(h: &mut http::HeaderMap, d: &Deployment, decision: &Decision) {
    h.insert(X_POLICY.clone(), decision.policy_header.clone());
    if let Some(v) = &decision.rule_header {
        h.insert(X_RULE.clone(), v.clone());
    }
    // A deployment with `notices` has it among its own headers already.
    if decision.notices
        && let Some(v) = &d.model.license.notice_header
    {
        h.insert(X_LICENSE_NOTICE.clone(), v.clone());
    }
}

/// Adds what the answer cost, in USD.
pub(crate) fn cost(res: &mut Response<ResponseBody>, usd: f64) {
    res.headers_mut()
        .insert(X_COST.clone(), crate::accounting::cost::header(usd));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answers_headers_are_its_deployments_with_room_for_the_ones_added_after() {
        let mut made = http::HeaderMap::new();
        made.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        for (name, value) in [("x-modelgate-model", "m"), ("x-modelgate-deployment", "d")] {
            made.insert(
                http::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        let h = with_room(&made);
        assert_eq!(h, made);
        let order = |m: &http::HeaderMap| m.keys().map(|k| k.to_string()).collect::<Vec<_>>();
        assert_eq!(order(&h), order(&made));
        assert!(h.capacity() >= made.len() + ADDED);
    }
}
