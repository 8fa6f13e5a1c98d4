//! ⑥ Retries of one deployment: which failures are retried, how long to wait (exponential
//! backoff with full jitter, or the upstream's `Retry-After` when it is short enough), and a
//! retry budget that keeps a failing deployment from multiplying its load: retries may add at
//! most a fraction of the recent requests, plus a small floor (Envoy's and linkerd's budgets).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;

pub(crate) use crate::config::resilience::RetryPolicy;
pub(crate) use crate::config::spec::RetryOn;

static SEED: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);

/// A number in `[0, 1)`, different on each call (no cryptographic quality needed).
fn unit() -> f64 {
    let mut z = SEED.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

impl RetryPolicy {
    pub(crate) fn retries(&self, on: RetryOn) -> bool {
        self.on.contains(&on)
    }

    /// The wait before retry number `n` (from 0): full jitter over an exponential ceiling.
    pub(crate) fn backoff(&self, n: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow(n.min(16)))
            .min(self.max);
        ceiling.mul_f64(unit())
    }
}

/// The longest a deployment's `Retry-After` keeps requests away, and the most the gateway
/// tells a client to wait.
pub(crate) const MAX_COOLDOWN: Duration = Duration::from_secs(300);

/// `Retry-After` as a duration: seconds, or an HTTP date (relative to `now_unix`).
pub(crate) fn retry_after(v: &HeaderValue, now_unix: u64) -> Option<Duration> {
    let s = v.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let at = httpdate_to_unix(s)?;
    Some(Duration::from_secs(at.saturating_sub(now_unix)))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn httpdate_to_unix(s: &str) -> Option<u64> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: u64 = day.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as u64
        + 1;
    let year: u64 = year.parse().ok()?;
    let t: Vec<u64> = time
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [h, m, sec] = t.as_slice() else {
        return None;
    };
    // Out-of-range fields from a hostile upstream are refused, not computed with (the
    // arithmetic below would overflow).
    if !(1..=31).contains(&day) || !(1970..=9999).contains(&year) || *h > 23 || *m > 59 || *sec > 60
    {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, mo) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * mo + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe;
    let days = days.checked_sub(719_468)?;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

/// A sliding window of requests and retries: retries are allowed while they stay under
/// `ratio × requests + min_per_second × window`.
#[derive(Debug)]
pub(crate) struct RetryBudget {
    ratio: f64,
    min_per_second: u32,
    /// (second, requests, retries), one slot per second of the window.
    slots: Mutex<[(u64, u32, u32); WINDOW]>,
    start: Instant,
}

const WINDOW: usize = 10;

impl RetryBudget {
    pub(crate) fn new(ratio: f64, min_per_second: u32) -> RetryBudget {
        RetryBudget {
            ratio,
            min_per_second,
            slots: Mutex::new([(u64::MAX, 0, 0); WINDOW]),
            start: Instant::now(),
        }
    }

    fn with_slot<R>(
        &self,
        now: Instant,
        f: impl FnOnce(&mut [(u64, u32, u32); WINDOW], usize) -> R,
    ) -> R {
        let sec = now.saturating_duration_since(self.start).as_secs();
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let i = (sec % WINDOW as u64) as usize;
        if slots[i].0 != sec {
            slots[i] = (sec, 0, 0);
        }
        f(&mut slots, i)
    }

    /// Counts a first try.
    pub(crate) fn request(&self, now: Instant) {
        self.with_slot(now, |s, i| s[i].1 += 1);
    }

    /// Takes a retry from the budget, if there is one left.
    pub(crate) fn try_retry(&self, now: Instant) -> bool {
        let sec = now.saturating_duration_since(self.start).as_secs();
        self.with_slot(now, |s, i| {
            let live = s
                .iter()
                .filter(|(t, _, _)| *t != u64::MAX && sec.saturating_sub(*t) < WINDOW as u64);
            let (requests, retries) = live.fold((0u32, 0u32), |(q, r), (_, a, b)| (q + a, r + b));
            let allowed =
                self.ratio * f64::from(requests) + f64::from(self.min_per_second) * WINDOW as f64;
            if f64::from(retries + 1) <= allowed {
                s[i].2 += 1;
                true
            } else {
                false
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_under_an_exponential_ceiling() {
        let p = RetryPolicy::default();
        for n in 0..8 {
            for _ in 0..50 {
                let d = p.backoff(n);
                assert!(d <= (p.base * 2u32.pow(n)).min(p.max), "{n}: {d:?}");
            }
        }
        let waits: Vec<Duration> = (0..20).map(|_| p.backoff(3)).collect();
        assert!(waits.iter().any(|w| *w != waits[0]), "jitter");
    }

    #[test]
    fn retry_after_in_seconds_and_dates() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(retry_after(&v("7"), 0), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&v("1.5"), 0), Some(Duration::from_millis(1500)));
        // 1994-11-06T08:49:37Z is 784111777.
        assert_eq!(
            httpdate_to_unix("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            retry_after(&v("Sun, 06 Nov 1994 08:49:47 GMT"), 784_111_777),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            retry_after(&v("Sun, 06 Nov 1994 08:49:37 GMT"), 784_111_800),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&v("soon"), 0), None);
        for hostile in [
            "Sun, 00 Mar 1994 08:49:37 GMT",
            "Sun, 06 Jan 0 08:49:37 GMT",
            "Sun, 99999999999 Nov 99999999999 08:49:37 GMT",
            "Sun, 06 Nov 1994 99999999999:49:37 GMT",
        ] {
            assert_eq!(retry_after(&v(hostile), 0), None, "{hostile}");
        }
        assert_eq!(retry_after(&v("-3"), 0), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_bounds_retries_by_recent_requests() {
        let b = RetryBudget::new(0.2, 1);
        // The floor: 1 per second over the 10 s window.
        let now = Instant::now();
        let granted = (0..50).filter(|_| b.try_retry(now)).count();
        assert_eq!(granted, 10);
        // 100 more requests add 20 retries.
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..100 {
            b.request(Instant::now());
        }
        let granted = (0..50).filter(|_| b.try_retry(Instant::now())).count();
        assert_eq!(granted, 20);
        // After the window, the old retries no longer count.
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(b.try_retry(Instant::now()));
    }
}
