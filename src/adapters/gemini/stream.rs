//! Gemini's SSE stream → pieces. Each event is a whole `GenerateContentResponse`; function calls
//! arrive whole, each as one tool call with a made-up id; only the last event has a finish
//! reason; usage is on several events and the last counts. There is no end marker: the stream
//! is complete when a finish reason came before the body ended.

use bytes::BytesMut;

use super::response::{Response, Stop, call_id, finish, split_parts};
use crate::adapters::answer::{FinishReason, Piece};
use crate::adapters::{Flow, StreamFault, StreamTranslator};
use crate::api::{ErrorBody, ErrorType, Usage};
use crate::stream::encode::Encoder;
use crate::stream::sse::SseEvent;

pub struct GeminiStream {
    model: String,
    id: Option<String>,
    calls: usize,
    finished: bool,
    usage: Option<Usage>,
    chars: usize,
    committed: bool,
}

impl GeminiStream {
    pub fn new(model: &str) -> Self {
        GeminiStream {
            model: model.to_owned(),
            id: None,
            calls: 0,
            finished: false,
            usage: None,
            chars: 0,
            committed: false,
        }
    }
}

fn fault(message: String, code: &'static str) -> StreamFault {
    StreamFault {
        body: ErrorBody::new(ErrorType::ApiError, message).code(code),
    }
}

impl StreamTranslator for GeminiStream {
    fn event(
        &mut self,
        ev: &SseEvent,
        enc: &mut dyn Encoder,
        out: &mut BytesMut,
    ) -> Result<Flow, StreamFault> {
        let r: Response = serde_json::from_slice(&ev.data).map_err(|_| {
            fault(
                "upstream sent an invalid stream event".into(),
                "upstream_invalid_response",
            )
        })?;
        if let Some(e) = &r.error {
            let m = e
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("upstream reported an error");
            // Raw: the relay cleans every stream error with the deployment's masks.
            return Err(fault(m.to_owned(), "upstream_error"));
        }
        if self.id.is_none() {
            let id = r
                .response_id
                .clone()
                .unwrap_or_else(crate::server::request_id::fresh);
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
            self.finished = true;
            enc.piece(Piece::Finish(FinishReason::ContentFilter), out);
        }
        for c in &r.candidates {
            let parts = c
                .content
                .as_ref()
                .map(|c| c.parts.as_slice())
                .unwrap_or_default();
            let (text, calls) = split_parts(parts);
            if !text.is_empty() {
                self.chars += text.len();
                self.committed = true;
                enc.piece(Piece::Text(&text), out);
            }
            for (name, args) in calls {
                let id = call_id(self.id.as_deref().unwrap_or(""), self.calls);
                let index = u32::try_from(self.calls).unwrap_or(u32::MAX);
                self.calls += 1;
                self.chars += args.len();
                self.committed = true;
                enc.piece(
                    Piece::ToolCall {
                        index,
                        id: Some(&id),
                        name: Some(&name),
                        arguments: &args,
                    },
                    out,
                );
            }
            if let Some(reason) = &c.finish_reason {
                match finish(reason) {
                    Stop::Error(e) => return Err(fault(e, "upstream_invalid_response")),
                    Stop::Reason(mut r) => {
                        if self.calls > 0 && r == FinishReason::Stop {
                            r = FinishReason::ToolCalls;
                        }
                        self.finished = true;
                        enc.piece(Piece::Finish(r), out);
                    }
                }
            }
        }
        Ok(Flow::More)
    }

    fn end_of_stream(
        &mut self,
        _enc: &mut dyn Encoder,
        _out: &mut BytesMut,
    ) -> Result<Flow, StreamFault> {
        Ok(if self.finished {
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
