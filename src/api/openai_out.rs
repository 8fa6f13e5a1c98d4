//! ③ Answers in OpenAI's format: a whole `chat.completion`, and the encoder of
//! `chat.completion.chunk` streams.

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::ser::SerializeMap;

use crate::accounting::tokens::estimated_usage;
use crate::exchange::answer::{Completion, FinishReason, Piece};
use crate::exchange::encode::{ChunkHead, Encoder, End};
use crate::exchange::sse::{DONE, write_data};
use crate::exchange::{ErrorBody, Usage};

#[derive(Serialize)]
struct WireUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<CompletionDetails>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    modelgate_estimated: bool,
}

#[derive(Serialize)]
struct PromptDetails {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct CompletionDetails {
    reasoning_tokens: u64,
}

impl From<&Usage> for WireUsage {
    fn from(u: &Usage) -> Self {
        WireUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens + u.completion_tokens,
            prompt_tokens_details: (u.cached_tokens > 0).then_some(PromptDetails {
                cached_tokens: u.cached_tokens,
            }),
            completion_tokens_details: (u.reasoning_tokens > 0).then_some(CompletionDetails {
                reasoning_tokens: u.reasoning_tokens,
            }),
            modelgate_estimated: u.estimated,
        }
    }
}

#[derive(Serialize)]
struct WholeAnswer<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<WholeChoice<'a>>,
    usage: WireUsage,
}

#[derive(Serialize)]
struct WholeChoice<'a> {
    index: u32,
    message: AnswerMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AnswerMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tool_calls: Vec<WireToolCall<'a>>,
}

#[derive(Serialize)]
struct WireToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

/// A whole answer as OpenAI's `chat.completion`.
pub(crate) fn completion_json(c: &Completion) -> Bytes {
    let answer = WholeAnswer {
        id: &c.id,
        object: "chat.completion",
        created: c.created,
        model: &c.model,
        choices: c
            .choices
            .iter()
            .zip(0..)
            .map(|(choice, index)| WholeChoice {
                index,
                message: AnswerMessage {
                    role: "assistant",
                    content: choice.text.as_deref(),
                    refusal: None,
                    tool_calls: choice
                        .tool_calls
                        .iter()
                        .map(|t| WireToolCall {
                            id: &t.id,
                            kind: "function",
                            function: WireFunction {
                                name: &t.name,
                                arguments: &t.arguments,
                            },
                        })
                        .collect(),
                },
                logprobs: None,
                finish_reason: choice.finish.as_str(),
            })
            .collect(),
        usage: (&c.usage).into(),
    };
    Bytes::from(serde_json::to_vec(&answer).unwrap_or_default())
}

// === impl OpenAiEncoder ===

/// Writes `chat.completion.chunk` events.
pub(crate) struct OpenAiEncoder {
    id: String,
    model: String,
    created: u64,
    started: bool,
    wants_usage: bool,
    prompt_estimate: u64,
    output_limit: Option<u64>,
    /// The choice the pieces are for now, and the choices whose first chunk (the role) went
    /// out, as bits (`n` is at most 128).
    choice: u32,
    begun: u128,
}

impl OpenAiEncoder {
    /// `model` is what every chunk names as the model (the backend's own name never shows).
    pub(crate) fn new(
        wants_usage: bool,
        prompt_estimate: u64,
        output_limit: Option<u64>,
        model: &str,
    ) -> Self {
        OpenAiEncoder {
            id: String::new(),
            model: model.to_owned(),
            created: crate::base::unix_now(),
            started: false,
            wants_usage,
            prompt_estimate,
            output_limit,
            choice: 0,
            begun: 0,
        }
    }

    /// The first chunk of the current choice, once: OpenAI's streams open each choice with
    /// its role.
    fn begin(&mut self, out: &mut BytesMut) {
        let bit = 1u128.checked_shl(self.choice).unwrap_or(0);
        if bit == 0 || self.begun & bit != 0 {
            return;
        }
        self.begun |= bit;
        self.chunk(
            out,
            Delta {
                role: Some("assistant"),
                content: Some(""),
                ..Delta::default()
            },
            None,
        );
    }

    fn chunk(&self, out: &mut BytesMut, delta: Delta<'_>, finish: Option<FinishReason>) {
        let c = Chunk {
            id: &self.id,
            created: self.created,
            model: &self.model,
            choice: Some((self.choice, delta, finish)),
            usage: None,
        };
        write_data(out, &serde_json::to_vec(&c).unwrap_or_default());
    }
}

struct Chunk<'a> {
    id: &'a str,
    created: u64,
    model: &'a str,
    choice: Option<(u32, Delta<'a>, Option<FinishReason>)>,
    usage: Option<WireUsage>,
}

impl Serialize for Chunk<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Choice<'b> {
            index: u32,
            delta: &'b Delta<'b>,
            logprobs: Option<()>,
            finish_reason: Option<&'static str>,
        }
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("id", self.id)?;
        m.serialize_entry("object", "chat.completion.chunk")?;
        m.serialize_entry("created", &self.created)?;
        m.serialize_entry("model", self.model)?;
        match &self.choice {
            Some((index, delta, finish)) => m.serialize_entry(
                "choices",
                &[Choice {
                    index: *index,
                    delta,
                    logprobs: None,
                    finish_reason: finish.map(FinishReason::as_str),
                }],
            )?,
            None => m.serialize_entry("choices", &[(); 0])?,
        }
        if let Some(u) = &self.usage {
            m.serialize_entry("usage", u)?;
        }
        m.end()
    }
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[ToolCallDelta<'a>; 1]>,
}

#[derive(Serialize)]
struct ToolCallDelta<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: FunctionDelta<'a>,
}

#[derive(Serialize)]
struct FunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

impl Encoder for OpenAiEncoder {
    fn passthrough(&self) -> bool {
        true
    }

    fn raw(&mut self, data: &[u8], head: &ChunkHead<'_>, out: &mut BytesMut) {
        if !self.started {
            // Kept for a chunk the gateway may add at the end.
            if let Some(id) = head.id.and_then(|j| serde_json::from_str::<String>(j).ok()) {
                self.id = id;
            }
            if let Some(created) = head.created.and_then(|j| j.parse().ok()) {
                self.created = created;
            }
            self.started = true;
        }
        let at = head.model.clone();
        match at.and_then(|at| super::model_at(data, at, &self.model)) {
            Some(renamed) => write_data(out, &renamed),
            None => write_data(out, data),
        }
    }

    fn piece(&mut self, p: Piece<'_>, out: &mut BytesMut) {
        match p {
            Piece::Start { id, .. } => {
                self.id = if id.starts_with("chatcmpl") {
                    id.to_owned()
                } else {
                    format!("chatcmpl-{id}")
                };
                self.started = true;
                self.begin(out);
            }
            Piece::Choice(n) => {
                self.choice = n;
                self.begin(out);
            }
            Piece::Text(t) => self.chunk(
                out,
                Delta {
                    content: Some(t),
                    ..Delta::default()
                },
                None,
            ),
            Piece::ToolCall {
                index,
                id,
                name,
                arguments,
            } => self.chunk(
                out,
                Delta {
                    tool_calls: Some([ToolCallDelta {
                        index,
                        id,
                        kind: id.map(|_| "function"),
                        function: FunctionDelta { name, arguments },
                    }]),
                    ..Delta::default()
                },
                None,
            ),
            Piece::Finish(r) => self.chunk(out, Delta::default(), Some(r)),
            Piece::Usage(_) | Piece::StopSequence(_) => {}
        }
    }

    fn done(&mut self, end: End, out: &mut BytesMut) {
        if self.wants_usage && !end.usage_relayed {
            let usage = end.usage.unwrap_or_else(|| {
                estimated_usage(self.prompt_estimate, end.output_chars, self.output_limit)
            });
            let c = Chunk {
                id: if self.id.is_empty() {
                    "chatcmpl-modelgate"
                } else {
                    &self.id
                },
                created: self.created,
                model: &self.model,
                choice: None,
                usage: Some((&usage).into()),
            };
            write_data(out, &serde_json::to_vec(&c).unwrap_or_default());
        }
        out.extend_from_slice(DONE);
    }

    fn error(&mut self, e: &ErrorBody, out: &mut BytesMut) {
        write_data(out, &e.to_json());
    }
}
