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
//! - p1: the overhead of modelgate and of the floor (a bare hyper forwarder, `floor.rs`) over
//!   the direct path, non-streaming, at 500, 2,000 and 5,000 requests/s offered; CPU per request
//!   of each proxy process; the closed-loop maximum.
//! - p2: streams: time to first token, gaps between chunks and CPU per stream at 200 and at 20
//!   streams/s; memory per open stream with 500 and 2,000 open at once (default settings, 0 errors).
//! - p3: a request by deployment name with 1 and 1,000 deployments, and `auto` over 1,000.
//! - t1 (only when named): every front end, whole and streamed, and common errors, in a closed
//!   loop: the workout `deploy/pgo.sh` trains its build on, with p1 and p2.
//!
//! `--quick` shortens every scenario (a check that the harness works); `--rates` and
//! `--secs` change p1's rates and p1/p2's measuring time. `MODELGATE_BENCH_WRAP` prefixes the
//! gateway's command line (for example `valgrind --tool=callgrind`) to profile it under load.
//! `MODELGATE_BENCH_SERIES=DIR` writes every P1 round's requests to `DIR/RATE-PATH-ROUND.csv`
//! (when each was sent, how long it took), to see when a round's slow requests came.

#![expect(clippy::print_stdout, reason = "a benchmark prints its report")]
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark code"
)]

mod floor;
mod load_gen;
mod mock;
mod scale;
mod sut;
mod train;

use std::time::{Duration, Instant};

use load_gen::{chat_body, client, open_loop, percentile, streams};
use mock::MockConfig;
use sut::Proxy;

pub(crate) const MODEL: &str = "llama-3.1-8b-instruct";

/// A realistic configuration: the company policy (four rules), 24 deployments of three models
/// on the mock, metrics and the per-request log line on, every other setting its default.
pub(crate) fn config(upstream: &str) -> String {
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

pub(crate) struct Args {
    scenarios: Vec<String>,
    soak: Duration,
    /// P1's offered rates, and the seconds P1 and P2 measure each for.
    rates: Vec<u32>,
    pub(crate) secs: Option<f64>,
    pub(crate) quick: bool,
}

fn args() -> Args {
    let mut a = Args {
        scenarios: Vec::new(),
        quick: false,
        soak: Duration::from_secs(600),
        rates: vec![500, 2000, 5000],
        secs: None,
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
            "--rates" => {
                a.rates = it
                    .next()
                    .expect("--rates R1,R2,…")
                    .split(',')
                    .map(|r| r.parse::<u32>().expect("--rates R1,R2,…").clamp(1, 20_000))
                    .collect();
            }
            "--secs" => {
                let s: f64 = it.next().and_then(|v| v.parse().ok()).expect("--secs N");
                a.secs = Some(s.clamp(0.5, 600.0));
            }
            s if s.starts_with('r') || s.starts_with('p') || s == "t1" => {
                a.scenarios.push(s.to_owned())
            }
            other => panic!("unknown argument {other}"),
        }
    }
    if a.scenarios.is_empty() {
        a.scenarios = ["p1", "p2", "p3", "r1", "r2", "r3"]
            .map(String::from)
            .to_vec();
    }
    if a.quick {
        a.soak = a.soak.min(Duration::from_secs(30));
    }
    a
}

fn main() {
    // Started again as the floor (see floor.rs).
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--floor") {
        floor::serve(argv[2].parse().expect("--floor ADDR"));
    }
    let args = args();
    if !sut::pinning() {
        println!(
            "warning: taskset is missing or there is one core: nothing is pinned, and the proxies' figures are not comparable"
        );
    }
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
            "p1" => rt.block_on(p1(&args)),
            "p2" => rt.block_on(p2(&args)),
            "p3" => rt.block_on(scale::p3(&args)),
            "t1" => rt.block_on(train::t1(&args)),
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
    let gw = Proxy::gateway(&config(&mock.addr.to_string()), "0");
    let c = load_gen::fast();
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
    let cpu = sut::cpu_time(gw.pid()).saturating_sub(cpu0);
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
    let gw = Proxy::gateway(&config(&mock.addr.to_string()), "0");
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
    let gw = Proxy::gateway(&config(&mock.addr.to_string()), "0");
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

/// The chat URL of each path: its proxy's, or the mock's for the direct path.
fn chat_urls(proxies: &[Option<Proxy>], mock: std::net::SocketAddr) -> Vec<String> {
    proxies
        .iter()
        .map(|p| {
            let base = p
                .as_ref()
                .map_or_else(|| format!("http://{mock}"), |p| p.base.clone());
            format!("{base}/v1/chat/completions")
        })
        .collect()
}

/// The paths' indexes and URLs, starting at `round`'s.
fn rotated(urls: &[String], round: usize) -> impl Iterator<Item = (usize, &String)> {
    (0..urls.len()).map(move |k| {
        let i = (k + round) % urls.len();
        (i, &urls[i])
    })
}

/// `a / b`, printed with two decimals, or `-` when `b` is zero.
pub(crate) fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

/// The three paths of the overhead scenarios: straight to the mock, through the floor, through
/// the gateway. Both proxies run on core 0, one at a time in turn.
#[derive(Clone, Copy, PartialEq)]
enum Path {
    Direct,
    Floor,
    Gateway,
}

impl Path {
    const ALL: [Path; 3] = [Path::Direct, Path::Floor, Path::Gateway];
    fn name(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Floor => "floor",
            Path::Gateway => "modelgate",
        }
    }
}

/// One P1 round's requests as CSV: when each was sent (seconds from when the first was due,
/// which a comment line gives in UNIX seconds) and how long it took.
fn write_series(
    file: &std::path::Path,
    began: std::time::SystemTime,
    series: &[(Duration, Duration)],
) {
    use std::fmt::Write;
    // `open_loop` schedules its first request 50 ms after it is called.
    let first_due = began + Duration::from_millis(50);
    let unix = first_due
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut text = format!(
        "# first request due at {:.3} (UNIX seconds)\nsent_s,latency_ms\n",
        unix.as_secs_f64()
    );
    let mut rows = series.to_vec();
    rows.sort_unstable();
    for (sent, took) in rows {
        let _ = writeln!(
            text,
            "{:.6},{:.3}",
            sent.as_secs_f64(),
            took.as_secs_f64() * 1e3
        );
    }
    if let Err(e) = std::fs::write(file, text) {
        println!("warning: cannot write {}: {e}", file.display());
    }
}

/// The proxy process of `path` (none for the direct path) in front of `mock`.
fn proxy(path: Path, mock: std::net::SocketAddr) -> Option<Proxy> {
    match path {
        Path::Direct => None,
        Path::Floor => Some(Proxy::floor(mock, "0")),
        Path::Gateway => Some(Proxy::gateway(&config(&mock.to_string()), "0")),
    }
}

/// P1: the non-streaming overhead over the direct path and relative to the floor, at 500, 2,000
/// and 5,000 requests/s offered (open loop, zero-delay mock), the CPU time per request of the
/// proxy process, and the closed-loop maximum on its one core. The three paths take turns, in
/// rounds, and each figure is the median of its rounds: these machines are shared, and noise
/// that comes and goes then falls on every path alike. Five rounds: with three, one noisy round
/// on either side moved a ratio by 0.15 or more between runs.
async fn p1(args: &Args) -> bool {
    let secs = args.secs.unwrap_or(if args.quick { 1.0 } else { 5.0 });
    let rounds = if args.quick { 1 } else { 5 };
    let rates = args.rates.clone();
    let mock = mock::start(MockConfig {
        delay: Duration::ZERO,
        chunks: 0,
        chunk_gap: Duration::ZERO,
        fail_every: 0,
    })
    .await;
    let c = load_gen::fast();
    let body = chat_body(MODEL, false);
    let mut ok = true;
    let proxies: Vec<Option<Proxy>> = Path::ALL.iter().map(|p| proxy(*p, mock.addr)).collect();
    let idle_kib: Vec<u64> = proxies
        .iter()
        .map(|p| p.as_ref().map_or(0, |p| sut::rss_kib(p.pid())))
        .collect();
    let urls = chat_urls(&proxies, mock.addr);

    /// One round on one path: p50, p90, p99 (µs), errors, requests, CPU µs per request.
    type Round = (f64, f64, f64, usize, usize, f64);
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    // seen[rate][path] = rounds
    let mut seen: Vec<Vec<Vec<Round>>> = vec![vec![Vec::new(); 3]; rates.len()];
    // late[rate]: how late the generator sent each request, every path and round.
    let mut late: Vec<Vec<Duration>> = vec![Vec::new(); rates.len()];
    // kernel[rate][path] = rounds of (wake-ups, preemptions, minor faults, user ticks, system
    // ticks, TCP connections opened) per request.
    let mut kernel: Vec<Vec<Vec<[f64; 6]>>> = vec![vec![Vec::new(); 3]; rates.len()];
    // disturbed[rate][path] = rounds of (ms the proxy's threads were ready but waited for their
    // core, ms the hypervisor took the core away).
    let mut disturbed: Vec<Vec<Vec<(f64, f64)>>> = vec![vec![Vec::new(); 3]; rates.len()];
    for (ri, &rate) in rates.iter().enumerate() {
        for url in &urls {
            open_loop(&c, url, &body, rate, Duration::from_secs(1)).await;
        }
        for round in 0..rounds {
            // Each round starts with another path, so no path always follows the same one.
            for (pi, url) in rotated(&urls, round) {
                let p = proxies[pi].as_ref();
                let cpu0 = p.map(|p| sut::cpu_time(p.pid()));
                let counts = |p: &Proxy| {
                    let (v, i) = sut::switches(p.pid());
                    let [f, user, system] = sut::faults_and_modes(p.pid());
                    [v, i, f, user, system, sut::tcp_opens()]
                };
                let k0 = p.map(counts);
                // What took the proxy's core from it in this round, whatever the proxy did.
                let d0 = p.map(|p| (sut::run_delay(p.pid()), sut::steal_ticks(0)));
                let began = std::time::SystemTime::now();
                let mut o = open_loop(&c, url, &body, rate, Duration::from_secs_f64(secs)).await;
                late[ri].append(&mut o.late);
                let n = o.latencies.len() + o.errors;
                if o.errors > 0 {
                    // What failed: an answer other than 200, or none (the connection's error).
                    let answered: usize = o
                        .statuses
                        .iter()
                        .filter(|(s, _)| **s != 200)
                        .map(|(_, n)| n)
                        .sum();
                    println!(
                        "warning: {} errors through {} at {rate} req/s, round {round}: {:?} answered other than 200, {} without an answer",
                        o.errors,
                        ["direct", "floor", "modelgate"][pi],
                        o.statuses
                            .iter()
                            .filter(|(s, _)| **s != 200)
                            .collect::<Vec<_>>(),
                        o.errors.saturating_sub(answered)
                    );
                }
                let cpu = match (p, cpu0) {
                    (Some(p), Some(c0)) => {
                        us(sut::cpu_time(p.pid()).saturating_sub(c0)) / n.max(1) as f64
                    }
                    _ => 0.0,
                };
                if let (Some(p), Some(k0)) = (p, k0) {
                    let k1 = counts(p);
                    kernel[ri][pi].push(std::array::from_fn(|i| {
                        k1[i].saturating_sub(k0[i]) as f64 / n.max(1) as f64
                    }));
                }
                if let (Some(p), Some((w0, s0))) = (p, d0) {
                    let waited = sut::run_delay(p.pid()).saturating_sub(w0);
                    let stolen = sut::steal_ticks(0).saturating_sub(s0);
                    disturbed[ri][pi].push((waited.as_secs_f64() * 1e3, stolen as f64 * 10.0));
                }
                if let Some(dir) = std::env::var_os("MODELGATE_BENCH_SERIES") {
                    let name = format!("{rate}-{}-{round}.csv", Path::ALL[pi].name());
                    write_series(&std::path::Path::new(&dir).join(name), began, &o.series);
                }
                seen[ri][pi].push((
                    us(o.percentile(0.5)),
                    us(o.percentile(0.9)),
                    us(o.percentile(0.99)),
                    o.errors,
                    n,
                    cpu,
                ));
            }
        }
    }
    let mut max: Vec<Vec<(f64, usize)>> = vec![Vec::new(); 3];
    // busy[path] = rounds of the share of its core the proxy used in the closed loop: below
    // 1, something other than its CPU held its maximum.
    let mut busy: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for round in 0..rounds {
        for (pi, url) in rotated(&urls, round) {
            let p = proxies[pi].as_ref();
            let cpu0 = p.map(|p| sut::cpu_time(p.pid()));
            let t0 = Instant::now();
            max[pi].push(
                load_gen::closed_loop(&c, url, &body, 32, Duration::from_secs_f64(secs / 2.0))
                    .await,
            );
            if let (Some(p), Some(c0)) = (p, cpu0) {
                let used = sut::cpu_time(p.pid()).saturating_sub(c0);
                busy[pi].push(used.as_secs_f64() / t0.elapsed().as_secs_f64());
            }
        }
    }
    let med = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };

    println!(
        "\n## P1: non-streaming, zero-delay mock, open loop, each proxy on one core (median of {rounds} rounds of {secs} s)\n"
    );
    println!(
        "| offered req/s | path | requests | errors | p50 ms | p90 ms | p99 ms | added p50 ms | added p99 ms | added p50 ÷ floor's | added p99 ÷ floor's | CPU µs/req | CPU ÷ floor's |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (ri, rate) in rates.iter().enumerate() {
        let m = |pi: usize, f: fn(&Round) -> f64| med(seen[ri][pi].iter().map(f).collect());
        let direct = (m(0, |r| r.0), m(0, |r| r.2));
        let floor_add = (m(1, |r| r.0) - direct.0, m(1, |r| r.2) - direct.1);
        for (pi, path) in Path::ALL.iter().enumerate() {
            let (p50, p90, p99, cpu) = (
                m(pi, |r| r.0),
                m(pi, |r| r.1),
                m(pi, |r| r.2),
                m(pi, |r| r.5),
            );
            let errors: usize = seen[ri][pi].iter().map(|r| r.3).sum();
            let n: usize = seen[ri][pi].iter().map(|r| r.4).sum();
            let cells = if *path == Path::Direct {
                String::from(" |  |  |  |  |  ")
            } else {
                let add = (p50 - direct.0, p99 - direct.1);
                format!(
                    " {:.3} | {:.3} | {} | {} | {cpu:.0} | {} ",
                    add.0 / 1e3,
                    add.1 / 1e3,
                    ratio(add.0.max(0.0), floor_add.0.max(0.0)),
                    ratio(add.1.max(0.0), floor_add.1.max(0.0)),
                    ratio(cpu, m(1, |r| r.5))
                )
            };
            println!(
                "| {rate} | {} | {n} | {errors} | {:.3} | {:.3} | {:.3} |{cells}|",
                path.name(),
                p50 / 1e3,
                p90 / 1e3,
                p99 / 1e3,
            );
            if errors > 0 {
                println!("FAIL: {errors} errors through {}", path.name());
                ok = false;
            }
        }
    }
    println!(
        "\n| offered req/s | path | CPU µs/req, each round in turn | p99 ms, each round in turn | ms its threads waited for the core + ms the host took it, each round | of it in the kernel | wake-ups per request | preemptions per request | minor faults per request | connections opened per 1,000 requests (any process) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (ri, rate) in rates.iter().enumerate() {
        for pi in 1..3 {
            let rounds: Vec<String> = seen[ri][pi].iter().map(|r| format!("{:.0}", r.5)).collect();
            // Whether a median p99 off the floor's came from every round or from a few.
            let p99s: Vec<String> = seen[ri][pi]
                .iter()
                .map(|r| format!("{:.2}", r.2 / 1e3))
                .collect();
            let taken: Vec<String> = disturbed[ri][pi]
                .iter()
                .map(|(w, s)| format!("{w:.0}+{s:.0}"))
                .collect();
            let k = |i: usize| med(kernel[ri][pi].iter().map(|r| r[i]).collect());
            println!(
                "| {rate} | {} | {} | {} | {} | {:.0} % | {:.2} | {:.3} | {:.3} | {:.1} |",
                Path::ALL[pi].name(),
                rounds.join(" "),
                p99s.join(" "),
                taken.join(" "),
                100.0 * k(4) / (k(3) + k(4)).max(f64::MIN_POSITIVE),
                k(0),
                k(1),
                k(2),
                1000.0 * k(5)
            );
        }
    }
    let late: Vec<String> = rates
        .iter()
        .zip(&mut late)
        .map(|(rate, l)| {
            format!(
                "{rate} req/s p50 {:.0} µs, p99 {:.0} µs",
                us(percentile(l, 0.5)),
                us(percentile(l, 0.99))
            )
        })
        .collect();
    println!(
        "\nhow late the generator sent against its schedule (tokio's millisecond timer; not part of the latencies above): {}",
        late.join("; ")
    );
    println!(
        "\n| path | closed-loop max req/s (32 connections) | ÷ floor's | errors | its core busy |"
    );
    println!("|---|---|---|---|---|");
    let floor_max = med(max[1].iter().map(|m| m.0).collect());
    for (pi, path) in Path::ALL.iter().enumerate() {
        let m = med(max[pi].iter().map(|m| m.0).collect());
        let core = if busy[pi].is_empty() {
            "-".to_string()
        } else {
            format!("{:.0} %", 100.0 * med(busy[pi].clone()))
        };
        println!(
            "| {} | {m:.0} | {} | {} | {core} |",
            path.name(),
            if *path == Path::Direct {
                "-".into()
            } else {
                ratio(m, floor_max)
            },
            max[pi].iter().map(|m| m.1).sum::<usize>()
        );
    }
    let started = |pi: usize| proxies[pi].as_ref().map_or(0, |p| p.started_in.as_millis());
    println!(
        "\nstart-up to ready: floor {} ms, modelgate {} ms; idle RSS before any request: floor {:.1} MiB, modelgate {:.1} MiB",
        started(1),
        started(2),
        idle_kib[1] as f64 / 1024.0,
        idle_kib[2] as f64 / 1024.0
    );
    ok
}

/// One path's streams at one rate: how many, how many broken, TTFT p50 and p99, inter-chunk p50
/// and p99.
type StreamRow = (usize, usize, Duration, Duration, Duration, Duration);

/// P2: streams. Time to first token, the gap between chunks and the proxy's CPU time per stream
/// with streams starting at a steady 200 per second and then 20 per second (zero-delay first
/// chunk, then 20 chunks 10 ms apart); then memory per open stream with 500 and 2,000 streams
/// open at once, each in a fresh proxy process with default settings.
async fn p2(args: &Args) -> bool {
    let chunks = 20;
    let mock = mock::start(MockConfig {
        delay: Duration::ZERO,
        chunks,
        chunk_gap: Duration::from_millis(10),
        fail_every: 0,
    })
    .await;
    let c = client();
    let body = chat_body(MODEL, true);
    let mut ok = true;
    let proxies: Vec<Option<Proxy>> = Path::ALL.iter().map(|p| proxy(*p, mock.addr)).collect();
    let urls = chat_urls(&proxies, mock.addr);
    // At 20 a second every stream finds the proxy's caches cold (the table measures
    // both rates); the same number of seconds there gives a tenth of the streams.
    let mut by_rate = Vec::new();
    for rate in [200, 20] {
        let (rows, cpu, fine) = streams_at(args, &c, &body, &proxies, &urls, rate, chunks).await;
        ok &= fine;
        by_rate.push((rate, rows, cpu));
    }
    drop(proxies);

    // Memory: long streams (60 chunks 50 ms apart) started at 4,000/s so all are open at once.
    let long = 60;
    let mock_long = mock::start(MockConfig {
        delay: Duration::ZERO,
        chunks: long,
        chunk_gap: Duration::from_millis(50),
        fail_every: 0,
    })
    .await;
    let sizes: [usize; 2] = if args.quick { [50, 200] } else { [500, 2000] };
    let mut mem = Vec::new();
    for path in [Path::Floor, Path::Gateway] {
        for &n in &sizes {
            let p = proxy(path, mock_long.addr).unwrap();
            let url = format!("{}/v1/chat/completions", p.base);
            streams(&c, &url, &body, 4, long).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let idle = sut::rss_kib(p.pid());
            let pid = p.pid();
            let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let sampler = {
                let done = done.clone();
                tokio::spawn(async move {
                    let mut peak = 0;
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        peak = peak.max(sut::rss_kib(pid));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    peak
                })
            };
            let s = load_gen::streams_open_loop(
                &c,
                &url,
                &body,
                4000,
                Duration::from_secs_f64(n as f64 / 4000.0),
                long,
            )
            .await;
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            let peak = sampler.await.unwrap();
            let bad = s.iter().filter(|x| !x.ok).count() + n.saturating_sub(s.len());
            if bad > 0 {
                println!(
                    "FAIL: {bad} of {n} long streams truncated or corrupted through {}",
                    path.name()
                );
                ok = false;
            }
            mem.push((path, n, idle, peak));
        }
    }

    for (rate, rows, cpu) in &by_rate {
        print_streams(*rate, chunks, rows, cpu);
    }
    println!(
        "\n| path | open streams | idle RSS MiB | peak RSS MiB | KiB per open stream | ÷ floor's |"
    );
    println!("|---|---|---|---|---|---|");
    let per =
        |(_, n, idle, peak): (Path, usize, u64, u64)| peak.saturating_sub(idle) as f64 / n as f64;
    for (i, m) in mem.iter().enumerate() {
        let floor = mem[i % sizes.len()];
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {} |",
            m.0.name(),
            m.1,
            m.2 as f64 / 1024.0,
            m.3 as f64 / 1024.0,
            per(*m),
            if m.0 == Path::Floor {
                "-".into()
            } else {
                ratio(per(*m), per(floor))
            }
        );
    }
    ok
}

/// Every path's streams at `rate` a second, the paths taking turns in rounds (see P1), each
/// path's streams pooled; CPU per stream is the median round's. Ten short rounds rather than
/// three long ones: the first token differs between the paths by some tens of µs, a slow spell
/// of the host lasts seconds, and in rounds of five seconds one such spell falls on one path
/// (the ratio at 20 a second moved by up to 0.3 between two runs of one binary minutes apart).
async fn streams_at(
    args: &Args,
    c: &reqwest::Client,
    body: &str,
    proxies: &[Option<Proxy>],
    urls: &[String],
    rate: u32,
    chunks: usize,
) -> (Vec<StreamRow>, Vec<f64>, bool) {
    let secs = args.secs.unwrap_or(if args.quick { 1.0 } else { 15.0 });
    let rounds = if args.quick { 1 } else { 10 };
    for url in urls {
        load_gen::streams_open_loop(c, url, body, rate, Duration::from_secs(1), chunks).await;
    }
    let mut pooled: Vec<Vec<load_gen::StreamSeen>> = (0..3).map(|_| Vec::new()).collect();
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); 3];
    for round in 0..rounds {
        for (pi, url) in rotated(urls, round) {
            let p = proxies[pi].as_ref();
            let cpu0 = p.map(|p| sut::cpu_time(p.pid()));
            let seen = load_gen::streams_open_loop(
                c,
                url,
                body,
                rate,
                Duration::from_secs_f64(secs / rounds as f64),
                chunks,
            )
            .await;
            if let (Some(p), Some(c0)) = (p, cpu0) {
                let spent = sut::cpu_time(p.pid()).saturating_sub(c0);
                cpu[pi].push(spent.as_secs_f64() * 1e6 / seen.len().max(1) as f64);
            }
            pooled[pi].extend(seen);
        }
    }
    let cpu: Vec<f64> = cpu
        .into_iter()
        .map(|mut v| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        })
        .collect();
    let mut ok = true;
    let mut rows = Vec::new();
    for (path, s) in Path::ALL.iter().zip(&pooled) {
        let bad = s.iter().filter(|x| !x.ok).count();
        let good = || s.iter().filter(|x| x.ok);
        let mut ttft: Vec<Duration> = good().map(|x| x.ttft).collect();
        let mut gaps: Vec<Duration> = good().flat_map(|x| x.gaps.iter().copied()).collect();
        rows.push((
            s.len(),
            bad,
            percentile(&mut ttft, 0.5),
            percentile(&mut ttft, 0.99),
            percentile(&mut gaps, 0.5),
            percentile(&mut gaps, 0.99),
        ));
        if bad > 0 {
            println!(
                "FAIL: {bad} streams truncated or corrupted through {} at {rate}/s",
                path.name()
            );
            ok = false;
        }
    }
    (rows, cpu, ok)
}

/// P2's table for one rate.
fn print_streams(rate: u32, chunks: usize, rows: &[StreamRow], cpu: &[f64]) {
    println!(
        "\n## P2: streams starting at {rate}/s, first chunk at once then {chunks} chunks 10 ms apart\n"
    );
    println!(
        "| path | streams | truncated or corrupted | TTFT p50 ms | TTFT p99 ms | added TTFT p50 ms | ÷ floor's | inter-chunk p50 ms | inter-chunk p99 ms | CPU µs/stream | ÷ floor's |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let floor_add = us(rows[1].2.saturating_sub(rows[0].2));
    for (i, path) in Path::ALL.iter().enumerate() {
        let r = rows[i];
        let add = us(r.2.saturating_sub(rows[0].2));
        let (a, x) = if *path == Path::Direct {
            ("-".to_owned(), "-".to_owned())
        } else {
            (format!("{:.3}", add / 1e3), ratio(add, floor_add))
        };
        let (c, cx) = match path {
            Path::Direct => ("-".to_owned(), "-".to_owned()),
            Path::Floor => (format!("{:.0}", cpu[i]), "1.00".to_owned()),
            Path::Gateway => (format!("{:.0}", cpu[i]), ratio(cpu[i], cpu[1])),
        };
        println!(
            "| {} | {} | {} | {:.3} | {:.3} | {a} | {x} | {} | {} | {c} | {cx} |",
            path.name(),
            r.0,
            r.1,
            us(r.2) / 1e3,
            us(r.3) / 1e3,
            ms(r.4),
            ms(r.5)
        );
    }
}
