//! OpenAI-compatible streams: relayed as they are to OpenAI-format clients (with the usage
//! chunk read, in-band errors caught, and the chunk the gateway asked for hidden), translated
//! into pieces for clients of another format.

use std::ops::Range;

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
use crate::exchange::scan::{self, Scanner};
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

/// What a chunk is read for on every event, without a copy of anything in it (no list of
/// choices, no text): its choices summed, its usage and in-band error, and the `model`, `id`
/// and `created` the encoder that relays it needs (it renames the model). One reading of each
/// chunk, not one here and one there.
struct Probe<'a> {
    choices: ChoicesProbe,
    usage: Option<Usage>,
    error: Option<&'a str>,
    head: ChunkHead<'a>,
}

/// The chunk's choices: how many, the characters of text they carry, and whether any carries
/// text or a tool call (the answer has begun).
#[derive(Default)]
struct ChoicesProbe {
    count: usize,
    chars: usize,
    committed: bool,
}

/// Reads the chunk `data`: in one pass of [`scan`] that checks it, or, when that pass cannot
/// vouch for the text, with serde's derive, which gives the answer, or the error, it always
/// gave. The pass is only somewhat cheaper: on the profiled build about 330 instructions fewer
/// a chunk (of some 2,800) and 50 fewer lines of code to a stream's first token.
fn probe(data: &[u8]) -> Result<Probe<'_>, StreamFault> {
    match std::str::from_utf8(data).ok().and_then(scanned) {
        Some(p) => Ok(p),
        None => derived(data),
    }
}

/// The chunk read by serde's derive.
fn derived(data: &[u8]) -> Result<Probe<'_>, StreamFault> {
    let p: ChunkProbe = crate::base::json(data).map_err(|_| StreamFault::invalid("chunk"))?;
    Ok(Probe {
        head: p.head(data),
        choices: p.choices.unwrap_or_default(),
        usage: p.usage.map(Usage::from),
        error: p.error.map(RawValue::get),
    })
}

/// The chunk read by [`scan`], as the derive reads it (`null` counts as absent).
fn scanned(text: &str) -> Option<Probe<'_>> {
    let mut choices = ChoicesProbe::default();
    let names = ["choices", "usage", "error", "model", "id", "created"];
    let [list, usage, error, model, id, created] = scan::whole(text, |s| {
        s.object(names, |s, at| match (at, s.peek()) {
            (0, Some(b'[')) => {
                choices = scanned_choices(s)?;
                Some(())
            }
            _ => s.value(),
        })
    })?;
    let present = |r: Option<Range<usize>>| r.filter(|r| &text[r.clone()] != "null");
    // Choices that are neither a list nor null are the derive's to refuse.
    if present(list).is_some_and(|r| !text[r].starts_with('[')) {
        return None;
    }
    let usage = match present(usage) {
        Some(r) => Some(super::usage::scanned(&text[r])?),
        None => None,
    };
    Some(Probe {
        choices,
        usage,
        error: present(error).map(|r| &text[r]),
        head: ChunkHead {
            model: present(model),
            id: present(id).map(|r| &text[r]),
            created: present(created).map(|r| &text[r]),
        },
    })
}

/// The list of choices at the cursor. A choice or `delta` that is neither an object nor `null`
/// is left to the derive (which refuses it, or reads a list as a struct).
fn scanned_choices(s: &mut Scanner) -> Option<ChoicesProbe> {
    let (mut chars, mut committed) = (0, false);
    let count = s.items(|s| {
        if s.peek() != Some(b'{') {
            return None;
        }
        s.object(["delta"], |s, _| match s.peek() {
            Some(b'{') => {
                let names = ["content", "reasoning_content", "tool_calls"];
                let [content, reasoning, tools] = s.object(names, |s, _| s.value())?;
                let len = |r: Option<Range<usize>>| r.map_or(0, |r| content_len(s.bytes(r)));
                let text = len(content) + len(reasoning);
                chars += text;
                committed |= text > 0 || tools.is_some_and(|r| s.bytes(r) != b"null");
                Some(())
            }
            Some(b'n') => s.value(),
            _ => None,
        })?;
        Some(())
    })?;
    Some(ChoicesProbe {
        count,
        chars,
        committed,
    })
}

/// The derive's reading of a chunk, for what the scan cannot vouch for.
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
fn within(data: &[u8], part: &str) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
    let end = start + part.len();
    (end <= data.len()).then_some(start..end)
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
                        let len =
                            |r: Option<&RawValue>| r.map_or(0, |r| content_len(r.get().as_bytes()));
                        let text = len(d.content) + len(d.reasoning_content);
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
        let probe = probe(&ev.data)?;
        if let Some(err) = probe.error {
            let message = error_message(format!("{{\"error\":{err}}}").as_bytes())
                .unwrap_or_else(|| "upstream reported an error".into());
            return Err(StreamFault::reported(message, "upstream_error"));
        }
        let choices = probe.choices;
        self.chars += choices.chars;
        self.committed |= choices.committed;
        let usage_only = choices.count == 0;
        if let Some(u) = probe.usage {
            self.usage = Some(u);
            if usage_only && (self.strip_usage_chunk || !enc.passthrough()) {
                return Ok(Flow::More);
            }
            self.committed = true;
            if usage_only {
                self.usage_relayed = true;
            }
        }
        if enc.passthrough() {
            enc.raw(&ev.data, &probe.head, out);
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
fn content_len(raw: &[u8]) -> usize {
    if raw.first() == Some(&b'"') {
        raw.len().saturating_sub(2)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn view(p: Result<Probe, StreamFault>) -> Option<String> {
        let p = p.ok()?;
        let c = &p.choices;
        Some(format!(
            "{} {} {} {:?} {:?} {:?} {:?} {:?}",
            c.count,
            c.chars,
            c.committed,
            p.usage,
            p.error,
            p.head.model,
            p.head.id,
            p.head.created
        ))
    }

    /// The scan reads `text` as the derive does, or leaves it to the derive.
    fn check(text: &str) -> Result<bool, TestCaseError> {
        let Some(scanned) = scanned(text) else {
            return Ok(false);
        };
        let derived = view(derived(text.as_bytes()));
        prop_assert!(
            derived.is_some(),
            "vouched for what serde refuses: {}",
            text
        );
        prop_assert_eq!(view(Ok(scanned)), derived, "{}", text);
        Ok(true)
    }

    #[test]
    fn the_scanned_chunk_reads_as_the_derived_one() {
        let mut vouched = 0;
        for text in [
            r#"{"id":"c1","object":"chat.completion.chunk","created":1694268190,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"id":"c1","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hel\"lo"}},{"delta":{"reasoning_content":"ab"}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":null,"content":null}},{"delta":null},{}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#,
            r#"{"choices":null,"usage":null,"error":null,"model":null,"id":null,"created":null}"#,
            r#"{"error":{"message":"overloaded","code":529}}"#,
            r#" { "model" : "m" , "choices" : [ { "delta" : { "content" : "x" } } ] } "#,
            r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#,
            r#"{"choices":[{"delta":["x"]}]}"#,
            r#"{"choices":[["x"]]}"#,
            r#"{"choices":{}}"#,
            r#"{"choices":[{"delta":5}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":-1}}"#,
            r#"{"choices":[{"delta":{"content":"x"}}"#,
            r#"{"choices":[{"delta":{"content":"x"}},]}"#,
            r#"{"choices":[],"mod\u0065l":"m"}"#,
            "[]",
        ] {
            vouched += usize::from(check(text).unwrap());
        }
        assert_eq!(vouched, 8, "the first eight are read by the scan");
    }

    /// Chunks built from their own fields, with values of other shapes where they may be.
    fn chunks() -> impl Strategy<Value = String> {
        let any_value = prop::sample::select(vec![
            "null",
            "1",
            "-2.5e3",
            "true",
            "\"\"",
            "\"t\\\"x\"",
            "[]",
            "{}",
            "[1,{\"a\":[]}]",
            "\"\u{e9}\"",
        ])
        .prop_map(str::to_owned);
        let member = |names: Vec<&'static str>, value: BoxedStrategy<String>| {
            prop::collection::vec((prop::sample::select(names), value), 0..5).prop_map(|m| {
                let m: Vec<String> = m.iter().map(|(k, v)| format!("\"{k}\" :{v}")).collect();
                format!("{{{}}}", m.join(" , "))
            })
        };
        let delta = prop_oneof![
            member(
                vec!["content", "reasoning_content", "tool_calls", "role"],
                any_value.clone().boxed()
            ),
            any_value.clone(),
        ];
        let choice = prop_oneof![
            member(vec!["delta", "index", "finish_reason"], delta.boxed()),
            any_value.clone(),
        ];
        let choices = prop_oneof![
            prop::collection::vec(choice, 0..4).prop_map(|c| format!("[ {} ]", c.join(","))),
            any_value.clone(),
        ];
        let usage = prop_oneof![
            Just(r#"{"prompt_tokens":3,"completion_tokens":4}"#.to_owned()),
            any_value.clone(),
        ];
        let top = prop_oneof![
            (Just("choices"), choices.boxed()),
            (Just("usage"), usage.boxed()),
            (
                prop::sample::select(vec!["error", "model", "id", "created", "object"]),
                any_value
            ),
        ];
        prop::collection::vec(top, 0..6).prop_map(|m| {
            let m: Vec<String> = m.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            format!("{{{}}}", m.join(","))
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn scanned_chunks_agree_with_the_derive(text in chunks(), cut in 0usize..400) {
            check(&text)?;
            // And what is cut short is never vouched for.
            if cut < text.len() && text.is_char_boundary(cut) {
                prop_assert!(scanned(&text[..cut]).is_none(), "{}", &text[..cut]);
            }
        }
    }
}
