//! ⑥ Outlier ejection per deployment: after consecutive failures, or a failure rate over the
//! recent attempts, the deployment is ejected for a while; then one probe request decides whether
//! it comes back. Each ejection doubles the wait, up to a maximum (Envoy's outlier detection,
//! linkerd's failure accrual).

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

pub(crate) use crate::config::resilience::BreakerConfig;

/// The state, as exported in metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CircuitState {
    Closed,
    HalfOpen,
    Open,
}

impl CircuitState {
    /// The metric value: 0 closed, 1 half-open, 2 open.
    pub(crate) fn value(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        }
    }
}

/// Whether an attempt may go to the deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    Yes,
    /// The one request that tests an ejected deployment.
    Probe,
    /// Ejected; try again after this long.
    No(Duration),
}

#[derive(Debug, Default)]
struct State {
    consecutive: u32,
    recent: VecDeque<bool>,
    open_until: Option<Instant>,
    ejections: u32,
    probing: bool,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    cfg: BreakerConfig,
    state: Mutex<State>,
}

impl Breaker {
    pub(crate) fn new(cfg: BreakerConfig) -> Breaker {
        Breaker {
            cfg,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn admit(&self, now: Instant) -> Admit {
        let mut s = self.lock();
        match s.open_until {
            None => Admit::Yes,
            Some(until) if now < until => Admit::No(until - now),
            Some(_) if s.probing => Admit::No(self.cfg.base_ejection),
            Some(_) => {
                s.probing = true;
                Admit::Probe
            }
        }
    }

    /// Records the outcome of an attempt (`ok` false for failures that are the deployment's).
    pub(crate) fn record(&self, ok: bool, now: Instant) {
        let mut s = self.lock();
        if s.probing || s.open_until.is_some_and(|u| now >= u) {
            s.probing = false;
            if ok {
                *s = State::default();
            } else {
                self.eject(&mut s, now);
            }
            return;
        }
        if s.open_until.is_some() {
            // An attempt that began before the ejection: it changes nothing.
            return;
        }
        s.consecutive = if ok { 0 } else { s.consecutive + 1 };
        s.recent.push_back(ok);
        while s.recent.len() > self.cfg.window {
            s.recent.pop_front();
        }
        let failures = s.recent.iter().filter(|ok| !**ok).count();
        let rate_exceeded = s.recent.len() >= self.cfg.min_requests
            && failures as f64 >= self.cfg.failure_rate * s.recent.len() as f64;
        if s.consecutive >= self.cfg.consecutive_failures || rate_exceeded {
            self.eject(&mut s, now);
        }
    }

    fn eject(&self, s: &mut State, now: Instant) {
        let factor = 2u32.saturating_pow(s.ejections.min(16));
        let wait = self
            .cfg
            .base_ejection
            .saturating_mul(factor)
            .min(self.cfg.max_ejection);
        s.open_until = Some(now + wait);
        s.ejections = s.ejections.saturating_add(1);
        s.consecutive = 0;
        s.recent.clear();
    }

    pub(crate) fn state(&self, now: Instant) -> CircuitState {
        let s = self.lock();
        match s.open_until {
            None => CircuitState::Closed,
            Some(until) if now < until => CircuitState::Open,
            Some(_) => CircuitState::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ejects_after_consecutive_failures_and_probes_with_growing_waits() {
        let b = Breaker::new(BreakerConfig::default());
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(b.admit(Instant::now()), Admit::Yes);
            b.record(false, Instant::now());
        }
        assert_eq!(b.state(Instant::now()), CircuitState::Closed);
        b.record(false, Instant::now());
        assert_eq!(b.state(Instant::now()), CircuitState::Open);
        assert_eq!(b.admit(Instant::now()), Admit::No(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert_eq!(b.state(Instant::now()), CircuitState::HalfOpen);
        assert_eq!(b.admit(Instant::now()), Admit::Probe);
        // Only one probe at a time.
        assert!(matches!(b.admit(Instant::now()), Admit::No(_)));
        b.record(false, Instant::now());
        // Second ejection: twice as long.
        assert_eq!(b.admit(Instant::now()), Admit::No(Duration::from_secs(2)));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(b.admit(Instant::now()), Admit::Probe);
        b.record(true, Instant::now());
        assert_eq!(b.state(Instant::now()), CircuitState::Closed);
        assert_eq!(b.admit(Instant::now()), Admit::Yes);
        assert!(Instant::now() - t0 >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn ejects_on_a_failure_rate_and_caps_the_wait() {
        let b = Breaker::new(BreakerConfig::default());
        // Alternating failures never reach 5 in a row, but half of 10 fail.
        for i in 0..10 {
            b.record(i % 2 == 0, Instant::now());
        }
        assert_eq!(b.state(Instant::now()), CircuitState::Open);
        // Many failed probes: the wait stops growing at 30 s.
        for _ in 0..10 {
            let Admit::No(wait) = b.admit(Instant::now()) else {
                panic!()
            };
            assert!(wait <= Duration::from_secs(30));
            tokio::time::advance(wait).await;
            assert_eq!(b.admit(Instant::now()), Admit::Probe);
            b.record(false, Instant::now());
        }
        assert_eq!(b.admit(Instant::now()), Admit::No(Duration::from_secs(30)));
    }
}
