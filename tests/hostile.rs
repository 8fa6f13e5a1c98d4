//! Hostile input, row by row of `reliability.md` §3.4, over real loopback HTTP (raw TCP where
//! the case is below HTTP). Each test runs a canary beside the attack (valid requests that
//! must all succeed) and checks what the fake upstreams saw.
//!
//! Rows tested elsewhere: 13 (wrong method, unknown path) in `requests.rs`; 18 (a key revoked
//! by a reload) in `limits.rs`; 20, 21, 24 (bad JSON, deep nesting, wrong types) in
//! `requests.rs`; 30 (everything local down) is F12 and 31 (garbage upstream JSON) F8 in
//! `faults.rs`; 33 (never-ending upstream) F7 and F9, 36 (clients that never read) F14 and 37
//! (disconnects) F13, all in `faults.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Valid requests every 50 ms while an attack runs; all must succeed.
struct Canary {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<u16>>,
}

impl Canary {
    fn start(gw: &Gateway, key: Option<&str>) -> Canary {
        let stop = Arc::new(AtomicBool::new(false));
        let url = gw.url("/v1/chat/completions");
        let key = key.map(str::to_owned);
        let s = stop.clone();
        let task = tokio::spawn(async move {
            let c = client();
            let mut statuses = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let mut rb = c.post(&url).body(
                    json!({"model": "qwen3-8b", "messages": [{"role": "user", "content": "canary"}]})
                        .to_string(),
                );
                if let Some(k) = &key {
                    rb = rb.bearer_auth(k);
                }
                let status = rb.send().await.map_or(0, |r| r.status().as_u16());
                statuses.push(status);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            statuses
        });
        Canary { stop, task }
    }

    async fn check(self) {
        self.stop.store(true, Ordering::Relaxed);
        let statuses = self.task.await.unwrap();
        assert!(!statuses.is_empty());
        assert!(
            statuses.iter().all(|s| *s == 200),
            "the canary failed beside the attack: {statuses:?}"
        );
    }
}

/// Writes `bytes` on a fresh connection and reads until the server closes it or 3 s pass:
/// the status, the response text, and whether the server closed the connection.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> (Option<u16>, String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut buf = Vec::new();
    let mut closed = false;
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut chunk = [0u8; 8192];
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(300), s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) if !buf.is_empty() => break,
            Err(_) => {}
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok());
    (status, text, closed)
}

fn config(fake: &FakeUpstream, extra: &str) -> String {
    format!(
        "reload: {{poll_interval: 0}}\n{extra}deployments:\n{}",
        deployment("local", "qwen3-8b", fake)
    )
}

const BODY: &str = r#"{"model":"qwen3-8b","messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test]
async fn request_smuggling_and_malformed_framing_are_refused() {
    let fake = FakeUpstream::start(Script::Ok { text: "ok".into() }, Some(CANARY_KEY)).await;
    let gw = Gateway::start(&config(&fake, "")).await;
    let addr = gw.running.api_addr;
    let canary = Canary::start(&gw, None);
    let head =
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n";
    let cases: Vec<(&str, String, &[u16])> = vec![
        (
            "1 Content-Length and Transfer-Encoding",
            format!(
                "{head}content-length: {}\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
                BODY.len()
            ),
            &[400],
        ),
        (
            "2 two Content-Lengths",
            format!(
                "{head}content-length: {}\r\ncontent-length: 5\r\n\r\n{BODY}",
                BODY.len()
            ),
            &[400],
        ),
        (
            "3 Content-Length +10",
            format!("{head}content-length: +10\r\n\r\n{BODY}"),
            &[400],
        ),
        (
            "3 Content-Length 0x10",
            format!("{head}content-length: 0x10\r\n\r\n{BODY}"),
            &[400],
        ),
        (
            "3 Content-Length 10,10",
            format!("{head}content-length: 10,10\r\n\r\n{BODY}"),
            &[400],
        ),
        (
            "4 Transfer-Encoding xchunked",
            format!("{head}transfer-encoding: xchunked\r\n\r\n{BODY}"),
            &[400, 501],
        ),
        (
            "4 Transfer-Encoding chunked, identity",
            format!("{head}transfer-encoding: chunked, identity\r\n\r\n0\r\n\r\n"),
            &[400, 501],
        ),
        (
            "4 Transfer-Encoding on HTTP/1.0",
            "POST /v1/chat/completions HTTP/1.0\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_owned(),
            &[400, 501],
        ),
        (
            "5 chunk size overflow",
            format!("{head}transfer-encoding: chunked\r\n\r\nffffffffffffffff1\r\nx\r\n0\r\n\r\n"),
            &[400],
        ),
        (
            "6 obs-fold",
            format!(
                "{head}x-folded: a\r\n b\r\ncontent-length: {}\r\n\r\n{BODY}",
                BODY.len()
            ),
            &[400],
        ),
        (
            "6 NUL in a header value",
            format!(
                "{head}x-bad: a\0b\r\ncontent-length: {}\r\n\r\n{BODY}",
                BODY.len()
            ),
            &[400],
        ),
        (
            "6 CR in a header value",
            format!(
                "{head}x-bad: a\rb\r\ncontent-length: {}\r\n\r\n{BODY}",
                BODY.len()
            ),
            &[400],
        ),
        (
            "7 a 70 KiB header",
            format!(
                "{head}x-big: {}\r\ncontent-length: {}\r\n\r\n{BODY}",
                "a".repeat(70 << 10),
                BODY.len()
            ),
            &[431],
        ),
        (
            "7 10,000 headers",
            format!(
                "{head}{}content-length: {}\r\n\r\n{BODY}",
                (0..10_000)
                    .map(|i| format!("x-h{i}: v\r\n"))
                    .collect::<String>(),
                BODY.len()
            ),
            &[431],
        ),
    ];
    for (what, bytes, want) in cases {
        let (status, text, closed) = raw(addr, bytes.as_bytes()).await;
        assert!(
            status.is_some_and(|s| want.contains(&s)),
            "{what}: wanted {want:?}, got {status:?}\n{}",
            text.lines().next().unwrap_or("")
        );
        assert!(closed, "{what}: the connection stayed open");
    }
    canary.check().await;
    // Only the canary's requests reached the upstream.
    assert!(
        fake.seen()
            .iter()
            .all(|s| s.body["messages"][0]["content"] == "canary")
    );
}

/// One answer off a kept-alive connection: its head, and as many bytes of body as it declares.
async fn answer(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(
            n > 0,
            "closed before an answer: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .expect("a content-length");
            if got.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

/// hyper arms its header-read timeout while a kept-alive connection waits for its next request
/// too: alone, it closed every connection idle for that long, and a client reusing one just
/// then lost its request. An idle connection is kept for `server.idle_timeout`; a head begun
/// on it still has only the header-read timeout.
#[tokio::test]
async fn a_kept_alive_connection_waits_idle_past_the_header_read_timeout() {
    let fake = FakeUpstream::start(Script::Ok { text: "ok".into() }, Some(CANARY_KEY)).await;
    let gw = Gateway::start(&config(
        &fake,
        "server: {header_read_timeout: 1s, idle_timeout: 4s}\n",
    ))
    .await;
    let addr = gw.running.api_addr;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut s = TcpStream::connect(addr).await.unwrap();
    // Idle past the header-read timeout (and the sweep's tick), within the idle one.
    for pause in [0, 1_800, 2_600] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        s.write_all(request.as_bytes()).await.unwrap();
        let text = answer(&mut s).await;
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "after {pause} ms idle: {text}"
        );
    }
    // Past the idle timeout, the gateway closes it.
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    let idle = started.elapsed();
    assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
    assert!(
        idle >= Duration::from_millis(3_500) && idle < Duration::from_secs(7),
        "closed after {idle:?} idle"
    );

    // A head begun after an idle wait has the header-read timeout from its first bytes.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    assert!(answer(&mut s).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(2_500),
        "an unfinished head held its connection {took:?}"
    );
    // No request was made of the unfinished head.
    assert_eq!(fake.seen().len(), 4);
}

#[tokio::test]
async fn slow_headers_and_slow_bodies_are_cut_off() {
    let fake = FakeUpstream::start(Script::Ok { text: "ok".into() }, Some(CANARY_KEY)).await;
    let gw = Gateway::start(&config(
        &fake,
        "server: {header_read_timeout: 1s}\nlimits: {body_read_timeout: 1s}\n",
    ))
    .await;
    let addr = gw.running.api_addr;
    let canary = Canary::start(&gw, None);

    // 8: headers a byte at a time, slower than the header-read timeout allows in all.
    let slowloris = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        for b in b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n".iter() {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        (
            started.elapsed(),
            String::from_utf8_lossy(&rest).into_owned(),
        )
    });
    // 9: a body trickled a byte every 200 ms.
    let rudy = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            BODY.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let (mut r, mut w) = s.into_split();
        let writer = tokio::spawn(async move {
            for b in BODY.as_bytes() {
                if w.write_all(&[*b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), r.read_to_end(&mut out)).await;
        writer.abort();
        (
            started.elapsed(),
            String::from_utf8_lossy(&out).into_owned(),
        )
    });
    let (took, _) = slowloris.await.unwrap();
    assert!(
        took < Duration::from_secs(3),
        "slowloris held its connection {took:?}"
    );
    let (took, text) = rudy.await.unwrap();
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    canary.check().await;
}

#[tokio::test]
async fn costly_bodies_are_refused_before_they_are_read_or_inflated() {
    let fake = FakeUpstream::start(Script::Ok { text: "ok".into() }, Some(CANARY_KEY)).await;
    let gw = Gateway::start(&config(&fake, "")).await;
    let addr = gw.running.api_addr;
    let canary = Canary::start(&gw, None);
    let head =
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n";

    // 10: a declared 10 GB body is refused at once, without reading it.
    let started = Instant::now();
    let (status, _, _) = raw(
        addr,
        format!("{head}content-length: 10000000000\r\n\r\n{{").as_bytes(),
    )
    .await;
    assert_eq!(status, Some(413));
    assert!(started.elapsed() < Duration::from_secs(1));
    // A chunked body past the 8 MiB cap: 413 once the cap is passed.
    let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, "a".repeat(1 << 20));
    let mut body = format!("{head}transfer-encoding: chunked\r\n\r\n");
    for _ in 0..9 {
        body.push_str(&chunk);
    }
    let (status, _, _) = raw(addr, body.as_bytes()).await;
    assert_eq!(status, Some(413));

    let send = |ct: &'static str, extra: Option<(&'static str, &'static str)>, body: Vec<u8>| {
        let url = gw.url("/v1/chat/completions");
        async move {
            let mut rb = client().post(url).header("content-type", ct).body(body);
            if let Some((k, v)) = extra {
                rb = rb.header(k, v);
            }
            let r = rb.send().await.unwrap();
            let status = r.status().as_u16();
            let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
            (status, v)
        }
    };
    // 11: a gzip body (a decompression bomb, maybe) is not inflated.
    let (status, v) = send(
        "application/json",
        Some(("content-encoding", "gzip")),
        vec![0x1f, 0x8b, 8, 0],
    )
    .await;
    assert_eq!(status, 415);
    assert_eq!(
        assert_openai_error(&v)["code"],
        "unsupported_content_encoding"
    );
    // 12: not JSON, and multipart with a 10,000-character boundary: 415 in constant time.
    let (status, _) = send("text/plain", None, BODY.as_bytes().to_vec()).await;
    assert_eq!(status, 415);
    let boundary: &'static str =
        Box::leak(format!("multipart/form-data; boundary={}", "b".repeat(10_000)).into_boxed_str());
    let started = Instant::now();
    let (status, _) = send(boundary, None, b"--x".to_vec()).await;
    assert_eq!(status, 415);
    assert!(started.elapsed() < Duration::from_millis(500));
    // 23: a lone surrogate.
    let (status, v) = send(
        "application/json",
        None,
        br#"{"model":"qwen3-8b","messages":[{"role":"user","content":"\ud800"}]}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    // 27: a million messages, and one 50 MB message: refused quickly, whole or by count.
    let many = format!(
        r#"{{"model":"qwen3-8b","messages":[{}]}}"#,
        vec![r#"{"role":"user","content":"x"}"#; 1_000_000].join(",")
    );
    let started = Instant::now();
    let (status, _) = send("application/json", None, many.into_bytes()).await;
    assert!(status == 413 || status == 400, "{status}");
    let huge = format!(
        r#"{{"model":"qwen3-8b","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(50 << 20)
    );
    let (status, _) = send("application/json", None, huge.into_bytes()).await;
    assert_eq!(status, 413);
    assert!(started.elapsed() < Duration::from_secs(10));
    // 22: numbers out of range, NaN as a string, too many choices.
    let (status, v) = send(
        "application/json",
        None,
        br#"{"model":"qwen3-8b","max_tokens":18446744073709551616,"messages":[{"role":"user","content":"hi"}]}"#.to_vec(),
    )
    .await;
    assert_eq!(
        (status, &v["error"]["param"]),
        (400, &json!("max_tokens")),
        "{v}"
    );
    for (field, value) in [
        ("temperature", json!("NaN")),
        ("temperature", json!(7)),
        ("n", json!(1000)),
    ] {
        let mut b = json!({"model": "qwen3-8b", "messages": [{"role": "user", "content": "hi"}]});
        b[field] = value;
        let (status, v) = send("application/json", None, b.to_string().into_bytes()).await;
        assert_eq!(status, 400, "{field}: {v}");
        assert_eq!(v["error"]["param"], field, "{v}");
    }
    let (status, _) = send(
        "application/json",
        None,
        br#"{"model":"qwen3-8b","max_tokens":1e400,"messages":[{"role":"user","content":"hi"}]}"#
            .to_vec(),
    )
    .await;
    assert_eq!(status, 400);
    canary.check().await;
    assert!(
        fake.seen()
            .iter()
            .all(|s| s.body["messages"][0]["content"] == "canary")
    );
}

#[tokio::test]
async fn nothing_in_a_request_chooses_where_it_goes() {
    let fake = FakeUpstream::start(Script::Ok { text: "ok".into() }, Some(CANARY_KEY)).await;
    // A listener standing for an internal service an attacker would like to reach.
    let trap = FakeUpstream::start(
        Script::Ok {
            text: "trap".into(),
        },
        None,
    )
    .await;
    let gw = Gateway::start(&config(&fake, "")).await;
    let addr = gw.running.api_addr;
    let canary = Canary::start(&gw, None);
    let len = BODY.len();
    // 14: an absolute-form target naming the trap, and a Host that is not a host: routed on
    // the path, to the configured deployment, never to the named host.
    let t = trap.addr;
    for req in [
        format!(
            "POST http://{t}/v1/chat/completions HTTP/1.1\r\nhost: {t}\r\ncontent-length: {len}\r\n\r\n{BODY}"
        ),
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: a/b?#\r\ncontent-length: {len}\r\n\r\n{BODY}"
        ),
    ] {
        let (status, text, _) = raw(addr, req.as_bytes()).await;
        assert!(matches!(status, Some(200 | 400)), "{text}");
    }
    // 25, 26: fields that would choose an upstream, a key, retries or timeouts.
    for (field, value) in [
        ("api_base", json!(format!("http://{t}"))),
        ("base_url", json!(format!("http://{t}/v1"))),
        ("api_key", json!("sk-attacker")),
        ("custom_llm_provider", json!("openai")),
        ("fallbacks", json!(["gpt-4o"])),
        ("num_retries", json!(100)),
        ("timeout", json!(999_999)),
        ("mock_testing_fallbacks", json!(true)),
        ("extra_headers", json!({"host": t.to_string()})),
    ] {
        let mut b = json!({"model": "qwen3-8b", "messages": [{"role": "user", "content": "hi"}]});
        b[field] = value;
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .body(b.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{field}");
        let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(v["error"]["code"], "unsupported_parameter", "{field}");
    }
    // Headers a client sends are not forwarded: the upstream gets the gateway's own.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-forwarded-host", t.to_string())
        .header("x-api-key", "sk-attacker")
        .header("x-custom", "smuggled")
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The canary's requests go to the same fake: find this one by its content.
    let last = fake
        .seen()
        .into_iter()
        .rev()
        .find(|s| s.body["messages"][0]["content"] != "canary")
        .unwrap();
    assert!(
        last.headers.get("x-custom").is_none() && last.headers.get("x-forwarded-host").is_none()
    );
    assert_eq!(
        last.headers["authorization"],
        format!("Bearer {CANARY_KEY}")
    );
    // 28: a huge tool schema is forwarded as it came, never resolved.
    let schema = json!({"type": "object", "properties": (0..2000).map(|i| (format!("p{i}"), json!({"$ref": "#"}))).collect::<serde_json::Map<_, _>>()});
    let b = json!({"model": "qwen3-8b", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": schema}}]});
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .body(b.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sent = fake
        .seen()
        .into_iter()
        .rev()
        .find(|s| s.body.get("tools").is_some())
        .unwrap();
    assert_eq!(sent.body["tools"][0]["function"]["parameters"], schema);
    canary.check().await;
    assert!(
        trap.seen().is_empty() && trap.connections().is_empty(),
        "the trap was reached"
    );
}

#[tokio::test]
async fn keys_are_looked_up_by_digest_whatever_they_hold() {
    let fake = FakeUpstream::start(Script::Ok { text: "ok".into() }, Some(CANARY_KEY)).await;
    let local = FakeUpstream::start(
        Script::Ok {
            text: "local".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let closed = FakeUpstream::start(
        Script::Ok {
            text: "closed".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let yaml = format!(
        "reload: {{poll_interval: 0}}\npolicies: {{active: confidential-local}}\nkeys:\n  - {{id: good, tenant: t, sha256: {}}}\n  - {{id: old, tenant: t, sha256: {}, expires: '2020-01-01'}}\n  - {{id: secret-team, tenant: s, sha256: {}, labels: {{data: confidential}}}}\ndeployments:\n{}{}  - {{name: closed-gpt-4o, kind: openai, model: gpt-4o, base_url: '{}', api_key_env: CANARY, locality: remote, data: {{retains_prompts: true}}}}\n",
        modelgate::config::keys::hash_hex("sk-good"),
        modelgate::config::keys::hash_hex("sk-old"),
        modelgate::config::keys::hash_hex("sk-secret-team"),
        deployment("local", "qwen3-8b", &fake),
        deployment("local-llama", "llama-3.1-8b-instruct", &local),
        closed.base_url()
    );
    let gw = Gateway::start(&yaml).await;
    let addr = gw.running.api_addr;
    let canary = Canary::start(&gw, Some("sk-good"));
    let post = |auth: Option<String>| {
        let url = gw.url("/v1/chat/completions");
        async move {
            let mut rb = client().post(url).body(BODY);
            if let Some(a) = auth {
                rb = rb.header("authorization", a);
            }
            let r = rb.send().await.unwrap();
            let s = r.status().as_u16();
            (
                s,
                serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap_or_default(),
            )
        }
    };
    // 15, 16, 17.
    let (s, v) = post(None).await;
    assert_eq!(
        (s, v["error"]["type"].as_str()),
        (401, Some("authentication_error"))
    );
    for key in ["' OR '1'='1", "sk-good' --", "ключ-🔑", "sk-goo"] {
        let (s, _) = post(Some(format!("Bearer {key}"))).await;
        assert_eq!(s, 401, "{key}");
    }
    let big = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-length: {}\r\n\r\n{BODY}",
        "k".repeat(1 << 20),
        BODY.len()
    );
    let (status, _, _) = raw(addr, big.as_bytes()).await;
    assert_eq!(status, Some(431));
    for bad in ["sk-good\0", "sk-good\rx-injected: 1"] {
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {bad}\r\ncontent-length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        let (status, _, _) = raw(addr, req.as_bytes()).await;
        assert!(matches!(status, Some(400 | 401)), "{bad:?}: {status:?}");
    }
    // 18: an expired key.
    let (s, v) = post(Some("Bearer sk-old".into())).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("expired_api_key"))
    );
    // 19: admin paths are not on the API listener; another tenant's usage is not readable.
    for path in ["/admin/config", "/reload", "/metrics"] {
        let r = client()
            .get(gw.url(path))
            .bearer_auth("sk-good")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    let r = client()
        .get(gw.url("/v1/usage?tenant=s"))
        .bearer_auth("sk-good")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // 29: a key whose requests are all confidential asks for the closed model.
    let (s, v) = post(Some("Bearer sk-secret-team".into())).await;
    assert_eq!(s, 200, "{v}");
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth("sk-secret-team")
        .body(
            json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}).to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["error"]["code"], "policy_violation");
    canary.check().await;
    assert!(
        closed.connections().is_empty(),
        "the closed API was contacted"
    );
}

#[tokio::test]
async fn misbehaving_upstreams_are_contained() {
    let primary = FakeUpstream::start(Script::Ok { text: "ok".into() }, Some(CANARY_KEY)).await;
    let backup = FakeUpstream::start(
        Script::Ok {
            text: "backup".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let yaml = format!(
        "reload: {{poll_interval: 0}}\nlimits: {{max_response_bytes: 1048576}}\ndeployments:\n{}{}",
        deployment("primary", "qwen3-8b", &primary).replace(
            "}\n",
            ", retries: {attempts: 0}, breaker: {consecutive_failures: 0}}\n"
        ),
        deployment("backup", "qwen3-8b", &backup)
            .replace("}\n", ", price: {input: 1, output: 1}}\n"),
    );
    let gw = Gateway::start(&yaml).await;
    let stream = || async {
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .body(json!({"model": "qwen3-8b", "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string())
            .send()
            .await
            .unwrap();
        let h = r.headers().clone();
        (h, sse_events(r).await)
    };
    // 31: usage of the wrong type: an invalid answer, and the backup answers.
    primary.set(Script::Raw {
        content_type: "application/json".into(),
        body: json!({"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}], "usage": "lots"}).to_string(),
    });
    let (status, h, _) = chat(
        &gw,
        json!({"model": "qwen3-8b", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h["x-modelgate-deployment"], "backup");
    // 33: a whole answer larger than max_response_bytes.
    primary.set(Script::Raw {
        content_type: "application/json".into(),
        body: "x".repeat(2 << 20),
    });
    let (_, h, _) = chat(
        &gw,
        json!({"model": "qwen3-8b", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(h["x-modelgate-deployment"], "backup");
    // 34: an in-band error before any content is a failed attempt: the backup streams.
    primary.set(Script::Sse {
        events: vec![
            json!({"error": {"message": "overloaded", "type": "server_error"}}).to_string(),
        ],
        delay: Duration::ZERO,
        done: false,
    });
    let (h, events) = stream().await;
    assert_eq!(h["x-modelgate-deployment"], "backup");
    assert_eq!(events.last().unwrap(), "[DONE]");
    // 32: a 2 MiB line after content: the stream ends with an error event.
    primary.set(Script::Stream {
        first: Duration::ZERO,
        every: Duration::ZERO,
        chunks: 3,
        end: End::HugeLine(2 << 20),
    });
    let (h, events) = stream().await;
    assert_eq!(h["x-modelgate-deployment"], "primary");
    assert!(!events.contains(&"[DONE]".to_owned()));
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_openai_error(&last);
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "modelgate_panics_total", &[]), 0.0);
}

#[tokio::test]
async fn connections_over_the_limit_are_refused_and_served_ones_are_not_disturbed() {
    let fake = FakeUpstream::start(Script::Ok { text: "ok".into() }, Some(CANARY_KEY)).await;
    let gw = Gateway::start(&config(&fake, "server: {max_connections: 20}\n")).await;
    let addr = gw.running.api_addr;
    // The canary's connection is open before the flood.
    let c = client();
    let url = gw.url("/v1/chat/completions");
    assert_eq!(c.post(&url).body(BODY).send().await.unwrap().status(), 200);
    // 35: idle connections up to the limit are held; those past it are closed at once.
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = 0;
    for s in &mut idle {
        let mut b = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(50), s.read(&mut b)).await {
            refused += 1;
        }
    }
    assert!(
        refused >= 20,
        "only {refused} of 40 connections over a limit of 20 were refused"
    );
    for _ in 0..5 {
        assert_eq!(c.post(&url).body(BODY).send().await.unwrap().status(), 200);
    }
    drop(idle);
}

#[test]
fn h2_is_at_a_version_with_the_rapid_reset_and_continuation_fixes() {
    // 38: HTTP/2 rapid reset (RUSTSEC-2023-0034 era, fixed in 0.3.24/0.4.x) and CONTINUATION
    // floods (fixed in 0.4.4): the lock file must not hold an older h2.
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap();
    let mut found = false;
    for block in lock.split("[[package]]") {
        if block.contains("name = \"h2\"") {
            let v = block
                .lines()
                .find_map(|l| l.strip_prefix("version = \""))
                .unwrap()
                .trim_end_matches('"');
            let parts: Vec<u64> = v.split('.').map(|p| p.parse().unwrap()).collect();
            assert!(
                parts >= vec![0, 4, 4],
                "h2 {v} predates the CONTINUATION fix"
            );
            found = true;
        }
    }
    assert!(found);
}

#[tokio::test]
async fn hop_headers_that_say_loop_are_refused_before_anything_else() {
    let fake = FakeUpstream::start(Script::Ok { text: "ok".into() }, Some(CANARY_KEY)).await;
    let gw = Gateway::start(&config(&fake, "")).await;
    let me = modelgate::hop::instance_id().to_owned();
    let many: Vec<String> = (0..16).map(|i| format!("gw{i}")).collect();
    for hops in [
        me.clone(),
        format!("other, {me}"),
        format!("a,b,{me},c"),
        many.join(","),
    ] {
        // Even without a body or a key: a loop is answered first, and never reaches upstream.
        let r = client()
            .post(gw.url("/v1/chat/completions"))
            .header("x-modelgate-hops", hops.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 508, "{hops}");
        let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(v["error"]["code"], "loop_detected", "{hops}");
    }
    assert!(fake.seen().is_empty());
    // Other gateways' ids pass, and this gateway adds its own for the upstream.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-modelgate-hops", "edge-gateway")
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sent = fake.seen().pop().unwrap();
    assert_eq!(
        sent.headers["x-modelgate-hops"],
        format!("edge-gateway,{me}").as_str()
    );
}
