//! ④ Counters in this process: one lock, held for a few comparisons and additions.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::base::FastMap;

use super::usage::{Period, Totals, UsageEntry, UsageReport};
use super::window::Stamp;
use super::{Charge, Levels, Limit, Refused, Scope, ScopeKind, Windows};

#[derive(Debug, Default)]
struct Counters {
    minute: u64,
    requests: u64,
    tokens: u64,
    day: Stamp,
    day_micros: u64,
    month: Stamp,
    month_micros: u64,
    /// Reservations in flight, by ticket: micros, and when the reservation lapses.
    reserved: FastMap<String, (u64, Instant)>,
}

impl Counters {
    fn roll(&mut self, w: &Windows) {
        if self.minute != w.minute {
            self.minute = w.minute;
            self.requests = 0;
            self.tokens = 0;
        }
        if self.day != w.day {
            self.day = w.day;
            self.day_micros = 0;
        }
        if self.month != w.month {
            self.month = w.month;
            self.month_micros = 0;
        }
    }

    /// What reservations hold, once those past their lifetime are dropped.
    fn reserved(&mut self, now: Instant) -> u64 {
        self.reserved.retain(|_, (_, until)| *until > now);
        self.reserved.values().map(|(m, _)| m).sum()
    }
}

/// Tenant, model, openness class.
type UsageKey = (Arc<str>, Arc<str>, &'static str);

#[derive(Default)]
struct Inner {
    counters: FastMap<(ScopeKind, Arc<str>), Counters>,
    /// (tenant, model, openness) → totals of the day and of the month [`Self::usage_day`] and
    /// [`Self::usage_month`]: keys of shared strings, so recording a request allocates nothing.
    usage: FastMap<UsageKey, (Totals, Totals)>,
    usage_day: Stamp,
    usage_month: Stamp,
}

#[derive(Default)]
pub struct MemoryStore(Mutex<Inner>);

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn admit(
        &self,
        scopes: &[Scope],
        charge: Charge,
        w: &Windows,
        id: &str,
    ) -> Result<Levels, Refused> {
        let mut inner = self.lock();
        let now = Instant::now();
        // Check every scope before counting in any: a refused request counts nowhere.
        for s in scopes {
            let c = inner.counters.entry((s.kind, s.name.clone())).or_default();
            c.roll(w);
            let l = &s.limits;
            let reserved = c.reserved(now);
            let over = [
                (Limit::RequestsPerMinute, c.requests + 1),
                (Limit::TokensPerMinute, c.tokens + charge.tokens),
                (
                    Limit::UsdPerDay,
                    c.day_micros + reserved + charge.reserve_micros,
                ),
                (
                    Limit::UsdPerMonth,
                    c.month_micros + reserved + charge.reserve_micros,
                ),
            ]
            .into_iter()
            .find(|(limit, want)| limit.cap(l).is_some_and(|cap| *want > cap));
            if let Some((limit, _)) = over {
                let cap = limit.cap(l).unwrap_or(0);
                let settled = match limit {
                    Limit::UsdPerDay => c.day_micros,
                    _ => c.month_micros,
                };
                let by_reservations = matches!(limit, Limit::UsdPerDay | Limit::UsdPerMonth)
                    && reserved > 0
                    && settled + charge.reserve_micros <= cap;
                return Err(Refused {
                    kind: s.kind,
                    name: s.name.clone(),
                    limit,
                    cap,
                    retry_after: super::spend_retry(limit, w, by_reservations),
                });
            }
        }
        let mut levels = Vec::new();
        for s in scopes {
            let c = inner.counters.entry((s.kind, s.name.clone())).or_default();
            c.requests += 1;
            c.tokens += charge.tokens;
            if s.limits.has_spend() {
                c.reserved.insert(
                    id.to_owned(),
                    (charge.reserve_micros, now + charge.lifetime),
                );
                let r = c.reserved(now);
                levels.push((s.clone(), c.day_micros + r, c.month_micros + r));
            }
        }
        Ok(levels)
    }

    pub(crate) fn finish(
        &self,
        settle: Option<&(String, Vec<Scope>, Charge)>,
        e: &UsageEntry,
        w: &Windows,
    ) {
        let mut inner = self.lock();
        if let Some((id, scopes, charge)) = settle {
            for s in scopes {
                let c = inner.counters.entry((s.kind, s.name.clone())).or_default();
                c.reserved.remove(id);
                c.roll(w);
                c.day_micros += e.cost_micros;
                c.month_micros += e.cost_micros;
                // Tokens counted at admission were the prompt and `max_tokens`; what came
                // beyond that counts now.
                c.tokens += (e.input_tokens + e.output_tokens).saturating_sub(charge.tokens);
            }
        }
        // Periods only move forward: a request that took its clock reading before a newer one
        // got here first counts in the periods that are still current (ISO dates compare as
        // text).
        if inner.usage_month < w.month {
            inner.usage_month = w.month;
            for (_, month) in inner.usage.values_mut() {
                *month = Totals::default();
            }
        }
        if inner.usage_day < w.day {
            inner.usage_day = w.day;
            inner.usage.retain(|_, (day, month)| {
                *day = Totals::default();
                *month != Totals::default()
            });
        }
        let (this_day, this_month) = (inner.usage_day == w.day, inner.usage_month == w.month);
        let (day, month) = inner
            .usage
            .entry((e.tenant.clone(), e.model.clone(), e.openness))
            .or_default();
        if this_day {
            day.add(e);
        }
        if this_month {
            month.add(e);
        }
    }

    pub(crate) fn release(&self, id: &str, scopes: &[Scope], _charge: Charge) {
        let mut inner = self.lock();
        for s in scopes {
            if let Some(c) = inner.counters.get_mut(&(s.kind, s.name.clone())) {
                c.reserved.remove(id);
            }
        }
    }

    pub(crate) fn usage(&self, tenant: Option<&str>, w: &Windows) -> UsageReport {
        let inner = self.lock();
        let mut report = UsageReport {
            day: w.day.to_string(),
            month: w.month.to_string(),
            ..UsageReport::default()
        };
        // Totals of a day or month that has passed since the last request are not reported.
        let day_current = inner.usage_day == w.day;
        let month_current = inner.usage_month == w.month;
        for ((t, model, openness), (day, month)) in &inner.usage {
            if tenant.is_some_and(|want| want != &**t) {
                continue;
            }
            let (days, months): &mut (Period, Period) =
                report.tenants.entry(t.to_string()).or_default();
            let field = format!("{model}|{openness}");
            if day_current && *day != Totals::default() {
                days.insert(field.clone(), *day);
            }
            if month_current && *month != Totals::default() {
                months.insert(field, *month);
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(tenant: &str, model: &str) -> UsageEntry {
        UsageEntry {
            tenant: Arc::from(tenant),
            model: Arc::from(model),
            openness: "open-weight",
            input_tokens: 10,
            output_tokens: 5,
            cost_micros: 7,
        }
    }

    fn requests(r: &UsageReport, tenant: &str) -> (u64, u64) {
        r.tenants.get(tenant).map_or((0, 0), |(day, month)| {
            (
                day.values().map(|t| t.requests).sum(),
                month.values().map(|t| t.requests).sum(),
            )
        })
    }

    #[test]
    fn usage_rolls_over_by_day_and_month() {
        let store = MemoryStore::default();
        // 2026-11-27 and 2026-11-28 at noon, 2026-12-01 at noon (UTC).
        let (d27, d28, dec1) = (
            Windows::at_ms(1_795_780_800_000),
            Windows::at_ms(1_795_867_200_000),
            Windows::at_ms(1_796_126_400_000),
        );
        store.finish(None, &entry("a", "m"), &d27);
        store.finish(None, &entry("a", "m"), &d27);
        store.finish(None, &entry("b", "m"), &d27);
        assert_eq!(requests(&store.usage(None, &d27), "a"), (2, 2));
        let only_a = store.usage(Some("a"), &d27);
        assert!(!only_a.tenants.contains_key("b"));
        let t = only_a.tenants["a"].0["m|open-weight"];
        assert_eq!(
            (t.input_tokens, t.output_tokens, t.usd_micros),
            (20, 10, 14)
        );

        // Read on the next day before any request there: the day is empty, the month is not.
        assert_eq!(requests(&store.usage(None, &d28), "a"), (0, 2));
        store.finish(None, &entry("a", "m"), &d28);
        assert_eq!(requests(&store.usage(None, &d28), "a"), (1, 3));
        assert_eq!(requests(&store.usage(None, &d28), "b"), (0, 1));

        store.finish(None, &entry("a", "m"), &dec1);
        assert_eq!(requests(&store.usage(None, &dec1), "a"), (1, 1));
        assert_eq!(requests(&store.usage(None, &dec1), "b"), (0, 0));
        assert_eq!(store.lock().usage.len(), 1, "last month's entries are gone");

        // A request that read the clock before the month turned, recorded after: it counts in
        // no period that is still current, and does not turn the clock back.
        store.finish(None, &entry("a", "m"), &d28);
        assert_eq!(requests(&store.usage(None, &dec1), "a"), (1, 1));
    }
}
