//! The wiring: the one tower stack of the API listener, in order, and the route table.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, header};
use tower::{Layer, Service, ServiceBuilder};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

use super::boundary::{BoundaryLayer, Exit};
use super::request_id::RequestIdLayer;
use crate::auth::{AuthLayer, Authed};
use crate::error::{GatewayError, panic_response};
use crate::exchange::RequestError;
use crate::live::Live;
use crate::pipeline::{self, Ctx, Outcome};
use crate::stream::body::ResponseBody;

/// The body of every API response, after the panic guard has boxed it.
pub(crate) type ApiBody = tower_http::body::UnsyncBoxBody<Bytes, tower_http::BoxError>;

/// Headers whose values never reach logs or traces.
fn sensitive_headers() -> [header::HeaderName; 5] {
    [
        header::AUTHORIZATION,
        header::PROXY_AUTHORIZATION,
        header::COOKIE,
        header::HeaderName::from_static("x-api-key"),
        header::HeaderName::from_static("x-goog-api-key"),
    ]
}

/// The API service: the cross-cutting layers, outermost first, then the routes.
pub(crate) fn api_service<B>(
    live: Live,
    ctx: Arc<Ctx>,
) -> impl Service<Request<B>, Response = Response<ApiBody>, Error = Infallible, Future: Send>
+ Clone
+ Send
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let metrics = ctx.metrics.clone();
    ServiceBuilder::new()
        // Never drop a connection on a bug: a panic becomes a 500 in OpenAI's format.
        .layer(CatchPanicLayer::custom(move |p| {
            metrics.panics.inc();
            panic_response(p)
        }))
        // Before anything can log a header.
        .layer(SetSensitiveRequestHeadersLayer::new(sensitive_headers()))
        // The request id, and (at debug level) the span every line of the request is in.
        .layer(RequestIdLayer)
        // Counts, logs and takes off the in-flight gauge every request, however it ends.
        .layer(BoundaryLayer::new(ctx.metrics.clone()))
        .layer(BodyLimitLayer { live: live.clone() })
        .layer(AuthLayer::new(live))
        .service(Routes { ctx })
}

// === impl Routes ===

/// The route table of the API listener, and the requests in flight it admits.
#[derive(Clone)]
pub(crate) struct Routes {
    ctx: Arc<Ctx>,
}

/// What a path reaches.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    ChatCompletions,
    Responses,
    Response,
    Messages,
    CountTokens,
    Embeddings,
    Usage,
    Models,
    Model,
}

/// Path, endpoint: exact paths first, then prefixes (`*`).
const ROUTES: &[(&str, Endpoint)] = &[
    ("/v1/chat/completions", Endpoint::ChatCompletions),
    ("/v1/responses", Endpoint::Responses),
    ("/v1/responses/*", Endpoint::Response),
    ("/v1/messages", Endpoint::Messages),
    ("/v1/messages/count_tokens", Endpoint::CountTokens),
    ("/v1/embeddings", Endpoint::Embeddings),
    ("/v1/usage", Endpoint::Usage),
    ("/v1/models", Endpoint::Models),
    ("/v1/models/", Endpoint::Models),
    ("/v1/models/*", Endpoint::Model),
];

impl Endpoint {
    fn of(path: &str) -> Option<Endpoint> {
        ROUTES
            .iter()
            .find_map(|&(route, e)| match route.strip_suffix('*') {
                Some(prefix) => path.starts_with(prefix).then_some(e),
                None => (path == route).then_some(e),
            })
    }

    /// Its label in metrics and logs.
    fn label(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Responses => "responses",
            Endpoint::Response => "response",
            Endpoint::Messages => "messages",
            Endpoint::CountTokens => "count_tokens",
            Endpoint::Embeddings => "embeddings",
            Endpoint::Usage => "usage",
            Endpoint::Models => "models",
            Endpoint::Model => "model",
        }
    }

    /// The methods it answers (for `Allow`): model requests are posted, the rest read, and
    /// a stored response can be deleted.
    fn allow(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions
            | Endpoint::Responses
            | Endpoint::Messages
            | Endpoint::CountTokens
            | Endpoint::Embeddings => "POST",
            Endpoint::Response => "GET, DELETE",
            Endpoint::Usage | Endpoint::Models | Endpoint::Model => "GET",
        }
    }

    fn allows(self, method: &Method) -> bool {
        self.allow().split(", ").any(|m| m == method.as_str())
    }
}

/// The endpoint label of a path: the route it takes, `unknown` for none.
pub(crate) fn endpoint_of(path: &str) -> &'static str {
    Endpoint::of(path).map_or("unknown", Endpoint::label)
}

impl<B> Service<Authed<B>> for Routes
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, authed: Authed<B>) -> Self::Future {
        let ctx = self.ctx.clone();
        Box::pin(async move {
            let route = Endpoint::of(authed.request.uri().path());
            let endpoint = route.map_or("unknown", Endpoint::label);
            // Shed rather than queue: a queue in front of model calls only adds latency to
            // requests that will time out anyway. Listing models costs nothing and is not shed.
            let permit = if authed.request.method() == Method::POST {
                match ctx.admission.clone().try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => {
                        ctx.metrics.shed.inc();
                        return Ok(exit(GatewayError::Overloaded.into(), endpoint));
                    }
                }
            } else {
                None
            };
            let outcome = match route {
                None => GatewayError::NotFound(authed.request.uri().path().to_owned()).into(),
                Some(e) if !e.allows(authed.request.method()) => {
                    GatewayError::MethodNotAllowed { allow: e.allow() }.into()
                }
                // Each endpoint's future in a box of its own size: awaited inline, every
                // request would move (and its box hold) the largest endpoint's, ~6 KiB.
                Some(Endpoint::ChatCompletions) => {
                    Box::pin(pipeline::chat_completions(&ctx, authed)).await
                }
                Some(Endpoint::Responses) => {
                    Box::pin(pipeline::responses::create(&ctx, authed)).await
                }
                Some(Endpoint::Response) => {
                    Box::pin(pipeline::responses::stored(&ctx, authed)).await
                }
                Some(Endpoint::Messages) => Box::pin(pipeline::messages(&ctx, authed)).await,
                Some(Endpoint::CountTokens) => Box::pin(pipeline::count_tokens(&ctx, authed)).await,
                Some(Endpoint::Embeddings) => Box::pin(pipeline::embeddings(&ctx, authed)).await,
                Some(Endpoint::Usage) => Box::pin(pipeline::usage(authed)).await,
                Some(Endpoint::Models | Endpoint::Model) => pipeline::models(&authed),
            };
            let mut response = exit(outcome, endpoint);
            if let (Some(p), ResponseBody::Relay(relay)) = (permit, response.body_mut()) {
                // A started stream is mostly an idle connection: it leaves the slots of requests
                // still being decided for them, and counts among open streams instead. With
                // none of those free it keeps its request slot (refusing it now would waste the
                // answer under way).
                match ctx.streams.clone().try_acquire_owned() {
                    Ok(stream) => relay.hold(Box::new(stream)),
                    Err(_) => relay.hold(Box::new(p)),
                }
            }
            Ok(response)
        })
    }
}

/// The response of an outcome, marked for the boundary with its endpoint, its policy and
/// whether its line is written.
fn exit(outcome: Outcome, endpoint: &'static str) -> Response<ResponseBody> {
    let mut response = outcome.response;
    response.extensions_mut().insert(Exit {
        endpoint,
        policy: outcome.policy,
        logged: outcome.logged,
    });
    response
}

// === impl BodyLimitLayer ===

/// Refuses a body whose declared length is over the limit before a byte of it is read (413).
/// Bodies without a length are capped while they are read.
#[derive(Clone)]
pub(crate) struct BodyLimitLayer {
    live: Live,
}

impl<S> Layer<S> for BodyLimitLayer {
    type Service = BodyLimit<S>;
    fn layer(&self, inner: S) -> BodyLimit<S> {
        BodyLimit {
            inner,
            live: self.live.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct BodyLimit<S> {
    inner: S,
    live: Live,
}

impl<S, B> Service<Request<B>> for BodyLimit<S>
where
    S: Service<Request<B>, Response = Response<ResponseBody>, Error = Infallible>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = futures_util::future::Either<
        futures_util::future::Ready<Result<Response<ResponseBody>, Infallible>>,
        S::Future,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let limit = self.live.load().config.limits.max_body_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            let res = GatewayError::from(RequestError::TooLarge { limit }).into_response();
            return futures_util::future::Either::Left(futures_util::future::ready(Ok(res)));
        }
        futures_util::future::Either::Right(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::endpoint_of;

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
}
