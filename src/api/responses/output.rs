//! Answers in the Responses API's shape: the `response` object of a whole answer, and the
//! encoder of its typed event stream (`response.created` … `response.completed`, each event
//! numbered), which ends in `response.failed` or `response.incomplete` when the answer did not
//! complete, never in something that looks complete.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::accounting::tokens::estimated_usage;
use crate::exchange::answer::{Completion, FinishReason, Piece};
use crate::exchange::encode::{Encoder, End};
use crate::exchange::{ErrorBody, Usage};

use super::item_id;
use super::tools::Namespaced;

/// What every shape of one response shares: its id, when it was created, the model that
/// answers, and the request's settings the object repeats.
#[derive(Clone, Debug)]
pub(crate) struct Head {
    pub(crate) id: String,
    pub(crate) created_at: u64,
    pub(crate) model: String,
    pub(crate) echo: Map<String, Value>,
    /// The functions of namespaces, to name their calls back.
    pub(crate) namespaced: Arc<Namespaced>,
}

/// A response that completed: its output items and the whole object, for the store.
pub(crate) struct Finished {
    pub(crate) output: Vec<Value>,
    pub(crate) response: Value,
}

/// Told once when a response completes (not when it fails).
pub(crate) type OnFinished = Box<dyn FnOnce(Finished) + Send>;

/// `usage` as the Responses API reports it.
fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

/// The status a finish reason gives a response, and why it is incomplete if it is.
fn status_of(finish: FinishReason) -> (&'static str, Value) {
    match finish {
        FinishReason::Length => ("incomplete", json!({"reason": "max_output_tokens"})),
        FinishReason::ContentFilter => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

impl Head {
    /// The `response` object with `status`, its output so far, and what is known at the end.
    fn object(
        &self,
        status: &str,
        output: &[Value],
        usage: Option<&Usage>,
        error: Value,
        incomplete: Value,
    ) -> Value {
        let mut m = self.echo.clone();
        m.insert("id".into(), json!(self.id));
        m.insert("object".into(), json!("response"));
        m.insert("created_at".into(), json!(self.created_at));
        m.insert("status".into(), json!(status));
        let done = matches!(status, "completed" | "incomplete");
        m.insert(
            "completed_at".into(),
            if done {
                json!(crate::base::unix_now())
            } else {
                Value::Null
            },
        );
        m.insert("error".into(), error);
        m.insert("incomplete_details".into(), incomplete);
        m.insert("model".into(), json!(self.model));
        m.insert("output".into(), Value::Array(output.to_vec()));
        m.insert("usage".into(), usage.map_or(Value::Null, usage_json));
        Value::Object(m)
    }
}

/// A message output item holding `text`.
fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
}

impl Head {
    /// A function call output item; the call of a namespace's function names its namespace.
    fn call_item(
        &self,
        id: &str,
        call_id: &str,
        name: &str,
        arguments: &str,
        status: &str,
    ) -> Value {
        let mut item = json!({"type": "function_call", "id": id, "call_id": call_id, "name": name,
               "arguments": arguments, "status": status});
        if let Some((_, ns, own)) = self.namespaced.iter().find(|(flat, ..)| flat == name) {
            item["namespace"] = json!(ns);
            item["name"] = json!(own);
        }
        item
    }
}

/// A tool call's id, or a fresh one when the upstream gave none.
fn call_id(id: &str) -> String {
    if id.is_empty() {
        item_id("call")
    } else {
        id.to_owned()
    }
}

/// A whole answer as a `response` object; tells `finished` when it is one to keep.
pub(crate) fn whole(c: &Completion, head: &Head, finished: Option<OnFinished>) -> Bytes {
    let first = c.first();
    let mut output = Vec::new();
    if let Some(t) = first.text.as_deref().filter(|t| !t.is_empty()) {
        output.push(message_item(&item_id("msg"), t, "completed"));
    }
    for t in &first.tool_calls {
        output.push(head.call_item(
            &item_id("fc"),
            &call_id(&t.id),
            &t.name,
            &t.arguments,
            "completed",
        ));
    }
    let (status, incomplete) = status_of(first.finish);
    let response = head.object(status, &output, Some(&c.usage), Value::Null, incomplete);
    let bytes = Bytes::from(serde_json::to_vec(&response).unwrap_or_default());
    if let Some(f) = finished {
        f(Finished { output, response });
    }
    bytes
}

/// A whole answer of OpenAI's Responses API as this gateway's response object: OpenAI's output
/// items as they are (reasoning items too), under this response's id and settings.
pub(crate) fn native_whole(
    body: &[u8],
    head: &Head,
    finished: Option<OnFinished>,
) -> Result<Bytes, crate::adapters::AdapterError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| crate::adapters::AdapterError::InvalidResponse(e.to_string()))?;
    let output = v
        .get("output")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let usage = v
        .get("usage")
        .and_then(crate::adapters::openai_responses::usage_of);
    let status = match v.get("status").and_then(Value::as_str) {
        Some("incomplete") => "incomplete",
        _ => "completed",
    };
    let incomplete = v.get("incomplete_details").cloned().unwrap_or(Value::Null);
    let response = head.object(status, &output, usage.as_ref(), Value::Null, incomplete);
    let bytes = Bytes::from(serde_json::to_vec(&response).unwrap_or_default());
    if let Some(f) = finished {
        f(Finished { output, response });
    }
    Ok(bytes)
}

// === impl ResponsesEncoder ===

/// The item being written.
enum Open {
    Message {
        index: usize,
        id: String,
        text: String,
    },
    Call {
        index: usize,
        tool: u32,
        id: String,
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// Writes the Responses API's event stream.
pub(crate) struct ResponsesEncoder {
    head: Head,
    sequence: u64,
    started: bool,
    open: Option<Open>,
    /// Finished output items, in order.
    output: Vec<Value>,
    finish: Option<FinishReason>,
    prompt_estimate: u64,
    output_limit: Option<u64>,
    other_choice: bool,
    finished: Option<OnFinished>,
}

impl ResponsesEncoder {
    pub(crate) fn new(
        head: Head,
        prompt_estimate: u64,
        output_limit: Option<u64>,
        finished: Option<OnFinished>,
    ) -> Self {
        ResponsesEncoder {
            head,
            sequence: 0,
            started: false,
            open: None,
            output: Vec::new(),
            finish: None,
            prompt_estimate,
            output_limit,
            other_choice: false,
            finished,
        }
    }

    fn event(&mut self, out: &mut BytesMut, kind: &str, data: &impl Serialize) {
        write_event(&mut self.sequence, out, kind, data);
    }

    fn start(&mut self, out: &mut BytesMut) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self
            .head
            .object("in_progress", &[], None, Value::Null, Value::Null);
        for kind in ["response.created", "response.in_progress"] {
            self.event(
                out,
                kind,
                &WithResponse {
                    response: &response,
                },
            );
        }
    }

    /// Finishes the open item: its `.done` events, and it joins the output.
    fn close(&mut self, out: &mut BytesMut) {
        let Some(open) = self.open.take() else {
            return;
        };
        let (index, item) = match open {
            Open::Message { index, id, text } => {
                let part =
                    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
                let at = json!({"item_id": id, "output_index": index, "content_index": 0});
                let mut done = obj(at.clone());
                done.insert("text".into(), json!(text));
                done.insert("logprobs".into(), json!([]));
                self.event(out, "response.output_text.done", &done);
                let mut part_done = obj(at);
                part_done.insert("part".into(), part);
                self.event(out, "response.content_part.done", &part_done);
                (index, message_item(&id, &text, "completed"))
            }
            Open::Call {
                index,
                id,
                call_id,
                name,
                arguments,
                ..
            } => {
                self.event(
                    out,
                    "response.function_call_arguments.done",
                    &json!({"item_id": id, "output_index": index, "name": name, "arguments": arguments}),
                );
                (
                    index,
                    self.head
                        .call_item(&id, &call_id, &name, &arguments, "completed"),
                )
            }
        };
        self.event(
            out,
            "response.output_item.done",
            &json!({"output_index": index, "item": item}),
        );
        self.output.push(item);
    }

    fn text(&mut self, t: &str, out: &mut BytesMut) {
        self.start(out);
        if !matches!(self.open, Some(Open::Message { .. })) {
            self.close(out);
            let index = self.output.len();
            let id = item_id("msg");
            self.event(
                out,
                "response.output_item.added",
                &json!({"output_index": index, "item": {"type": "message", "id": id,
                    "status": "in_progress", "role": "assistant", "content": []}}),
            );
            self.event(
                out,
                "response.content_part.added",
                &json!({"item_id": id, "output_index": index, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
            );
            self.open = Some(Open::Message {
                index,
                id,
                text: String::new(),
            });
        }
        let data = match &mut self.open {
            Some(Open::Message { index, id, text }) => {
                text.push_str(t);
                TextDelta {
                    item_id: id,
                    output_index: *index,
                    content_index: 0,
                    delta: t,
                    logprobs: [],
                }
            }
            _ => return,
        };
        write_event(&mut self.sequence, out, "response.output_text.delta", &data);
    }

    fn call(
        &mut self,
        tool: u32,
        id: Option<&str>,
        name: Option<&str>,
        args: &str,
        out: &mut BytesMut,
    ) {
        self.start(out);
        let same = matches!(&self.open, Some(Open::Call { tool: t, .. }) if *t == tool);
        if !same {
            self.close(out);
            let index = self.output.len();
            let (item, call_id, name) =
                (item_id("fc"), call_id(id.unwrap_or("")), name.unwrap_or(""));
            self.event(
                out,
                "response.output_item.added",
                &json!({"output_index": index,
                    "item": self.head.call_item(&item, &call_id, name, "", "in_progress")}),
            );
            self.open = Some(Open::Call {
                index,
                tool,
                id: item,
                call_id,
                name: name.to_owned(),
                arguments: String::new(),
            });
        }
        if args.is_empty() {
            return;
        }
        let data = match &mut self.open {
            Some(Open::Call {
                index,
                id,
                arguments,
                ..
            }) => {
                arguments.push_str(args);
                ArgumentsDelta {
                    item_id: id,
                    output_index: *index,
                    delta: args,
                }
            }
            _ => return,
        };
        write_event(
            &mut self.sequence,
            out,
            "response.function_call_arguments.delta",
            &data,
        );
    }
}

/// One event: `data`'s fields (an object without `type` and `sequence_number`) followed by
/// those two, written straight into `out`. A text delta is one of these per token: built
/// as a map of values and then serialized, it cost several times what writing it does.
fn write_event(sequence: &mut u64, out: &mut BytesMut, kind: &str, data: &impl Serialize) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    let start = out.len();
    // Serializing into memory cannot fail (no map here has keys JSON lacks).
    let _ = serde_json::to_writer((&mut *out).writer(), data);
    if out.len() > start && out.ends_with(b"}") {
        out.truncate(out.len() - 1);
    } else {
        out.truncate(start);
        out.extend_from_slice(b"{");
    }
    if !out.ends_with(b"{") {
        out.extend_from_slice(b",");
    }
    out.extend_from_slice(b"\"sequence_number\":");
    let _ = serde_json::to_writer((&mut *out).writer(), &*sequence);
    out.extend_from_slice(b",\"type\":");
    let _ = serde_json::to_writer((&mut *out).writer(), kind);
    out.extend_from_slice(b"}\n\n");
    *sequence += 1;
}

/// An event type as OpenAI names them (`response.output_text.delta`): lower-case words, digits,
/// dots and underscores.
fn is_event_name(kind: &str) -> bool {
    !kind.is_empty()
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
}

/// An event that carries the whole `response` object.
#[derive(Serialize)]
struct WithResponse<'a> {
    response: &'a Value,
}

/// `response.output_text.delta`'s fields.
#[derive(Serialize)]
struct TextDelta<'a> {
    item_id: &'a str,
    output_index: usize,
    content_index: u32,
    delta: &'a str,
    logprobs: [(); 0],
}

/// `response.function_call_arguments.delta`'s fields.
#[derive(Serialize)]
struct ArgumentsDelta<'a> {
    item_id: &'a str,
    output_index: usize,
    delta: &'a str,
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

impl Encoder for ResponsesEncoder {
    fn piece(&mut self, p: Piece<'_>, out: &mut BytesMut) {
        if self.other_choice && p.of_a_choice() {
            return;
        }
        match p {
            Piece::Start { .. } => self.start(out),
            Piece::Choice(n) => self.other_choice = n != 0,
            Piece::Text(t) => self.text(t, out),
            Piece::ToolCall {
                index,
                id,
                name,
                arguments,
            } => self.call(index, id, name, arguments, out),
            Piece::Finish(r) => self.finish = Some(r),
            Piece::StopSequence(_) | Piece::Usage(_) => {}
        }
    }

    fn done(&mut self, end: End, out: &mut BytesMut) {
        self.start(out);
        self.close(out);
        let usage = end.usage.unwrap_or_else(|| {
            estimated_usage(self.prompt_estimate, end.output_chars, self.output_limit)
        });
        let (status, incomplete) = status_of(self.finish.unwrap_or(FinishReason::Stop));
        let response =
            self.head
                .object(status, &self.output, Some(&usage), Value::Null, incomplete);
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.event(
            out,
            kind,
            &WithResponse {
                response: &response,
            },
        );
        if let Some(f) = self.finished.take() {
            f(Finished {
                output: std::mem::take(&mut self.output),
                response,
            });
        }
    }

    fn native(&mut self, event: &Value, out: &mut BytesMut) {
        self.start(out);
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            // Already said, under this response's id.
            "response.created" | "response.in_progress" | "response.queued" => {}
            // Said by `done`, with this response's id, once the relay has its usage.
            "response.completed" | "response.incomplete" => {
                if let Some(output) = event.pointer("/response/output").and_then(Value::as_array) {
                    self.output.clone_from(output);
                }
                self.finish = Some(
                    match event
                        .pointer("/response/incomplete_details/reason")
                        .and_then(Value::as_str)
                    {
                        Some("content_filter") => FinishReason::ContentFilter,
                        Some(_) => FinishReason::Length,
                        None => FinishReason::Stop,
                    },
                );
            }
            // Written onto the SSE `event:` line: a name that could end that line (a JSON string
            // can hold an escaped newline) or is empty is not an event a client can read.
            _ if !is_event_name(kind) => {}
            _ => {
                if kind == "response.output_item.done"
                    && let Some(item) = event.get("item")
                {
                    self.output.push(item.clone());
                }
                let mut data = obj(event.clone());
                data.remove("sequence_number");
                data.remove("type");
                self.event(out, kind, &data);
            }
        }
    }

    fn error(&mut self, e: &ErrorBody, out: &mut BytesMut) {
        self.start(out);
        // The open item stays unfinished: what it holds so far is not an answer.
        self.open = None;
        let code = e.code.as_deref().unwrap_or("server_error");
        self.event(
            out,
            "error",
            &json!({"code": code, "message": e.message, "param": e.param}),
        );
        let error = json!({"code": code, "message": e.message});
        let response = self
            .head
            .object("failed", &self.output, None, error, Value::Null);
        self.event(
            out,
            "response.failed",
            &WithResponse {
                response: &response,
            },
        );
    }
}

#[cfg(test)]
mod tests;
