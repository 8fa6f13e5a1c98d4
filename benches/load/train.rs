//! t1: not a measurement but a workout, for `deploy/pgo.sh` to train a profile-guided build on
//! more than P1's and P2's OpenAI-format chat. Every front end the gateway serves (Chat
//! Completions, Anthropic's Messages, Responses), whole and streamed, `auto` among the
//! deployments, and the errors clients commonly cause, in one closed loop against the mock.
//! Paths a build was not trained on are laid out as rarely run code; these are the ones
//! coding agents and SDKs take every request.
//!
//! It passes when every kind of request got the status it should, each time.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::load_gen::{Fast, chat_body, fast};
use crate::mock::{self, MockConfig};
use crate::sut::Proxy;
use crate::{Args, MODEL, config};

/// One kind of request: what it is called, where it goes, its body, the status it should get.
struct Kind {
    name: &'static str,
    path: &'static str,
    body: String,
    status: u16,
}

fn kinds() -> Vec<Kind> {
    let messages = |stream: bool| {
        serde_json::json!({
            "model": MODEL,
            "max_tokens": 64,
            "stream": stream,
            "system": "You are terse.",
            "messages": [{"role": "user", "content": "Say hello to the benchmark."}]
        })
        .to_string()
    };
    let responses = |stream: bool| {
        serde_json::json!({
            "model": MODEL,
            "stream": stream,
            "instructions": "You are terse.",
            "input": [{"role": "user", "content": "Say hello to the benchmark."}]
        })
        .to_string()
    };
    let kind = |name, path, body, status| Kind {
        name,
        path,
        body,
        status,
    };
    vec![
        kind("chat", "/v1/chat/completions", chat_body(MODEL, false), 200),
        kind(
            "chat stream",
            "/v1/chat/completions",
            chat_body(MODEL, true),
            200,
        ),
        kind(
            "chat auto",
            "/v1/chat/completions",
            chat_body("auto", false),
            200,
        ),
        kind("messages", "/v1/messages", messages(false), 200),
        kind("messages stream", "/v1/messages", messages(true), 200),
        kind("responses", "/v1/responses", responses(false), 200),
        kind("responses stream", "/v1/responses", responses(true), 200),
        kind(
            "unknown model",
            "/v1/chat/completions",
            chat_body("no-such-model", false),
            404,
        ),
        kind(
            "malformed JSON",
            "/v1/chat/completions",
            "{\"model\": ".to_owned(),
            400,
        ),
        kind(
            "no messages",
            "/v1/messages",
            r#"{"model":"x"}"#.to_owned(),
            400,
        ),
    ]
}

/// Sends `kind` once and reads its whole answer; the status, or none when it failed.
async fn send(client: &Fast, base: &str, kind: &Kind) -> Option<u16> {
    let req = http::Request::post(format!("{base}{}", kind.path))
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .body(Full::new(Bytes::from(kind.body.clone())))
        .ok()?;
    let call = async {
        let r = client.request(req).await.ok()?;
        let status = r.status().as_u16();
        r.into_body().collect().await.ok()?;
        Some(status)
    };
    tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .ok()?
}

pub async fn t1(args: &Args) -> bool {
    let secs = args.secs.unwrap_or(if args.quick { 10.0 } else { 30.0 });
    let mock = mock::start(MockConfig {
        delay: Duration::ZERO,
        chunks: 20,
        chunk_gap: Duration::ZERO,
        fail_every: 0,
    })
    .await;
    let gw = Proxy::gateway(&config(&mock.addr.to_string()), "0");
    let kinds = std::sync::Arc::new(kinds());
    let base = gw.base.clone();
    let end = Instant::now() + Duration::from_secs_f64(secs);
    println!(
        "\n== t1: every front end, whole and streamed, and common errors ({secs} s, closed loop)"
    );
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let (kinds, base, client) = (kinds.clone(), base.clone(), fast());
            tokio::spawn(async move {
                // Per kind: answered as it should, and not.
                let mut seen = vec![(0usize, 0usize); kinds.len()];
                // Bounded by time, and by count in case the gateway answers instantly.
                for i in 0..1_000_000usize {
                    if Instant::now() >= end {
                        break;
                    }
                    let k = (i + t) % kinds.len();
                    if send(&client, &base, &kinds[k]).await == Some(kinds[k].status) {
                        seen[k].0 += 1;
                    } else {
                        seen[k].1 += 1;
                    }
                }
                seen
            })
        })
        .collect();
    let mut seen = vec![(0usize, 0usize); kinds.len()];
    for t in tasks {
        for (s, x) in seen.iter_mut().zip(t.await.unwrap_or_default()) {
            s.0 += x.0;
            s.1 += x.1;
        }
    }
    drop(gw);
    let mut ok = true;
    for (k, (good, bad)) in kinds.iter().zip(&seen) {
        println!(
            "  {:<18} {good:>7} answered {}   {bad} otherwise",
            k.name, k.status
        );
        ok &= *good > 0 && *bad == 0;
    }
    ok
}
