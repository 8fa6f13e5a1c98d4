//! OpenAI-compatible streams: relayed as they are to OpenAI-format clients (with the usage
//! chunk read, in-band errors caught, and the chunk the gateway asked for hidden), translated
//! into pieces for clients of another format.

use bytes::BytesMut;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use super::super::{Flow, StreamFault, StreamTranslator};
use super::error_message;
use super::usage::WireUsage;
use crate::exchange::Usage;
use crate::exchange::answer::{FinishReason, Piece};
use crate::exchange::encode::{ChunkHead, Encoder};
use crate::exchange::sse::SseEvent;

pub(super) struct OpenAiStream {
    /// We asked for the usage chunk; the client did not, so it must not see it.
    strip_usage_chunk: bool,
    usage: Option<Usage>,
    usage_relayed: bool,
    chars: usize,
    committed: bool,
    /// For clients of another format: the answer has begun, and the choice its last piece
    /// was for.
    started: bool,
    choice: u32,
}

impl OpenAiStream {
    /// `strip_usage_chunk`: the gateway asked for the usage chunk and the client did not.
    pub(super) fn new(strip_usage_chunk: bool) -> OpenAiStream {
        OpenAiStream {
            strip_usage_chunk,
            usage: None,
            usage_relayed: false,
            chars: 0,
            committed: false,
            started: false,
            choice: 0,
        }
    }
}

/// What a chunk is read for on every event: read from the event's bytes without a copy of
/// anything in it (no list of choices, no text) and summed as it is read. Its `model`, `id` and
/// `created` are found in the same pass, for the encoder that relays the chunk (which renames
/// the model): one reading of each chunk, not one here and one there.
#[derive(Deserialize)]
struct ChunkProbe<'a> {
    #[serde(default)]
    choices: Option<ChoicesProbe>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default, borrow)]
    error: Option<&'a RawValue>,
    #[serde(default, borrow)]
    model: Option<&'a RawValue>,
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    created: Option<&'a RawValue>,
}

impl<'a> ChunkProbe<'a> {
    /// What the encoder is told of the chunk `data` this was read from.
    fn head(&self, data: &'a [u8]) -> ChunkHead<'a> {
        ChunkHead {
            model: self.model.and_then(|m| within(data, m.get())),
            id: self.id.map(RawValue::get),
            created: self.created.map(RawValue::get),
        }
    }
}

/// Where `part`, a slice of `data`, lies in it.
fn within(data: &[u8], part: &str) -> Option<std::ops::Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
    let end = start + part.len();
    (end <= data.len()).then_some(start..end)
}

/// The chunk's choices: how many, the characters of text they carry, and whether any carries
/// text or a tool call (the answer has begun).
#[derive(Default)]
struct ChoicesProbe {
    count: usize,
    chars: usize,
    committed: bool,
}

impl<'de> Deserialize<'de> for ChoicesProbe {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = ChoicesProbe;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of choices")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<ChoicesProbe, A::Error> {
                let mut p = ChoicesProbe::default();
                while let Some(c) = seq.next_element::<ChoiceProbe<'de>>()? {
                    p.count += 1;
                    if let Some(d) = c.delta {
                        let text = d.content.map_or(0, content_len)
                            + d.reasoning_content.map_or(0, content_len);
                        p.chars += text;
                        p.committed |= text > 0 || d.tool_calls.is_some();
                    }
                }
                Ok(p)
            }
        }
        d.deserialize_seq(V)
    }
}

#[derive(Deserialize)]
struct ChoiceProbe<'a> {
    #[serde(default, borrow)]
    delta: Option<DeltaProbe<'a>>,
}

#[derive(Deserialize)]
struct DeltaProbe<'a> {
    #[serde(default, borrow)]
    content: Option<&'a RawValue>,
    #[serde(default, borrow)]
    reasoning_content: Option<&'a RawValue>,
    #[serde(default)]
    tool_calls: Option<IgnoredAny>,
}

/// A chunk read whole, for clients of another format.
#[derive(Deserialize)]
struct FullChunk {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<FullChoice>,
}

#[derive(Deserialize)]
struct FullChoice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: FullDelta,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct FullDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<FullToolCall>,
}

#[derive(Deserialize)]
struct FullToolCall {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FullFunction>,
}

#[derive(Deserialize)]
struct FullFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

impl OpenAiStream {
    /// The chunk as pieces, for an encoder that cannot take OpenAI chunks as they are.
    fn pieces(
        &mut self,
        data: &[u8],
        enc: &mut dyn Encoder,
        out: &mut BytesMut,
    ) -> Result<(), StreamFault> {
        let chunk: FullChunk =
            crate::base::json(data).map_err(|_| StreamFault::invalid("chunk"))?;
        if !self.started {
            self.started = true;
            enc.piece(
                Piece::Start {
                    id: chunk.id.as_deref().unwrap_or("modelgate"),
                    model: chunk.model.as_deref().unwrap_or(""),
                },
                out,
            );
        }
        for c in &chunk.choices {
            if c.index != self.choice {
                self.choice = c.index;
                enc.piece(Piece::Choice(c.index), out);
            }
            if let Some(t) = c.delta.content.as_deref().filter(|t| !t.is_empty()) {
                enc.piece(Piece::Text(t), out);
            }
            for tc in &c.delta.tool_calls {
                let f = tc.function.as_ref();
                enc.piece(
                    Piece::ToolCall {
                        index: tc.index,
                        id: tc.id.as_deref(),
                        name: f.and_then(|f| f.name.as_deref()),
                        arguments: f.and_then(|f| f.arguments.as_deref()).unwrap_or(""),
                    },
                    out,
                );
            }
            if let Some(r) = &c.finish_reason {
                enc.piece(Piece::Finish(FinishReason::from_openai(r)), out);
            }
        }
        Ok(())
    }
}

impl StreamTranslator for OpenAiStream {
    fn event(
        &mut self,
        ev: &SseEvent,
        enc: &mut dyn Encoder,
        out: &mut BytesMut,
    ) -> Result<Flow, StreamFault> {
        if ev.data.as_ref() == b"[DONE]" {
            return Ok(Flow::Done);
        }
        let probe: ChunkProbe =
            crate::base::json(&ev.data).map_err(|_| StreamFault::invalid("chunk"))?;
        let head = probe.head(&ev.data);
        if let Some(err) = probe.error {
            let message = error_message(format!("{{\"error\":{}}}", err.get()).as_bytes())
                .unwrap_or_else(|| "upstream reported an error".into());
            return Err(StreamFault::reported(message, "upstream_error"));
        }
        let choices = probe.choices.unwrap_or_default();
        self.chars += choices.chars;
        self.committed |= choices.committed;
        let usage_only = choices.count == 0;
        if let Some(u) = probe.usage {
            self.usage = Some(u.into());
            if usage_only && (self.strip_usage_chunk || !enc.passthrough()) {
                return Ok(Flow::More);
            }
            self.committed = true;
            if usage_only {
                self.usage_relayed = true;
            }
        }
        if enc.passthrough() {
            enc.raw(&ev.data, &head, out);
        } else {
            self.pieces(&ev.data, enc, out)?;
        }
        Ok(Flow::More)
    }

    fn usage_relayed(&self) -> bool {
        self.usage_relayed
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn output_chars(&self) -> usize {
        self.chars
    }

    fn committed(&self) -> bool {
        self.committed
    }
}

/// Length of a raw JSON string value without its quotes (0 for `null`).
fn content_len(raw: &RawValue) -> usize {
    let s = raw.get();
    if s.starts_with('"') {
        s.len().saturating_sub(2)
    } else {
        0
    }
}
