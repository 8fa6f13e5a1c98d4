//! ⑧ Metrics: every collector in one struct (the model- and configuration-labelled families
//! grouped), registered once on a private registry. Labels come only from configured names
//! (deployments, catalog models, policies) and closed enums; never a key, a tenant secret or
//! request text.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

mod prime;
mod series;

pub(crate) use series::{Answered, SeriesTable};

use crate::config::Deployment;
use crate::policy::{Decision, PolicyError, RefusalKind};

/// OpenTelemetry's recommended buckets for GenAI durations (seconds).
const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];
/// OpenTelemetry's recommended buckets for time to first token (seconds).
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

pub(crate) struct Metrics {
    /// Tells this registry's cached series from another's (tests run several gateways).
    id: usize,
    registry: Registry,
    pub(crate) requests: IntCounterVec,
    pub(crate) request_duration: HistogramVec,
    /// Its series, looked up once.
    pub(crate) durations: series::Durations,
    pub(crate) in_flight: IntGauge,
    pub(crate) open_streams: IntGauge,
    pub(crate) fallbacks: IntCounterVec,
    pub(crate) cancelled: IntCounterVec,
    pub(crate) circuit: IntGaugeVec,
    pub(crate) decisions: IntCounterVec,
    pub(crate) refusals: IntCounterVec,
    pub(crate) shadow_decisions: IntCounterVec,
    /// Trace spans by what became of them: exported, or dropped (queue full, export failed).
    pub(crate) trace_spans: IntCounterVec,
    pub(crate) panics: IntCounter,
    pub(crate) shed: IntCounter,
    /// Copied from the log writer at scrape time.
    log_dropped: IntCounter,
    /// The writer's count when it was last copied.
    log_dropped_copied: std::sync::atomic::AtomicU64,
    pub(crate) limit_rejections: IntCounterVec,
    pub(crate) limit_store_errors: IntCounterVec,
    pub(crate) budget_used: prometheus::GaugeVec,
    pub(crate) startup: Histogram,
    /// The families labelled by deployment and model.
    pub(crate) model: ModelFamilies,
    /// What the configuration in force says.
    pub(crate) config: ConfigFamilies,
}

const MODEL_LABELS: &[&str] = &["deployment", "provider", "model", "openness", "license"];

/// OpenTelemetry GenAI attributes as Prometheus labels, plus openness and license.
const GENAI_LABELS: [&str; 5] = [
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "openness",
    "license",
];
const GENAI_LABELS_TOKENS: [&str; 6] = [
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_token_type",
    "openness",
    "license",
];

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> prometheus::Result<HistogramVec> {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

fn int_gauges(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    registered(r, IntGaugeVec::new(Opts::new(name, help), labels)?)
}

/// `c`, registered on `r`.
fn registered<C: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    c: C,
) -> prometheus::Result<C> {
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

/// `modelgate_budget_used_ratio`.
fn budget_gauges(r: &Registry) -> prometheus::Result<prometheus::GaugeVec> {
    registered(
        r,
        prometheus::GaugeVec::new(
            Opts::new(
                "modelgate_budget_used_ratio",
                "Share of a spend budget used or reserved (0 to 1), by scope and window (day, month), as of the scope's last admitted request.",
            ),
            &["scope_kind", "scope", "window"],
        )?,
    )
}

fn int_counter(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    pub(crate) fn new() -> prometheus::Result<Metrics> {
        let r = Registry::new();
        static IDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let request_duration = histogram(
            &r,
            "modelgate_request_duration_seconds",
            "Time from request to the end of the answer (streams included), by endpoint.",
            &["endpoint", "stream"],
            DURATION_BUCKETS,
        )?;
        let m = Metrics {
            id: IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            requests: counter(
                &r,
                "modelgate_requests_total",
                "Requests answered, by endpoint, status class and policy.",
                &["endpoint", "status_class", "policy"],
            )?,
            durations: series::Durations::of(&request_duration),
            request_duration,
            in_flight: gauge(
                &r,
                "modelgate_in_flight_requests",
                "Requests being served now.",
            )?,
            open_streams: gauge(&r, "modelgate_open_streams", "Streams being relayed now.")?,
            cancelled: counter(
                &r,
                "modelgate_upstream_cancelled_total",
                "Upstream calls cancelled because the client went away, by phase (request or stream).",
                &["phase"],
            )?,
            circuit: int_gauges(
                &r,
                "modelgate_circuit_state",
                "Outlier ejection state per deployment: 0 closed, 1 half-open (probing), 2 open (ejected).",
                &["deployment"],
            )?,
            fallbacks: counter(
                &r,
                "modelgate_fallbacks_total",
                "Requests answered by a deployment other than the first choice.",
                &["policy"],
            )?,
            decisions: counter(
                &r,
                "modelgate_policy_decisions_total",
                "Policy decisions, by policy, rule and result (allowed or refused).",
                &["policy", "rule", "result"],
            )?,
            refusals: counter(
                &r,
                "modelgate_policy_refusals_total",
                "Deployments a rule refused for a request, by reason.",
                &["policy", "rule", "reason"],
            )?,
            shadow_decisions: counter(
                &r,
                "modelgate_shadow_decisions_total",
                "Requests decided by a shadow policy as well, by live policy, shadow policy and agreement (same, other_deployment, shadow_refuses, shadow_allows).",
                &["policy", "shadow", "agreement"],
            )?,
            trace_spans: counter(
                &r,
                "modelgate_trace_spans_total",
                "Trace spans, by result: exported, queue_full (dropped: the export queue was full), export_failed (dropped: the collector did not take them).",
                &["result"],
            )?,
            limit_rejections: counter(
                &r,
                "modelgate_limit_rejections_total",
                "Requests refused with 429 by a rate limit or budget, by scope kind (key, tenant, deployment) and limit.",
                &["scope_kind", "limit"],
            )?,
            limit_store_errors: counter(
                &r,
                "modelgate_limit_store_errors_total",
                "Failures to reach the limit store, by operation (admit, settle, usage).",
                &["operation"],
            )?,
            budget_used: budget_gauges(&r)?,
            log_dropped: int_counter(
                &r,
                "modelgate_log_lines_dropped_total",
                "Log lines dropped because the log writer could not keep up with them.",
            )?,
            log_dropped_copied: std::sync::atomic::AtomicU64::new(0),
            shed: int_counter(
                &r,
                "modelgate_shed_total",
                "Requests refused with 503 because server.max_concurrent_requests were in flight.",
            )?,
            panics: int_counter(
                &r,
                "modelgate_panics_total",
                "Request handlers that panicked (answered 500).",
            )?,
            startup: registered(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "modelgate_startup_seconds",
                        "Time from process start to ready.",
                    )
                    .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0]),
                )?,
            )?,
            model: ModelFamilies::new(&r)?,
            config: ConfigFamilies::new(&r)?,
            registry: r,
        };
        m.zeros();
        Ok(m)
    }

    /// Zero from the start, so dashboards and alerts see the series before any failure.
    fn zeros(&self) {
        for op in ["admit", "settle", "usage"] {
            self.limit_store_errors.with_label_values(&[op]);
        }
        for result in ["exported", "queue_full", "export_failed"] {
            self.trace_spans.with_label_values(&[result]);
        }
    }

    /// The counters a trace exporter adds to.
    pub(crate) fn trace_counters(&self) -> crate::telemetry::traces::Counters {
        crate::telemetry::traces::Counters {
            exported: self.trace_spans.with_label_values(&["exported"]),
            queue_full: self.trace_spans.with_label_values(&["queue_full"]),
            export_failed: self.trace_spans.with_label_values(&["export_failed"]),
        }
    }

    /// The text exposition of every metric.
    pub(crate) fn render(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 << 10);
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        buf
    }

    /// Sets the ejection state of each deployment, at scrape time: the breakers keep their state
    /// without touching metrics on the request path, and removed deployments disappear.
    pub(crate) fn set_circuits(
        &self,
        deployments: &[std::sync::Arc<crate::config::Deployment>],
        health: &crate::upstream::health::Healths,
    ) {
        // Concurrent scrapes: `fetch_max` hands each increment to exactly one of them.
        let dropped = crate::telemetry::dropped_lines();
        let copied = self
            .log_dropped_copied
            .fetch_max(dropped, std::sync::atomic::Ordering::Relaxed);
        self.log_dropped.inc_by(dropped.saturating_sub(copied));
        let now = tokio::time::Instant::now();
        self.circuit.reset();
        for d in deployments.iter().filter(|d| d.endpoint.breaker.is_some()) {
            self.circuit
                .with_label_values(&[d.name.as_str()])
                .set(health.of(d).breaker.state(now).value());
        }
    }

    /// Records the configuration now in force, and makes every series whose labels it fixes
    /// exist at 0: a dashboard or an alert (`increase(...[10m]) > 0`) must see a series
    /// before its first event, or the first event is invisible to it.
    pub(crate) fn set_config(&self, snapshot: &crate::policy::Routing, series: &SeriesTable) {
        self.config.config_info.reset();
        self.config
            .config_info
            .with_label_values(&[snapshot.config.hash.as_str()])
            .set(1);
        self.config
            .deployments
            .set(i64::try_from(snapshot.deployments.len()).unwrap_or(i64::MAX));
        self.config.identity.reset();
        for d in &snapshot.deployments {
            let [deployment, _, model, ..] = model_labels(d, "");
            self.config
                .identity
                .with_label_values(&[
                    deployment,
                    model,
                    d.identity.basis.as_str(),
                    d.quantization().unwrap_or(""),
                ])
                .set(1);
        }
        self.config.withheld.reset();
        for (name, _) in &snapshot.withheld {
            self.config
                .withheld
                .with_label_values(&[name.as_str()])
                .set(1);
        }
        self.prime(snapshot, series);
    }

    pub(crate) fn attempt(&self, d: &Deployment, result: &str) {
        self.model
            .upstream_attempts
            .with_label_values(&model_labels(d, result))
            .inc();
    }

    /// What the attempts of a served request met.
    pub(crate) fn served(
        &self,
        failed: &[crate::upstream::Attempt],
        skipped: &[crate::upstream::Skip],
        retries: &[std::sync::Arc<Deployment>],
    ) {
        for a in failed {
            self.attempt(&a.deployment, a.error.label());
        }
        for s in skipped {
            self.attempt(&s.deployment, s.reason.label());
        }
        for d in retries {
            self.model
                .retries
                .with_label_values(&model_labels(d, "")[..5])
                .inc();
        }
    }

    /// What the attempts of a failed request met.
    pub(crate) fn failed_call(&self, e: &crate::upstream::UpstreamError) {
        self.served(&e.attempts, &e.skipped, &e.retries);
    }

    /// A request the policy allowed.
    pub(crate) fn decision(&self, d: &Decision) {
        self.decisions
            .with_label_values(&[&d.policy, &d.rule, "allowed"])
            .inc();
        // Counted by reason, not one by one: `auto` may refuse hundreds of deployments.
        for (kind, n) in d.refusal_kinds() {
            self.refusals
                .with_label_values(&[&d.policy, &d.rule, kind.as_str()])
                .inc_by(n as u64);
        }
    }

    /// A request its shadow policy decided as well.
    pub(crate) fn shadowed(&self, s: &crate::policy::Shadowed) {
        self.shadow_decisions
            .with_label_values(&[&s.live, &s.policy, s.agreement.as_str()])
            .inc();
    }

    /// A request the policy refused; returns the policy's name for the request metrics.
    pub(crate) fn refusal(&self, e: &PolicyError) -> Option<std::sync::Arc<str>> {
        match e {
            PolicyError::UnknownModel(_) | PolicyError::Withheld { .. } => None,
            PolicyError::NoRule { policy } => {
                self.decisions
                    .with_label_values(&[policy, "none", "refused"])
                    .inc();
                Some(policy.clone())
            }
            PolicyError::Refused {
                policy,
                rule,
                refused,
                ..
            } => {
                self.decisions
                    .with_label_values(&[policy, rule, "refused"])
                    .inc();
                let mut by_kind = [0u64; RefusalKind::ALL.len()];
                for (_, r) in refused {
                    if let Some(n) = by_kind.get_mut(r.kind as usize) {
                        *n += 1;
                    }
                }
                for (kind, n) in RefusalKind::ALL.into_iter().zip(by_kind) {
                    if n > 0 {
                        self.refusals
                            .with_label_values(&[policy, rule, kind.as_str()])
                            .inc_by(n);
                    }
                }
                Some(policy.clone())
            }
        }
    }
}

/// The families labelled by deployment and model, and the GenAI ones by model.
pub(crate) struct ModelFamilies {
    pub(crate) upstream_attempts: IntCounterVec,
    pub(crate) retries: IntCounterVec,
    pub(crate) tokens: IntCounterVec,
    pub(crate) cost: prometheus::CounterVec,
    pub(crate) ttft: HistogramVec,
    pub(crate) genai_tokens: HistogramVec,
    pub(crate) genai_duration: HistogramVec,
    pub(crate) stream_ends: IntCounterVec,
}

impl ModelFamilies {
    fn new(r: &Registry) -> prometheus::Result<ModelFamilies> {
        let with_model = |extra: &[&'static str]| -> Vec<&'static str> {
            let mut v = MODEL_LABELS.to_vec();
            v.extend_from_slice(extra);
            v
        };
        Ok(ModelFamilies {
            upstream_attempts: counter(
                r,
                "modelgate_upstream_attempts_total",
                "Attempts to call a deployment, by result (ok or the failure kind).",
                &with_model(&["result"]),
            )?,
            retries: counter(
                r,
                "modelgate_retries_total",
                "Retries of a deployment after a failed attempt.",
                MODEL_LABELS,
            )?,
            tokens: counter(
                r,
                "modelgate_tokens_total",
                "Tokens by direction (input or output), as reported by the upstream or estimated.",
                &with_model(&["direction"]),
            )?,
            cost: {
                let c = prometheus::CounterVec::new(
                    Opts::new(
                        "modelgate_cost_usd_total",
                        "Cost of answers in USD, from reported (or estimated) usage and the deployment's price.",
                    ),
                    MODEL_LABELS,
                )?;
                r.register(Box::new(c.clone()))?;
                c
            },
            ttft: histogram(
                r,
                "gen_ai_server_time_to_first_token_seconds",
                "Time from request to the first streamed bytes sent to the client.",
                MODEL_LABELS,
                TTFT_BUCKETS,
            )?,
            genai_tokens: histogram(
                r,
                "gen_ai_client_token_usage",
                "Tokens per answered request (OpenTelemetry GenAI gen_ai.client.token.usage), by token type.",
                &GENAI_LABELS_TOKENS,
                &[
                    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0,
                    1048576.0, 4194304.0,
                ],
            )?,
            genai_duration: histogram(
                r,
                "gen_ai_server_request_duration_seconds",
                "Time from request to the end of the answer (OpenTelemetry GenAI gen_ai.server.request.duration).",
                &GENAI_LABELS,
                &[
                    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48,
                    40.96, 81.92,
                ],
            )?,
            stream_ends: counter(
                r,
                "modelgate_stream_ends_total",
                "Streams ended, by how they ended.",
                &with_model(&["reason"]),
            )?,
        })
    }
}

/// What the configuration in force says, and how reloads went.
pub(crate) struct ConfigFamilies {
    pub(crate) config_reloads: IntCounterVec,
    pub(crate) config_info: IntGaugeVec,
    /// 1 per deployment served: how its model was identified, and its quantization.
    pub(crate) identity: IntGaugeVec,
    /// 1 per deployment withheld (weights that do not match their pin).
    pub(crate) withheld: IntGaugeVec,
    pub(crate) deployments: IntGauge,
}

impl ConfigFamilies {
    fn new(r: &Registry) -> prometheus::Result<ConfigFamilies> {
        Ok(ConfigFamilies {
            config_reloads: counter(
                r,
                "modelgate_config_reloads_total",
                "Configuration reloads, by result (ok, error, unchanged).",
                &["result"],
            )?,
            config_info: int_gauges(
                r,
                "modelgate_config_info",
                "The configuration in force (value 1), by its hash.",
                &["hash"],
            )?,
            identity: int_gauges(
                r,
                "modelgate_deployment_identity",
                "1 per deployment served: its model, how the model was identified (configured, digest, metadata, name, unknown), and the quantization where known.",
                &["deployment", "model", "basis", "quantization"],
            )?,
            withheld: int_gauges(
                r,
                "modelgate_deployment_withheld",
                "1 per deployment not served because its weights are not the pinned ones (or not shown yet).",
                &["deployment"],
            )?,
            deployments: gauge(
                r,
                "modelgate_deployments",
                "Deployments routable now (configured plus discovered).",
            )?,
        })
    }
}

/// Labels of a deployment's model, plus one more.
pub(crate) fn model_labels<'a>(d: &'a Deployment, extra: &'a str) -> [&'a str; 6] {
    let (deployment, model) = d.metric_names();
    [
        deployment,
        &d.endpoint.provider,
        model,
        d.model.openness.as_str(),
        &d.model.license.id,
        extra,
    ]
}

/// The status class label of a status.
pub(crate) fn status_class(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
