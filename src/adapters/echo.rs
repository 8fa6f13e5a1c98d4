//! ⑤ The built-in `echo` test model: answers locally with the last user message, in OpenAI's
//! format, whole or streamed. It lets a newcomer with nothing installed see the whole path work,
//! and it says plainly that it is not a language model.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use serde::Serialize;

use super::Completed;
use crate::api::Usage;
use crate::api::chat::ChatRequest;
use crate::stream::sse::{DONE, write_data};

/// The answer's text.
pub fn answer_text(req: &ChatRequest) -> String {
    match req.last_user_text() {
        Some(t) if !t.trim().is_empty() => format!("[echo test model] {}", t.trim()),
        _ => "[echo test model] (the request has no user text)".to_owned(),
    }
}

/// Tokens as the echo model counts them: words of the answer, and a quarter of the prompt's
/// bytes, the same estimate the gateway uses for models that report nothing.
pub fn usage(req: &ChatRequest, text: &str) -> Usage {
    Usage {
        prompt_tokens: (req.text_len() as u64).div_ceil(4).max(1),
        completion_tokens: text.split_whitespace().count() as u64,
        ..Usage::default()
    }
}

#[derive(Serialize)]
struct WireUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl From<&Usage> for WireUsage {
    fn from(u: &Usage) -> Self {
        WireUsage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens + u.completion_tokens,
        }
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: WireUsage,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: AnswerMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct AnswerMessage<'a> {
    role: &'static str,
    content: &'a str,
    refusal: Option<()>,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChunkChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<WireUsage>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}

/// The whole answer.
pub fn complete(req: &ChatRequest, model: &str, id: &str, created: u64) -> Completed {
    let text = answer_text(req);
    let usage = usage(req, &text);
    let body = Completion {
        id,
        object: "chat.completion",
        created,
        model,
        choices: [Choice {
            index: 0,
            message: AnswerMessage {
                role: "assistant",
                content: &text,
                refusal: None,
            },
            logprobs: None,
            finish_reason: "stop",
        }],
        usage: (&usage).into(),
    };
    Completed {
        body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        usage: Some(usage),
    }
}

/// The streamed answer: a role chunk, one chunk per word, the finish chunk, the usage chunk
/// when asked for, and `[DONE]`.
pub fn stream(req: &ChatRequest, model: &str, id: &str, created: u64) -> (VecDeque<Bytes>, Usage) {
    let text = answer_text(req);
    let usage = usage(req, &text);
    let chunk = |delta: Delta<'_>, finish: Option<&'static str>| {
        let c = Chunk {
            id,
            object: "chat.completion.chunk",
            created,
            model,
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason: finish,
            }],
            usage: None,
        };
        serde_json::to_vec(&c).unwrap_or_default()
    };
    let mut events = vec![chunk(
        Delta {
            role: Some("assistant"),
            content: Some(""),
        },
        None,
    )];
    let words: Vec<&str> = text.split(' ').collect();
    for (i, w) in words.iter().enumerate() {
        let piece = if i + 1 < words.len() {
            format!("{w} ")
        } else {
            (*w).to_owned()
        };
        events.push(chunk(
            Delta {
                role: None,
                content: Some(&piece),
            },
            None,
        ));
    }
    events.push(chunk(
        Delta {
            role: None,
            content: None,
        },
        Some("stop"),
    ));
    if req.wants_stream_usage() {
        let c = Chunk {
            id,
            object: "chat.completion.chunk",
            created,
            model,
            choices: Vec::new(),
            usage: Some((&usage).into()),
        };
        events.push(serde_json::to_vec(&c).unwrap_or_default());
    }
    let mut frames = VecDeque::with_capacity(events.len() + 1);
    for e in events {
        let mut out = BytesMut::new();
        write_data(&mut out, &e);
        frames.push_back(out.freeze());
    }
    frames.push_back(Bytes::from_static(DONE));
    (frames, usage)
}
