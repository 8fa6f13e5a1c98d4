//! How a deployment is retried and when it is ejected, as configured: plain settings, read by
//! the upstream's breakers and retry budgets.

use std::time::Duration;

use super::spec::RetryOn;

/// When to eject.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct BreakerConfig {
    /// Consecutive failures that eject.
    pub(crate) consecutive_failures: u32,
    /// Failure rate (0–1) over the recent window that ejects.
    pub(crate) failure_rate: f64,
    /// Size of the recent window.
    pub(crate) window: usize,
    /// Fewest attempts in the window before the rate counts.
    pub(crate) min_requests: usize,
    /// First ejection.
    pub(crate) base_ejection: Duration,
    /// Longest ejection.
    pub(crate) max_ejection: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: 20,
            min_requests: 10,
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(30),
        }
    }
}

impl BreakerConfig {
    /// Settings that never eject: what an endpoint with ejection turned off is kept by.
    pub(crate) fn never() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: u32::MAX,
            failure_rate: 2.0,
            ..BreakerConfig::default()
        }
    }
}

/// How one deployment is retried.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RetryPolicy {
    /// Retries after the first try.
    pub(crate) attempts: u32,
    pub(crate) on: Vec<RetryOn>,
    pub(crate) base: Duration,
    pub(crate) max: Duration,
    /// Longest `Retry-After` waited for; a longer one moves on to the next deployment.
    pub(crate) max_retry_after: Duration,
    /// Retries may add this fraction of recent requests...
    pub(crate) budget_ratio: f64,
    /// ...plus this many per second.
    pub(crate) budget_min_per_second: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 1,
            on: vec![
                RetryOn::Connect,
                RetryOn::Timeout,
                RetryOn::RequestTimeout,
                RetryOn::RateLimited,
                RetryOn::ServerError,
            ],
            base: Duration::from_millis(100),
            max: Duration::from_secs(2),
            max_retry_after: Duration::from_secs(10),
            budget_ratio: 0.2,
            budget_min_per_second: 3,
        }
    }
}
