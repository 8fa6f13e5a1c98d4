//! Prompt tokens, estimated before the call. OpenAI's own models are counted with their
//! tokenizer (o200k_base, through tiktoken-rs); other models by a documented approximation:
//! a quarter of the text's bytes, plus 4 tokens per message for the chat template. Counting is
//! lazy: a decision that never needs a count (a small prompt, no price cap) never tokenizes.

use std::cell::OnceCell;

use crate::catalog::Model;
use crate::exchange::Usage;
use crate::exchange::chat::{ChatRequest, Content};
use crate::policy::PromptSize;

/// Tokens a chat template adds per message (OpenAI's published rule of thumb).
const PER_MESSAGE: u64 = 4;
/// The most a chat template adds per message, and once, in the models the catalog knows
/// (Llama 3's header and end-of-turn tokens are 5 a message; this leaves room).
const TEMPLATE_BOUND_PER_MESSAGE: u64 = 16;
const TEMPLATE_BOUND: u64 = 64;
/// The most tokens one image costs in the APIs the catalog knows.
const IMAGE_BOUND: u64 = 2_000;

/// Output tokens estimated from the characters of an answer whose usage the upstream did not
/// report: a quarter of them, and never more than the request allowed (`max_tokens` × `n`).
pub(crate) fn estimate_output(chars: usize, limit: Option<u64>) -> u64 {
    let guess = (chars as u64).div_ceil(4);
    limit.map_or(guess, |l| guess.min(l))
}

/// The usage of an answer the upstream reported none for: the prompt's estimate, and the
/// output estimated from its characters. What the client is told and what is recorded.
pub(crate) fn estimated_usage(
    prompt: u64,
    output_chars: usize,
    output_limit: Option<u64>,
) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: estimate_output(output_chars, output_limit),
        estimated: true,
        ..Usage::default()
    }
}

/// Whether `model` is counted with OpenAI's o200k_base tokenizer.
pub(crate) fn uses_o200k(model: &Model) -> bool {
    model.developer == "OpenAI" && !model.id.starts_with("gpt2")
}

/// A request's prompt, measured lazily.
pub(crate) struct PromptText<'a> {
    req: &'a ChatRequest,
    bytes: usize,
    o200k: OnceCell<u64>,
    /// What `upper_bound` adds to any model's count, found once: a budget's reservation asks
    /// for every deployment the request may reach, hundreds for `auto`.
    overhead: OnceCell<u64>,
}

impl<'a> PromptText<'a> {
    pub(crate) fn new(req: &'a ChatRequest) -> Self {
        PromptText {
            req,
            bytes: req.text_len(),
            o200k: OnceCell::new(),
            overhead: OnceCell::new(),
        }
    }

    fn messages(&self) -> u64 {
        self.req.messages.len() as u64
    }

    /// Most prompt tokens `model` can see in this request: exact where the tokenizer is
    /// known, else one token per byte (no tokenizer in use makes more of a byte) plus a generous
    /// template overhead per message. What a budget reserves, so spend cannot pass the budget.
    pub(crate) fn upper_bound(&self, model: &Model) -> u64 {
        let overhead = *self.overhead.get_or_init(|| self.overhead());
        if uses_o200k(model) {
            return *self.o200k.get_or_init(|| self.count_o200k()) + overhead;
        }
        self.bytes as u64 + overhead
    }

    /// What any model sees beyond the text's tokens, at most.
    fn overhead(&self) -> u64 {
        // Tool definitions are prompt tokens too, and an image costs more than its URL's
        // bytes (up to about 1,600 tokens at Anthropic, 765 at OpenAI, 258 at Google).
        let tools = self.req.tools.as_ref().map_or(0, |t| t.get().len()) as u64;
        let images: u64 = self
            .req
            .messages
            .iter()
            .filter_map(|m| match &m.content {
                Some(Content::Parts(p)) => Some(p.get().matches("\"image_url\"").count() as u64),
                _ => None,
            })
            .sum();
        let extra = tools + IMAGE_BOUND * images;
        // A serving template adds its own tokens around each message (vLLM's harmony template
        // for gpt-oss adds dozens), even where the tokenizer is known.
        let template = TEMPLATE_BOUND_PER_MESSAGE * self.messages() + TEMPLATE_BOUND;
        template + extra
    }

    /// The approximation used for models without a known tokenizer.
    pub(crate) fn approximate(&self) -> u64 {
        (self.bytes as u64).div_ceil(4) + PER_MESSAGE * self.messages()
    }

    fn count_o200k(&self) -> u64 {
        let bpe = tiktoken_rs::o200k_base_singleton();
        let mut n = PER_MESSAGE * self.messages() + 3;
        for m in &self.req.messages {
            match &m.content {
                Some(Content::Text(t)) => n += bpe.encode_ordinary(t).len() as u64,
                // Parts (images, audio) are priced by their own rules; count their raw text.
                Some(Content::Parts(p)) => n += bpe.encode_ordinary(p.get()).len() as u64,
                None => {}
            }
            if let Some(t) = &m.tool_calls {
                n += bpe.encode_ordinary(t.get()).len() as u64;
            }
        }
        n
    }
}

impl PromptSize for PromptText<'_> {
    fn bytes(&self) -> usize {
        self.bytes + (PER_MESSAGE * self.messages()) as usize
    }

    fn tokens(&self, model: &Model) -> u64 {
        if uses_o200k(model) {
            *self.o200k.get_or_init(|| self.count_o200k())
        } else {
            self.approximate()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::chat::RequestLimits;

    #[test]
    fn openai_models_are_counted_others_approximated() {
        let req = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"Hello, how are you today?"}]}"#,
            RequestLimits::default(),
        )
        .unwrap();
        let p = PromptText::new(&req);
        let cat = crate::catalog::tests_support::shipped();
        let gpt = cat.get("gpt-4o").unwrap();
        let llama = cat.get("llama-3.1-8b-instruct").unwrap();
        // "Hello, how are you today?" is 7 tokens in o200k_base; + 4 per message + 3 priming.
        assert_eq!(p.tokens(gpt), 14);
        assert_eq!(p.tokens(llama), 7 + 4);
        assert!(p.bytes() as u64 >= p.tokens(gpt));
        // The bound a budget reserves: exact for GPT-4o, a token per byte for the rest.
        assert_eq!(p.upper_bound(gpt), 14 + 16 + 64);
        assert_eq!(p.upper_bound(llama), 25 + 16 + 64);
    }
}
