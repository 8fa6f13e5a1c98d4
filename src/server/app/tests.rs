//! The API service end to end in process: panics, drops and every response's id.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::Service as _;
use tokio::sync::Semaphore;

use super::*;
use crate::config::Origin;
use crate::config::load::Overrides;
use crate::metrics::Metrics;
use crate::server::reload::State as Loaded;

/// The embedded configuration's context, as `serve` makes it (no key needed on loopback).
fn ctx() -> Arc<Ctx> {
    let env = std::collections::HashMap::<String, String>::new();
    let loaded = crate::config::load::load(&Origin::Embedded, &Overrides::default(), &env)
        .expect("the embedded configuration loads");
    let metrics = Arc::new(Metrics::new().expect("metrics register"));
    let state = Loaded::new(
        loaded,
        Origin::Embedded,
        Overrides::default(),
        Box::new(env),
        metrics.clone(),
    );
    Arc::new(Ctx {
        metrics,
        live: state.live.clone(),
        drain_deadline: tokio::sync::watch::channel(false).1,
        admission: Arc::new(Semaphore::new(4)),
        streams: Arc::new(Semaphore::new(4)),
        pools: state.pools.clone(),
        conversations: crate::conversations::Conversations::new(&state.config().responses)
            .expect("the memory store"),
    })
}

fn counted(ctx: &Ctx, endpoint: &str, class: &str) -> u64 {
    ctx.metrics
        .requests
        .with_label_values(&[endpoint, class, "none"])
        .get()
}

fn post(path: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("content-type", "application/json")
        .header("x-request-id", "req-1")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("a request")
}

/// A request already admitted, whose endpoint's work is `work`.
fn waiting(ctx: &Arc<Ctx>, work: Pin<Box<dyn Future<Output = Outcome> + Send>>) -> Served {
    let req = post("/v1/chat/completions", "{}");
    Served {
        state: State::Waiting(Waiting {
            work,
            ctx: ctx.clone(),
            guard: Some(Guard::new(
                ctx.metrics.clone(),
                &req,
                HeaderValue::from_static("req-1"),
            )),
            id: HeaderValue::from_static("req-1"),
            arrived: None,
            endpoint: "chat_completions",
            permit: None,
        }),
        span: tracing::Span::none(),
    }
}

#[tokio::test]
async fn a_panicking_endpoint_is_a_500_with_its_id_counted_once() {
    let ctx = ctx();
    let served = waiting(&ctx, Box::pin(async { panic!("a bug") }));
    let res = served.await.expect("infallible");
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(res.headers()["x-request-id"], "req-1");
    let body = res.into_body().collect().await.expect("a body").to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).expect("OpenAI's error format");
    assert!(v["error"]["message"].is_string(), "{v}");
    assert!(!String::from_utf8_lossy(&body).contains("a bug"));
    assert_eq!(ctx.metrics.panics.get(), 1);
    assert_eq!(counted(&ctx, "chat_completions", "5xx"), 1);
    assert_eq!(ctx.metrics.in_flight.get(), 0);
}

#[tokio::test]
async fn a_request_dropped_while_its_endpoint_works_is_cancelled() {
    let ctx = ctx();
    let mut served = waiting(&ctx, Box::pin(std::future::pending()));
    let waker = futures_util::task::noop_waker();
    assert!(
        Pin::new(&mut served)
            .poll(&mut std::task::Context::from_waker(&waker))
            .is_pending()
    );
    assert_eq!(ctx.metrics.in_flight.get(), 1);
    drop(served);
    assert_eq!(counted(&ctx, "chat_completions", "cancelled"), 1);
    assert_eq!(ctx.metrics.in_flight.get(), 0);
    assert_eq!(ctx.metrics.panics.get(), 0);
}

#[tokio::test]
async fn every_response_carries_the_request_id_and_is_counted() {
    let ctx = ctx();
    let api = Api::new(ctx.clone());
    // Answered at once (no route), then by an endpoint (the built-in echo model).
    let res = api
        .call(post("/v2/nothing", "{}"))
        .await
        .expect("infallible");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(res.headers()["x-request-id"], "req-1");
    assert_eq!(counted(&ctx, "unknown", "4xx"), 1);
    let chat = r#"{"model":"echo","messages":[{"role":"user","content":"hi"}]}"#;
    let res = api
        .call(post("/v1/chat/completions", chat))
        .await
        .expect("infallible");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-request-id"], "req-1");
    // A client's malformed id is replaced by a fresh one, echoed all the same.
    let mut bad = post("/v1/models", "");
    *bad.method_mut() = http::Method::GET;
    bad.headers_mut()
        .insert("x-request-id", HeaderValue::from_static("a b"));
    let res = api.call(bad).await.expect("infallible");
    assert_eq!(res.status(), StatusCode::OK);
    let id = res.headers()["x-request-id"].to_str().expect("ascii");
    assert_eq!(id.len(), 32, "{id}");
    assert_eq!(ctx.metrics.in_flight.get(), 0);
}

#[test]
fn credentials_are_marked_sensitive_and_nothing_else() {
    let mut h = http::HeaderMap::new();
    for (name, value) in [
        ("authorization", "Bearer sk-1"),
        ("x-api-key", "k"),
        ("x-goog-api-key", "g"),
        ("proxy-authorization", "p"),
        ("content-type", "application/json"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    h.append("cookie", HeaderValue::from_static("a=1"));
    h.append("cookie", HeaderValue::from_static("b=2"));
    mark_sensitive(&mut h);
    for (name, value) in &h {
        assert_eq!(value.is_sensitive(), name != "content-type", "{name}");
    }
}

#[test]
fn paths_reach_their_endpoints() {
    for (path, label) in [
        ("/v1/chat/completions", "chat_completions"),
        ("/v1/messages", "messages"),
        ("/v1/messages/count_tokens", "count_tokens"),
        ("/v1/embeddings", "embeddings"),
        ("/v1/usage", "usage"),
        ("/v1/models", "models"),
        ("/v1/models/", "models"),
        ("/v1/models/llama3.2%3A3b", "model"),
        ("/v1/chat/completions/", "unknown"),
        ("/v2/models", "unknown"),
    ] {
        assert_eq!(endpoint_of(path), label, "{path}");
    }
}

/// `allows` answers from a match, `allow` is the `Allow` header's text: they must agree.
#[test]
fn an_endpoint_allows_exactly_the_methods_its_allow_header_lists() {
    use http::Method;
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
    ];
    for &(route, e) in ROUTES {
        for m in &methods {
            let listed = e.allow().split(", ").any(|x| x == m.as_str());
            assert_eq!(e.allows(m), listed, "{route} {m}");
        }
    }
}
