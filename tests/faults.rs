//! The fault matrix of `reliability.md` §5.2, one test per row (F1–F14, C2, C3, S2; C1 and S1
//! are in `lifecycle.rs`): fake upstreams inject the fault, and each test checks what the client
//! got, what every fake saw, and how the metrics moved. Timing-sensitive rows are scaled down
//! (short timeouts, short ejections) but keep their shape; paused-time versions of the retry,
//! breaker and deadline logic are unit tests of `upstream::fallback`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use support::*;

const MODEL: &str = "qwen3-8b";

/// A deployment of `MODEL` on `fake`, with extra settings (YAML flow-mapping entries).
fn dep(name: &str, fake: &FakeUpstream, extra: &str) -> String {
    let d = deployment(name, MODEL, fake);
    if extra.is_empty() {
        d
    } else {
        d.replace("}\n", &format!(", {extra}}}\n"))
    }
}

/// `primary` (free, so first) and `backup` (priced, so second).
fn pair(primary: &FakeUpstream, p_extra: &str, backup: &FakeUpstream) -> String {
    format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n{}{}",
        dep("primary", primary, p_extra),
        dep("backup", backup, "price: {input: 1, output: 1}")
    )
}

fn one(primary: &FakeUpstream, extra: &str) -> String {
    format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n{}",
        dep("primary", primary, extra)
    )
}

fn hello() -> Value {
    json!({"model": MODEL, "messages": [{"role": "user", "content": "hello"}]})
}

fn hello_stream() -> Value {
    json!({"model": MODEL, "stream": true, "messages": [{"role": "user", "content": "hello"}]})
}

/// Posts a streaming request; the status, the headers and the `data:` payloads.
async fn stream(gw: &Gateway) -> (u16, reqwest::header::HeaderMap, Vec<String>) {
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(hello_stream().to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, sse_events(r).await)
}

/// The text the content deltas of a stream add up to.
fn streamed_text(events: &[String]) -> String {
    events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect()
}

fn words(n: usize) -> String {
    (0..n).map(faults::word).collect()
}

fn ok() -> Script {
    Script::Ok {
        text: "from the backup".into(),
    }
}

async fn fake(script: Script) -> FakeUpstream {
    FakeUpstream::start(script, Some(CANARY_KEY)).await
}

fn attempts(m: &str, deployment: &str, result: &str) -> f64 {
    metric(
        m,
        "modelgate_upstream_attempts_total",
        &[("deployment", deployment), ("result", result)],
    )
}

#[tokio::test]
async fn f01_a_failing_primary_costs_the_client_nothing_and_is_ejected() {
    let primary = fake(Script::status(503, None)).await;
    let backup = fake(ok()).await;
    let gw = Gateway::start(&pair(&primary, "", &backup)).await;
    for _ in 0..10 {
        let (status, h, v) = chat(&gw, hello()).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(h["x-modelgate-deployment"], "backup");
    }
    // Two requests tried it twice (one retry each), the third once: five consecutive failures
    // eject it, and the other seven requests skip it.
    assert_eq!(primary.seen().len(), 5);
    assert_eq!(backup.seen().len(), 10);
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "modelgate_fallbacks_total", &[]), 10.0);
    assert_eq!(
        metric(&m, "modelgate_retries_total", &[("deployment", "primary")]),
        2.0
    );
    assert_eq!(attempts(&m, "primary", "server_error"), 5.0);
    assert_eq!(attempts(&m, "primary", "ejected"), 7.0);
    assert_eq!(
        metric(&m, "modelgate_circuit_state", &[("deployment", "primary")]),
        2.0
    );
}

#[tokio::test]
async fn f02_retry_after_cools_a_deployment_down_or_is_waited_for_or_passed_on() {
    // With somewhere else to go: the backup at once, and the primary left alone for 2 s.
    let primary = fake(Script::status(429, Some("2"))).await;
    let backup = fake(ok()).await;
    let gw = Gateway::start(&pair(&primary, "", &backup)).await;
    let started = Instant::now();
    let (status, h, _) = chat(&gw, hello()).await;
    assert_eq!(
        (status.as_u16(), &h["x-modelgate-deployment"]),
        (200, &"backup".parse().unwrap())
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    let (_, h, _) = chat(&gw, hello()).await;
    assert_eq!(h["x-modelgate-deployment"], "backup");
    assert_eq!(primary.seen().len(), 1);
    assert_eq!(
        attempts(&gw.metrics().await, "primary", "cooling_down"),
        1.0
    );
    primary.set(ok());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (_, h, _) = chat(&gw, hello()).await;
    assert_eq!(h["x-modelgate-deployment"], "primary");
    let seen = primary.seen();
    assert!(seen[1].at - seen[0].at >= Duration::from_secs(2));

    // Nowhere else to go: waited for, then retried once.
    let alone = fake(Script::Sequence(vec![Script::status(429, Some("2")), ok()])).await;
    let gw = Gateway::start(&one(&alone, "")).await;
    let (status, _, v) = chat(&gw, hello()).await;
    assert_eq!(status, 200, "{v}");
    let seen = alone.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen[1].at - seen[0].at >= Duration::from_secs(2));

    // Longer than `max_retry_after`: the 429 and its Retry-After go back to the client.
    alone.set(Script::status(429, Some("30")));
    let (status, h, v) = chat(&gw, hello()).await;
    assert_eq!(status, 429);
    assert_eq!(h["retry-after"], "30");
    assert_eq!(assert_openai_error(&v)["type"], "rate_limit_error");
    assert_eq!(alone.seen().len(), 3);
}

#[tokio::test]
async fn f03_a_request_the_upstream_refuses_is_neither_retried_nor_sent_elsewhere() {
    let primary = fake(ok()).await;
    let backup = fake(ok()).await;
    let gw = Gateway::start(&pair(&primary, "", &backup)).await;
    let mut tried = 0;
    for code in [400, 404, 422] {
        primary.set(Script::Status {
            status: code,
            body: json!({"error": {"message": format!("refused {code}"), "type": "invalid_request_error", "param": null, "code": null}}),
            retry_after: None,
        });
        let (status, _, v) = chat(&gw, hello()).await;
        tried += 1;
        assert_eq!(status.as_u16(), code, "{v}");
        assert_eq!(
            assert_openai_error(&v)["message"],
            format!("refused {code}")
        );
        assert_eq!(primary.seen().len(), tried);
    }
    // The gateway's own credentials refused: not the client's fault, so not passed on as a
    // 401 the client would take for its own key; the next deployment may hold good ones.
    for code in [401, 403] {
        primary.set(Script::status(code, None));
        let (status, h, _) = chat(&gw, hello()).await;
        tried += 1;
        assert_eq!(status, 200);
        assert_eq!(h["x-modelgate-deployment"], "backup");
        assert_eq!(primary.seen().len(), tried, "no retry of {code}");
    }
    assert_eq!(backup.seen().len(), 2);
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "modelgate_retries_total", &[]), 0.0);
    assert_eq!(metric(&m, "modelgate_fallbacks_total", &[]), 2.0);
}

/// A loopback port that accepts no connection: its accept queue is full, so a SYN to it is
/// dropped and a connect hangs until the connector gives up.
async fn blackhole() -> (tokio::net::TcpListener, Vec<std::net::TcpStream>, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    // Fill the queue: connects that complete now are held, the first that hangs proves it full.
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    (listener, held, addr.port())
}

#[tokio::test]
async fn f04_connect_refused_and_connect_timeout_fall_back() {
    let backup = fake(ok()).await;
    // Refused: tried, retried, then the backup.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead = FakeUpstream::start(ok(), None).await;
    let yaml =
        pair(&dead, "", &backup).replace(&dead.addr.to_string(), &format!("127.0.0.1:{port}"));
    let gw = Gateway::start(&yaml).await;
    let (status, h, _) = chat(&gw, hello()).await;
    assert_eq!(status, 200);
    assert_eq!(h["x-modelgate-deployment"], "backup");
    assert_eq!(
        attempts(&gw.metrics().await, "primary", "connect_error"),
        2.0
    );

    // Hanging connect: the connect timeout fires at its value.
    let (_listener, _held, port) = blackhole().await;
    let yaml = pair(
        &dead,
        "timeouts: {connect: 1s}, retries: {attempts: 0}",
        &backup,
    )
    .replace(&dead.addr.to_string(), &format!("127.0.0.1:{port}"));
    let gw = Gateway::start(&yaml).await;
    let started = Instant::now();
    let (status, h, _) = chat(&gw, hello()).await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert_eq!(h["x-modelgate-deployment"], "backup");
    assert!(
        took >= Duration::from_millis(900) && took <= Duration::from_millis(1300),
        "connect timeout of 1s took {took:?}"
    );
    assert_eq!(attempts(&gw.metrics().await, "primary", "timeout"), 1.0);
}

#[tokio::test]
async fn f05_a_slow_first_token_falls_back_before_the_commit_point() {
    let primary = fake(Script::Stream {
        first: Duration::from_secs(5),
        every: Duration::ZERO,
        chunks: 3,
        end: End::Done,
    })
    .await;
    let backup = fake(ok()).await;
    let gw = Gateway::start(&pair(
        &primary,
        "timeouts: {first_token: 300ms}, retries: {attempts: 0}",
        &backup,
    ))
    .await;
    let started = Instant::now();
    let (status, h, events) = stream(&gw).await;
    assert_eq!(status, 200);
    assert_eq!(h["x-modelgate-deployment"], "backup");
    assert!(started.elapsed() < Duration::from_secs(2));
    // One clean stream, all from the backup.
    assert_eq!(streamed_text(&events), "from the backup");
    assert_eq!(events.last().unwrap(), "[DONE]");
    assert!(
        primary.all_closed(Duration::from_secs(1)).await,
        "the slow attempt was not closed"
    );
    assert_eq!(attempts(&gw.metrics().await, "primary", "timeout"), 1.0);
}

#[tokio::test]
async fn f06_a_reset_before_the_headers_is_retried() {
    let primary = fake(Script::Sequence(vec![Script::ResetBeforeHeaders, ok()])).await;
    let backup = fake(ok()).await;
    let gw = Gateway::start(&pair(&primary, "", &backup)).await;
    let (status, h, _) = chat(&gw, hello()).await;
    assert_eq!(status, 200);
    assert_eq!(h["x-modelgate-deployment"], "primary");
    assert_eq!(primary.seen().len(), 2);
    // Every retry reset too: the backup.
    primary.set(Script::ResetBeforeHeaders);
    let (status, h, _) = chat(&gw, hello()).await;
    assert_eq!(status, 200);
    assert_eq!(h["x-modelgate-deployment"], "backup");
    let m = gw.metrics().await;
    assert_eq!(attempts(&m, "primary", "io_error"), 3.0);
}

#[tokio::test]
async fn f07_a_stream_that_fails_after_its_commit_point_ends_with_an_error_event() {
    for (end, reason) in [
        (End::Cut, "upstream_error"),
        (End::Reset, "upstream_error"),
        (End::InbandError, "inband_error"),
        (End::Stall, "idle_timeout"),
    ] {
        let primary = fake(Script::Stream {
            first: Duration::ZERO,
            every: Duration::from_millis(2),
            chunks: 40,
            end: end.clone(),
        })
        .await;
        let backup = fake(ok()).await;
        let gw = Gateway::start(&pair(
            &primary,
            "timeouts: {idle: 500ms}, breaker: {consecutive_failures: 1}",
            &backup,
        ))
        .await;
        let (status, _, events) = stream(&gw).await;
        assert_eq!(status, 200);
        assert_eq!(streamed_text(&events), words(40), "{end:?}");
        assert!(
            !events.contains(&"[DONE]".to_owned()),
            "{end:?}: {events:?}"
        );
        let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
        assert_openai_error(&last);
        assert!(
            backup.seen().is_empty(),
            "{end:?}: fell back after the commit point"
        );
        let m = gw.metrics().await;
        assert_eq!(
            metric(&m, "modelgate_stream_ends_total", &[("reason", reason)]),
            1.0,
            "{end:?}"
        );
        // The failure counted against the deployment: one failure ejects it here.
        assert_eq!(
            metric(&m, "modelgate_circuit_state", &[("deployment", "primary")]),
            2.0,
            "{end:?}"
        );
        if end == End::Stall {
            assert!(primary.all_closed(Duration::from_secs(1)).await);
        }
    }
}

#[tokio::test]
async fn f08_garbage_or_incomplete_upstream_json_is_a_502() {
    let primary = fake(Script::Raw {
        content_type: "application/json".into(),
        body: "{\"id\": \"chatcmpl-1\", \"choices\": [{\"mess".into(),
    })
    .await;
    let gw = Gateway::start(&one(&primary, "breaker: {consecutive_failures: 0}")).await;
    let (status, _, v) = chat(&gw, hello()).await;
    assert_eq!(status, 502);
    assert_eq!(assert_openai_error(&v)["code"], "upstream_invalid_response");
    primary.set(Script::MissingFields);
    let (status, _, v) = chat(&gw, hello()).await;
    assert_eq!(status, 502);
    assert_eq!(assert_openai_error(&v)["code"], "upstream_invalid_response");
    // Not retried: the same answer would come back.
    assert_eq!(primary.seen().len(), 2);
    // Garbage inside a stream, before its first content.
    primary.set(Script::Sse {
        events: vec!["{not json".into()],
        delay: Duration::ZERO,
        done: true,
    });
    let (status, _, _) = stream(&gw).await;
    assert_eq!(status, 502);
    // A line longer than `limits.max_sse_line_bytes` (1 MiB) before the first content.
    primary.set(Script::Stream {
        first: Duration::ZERO,
        every: Duration::ZERO,
        chunks: 0,
        end: End::HugeLine(2 << 20),
    });
    let (status, _, _) = stream(&gw).await;
    assert_eq!(status, 502);
    // A redirect is not followed: the gateway's key must not go where the upstream points.
    let elsewhere = fake(ok()).await;
    primary.set(Script::Redirect(format!(
        "{}/chat/completions",
        elsewhere.base_url()
    )));
    let (status, _, v) = chat(&gw, hello()).await;
    assert_eq!(status, 502, "{v}");
    assert!(elsewhere.connections().is_empty());
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "modelgate_panics_total", &[]), 0.0);
}

#[tokio::test]
async fn over_the_concurrency_limit_requests_are_shed_with_503_and_retry_after() {
    let primary = fake(Script::Stream {
        first: Duration::from_millis(50),
        every: Duration::from_millis(50),
        chunks: 20,
        end: End::Done,
    })
    .await;
    let yaml = format!(
        "server: {{max_concurrent_requests: 2, max_open_streams: 1}}\n{}",
        one(&primary, "")
    );
    let gw = Gateway::start(&yaml).await;
    // Three streams, each started (its answer under way) before the next: the first gives its
    // request slot back for the one open-stream slot; the other two, finding none, keep theirs
    // for as long as they last (about a second), and then no slot is left.
    let mut streams = Vec::new();
    for _ in 0..3 {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .body(hello_stream().to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        streams.push(tokio::spawn(sse_events(r)));
    }
    let (status, h, v) = chat(&gw, hello()).await;
    assert_eq!(status, 503);
    assert_eq!(h["retry-after"], "1");
    assert_eq!(assert_openai_error(&v)["code"], "overloaded");
    assert_eq!(
        primary.seen().len(),
        3,
        "a shed request reached the upstream"
    );
    // Listing models is not shed.
    let r = client().get(gw.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for s in streams {
        let events = s.await.unwrap();
        assert_eq!(events.last().unwrap(), "[DONE]");
    }
    let (status, _, _) = stream(&gw).await;
    assert_eq!(status, 200);
    assert_eq!(
        metric(&gw.metrics().await, "modelgate_shed_total", &[]),
        1.0
    );
}

#[tokio::test]
async fn started_streams_leave_the_request_slots_to_requests_being_decided() {
    let primary = fake(Script::Stream {
        first: Duration::ZERO,
        every: Duration::from_millis(100),
        chunks: 10,
        end: End::Done,
    })
    .await;
    // One request slot, the default number of open-stream slots.
    let gw = Gateway::start(&format!(
        "server: {{max_concurrent_requests: 1}}\n{}",
        one(&primary, "")
    ))
    .await;
    let mut streams = Vec::new();
    for _ in 0..5 {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .body(hello_stream().to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "a started stream still held the one slot");
        streams.push(tokio::spawn(sse_events(r)));
    }
    for s in streams {
        assert_eq!(s.await.unwrap().last().unwrap(), "[DONE]");
    }
    assert_eq!(
        metric(&gw.metrics().await, "modelgate_shed_total", &[]),
        0.0
    );
}

#[tokio::test]
async fn f09_a_slow_but_steady_stream_is_never_cut() {
    // A chunk every 400 ms with a 1 s idle timeout: 4 s in all, four times the idle timeout.
    let primary = fake(Script::Stream {
        first: Duration::from_millis(400),
        every: Duration::from_millis(400),
        chunks: 10,
        end: End::Done,
    })
    .await;
    let gw = Gateway::start(&one(&primary, "timeouts: {idle: 1s, total: 1s}")).await;
    let started = Instant::now();
    let (status, _, events) = stream(&gw).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_secs(4));
    assert_eq!(streamed_text(&events), words(10));
    assert_eq!(events.last().unwrap(), "[DONE]");
}

#[tokio::test]
async fn f10_a_failing_deployment_is_not_hit_by_a_retry_storm() {
    // No fallback, no ejection: only the retry budget stands between the failure and the load.
    let primary = fake(Script::status(503, None)).await;
    let gw = Gateway::start(&one(
        &primary,
        "breaker: {consecutive_failures: 0}, timeouts: {total: 5s}",
    ))
    .await;
    const REQUESTS: usize = 300;
    let started = Instant::now();
    let latencies: Vec<Duration> = futures_util::stream::iter(0..REQUESTS)
        .map(|_| async {
            let t = Instant::now();
            let (status, _, _) = chat(&gw, hello()).await;
            assert_eq!(status, 503);
            t.elapsed()
        })
        .buffer_unordered(30)
        .collect()
        .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "{took:?}");
    let seen = primary.seen().len() as f64;
    // 20 % of the requests plus 3 per second over the budget's 10 s window.
    let bound = 1.2 * REQUESTS as f64 + 3.0 * 10.0;
    assert!(seen <= bound, "{seen} attempts for {REQUESTS} requests");
    assert!(seen > REQUESTS as f64, "retries happened at all");
    assert!(latencies.iter().all(|l| *l < Duration::from_secs(5)));
}

#[tokio::test]
async fn f11_an_ejected_deployment_is_probed_once_and_comes_back() {
    let primary = fake(Script::status(500, None)).await;
    let backup = fake(ok()).await;
    let gw = Gateway::start(&pair(
        &primary,
        "retries: {attempts: 0}, breaker: {consecutive_failures: 5, base_ejection: 1s, max_ejection: 4s}",
        &backup,
    ))
    .await;
    for _ in 0..5 {
        chat(&gw, hello()).await;
    }
    assert_eq!(primary.seen().len(), 5, "open after 5 consecutive failures");
    for _ in 0..5 {
        let (_, h, _) = chat(&gw, hello()).await;
        assert_eq!(h["x-modelgate-deployment"], "backup");
    }
    assert_eq!(primary.seen().len(), 5, "ejected");
    // After the ejection: one probe among concurrent requests; it fails, so ejected again
    // (for twice as long).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let all: Vec<_> = futures_util::future::join_all((0..4).map(|_| chat(&gw, hello()))).await;
    assert!(all.iter().all(|(s, _, _)| *s == 200));
    assert_eq!(primary.seen().len(), 6, "exactly one probe");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    chat(&gw, hello()).await;
    assert_eq!(primary.seen().len(), 6, "the second ejection lasts 2 s");
    // It recovers: the next probe succeeds and traffic returns.
    primary.set(Script::Ok {
        text: "back".into(),
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for _ in 0..3 {
        let (_, h, _) = chat(&gw, hello()).await;
        assert_eq!(h["x-modelgate-deployment"], "primary");
    }
    assert_eq!(
        metric(
            &gw.metrics().await,
            "modelgate_circuit_state",
            &[("deployment", "primary")]
        ),
        0.0
    );
}

#[tokio::test]
async fn f11_an_ejected_deployment_whose_probe_is_a_stream_comes_back() {
    let primary = fake(Script::status(500, None)).await;
    let backup = fake(ok()).await;
    let gw = Gateway::start(&pair(
        &primary,
        "retries: {attempts: 0}, breaker: {consecutive_failures: 2, base_ejection: 1s, max_ejection: 4s}",
        &backup,
    ))
    .await;
    for _ in 0..2 {
        chat(&gw, hello()).await;
    }
    let (_, h, _) = chat(&gw, hello()).await;
    assert_eq!(h["x-modelgate-deployment"], "backup", "ejected");
    primary.set(Script::Ok {
        text: "back".into(),
    });
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The probe: a stream, whose success the breaker hears once its first bytes are out.
    let (status, h, events) = stream(&gw).await;
    assert_eq!(status, 200);
    assert_eq!(h["x-modelgate-deployment"], "primary");
    assert_eq!(streamed_text(&events), "back");
    // Closed again: traffic returns (a probe never told would keep it half-open).
    for _ in 0..3 {
        let (_, h, _) = chat(&gw, hello()).await;
        assert_eq!(h["x-modelgate-deployment"], "primary");
    }
    let m = gw.metrics().await;
    let state = [("deployment", "primary")];
    assert_eq!(metric(&m, "modelgate_circuit_state", &state), 0.0);
}

#[tokio::test]
async fn f12_when_every_local_backend_is_down_the_closed_api_is_never_called() {
    let local_a = fake(Script::status(503, None)).await;
    let local_b = fake(Script::status(503, None)).await;
    let closed = fake(ok()).await;
    let yaml = format!(
        "reload: {{poll_interval: 0}}\npolicies: {{active: confidential-local}}\ndeployments:\n{}{}  - {{name: closed-gpt-4o, kind: openai, model: gpt-4o, base_url: '{}', api_key_env: CANARY, locality: remote, data: {{retains_prompts: true}}}}\n",
        deployment("local-llama", "llama-3.1-8b-instruct", &local_a),
        deployment("local-smol", "smollm2-135m-instruct", &local_b),
        closed.base_url()
    );
    let gw = Gateway::start(&yaml).await;
    for _ in 0..3 {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .header("x-modelgate-labels", "data=confidential")
            .body(
                json!({"model": "auto", "messages": [{"role": "user", "content": "secret"}]})
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(assert_openai_error(&v)["code"], "no_eligible_backend");
    }
    assert!(!local_a.seen().is_empty() && !local_b.seen().is_empty());
    assert!(closed.seen().is_empty());
    assert!(
        closed.connections().is_empty(),
        "a connection was opened to the closed API"
    );
}

#[tokio::test]
async fn f13_a_client_that_leaves_cancels_the_upstream_call() {
    // Before the response headers (the upstream is slow to answer).
    let primary = fake(Script::Hang).await;
    let gw = Gateway::start(&one(&primary, "")).await;
    let call = tokio::spawn({
        let url = gw.url("/v1/chat/completions");
        async move { client().post(url).body(hello().to_string()).send().await }
    });
    wait_until(|| primary.seen().len() == 1).await;
    call.abort();
    assert!(
        primary.all_closed(Duration::from_secs(1)).await,
        "non-streaming: upstream still open"
    );
    wait_metric(
        &gw,
        "modelgate_upstream_cancelled_total",
        &[("phase", "request")],
        1.0,
    )
    .await;

    // Mid-stream: the upstream never ends; the client reads some and goes.
    let primary = fake(Script::NeverEnd {
        every: Duration::from_millis(20),
        pad: 0,
    })
    .await;
    let gw = Gateway::start(&one(&primary, "")).await;
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .body(hello_stream().to_string())
        .send()
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    for _ in 0..3 {
        body.next().await.unwrap().unwrap();
    }
    drop(body);
    assert!(
        primary.all_closed(Duration::from_secs(1)).await,
        "streaming: upstream still open"
    );
    wait_metric(
        &gw,
        "modelgate_upstream_cancelled_total",
        &[("phase", "stream")],
        1.0,
    )
    .await;
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "modelgate_stream_ends_total",
            &[("reason", "client_gone")]
        ),
        1.0
    );
    // The partial answer is accounted for (estimated from what was relayed).
    assert!(
        metric(&m, "modelgate_tokens_total", &[("direction", "output")]) >= 1.0,
        "{m}"
    );

    // Before the first token of a stream.
    let primary = fake(Script::Stream {
        first: Duration::from_secs(30),
        every: Duration::ZERO,
        chunks: 1,
        end: End::Done,
    })
    .await;
    let gw = Gateway::start(&one(&primary, "")).await;
    let call = tokio::spawn({
        let url = gw.url("/v1/chat/completions");
        async move {
            client()
                .post(url)
                .body(hello_stream().to_string())
                .send()
                .await
        }
    });
    wait_until(|| primary.seen().len() == 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    call.abort();
    assert!(
        primary.all_closed(Duration::from_secs(1)).await,
        "before first token: upstream still open"
    );
}

async fn wait_until(f: impl Fn() -> bool) {
    for _ in 0..250 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting");
}

async fn wait_metric(gw: &Gateway, name: &str, labels: &[(&str, &str)], want: f64) {
    for _ in 0..100 {
        if metric(&gw.metrics().await, name, labels) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{name}{labels:?} never reached {want}:\n{}",
        gw.metrics().await
    );
}

#[tokio::test]
async fn f14_clients_that_stop_reading_are_dropped_and_their_upstreams_cancelled() {
    // Never-ending streams of 4 KiB lines; clients that read nothing. Scaled down: 20 streams,
    // a 1 s write-stall timeout.
    let primary = fake(Script::NeverEnd {
        every: Duration::from_millis(1),
        pad: 16_384,
    })
    .await;
    let yaml = format!(
        "server: {{write_stall_timeout: 1s}}\n{}",
        one(&primary, "timeouts: {idle: 60s}")
    );
    let gw = Gateway::start(&yaml).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        // A raw socket that sends the request and never reads the answer.
        // A small receive buffer, so the stall shows within a second of streaming.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(gw.running.api_addr).await.unwrap();
        let body = hello_stream().to_string();
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes())
            .await
            .unwrap();
        held.push(s);
    }
    wait_until(|| primary.seen().len() == 20).await;
    // Each stream fills its socket buffers, stalls, and is dropped after the timeout.
    assert!(
        primary.all_closed(Duration::from_secs(20)).await,
        "upstreams of stalled clients still open: {}",
        gw.metrics().await
    );
    wait_metric(&gw, "modelgate_open_streams", &[], 0.0).await;
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "modelgate_stream_ends_total",
            &[("reason", "client_gone")]
        ),
        20.0
    );
    drop(held);
}

#[tokio::test]
async fn c02_reloads_under_load_lose_no_request() {
    let a = fake(Script::Ok { text: "a".into() }).await;
    let b = fake(Script::Ok { text: "b".into() }).await;
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n{}",
        dep("only", &a, "")
    ))
    .await;
    let valid = [
        format!(
            "reload: {{poll_interval: 0}}\ndeployments:\n{}",
            dep("only", &a, "")
        ),
        format!(
            "reload: {{poll_interval: 0}}\ndeployments:\n{}",
            dep("only", &b, "")
        ),
    ];
    let invalid = "reload: {poll_interval: 0}\ndeployments:\n  - {name: only, kind: nonsense}\n";
    let load = async {
        let mut codes = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let batch: Vec<_> =
                futures_util::future::join_all((0..10).map(|_| chat(&gw, hello()))).await;
            codes.extend(batch.into_iter().map(|(s, _, _)| s.as_u16()));
        }
        codes
    };
    let reloads = async {
        let mut n = 0;
        for i in 0..100 {
            let text = if i % 2 == 1 {
                invalid.to_owned()
            } else {
                valid[(i / 2) % 2].clone()
            };
            // Write-then-rename, as the README recommends.
            let tmp = gw.config_path.with_extension("tmp");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &gw.config_path).unwrap();
            let _ = gw.running.state.reload();
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        n
    };
    let (codes, n) = tokio::join!(load, reloads);
    assert_eq!(n, 100);
    assert!(codes.len() >= 100);
    assert!(
        codes.iter().all(|c| *c == 200),
        "{:?}",
        codes.iter().filter(|c| **c != 200).collect::<Vec<_>>()
    );
    let m = gw.metrics().await;
    assert!(metric(&m, "modelgate_config_reloads_total", &[("result", "error")]) >= 50.0);
    assert!(!a.seen().is_empty() && !b.seen().is_empty());
}

#[tokio::test]
async fn c03_a_file_written_in_place_is_never_half_applied() {
    let a = fake(Script::Ok { text: "a".into() }).await;
    let b = fake(Script::Ok { text: "b".into() }).await;
    let texts = [
        format!(
            "reload: {{poll_interval: 50ms}}\ndeployments:\n{}",
            dep("one", &a, "")
        ),
        format!(
            "reload: {{poll_interval: 50ms}}\ndeployments:\n{}{}",
            dep("one", &a, ""),
            dep("two", &b, "price: {input: 1, output: 1}")
        ),
    ];
    let gw = Gateway::start(&texts[0]).await;
    let state = gw.running.state.clone();
    let mut hashes = vec![state.config().hash.clone()];
    std::fs::write(&gw.config_path, &texts[1]).unwrap();
    state.reload();
    hashes.push(state.config().hash.clone());
    assert_ne!(hashes[0], hashes[1]);

    // A writer that truncates and writes in place, in pieces, while the watcher polls; a
    // sampler looks at the configuration in force the whole time.
    let sampler = tokio::spawn({
        let state = state.clone();
        async move {
            let mut seen = std::collections::BTreeSet::new();
            let until = Instant::now() + Duration::from_secs(4);
            while Instant::now() < until {
                seen.insert(state.live.load().config.hash.clone());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            seen
        }
    });
    for round in 0..20 {
        use std::io::Write;
        let text = texts[round % 2].as_bytes();
        let mut f = std::fs::File::create(&gw.config_path).unwrap();
        for piece in text.chunks(text.len() / 3 + 1) {
            f.write_all(piece).unwrap();
            f.flush().unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(f);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let seen = sampler.await.unwrap();
    let known: std::collections::BTreeSet<String> = hashes.iter().cloned().collect();
    assert!(
        seen.is_subset(&known),
        "a configuration neither old nor new was in force: {seen:?}"
    );
    assert_eq!(seen.len(), 2, "the changes were not picked up");
    // Reloading on demand while the file is half written: refused, or a complete file.
    let text = &texts[1];
    for cut in [0, 10, text.len() / 2, text.len() - 3] {
        std::fs::write(&gw.config_path, &text[..cut]).unwrap();
        let before = state.config().hash.clone();
        if let modelgate::server::reload::Reloaded::Changed { hash } = state.reload() {
            panic!("a file cut at {cut} was put in force ({before} -> {hash})");
        }
    }
}

#[tokio::test]
async fn s02_streams_longer_than_the_drain_deadline_end_with_an_error_event() {
    let primary = fake(Script::NeverEnd {
        every: Duration::from_millis(50),
        pad: 0,
    })
    .await;
    let yaml = format!("server: {{drain_timeout: 1s}}\n{}", one(&primary, ""));
    let gw = Gateway::start(&yaml).await;
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .body(hello_stream().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let reading = tokio::spawn(sse_events(r));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    gw.running.shutdown();
    tokio::time::timeout(Duration::from_secs(3), gw.running.done)
        .await
        .expect("not shut down within drain + 2 s")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let events = reading.await.unwrap();
    assert!(!events.contains(&"[DONE]".to_owned()));
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(assert_openai_error(&last)["code"], "server_shutting_down");
    assert!(
        primary.all_closed(Duration::from_secs(1)).await,
        "upstream left open"
    );
}

#[tokio::test]
async fn c04_upstream_connections_are_kept_after_streams_and_bursts() {
    // A stream's upstream connection goes back to the pool when it ends (its body is read to
    // the end after `[DONE]`, not dropped with the chunked terminator unread), and a burst of
    // streams finds the connections of the one before it idle: the second burst opens none.
    const N: usize = 100;
    let up = fake(Script::Stream {
        first: Duration::from_millis(300),
        every: Duration::ZERO,
        chunks: 1,
        end: End::Done,
    })
    .await;
    let gw = Gateway::start(&one(&up, "")).await;
    let mut opened = Vec::new();
    for burst in 0..2 {
        let statuses: Vec<u16> = futures_util::future::join_all((0..N).map(|_| stream(&gw)))
            .await
            .into_iter()
            .map(|(s, _, _)| s)
            .collect();
        assert!(
            statuses.iter().all(|s| *s == 200),
            "burst {burst}: {statuses:?}"
        );
        opened.push(up.connections().len());
        // The last bytes of each body (read after `[DONE]`) return the connections to the pool.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let closed = up
        .connections()
        .iter()
        .filter(|c| c.closed.is_some())
        .count();
    assert_eq!(closed, 0, "upstream connections closed after their streams");
    assert!(
        opened[1] - opened[0] <= 3,
        "the second burst opened {} new connections",
        opened[1] - opened[0]
    );
}
