//! ⑤ The built-in `echo` test model: answers locally with the last user message. It lets a
//! newcomer with nothing installed see the whole path work, and it says plainly that it is not a
//! language model. Streams of it are its answer sent word by word.

use crate::exchange::Usage;
use crate::exchange::answer::{Choice, Completion, FinishReason};
use crate::exchange::chat::ChatRequest;

/// The answer's text.
pub(crate) fn answer_text(req: &ChatRequest) -> String {
    match req.last_user_text() {
        Some(t) if !t.trim().is_empty() => format!("[echo test model] {}", t.trim()),
        _ => "[echo test model] (the request has no user text)".to_owned(),
    }
}

/// The whole answer, as many times as the request asked (`n`). Tokens are counted as the words
/// of the answers and a quarter of the prompt's bytes, the same estimate the gateway uses for
/// models that report nothing.
pub(crate) fn complete(req: &ChatRequest, model: &str, id: &str, created: u64) -> Completion {
    let text = answer_text(req);
    let n = req.n.unwrap_or(1).max(1);
    let usage = Usage {
        prompt_tokens: (req.text_len() as u64).div_ceil(4).max(1),
        completion_tokens: text.split_whitespace().count() as u64 * u64::from(n),
        ..Usage::default()
    };
    Completion {
        id: id.to_owned(),
        model: model.to_owned(),
        created,
        choices: (0..n)
            .map(|_| Choice::text(Some(text.clone()), FinishReason::Stop))
            .collect(),
        usage,
    }
}
