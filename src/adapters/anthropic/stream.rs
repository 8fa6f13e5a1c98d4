//! Messages event stream → pieces. Anthropic counts content blocks (text 0, tool 1, …); OpenAI
//! counts tool calls only, so each `tool_use` block gets the next tool-call index. `ping` is
//! skipped, unknown events are ignored, an `error` event ends the stream with an error.

use bytes::BytesMut;
use serde::Deserialize;
use serde_json::Value;

use super::response::{WireUsage, finish_reason};
use crate::adapters::{Flow, StreamFault, StreamTranslator};
use crate::exchange::Usage;
use crate::exchange::answer::Piece;
use crate::exchange::encode::Encoder;
use crate::exchange::sse::SseEvent;

#[derive(Default)]
pub(crate) struct AnthropicStream {
    usage: WireUsage,
    saw_usage: bool,
    /// Tool-call index of each tool_use block, by block index.
    tools: Vec<(u64, u32)>,
    chars: usize,
    committed: bool,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: Option<Value>,
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    content_block: Option<Value>,
    #[serde(default)]
    delta: Option<Value>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    error: Option<Value>,
}

impl AnthropicStream {
    /// A content block's delta: text, or a tool call's arguments (of content block `block`).
    fn delta(&mut self, block: u64, delta: &Value, enc: &mut dyn Encoder, out: &mut BytesMut) {
        match delta.get("type").and_then(Value::as_str) {
            Some("text_delta") => {
                let t = delta.get("text").and_then(Value::as_str).unwrap_or("");
                if !t.is_empty() {
                    self.chars += t.len();
                    self.committed = true;
                    enc.piece(Piece::Text(t), out);
                }
            }
            Some("input_json_delta") => {
                let part = delta
                    .get("partial_json")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if let Some((_, index)) = self.tools.iter().find(|(b, _)| *b == block) {
                    self.chars += part.len();
                    if !part.is_empty() {
                        enc.piece(
                            Piece::ToolCall {
                                index: *index,
                                id: None,
                                name: None,
                                arguments: part,
                            },
                            out,
                        );
                    }
                }
            }
            // Reasoning is not carried to OpenAI clients.
            _ => {}
        }
    }
}

impl StreamTranslator for AnthropicStream {
    fn event(
        &mut self,
        ev: &SseEvent,
        enc: &mut dyn Encoder,
        out: &mut BytesMut,
    ) -> Result<Flow, StreamFault> {
        let e: Event = crate::base::json(&ev.data).map_err(|_| StreamFault::invalid("event"))?;
        match e.kind.as_str() {
            "message_start" => {
                let m = e.message.unwrap_or(Value::Null);
                if let Some(u) = m
                    .get("usage")
                    .cloned()
                    .and_then(|u| serde_json::from_value(u).ok())
                {
                    self.usage.merge(u);
                    self.saw_usage = true;
                    // The real input count, for the client's own message_start.
                    enc.piece(Piece::Usage(self.usage.to_usage()), out);
                }
                enc.piece(
                    Piece::Start {
                        id: m.get("id").and_then(Value::as_str).unwrap_or("msg"),
                        model: m.get("model").and_then(Value::as_str).unwrap_or(""),
                    },
                    out,
                );
            }
            "content_block_start" => {
                let block = e.content_block.unwrap_or(Value::Null);
                if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let index = u32::try_from(self.tools.len()).unwrap_or(u32::MAX);
                    self.tools.push((e.index.unwrap_or(0), index));
                    self.committed = true;
                    enc.piece(
                        Piece::ToolCall {
                            index,
                            id: block.get("id").and_then(Value::as_str),
                            name: block.get("name").and_then(Value::as_str),
                            arguments: "",
                        },
                        out,
                    );
                }
            }
            "content_block_delta" => {
                let delta = e.delta.unwrap_or(Value::Null);
                self.delta(e.index.unwrap_or(0), &delta, enc, out);
            }
            "message_delta" => {
                if let Some(u) = e.usage {
                    self.usage.merge(u);
                    self.saw_usage = true;
                }
                if let Some(seq) = e
                    .delta
                    .as_ref()
                    .and_then(|d| d.get("stop_sequence"))
                    .and_then(Value::as_str)
                {
                    enc.piece(Piece::StopSequence(seq), out);
                }
                if let Some(stop) = e
                    .delta
                    .as_ref()
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    enc.piece(Piece::Finish(finish_reason(stop)), out);
                }
            }
            "message_stop" => return Ok(Flow::Done),
            "error" => {
                let err = e.error.unwrap_or(Value::Null);
                let message = err.get("message").and_then(Value::as_str).map_or_else(
                    || "upstream reported an error".to_owned(),
                    // Raw: the relay cleans every stream error with the deployment's masks.
                    str::to_owned,
                );
                let code = err
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("api_error");
                return Err(StreamFault::reported(
                    message,
                    if code == "overloaded_error" {
                        "upstream_overloaded"
                    } else {
                        "upstream_error"
                    },
                ));
            }
            // ping, content_block_stop and event types added later
            _ => {}
        }
        Ok(Flow::More)
    }

    fn usage(&self) -> Option<Usage> {
        self.saw_usage.then(|| self.usage.to_usage())
    }

    fn output_chars(&self) -> usize {
        self.chars
    }

    fn committed(&self) -> bool {
        self.committed
    }
}
