//! An OpenAI client's body forwarded to an OpenAI-compatible upstream as it came, its `model`
//! replaced by the deployment's: writing the request back (`wire`'s serialiser) costs a walk
//! over every message and its code on the way to each first token, for the same JSON.
//!
//! Forwarded only when it is the same JSON: the parse read the body whole (a field named twice
//! is refused at every level, so no reader finds another value in it than the policy saw), it
//! sent no field as `null` (written back, it is left out), no `stream_options` or `metadata`
//! (written back from what was read of them), and every message has its `content`. A
//! `"stream": false`, left out when written back, is the API's default and goes as it came.
//! `stream_options` is asked for here where it is absent, as written back; a gateway's output
//! cap, which writing back adds, is not, and such a request is written back. The property test
//! beside this module holds it to the written-back body, field by field.

use std::ops::Range;

use super::ChatRequest;

/// The client's body, and where its model's string (with its quotes) lies in it.
#[derive(Debug)]
pub(crate) struct Wire {
    body: Box<[u8]>,
    model: Range<usize>,
}

impl Wire {
    /// A copy of `body`: the request keeps it for its attempts, and a slice of the connection's
    /// read buffer would keep that buffer from being reused for as long.
    pub(super) fn new(body: &[u8], model: Range<usize>) -> Wire {
        Wire {
            body: body.into(),
            model,
        }
    }
}

/// What is asked for where the client did not set `stream_options`.
const ASK_USAGE: &[u8] = br#""stream_options":{"include_usage":true},"#;

impl ChatRequest {
    /// The client's body with `upstream_model` for its model, if it may be forwarded (see the
    /// module) and needs no `cap`.
    pub(super) fn spliced(
        &self,
        upstream_model: &str,
        ask_stream_usage: bool,
        cap: Option<(&'static str, u32)>,
    ) -> Option<Vec<u8>> {
        let w = self.wire.as_ref()?;
        if cap.is_some() && self.max_output_tokens().is_none() {
            return None;
        }
        let body = &w.body[..];
        // The object's opening brace: JSON allows only whitespace before it.
        let open = body.iter().position(|b| !b.is_ascii_whitespace())?;
        if body.get(open) != Some(&b'{') || w.model.start <= open || w.model.end > body.len() {
            return None;
        }
        let usage = self.stream && ask_stream_usage && self.stream_options.is_none();
        let mut out = Vec::with_capacity(body.len() + upstream_model.len() + ASK_USAGE.len());
        out.extend_from_slice(&body[..=open]);
        if usage {
            out.extend_from_slice(ASK_USAGE);
        }
        out.extend_from_slice(&body[open + 1..w.model.start]);
        // A string into a Vec cannot fail to be written.
        serde_json::to_writer(&mut out, upstream_model).ok()?;
        out.extend_from_slice(&body[w.model.end..]);
        Some(out)
    }
}

/// Whether the body sent for `req` is the JSON that writing it back gives, numbers compared
/// by value (`1` and `1.0` are one temperature) and `"stream": false` as if absent: what the
/// tests and the fuzzer hold [`ChatRequest::spliced`] to.
pub(crate) fn agrees(
    req: &ChatRequest,
    model: &str,
    ask: bool,
    cap: Option<(&'static str, u32)>,
) -> bool {
    fn value(b: &[u8]) -> Option<serde_json::Value> {
        let mut v: serde_json::Value = serde_json::from_slice(b).ok()?;
        let o = v.as_object_mut()?;
        if o.get("stream") == Some(&serde_json::Value::Bool(false)) {
            o.remove("stream");
        }
        Some(numbers_as_floats(v))
    }
    fn numbers_as_floats(v: serde_json::Value) -> serde_json::Value {
        use serde_json::Value;
        match v {
            Value::Number(n) => n
                .as_f64()
                .and_then(serde_json::Number::from_f64)
                .map_or(Value::Null, Value::Number),
            Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_floats).collect()),
            Value::Object(o) => Value::Object(
                o.into_iter()
                    .map(|(k, v)| (k, numbers_as_floats(v)))
                    .collect(),
            ),
            other => other,
        }
    }
    let sent = req.to_openai_body_capped(model, ask, cap);
    let written = req.written(model, ask, cap);
    value(&sent).is_some() && value(&sent) == value(&written)
}

#[cfg(test)]
mod tests;
