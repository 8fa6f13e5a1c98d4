//! Test support: a fake OpenAI-compatible upstream that checks requests as the real API does
//! and answers in its formats with scripted timing, and helpers to start the gateway in-process
//! or as a real process, each on its own loopback port.

#![allow(dead_code, reason = "each test binary uses part of the support code")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::result_large_err,
    reason = "test code"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use modelgate::config::Origin;
use modelgate::config::load::Overrides;
use modelgate::server::Running;
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub const CANARY_KEY: &str = "sk-canary-7f3a9c1e5b2d4680";

pub mod backends;
mod dialects;
pub mod faults;
pub mod process;
pub mod redis;
mod responses;

pub use faults::{Connection, End};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request the fake upstream received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Value,
    pub at: std::time::Instant,
}

/// How the fake answers.
#[derive(Clone, Debug, PartialEq)]
pub enum Script {
    /// An OpenAI chat completion (or chunks when the request streams), with usage.
    Ok { text: String },
    /// A status and a JSON body.
    Status {
        status: u16,
        body: Value,
        retry_after: Option<String>,
    },
    /// SSE events (the `data:` payloads), sent with a delay before each; `done` appends
    /// `[DONE]`; without it the body just ends (a cut stream).
    Sse {
        events: Vec<String>,
        delay: Duration,
        done: bool,
    },
    /// A raw body with a content type.
    Raw { content_type: String, body: String },
    /// Never answers.
    Hang,
    /// Resets the connection after reading the request, before any response byte.
    ResetBeforeHeaders,
    /// A chat stream of `chunks` content chunks (`w0 w1 …`), the first after `first`, the
    /// others every `every`, then `end` (see `faults::stream`).
    Stream {
        first: Duration,
        every: Duration,
        chunks: usize,
        end: End,
    },
    /// A chat stream that never ends: a chunk every `every`, its content padded with `pad`
    /// spaces.
    NeverEnd { every: Duration, pad: usize },
    /// A redirect to `location`.
    Redirect(String),
    /// The completion without its `choices`.
    MissingFields,
    /// One script per request, in order; the last one repeats.
    Sequence(Vec<Script>),
}

impl Script {
    /// A 2xx stream of `n` chunks that ends cleanly.
    pub fn chunks(n: usize) -> Script {
        Script::Stream {
            first: Duration::ZERO,
            every: Duration::ZERO,
            chunks: n,
            end: End::Done,
        }
    }

    /// A status with an OpenAI error body and, optionally, `Retry-After`.
    pub fn status(status: u16, retry_after: Option<&str>) -> Script {
        Script::Status {
            status,
            body: json!({"error": {"message": format!("scripted {status}"), "type": "server_error", "param": null, "code": null}}),
            retry_after: retry_after.map(str::to_owned),
        }
    }
}

pub struct FakeUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<Script>>,
    connections: faults::Connections,
}

impl FakeUpstream {
    /// Starts a fake that expects `Authorization: Bearer <key>` when `key` is given.
    pub async fn start(script: Script, key: Option<&str>) -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script));
        let connections = faults::Connections::default();
        let key = key.map(str::to_owned);
        let (s2, sc2, c2) = (seen.clone(), script.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (seen, script, key) = (s2.clone(), sc2.clone(), key.clone());
                let conn = faults::Conn::new(stream, c2.clone());
                let reset = conn.reset.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (seen, script, key, reset) =
                            (seen.clone(), script.clone(), key.clone(), reset.clone());
                        async move { handle(req, seen, script, key, reset).await }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(conn), svc)
                        .await;
                });
            }
        });
        FakeUpstream {
            addr,
            seen,
            script,
            connections,
        }
    }

    /// Every connection accepted so far.
    pub fn connections(&self) -> Vec<Connection> {
        self.connections.lock().unwrap().clone()
    }

    /// Waits (up to `within`) until every connection is closed; true if they all were.
    pub async fn all_closed(&self, within: Duration) -> bool {
        let until = std::time::Instant::now() + within;
        loop {
            if self.connections().iter().all(|c| c.closed.is_some()) {
                return true;
            }
            if std::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn set(&self, script: Script) {
        *self.script.lock().unwrap() = script;
    }
}

pub(crate) type FakeBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// A whole body.
pub(crate) fn full(b: impl Into<Bytes>) -> FakeBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

pub(crate) fn json_response(status: u16, v: &Value) -> Response<FakeBody> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

fn openai_error(status: u16, message: &str, kind: &str, code: Option<&str>) -> Response<FakeBody> {
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "param": null, "code": code}}),
    )
}

/// Checks a chat request as strictly as OpenAI does.
fn check_chat(
    headers: &HeaderMap,
    body: &Value,
    key: Option<&str>,
) -> Result<(), Response<FakeBody>> {
    if let Some(k) = key {
        let want = format!("Bearer {k}");
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(want.as_str()) {
            return Err(openai_error(
                401,
                "Incorrect API key provided",
                "invalid_request_error",
                Some("invalid_api_key"),
            ));
        }
    }
    if !headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
    {
        return Err(openai_error(
            400,
            "content-type must be application/json",
            "invalid_request_error",
            None,
        ));
    }
    let bad = |m: &str| Err(openai_error(400, m, "invalid_request_error", None));
    let Some(obj) = body.as_object() else {
        return bad("body must be an object");
    };
    if !obj.get("model").is_some_and(Value::is_string) {
        return bad("you must provide a model parameter");
    }
    let Some(msgs) = obj.get("messages").and_then(Value::as_array) else {
        return bad("'messages' is a required property");
    };
    if msgs.is_empty() {
        return bad("'messages' must not be empty");
    }
    for m in msgs {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if ![
            "system",
            "developer",
            "user",
            "assistant",
            "tool",
            "function",
        ]
        .contains(&role)
        {
            return bad("invalid role");
        }
    }
    if obj.contains_key("stream_options") && obj.get("stream") != Some(&Value::Bool(true)) {
        return bad("The 'stream_options' parameter is only allowed when 'stream' is enabled.");
    }
    Ok(())
}

async fn handle(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<Script>>,
    key: Option<String>,
    reset: Arc<std::sync::atomic::AtomicBool>,
) -> Result<Response<FakeBody>, std::io::Error> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let headers = req.headers().clone();
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        query: query.clone(),
        headers: headers.clone(),
        body: body.clone(),
        at: std::time::Instant::now(),
    });
    if method == "GET" && path == "/v1/models" {
        return Ok(json_response(
            200,
            &json!({"object": "list", "data": [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "test"}]}),
        ));
    }
    // A sequence gives each request its own script; the last one repeats.
    let current = {
        let mut s = script.lock().unwrap();
        match &mut *s {
            Script::Sequence(v) if v.len() > 1 => v.remove(0),
            Script::Sequence(v) => v[0].clone(),
            other => other.clone(),
        }
    };
    if current == Script::ResetBeforeHeaders {
        reset.store(true, Ordering::Relaxed);
        return Err(std::io::Error::other("reset before headers"));
    }
    Ok(respond(
        &method,
        &path,
        query.as_deref(),
        &headers,
        &body,
        current,
        key,
        reset,
    )
    .await)
}

#[expect(clippy::too_many_arguments, reason = "the parts of one fake request")]
async fn respond(
    method: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &Value,
    current: Script,
    key: Option<String>,
    reset: Arc<std::sync::atomic::AtomicBool>,
) -> Response<FakeBody> {
    // A scripted status answers these too (error paths of embeddings and token counts).
    if method == "POST"
        && (path == "/v1/embeddings" || path == "/v1/messages/count_tokens")
        && let Script::Status { status, body, .. } = &current
    {
        return json_response(*status, body);
    }
    if method == "POST" && path == "/v1/embeddings" {
        return dialects::openai_embeddings(headers, body, key.as_deref());
    }
    if method == "POST" && path == "/v1/messages/count_tokens" {
        return dialects::anthropic_count_tokens(headers, body, key.as_deref());
    }
    if method == "POST" && path == "/v1/responses" {
        return responses::openai_responses(headers, body, &current, key.as_deref());
    }
    if method == "POST" && path == "/v1/messages" {
        return dialects::anthropic(headers, body, &current, key.as_deref());
    }
    if method == "POST" && path.starts_with("/v1beta/models/") {
        return dialects::gemini(path, query, headers, body, &current, key.as_deref());
    }
    if method != "POST" || path != "/v1/chat/completions" {
        return openai_error(
            404,
            "Unknown request URL",
            "invalid_request_error",
            Some("unknown_url"),
        );
    }
    if let Err(r) = check_chat(headers, body, key.as_deref()) {
        return r;
    }
    let stream = body.get("stream") == Some(&Value::Bool(true));
    let model = body["model"].as_str().unwrap_or("").to_owned();
    match current {
        Script::Ok { .. } if dialects::wants_tool_call(body) && !stream => {
            json_response(200, &tool_call_completion(&model, body))
        }
        Script::Ok { .. } if dialects::wants_tool_call(body) => {
            let usage = body.pointer("/stream_options/include_usage") == Some(&Value::Bool(true));
            sse(
                tool_call_chunks(&model, body, usage),
                Duration::from_millis(2),
                true,
            )
        }
        Script::Ok { text } => {
            let n = match body.get("n") {
                None | Some(Value::Null) => 1,
                Some(n) => match n.as_u64().filter(|n| (1..=128).contains(n)) {
                    Some(n) => n as usize,
                    None => {
                        return openai_error(
                            400,
                            "n must be between 1 and 128",
                            "invalid_request_error",
                            None,
                        );
                    }
                },
            };
            let text = dialects::cut_at_stop(&text, body.get("stop")).0;
            if !stream {
                return json_response(200, &completion_n(&model, &text, n));
            }
            let usage = body.pointer("/stream_options/include_usage") == Some(&Value::Bool(true));
            sse(chunks_n(&model, &text, usage, n), Duration::ZERO, true)
        }
        Script::Status {
            status,
            body,
            retry_after,
        } => {
            let mut r = json_response(status, &body);
            if let Some(ra) = retry_after {
                r.headers_mut().insert("retry-after", ra.parse().unwrap());
            }
            r
        }
        Script::Sse {
            events,
            delay,
            done,
        } => sse(events, delay, done),
        Script::Raw { content_type, body } => {
            let mut r = Response::new(full(body));
            r.headers_mut()
                .insert("content-type", content_type.parse().unwrap());
            r
        }
        Script::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Script::Stream {
            first,
            every,
            chunks,
            end,
        } => faults::stream(&model, first, every, chunks, end, false, reset),
        Script::NeverEnd { every, pad } => {
            faults::stream(&model, every, every, pad, End::Done, true, reset)
        }
        Script::Redirect(location) => {
            let mut r = json_response(307, &json!({}));
            r.headers_mut()
                .insert("location", location.parse().unwrap());
            r
        }
        Script::MissingFields => json_response(200, &faults::missing_fields(&model)),
        // Resolved before: never a whole sequence or a reset here.
        Script::Sequence(_) | Script::ResetBeforeHeaders => unreachable!(),
    }
}

/// A completion that calls the request's first tool (or, asked to call them "in parallel",
/// each of them) with `{"city":"Paris"}`.
fn tool_call_completion(model: &str, body: &Value) -> Value {
    let calls: Vec<Value> = dialects::tools_to_call(body, "/tools", "/function/name")
        .iter()
        .enumerate()
        .map(|(i, name)| {
            json!({"id": format!("call_fake_{}", i + 1), "type": "function",
            "function": {"name": name, "arguments": "{\"city\":\"Paris\"}"}})
        })
        .collect();
    json!({
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null, "refusal": null,
            "tool_calls": calls},
            "logprobs": null, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}
    })
}

/// The chunks OpenAI streams for the calls of `tool_call_completion`.
fn tool_call_chunks(model: &str, body: &Value, usage: bool) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
               "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}], "usage": null})
        .to_string()
    };
    let mut out = vec![chunk(
        json!({"role": "assistant", "content": null}),
        Value::Null,
    )];
    let names = dialects::tools_to_call(body, "/tools", "/function/name");
    for (i, name) in names.iter().enumerate() {
        out.push(chunk(
            json!({"tool_calls": [{"index": i, "id": format!("call_fake_{}", i + 1), "type": "function", "function": {"name": name, "arguments": ""}}]}),
            Value::Null,
        ));
        out.push(chunk(
            json!({"tool_calls": [{"index": i, "function": {"arguments": "{\"city\":"}}]}),
            Value::Null,
        ));
        out.push(chunk(
            json!({"tool_calls": [{"index": i, "function": {"arguments": "\"Paris\"}"}}]}),
            Value::Null,
        ));
    }
    out.push(chunk(json!({}), json!("tool_calls")));
    if usage {
        out.push(json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
            "choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 9, "total_tokens": 39}}).to_string());
    }
    out
}

pub fn completion(model: &str, text: &str) -> Value {
    completion_n(model, text, 1)
}

/// The text of choice `i` of `n`: choice i says one more word than choice i - 1, so the
/// choices of a stream end at different chunks.
pub fn nth_text(text: &str, i: usize) -> String {
    format!("{text}{}", " more".repeat(i))
}

fn completion_n(model: &str, text: &str, n: usize) -> Value {
    let choices: Vec<Value> = (0..n)
        .map(|i| json!({"index": i, "message": {"role": "assistant", "content": nth_text(text, i), "refusal": null}, "logprobs": null, "finish_reason": "stop"}))
        .collect();
    json!({
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "choices": choices,
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    })
}

/// The chunks OpenAI sends for `text`, one per word, with the usage chunk when asked for.
pub fn chunks(model: &str, text: &str, usage: bool) -> Vec<String> {
    chunks_n(model, text, usage, 1)
}

/// As OpenAI streams `n` choices: each chunk carries one choice's delta, by its `index`.
fn chunks_n(model: &str, text: &str, usage: bool, n: usize) -> Vec<String> {
    let chunk = |i: usize, delta: Value, finish: Value| {
        json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
               "choices": [{"index": i, "delta": delta, "logprobs": null, "finish_reason": finish}], "usage": null})
        .to_string()
    };
    let mut out: Vec<String> = (0..n)
        .map(|i| chunk(i, json!({"role": "assistant", "content": ""}), Value::Null))
        .collect();
    let texts: Vec<String> = (0..n).map(|i| nth_text(text, i)).collect();
    let words: Vec<Vec<&str>> = texts
        .iter()
        .map(|t| t.split_inclusive(' ').collect())
        .collect();
    let longest = words.iter().map(Vec::len).max().unwrap_or(0);
    for at in 0..longest {
        for (i, w) in words.iter().enumerate() {
            if let Some(word) = w.get(at) {
                out.push(chunk(i, json!({"content": word}), Value::Null));
            }
            if at + 1 == w.len() {
                out.push(chunk(i, json!({}), json!("stop")));
            }
        }
    }
    if usage {
        out.push(
            json!({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                   "choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}})
            .to_string(),
        );
    }
    out
}

pub(crate) fn sse(events: Vec<String>, delay: Duration, done: bool) -> Response<FakeBody> {
    let stream = async_stream(events, delay, done);
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    r
}

fn async_stream(
    events: Vec<String>,
    delay: Duration,
    done: bool,
) -> impl futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send {
    // Events given whole (`event: …\ndata: …`, as Anthropic names them) go as they are.
    let mut frames: Vec<String> = events
        .into_iter()
        .map(|e| {
            if e.starts_with("event:") {
                format!("{e}\n\n")
            } else {
                format!("data: {e}\n\n")
            }
        })
        .collect();
    if done {
        frames.push("data: [DONE]\n\n".into());
    }
    futures_util::stream::unfold(frames.into_iter(), move |mut it| async move {
        let next = it.next()?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Some((Ok(Frame::data(Bytes::from(next))), it))
    })
}

// === The gateway ===

static DIRS: AtomicUsize = AtomicUsize::new(0);

/// A fresh temporary directory, removed with what it holds when dropped.
pub fn temp_dir() -> TempDir {
    let dir = std::env::temp_dir().join(format!(
        "modelgate-test-{}-{}",
        std::process::id(),
        DIRS.fetch_add(1, Ordering::Relaxed)
    ));
    // A process of the same id (ids are reused) may have left one behind, with its files.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// A directory of [`temp_dir`]'s.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A gateway running in this process.
pub struct Gateway {
    pub running: Running,
    pub config_path: PathBuf,
    pub base: String,
    pub admin: String,
    /// Holds the configuration; removed when the gateway is dropped.
    _dir: TempDir,
}

impl Gateway {
    /// Starts a gateway on loopback port 0 with `yaml` as its entry file. `CANARY` in the
    /// environment holds the canary key.
    pub async fn start(yaml: &str) -> Gateway {
        let dir = temp_dir();
        let path = dir.join("modelgate.yaml");
        std::fs::write(&path, yaml).unwrap();
        let env: HashMap<String, String> = [("CANARY".to_owned(), CANARY_KEY.to_owned())].into();
        let running = modelgate::server::start_with_env(
            Origin::File(path.clone()),
            Overrides {
                listen: Some("127.0.0.1:0".parse().unwrap()),
                admin_listen: Some("127.0.0.1:0".parse().unwrap()),
                ..Overrides::default()
            },
            Box::new(env),
        )
        .await
        .unwrap();
        Gateway {
            base: format!("http://{}", running.api_addr),
            admin: format!("http://{}", running.admin_addr),
            running,
            config_path: path,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn metrics(&self) -> String {
        client()
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// A client program the test drives, named by the environment variable `var` (`.ci/run` sets it
/// and `MODELGATE_REQUIRE_<what>=1`); without it the test says so and is skipped, unless required.
#[expect(clippy::print_stderr, reason = "a skipped test says why")]
pub fn program_from_env(var: &str, what: &str, hint: &str) -> Option<String> {
    if let Ok(p) = std::env::var(var) {
        return Some(p);
    }
    assert!(
        std::env::var(format!("MODELGATE_REQUIRE_{what}")).as_deref() != Ok("1"),
        "{var} is not set"
    );
    eprintln!("skipped: set {var} to {hint}");
    None
}

/// A plain HTTP client for tests.
pub fn client() -> reqwest::Client {
    modelgate::upstream::client::install_crypto();
    #[expect(clippy::disallowed_methods, reason = "tests build their own client")]
    let c = reqwest::Client::builder().no_proxy().build().unwrap();
    c
}

/// A deployment entry of an OpenAI-compatible fake.
pub fn deployment(name: &str, model: &str, fake: &FakeUpstream) -> String {
    format!(
        "  - {{name: {name}, kind: openai-compatible, model: {model}, upstream_model: up-{model}, base_url: '{}', api_key_env: CANARY}}\n",
        fake.base_url()
    )
}

/// Posts a chat request and returns status, headers and body.
pub async fn chat(gw: &Gateway, body: Value) -> (StatusCode, HeaderMap, Value) {
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, v)
}

/// Reads a whole SSE response: the `data:` payloads in order.
pub async fn sse_events(r: reqwest::Response) -> Vec<String> {
    let text = r.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

/// Asserts an OpenAI error body and returns its `error` object.
pub fn assert_openai_error(v: &Value) -> &Value {
    let e = v
        .get("error")
        .unwrap_or_else(|| panic!("not an OpenAI error: {v}"));
    for f in ["message", "type", "param", "code"] {
        assert!(e.get(f).is_some(), "error has no '{f}': {v}");
    }
    assert!(e["message"].is_string() && e["type"].is_string(), "{v}");
    e
}

/// The value of a metric sample, 0 when absent.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            let rest = &l[name.len()..];
            (rest.starts_with('{') || rest.starts_with(' '))
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
