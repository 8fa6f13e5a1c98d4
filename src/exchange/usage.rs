//! Token counts of one answer, in no dialect.

use serde::Serialize;

/// Token counts of one answer, as OpenAI reports them (`usage`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Input tokens, cached ones included.
    pub(crate) prompt_tokens: u64,
    /// Output tokens, reasoning included.
    pub(crate) completion_tokens: u64,
    /// Input tokens read from a prompt cache (part of `prompt_tokens`).
    pub(crate) cached_tokens: u64,
    /// Input tokens written to a prompt cache (part of `prompt_tokens`).
    pub(crate) cache_write_tokens: u64,
    /// Output tokens spent on reasoning (part of `completion_tokens`).
    pub(crate) reasoning_tokens: u64,
    /// Counted or estimated by the gateway because the upstream reported none.
    pub(crate) estimated: bool,
}
