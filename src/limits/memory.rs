//! ④ Counters in this process: one lock, held for a few comparisons and additions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::usage::{Period, Totals, UsageEntry, UsageReport};
use super::{Charge, Levels, Limit, Refused, Scope, ScopeKind, Windows};

#[derive(Debug, Default)]
struct Counters {
    minute: u64,
    requests: u64,
    tokens: u64,
    day: String,
    day_micros: u64,
    month: String,
    month_micros: u64,
    /// Reservations in flight, by ticket.
    reserved: HashMap<String, u64>,
}

impl Counters {
    fn roll(&mut self, w: &Windows) {
        if self.minute != w.minute {
            self.minute = w.minute;
            self.requests = 0;
            self.tokens = 0;
        }
        if self.day != w.day {
            self.day.clone_from(&w.day);
            self.day_micros = 0;
        }
        if self.month != w.month {
            self.month.clone_from(&w.month);
            self.month_micros = 0;
        }
    }

    fn reserved(&self) -> u64 {
        self.reserved.values().sum()
    }
}

#[derive(Default)]
struct Inner {
    counters: HashMap<(ScopeKind, Arc<str>), Counters>,
    /// (tenant, period, `model|openness`) → totals; periods other than today and this month are
    /// dropped when the day changes.
    usage: HashMap<(Arc<str>, String, String), Totals>,
    usage_day: String,
}

#[derive(Default)]
pub struct MemoryStore(Mutex<Inner>);

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn admit(
        &self,
        scopes: &[Scope],
        charge: Charge,
        w: &Windows,
        id: &str,
    ) -> Result<Levels, Refused> {
        let mut inner = self.lock();
        // Check every scope before counting in any: a refused request counts nowhere.
        for s in scopes {
            let c = inner.counters.entry((s.kind, s.name.clone())).or_default();
            c.roll(w);
            let l = &s.limits;
            let reserved = c.reserved();
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
                return Err(Refused {
                    kind: s.kind,
                    name: s.name.clone(),
                    limit,
                    cap: limit.cap(l).unwrap_or(0),
                    retry_after: limit.reset(w),
                });
            }
        }
        let mut levels = Vec::new();
        for s in scopes {
            let c = inner.counters.entry((s.kind, s.name.clone())).or_default();
            c.requests += 1;
            c.tokens += charge.tokens;
            if s.limits.has_spend() {
                c.reserved.insert(id.to_owned(), charge.reserve_micros);
                let r = c.reserved();
                levels.push((s.clone(), c.day_micros + r, c.month_micros + r));
            }
        }
        Ok(levels)
    }

    pub fn finish(
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
        if inner.usage_day != w.day {
            inner.usage_day.clone_from(&w.day);
            inner
                .usage
                .retain(|(_, period, _), _| *period == w.day || *period == w.month);
        }
        for period in [&w.day, &w.month] {
            inner
                .usage
                .entry((e.tenant.clone(), period.clone(), e.field()))
                .or_default()
                .add(e);
        }
    }

    pub fn release(&self, id: &str, scopes: &[Scope], _charge: Charge) {
        let mut inner = self.lock();
        for s in scopes {
            if let Some(c) = inner.counters.get_mut(&(s.kind, s.name.clone())) {
                c.reserved.remove(id);
            }
        }
    }

    pub fn usage(&self, tenant: Option<&str>, w: &Windows) -> UsageReport {
        let inner = self.lock();
        let mut report = UsageReport {
            day: w.day.clone(),
            month: w.month.clone(),
            ..UsageReport::default()
        };
        for ((t, period, field), totals) in &inner.usage {
            if tenant.is_some_and(|want| want != &**t) {
                continue;
            }
            let (day, month): &mut (Period, Period) =
                report.tenants.entry(t.to_string()).or_default();
            let p = if *period == w.day {
                day
            } else if *period == w.month {
                month
            } else {
                continue;
            };
            p.insert(field.clone(), *totals);
        }
        report
    }
}
