//! ⑦ Settling an answered request: its usage and cost recorded, its reservation released,
//! its log line written; and the count of requests whose client left mid-call.

use std::sync::Arc;
use std::time::Instant;

use http::HeaderValue;

use crate::accounting;
use crate::auth::Caller;
use crate::config::Deployment;
use crate::exchange::Usage;
use crate::exchange::answer::EndReason;
use crate::metrics::Metrics;
use crate::policy;

use super::Ctx;

/// One answered request, for its log line and metrics.
pub(super) struct Record {
    pub(super) endpoint: policy::EndpointName,
    /// The caller's claim on its limits, settled when the answer is done.
    pub(super) ticket: Option<crate::limits::Ticket>,
    /// The state it was served under: its limiter and metric series.
    pub(super) current: Arc<crate::live::Current>,
    pub(super) request_id: HeaderValue,
    pub(super) caller: Caller,
    pub(super) policy: Arc<str>,
    pub(super) rule: Arc<str>,
    pub(super) refused: usize,
    /// What its caller's shadow policy made of it, if it has one.
    pub(super) shadow: Option<policy::Shadowed>,
    pub(super) deployment: Arc<Deployment>,
    pub(super) attempts: usize,
    pub(super) started: Instant,
    pub(super) prompt_estimate: u64,
    /// The most output the request allowed (`max_tokens` × `n`), bounding estimates.
    pub(super) output_limit: Option<u64>,
    /// Its trace, exported when the record (the stream's end) is done with it.
    pub(super) trace: crate::telemetry::traces::Trace,
}

impl Record {
    /// The record of a request `opened` that `d` answered after `attempts` attempts.
    pub(super) fn new(
        opened: &super::Opened,
        decision: &policy::Decision,
        d: &Arc<Deployment>,
        attempts: usize,
        endpoint: policy::EndpointName,
        ticket: Option<crate::limits::Ticket>,
    ) -> Record {
        Record {
            endpoint,
            ticket,
            current: opened.current.clone(),
            request_id: opened.request_id.clone(),
            caller: opened.caller.clone(),
            policy: decision.policy.clone(),
            rule: decision.rule.clone(),
            refused: decision.refused_count(),
            shadow: opened.shadow.get().cloned(),
            deployment: d.clone(),
            attempts,
            started: opened.started,
            prompt_estimate: 0,
            output_limit: None,
            trace: opened.trace.clone(),
        }
    }

    /// With the prompt's estimated tokens and the most output the request allowed, for
    /// estimates when the upstream reports no usage.
    pub(super) fn with_estimates(mut self, prompt: u64, output_limit: Option<u64>) -> Record {
        self.prompt_estimate = prompt;
        self.output_limit = output_limit;
        self
    }

    /// Usage estimated from the text when the upstream reported none.
    pub(super) fn estimate(&self, output_chars: usize) -> Usage {
        accounting::tokens::estimated_usage(self.prompt_estimate, output_chars, self.output_limit)
    }

    /// Records tokens, cost and duration, writes the request's log line, returns the cost.
    pub(super) fn finish(&self, m: &Metrics, usage: &Usage, stream: Option<EndReason>) -> f64 {
        let d = &self.deployment;
        let cost = accounting::cost::of(usage, &d.price);
        let took = self.started.elapsed();
        super::trace::served(&self.trace, d, usage, cost, self.attempts, stream);
        self.current.limiter.finish(
            self.ticket.as_ref(),
            crate::limits::UsageEntry {
                tenant: self.caller.tenant.clone(),
                model: d.usage_model.clone(),
                openness: d.model.openness.as_str(),
                input_tokens: usage.prompt_tokens,
                output_tokens: usage.completion_tokens,
                cost_micros: crate::limits::micros(cost),
            },
        );
        m.usage(
            &self.current.series,
            d,
            crate::metrics::Answered {
                operation: self.endpoint.operation(),
                usage,
                cost,
                took,
            },
        );
        m.durations
            .get(self.endpoint, stream.is_some())
            .observe(took.as_secs_f64());
        if tracing::enabled!(tracing::Level::INFO)
            && let Some(mut line) = crate::telemetry::info_line("request served")
        {
            line.str("endpoint", self.endpoint.as_str())
                .u64("status", 200)
                .str("request_id", self.request_id.to_str().unwrap_or("-"))
                .str("tenant", &self.caller.tenant)
                .str("key", self.caller.key_id.as_deref().unwrap_or("-"))
                .str("policy", &self.policy)
                .str("rule", &self.rule)
                .u64("refused", self.refused as u64);
            for (name, value) in self.shadow.iter().flat_map(shadow_fields) {
                line.str(name, value);
            }
            line.fixed(&d.log_fields, |f| {
                f.str("deployment", d.name.as_str())
                    .str("model", d.model.id.as_str())
                    .str("provider", d.endpoint.provider.as_str())
                    .str("openness", d.model.openness.as_str())
                    .str("license", d.model.license.id.as_str());
            })
            .u64("attempts", self.attempts as u64)
            .str("stream", stream.map_or("-", EndReason::as_str))
            .u64("prompt_tokens", usage.prompt_tokens)
            .u64("completion_tokens", usage.completion_tokens)
            .bool("tokens_estimated", usage.estimated)
            .usd("cost_usd", cost)
            .u64("duration_ms", took.as_millis() as u64);
        }
        cost
    }
}

/// The fields a shadow decision adds to a request's line: the shadow policy, its rule, the
/// deployment it would have tried first and why it would have refused (`-` for none), and how
/// that compares with the live decision.
pub(super) fn shadow_fields(s: &policy::Shadowed) -> [(&'static str, &str); 5] {
    [
        ("shadow", &s.policy),
        ("shadow_rule", s.rule.as_deref().unwrap_or("-")),
        ("shadow_deployment", s.deployment().unwrap_or("-")),
        ("shadow_refused", s.refused.unwrap_or("-")),
        ("shadow_agreement", s.agreement.as_str()),
    ]
}

/// Counts a request whose client went away while the upstream was being called: dropping the
/// call closes the upstream connection; this records that it happened.
pub(super) struct Cancelled {
    metrics: Option<Arc<Metrics>>,
}

impl Cancelled {
    pub(super) fn new(ctx: &Ctx) -> Cancelled {
        Cancelled {
            metrics: Some(ctx.metrics.clone()),
        }
    }

    pub(super) fn disarm(&mut self) {
        self.metrics = None;
    }
}

impl Drop for Cancelled {
    fn drop(&mut self) {
        if let Some(m) = self.metrics.take() {
            // The request's line is the boundary's, which sees the same drop.
            m.cancelled.with_label_values(&["request"]).inc();
        }
    }
}
