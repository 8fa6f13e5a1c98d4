//! End-to-end: the edges where a gateway's word could stop being true, each over real loopback
//! against fake upstreams: a key echoed in any encoding on any error path, a deployment that
//! points back at the gateway, an upstream that never ends its event, what the client is told
//! about waiting and about its own mistakes, a reload that narrows a key between retries, and
//! requests counted, logged and taken off the in-flight gauge exactly once however they end.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::process::Process;
use support::*;

/// A key the key-like-token heuristic does not catch (letters and punctuation only): only the
/// exact masking of the deployment's own key, in every encoding, keeps it in.
const PLAIN_KEY: &str = "plainsecret+only/letters=zq";

/// The key as an upstream could quote it: as it is, URL-encoded both ways, form-encoded,
/// JSON-escaped, in base64, and inside the places keys turn up.
fn key_forms() -> Vec<String> {
    let pct = "plainsecret%2Bonly%2Fletters%3Dzq";
    vec![
        format!("?key={PLAIN_KEY}"),
        format!("api_key={PLAIN_KEY}"),
        format!("authorization=Bearer%20{pct}"),
        format!("key={}", pct.to_lowercase()),
        format!("x-goog-api-key: {PLAIN_KEY}"),
        format!("json {}", PLAIN_KEY.replace('/', "\\/")),
        "b64 cGxhaW5zZWNyZXQrb25seS9sZXR0ZXJzPXpx".to_owned(),
    ]
}

/// Fragments any leak of the key would show (its start, in clear and in base64).
const LEAKS: [&str; 3] = ["plainsec", "cGxhaW5zZWNy", "only/letters"];

fn assert_no_leak(whence: &str, text: &str) {
    for l in LEAKS {
        assert!(!text.contains(l), "{whence} leaks '{l}':\n{text}");
    }
}

/// An upstream error message with every form of the key at its start, then the key again
/// straddling the 500-character cut.
fn leaky_message() -> String {
    let head = format!("{} ", key_forms().join(" "));
    let pad = 490usize.saturating_sub(head.chars().count());
    format!("{head}{}{PLAIN_KEY} end", "x".repeat(pad))
}

/// What a fake of `dialect` answers: a whole error, or a 200 stream with an in-band error.
fn leaky(dialect: &str, stream: bool) -> Script {
    let m = leaky_message();
    if !stream {
        let body = match dialect {
            "openai" => {
                json!({"error": {"message": m, "type": "invalid_request_error", "param": PLAIN_KEY, "code": "bad_key"}})
            }
            "anthropic" => {
                json!({"type": "error", "error": {"type": "invalid_request_error", "message": m}})
            }
            _ => json!({"error": {"code": 400, "message": m, "status": "INVALID_ARGUMENT"}}),
        };
        return Script::Status {
            status: 400,
            body,
            retry_after: None,
        };
    }
    let events = match dialect {
        "openai" => vec![
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": null}]}).to_string(),
            json!({"error": {"message": m}}).to_string(),
        ],
        "anthropic" => vec![
            format!(
                "event: message_start\ndata: {}",
                json!({"type": "message_start", "message": {"id": "m", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [], "stop_reason": null, "usage": {"input_tokens": 3, "output_tokens": 1}}})
            ),
            format!(
                "event: error\ndata: {}",
                json!({"type": "error", "error": {"type": "api_error", "message": m}})
            ),
        ],
        _ => vec![json!({"error": {"code": 500, "message": m, "status": "INTERNAL"}}).to_string()],
    };
    Script::Sse {
        events,
        delay: Duration::ZERO,
        done: false,
    }
}

#[tokio::test]
async fn provider_keys_never_leave_on_any_error_path_of_any_dialect() {
    let fakes = [
        (
            "openai",
            "qwen3-8b",
            FakeUpstream::start(leaky("openai", false), Some(PLAIN_KEY)).await,
        ),
        (
            "anthropic",
            "claude-sonnet-4-5",
            FakeUpstream::start(leaky("anthropic", false), Some(PLAIN_KEY)).await,
        ),
        (
            "gemini",
            "gemini-2.5-flash",
            FakeUpstream::start(leaky("gemini", false), Some(PLAIN_KEY)).await,
        ),
    ];
    let no_retry = "retries: {attempts: 0}, breaker: {consecutive_failures: 0}";
    let yaml = format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n  \
         - {{name: oa, kind: openai-compatible, model: qwen3-8b, base_url: '{}', api_key_env: PLAIN, {no_retry}}}\n  \
         - {{name: an, kind: anthropic, model: claude-sonnet-4-5, base_url: 'http://{}/v1', api_key_env: PLAIN, locality: remote, {no_retry}}}\n  \
         - {{name: ge, kind: gemini, model: gemini-2.5-flash, base_url: 'http://{}/v1beta', api_key_env: PLAIN, locality: remote, {no_retry}}}\n",
        fakes[0].2.base_url(),
        fakes[1].2.addr,
        fakes[2].2.addr,
    );
    let mut p = Process::start_with(&yaml, &[("PLAIN", PLAIN_KEY), ("RUST_LOG", "trace")]);
    let c = client();
    for (dialect, model, fake) in &fakes {
        for (path, front) in [
            ("/v1/chat/completions", "openai"),
            ("/v1/messages", "anthropic"),
        ] {
            for stream in [false, true] {
                fake.set(leaky(dialect, stream));
                let body = json!({"model": model, "max_tokens": 16, "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
                let r = c
                    .post(format!("{}{path}", p.base))
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                let headers = format!("{:?}", r.headers());
                let text = r.text().await.unwrap();
                let whence =
                    format!("{dialect} upstream, {front} client, stream {stream} ({status})");
                assert!(
                    text.contains("error"),
                    "{whence}: no error reached the client: {text}"
                );
                assert!(
                    text.contains("[redacted]"),
                    "{whence}: the message was not passed on: {text}"
                );
                assert_no_leak(&whence, &format!("{headers}\n{text}"));
            }
        }
        assert_eq!(
            fake.seen().len(),
            4,
            "{dialect}: the fake was not reached every time"
        );
    }
    let metrics = p.metrics().await;
    assert_no_leak("/metrics", &metrics);
    p.signal("-TERM");
    p.wait(Duration::from_secs(10));
    let log = p.log.lock().unwrap().clone();
    assert!(log.contains("[redacted]"), "the errors were logged:\n{log}");
    assert_no_leak("the trace-level log", &log);
}

#[tokio::test]
async fn a_deployment_pointing_at_the_gateway_costs_one_extra_call_and_sheds_nothing() {
    let gw = Gateway::start(
        "reload: {poll_interval: 0}\nserver: {max_concurrent_requests: 64}\ndeployments:\n  - {name: echo, kind: echo, model: echo}\n",
    )
    .await;
    // The address is known only now: point a deployment at the gateway itself.
    std::fs::write(
        &gw.config_path,
        format!(
            "reload: {{poll_interval: 0}}\nserver: {{max_concurrent_requests: 64}}\ndeployments:\n  - {{name: echo, kind: echo, model: echo}}\n  - {{name: itself, kind: openai-compatible, model: qwen3-8b, base_url: '{}/v1'}}\n",
            gw.base
        ),
    )
    .unwrap();
    assert!(matches!(
        gw.running.state.reload(),
        modelgate::server::reload::Reloaded::Changed { .. }
    ));
    let before = gw.metrics().await;
    let total = |m: &str| metric(m, "modelgate_requests_total", &[]);
    let (status, _, v) = chat(
        &gw,
        json!({"model": "qwen3-8b", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 502, "{v}");
    let e = assert_openai_error(&v);
    assert!(
        e["message"].as_str().unwrap().contains("508"),
        "the attempt's 508 is named: {v}"
    );
    let after = gw.metrics().await;
    assert_eq!(
        total(&after) - total(&before),
        2.0,
        "one request and its one looped call"
    );
    // The looped call itself was answered 508 loop_detected, in OpenAI's format.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-modelgate-hops", modelgate::hop::instance_id())
        .header("content-type", "application/json")
        .body(json!({"model": "echo", "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 508);
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(assert_openai_error(&v)["code"], "loop_detected");
    // Looping requests while unrelated traffic runs: nothing unrelated is shed.
    let mut jobs = Vec::new();
    for i in 0..24 {
        let url = gw.url("/v1/chat/completions");
        let model = if i % 3 == 0 { "qwen3-8b" } else { "echo" };
        jobs.push(tokio::spawn(async move {
            let r = client()
                .post(url)
                .header("content-type", "application/json")
                .body(
                    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
                        .to_string(),
                )
                .send()
                .await
                .unwrap();
            (model, r.status().as_u16())
        }));
    }
    for j in jobs {
        let (model, status) = j.await.unwrap();
        match model {
            "echo" => assert_eq!(status, 200),
            // 503 once the looping deployment is ejected for failing.
            _ => assert!(matches!(status, 502 | 503), "{status}"),
        }
    }
    assert_eq!(
        metric(&gw.metrics().await, "modelgate_shed_total", &[]),
        0.0
    );
}

#[test]
fn check_refuses_a_deployment_at_the_gateways_own_address() {
    let dir = temp_dir();
    let path = dir.join("modelgate.yaml");
    std::fs::write(
        &path,
        "listen: '127.0.0.1:18400'\ndeployments:\n  - {name: itself, kind: openai-compatible, model: qwen3-8b, base_url: 'http://localhost:18400/v1'}\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_modelgate"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("deployments[0].base_url"), "{err}");
    assert!(err.contains("own address"), "{err}");
}

/// Peak resident memory of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// A server that answers a chat stream with one event that never ends (`data:` lines of
/// 1,000 bytes, no blank line, up to `cap` bytes) and `/models` with a valid list just over
/// 4 MiB, and counts the stream bytes it managed to send.
async fn endless_upstream(
    cap: usize,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let s2 = sent.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let sent = s2.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let Ok(n) = sock.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                }
                if head.starts_with(b"GET") {
                    // A valid list just over the 4 MiB bound, sent at once: only the bound
                    // keeps it out.
                    let mut list = String::from("{\"data\":[{\"id\":\"m\"}");
                    while list.len() < (4 << 20) + 4096 {
                        list.push_str(",{\"id\":\"m\"}");
                    }
                    list.push_str("]}");
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{list}"
                    );
                    let _ = sock.write_all(reply.as_bytes()).await;
                    return;
                }
                let line = format!("data: {}\n", "x".repeat(994));
                let reply = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                if sock.write_all(reply.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = line.repeat(64);
                let mut total = 0;
                while total < cap {
                    if sock.write_all(chunk.as_bytes()).await.is_err() {
                        break;
                    }
                    total += chunk.len();
                    sent.fetch_add(chunk.len(), std::sync::atomic::Ordering::Relaxed);
                }
            });
        }
    });
    (addr, sent)
}

#[tokio::test]
async fn memory_stays_bounded_by_configuration_for_every_upstream_byte() {
    const CAP: usize = 300 << 20;
    let (addr, sent) = endless_upstream(CAP).await;
    let yaml = format!(
        "reload: {{poll_interval: 0, discovery_interval: 1s}}\nlimits: {{max_sse_line_bytes: 1048576}}\ndeployments:\n  \
         - {{name: endless, kind: openai-compatible, model: qwen3-8b, base_url: 'http://{addr}/v1', retries: {{attempts: 0}}}}\n  \
         - {{name: lister, kind: openai-compatible, provider: vllm, base_url: 'http://{addr}/v1', discover: true}}\n"
    );
    let mut p = Process::start(&yaml);
    let pid = p.child.id();
    // Let the discovery poll read (and refuse) an endless list a few times.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let idle = peak_rss_kib(pid);
    for _ in 0..3 {
        let r = client()
            .post(format!("{}/v1/chat/completions", p.base))
            .header("content-type", "application/json")
            .body(json!({"model": "qwen3-8b", "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string())
            .send()
            .await
            .unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_server_error(), "{status}: {text}");
        assert!(text.contains("larger than"), "{text}");
    }
    let peak = peak_rss_kib(pid);
    let models = client()
        .get(format!("{}/v1/models", p.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !models.contains("\"m\""),
        "a list over the bound was not taken: {models}"
    );
    p.signal("-TERM");
    p.wait(Duration::from_secs(10));
    // The bound (1 MiB per event) plus a few MiB, never what the upstream sent.
    assert!(
        peak < idle + 12 * 1024,
        "peak RSS {peak} KiB after {idle} KiB idle; the upstream sent {} MiB",
        sent.load(std::sync::atomic::Ordering::Relaxed) >> 20
    );
    assert!(
        sent.load(std::sync::atomic::Ordering::Relaxed) < CAP,
        "the gateway read all the upstream sent"
    );
}

/// A gateway with one deployment on a fake that answers `script`, neither retried nor ejected.
async fn alone(script: Script) -> (Gateway, FakeUpstream) {
    let fake = FakeUpstream::start(script, Some(CANARY_KEY)).await;
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n{}",
        deployment("only", "qwen3-8b", &fake).replace(
            "}\n",
            ", retries: {attempts: 0}, breaker: {consecutive_failures: 0}}\n"
        ),
    ))
    .await;
    (gw, fake)
}

#[tokio::test]
async fn what_the_client_is_told_is_validated() {
    let body = json!({"model": "qwen3-8b", "messages": [{"role": "user", "content": "hi"}]});
    let (gw, _fake) = alone(Script::status(429, Some("999999"))).await;
    let (status, headers, _) = chat(&gw, body.clone()).await;
    assert_eq!(status, 429);
    assert_eq!(
        headers["retry-after"], "300",
        "clamped to the longest cool-down"
    );
    for bad in ["-1", "soon", "1e999", "NaN", "99999999999999999999999"] {
        let (gw, _fake) = alone(Script::status(429, Some(bad))).await;
        let (status, headers, _) = chat(&gw, body.clone()).await;
        assert_eq!(status, 429);
        if let Some(v) = headers.get("retry-after") {
            let secs: u64 = v
                .to_str()
                .unwrap()
                .parse()
                .unwrap_or_else(|_| panic!("{bad} became {v:?}"));
            assert!((1..=300).contains(&secs), "{bad} became {secs}");
        }
    }
    // The upstream's own 4xx about the request keeps its code and param.
    let (gw, _fake) = alone(Script::Status {
        status: 400,
        body: json!({"error": {"message": "This model's maximum context length is 8192 tokens.", "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}}),
        retry_after: None,
    })
    .await;
    let (status, _, v) = chat(&gw, body).await;
    assert_eq!(status, 400);
    let e = assert_openai_error(&v);
    assert_eq!(e["code"], "context_length_exceeded", "{v}");
    assert_eq!(e["param"], "messages", "{v}");
}

/// Waits until `f` holds (at most 5 s).
async fn until(f: impl Fn() -> bool) {
    for _ in 0..500 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out");
}

#[tokio::test]
async fn a_reload_that_narrows_a_key_stops_its_pending_retries_and_fallbacks() {
    const KEY: &str = "mg-edges-key-0123456789";
    let policies = "policies:\n  - name: wide\n    rules:\n      - {name: a-and-b, require: {deployments: [a, b]}, prefer: [cheapest]}\n  - name: narrow\n    rules:\n      - {name: only-c, require: {deployments: [c]}}\n";
    // `retry`: a answers 500 and asks for 5 s, and is the only candidate: the retry waits.
    // `fallback`: a hangs past its first-byte timeout, then b would be next.
    for (case, narrowing) in [
        ("retry", "policy"),
        ("retry", "revoked"),
        ("fallback", "policy"),
        ("fallback", "revoked"),
    ] {
        let a_script = match case {
            "retry" => Script::status(500, Some("5")),
            _ => Script::Hang,
        };
        let a = FakeUpstream::start(a_script, Some(CANARY_KEY)).await;
        let b = FakeUpstream::start(Script::Ok { text: "b".into() }, Some(CANARY_KEY)).await;
        let cfake = FakeUpstream::start(Script::Ok { text: "c".into() }, Some(CANARY_KEY)).await;
        let dir = temp_dir();
        std::fs::write(dir.join("p.yaml"), policies).unwrap();
        let keys = |policy: &str| match policy {
            "revoked" => format!(
                "keys:\n  - {{id: other, tenant: t, sha256: {}}}\n",
                modelgate::config::keys::hash_hex("mg-some-other-key-99")
            ),
            p => format!(
                "keys:\n  - {{id: k, tenant: t, sha256: {}, policy: {p}}}\n",
                modelgate::config::keys::hash_hex(KEY)
            ),
        };
        let yaml = |keys: String| {
            format!(
                "reload: {{poll_interval: 0}}\npolicies: {{paths: ['{}']}}\n{keys}deployments:\n{}{}{}",
                dir.join("p.yaml").display(),
                deployment("a", "qwen3-8b", &a).replace(
                    "}\n",
                    ", price: {input: 0.1, output: 0.1}, retries: {attempts: 3, on: [5xx]}, timeouts: {first_byte: 5s}, breaker: {consecutive_failures: 0}}\n"
                ),
                deployment("b", "qwen3-8b", &b).replace("}\n", ", price: {input: 9, output: 9}}\n"),
                deployment("c", "qwen3-8b", &cfake),
            )
        };
        let gw = Gateway::start(&yaml(keys("wide"))).await;
        let url = gw.url("/v1/chat/completions");
        let model = if case == "retry" { "a" } else { "qwen3-8b" };
        let call = tokio::spawn(async move {
            client()
                .post(url)
                .bearer_auth(KEY)
                .header("content-type", "application/json")
                .body(
                    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
                        .to_string(),
                )
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
        until(|| !a.seen().is_empty()).await;
        let now = if narrowing == "policy" {
            "narrow"
        } else {
            "revoked"
        };
        std::fs::write(&gw.config_path, yaml(keys(now))).unwrap();
        let reloaded = gw.running.state.reload();
        assert!(
            matches!(
                reloaded,
                modelgate::server::reload::Reloaded::Changed { .. }
            ),
            "{reloaded:?}"
        );
        let status = call.await.unwrap();
        let whence = format!("{case} after the key's {narrowing} changed");
        assert_eq!(a.seen().len(), 1, "{whence}: a was called again");
        assert!(b.seen().is_empty(), "{whence}: b was called");
        assert!(
            cfake.seen().is_empty(),
            "{whence}: c was not among the decision's"
        );
        assert_ne!(status, 200, "{whence}");
        let m = gw.metrics().await;
        assert!(
            metric(
                &m,
                "modelgate_upstream_attempts_total",
                &[("result", "disallowed_by_reload")]
            ) >= 1.0,
            "{whence}: the skip is counted"
        );
    }
}

#[tokio::test]
async fn every_request_is_counted_logged_and_released_once_however_it_ends() {
    let hang = FakeUpstream::start(Script::Hang, Some(CANARY_KEY)).await;
    let yaml = format!(
        "reload: {{poll_interval: 0}}\nkeys:\n  - {{id: k, tenant: t, sha256: {}}}\nlimits: {{max_body_bytes: 1048576}}\ndeployments:\n  - {{name: echo, kind: echo, model: echo}}\n{}",
        modelgate::config::keys::hash_hex("mg-edges-key-0123456789"),
        deployment("hang", "qwen3-8b", &hang),
    );
    let mut p = Process::start(&yaml);
    let c = client();
    let key = "mg-edges-key-0123456789";
    let chat_body =
        |m: &str| json!({"model": m, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let mut expected = 0;
    // 401 (no key), 413 (declared length over the limit), 404, 405, 200.
    let r = c
        .post(format!("{}/v1/chat/completions", p.base))
        .body(chat_body("echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    expected += 1;
    // A 9 MB body announced, none of it sent: refused on its declared length.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = p.base.trim_start_matches("http://").to_owned();
        let mut sock = tokio::net::TcpStream::connect(addr.as_str()).await.unwrap();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            9 << 20
        );
        sock.write_all(head.as_bytes()).await.unwrap();
        let mut buf = [0u8; 12];
        sock.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 413");
        expected += 1;
    }
    let r = c
        .get(format!("{}/v1/nowhere", p.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    expected += 1;
    let r = c
        .get(format!("{}/v1/chat/completions", p.base))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    expected += 1;
    let r = c
        .post(format!("{}/v1/chat/completions", p.base))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(chat_body("echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    expected += 1;
    // Clients that leave while the upstream hangs.
    #[expect(clippy::disallowed_methods, reason = "a client that gives up quickly")]
    let quick = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    for _ in 0..10 {
        let r = quick
            .post(format!("{}/v1/chat/completions", p.base))
            .bearer_auth(key)
            .header("content-type", "application/json")
            .body(chat_body("qwen3-8b"))
            .send()
            .await;
        assert!(r.is_err(), "the client gave up");
        expected += 1;
    }
    // The gateway notices the departures as it reads the closed connections: wait for it.
    let mut m = String::new();
    for _ in 0..100 {
        m = p.metrics().await;
        if metric(&m, "modelgate_in_flight_requests", &[]) == 0.0
            && metric(&m, "modelgate_requests_total", &[]) >= f64::from(expected)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metric(&m, "modelgate_in_flight_requests", &[]), 0.0, "{m}");
    assert_eq!(
        metric(&m, "modelgate_requests_total", &[]),
        f64::from(expected)
    );
    for (class, n) in [("2xx", 1.0), ("4xx", 4.0), ("cancelled", 10.0)] {
        assert_eq!(
            metric(&m, "modelgate_requests_total", &[("status_class", class)]),
            n,
            "{class}"
        );
    }
    p.signal("-TERM");
    p.wait(Duration::from_secs(10));
    let log = p.log.lock().unwrap().clone();
    let lines = log
        .lines()
        .filter(|l| {
            [
                "request answered",
                "request served",
                "request failed",
                "request cancelled",
            ]
            .iter()
            .any(|m| l.contains(m))
        })
        .count();
    assert_eq!(lines, expected as usize, "one line per request:\n{log}");
    assert!(
        log.contains("status=413") && log.contains("status=404"),
        "{log}"
    );
}

#[tokio::test]
async fn series_exist_at_zero_before_the_first_event() {
    let fake = FakeUpstream::start(Script::Ok { text: "x".into() }, Some(CANARY_KEY)).await;
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}\npolicies: {{active: confidential-local}}\ndeployments:\n{}",
        deployment("local", "qwen3-8b", &fake)
    ))
    .await;
    let m = gw.metrics().await;
    let has = |name: &str, labels: &[(&str, &str)]| {
        m.lines().any(|l| {
            l.starts_with(name)
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
                && l.ends_with(" 0")
        })
    };
    for (name, labels) in [
        ("modelgate_config_reloads_total", vec![("result", "error")]),
        ("modelgate_retries_total", vec![("deployment", "local")]),
        (
            "modelgate_fallbacks_total",
            vec![("policy", "confidential-local")],
        ),
        (
            "modelgate_policy_decisions_total",
            vec![("rule", "confidential-stays-local"), ("result", "refused")],
        ),
        (
            "modelgate_policy_refusals_total",
            vec![("rule", "confidential-stays-local"), ("reason", "locality")],
        ),
        (
            "modelgate_limit_rejections_total",
            vec![("scope_kind", "tenant"), ("limit", "usd_per_day")],
        ),
        (
            "modelgate_stream_ends_total",
            vec![("deployment", "local"), ("reason", "upstream_cut")],
        ),
        (
            "modelgate_upstream_attempts_total",
            vec![("deployment", "local"), ("result", "server_error")],
        ),
        (
            "gen_ai_server_time_to_first_token_seconds_count",
            vec![("deployment", "local")],
        ),
        ("modelgate_tokens_total", vec![("deployment", "local")]),
        ("modelgate_cost_usd_total", vec![("deployment", "local")]),
    ] {
        assert!(has(name, &labels), "{name} {labels:?} is not at 0:\n{m}");
    }
}

#[tokio::test]
async fn embeddings_are_admitted_before_they_are_sent() {
    let fake = FakeUpstream::start(Script::Ok { text: "x".into() }, Some(CANARY_KEY)).await;
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}\nkeys:\n  - {{id: k, tenant: t, sha256: {}, limits: {{requests_per_minute: 1}}}}\ndeployments:\n  - {{name: emb, kind: openai-compatible, model: text-embedding-3-small, base_url: '{}', api_key_env: CANARY}}\n",
        modelgate::config::keys::hash_hex("mg-edges-key-0123456789"),
        fake.base_url()
    ))
    .await;
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = client()
            .post(gw.url("/v1/embeddings"))
            .bearer_auth("mg-edges-key-0123456789")
            .header("content-type", "application/json")
            .body(json!({"model": "text-embedding-3-small", "input": "hello"}).to_string())
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    // Minute windows are calendar minutes: a run across a minute's end may admit two.
    let admitted = statuses.iter().filter(|s| **s == 200).count();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(
        fake.seen().len(),
        admitted,
        "a refused caller cost an upstream call: {statuses:?}"
    );
}

#[tokio::test]
async fn a_model_answers_to_the_name_its_backend_uses() {
    let fake = FakeUpstream::start(Script::Ok { text: "x".into() }, Some(CANARY_KEY)).await;
    // `deployment` sets upstream_model: up-<model>.
    let gw = Gateway::start(&format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n{}",
        deployment("local", "qwen3-8b", &fake)
    ))
    .await;
    let (status, headers, v) = chat(
        &gw,
        json!({"model": "up-qwen3-8b", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(headers["x-modelgate-deployment"], "local");
    assert_eq!(fake.seen()[0].body["model"], "up-qwen3-8b");
}

#[tokio::test]
async fn request_labels_only_narrow_and_undeclared_data_is_unknown_over_http() {
    let local = FakeUpstream::start(Script::Ok { text: "l".into() }, Some(CANARY_KEY)).await;
    let remote = FakeUpstream::start(Script::Ok { text: "r".into() }, Some(CANARY_KEY)).await;
    let dir = temp_dir();
    std::fs::write(
        dir.join("p.yaml"),
        "policies:\n  - name: research\n    rules:\n      - {name: research-only, match: {labels: {purpose: research}}}\n  - name: private\n    rules:\n      - {name: no-retention, require: {data: {retains_prompts: false}}}\n",
    )
    .unwrap();
    let yaml = |active: &str| {
        format!(
            "reload: {{poll_interval: 0}}\npolicies: {{active: {active}, paths: ['{}']}}\ndeployments:\n{}{}",
            dir.join("p.yaml").display(),
            deployment("local", "qwen3-8b", &local),
            deployment("remote", "qwen3-8b", &remote).replace("}\n", ", locality: remote}\n"),
        )
    };
    let gw = Gateway::start(&yaml("research")).await;
    let body = json!({"model": "auto", "messages": [{"role": "user", "content": "hi"}]});
    for labels in [None, Some("purpose=research")] {
        let mut rb = client()
            .post(gw.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(l) = labels {
            rb = rb.header("x-modelgate-labels", l);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), 403, "labels {labels:?}");
    }
    assert!(local.seen().is_empty() && remote.seen().is_empty());
    // A remote deployment that declares nothing about prompts is not taken for one that
    // keeps none; the local one, which runs where the configuration says, is.
    let gw = Gateway::start(&yaml("private")).await;
    for _ in 0..3 {
        let (status, headers, v) = chat(&gw, body.clone()).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(headers["x-modelgate-deployment"], "local");
    }
    assert!(remote.seen().is_empty());
    let (status, _, v) = chat(
        &gw,
        json!({"model": "remote", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 403, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not declare"),
        "{v}"
    );
}
