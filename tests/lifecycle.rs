//! End-to-end: configuration reload (file change and SIGHUP) and graceful shutdown, the latter
//! on the real binary with real signals.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use modelgate::server::reload::Reloaded;
use serde_json::{Value, json};
use support::process::Process;
use support::*;

async fn model_ids(base: &str) -> Vec<String> {
    let r = client()
        .get(format!("{base}/v1/models"))
        .send()
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn wait_for<F: AsyncFnMut() -> bool>(mut f: F, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn c01_a_valid_file_change_swaps_the_configuration_and_an_invalid_one_is_refused() {
    let fake = FakeUpstream::start(Script::Ok { text: "x".into() }, None).await;
    let a = format!(
        "reload: {{poll_interval: 100ms}}\ndeployments:\n{}",
        deployment("a", "qwen3-8b", &fake)
    );
    let gw = Gateway::start(&a).await;
    assert_eq!(model_ids(&gw.base).await, ["qwen3-8b"]);
    let hash_a = gw.running.state.live.load().config.hash.clone();

    let b = format!(
        "reload: {{poll_interval: 100ms}}\ndeployments:\n{}",
        deployment("b", "llama-3.1-8b-instruct", &fake)
    );
    std::fs::write(&gw.config_path, &b).unwrap();
    wait_for(
        async || model_ids(&gw.base).await == ["llama-3.1-8b-instruct"],
        "the new configuration",
    )
    .await;
    let hash_b = gw.running.state.live.load().config.hash.clone();
    assert_ne!(hash_a, hash_b);

    // Invalid: an unknown field. The old configuration keeps serving.
    std::fs::write(&gw.config_path, b.replace("reload:", "relaod: {}\nreload:")).unwrap();
    wait_for(
        async || {
            metric(
                &gw.metrics().await,
                "modelgate_config_reloads_total",
                &[("result", "error")],
            ) >= 1.0
        },
        "the refusal",
    )
    .await;
    assert_eq!(model_ids(&gw.base).await, ["llama-3.1-8b-instruct"]);
    assert_eq!(gw.running.state.live.load().config.hash, hash_b);
    let m = gw.metrics().await;
    assert_eq!(
        metric(&m, "modelgate_config_info", &[("hash", &hash_b)]),
        1.0
    );
    let (status, _, _) = chat(
        &gw,
        json!({"model": "llama-3.1-8b-instruct", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 200);

    // A reload asked for directly says why it refused, with file, line and field.
    match gw.running.state.reload() {
        Reloaded::Refused { problems } => {
            assert!(problems.contains("modelgate.yaml:1:1"), "{problems}");
            assert!(problems.contains("relaod"), "{problems}");
        }
        other => panic!("{other:?}"),
    }
    // A semantic error is refused too (unknown model), and a missing file.
    std::fs::write(
        &gw.config_path,
        b.replace("llama-3.1-8b-instruct", "no-such-model"),
    )
    .unwrap();
    assert!(matches!(
        gw.running.state.reload(),
        Reloaded::Refused { .. }
    ));
    // A syntax error, with its line.
    std::fs::write(&gw.config_path, b.replace("deployments:", "deployments: [")).unwrap();
    match gw.running.state.reload() {
        Reloaded::Refused { problems } => {
            assert!(problems.contains("modelgate.yaml:"), "{problems}")
        }
        other => panic!("{other:?}"),
    }
    std::fs::remove_file(&gw.config_path).unwrap();
    assert!(matches!(
        gw.running.state.reload(),
        Reloaded::Refused { .. }
    ));
    assert_eq!(gw.running.state.live.load().config.hash, hash_b);
    let m = gw.metrics().await;
    assert!(metric(&m, "modelgate_config_reloads_total", &[("result", "error")]) >= 4.0);
}

#[tokio::test]
async fn sighup_reloads_the_binary() {
    let fake = FakeUpstream::start(Script::Ok { text: "x".into() }, None).await;
    let p = Process::start(&format!(
        "reload: {{poll_interval: 0}}\ndeployments:\n{}",
        deployment("a", "qwen3-8b", &fake)
    ));
    assert_eq!(model_ids(&p.base).await, ["qwen3-8b"]);
    std::fs::write(
        &p.config,
        format!(
            "reload: {{poll_interval: 0}}\ndeployments:\n{}",
            deployment("b", "phi-4", &fake)
        ),
    )
    .unwrap();
    p.signal("-HUP");
    wait_for(async || model_ids(&p.base).await == ["phi-4"], "the reload").await;
    // Log lines are written in batches, a few milliseconds later.
    wait_for(
        async || p.log.lock().unwrap().contains("configuration reloaded"),
        "the reload's log line",
    )
    .await;
}

#[tokio::test]
async fn s01_sigterm_drains_the_streams_in_flight_and_exits_cleanly() {
    drains_on_sigterm("2").await;
}

/// On one core (a sidecar's usual limit) the binary runs on one thread, with no worker threads,
/// and serves and drains as it does on several.
#[tokio::test]
async fn on_one_core_the_binary_runs_on_one_thread_and_drains_the_same() {
    drains_on_sigterm("1").await;
}

/// The names of a process's threads (the runtime's are `modelgate-rt`: its workers, and the
/// blocking pool's once something is spawned on it, which nothing is before a request).
fn thread_names(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect()
}

/// Twenty streams in flight, SIGTERM, each finishes whole and the process exits cleanly; the
/// runtime's worker count set as an operator would (`TOKIO_WORKER_THREADS`, tokio's own).
async fn drains_on_sigterm(threads: &str) {
    let events = chunks("m", "one two three four five six seven eight", false);
    let n = events.len();
    let fake = FakeUpstream::start(
        Script::Sse {
            events,
            delay: Duration::from_millis(200),
            done: true,
        },
        None,
    )
    .await;
    let mut p = Process::start_with(
        &format!(
            "server: {{drain_timeout: 20s}}\nreload: {{poll_interval: 0}}\ndeployments:\n{}",
            deployment("a", "qwen3-8b", &fake)
        ),
        &[("TOKIO_WORKER_THREADS", threads)],
    );
    let workers = thread_names(p.child.id())
        .iter()
        .filter(|n| *n == "modelgate-rt")
        .count();
    if threads == "1" {
        assert_eq!(workers, 0, "{:?}", thread_names(p.child.id()));
    } else {
        assert_eq!(workers.to_string(), threads);
    }
    let body = json!({"model": "qwen3-8b", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let mut streams = Vec::new();
    for _ in 0..20 {
        let r = client()
            .post(format!("{}/v1/chat/completions", p.base))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let mut stream = r.bytes_stream();
        let first = stream.next().await.unwrap().unwrap();
        assert!(first.starts_with(b"data: "));
        streams.push((first, stream));
    }

    p.signal("-TERM");
    // Readiness fails while the stream drains; new connections are refused.
    wait_for(
        async || {
            client()
                .get(format!("{}/readyz", p.admin))
                .send()
                .await
                .is_ok_and(|r| r.status() == 503)
        },
        "readiness to fail",
    )
    .await;
    assert!(
        client()
            .get(format!("{}/v1/models", p.base))
            .send()
            .await
            .is_err(),
        "still accepting"
    );

    // Every stream in flight finishes whole.
    for (first, mut stream) in streams {
        let mut rest = first.to_vec();
        while let Some(chunk) = stream.next().await {
            rest.extend_from_slice(&chunk.unwrap());
        }
        let text = String::from_utf8(rest).unwrap();
        assert_eq!(text.matches("data: ").count(), n + 1, "{text}");
        assert!(
            text.ends_with("data: [DONE]\n\n"),
            "the stream finished: {text}"
        );
    }
    let status = p.wait(Duration::from_secs(10));
    assert!(status.success(), "{status:?}\n{}", p.log.lock().unwrap());
    assert!(p.log.lock().unwrap().contains("drained"));
}
