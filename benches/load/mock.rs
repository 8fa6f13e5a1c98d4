//! The mock upstream: an OpenAI-compatible chat endpoint that answers JSON or SSE after a
//! configurable delay, with a configurable number and spacing of chunks, and fails every Nth
//! request with a 500 when asked to (a deterministic fault rate).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;

#[derive(Clone, Copy, Debug)]
pub struct MockConfig {
    /// Before the JSON answer, or before the first chunk.
    pub delay: Duration,
    pub chunks: usize,
    pub chunk_gap: Duration,
    /// Every `fail_every`th request gets a 500 (0: never).
    pub fail_every: u64,
}

pub struct Mock {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
}

#[derive(Deserialize)]
struct Req {
    model: String,
    #[serde(default)]
    stream: bool,
}

type Body = BoxBody<Bytes, std::convert::Infallible>;

/// The text of chunk `i`; a whole stream of n chunks reads `w0 w1 … w(n-1) `.
pub fn word(i: usize) -> String {
    format!("w{i} ")
}

pub async fn start(cfg: MockConfig) -> Mock {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let (r, f) = (requests.clone(), failed.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (r, f) = (r.clone(), f.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let (r, f) = (r.clone(), f.clone());
                    async move { Ok::<_, std::convert::Infallible>(handle(req, cfg, &r, &f).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Mock {
        addr,
        requests,
        failed,
    }
}

fn json(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

async fn handle(
    req: Request<Incoming>,
    cfg: MockConfig,
    requests: &AtomicU64,
    failed: &AtomicU64,
) -> Response<Body> {
    let Ok(body) = req.into_body().collect().await else {
        return json(StatusCode::BAD_REQUEST, "{}".into());
    };
    let Ok(r) = serde_json::from_slice::<Req>(&body.to_bytes()) else {
        return json(
            StatusCode::BAD_REQUEST,
            r#"{"error":{"message":"bad json","type":"invalid_request_error","param":null,"code":null}}"#.into(),
        );
    };
    let n = requests.fetch_add(1, Ordering::Relaxed) + 1;
    if cfg.fail_every > 0 && n.is_multiple_of(cfg.fail_every) {
        failed.fetch_add(1, Ordering::Relaxed);
        return json(
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":{"message":"injected","type":"server_error","param":null,"code":null}}"#
                .into(),
        );
    }
    if !r.stream {
        if !cfg.delay.is_zero() {
            tokio::time::sleep(cfg.delay).await;
        }
        // Written with format! rather than a JSON value: the mock shares its core with the load
        // generator and must stay cheap. The model name was parsed from JSON, so it is safe to
        // put back through serde_json's string escaping.
        let model = serde_json::to_string(&r.model).unwrap_or_default();
        return json(
            StatusCode::OK,
            format!(
                r#"{{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":{model},"choices":[{{"index":0,"message":{{"role":"assistant","content":"Hello from the mock upstream.","refusal":null}},"logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}}}"#
            ),
        );
    }
    let model = r.model;
    let chunks = cfg.chunks;
    let frames = futures_util::stream::unfold(0usize, move |i| {
        let model = model.clone();
        async move {
            if i > chunks {
                return None;
            }
            let pause = if i == 0 { cfg.delay } else { cfg.chunk_gap };
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            let data = if i < chunks {
                let delta = if i == 0 {
                    serde_json::json!({"role": "assistant", "content": word(i)})
                } else {
                    serde_json::json!({"content": word(i)})
                };
                format!(
                    "data: {}\n\n",
                    serde_json::json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]})
                )
            } else {
                format!(
                    "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
                    serde_json::json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                        "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop"}]}),
                    serde_json::json!({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
                        "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks}})
                )
            };
            Some((Ok(Frame::data(Bytes::from(data))), i + 1))
        }
    });
    let mut res = Response::new(BodyExt::boxed(StreamBody::new(frames)));
    res.headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    res
}
