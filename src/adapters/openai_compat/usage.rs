//! `usage` as OpenAI-compatible servers send it.

use serde::Deserialize;

use crate::exchange::Usage;

/// `usage` as OpenAI-compatible servers send it.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireUsage {
    #[serde(default)]
    pub(crate) prompt_tokens: u64,
    #[serde(default)]
    pub(crate) completion_tokens: u64,
    #[serde(default)]
    pub(crate) prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    pub(crate) completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct PromptDetails {
    #[serde(default)]
    pub(crate) cached_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct CompletionDetails {
    #[serde(default)]
    pub(crate) reasoning_tokens: Option<u64>,
}

impl From<WireUsage> for Usage {
    fn from(w: WireUsage) -> Usage {
        Usage {
            prompt_tokens: w.prompt_tokens,
            completion_tokens: w.completion_tokens,
            cached_tokens: w
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_write_tokens: 0,
            reasoning_tokens: w
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
            estimated: false,
        }
    }
}

/// `usage` read through [`crate::exchange::scan`] as serde's derive of [`WireUsage`] reads it;
/// `None` for what the scan cannot vouch for and whatever serde would refuse or read otherwise.
pub(crate) fn scanned(text: &str) -> Option<Usage> {
    use crate::exchange::scan::fields;
    let [prompt, completion, prompt_details, completion_details] = fields(
        text,
        [
            "prompt_tokens",
            "completion_tokens",
            "prompt_tokens_details",
            "completion_tokens_details",
        ],
    )?;
    let at = |r: Option<std::ops::Range<usize>>| r.map(|r| &text[r]);
    // What the scan passed as a number is JSON's: `parse` refuses, as serde does for a u64,
    // `null`, a sign, a fraction, an exponent and what overflows.
    let count = |v: &str| v.parse::<u64>().ok();
    let required = |v: Option<&str>| match v {
        None => Some(0),
        Some(v) => count(v),
    };
    let optional = |v: Option<&str>| match v {
        None | Some("null") => Some(0),
        Some(v) => count(v),
    };
    let detail = |v: Option<&str>, name: &str| match v {
        None | Some("null") => Some(0),
        Some(v) if v.starts_with('{') => {
            let [r] = fields(v, [name])?;
            optional(r.map(|r| &v[r]))
        }
        Some(_) => None,
    };
    Some(Usage {
        prompt_tokens: required(at(prompt))?,
        completion_tokens: required(at(completion))?,
        cached_tokens: detail(at(prompt_details), "cached_tokens")?,
        cache_write_tokens: 0,
        reasoning_tokens: detail(at(completion_details), "reasoning_tokens")?,
        estimated: false,
    })
}
