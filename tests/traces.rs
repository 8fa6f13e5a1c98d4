//! End-to-end: requests exported as OpenTelemetry traces over OTLP/HTTP to a receiver that
//! decodes them with the official `opentelemetry-proto` definitions (Python's package,
//! `tests/python/otlp_receiver.py`). A request that is retried and falls back, one streamed,
//! and one the policy refuses; a client's `traceparent` continued, and sent upstream only to
//! the deployment that allows it; the collector's key never in the log.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test code"
)]

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::process::Process;
use support::*;

/// The receiver: its port, and every span (or error) it printed.
struct Receiver {
    child: Child,
    port: u16,
    lines: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start(python: &str) -> Receiver {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/otlp_receiver.py");
        let mut child = Command::new(python)
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
        let port: u16 = out.next().unwrap().unwrap().trim().parse().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = lines.clone();
        std::thread::spawn(move || {
            for line in out.map_while(Result::ok) {
                l2.lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).unwrap());
            }
        });
        Receiver { child, port, lines }
    }

    /// The spans of the trace whose request span has `attribute` = `value`, once at least `n`
    /// spans of it have arrived (within a bound).
    fn trace_of(&self, attribute: &str, value: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let all = self.lines.lock().unwrap().clone();
            assert!(
                all.iter().all(|l| l.get("error").is_none()),
                "the receiver refused an export: {all:?}"
            );
            if let Some(root) = all
                .iter()
                .find(|s| s["kind"] == 2 && s["attributes"][attribute] == value)
            {
                let spans: Vec<Value> = all
                    .iter()
                    .filter(|s| s["trace_id"] == root["trace_id"])
                    .cloned()
                    .collect();
                if spans.len() >= n {
                    return spans;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no trace with {attribute}={value}: {all:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn root(spans: &[Value]) -> &Value {
    spans.iter().find(|s| s["kind"] == 2).unwrap()
}

/// The attempts (client spans), in the order they started.
fn attempts(spans: &[Value]) -> Vec<&Value> {
    let mut a: Vec<&Value> = spans.iter().filter(|s| s["kind"] == 3).collect();
    a.sort_by_key(|s| s["start"].as_u64().unwrap());
    a
}

async fn post(p: &Process, body: Value, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut rb = client()
        .post(format!("{}/v1/chat/completions", p.base))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_become_genai_traces_with_attempts_and_refusals() {
    let Some(python) = program_from_env(
        "MODELGATE_PYTHON",
        "PYTHON",
        "a Python with opentelemetry-proto (tests/python/requirements.txt)",
    ) else {
        return;
    };
    let receiver = Receiver::start(&python);
    // `bad` is cheaper, so tried first: it fails twice (the first try and its retry), and the
    // request falls back to `good`, which alone is allowed the trace context.
    let bad = FakeUpstream::start(Script::status(500, None), Some(CANARY_KEY)).await;
    let good = FakeUpstream::start(
        Script::Ok {
            text: "traced answer".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    let closed = FakeUpstream::start(Script::chunks(3), Some(CANARY_KEY)).await;
    let yaml = format!(
        "reload: {{poll_interval: 0}}
policies: {{active: confidential-local}}
telemetry:
  otlp: {{endpoint: 'http://127.0.0.1:{port}', headers_env: OTLP_HEADERS}}
deployments:
  - {{name: bad, kind: openai-compatible, model: llama-3.1-8b-instruct, base_url: '{bad}', api_key_env: CANARY, price: {{input: 0.01, output: 0.01}}, retries: {{attempts: 1, backoff: 1ms}}}}
  - {{name: good, kind: openai-compatible, model: qwen2.5-7b-instruct, base_url: '{good}', api_key_env: CANARY, price: {{input: 0.02, output: 0.02}}, trace_context: true}}
  - {{name: closed, kind: openai, model: gpt-4o, base_url: '{closed}', api_key_env: CANARY, locality: remote, data: {{retains_prompts: true}}}}
",
        port = receiver.port,
        bad = bad.base_url(),
        good = good.base_url(),
        closed = closed.base_url(),
    );
    let mut p = Process::start_with(
        &yaml,
        &[(
            "OTLP_HEADERS",
            "authorization=Bearer%20collector-secret-7f3a",
        )],
    );

    // 1. Retried, then a fallback, continuing the client's trace.
    let client_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{client_trace}-{client_span}-01");
    let body = json!({"model": "auto", "messages": [{"role": "user", "content": "a secret prompt"}], "max_tokens": 50, "temperature": 0.5});
    let r = post(
        &p,
        body,
        &[
            ("traceparent", &traceparent),
            ("x-request-id", "req-fallback"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);

    let spans = receiver.trace_of("modelgate.request_id", "req-fallback", 4);
    let req = root(&spans);
    assert_eq!(req["trace_id"], client_trace);
    assert_eq!(req["parent_span_id"], client_span);
    assert_eq!(req["name"], "chat auto");
    assert_eq!(req["resource"]["service.name"], "modelgate");
    assert_eq!(req["scope"], "modelgate");
    let a = &req["attributes"];
    assert_eq!(a["gen_ai.operation.name"], "chat");
    assert_eq!(a["gen_ai.request.model"], "auto");
    assert_eq!(a["gen_ai.response.model"], "qwen2.5-7b-instruct");
    assert_eq!(a["gen_ai.request.max_tokens"], 50);
    assert_eq!(a["gen_ai.request.temperature"], 0.5);
    assert!(a["gen_ai.usage.input_tokens"].as_i64().unwrap() > 0, "{a}");
    assert!(a["gen_ai.usage.output_tokens"].as_i64().unwrap() > 0, "{a}");
    assert_eq!(a["modelgate.policy"], "confidential-local");
    assert_eq!(a["modelgate.rule"], "everything-else");
    assert_eq!(a["modelgate.deployment"], "good");
    assert_eq!(a["modelgate.openness"], "open-weight");
    assert_eq!(a["modelgate.license"], "apache-2.0");
    assert_eq!(a["modelgate.attempts"], 3);
    assert!(a["modelgate.cost_usd"].as_f64().unwrap() > 0.0, "{a}");
    assert_eq!(a["http.response.status_code"], 200);
    assert_eq!(a["modelgate.allowed"], json!(["bad", "good", "closed"]));
    // No content without the policy's opt-in.
    assert!(a.get("gen_ai.input.messages").is_none(), "{a}");
    assert_eq!(req["status"]["code"], 0);
    assert!(
        req["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "modelgate.commit")
    );

    let tries = attempts(&spans);
    assert_eq!(tries.len(), 3, "{spans:#?}");
    let kinds: Vec<_> = tries
        .iter()
        .map(|s| {
            (
                s["attributes"]["modelgate.attempt"].as_str().unwrap(),
                s["attributes"]["modelgate.deployment"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [("first", "bad"), ("retry", "bad"), ("fallback", "good")]
    );
    for t in &tries {
        assert_eq!(t["parent_span_id"], req["span_id"]);
        assert_eq!(t["trace_id"], client_trace);
        assert!(
            t["start"].as_u64() >= req["start"].as_u64()
                && t["end"].as_u64() <= req["end"].as_u64()
        );
    }
    // The failures say so, with the error's kind; the answer has its time to first token.
    assert_eq!(tries[0]["status"]["code"], 2);
    assert!(tries[0]["attributes"]["error.type"].is_string());
    assert_eq!(tries[2]["status"]["code"], 0);
    assert!(
        tries[2]["attributes"]["gen_ai.server.time_to_first_token"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(tries[2]["name"], "chat qwen2.5-7b-instruct");

    // The trace context went to `good` (naming its attempt's span), never to `bad`.
    let sent = good.seen()[0].headers.get("traceparent").cloned().unwrap();
    assert_eq!(
        sent.to_str().unwrap(),
        format!(
            "00-{client_trace}-{}-01",
            tries[2]["span_id"].as_str().unwrap()
        )
    );
    assert!(
        bad.seen()
            .iter()
            .all(|s| s.headers.get("traceparent").is_none())
    );
    // The collector got its key.
    assert_eq!(
        req["headers"]["authorization"],
        "Bearer collector-secret-7f3a"
    );

    // 2. Refused by the policy: a trace of its own with the rule and the reasons.
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
    let r = post(
        &p,
        body,
        &[
            ("x-modelgate-labels", "data=confidential"),
            ("x-request-id", "req-refused"),
        ],
    )
    .await;
    assert_eq!(r.status(), 403);
    let spans = receiver.trace_of("modelgate.request_id", "req-refused", 1);
    let req = root(&spans);
    assert_ne!(req["trace_id"], client_trace);
    assert_eq!(req["parent_span_id"], "");
    assert_eq!(req["name"], "chat gpt-4o");
    let a = &req["attributes"];
    assert_eq!(a["modelgate.policy"], "confidential-local");
    assert_eq!(a["modelgate.rule"], "confidential-stays-local");
    assert_eq!(a["modelgate.refused"], 1);
    let reasons = a["modelgate.refused.reasons"].as_array().unwrap();
    assert!(
        reasons[0]
            .as_str()
            .unwrap()
            .starts_with("closed: openness:"),
        "{reasons:?}"
    );
    assert_eq!(a["http.response.status_code"], 403);
    assert_eq!(a["error.type"], "policy");
    assert_eq!(req["status"]["code"], 2);
    assert!(attempts(&spans).is_empty());

    // 3. A stream: its end is an event, and the span lasts until it.
    let body =
        json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let r = post(&p, body, &[("x-request-id", "req-stream")]).await;
    assert_eq!(r.status(), 200);
    let _ = sse_events(r).await;
    let spans = receiver.trace_of("modelgate.request_id", "req-stream", 2);
    let req = root(&spans);
    let end = req["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "modelgate.stream_end")
        .expect("a stream_end event");
    assert_eq!(end["attributes"]["modelgate.end_reason"], "completed");
    assert_eq!(req["attributes"]["modelgate.stream"], true);
    assert_eq!(req["attributes"]["gen_ai.provider.name"], "openai");

    // Every span exported and counted; the collector's key nowhere in the log.
    let m = p.metrics().await;
    assert!(
        metric(&m, "modelgate_trace_spans_total", &[("result", "exported")]) >= 7.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "modelgate_trace_spans_total",
            &[("result", "queue_full")]
        ),
        0.0
    );
    p.signal("-TERM");
    p.wait(Duration::from_secs(10));
    let log = p.log.lock().unwrap().clone();
    assert!(!log.contains("collector-secret-7f3a"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_only_where_a_policy_opts_in_and_never_when_confidential() {
    let Some(python) = program_from_env(
        "MODELGATE_PYTHON",
        "PYTHON",
        "a Python with opentelemetry-proto (tests/python/requirements.txt)",
    ) else {
        return;
    };
    let receiver = Receiver::start(&python);
    let up = FakeUpstream::start(
        Script::Ok {
            text: "the answer text".into(),
        },
        Some(CANARY_KEY),
    )
    .await;
    // Slow to start: a client that gives up leaves its attempt in progress.
    let slow = FakeUpstream::start(
        Script::Stream {
            first: Duration::from_secs(3),
            every: Duration::ZERO,
            chunks: 2,
            end: End::Done,
        },
        Some(CANARY_KEY),
    )
    .await;
    let dir = temp_dir();
    let policy = dir.join("traced.yaml");
    std::fs::write(
        &policy,
        "policies:\n  - name: traced\n    trace_content: true\n    rules:\n      - name: any\n",
    )
    .unwrap();
    let yaml = format!(
        "reload: {{poll_interval: 0}}\npolicies: {{active: traced, paths: ['{}']}}\ntelemetry:\n  otlp: {{endpoint: 'http://127.0.0.1:{}/v1/traces', sample_ratio: 1}}\ndeployments:\n{}",
        policy.display(),
        receiver.port,
        deployment("local", "llama-3.1-8b-instruct", &up)
            + &deployment("slow", "qwen2.5-7b-instruct", &slow),
    );
    let mut p = Process::start(&yaml);
    let ask =
        |text: &str| json!({"model": "local", "messages": [{"role": "user", "content": text}]});
    let r = post(
        &p,
        ask("an ordinary prompt"),
        &[("x-request-id", "req-open")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let r = post(
        &p,
        ask("a confidential prompt"),
        &[
            ("x-request-id", "req-confidential"),
            ("x-modelgate-labels", "data=confidential"),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    // A client that gives up mid-call: its request and attempt are exported as cancelled.
    let gone = client()
        .post(format!("{}/v1/chat/completions", p.base))
        .header("content-type", "application/json")
        .header("x-request-id", "req-gone")
        .timeout(Duration::from_millis(300))
        .body(json!({"model": "slow", "stream": true, "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .await;
    assert!(gone.is_err());
    let spans = receiver.trace_of("modelgate.request_id", "req-gone", 2);
    let req = root(&spans);
    assert_eq!(req["status"]["code"], 2, "{req}");
    assert!(
        req["status"]["message"]
            .as_str()
            .unwrap()
            .contains("client went away"),
        "{req}"
    );
    let tries = attempts(&spans);
    assert_eq!(tries.len(), 1);
    assert_eq!(tries[0]["attributes"]["error.type"], "cancelled");
    assert_eq!(tries[0]["parent_span_id"], req["span_id"]);
    // Shut down at once: the spans still queued are sent before the process exits.
    p.signal("-TERM");
    p.wait(Duration::from_secs(10));

    let spans = receiver.trace_of("modelgate.request_id", "req-open", 2);
    let a = &root(&spans)["attributes"];
    assert!(
        a["gen_ai.input.messages"]
            .as_str()
            .unwrap()
            .contains("an ordinary prompt"),
        "{a}"
    );
    assert!(
        a["gen_ai.output.messages"]
            .as_str()
            .unwrap()
            .contains("the answer text"),
        "{a}"
    );
    let spans = receiver.trace_of("modelgate.request_id", "req-confidential", 2);
    let a = &root(&spans)["attributes"];
    assert!(a.get("gen_ai.input.messages").is_none(), "{a}");
    assert!(a.get("gen_ai.output.messages").is_none(), "{a}");
    let all = serde_json::to_string(&*receiver.lines.lock().unwrap()).unwrap();
    assert!(!all.contains("a confidential prompt"));
}
