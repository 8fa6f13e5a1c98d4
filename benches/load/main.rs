//! Load and soak benchmarks of the gateway, loopback only, every loop bounded in count and time.
//! The gateway runs as its own process (the release binary), pinned to core 0 when it can be;
//! the mock upstream and the load run here, pinned to the other core.
//!
//! `cargo bench --bench load -- [r1] [r2] [r3] [--quick] [--soak-secs N]`
//!
//! - r1: 500 requests/s for 60 s, non-streaming, mock latency 20 ms; direct to the mock first
//!   (the baseline), then through the gateway. 0 errors expected.
//! - r2: 200 concurrent streams × 100 chunks 10 ms apart; every stream checked byte for byte.
//! - r3: soak, 200 requests/s mixed (half streaming), 5 % of upstream calls failing, 10 minutes;
//!   resident memory sampled every 5 s, its slope after warm-up reported.
//!
//! `--quick` shortens every scenario (CI runs it to keep the harness working).

#![expect(clippy::print_stdout, reason = "a benchmark prints its report")]
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark code"
)]

mod load_gen;
mod mock;
mod sut;

use std::time::{Duration, Instant};

use load_gen::{chat_body, client, open_loop, percentile, streams};
use mock::MockConfig;
use sut::Gateway;

const MODEL: &str = "llama-3.1-8b-instruct";

/// A realistic configuration: the company policy (four rules), 24 deployments of three models
/// on the mock, metrics and the per-request log line on.
fn config(upstream: &str) -> String {
    let mut y = String::from(
        "auth: none\nreload: {poll_interval: 0}\npolicies: {active: company}\ndeployments:\n",
    );
    for (m, model) in [
        "llama-3.1-8b-instruct",
        "qwen2.5-7b-instruct",
        "mistral-7b-instruct-v0.3",
    ]
    .iter()
    .enumerate()
    {
        for i in 0..8 {
            y.push_str(&format!(
                "  - {{name: {model}-{i}, kind: openai-compatible, model: {model}, base_url: 'http://{upstream}/v1', price: {{input: {}, output: {}}}}}\n",
                0.01 * f64::from(i + 1) + f64::from(m as u8),
                0.02 * f64::from(i + 1)
            ));
        }
    }
    y
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

struct Args {
    scenarios: Vec<String>,
    quick: bool,
    soak: Duration,
}

fn args() -> Args {
    let mut a = Args {
        scenarios: Vec::new(),
        quick: false,
        soak: Duration::from_secs(600),
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--quick" => a.quick = true,
            // cargo bench passes this to every harness = false benchmark.
            "--bench" => {}
            "--soak-secs" => {
                let s: u64 = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("--soak-secs N");
                a.soak = Duration::from_secs(s.clamp(10, 3600));
            }
            s if s.starts_with('r') => a.scenarios.push(s.to_owned()),
            other => panic!("unknown argument {other}"),
        }
    }
    if a.scenarios.is_empty() {
        a.scenarios = vec!["r1".into(), "r2".into(), "r3".into()];
    }
    if a.quick {
        a.soak = a.soak.min(Duration::from_secs(30));
    }
    a
}

fn main() {
    let args = args();
    sut::pin_self("1");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut failed = Vec::new();
    for s in &args.scenarios {
        let ok = match s.as_str() {
            "r1" => rt.block_on(r1(&args)),
            "r2" => rt.block_on(r2(&args)),
            "r3" => rt.block_on(r3(&args)),
            other => panic!("no scenario {other}"),
        };
        if !ok {
            failed.push(s.clone());
        }
    }
    println!();
    if failed.is_empty() {
        println!("all scenarios met their pass criteria");
    } else {
        println!("FAILED: {failed:?}");
        std::process::exit(1);
    }
}

async fn r1(args: &Args) -> bool {
    let (rate, secs) = if args.quick { (500, 5) } else { (500, 60) };
    let mock = mock::start(MockConfig {
        delay: Duration::from_millis(20),
        chunks: 0,
        chunk_gap: Duration::ZERO,
        fail_every: 0,
    })
    .await;
    let gw = Gateway::start(&config(&mock.addr.to_string()), "0");
    let c = client();
    let body = chat_body(MODEL, false);
    let direct_url = format!("http://{}/v1/chat/completions", mock.addr);
    let gw_url = format!("{}/v1/chat/completions", gw.base);
    // Warm both paths (connections, caches).
    open_loop(&c, &direct_url, &body, rate, Duration::from_secs(1)).await;
    open_loop(&c, &gw_url, &body, rate, Duration::from_secs(1)).await;

    let direct = open_loop(&c, &direct_url, &body, rate, Duration::from_secs(secs)).await;
    let cpu0 = sut::cpu_time(gw.pid());
    let wall = Instant::now();
    let through = open_loop(&c, &gw_url, &body, rate, Duration::from_secs(secs)).await;
    let cpu = sut::cpu_time(gw.pid()) - cpu0;
    let wall = wall.elapsed();
    let n = through.latencies.len() + through.errors;

    println!("\n## R1: {rate} requests/s for {secs} s, non-streaming, mock latency 20 ms\n");
    println!("| path | requests | errors | p50 ms | p90 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    for (name, o) in [("direct", &direct), ("modelgate", &through)] {
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            o.latencies.len() + o.errors,
            o.errors,
            ms(o.percentile(0.5)),
            ms(o.percentile(0.9)),
            ms(o.percentile(0.99))
        );
    }
    let over = |p| through.percentile(p).saturating_sub(direct.percentile(p));
    println!(
        "\noverhead: p50 {} ms, p99 {} ms; gateway CPU {:.0} µs per request ({:.2} cores); start-up {} ms; RSS {} MiB",
        ms(over(0.5)),
        ms(over(0.99)),
        cpu.as_secs_f64() * 1e6 / n.max(1) as f64,
        cpu.as_secs_f64() / wall.as_secs_f64(),
        gw.started_in.as_millis(),
        sut::rss_kib(gw.pid()) / 1024
    );
    let ok = through.errors == 0 && direct.errors == 0;
    if !ok {
        println!("FAIL: errors (statuses {:?})", through.statuses);
    }
    ok
}

async fn r2(args: &Args) -> bool {
    let (n, chunks) = if args.quick { (50, 20) } else { (200, 100) };
    let mock = mock::start(MockConfig {
        delay: Duration::from_millis(20),
        chunks,
        chunk_gap: Duration::from_millis(10),
        fail_every: 0,
    })
    .await;
    let gw = Gateway::start(&config(&mock.addr.to_string()), "0");
    let c = client();
    let body = chat_body(MODEL, true);
    let direct_url = format!("http://{}/v1/chat/completions", mock.addr);
    let gw_url = format!("{}/v1/chat/completions", gw.base);
    streams(&c, &gw_url, &body, 4, chunks).await;
    let idle = sut::rss_kib(gw.pid());

    let direct = streams(&c, &direct_url, &body, n, chunks).await;
    // Sample the gateway's memory while its streams are open.
    let pid = gw.pid();
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        for _ in 0..(chunks / 2).max(10) {
            tokio::time::sleep(Duration::from_millis(20)).await;
            peak = peak.max(sut::rss_kib(pid));
        }
        peak
    });
    let through = streams(&c, &gw_url, &body, n, chunks).await;
    let peak = sampler.await.unwrap();

    println!("\n## R2: {n} concurrent streams × {chunks} chunks, 10 ms apart\n");
    println!(
        "| path | streams | truncated or corrupted | TTFT p50 ms | TTFT p99 ms | inter-chunk p50 ms | inter-chunk p99 ms |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for (name, s) in [("direct", &direct), ("modelgate", &through)] {
        let bad = s.iter().filter(|x| !x.ok).count() + n - s.len();
        let mut ttft: Vec<Duration> = s.iter().map(|x| x.ttft).collect();
        let mut gaps: Vec<Duration> = s.iter().flat_map(|x| x.gaps.iter().copied()).collect();
        let row = (
            bad,
            percentile(&mut ttft, 0.5),
            percentile(&mut ttft, 0.99),
            percentile(&mut gaps, 0.5),
            percentile(&mut gaps, 0.99),
        );
        println!(
            "| {name} | {n} | {} | {} | {} | {} | {} |",
            row.0,
            ms(row.1),
            ms(row.2),
            ms(row.3),
            ms(row.4)
        );
        rows.push(row);
    }
    println!(
        "\nadded: TTFT p50 {} ms, inter-chunk p99 {} ms; memory per open stream {:.1} KiB (peak {} MiB, idle {} MiB)",
        ms(rows[1].1.saturating_sub(rows[0].1)),
        ms(rows[1].4.saturating_sub(rows[0].4)),
        peak.saturating_sub(idle) as f64 / n as f64,
        peak / 1024,
        idle / 1024
    );
    let ok = rows[1].0 == 0;
    if !ok {
        println!("FAIL: {} streams truncated or corrupted", rows[1].0);
    }
    ok
}

async fn r3(args: &Args) -> bool {
    let secs = args.soak.as_secs();
    let rate = 200u32;
    let chunks = 10;
    let mock = mock::start(MockConfig {
        delay: Duration::from_millis(20),
        chunks,
        chunk_gap: Duration::from_millis(10),
        fail_every: 20,
    })
    .await;
    let gw = Gateway::start(&config(&mock.addr.to_string()), "0");
    let pid = gw.pid();
    let c = client();
    let url = format!("{}/v1/chat/completions", gw.base);
    let fds_before = sut::open_fds(pid);

    let errors = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load = {
        let (c2, url, errors, sent) = (c.clone(), url.clone(), errors.clone(), sent.clone());
        tokio::spawn(async move {
            let n = u64::from(rate) * secs;
            let period = Duration::from_secs_f64(1.0 / f64::from(rate));
            let start = Instant::now();
            let mut tasks = Vec::new();
            for i in 0..n {
                tokio::time::sleep_until((start + period.mul_f64(i as f64)).into()).await;
                let (c, url, errors) = (c2.clone(), url.clone(), errors.clone());
                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tasks.push(tokio::spawn(async move {
                    let ok = if i % 2 == 0 {
                        load_gen::one_stream(&c, &url, &chat_body(MODEL, true), chunks)
                            .await
                            .ok
                    } else {
                        let r = c
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(chat_body(MODEL, false))
                            .send()
                            .await;
                        match r {
                            Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                            Err(_) => false,
                        }
                    };
                    if !ok {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }));
                // Keep the task list short.
                if tasks.len() >= 4096 {
                    let done: Vec<_> = std::mem::take(&mut tasks);
                    for t in done {
                        let _ = t.await;
                    }
                }
            }
            for t in tasks {
                let _ = t.await;
            }
        })
    };
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let started = Instant::now();
    while !load.is_finished() {
        tokio::time::sleep(Duration::from_secs(5)).await;
        samples.push((started.elapsed().as_secs_f64() / 60.0, sut::rss_kib(pid)));
    }
    load.await.unwrap();
    // Idle: the load's connections closed; the gateway's pooled upstream connections close
    // after their 90 s idle timeout, found by a sweep every 90 s (so up to 180 s; waited for in
    // the full run only).
    drop(c);
    let idle_since = Instant::now();
    let mut fds_after = sut::open_fds(pid);
    while !args.quick
        && fds_after > fds_before + 10
        && idle_since.elapsed() < Duration::from_secs(200)
    {
        tokio::time::sleep(Duration::from_secs(5)).await;
        fds_after = sut::open_fds(pid);
    }
    tokio::time::sleep(Duration::from_secs(if args.quick { 2 } else { 0 })).await;
    let fds_after = fds_after.min(sut::open_fds(pid));
    let fds_wait = idle_since.elapsed().as_secs();

    // Slope after warm-up: the first third, at most 5 minutes.
    let warm = (secs as f64 / 3.0).min(300.0) / 60.0;
    let tail: Vec<(f64, f64)> = samples
        .iter()
        .filter(|(t, _)| *t >= warm)
        .map(|(t, k)| (*t, *k as f64 / 1024.0))
        .collect();
    let slope = if tail.len() >= 2 {
        let n = tail.len() as f64;
        let (sx, sy) = tail
            .iter()
            .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        let (mx, my) = (sx / n, sy / n);
        let cov: f64 = tail.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
        let var: f64 = tail.iter().map(|(x, _)| (x - mx).powi(2)).sum();
        if var > 0.0 { cov / var } else { 0.0 }
    } else {
        0.0
    };
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let errors = errors.load(std::sync::atomic::Ordering::Relaxed);
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    let injected = mock.failed.load(std::sync::atomic::Ordering::Relaxed);

    println!(
        "\n## R3: soak, {rate} requests/s for {secs} s, half streaming, every 20th upstream call fails\n"
    );
    println!(
        "| requests | upstream calls | injected failures | client errors | RSS after warm-up MiB | RSS end MiB | RSS peak MiB | slope MiB/min | fds before/after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {sent} | {} | {injected} | {errors} | {:.1} | {:.1} | {:.1} | {slope:.3} | {fds_before}/{fds_after} after {fds_wait} s idle |",
        mock.requests.load(std::sync::atomic::Ordering::Relaxed),
        tail.first().map_or(0.0, |s| s.1),
        tail.last().map_or(0.0, |s| s.1),
        peak as f64 / 1024.0
    );
    let mut ok = true;
    if errors as u64 > injected {
        println!("FAIL: more client errors than injected failures");
        ok = false;
    }
    if !args.quick && slope > 1.0 {
        println!("FAIL: resident memory grows by {slope:.2} MiB/min after warm-up");
        ok = false;
    }
    if peak > 200 * 1024 {
        println!("FAIL: peak RSS over 200 MiB");
        ok = false;
    }
    if !args.quick && fds_after > fds_before + 10 {
        println!("FAIL: file descriptors went from {fds_before} to {fds_after}");
        ok = false;
    }
    ok
}
