//! Micro-benchmark of `policy::decide` on large configurations: 200 and 1,000 deployments and a
//! policy of 50 rules (49 that do not match the request, then the one that decides). Prints
//! criterion's estimate and, from a separate timed loop, the median and 99th percentile of one
//! decision. `auto` over 1,000 deployments should cost about what a request by name does.
//! Each case runs twice: the decision alone, and with the caller's shadow policy decided beside
//! it (`decide+shadow`, a second policy of 50 rules whose last one asks for open weights and
//! prefers the most open), which is what a request costs when `policies.shadow` is set.
//!
//! `cargo bench --bench decide` (a filter such as `-- 1,000` runs only those cases)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    reason = "benchmark code"
)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use modelgate::catalog::Model;
use modelgate::config::keys::Caller;
use modelgate::config::load::load_texts;
use modelgate::config::{Discovered, Snapshot};
use modelgate::policy::{Ask, EndpointName, Needs, PromptSize, Routing, decide, shadow};

/// Open-weight and closed models of the shipped catalog, spread over the deployments.
const MODELS: &[&str] = &[
    "llama-3.1-8b-instruct",
    "qwen2.5-7b-instruct",
    "mistral-7b-instruct-v0.3",
    "gemma-3-27b-it",
    "smollm2-135m-instruct",
    "olmo-2-1124-7b-instruct",
    "phi-4",
    "deepseek-r1",
    "gpt-oss-20b",
    "granite-4.0-h-small",
    "gpt-4o",
    "gpt-4.1-mini",
    "claude-sonnet-4-5",
    "gemini-2.5-flash",
];

fn snapshot(n: usize) -> Routing {
    let mut cfg = String::from("policies: {active: big, shadow: big-shadow}\ndeployments:\n");
    for i in 0..n {
        let model = MODELS[i % MODELS.len()];
        let (kind, extra) = match model {
            "gpt-4o" | "gpt-4.1-mini" => ("openai", "api_key_env: KEY, "),
            "claude-sonnet-4-5" => ("anthropic", "api_key_env: KEY, "),
            "gemini-2.5-flash" => ("gemini", "api_key_env: KEY, "),
            _ => ("openai-compatible", ""),
        };
        let url = if kind == "openai-compatible" {
            format!(
                "base_url: 'http://10.{}.{}.{}:8000/v1', ",
                i / 40_000,
                (i / 200) % 200,
                i % 200
            )
        } else {
            String::new()
        };
        let locality = ["local", "cluster", "remote"][i % 3];
        cfg += &format!(
            "  - {{name: d{i}, kind: {kind}, model: {model}, {url}{extra}locality: {locality}, region: {}}}\n",
            ["eu", "us"][i % 2]
        );
    }
    let mut policy = String::from("policies:\n  - name: big\n    rules:\n");
    for r in 0..49 {
        policy += &format!(
            "      - {{name: r{r}, match: {{tenants: [team-{r}], labels: {{project: p{r}}}}}, require: {{openness: [open-weight, open-source], locality: [local], license: {{osi_approved: true}}}}}}\n"
        );
    }
    let mut shadow = policy.replace("name: big", "name: big-shadow");
    policy += "      - {name: default, require: {license: {commercial_use: [allowed, conditional]}, max_price: {input_per_million: 5, per_request: 0.5}, regions: [eu, us]}, prefer: [local, cheapest, most_open]}\n";
    shadow += "      - {name: open-only, require: {openness: [open-weight, open-source], max_price: {per_request: 0.5}}, prefer: [most_open, cheapest]}\n";
    let env: HashMap<String, String> = [("KEY".to_owned(), "k".to_owned())].into();
    let loaded = load_texts(
        &cfg,
        &[],
        &[("big.yaml", &policy), ("shadow.yaml", &shadow)],
        &env,
    )
    .unwrap_or_else(|p| panic!("{p}"));
    Routing::at_rest(Snapshot::build(
        Arc::new(loaded.config),
        &Discovered::default(),
    ))
}

struct Prompt;

impl PromptSize for Prompt {
    fn bytes(&self) -> usize {
        2_000
    }
    fn tokens(&self, _: &Model) -> u64 {
        500
    }
}

fn ask<'a>(model: &'a str, caller: &'a Caller, labels: &'a [(String, String)]) -> Ask<'a> {
    Ask {
        model,
        endpoint: EndpointName::ChatCompletions,
        caller,
        labels,
        needs: Needs::default(),
        prompt: &Prompt,
        max_output: Some(512),
    }
}

fn bench(c: &mut Criterion) {
    let labels = vec![("data".to_owned(), "internal".to_owned())];
    for (n, cases) in [
        (
            200,
            [
                ("decide: one deployment (of 200)", "d7"),
                (
                    "decide: one model (15 deployments of 200)",
                    "llama-3.1-8b-instruct",
                ),
                ("decide: auto (200 deployments)", "auto"),
            ],
        ),
        (
            1_000,
            [
                ("decide: one deployment (of 1,000)", "d7"),
                (
                    "decide: one model (72 deployments of 1,000)",
                    "llama-3.1-8b-instruct",
                ),
                ("decide: auto (1,000 deployments)", "auto"),
            ],
        ),
    ] {
        let s = snapshot(n);
        assert_eq!(s.deployments.len(), n);
        // The caller without a key: `big` decides, `big-shadow` shadows.
        let caller = s.config.anonymous_caller();
        for (name, model) in cases {
            if c_filter_matches(name) {
                let a = ask(model, caller, &labels);
                let d = decide(&a, &s).unwrap();
                assert!(!d.candidates().is_empty());
                c.bench_function(name, |b| {
                    b.iter(|| black_box(decide(black_box(&a), &s).unwrap()))
                });
                percentiles(name, || {
                    black_box(decide(black_box(&a), &s).unwrap());
                });
            }
            let name = name.replacen("decide", "decide+shadow", 1);
            if c_filter_matches(&name) {
                let a = ask(model, caller, &labels);
                let d = decide(&a, &s);
                assert!(shadow(&a, &s, d.as_ref()).is_some());
                let both = || {
                    let d = decide(black_box(&a), &s);
                    black_box(shadow(black_box(&a), &s, d.as_ref()));
                    black_box(d.unwrap())
                };
                c.bench_function(&name, |b| b.iter(both));
                percentiles(&name, || {
                    both();
                });
            }
        }
    }
}

/// Whether criterion's command-line filter (the first free argument) selects `name`: the
/// percentile loop below runs only for the cases criterion runs.
fn c_filter_matches(name: &str) -> bool {
    std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .is_none_or(|f| name.contains(&f))
}

/// Percentiles of single decisions, timed one by one.
fn percentiles(name: &str, mut run: impl FnMut()) {
    let mut times: Vec<u128> = (0..20_000)
        .map(|_| {
            let t = Instant::now();
            run();
            t.elapsed().as_nanos()
        })
        .collect();
    times.sort_unstable();
    let pct =
        |p: f64| times[((times.len() as f64 * p) as usize).min(times.len() - 1)] as f64 / 1000.0;
    println!(
        "{name}: median {:.2} µs, p99 {:.2} µs over {} decisions",
        pct(0.5),
        pct(0.99),
        times.len()
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
