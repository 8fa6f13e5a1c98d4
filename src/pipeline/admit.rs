//! ④ Counting a request against its caller's limits: what it can cost at most, and how long
//! it may take.

use crate::auth::Caller;
use crate::config::Deployment;
use crate::error::GatewayError;
use crate::live::Current;
use crate::policy;

use super::Ctx;

/// How long a request may take to be answered (to its first content, for streams): the first
/// choice's `timeouts.total`. Retries and fallbacks cannot extend it.
pub(super) fn deadline_of(decision: &policy::Decision) -> std::time::Duration {
    decision
        .candidates()
        .first()
        .map_or(std::time::Duration::from_secs(600), |d| {
            d.endpoint.timeouts.total
        })
}

/// The most a request can cost, in micros, on the most expensive deployment it may reach: the
/// prompt at `prompt_bound` tokens (an upper bound, never an estimate) and the longest answer
/// as if the prompt took none of the context window (a loose prompt bound must not shrink
/// the answer's). More than the price cap's worst case, which estimates: a reservation must
/// hold whatever happens.
pub(super) fn reservation(
    decision: &policy::Decision,
    prompt_bound: impl Fn(&Deployment) -> u64,
    max_output: Option<u32>,
    choices: Option<u32>,
) -> u64 {
    let choices = u64::from(choices.unwrap_or(1));
    let worst = decision
        .candidates()
        .unordered()
        .map(|d| {
            let out = policy::worst_output(d, 0, max_output) * choices;
            // The prompt at its dearest rate: writing it to a provider's cache costs more.
            let p = &d.price;
            let input = p.cache_write.map_or(p.input, |w| w.max(p.input));
            (prompt_bound(d) as f64 * input + out as f64 * p.output) / 1e6
        })
        .fold(0.0, f64::max);
    crate::limits::micros(worst)
}

/// Counts a request against its caller's limits with its `charge` (none without limits).
pub(super) async fn admit(
    ctx: &Ctx,
    current: &Current,
    caller: &Caller,
    charge: Option<crate::limits::Charge>,
) -> Result<Option<crate::limits::Ticket>, GatewayError> {
    let Some(charge) = charge.filter(|_| !caller.limits.is_empty()) else {
        return Ok(None);
    };
    match current.limiter.admit(&caller.limits, charge).await {
        Ok(Some((ticket, levels))) => {
            for (scope, day, month) in levels {
                for (window, used, cap) in [
                    ("day", day, scope.limits.usd_micros_per_day),
                    ("month", month, scope.limits.usd_micros_per_month),
                ] {
                    if let Some(cap) = cap {
                        ctx.metrics
                            .budget_used
                            .with_label_values(&[scope.kind.as_str(), &scope.name, window])
                            .set(if cap == 0 {
                                1.0
                            } else {
                                used as f64 / cap as f64
                            });
                    }
                }
            }
            Ok(Some(ticket))
        }
        Ok(None) => Ok(None),
        Err(e) => {
            if let crate::limits::LimitError::Refused(r) = &e {
                ctx.metrics
                    .limit_rejections
                    .with_label_values(&[r.kind.as_str(), r.limit.as_str()])
                    .inc();
            }
            Err(e.into())
        }
    }
}
