//! ⑥ The attempt loop of one request: the decision's deployments in order; each may be retried
//! (backoff with jitter, within its retry budget and the request's deadline) before the next is
//! tried. A deployment that answers `Retry-After` cools down for that long: the next deployment
//! is tried at once, and only the last one is waited for. Ejected and cooling deployments are
//! skipped; a deployment that a reload has since disallowed is not tried. It can reach
//! deployments only through the decision.

use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;

use super::breaker::{Admit, CircuitState};
use super::error::{Attempt, AttemptError, Phase, Skip, SkipReason, UpstreamError};
use super::health::{Health, Healths};
use super::retry::{MAX_COOLDOWN, RetryPolicy};
use crate::config::Deployment;
use crate::policy::Decision;
use crate::telemetry::traces::{self, Trace};

/// How the attempts of one request are bounded.
pub(crate) struct Plan<'a> {
    /// No attempt or wait goes past this.
    pub(crate) deadline: Instant,
    /// Whether a deployment is still allowed when its attempt starts.
    pub(crate) allowed: &'a (dyn Fn(&Deployment) -> bool + Sync),
    /// Deployments' own rate limits, and the tokens the request counts for.
    pub(crate) gate: Option<(&'a crate::limits::Limiter, u64)>,
    /// What is known of each deployment of the decision's snapshot.
    pub(crate) health: &'a Healths,
    /// The request's trace, which gets a span per attempt (when traces are exported).
    pub(crate) trace: &'a Trace,
}

impl Plan<'_> {
    /// A plan with a deadline, no re-check and no deployment limits.
    #[cfg(test)]
    pub(crate) fn until(deadline: Instant, health: &Healths) -> Plan<'_> {
        Plan {
            deadline,
            allowed: &|_| true,
            gate: None,
            health,
            trace: &None,
        }
    }
}

/// The deployment that answered, and what came before.
pub(crate) struct Served<T> {
    pub(crate) deployment: Arc<Deployment>,
    pub(crate) answer: T,
    /// Failed attempts before the answer.
    pub(crate) failed: Vec<Attempt>,
    /// Allowed deployments not tried.
    pub(crate) skipped: Vec<Skip>,
    /// The deployment of each retry made.
    pub(crate) retries: Vec<Arc<Deployment>>,
}

/// An attempt's answer.
pub(crate) trait Answered {
    /// Takes the record of the attempt's success, to make once its first bytes are out (a
    /// stream: off the way to them); `false` if it did not, and the loop makes it at once.
    fn record_later(&mut self, _health: &Arc<Health>) -> bool {
        false
    }
}

impl Answered for () {}

fn record(health: &Health, d: &Deployment, error: Option<&AttemptError>) {
    if d.endpoint.breaker.is_none() {
        return;
    }
    let ok = match error {
        None => true,
        Some(e) => match e.is_deployment_failure() {
            None => return,
            Some(failed) => !failed,
        },
    };
    health.breaker.record(ok, Instant::now());
}

fn now_unix() -> u64 {
    super::unix_now()
}

/// Why a deployment is not tried now, if it is not: a reload disallowed it, it is ejected,
/// it asked for a pause, or it is over its own rate limit. `Ok(true)`: the attempt is the
/// breaker's probe of an ejected deployment.
async fn not_now(
    plan: &Plan<'_>,
    d: &Deployment,
    health: &Health,
    now: Instant,
) -> Result<bool, SkipReason> {
    if !(plan.allowed)(d) {
        return Err(SkipReason::Reloaded);
    }
    let mut probe = false;
    if d.endpoint.breaker.is_some() {
        match health.breaker.admit(now) {
            Admit::No(wait) => return Err(SkipReason::Ejected(wait)),
            Admit::Probe => probe = true,
            Admit::Yes => {}
        }
    }
    if let Some(wait) = health.cooling(now) {
        return Err(SkipReason::CoolingDown(wait));
    }
    if let (Some((limiter, tokens)), Some(scope)) = (&plan.gate, &d.endpoint.limits) {
        if let Err(e) = limiter.count(scope, *tokens).await {
            return Err(SkipReason::Limited(match e {
                crate::limits::LimitError::Refused(r) => r.retry_after,
                crate::limits::LimitError::Unavailable => std::time::Duration::from_secs(1),
            }));
        }
        // The limit store may have taken a while: a reload may have landed meanwhile.
        if !(plan.allowed)(d) {
            return Err(SkipReason::Reloaded);
        }
    }
    Ok(probe)
}

/// How long to wait before trying the same deployment again after `error` (none: move on).
/// A `Retry-After` cools the deployment down either way.
fn retry_wait(
    error: &AttemptError,
    health: &Health,
    policy: &RetryPolicy,
    tries: u32,
    last: bool,
) -> Option<std::time::Duration> {
    let retry_after = error.retry_after(now_unix());
    if let Some(ra) = retry_after {
        health.cool_down(Instant::now() + ra.min(MAX_COOLDOWN));
    }
    match error.retry_on() {
        Some(on) if policy.retries(on) && tries < policy.attempts => match retry_after {
            // Waited for only when no other deployment can take the request.
            Some(ra) if last && ra <= policy.max_retry_after => Some(ra),
            Some(_) => None,
            None => Some(policy.backoff(tries)),
        },
        _ => None,
    }
}

/// Runs the attempts.
pub(crate) async fn run<T, F, Fut>(
    decision: &Decision,
    plan: &Plan<'_>,
    mut attempt: F,
) -> Result<Served<T>, UpstreamError>
where
    F: FnMut(Arc<Deployment>) -> Fut,
    T: Answered,
    Fut: Future<Output = Result<T, AttemptError>>,
{
    let mut failed = Vec::new();
    let mut skipped = Vec::new();
    let mut retries = Vec::new();
    let candidates = decision.candidates();
    'candidates: for (i, d) in candidates.iter().enumerate() {
        let last = i + 1 == candidates.len();
        let health = plan.health.of(d);
        // One reading of the clock for the checks before the first try.
        let now = Instant::now();
        let probe = match not_now(plan, d, health, now).await {
            Ok(probe) => probe,
            Err(reason) => {
                trace_skip(plan.trace, d, &reason);
                skipped.push(Skip {
                    deployment: d.clone(),
                    reason,
                });
                continue;
            }
        };
        health.budget.request(now);
        let mut tries = 0u32;
        loop {
            if Instant::now() >= plan.deadline {
                failed.push(Attempt {
                    deployment: d.clone(),
                    error: AttemptError::Timeout(Phase::Total),
                });
                break 'candidates;
            }
            let kind = if tries > 0 {
                "retry"
            } else if failed.is_empty() && skipped.is_empty() {
                "first"
            } else {
                "fallback"
            };
            trace_start(plan.trace, d);
            // Boxed: inline, the attempt's future would be moved into the timeout and again into
            // this one's state, and every future above would hold its size. Made in its box.
            let attempt = crate::base::pinned(|| attempt(d.clone()));
            let result = match tokio::time::timeout_at(plan.deadline, attempt).await {
                Ok(r) => r,
                Err(_) => Err(AttemptError::Timeout(Phase::Total)),
            };
            let result = result.map_err(|e| e.cleaned(&d.endpoint.masks));
            trace_end(plan.trace, d, kind, result.as_ref().err());
            let error = match result {
                Ok(mut answer) => {
                    // A probe's success is recorded at once: until it is, the deployment
                    // takes no other request, and a stream's first bytes wait on its client.
                    if d.endpoint.breaker.is_some() && (probe || !answer.record_later(health)) {
                        record(health, d, None);
                    }
                    return Ok(Served {
                        deployment: d.clone(),
                        answer,
                        failed,
                        skipped,
                        retries,
                    });
                }
                Err(e) => e,
            };
            record(health, d, Some(&error));
            tracing::warn!(deployment = %d.name, error = %error, retry = tries, "upstream attempt failed");
            let falls_back = error.falls_back();
            let wait = retry_wait(&error, health, &d.endpoint.retry, tries, last);
            failed.push(Attempt {
                deployment: d.clone(),
                error,
            });
            if let Some(wait) = wait {
                let at = Instant::now() + wait;
                // A deployment this failure ejected is not retried.
                let admitted = d.endpoint.breaker.is_none()
                    || health.breaker.state(Instant::now()) == CircuitState::Closed;
                if at < plan.deadline && admitted && health.budget.try_retry(Instant::now()) {
                    tokio::time::sleep_until(at).await;
                    // Every attempt is checked, retries too: a reload during the wait may
                    // have taken this deployment away from the request.
                    if !(plan.allowed)(d) {
                        trace_skip(plan.trace, d, &SkipReason::Reloaded);
                        skipped.push(Skip {
                            deployment: d.clone(),
                            reason: SkipReason::Reloaded,
                        });
                        break;
                    }
                    tries += 1;
                    retries.push(d.clone());
                    continue;
                }
            }
            if !falls_back {
                break 'candidates;
            }
            break;
        }
    }
    Err(UpstreamError {
        attempts: failed,
        skipped,
        retries,
    })
}

/// An allowed deployment not tried, on the request's span.
fn trace_skip(trace: &Trace, d: &Deployment, reason: &SkipReason) {
    traces::with(trace, |t| {
        t.event("modelgate.skipped", |a| {
            a.str("modelgate.deployment", d.name.as_str())
                .str("modelgate.skip_reason", reason.label());
        });
    });
}

/// Starts an attempt's span, and makes it the one whose `traceparent` goes upstream.
fn trace_start(trace: &Trace, d: &Deployment) {
    traces::with(trace, |t| {
        t.start_attempt(&d.upstream_model, d.endpoint.trace_context);
    });
}

/// Ends an attempt's span with what became of it.
fn trace_end(trace: &Trace, d: &Deployment, kind: &str, error: Option<&AttemptError>) {
    if trace.is_none() {
        return;
    }
    let message = error.map(ToString::to_string);
    traces::with(trace, |t| {
        let error = error.zip(message.as_deref()).map(|(e, m)| (e.label(), m));
        t.end_attempt(error, |a| {
            a.str("modelgate.deployment", d.name.as_str())
                .str("modelgate.attempt", kind)
                .str(
                    "gen_ai.provider.name",
                    traces::provider_name(d.endpoint.provider.as_str()),
                )
                .str("gen_ai.request.model", d.upstream_model.as_str())
                .str("modelgate.openness", d.model.openness.as_str())
                .str("modelgate.license", d.model.license.id.as_str());
        });
    });
}

#[cfg(test)]
mod tests;
