//! Gemini's SSE stream → pieces. Each event is a whole `GenerateContentResponse`; function calls
//! arrive whole, each as one tool call with a made-up id; only the last event has a finish
//! reason; usage is on several events and the last counts. There is no end marker: the stream
//! is complete when a finish reason came before the body ended.

use bytes::BytesMut;

use super::response::{Response, Stop, call_id, finish, split_parts};
use crate::adapters::{Flow, StreamFault, StreamTranslator};
use crate::exchange::Usage;
use crate::exchange::answer::{FinishReason, Piece};
use crate::exchange::encode::Encoder;
use crate::exchange::sse::SseEvent;

pub(crate) struct GeminiStream {
    model: String,
    id: Option<String>,
    /// Function calls so far in all candidates (their ids), and in each (their indexes).
    calls: usize,
    /// Per candidate, by its index (`candidateCount` of them): calls so far, finished.
    choices: Vec<(u32, bool)>,
    /// The candidate the last piece was for.
    current: u32,
    /// The prompt was blocked: no candidate will come.
    blocked: bool,
    usage: Option<Usage>,
    chars: usize,
    committed: bool,
}

impl GeminiStream {
    /// `choices` is the `candidateCount` asked for (1 when not asked).
    pub(crate) fn new(model: &str, choices: u32) -> Self {
        GeminiStream {
            model: model.to_owned(),
            id: None,
            calls: 0,
            choices: vec![(0, false); choices.clamp(1, 128) as usize],
            current: 0,
            blocked: false,
            usage: None,
            chars: 0,
            committed: false,
        }
    }

    fn finished(&self) -> bool {
        self.blocked || self.choices.iter().all(|(_, done)| *done)
    }
}

impl StreamTranslator for GeminiStream {
    fn event(
        &mut self,
        ev: &SseEvent,
        enc: &mut dyn Encoder,
        out: &mut BytesMut,
    ) -> Result<Flow, StreamFault> {
        let r: Response = crate::base::json(&ev.data).map_err(|_| StreamFault::invalid("event"))?;
        if let Some(e) = &r.error {
            let m = e
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("upstream reported an error");
            // Raw: the relay cleans every stream error with the deployment's masks.
            return Err(StreamFault::reported(m.to_owned(), "upstream_error"));
        }
        if self.id.is_none() {
            let id = r.response_id.clone().unwrap_or_else(crate::base::fresh_id);
            let model = r
                .model_version
                .clone()
                .unwrap_or_else(|| self.model.clone());
            enc.piece(
                Piece::Start {
                    id: &id,
                    model: &model,
                },
                out,
            );
            self.id = Some(id);
        }
        if let Some(u) = r.usage_metadata {
            self.usage = Some(u.to_usage());
        }
        if r.candidates.is_empty() && r.prompt_feedback.and_then(|f| f.block_reason).is_some() {
            self.blocked = true;
            enc.piece(Piece::Finish(FinishReason::ContentFilter), out);
        }
        for (at, c) in r.candidates.iter().enumerate() {
            let index = c.index.unwrap_or(u32::try_from(at).unwrap_or(u32::MAX));
            let Some(&(calls, done)) = self.choices.get(index as usize) else {
                return Err(StreamFault::reported(
                    format!("upstream sent candidate {index}, which the request did not ask for"),
                    "upstream_invalid_response",
                ));
            };
            let parts = c
                .content
                .as_ref()
                .map(|c| c.parts.as_slice())
                .unwrap_or_default();
            let (text, new_calls) = split_parts(parts);
            if done && (!text.is_empty() || !new_calls.is_empty()) {
                return Err(StreamFault::reported(
                    format!("upstream continued candidate {index} after its finish reason"),
                    "upstream_invalid_response",
                ));
            }
            if index != self.current
                && (!text.is_empty() || !new_calls.is_empty() || c.finish_reason.is_some())
            {
                self.current = index;
                enc.piece(Piece::Choice(index), out);
            }
            if !text.is_empty() {
                self.chars += text.len();
                self.committed = true;
                enc.piece(Piece::Text(&text), out);
            }
            let mut calls = calls;
            for (name, args) in new_calls {
                let id = call_id(self.id.as_deref().unwrap_or(""), self.calls);
                self.calls += 1;
                self.chars += args.len();
                self.committed = true;
                enc.piece(
                    Piece::ToolCall {
                        index: calls,
                        id: Some(&id),
                        name: Some(&name),
                        arguments: &args,
                    },
                    out,
                );
                calls += 1;
            }
            let mut finished = done;
            if let Some(reason) = &c.finish_reason
                && !done
            {
                match finish(reason) {
                    Stop::Error(e) => {
                        return Err(StreamFault::reported(e, "upstream_invalid_response"));
                    }
                    Stop::Reason(mut r) => {
                        if calls > 0 && r == FinishReason::Stop {
                            r = FinishReason::ToolCalls;
                        }
                        finished = true;
                        enc.piece(Piece::Finish(r), out);
                    }
                }
            }
            self.choices[index as usize] = (calls, finished);
        }
        Ok(Flow::More)
    }

    fn end_of_stream(
        &mut self,
        _enc: &mut dyn Encoder,
        _out: &mut BytesMut,
    ) -> Result<Flow, StreamFault> {
        Ok(if self.finished() {
            Flow::Done
        } else {
            Flow::More
        })
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
