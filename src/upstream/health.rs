//! ⑥ What the gateway has learned about each deployment: its outlier ejection state, its retry
//! budget, the cooldown its own `Retry-After` asked for, and its observed time to first byte.
//! Kept by deployment name across reloads, so a new configuration does not forget a failing
//! provider; a request finds it by the deployment's index in its snapshot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::breaker::{Breaker, BreakerConfig};
use super::retry::{RetryBudget, RetryPolicy};
use crate::config::{Deployment, Snapshot};

#[derive(Debug)]
pub(crate) struct Health {
    pub(crate) breaker: Breaker,
    pub(crate) budget: RetryBudget,
    breaker_config: BreakerConfig,
    budget_config: (u64, u32),
    /// Moving average of the time to response headers, in microseconds; 0 before any.
    first_byte_micros: AtomicU64,
    /// Until when the deployment asked not to be called (a 429 or 503 with `Retry-After`).
    cooldown: Mutex<Option<Instant>>,
}

impl Health {
    pub(crate) fn new(breaker: BreakerConfig, retry: &RetryPolicy) -> Health {
        Health {
            breaker: Breaker::new(breaker),
            budget: RetryBudget::new(retry.budget_ratio, retry.budget_min_per_second),
            breaker_config: breaker,
            budget_config: (retry.budget_ratio.to_bits(), retry.budget_min_per_second),
            first_byte_micros: AtomicU64::new(0),
            cooldown: Mutex::new(None),
        }
    }

    /// Keeps requests away until `until` (a later cooldown extends an earlier one).
    pub(crate) fn cool_down(&self, until: Instant) {
        let mut c = self.cooldown.lock().unwrap_or_else(PoisonError::into_inner);
        if c.is_none_or(|t| t < until) {
            *c = Some(until);
        }
    }

    /// How long the deployment still asked to be left alone, if at all.
    pub(crate) fn cooling(&self, now: Instant) -> Option<Duration> {
        let c = *self.cooldown.lock().unwrap_or_else(PoisonError::into_inner);
        c.filter(|t| *t > now).map(|t| t - now)
    }

    fn same_config(&self, breaker: &BreakerConfig, retry: &RetryPolicy) -> bool {
        self.breaker_config == *breaker
            && self.budget_config == (retry.budget_ratio.to_bits(), retry.budget_min_per_second)
    }

    /// Folds one observation into the moving average (weight 1/5).
    pub(crate) fn observe_first_byte(&self, d: Duration) {
        let x = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self
            .first_byte_micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    x
                } else {
                    (old.saturating_mul(4).saturating_add(x)) / 5
                })
            });
    }

    /// The average time to first byte, if any was observed.
    pub(crate) fn latency_seconds(&self) -> Option<f64> {
        match self.first_byte_micros.load(Ordering::Relaxed) {
            0 => None,
            us => Some(us as f64 / 1e6),
        }
    }
}

/// Health by deployment name, kept across snapshots.
#[derive(Debug, Default)]
pub(crate) struct HealthBook(Mutex<HashMap<String, Arc<Health>>>);

impl HealthBook {
    /// The health of each of a snapshot's deployments, by index: what the book knew of it
    /// when its settings did not change, fresh otherwise. Deployments that are gone are
    /// forgotten.
    pub(crate) fn healths(&self, snapshot: &Snapshot) -> Healths {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let by_index = snapshot
            .deployments
            .iter()
            .map(|d| {
                let breaker = d.endpoint.breaker.unwrap_or_else(BreakerConfig::never);
                let retry = &d.endpoint.retry;
                match map.get(&d.name) {
                    Some(h) if h.same_config(&breaker, retry) => h.clone(),
                    _ => {
                        let h = Arc::new(Health::new(breaker, retry));
                        map.insert(d.name.clone(), h.clone());
                        h
                    }
                }
            })
            .collect();
        let names: std::collections::HashSet<&str> = snapshot
            .deployments
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        map.retain(|k, _| names.contains(k.as_str()));
        Healths {
            by_index,
            spare: Arc::new(Health::new(BreakerConfig::never(), &RetryPolicy::default())),
        }
    }
}

/// The health of one snapshot's deployments, by their index.
#[derive(Debug)]
pub(crate) struct Healths {
    by_index: Vec<Arc<Health>>,
    /// For a deployment of another snapshot (never on a request's path, which keeps its own).
    spare: Arc<Health>,
}

impl Healths {
    /// Health that knows nothing yet, for each of a snapshot's deployments.
    #[cfg(test)]
    pub(crate) fn fresh(snapshot: &Snapshot) -> Healths {
        HealthBook::default().healths(snapshot)
    }

    pub(crate) fn of(&self, d: &Deployment) -> &Arc<Health> {
        self.by_index.get(d.index).unwrap_or(&self.spare)
    }
}

impl crate::policy::Observed for Healths {
    fn latency_seconds(&self, d: &Deployment) -> Option<f64> {
        self.of(d).latency_seconds()
    }
}
