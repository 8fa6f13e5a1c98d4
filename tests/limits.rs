//! Rate limits and budgets end to end: in one gateway (in-memory counters), and across two
//! gateway processes sharing a real `redis-server` (Debian's package; `.ci/run` installs it and
//! sets `MODELGATE_REQUIRE_REDIS=1`, and without it the Redis tests say so and skip), with
//! Redis stopped and restarted in the middle.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    reason = "test code"
)]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::process::Process;
use support::redis::Redis;
use support::*;

/// A fake whose streams start after `first`, so concurrent requests are all in flight at once.
async fn slow_fake(first: Duration) -> FakeUpstream {
    FakeUpstream::start(
        Script::Stream {
            first,
            every: Duration::ZERO,
            chunks: 2,
            end: End::Done,
        },
        Some(CANARY_KEY),
    )
    .await
}

/// One key per tenant: `key-a` of tenant `a`, `key-b` of tenant `b`, with their limits.
fn keys_yaml(a_limits: &str, b_limits: &str) -> String {
    format!(
        "keys:\n  - {{id: key-a, tenant: a, sha256: {}}}\n  - {{id: key-b, tenant: b, sha256: {}}}\ntenants:\n  - {{name: a, limits: {a_limits}}}\n  - {{name: b, limits: {b_limits}}}\n",
        modelgate::config::keys::hash_hex("sk-client-a"),
        modelgate::config::keys::hash_hex("sk-client-b"),
    )
}

/// A deployment priced at $5 per million tokens both ways.
fn priced(fake: &FakeUpstream) -> String {
    deployment("local", "qwen3-8b", fake).replace("}\n", ", price: {input: 5, output: 5}}\n")
}

/// A streaming request whose worst case is about $0.10: 20,000 output tokens at $5 per million.
fn costly() -> String {
    json!({"model": "qwen3-8b", "stream": true, "max_tokens": 20000, "messages": [{"role": "user", "content": "hi"}]})
        .to_string()
}

async fn post(base: &str, key: &str, body: String) -> (u16, reqwest::header::HeaderMap, String) {
    let r = client()
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

#[tokio::test]
async fn two_hundred_concurrent_requests_against_a_budget_that_admits_fifty() {
    let fake = slow_fake(Duration::from_millis(1500)).await;
    // Each request reserves about $0.1001; $5.05 holds 50 of them and not 51.
    let yaml = format!(
        "reload: {{poll_interval: 0}}\n{}deployments:\n{}",
        keys_yaml("{usd_per_day: 5.05}", "{}"),
        priced(&fake)
    );
    let gw = Gateway::start(&yaml).await;
    let results: Vec<(u16, reqwest::header::HeaderMap, String)> =
        futures_util::future::join_all((0..200).map(|_| post(&gw.base, "sk-client-a", costly())))
            .await;
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 429).collect();
    assert_eq!(
        ok,
        50,
        "{:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert_eq!(refused.len(), 150);
    assert_eq!(
        fake.seen().len(),
        50,
        "exactly the admitted requests reach the upstream"
    );
    let (_, h, body) = refused[0];
    let e: Value = serde_json::from_str(body).unwrap();
    assert_eq!(assert_openai_error(&e)["code"], "budget_exceeded");
    assert!(h.contains_key("retry-after"));
    assert!(h.contains_key("x-ratelimit-limit-usd-micros"));
    // Settled at their actual cost (a few tokens each), the budget has room again.
    let (status, _, _) = post(&gw.base, "sk-client-a", costly()).await;
    assert_eq!(status, 200);
    // Tenant b has no limits.
    let (status, _, _) = post(&gw.base, "sk-client-b", costly()).await;
    assert_eq!(status, 200);

    // Usage: the caller sees its own tenant; the admin listener sees every tenant.
    let r = client()
        .get(gw.url("/v1/usage"))
        .bearer_auth("sk-client-a")
        .send()
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["tenants"].as_array().unwrap().len(), 1);
    assert_eq!(v["tenants"][0]["tenant"], "a");
    assert_eq!(v["tenants"][0]["day"]["requests"], 51);
    assert_eq!(
        v["tenants"][0]["day"]["by_openness"]["open-weight"]["requests"],
        51
    );
    let r = client()
        .get(format!("{}/v1/usage", gw.admin))
        .send()
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["tenants"].as_array().unwrap().len(), 2);
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "modelgate_limit_rejections_total",
            &[("scope_kind", "tenant"), ("limit", "usd_per_day")]
        ),
        150.0
    );
}

#[tokio::test]
async fn requests_per_minute_of_a_key_and_deployment_limits_fall_back() {
    let a = FakeUpstream::start(Script::Ok { text: "a".into() }, Some(CANARY_KEY)).await;
    let b = FakeUpstream::start(Script::Ok { text: "b".into() }, Some(CANARY_KEY)).await;
    wait_for_minute_room().await;
    let yaml = format!(
        "reload: {{poll_interval: 0}}\nkeys:\n  - {{id: key-c, tenant: c, sha256: {}, limits: {{requests_per_minute: 5}}}}\ndeployments:\n{}{}",
        modelgate::config::keys::hash_hex("sk-client-c"),
        deployment("first", "qwen3-8b", &a).replace("}\n", ", limits: {requests_per_minute: 3}}\n"),
        deployment("second", "qwen3-8b", &b).replace("}\n", ", price: {input: 1, output: 1}}\n"),
    );
    let gw = Gateway::start(&yaml).await;
    let body = || {
        json!({"model": "qwen3-8b", "messages": [{"role": "user", "content": "hi"}]}).to_string()
    };
    let mut served_by = Vec::new();
    for _ in 0..5 {
        let (status, h, _) = post(&gw.base, "sk-client-c", body()).await;
        assert_eq!(status, 200);
        served_by.push(h["x-modelgate-deployment"].to_str().unwrap().to_owned());
    }
    // The first deployment takes 3 a minute; the others go to the next allowed one.
    assert_eq!(served_by, ["first", "first", "first", "second", "second"]);
    let (status, h, body) = post(&gw.base, "sk-client-c", body()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(h["x-ratelimit-limit-requests"], "5");
    assert_eq!(h["x-ratelimit-remaining-requests"], "0");
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(assert_openai_error(&e)["code"], "rate_limit_exceeded");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("key 'key-c'")
    );
}

/// Waits, if need be, until at least 15 s are left in the calendar minute, so a test's
/// per-minute counts are not split by the minute turning.
async fn wait_for_minute_room() {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if secs >= 45 {
        tokio::time::sleep(Duration::from_secs(61 - secs)).await;
    }
}

#[tokio::test]
async fn two_gateways_sharing_redis_enforce_one_rate_limit_and_one_budget() {
    let Some(binary) = Redis::find() else {
        return;
    };
    let mut redis = Redis::start(binary);
    let fake = slow_fake(Duration::from_millis(800)).await;
    let yaml = |mode: &str| {
        format!(
            "reload: {{poll_interval: 0}}\nlimits: {{store: '{}', on_store_error: {mode}}}\n{}deployments:\n{}",
            redis.url(),
            keys_yaml("{requests_per_minute: 40}", "{usd_per_day: 0.35}"),
            priced(&fake)
        )
    };
    let one = Process::start(&yaml("closed"));
    let two = Process::start(&yaml("open"));
    wait_for_minute_room().await;

    // One rate limit for both: 60 requests, 30 through each gateway, 40 admitted in all.
    let small = || {
        json!({"model": "qwen3-8b", "stream": true, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}).to_string()
    };
    let calls = (0..60).map(|i| {
        let base = if i % 2 == 0 { &one.base } else { &two.base };
        post(base, "sk-client-a", small())
    });
    let statuses: Vec<u16> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        40,
        "{statuses:?}"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 20);
    assert_eq!(fake.seen().len(), 40);

    // One budget for both: $0.35 a day, requests that may cost $0.10 each. Twenty at once
    // through both gateways: three fit beside each other.
    let calls = (0..20).map(|i| {
        let base = if i % 2 == 0 { &one.base } else { &two.base };
        post(base, "sk-client-b", costly())
    });
    let statuses: Vec<u16> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(fake.seen().len(), 43);
    // Spent: what the three actually cost, far under the budget plus what was reserved.
    let usage = |base: String| async move {
        let r = client()
            .get(format!("{base}/v1/usage?tenant=b"))
            .send()
            .await
            .unwrap();
        serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap()
    };
    let mut spent = 0.0;
    for _ in 0..50 {
        let v = usage(one.admin.clone()).await;
        if v["tenants"][0]["day"]["requests"] == 3 {
            spent = v["tenants"][0]["day"]["usd"].as_f64().unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(spent > 0.0 && spent <= 0.35, "spent {spent}");
    // Both gateways read the same usage.
    assert_eq!(
        usage(two.admin.clone()).await["tenants"][0]["day"]["requests"],
        3
    );

    // Redis stops: the fail-closed gateway refuses requests with limits, the fail-open one
    // lets them through.
    redis.down();
    let (status, _, body) = post(&one.base, "sk-client-b", small()).await;
    assert_eq!(status, 503, "{body}");
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(assert_openai_error(&e)["code"], "limit_store_unavailable");
    let (status, _, _) = post(&two.base, "sk-client-b", small()).await;
    assert_eq!(status, 200);
    let m = client()
        .get(format!("{}/metrics", one.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metric(
            &m,
            "modelgate_limit_store_errors_total",
            &[("operation", "admit")]
        ) >= 1.0
    );

    // Redis comes back (empty): both gateways count again.
    redis.up();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _, _) = post(&one.base, "sk-client-b", small()).await;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no recovery after Redis restarted"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_key_removed_from_the_file_stops_working_at_the_reload() {
    let fake = FakeUpstream::start(Script::Ok { text: "ok".into() }, Some(CANARY_KEY)).await;
    let yaml = format!(
        "reload: {{poll_interval: 0}}\n{}deployments:\n{}",
        keys_yaml("{}", "{}"),
        deployment("local", "qwen3-8b", &fake)
    );
    let gw = Gateway::start(&yaml).await;
    let body = || {
        json!({"model": "qwen3-8b", "messages": [{"role": "user", "content": "hi"}]}).to_string()
    };
    assert_eq!(post(&gw.base, "sk-client-a", body()).await.0, 200);
    // Rotation: key-a gets a new secret; the old one is refused, the new one works.
    let rotated = yaml.replace(
        &modelgate::config::keys::hash_hex("sk-client-a"),
        &modelgate::config::keys::hash_hex("sk-client-a2"),
    );
    std::fs::write(&gw.config_path, rotated).unwrap();
    assert!(matches!(
        gw.running.state.reload(),
        modelgate::server::reload::Reloaded::Changed { .. }
    ));
    assert_eq!(post(&gw.base, "sk-client-a", body()).await.0, 401);
    assert_eq!(post(&gw.base, "sk-client-a2", body()).await.0, 200);
    assert_eq!(post(&gw.base, "sk-client-b", body()).await.0, 200);
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} {pid}");
}

#[tokio::test]
async fn an_admission_that_reaches_a_stalled_redis_late_reserves_nothing() {
    use modelgate::limits::{Charge, LimitError, LimitSet, Limiter, ScopeKind, Store};
    let Some(binary) = Redis::find() else {
        return;
    };
    let redis = Redis::start(binary);
    let pid = redis.child.as_ref().unwrap().id();
    let limiter = |mode| {
        std::sync::Arc::new(Limiter::new(
            Store::Redis(modelgate::limits::redis_store::RedisStore::new(&redis.url()).unwrap()),
            mode,
        ))
    };
    let budget = LimitSet {
        usd_micros_per_day: Some(1_000_000),
        ..LimitSet::default()
    };
    let scopes = modelgate::limits::caller_scopes(None, ("stalled", &budget));
    assert_eq!(scopes[0].kind, ScopeKind::Tenant);
    let charge = Charge {
        tokens: 1,
        reserve_micros: 900_000,
        lifetime: Duration::from_secs(60),
    };
    // A stall just past the gateway's wait, and a long one.
    for (mode, stall) in [
        (modelgate::config::spec::StoreErrorMode::Closed, 700),
        (modelgate::config::spec::StoreErrorMode::Closed, 1500),
        (modelgate::config::spec::StoreErrorMode::Open, 700),
        (modelgate::config::spec::StoreErrorMode::Open, 1500),
    ] {
        let one = limiter(mode);
        // Connected and warm, then Redis stalls while an admission is on its way.
        drop(
            one.admit(
                &scopes,
                Charge {
                    reserve_micros: 1,
                    ..charge
                },
            )
            .await
            .unwrap(),
        );
        signal(pid, "-STOP");
        let started = Instant::now();
        let late = one.admit(&scopes, charge).await;
        assert!(started.elapsed() < Duration::from_secs(3));
        match mode {
            modelgate::config::spec::StoreErrorMode::Closed => {
                assert!(matches!(late, Err(LimitError::Unavailable)))
            }
            modelgate::config::spec::StoreErrorMode::Open => {
                assert!(matches!(late, Ok(None)), "let through uncounted")
            }
        }
        tokio::time::sleep(Duration::from_millis(stall).saturating_sub(started.elapsed())).await;
        signal(pid, "-CONT");
        // Redis ran the queued script when it woke, after the gateway's deadline: it did
        // nothing, so the budget is whole for everyone at once.
        let other = limiter(mode);
        let mut admitted = None;
        for _ in 0..50 {
            if let Ok(Some(t)) = other.admit(&scopes, charge).await {
                admitted = Some(t);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (ticket, levels) = admitted.expect("the late admission left a reservation behind");
        assert_eq!(
            levels[0].1, 900_000,
            "only this reservation holds the budget"
        );
        drop(ticket);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_killed_gateways_reservations_lapse_with_its_lease_and_retry_after_says_so() {
    let Some(binary) = Redis::find() else {
        return;
    };
    let redis = Redis::start(binary);
    let hang = FakeUpstream::start(Script::Hang, Some(CANARY_KEY)).await;
    let yaml = format!(
        "reload: {{poll_interval: 0}}\nlimits: {{store: '{}', on_store_error: closed}}\n{}deployments:\n{}",
        redis.url(),
        keys_yaml("{usd_per_day: 0.35}", "{usd_per_day: 0.35}"),
        priced(&hang).replace("}\n", ", timeouts: {first_byte: 60s}}\n"),
    );
    let mut doomed = Process::start(&yaml);
    // Three requests of about $0.10 each hold the tenant's $0.35 on the doomed gateway.
    let mut held = Vec::new();
    for _ in 0..3 {
        let base = doomed.base.clone();
        held.push(tokio::spawn(async move {
            post(&base, "sk-client-a", costly()).await
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while hang.seen().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "the requests did not reach the upstream"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let survivor = Process::start(&yaml);
    let (status, headers, body) = post(&survivor.base, "sk-client-a", costly()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        headers["retry-after"], "1",
        "reservations in flight clear in seconds, not at midnight"
    );
    signal(doomed.child.id(), "-KILL");
    let _ = doomed.wait(Duration::from_secs(5));
    let killed = Instant::now();
    // Within the lease (10 s), the dead gateway's reservations no longer count.
    hang.set(Script::Stream {
        first: Duration::ZERO,
        every: Duration::ZERO,
        chunks: 2,
        end: End::Done,
    });
    loop {
        let (status, _, body) = post(&survivor.base, "sk-client-a", costly()).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 429, "{body}");
        assert!(
            killed.elapsed() < Duration::from_secs(14),
            "still refused {} s after the gateway died",
            killed.elapsed().as_secs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for h in held {
        h.abort();
    }
}

/// An upstream that bills as much as it can: prompt tokens at two characters a token (hex
/// text), and an answer as long as the request lets it be (the rest of its 32,768-token
/// context when it sets no `max_tokens`); like vLLM, it counts (in the returned counter) a
/// request whose prompt and `max_tokens` do not fit the context.
async fn greedy_upstream() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let uncapped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let u2 = uncapped.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let uncapped = u2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 65536];
                let body = loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break buf[end + 4..end + 4 + len].to_vec();
                    }
                };
                let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                let text = v["messages"][0]["content"].as_str().unwrap_or("");
                let prompt = text.len() / 2;
                let room = 32_768u64.saturating_sub(prompt as u64);
                let asked = v["max_tokens"]
                    .as_u64()
                    .or(v["max_completion_tokens"].as_u64());
                if asked.is_some_and(|m| m > room) {
                    uncapped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                let completion = asked.unwrap_or(room).min(room);
                let answer = json!({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "length"}],
                    "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt as u64 + completion}})
                .to_string();
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    (format!("http://{addr}/v1"), uncapped)
}

#[tokio::test]
async fn spend_never_passes_the_budget_with_hex_prompts_and_no_max_tokens() {
    let redis = Redis::find().map(Redis::start);
    // Without max_tokens the answer dominates the cost; with max_tokens 1 the prompt does,
    // where a quarter of the bytes would have reserved half of what a request costs.
    // (Redis keeps spend across the runs: each run there has a tenant of its own.)
    for (store, max, key) in [
        ("memory", json!(null), "sk-client-a"),
        ("memory", json!(1), "sk-client-a"),
        ("redis", json!(null), "sk-client-a"),
        ("redis", json!(1), "sk-client-b"),
    ] {
        let url = match (store, &redis) {
            ("memory", _) => "memory".to_owned(),
            (_, Some(r)) => r.url(),
            _ => continue,
        };
        let (base, uncapped) = greedy_upstream().await;
        let gw = Gateway::start(&format!(
            "reload: {{poll_interval: 0}}\nlimits: {{store: '{url}'}}\n{}deployments:\n  - {{name: greedy, kind: openai-compatible, model: qwen3-8b, base_url: '{base}', price: {{input: 5, output: 5}}}}\n",
            keys_yaml("{usd_per_day: 1}", "{usd_per_day: 1}"),
        ))
        .await;
        // 8,000 hex characters: 4,000 tokens, where a quarter of the bytes would say 2,000.
        let hex: String = (0..8000)
            .map(|i| char::from(b"0123456789abcdef"[i % 16]))
            .collect();
        let body = json!({"model": "qwen3-8b", "max_tokens": max, "messages": [{"role": "user", "content": hex}]})
            .to_string();
        let calls = (0..400).map(|_| {
            let (url, body) = (gw.url("/v1/chat/completions"), body.clone());
            async move {
                client()
                    .post(url)
                    .bearer_auth(key)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        });
        let statuses = futures_util::future::join_all(calls).await;
        let ok = statuses.iter().filter(|s| **s == 200).count();
        assert!(ok >= 1, "{store}: nothing admitted");
        assert!(
            statuses.iter().all(|s| matches!(s, 200 | 429)),
            "{store}: {statuses:?}"
        );
        assert_eq!(
            uncapped.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "{store}: the upstream was asked for more than its context holds"
        );
        let spent = metric(&gw.metrics().await, "modelgate_cost_usd_total", &[]);
        assert!(
            spent <= 1.0 + 1e-9,
            "{store}: spent ${spent} of a $1 budget with {ok} requests admitted"
        );
        assert!(
            spent > 0.3,
            "{store} {max}: the budget was barely used: ${spent}"
        );
    }
}

/// A small deterministic generator, so a failing run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[tokio::test]
async fn spend_never_passes_a_budget_and_reservations_die_with_their_owner_in_both_stores() {
    use modelgate::config::spec::StoreErrorMode;
    use modelgate::limits::redis_store::RedisStore;
    use modelgate::limits::usage::UsageEntry;
    use modelgate::limits::{Charge, LimitSet, Limiter, Store, Ticket};
    use std::sync::Arc;
    const CAP: u64 = 1_000_000;
    let redis = Redis::find().map(Redis::start);
    let budget = LimitSet {
        usd_micros_per_day: Some(CAP),
        ..LimitSet::default()
    };
    let mut cases = 0;
    let (mut deaths, mut stalls) = (0, 0);
    for store in ["memory", "redis"] {
        if store == "redis" && redis.is_none() {
            continue;
        }
        for seed in [
            0x9e37_79b9_7f4a_7c15u64,
            0x2545_f491_4f6c_dd1d,
            0x1234_5678_9abc_def1,
        ] {
            cases += 1;
            let mut rng = Rng(seed);
            let tenant = format!("prop-{store}-{seed:x}");
            let scopes = modelgate::limits::caller_scopes(None, (&tenant, &budget));
            let make = || -> Arc<Limiter> {
                let s = match (store, &redis) {
                    ("redis", Some(r)) => Store::Redis(
                        RedisStore::new(&r.url())
                            .unwrap()
                            .with_lease(Duration::from_secs(3)),
                    ),
                    _ => Store::Memory(Default::default()),
                };
                Arc::new(Limiter::new(s, StoreErrorMode::Closed))
            };
            // Two gateways sharing Redis; one process's memory.
            let first = make();
            let gateways: Vec<Arc<Limiter>> = if store == "redis" {
                vec![first.clone(), make()]
            } else {
                vec![first.clone()]
            };
            let mut dead = vec![false; gateways.len()];
            let mut held: Vec<(usize, Ticket, u64)> = Vec::new();
            let mut settled = 0u64;
            for step in 0..150 {
                // Besides the random ones, one stall and one death at fixed steps on Redis.
                let (forced_stall, forced_death) = (
                    store == "redis" && step == 75,
                    store == "redis" && step == 110,
                );
                let g = if forced_death {
                    1
                } else {
                    usize::try_from(rng.below(gateways.len() as u64)).unwrap()
                };
                let op = match (forced_stall, forced_death) {
                    (true, _) => 9,
                    (_, true) => 8,
                    _ => rng.below(10),
                };
                match op {
                    0..=4 if !dead[g] => {
                        // Three admissions at once, on any live gateway.
                        let asks: Vec<(usize, u64)> = (0..3)
                            .map(|_| {
                                let g = usize::try_from(rng.below(gateways.len() as u64)).unwrap();
                                (if dead[g] { 0 } else { g }, 10_000 + rng.below(190_000))
                            })
                            .collect();
                        let results = futures_util::future::join_all(asks.iter().map(|(g, r)| {
                            let charge = Charge {
                                tokens: 1,
                                reserve_micros: *r,
                                lifetime: Duration::from_secs(30),
                            };
                            gateways[*g].admit(&scopes, charge)
                        }))
                        .await;
                        for ((g, r), result) in asks.into_iter().zip(results) {
                            if let Ok(Some((t, levels))) = result {
                                assert!(
                                    levels[0].1 <= CAP,
                                    "seed {seed:x}: spend and reservations {} over the budget",
                                    levels[0].1
                                );
                                held.push((g, t, r));
                            }
                        }
                    }
                    5..=6 if !held.is_empty() => {
                        let i = usize::try_from(rng.below(held.len() as u64)).unwrap();
                        let (g, t, r) = held.swap_remove(i);
                        let cost = rng.below(r + 1);
                        settled += cost;
                        gateways[g].finish(
                            Some(&t),
                            UsageEntry {
                                tenant: Arc::from(tenant.as_str()),
                                model: Arc::from("m"),
                                openness: "open-weight",
                                input_tokens: 1,
                                output_tokens: 1,
                                cost_micros: cost,
                            },
                        );
                    }
                    7 if !held.is_empty() => {
                        // The client left: the ticket is dropped unsettled.
                        let i = usize::try_from(rng.below(held.len() as u64)).unwrap();
                        drop(held.swap_remove(i));
                    }
                    8 if store == "redis"
                        && g == 1
                        && !dead[1]
                        && (forced_death || rng.below(4) == 0) =>
                    {
                        // The second gateway dies holding at least one ticket: they are never
                        // settled nor released.
                        let last = Charge {
                            tokens: 1,
                            reserve_micros: 1,
                            lifetime: Duration::from_secs(30),
                        };
                        if let Ok(Some((t, _))) = gateways[1].admit(&scopes, last).await {
                            held.push((1, t, 1));
                        }
                        assert!(held.iter().any(|(g, _, _)| *g == 1), "seed {seed:x}");
                        dead[1] = true;
                        deaths += 1;
                        gateways[1].simulate_crash();
                        let (gone, kept): (Vec<_>, Vec<_>) =
                            held.into_iter().partition(|(g, _, _)| *g == 1);
                        held = kept;
                        for (_, t, _) in gone {
                            std::mem::forget(t);
                        }
                    }
                    9 if store == "redis" && (forced_stall || rng.below(8) == 0) => {
                        // Redis stalls while an admission is on its way: it reserves nothing.
                        let pid = redis.as_ref().unwrap().child.as_ref().unwrap().id();
                        signal(pid, "-STOP");
                        stalls += 1;
                        let live = dead.iter().position(|d| !d).unwrap();
                        let charge = Charge {
                            tokens: 1,
                            reserve_micros: 50_000,
                            lifetime: Duration::from_secs(30),
                        };
                        assert!(gateways[live].admit(&scopes, charge).await.is_err());
                        tokio::time::sleep(Duration::from_millis(1200)).await;
                        signal(pid, "-CONT");
                    }
                    _ => {}
                }
            }
            // Everything in flight ends; a dead gateway's reservations lapse with its lease.
            held.clear();
            tokio::time::sleep(Duration::from_millis(3600)).await;
            assert!(
                settled <= CAP,
                "seed {seed:x}: settled {settled} over {CAP}"
            );
            // What is left of the budget, and not a micro more, is there for a new gateway.
            // (For memory, the one process's store; for Redis, a gateway that just started.)
            let fresh = if store == "redis" {
                make()
            } else {
                first.clone()
            };
            let rest = CAP - settled;
            let charge = |r| Charge {
                tokens: 1,
                reserve_micros: r,
                lifetime: Duration::from_secs(30),
            };
            let mut keep = None;
            if rest > 0 {
                let got = fresh.admit(&scopes, charge(rest)).await;
                let why = match &got {
                    Ok(Some(_)) => String::new(),
                    Ok(None) => "no ticket".to_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    matches!(got, Ok(Some(_))),
                    "{store} seed {seed:x}: {rest} left after {settled} settled, but refused: {why}"
                );
                keep = got.ok().flatten();
            }
            assert!(
                fresh.admit(&scopes, charge(1)).await.is_err(),
                "{store} seed {seed:x}: more than the budget admitted"
            );
            drop(keep);
        }
    }
    assert!(cases >= 3);
    if redis.is_some() {
        assert!(
            deaths >= 1 && stalls >= 1,
            "{deaths} deaths, {stalls} stalls"
        );
    }
}

#[tokio::test]
async fn after_redis_stalls_for_five_seconds_during_a_burst_tenants_under_budget_are_admitted_at_once()
 {
    let Some(binary) = Redis::find() else {
        return;
    };
    let redis = Redis::start(binary);
    let pid = redis.child.as_ref().unwrap().id();
    let fake = slow_fake(Duration::from_millis(50)).await;
    for mode in ["closed", "open"] {
        let yaml = format!(
            "reload: {{poll_interval: 0}}\nlimits: {{store: '{}', on_store_error: {mode}}}\n{}deployments:\n{}",
            redis.url(),
            keys_yaml("{usd_per_day: 1}", "{usd_per_day: 1}"),
            priced(&fake)
        );
        let one = Process::start(&yaml);
        let two = Process::start(&yaml);
        // Warm connections, then the store stalls for 5 s under a burst from both gateways.
        assert_eq!(post(&one.base, "sk-client-a", costly()).await.0, 200);
        assert_eq!(post(&two.base, "sk-client-b", costly()).await.0, 200);
        signal(pid, "-STOP");
        let burst = (0..24).map(|i| {
            let base = if i % 2 == 0 {
                one.base.clone()
            } else {
                two.base.clone()
            };
            let key = if i % 3 == 0 {
                "sk-client-a"
            } else {
                "sk-client-b"
            };
            async move { post(&base, key, costly()).await.0 }
        });
        let statuses = futures_util::future::join_all(burst).await;
        for s in &statuses {
            match mode {
                "closed" => assert_eq!(*s, 503, "{statuses:?}"),
                _ => assert_eq!(*s, 200, "{statuses:?}"),
            }
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        signal(pid, "-CONT");
        let resumed = Instant::now();
        // Real spend is a few cents of each $1: both tenants are admitted again within
        // seconds, not blocked by reservations the stalled burst left behind.
        for key in ["sk-client-a", "sk-client-b"] {
            loop {
                let (status, _, body) = post(&one.base, key, costly()).await;
                if status == 200 {
                    break;
                }
                assert!(
                    resumed.elapsed() < Duration::from_secs(5),
                    "{mode}: {key} still refused {} ms after Redis resumed: {status} {body}",
                    resumed.elapsed().as_millis()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        for _ in 0..4 {
            assert_eq!(
                post(&two.base, "sk-client-a", costly()).await.0,
                200,
                "{mode}"
            );
        }
    }
}
