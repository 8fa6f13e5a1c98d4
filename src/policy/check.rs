//! ④ The checks that need the request: what it needs of a model, whether it fits the context
//! window, and its worst-case price.

use std::sync::Arc;

use super::compile::{CompiledRule, Refusal, RefusalKind};
use super::decision::Checked;
use super::{Ask, HOSTED_ONLY, request_worst_case, task_of};
use crate::catalog::{Model, Task};
use crate::config::Deployment;

/// The checks that need the request, for deployment `d`.
#[cfg(test)]
pub(super) fn dynamic_check(rule: &CompiledRule, ask: &Ask, d: &Deployment) -> Option<Refusal> {
    request_check(rule, ask, d).map(|c| c.of(d))
}

/// What a request's built-in tool refuses of a deployment that is not OpenAI's.
pub(super) fn hosted_refusal(tool: &str, d: &Deployment) -> Refusal {
    Refusal {
        kind: RefusalKind::Capability,
        detail: Arc::from(format!(
            "the request has the built-in tool '{tool}', {HOSTED_ONLY}, and deployment {} is not OpenAI's",
            d.name
        )),
    }
}

/// The checks of the request remembered by what they read of a deployment, so that `auto` over
/// many deployments of a few models checks each model once, not each group. Without a price
/// cap the checks read the model and whether the deployment is OpenAI's; with one, its price
/// too. Kept only for the first few of each request: a request with more models than that
/// checks the others one by one.
pub(super) struct Memo {
    /// Worth keeping: there are many groups (a few are checked faster than remembered).
    on: bool,
    priced: bool,
    seen: Vec<(MemoKey, Option<Checked>)>,
}

#[derive(PartialEq, Eq)]
struct MemoKey {
    model: *const Model,
    openai: bool,
    price: [u64; 2],
}

impl Memo {
    const SIZE: usize = 8;
    /// Small in tests, so that the property tests decide through the memo.
    const WORTH: usize = if cfg!(test) { 2 } else { 16 };

    pub(super) fn new(rule: &CompiledRule, base: Option<&CompiledRule>, groups: usize) -> Memo {
        Memo {
            on: groups >= Memo::WORTH,
            priced: rule.per_request_cap.is_some()
                || base.is_some_and(|b| b.per_request_cap.is_some()),
            seen: Vec::new(),
        }
    }

    pub(super) fn check(
        &mut self,
        rule: &CompiledRule,
        base: Option<&CompiledRule>,
        ask: &Ask,
        d: &Deployment,
    ) -> Option<Checked> {
        let check =
            || request_check(rule, ask, d).or_else(|| base.and_then(|b| request_check(b, ask, d)));
        if !self.on {
            return check();
        }
        let key = MemoKey {
            model: Arc::as_ptr(&d.model),
            openai: d.endpoint.kind == crate::config::spec::Kind::Openai,
            price: if self.priced {
                [d.price.input.to_bits(), d.price.output.to_bits()]
            } else {
                [0; 2]
            },
        };
        if let Some((_, c)) = self.seen.iter().find(|(k, _)| *k == key) {
            return c.clone();
        }
        let c = check();
        if self.seen.len() < Self::SIZE {
            self.seen.push((key, c.clone()));
        }
        c
    }
}

/// The checks that need the request: what it needs of the model, whether it fits the context
/// window, and its worst-case price. What they read of `d` (model, price, whether it is
/// OpenAI's) is what its whole group shares; only the built-in tool's refusal names `d`.
pub(super) fn request_check(rule: &CompiledRule, ask: &Ask, d: &Deployment) -> Option<Checked> {
    let tokens = match model_check(ask, d) {
        Ok(tokens) => tokens,
        Err(c) => return Some(c),
    };
    let cap = rule.per_request_cap?;
    let prompt = tokens.unwrap_or_else(|| ask.prompt.tokens(&d.model));
    let (cost, worst_out) = request_worst_case(d, prompt, ask.max_output, ask.needs.choices);
    over_cap(cap, cost, prompt, worst_out)
}

/// The checks that read only the model and whether the deployment is OpenAI's: what the
/// request needs of the model, and whether it fits the context window. The prompt's tokens, if
/// they had to be counted.
pub(super) fn model_check(ask: &Ask, d: &Deployment) -> Result<Option<u64>, Checked> {
    let refused = |kind, detail| {
        Err(Checked::Same(Refusal {
            kind,
            detail: Arc::from(detail),
        }))
    };
    let m = &d.model;
    let caps = &m.capabilities;
    let task = task_of(ask.endpoint);
    if m.task != task {
        let what = if m.task == Task::Embedding {
            "an embedding model"
        } else {
            "not an embedding model"
        };
        return refused(RefusalKind::Capability, format!("model {} is {what}", m.id));
    }
    if ask.needs.tools && !caps.tools {
        return refused(
            RefusalKind::Capability,
            format!("model {} has no tool calls and the request has tools", m.id),
        );
    }
    if let Some(tool) = ask.needs.hosted_tool
        && d.endpoint.kind != crate::config::spec::Kind::Openai
    {
        return Err(Checked::Hosted(tool));
    }
    if ask.needs.vision && !caps.vision {
        return refused(
            RefusalKind::Capability,
            format!("model {} takes no images and the request has some", m.id),
        );
    }
    let window = u64::from(caps.context_window);
    let out = u64::from(ask.max_output.unwrap_or(1));
    // Byte-level tokenizers make at most one token per byte: small prompts fit without counting.
    let bound = ask.prompt.bytes() as u64;
    if bound + out <= window {
        return Ok(None);
    }
    let t = ask.prompt.tokens(m);
    if t + out > window {
        return refused(
            RefusalKind::Context,
            format!(
                "about {t} prompt tokens and {out} of output do not fit a context window of {window}"
            ),
        );
    }
    Ok(Some(t))
}

/// The price cap's refusal of a request that may cost `cost` (`prompt` and `worst_out`
/// tokens), if over `cap`.
pub(super) fn over_cap(cap: f64, cost: f64, prompt: u64, worst_out: u64) -> Option<Checked> {
    (cost > cap).then(|| Checked::Same(Refusal {
        kind: RefusalKind::Price,
        detail: Arc::from(format!(
            "this request may cost up to ${cost:.6} ({prompt} prompt tokens, {worst_out} output tokens), over the cap of ${cap}"
        )),
    }))
}
