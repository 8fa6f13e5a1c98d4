//! ⑧ Series made at 0 when a configuration loads (and after each reload): a dashboard or an
//! alert (`increase(...[10m]) > 0`) must see a series before its first event, or the first
//! event is invisible to it.

use super::{Metrics, model_labels};
use crate::config::Deployment;

impl Metrics {
    pub(super) fn prime(&self, snapshot: &crate::policy::Routing, series: &super::SeriesTable) {
        for result in ["ok", "error", "unchanged"] {
            self.config.config_reloads.with_label_values(&[result]);
        }
        for phase in ["request", "stream"] {
            self.cancelled.with_label_values(&[phase]);
        }
        let decided = [
            "chat_completions",
            "responses",
            "messages",
            "count_tokens",
            "embeddings",
        ];
        let classes = ["2xx", "4xx", "5xx", "cancelled"];
        for endpoint in decided
            .iter()
            .chain(&["models", "model", "response", "usage", "unknown"])
        {
            for class in classes {
                self.requests.with_label_values(&[endpoint, class, "none"]);
            }
        }
        for p in &snapshot.policies.list {
            for endpoint in decided {
                for class in classes {
                    self.requests.with_label_values(&[endpoint, class, &p.name]);
                }
            }
        }
        for endpoint in ["chat_completions", "responses", "messages", "embeddings"] {
            for stream in ["true", "false"] {
                self.request_duration.with_label_values(&[endpoint, stream]);
            }
        }
        for kind in ["key", "tenant", "deployment"] {
            for limit in [
                "requests_per_minute",
                "tokens_per_minute",
                "usd_per_day",
                "usd_per_month",
            ] {
                self.limit_rejections.with_label_values(&[kind, limit]);
            }
        }
        let (cfg, policies) = (&snapshot.config, &snapshot.policies);
        for caller in cfg.keys.callers().chain(std::iter::once(&cfg.anonymous)) {
            if let Some(shadow) = caller.shadow.and_then(|i| policies.list.get(i))
                && let Some(live) = policies.for_caller(caller.policy.as_deref())
            {
                for a in crate::policy::Agreement::ALL {
                    self.shadow_decisions.with_label_values(&[
                        &live.name,
                        &shadow.name,
                        a.as_str(),
                    ]);
                }
            }
            for scope in caller.limits.iter() {
                for (window, cap) in [
                    ("day", scope.limits.usd_micros_per_day),
                    ("month", scope.limits.usd_micros_per_month),
                ] {
                    if cap.is_some() {
                        // Created at 0 if new; a value already there is kept.
                        self.budget_used.with_label_values(&[
                            scope.kind.as_str(),
                            &scope.name,
                            window,
                        ]);
                    }
                }
            }
        }
        for p in &snapshot.policies.list {
            self.fallbacks.with_label_values(&[&p.name]);
            self.decisions
                .with_label_values(&[&p.name, "none", "refused"]);
            for r in &p.rules {
                for result in ["allowed", "refused"] {
                    self.decisions
                        .with_label_values(&[&p.name, &r.name, result]);
                }
                for reason in crate::policy::RefusalKind::ALL {
                    self.refusals
                        .with_label_values(&[&p.name, &r.name, reason.as_str()]);
                }
            }
        }
        for d in snapshot.deployments.iter() {
            let operation = if d.model.task == crate::catalog::Task::Embedding {
                "embeddings"
            } else {
                "chat"
            };
            // Tokens, cost, answered attempts, the GenAI series and, for chat, the streams'.
            let _ = self.series(series, d, operation);
            for result in crate::upstream::AttemptError::LABELS
                .iter()
                .chain(crate::upstream::SkipReason::LABELS)
            {
                self.attempt_series(d, result);
            }
            let labels = model_labels(d, "");
            self.model.retries.with_label_values(&labels[..5]);
        }
    }

    fn attempt_series(&self, d: &Deployment, result: &str) {
        self.model
            .upstream_attempts
            .with_label_values(&model_labels(d, result));
    }
}
