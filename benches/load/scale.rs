//! P3: cost that does not grow with the configuration. The same whole request at the same rate
//! through a gateway with one deployment and with 1,000 (the default policy: every deployment
//! allowed, local first, then the cheapest), asked for by deployment name and as `auto` (every
//! deployment a candidate). The 1,000 are either replicas (three models, 333 places each, a
//! price per model) or 1,000 deployments that all differ in price, the worst case for a
//! decision that groups alike deployments. CPU per request of the gateway process and the
//! closed-loop maximum, each the median of its rounds.

use std::time::Duration;

use crate::load_gen::{self, chat_body, open_loop};
use crate::mock::{self, MockConfig};
use crate::sut::{self, Proxy};
use crate::{Args, ratio};

const MODELS: [&str; 3] = [
    "llama-3.1-8b-instruct",
    "qwen2.5-7b-instruct",
    "mistral-7b-instruct-v0.3",
];

/// `n` deployments of three models on the mock, default settings; priced by model, or each
/// with a price of its own.
fn config(upstream: &str, n: usize, distinct: bool) -> String {
    let mut y = String::from("auth: none\nreload: {poll_interval: 0}\ndeployments:\n");
    for i in 0..n {
        let model = MODELS[i % MODELS.len()];
        let (a, b) = if distinct {
            (i % 97, i % 89)
        } else {
            (i % 3, i % 3)
        };
        y.push_str(&format!(
            "  - {{name: d{i}, kind: openai-compatible, model: {model}, base_url: 'http://{upstream}/v1', price: {{input: {:.4}, output: {:.4}}}}}\n",
            0.05 + a as f64 * 0.01,
            0.10 + b as f64 * 0.02
        ));
    }
    y
}

pub async fn p3(args: &Args) -> bool {
    let secs = args.secs.unwrap_or(if args.quick { 1.0 } else { 5.0 });
    let rounds = if args.quick { 1 } else { 3 };
    let rate = 2000;
    let mock = mock::start(MockConfig {
        delay: Duration::ZERO,
        chunks: 0,
        chunk_gap: Duration::ZERO,
        fail_every: 0,
    })
    .await;
    let c = load_gen::fast();
    let upstream = mock.addr.to_string();
    let one = Proxy::gateway(&config(&upstream, 1, false), "0");
    let many = Proxy::gateway(&config(&upstream, 1000, false), "0");
    let priced = Proxy::gateway(&config(&upstream, 1000, true), "0");
    let url = |p: &Proxy| format!("{}/v1/chat/completions", p.base);
    // (label, proxy, body)
    let cases: [(&str, &Proxy, String); 5] = [
        ("by name, 1 deployment", &one, chat_body("d0", false)),
        ("by name, 1,000 replicas", &many, chat_body("d500", false)),
        ("auto, 1,000 replicas", &many, chat_body("auto", false)),
        (
            "by name, 1,000 priced apart",
            &priced,
            chat_body("d500", false),
        ),
        (
            "auto, 1,000 priced apart",
            &priced,
            chat_body("auto", false),
        ),
    ];
    for (_, p, body) in &cases {
        open_loop(&c, &url(p), body, rate, Duration::from_secs(1)).await;
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    /// One round of one case: CPU µs/req, p50 µs, p99 µs, errors, closed-loop req/s.
    type Round = (f64, f64, f64, usize, f64);
    let mut seen: Vec<Vec<Round>> = vec![Vec::new(); cases.len()];
    for round in 0..rounds {
        for k in 0..cases.len() {
            let i = (k + round) % cases.len();
            let (_, p, body) = &cases[i];
            let cpu0 = sut::cpu_time(p.pid());
            let o = open_loop(&c, &url(p), body, rate, Duration::from_secs_f64(secs)).await;
            let n = (o.latencies.len() + o.errors).max(1);
            let cpu = us(sut::cpu_time(p.pid()).saturating_sub(cpu0)) / n as f64;
            let (max, errors) =
                load_gen::closed_loop(&c, &url(p), body, 32, Duration::from_secs_f64(secs / 2.0))
                    .await;
            seen[i].push((
                cpu,
                us(o.percentile(0.5)),
                us(o.percentile(0.99)),
                o.errors + errors,
                max,
            ));
        }
    }
    let med = |i: usize, f: fn(&Round) -> f64| {
        let mut v: Vec<f64> = seen[i].iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "\n## P3: cost against the configuration's size, {rate} req/s open loop, gateway on one core (median of {rounds} rounds of {secs} s)\n"
    );
    println!(
        "| request | errors | p50 ms | p99 ms | CPU µs/req | CPU ÷ by name, same configuration | closed-loop max req/s (32 connections) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut ok = true;
    for (i, (label, _, _)) in cases.iter().enumerate() {
        let errors: usize = seen[i].iter().map(|r| r.3).sum();
        println!(
            "| {label} | {errors} | {:.3} | {:.3} | {:.0} | {} | {:.0} |",
            med(i, |r| r.1) / 1e3,
            med(i, |r| r.2) / 1e3,
            med(i, |r| r.0),
            ratio(med(i, |r| r.0), med(if i >= 3 { 3 } else { 1 }, |r| r.0)),
            med(i, |r| r.4),
        );
        if errors > 0 {
            println!("FAIL: {errors} errors for {label}");
            ok = false;
        }
    }
    ok
}
