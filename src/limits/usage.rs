//! ④ What was used, by tenant, model and openness class, for the current day and month:
//! recorded for every answered request, read by `GET /v1/usage`.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

/// One answered request's usage.
#[derive(Clone, Debug)]
pub struct UsageEntry {
    pub tenant: Arc<str>,
    pub model: Arc<str>,
    pub openness: &'static str,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
}

impl UsageEntry {
    /// The field prefix of this entry's totals in a store: `model|openness`.
    pub(crate) fn field(&self) -> String {
        format!("{}|{}", self.model, self.openness)
    }
}

/// Totals of one (model, openness) or of a whole period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Totals {
    pub(crate) requests: u64,
    pub(crate) input_tokens: u64,
    pub(crate) output_tokens: u64,
    pub(crate) usd_micros: u64,
}

impl Totals {
    pub(crate) fn add(&mut self, e: &UsageEntry) {
        self.requests += 1;
        self.input_tokens += e.input_tokens;
        self.output_tokens += e.output_tokens;
        self.usd_micros += e.cost_micros;
    }

    /// Adds a named counter read back from a store.
    pub(crate) fn set(&mut self, metric: &str, v: u64) {
        match metric {
            "requests" => self.requests += v,
            "input_tokens" => self.input_tokens += v,
            "output_tokens" => self.output_tokens += v,
            "usd_micros" => self.usd_micros += v,
            _ => {}
        }
    }

    fn merge(&mut self, o: &Totals) {
        self.requests += o.requests;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        self.usd_micros += o.usd_micros;
    }
}

/// One period of one tenant: totals by `model|openness`.
pub(crate) type Period = BTreeMap<String, Totals>;

/// Usage by tenant for the current day and month.
#[derive(Debug, Default)]
pub(crate) struct UsageReport {
    pub(crate) day: String,
    pub(crate) month: String,
    /// tenant → (day, month)
    pub(crate) tenants: BTreeMap<String, (Period, Period)>,
}

#[derive(Serialize)]
struct ModelJson<'a> {
    model: &'a str,
    openness: &'a str,
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    usd: f64,
}

#[derive(Serialize)]
struct ClassJson {
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    usd: f64,
}

impl From<&Totals> for ClassJson {
    fn from(t: &Totals) -> ClassJson {
        ClassJson {
            requests: t.requests,
            input_tokens: t.input_tokens,
            output_tokens: t.output_tokens,
            usd: t.usd_micros as f64 / 1e6,
        }
    }
}

fn period_json(label: &str, p: &Period) -> serde_json::Value {
    let mut total = Totals::default();
    let mut by_openness: BTreeMap<&str, Totals> = BTreeMap::new();
    let mut models = Vec::new();
    for (field, t) in p {
        let (model, openness) = field.split_once('|').unwrap_or((field, "unknown"));
        total.merge(t);
        by_openness.entry(openness).or_default().merge(t);
        models.push(ModelJson {
            model,
            openness,
            requests: t.requests,
            input_tokens: t.input_tokens,
            output_tokens: t.output_tokens,
            usd: t.usd_micros as f64 / 1e6,
        });
    }
    let by_openness: BTreeMap<&str, ClassJson> = by_openness
        .iter()
        .map(|(k, v)| (*k, ClassJson::from(v)))
        .collect();
    serde_json::json!({
        "period": label,
        "requests": total.requests,
        "input_tokens": total.input_tokens,
        "output_tokens": total.output_tokens,
        "usd": total.usd_micros as f64 / 1e6,
        "by_openness": by_openness,
        "by_model": models,
    })
}

impl UsageReport {
    pub(crate) fn to_json(&self) -> bytes::Bytes {
        let tenants: Vec<serde_json::Value> = self
            .tenants
            .iter()
            .map(|(t, (d, m))| {
                serde_json::json!({
                    "tenant": t,
                    "day": period_json(&self.day, d),
                    "month": period_json(&self.month, m),
                })
            })
            .collect();
        bytes::Bytes::from(
            serde_json::to_vec(&serde_json::json!({
                "object": "usage",
                "day": self.day,
                "month": self.month,
                "tenants": tenants,
            }))
            .unwrap_or_default(),
        )
    }
}
