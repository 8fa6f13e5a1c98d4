//! ① The admin listener: `/metrics` for Prometheus, `/healthz` (alive), `/readyz` (ready
//! for traffic: configuration loaded and not shutting down) and `/v1/usage` (every tenant's
//! usage, or one's with `?tenant=`). No client API here.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::ready;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use tower::Service;

use super::Health;
use crate::metrics::Metrics;
use crate::server::reload::State;

#[derive(Clone)]
pub(crate) struct AdminService {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    state: Arc<State>,
}

impl AdminService {
    pub(crate) fn new(metrics: Arc<Metrics>, health: Arc<Health>, state: Arc<State>) -> Self {
        AdminService {
            metrics,
            health,
            state,
        }
    }

    fn respond(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        }
        match path {
            "/metrics" => {
                let current = self.state.live.load();
                self.metrics
                    .set_circuits(&current.deployments, &current.health);
                let mut res = Response::new(Full::new(Bytes::from(self.metrics.render())));
                res.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                res
            }
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/readyz" => {
                if self.health.is_ready() {
                    let hash = self.state.live.load().config.hash.clone();
                    text(StatusCode::OK, &format!("ready {hash}\n"))
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
                }
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: /metrics, /healthz, /readyz\n",
            ),
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    res
}

impl<B> Service<Request<B>> for AdminService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if req.uri().path() == "/v1/usage" && req.method() == Method::GET {
            let limiter = self.state.live.load().limiter.clone();
            let tenant = req.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("tenant="))
                    .map(str::to_owned)
            });
            return Box::pin(async move {
                let res = match limiter.usage(tenant.as_deref()).await {
                    Ok(report) => {
                        let mut res = Response::new(Full::new(report.to_json()));
                        res.headers_mut().insert(
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        );
                        res
                    }
                    Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{e}\n")),
                };
                Ok(res)
            });
        }
        Box::pin(ready(Ok(self.respond(req.method(), req.uri().path()))))
    }
}
