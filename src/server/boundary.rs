//! ① The way out: every request of the API listener passes here when it ends, whether it was
//! answered, refused before the pipeline (401, 413), shed, unrouted (404, 405), or dropped
//! because its client left or a bug panicked. Here, and only here, it is counted in
//! `modelgate_requests_total`, taken off `modelgate_in_flight_requests`, and logged if the
//! pipeline has not logged it already: exactly once, by a guard that also runs on drop.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};

use crate::error::GatewayError;
use crate::metrics::{Metrics, status_class};
use crate::server::request_id::X_REQUEST_ID;
use crate::stream::body::ResponseBody;

/// What the routes tell the boundary about a response, as a response extension.
#[derive(Clone, Debug)]
pub(crate) struct Exit {
    pub(crate) endpoint: &'static str,
    pub(crate) policy: Option<Arc<str>>,
    /// The pipeline wrote the request's line (or will, when its stream ends).
    pub(crate) logged: bool,
}

#[derive(Clone)]
pub(crate) struct BoundaryLayer {
    metrics: Arc<Metrics>,
}

impl BoundaryLayer {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        BoundaryLayer { metrics }
    }
}

impl<S> Layer<S> for BoundaryLayer {
    type Service = Boundary<S>;
    fn layer(&self, inner: S) -> Boundary<S> {
        Boundary {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Boundary<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<Request<B>> for Boundary<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<ResponseBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let mut guard = Guard::new(self.metrics.clone(), &req);
        // Before anything else (a key, a body, an admission slot): a request back at the
        // gateway it passed through is answered at once.
        if crate::hop::is_loop(req.headers()) {
            let res = GatewayError::Loop.into_response();
            guard.answered(&res);
            return Box::pin(std::future::ready(Ok(res)));
        }
        let arrived = req.headers().get(&crate::hop::HOPS).cloned();
        let fut = crate::hop::carried(arrived, self.inner.call(req));
        Box::pin(async move {
            let res = fut.await;
            if let Ok(r) = &res {
                guard.answered(r);
            }
            res
        })
    }
}

/// One request on its way out. Dropped without an answer, it counts as cancelled (or, while
/// a panic unwinds, as the 500 the panic guard outside answers).
struct Guard {
    metrics: Arc<Metrics>,
    started: Instant,
    request_id: HeaderValue,
    method: http::Method,
    /// The request's URI (a shared handle on the bytes hyper read, not a copy).
    uri: http::Uri,
    done: bool,
}

impl Guard {
    fn new<B>(metrics: Arc<Metrics>, req: &Request<B>) -> Guard {
        metrics.in_flight.inc();
        Guard {
            metrics,
            started: Instant::now(),
            request_id: req
                .headers()
                .get(&X_REQUEST_ID)
                .cloned()
                .unwrap_or(HeaderValue::from_static("-")),
            method: req.method().clone(),
            uri: req.uri().clone(),
            done: false,
        }
    }

    fn answered<R>(&mut self, r: &Response<R>) {
        let exit = r.extensions().get::<Exit>();
        let endpoint =
            exit.map_or_else(|| super::app::endpoint_of(self.uri.path()), |e| e.endpoint);
        let policy = exit.and_then(|e| e.policy.as_deref()).unwrap_or("none");
        let class = status_class(r.status());
        self.finish(endpoint, class, policy);
        if !exit.is_some_and(|e| e.logged) {
            let error = if r.status().is_success() {
                "-"
            } else {
                r.status().canonical_reason().unwrap_or("error")
            };
            if tracing::enabled!(tracing::Level::INFO)
                && let Some(mut line) = crate::telemetry::info_line("request answered")
            {
                line.str("request_id", self.request_id.to_str().unwrap_or("-"))
                    .str("method", self.method.as_str())
                    .str("path", &crate::base::printable(self.uri.path()))
                    .str("endpoint", endpoint)
                    .u64("status", r.status().as_u16().into())
                    .str("error", error)
                    .u64("duration_ms", self.started.elapsed().as_millis() as u64);
            }
        }
    }

    fn finish(&mut self, endpoint: &str, class: &str, policy: &str) {
        self.done = true;
        self.metrics.in_flight.dec();
        self.metrics
            .requests
            .with_label_values(&[endpoint, class, policy])
            .inc();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let endpoint = super::app::endpoint_of(self.uri.path());
        let (class, what) = if std::thread::panicking() {
            ("5xx", "request failed: the gateway panicked")
        } else {
            ("cancelled", "request cancelled: the client went away")
        };
        self.finish(endpoint, class, "none");
        if tracing::enabled!(tracing::Level::INFO)
            && let Some(mut line) = crate::telemetry::info_line(what)
        {
            line.str("request_id", self.request_id.to_str().unwrap_or("-"))
                .str("method", self.method.as_str())
                .str("path", &crate::base::printable(self.uri.path()))
                .str("endpoint", endpoint)
                .u64("duration_ms", self.started.elapsed().as_millis() as u64);
        }
    }
}
