//! ⑥ What the gateway has learned about each deployment: its outlier ejection state, its retry
//! budget, the cooldown its own `Retry-After` asked for, and its observed time to first byte. Kept by deployment name across reloads, so a
//! new configuration does not forget a failing provider.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::breaker::{Breaker, BreakerConfig};
use super::retry::{RetryBudget, RetryPolicy};

#[derive(Debug)]
pub struct Health {
    pub breaker: Breaker,
    pub budget: RetryBudget,
    breaker_config: BreakerConfig,
    budget_config: (u64, u32),
    /// Moving average of the time to response headers, in microseconds; 0 before any.
    first_byte_micros: AtomicU64,
    /// Until when the deployment asked not to be called (a 429 or 503 with `Retry-After`).
    cooldown: Mutex<Option<Instant>>,
}

impl Health {
    pub fn new(breaker: BreakerConfig, retry: &RetryPolicy) -> Health {
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
    pub fn cool_down(&self, until: Instant) {
        let mut c = self.cooldown.lock().unwrap_or_else(PoisonError::into_inner);
        if c.is_none_or(|t| t < until) {
            *c = Some(until);
        }
    }

    /// How long the deployment still asked to be left alone, if at all.
    pub fn cooling(&self, now: Instant) -> Option<Duration> {
        let c = *self.cooldown.lock().unwrap_or_else(PoisonError::into_inner);
        c.filter(|t| *t > now).map(|t| t - now)
    }

    fn same_config(&self, breaker: &BreakerConfig, retry: &RetryPolicy) -> bool {
        self.breaker_config == *breaker
            && self.budget_config == (retry.budget_ratio.to_bits(), retry.budget_min_per_second)
    }

    /// Folds one observation into the moving average (weight 1/5).
    pub fn observe_first_byte(&self, d: Duration) {
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
    pub fn latency_seconds(&self) -> Option<f64> {
        match self.first_byte_micros.load(Ordering::Relaxed) {
            0 => None,
            us => Some(us as f64 / 1e6),
        }
    }
}

/// Health by deployment name.
#[derive(Debug, Default)]
pub struct HealthBook(Mutex<HashMap<String, Arc<Health>>>);

impl HealthBook {
    /// The health of `name`; a fresh one when the deployment is new or its settings changed.
    pub fn get(&self, name: &str, breaker: &BreakerConfig, retry: &RetryPolicy) -> Arc<Health> {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get(name) {
            Some(h) if h.same_config(breaker, retry) => h.clone(),
            _ => {
                let h = Arc::new(Health::new(*breaker, retry));
                map.insert(name.to_owned(), h.clone());
                h
            }
        }
    }

    /// Forgets deployments that are gone.
    pub fn retain(&self, names: &[&str]) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|k, _| names.contains(&k.as_str()));
    }
}
