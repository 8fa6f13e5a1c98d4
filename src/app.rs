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

use crate::auth::{AuthLayer, Authed};
use crate::config::Live;
use crate::error::{GatewayError, panic_response};
use crate::exchange::RequestError;
use crate::pipeline::{self, Ctx, Outcome};
use crate::server::boundary::{BoundaryLayer, Exit};
use crate::server::request_id::RequestIdLayer;
use crate::stream::body::ResponseBody;

/// The body of every API response, after the panic guard has boxed it.
pub type ApiBody = tower_http::body::UnsyncBoxBody<Bytes, tower_http::BoxError>;

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
pub fn api_service<B>(
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

/// The route table of the API listener.
#[derive(Clone)]
pub struct Routes {
    ctx: Arc<Ctx>,
}

const CHAT: &str = "/v1/chat/completions";
const MESSAGES: &str = "/v1/messages";
const COUNT_TOKENS: &str = "/v1/messages/count_tokens";
const EMBEDDINGS: &str = "/v1/embeddings";
const MODELS: &str = "/v1/models";
const USAGE: &str = "/v1/usage";

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
            let endpoint = endpoint_of(authed.request.uri().path());
            // Shed rather than queue: a queue in front of model calls only adds latency to
            // requests that will time out anyway. Listing models costs nothing and is not shed.
            let permit = if authed.request.method() == Method::POST {
                match ctx.admission.clone().try_acquire_owned() {
                    Ok(p) => Some(p),
                    Err(_) => {
                        ctx.metrics.shed.inc();
                        let mut res = GatewayError::Overloaded.into_response();
                        res.extensions_mut().insert(Exit {
                            endpoint,
                            policy: None,
                            logged: false,
                        });
                        return Ok(res);
                    }
                }
            } else {
                None
            };
            let method = authed.request.method().clone();
            let (allowed, allow) = match endpoint {
                "chat_completions" | "messages" | "count_tokens" | "embeddings" => {
                    (Method::POST, "POST")
                }
                _ => (Method::GET, "GET"),
            };
            let outcome = if endpoint == "unknown" {
                GatewayError::NotFound(authed.request.uri().path().to_owned()).into()
            } else if method != allowed {
                method_not_allowed(allow)
            } else {
                match endpoint {
                    "chat_completions" => pipeline::chat_completions(&ctx, authed).await,
                    "messages" => pipeline::messages(&ctx, authed).await,
                    "count_tokens" => pipeline::count_tokens(&ctx, authed).await,
                    "embeddings" => pipeline::embeddings(&ctx, authed).await,
                    "usage" => match usage_scope(&authed) {
                        Ok((limiter, tenant)) => pipeline::usage(limiter, tenant).await,
                        Err(refused) => refused,
                    },
                    "models" => pipeline::list_models(&authed),
                    _ => {
                        let id = percent_decode(
                            authed
                                .request
                                .uri()
                                .path()
                                .strip_prefix("/v1/models/")
                                .unwrap_or_default(),
                        );
                        pipeline::get_model(&authed, &id)
                    }
                }
            };
            // The pipeline writes the line of every chat, message and embeddings request it
            // ran (answered or failed); the boundary writes the others'.
            let logged = method == allowed
                && matches!(endpoint, "chat_completions" | "messages" | "embeddings");
            let mut response = outcome.response;
            response.extensions_mut().insert(Exit {
                endpoint,
                policy: outcome.policy,
                logged,
            });
            if let (Some(p), ResponseBody::Relay(relay)) = (permit, response.body_mut()) {
                relay.hold(Box::new(p));
            }
            Ok(response)
        })
    }
}

/// The endpoint label of a path: the route it takes, `unknown` for none.
pub fn endpoint_of(path: &str) -> &'static str {
    match path {
        CHAT => "chat_completions",
        MESSAGES => "messages",
        COUNT_TOKENS => "count_tokens",
        EMBEDDINGS => "embeddings",
        USAGE => "usage",
        MODELS | "/v1/models/" => "models",
        p if p.starts_with("/v1/models/") => "model",
        _ => "unknown",
    }
}

/// `GET /v1/usage`: a key reads its own tenant's usage; every tenant's is on the admin listener.
#[expect(clippy::result_large_err, reason = "the refusal is the answer itself")]
fn usage_scope<B>(authed: &Authed<B>) -> Result<(Arc<crate::limits::Limiter>, Arc<str>), Outcome> {
    let asked = authed
        .request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("tenant=")));
    if asked.is_some_and(|t| t != &*authed.caller.tenant) {
        return Err(GatewayError::Forbidden(
            "a key may read its own tenant's usage only; every tenant's is on the admin listener",
        )
        .into());
    }
    Ok((
        authed.snapshot.limiter.clone(),
        authed.caller.tenant.clone(),
    ))
}

fn method_not_allowed(allow: &'static str) -> Outcome {
    GatewayError::MethodNotAllowed { allow }.into()
}

/// Decodes `%XX` escapes of a path segment (model ids such as `llama3.2:3b` arrive escaped).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// === impl BodyLimitLayer ===

/// Refuses a body whose declared length is over the limit before a byte of it is read (413).
/// Bodies without a length are capped while they are read.
#[derive(Clone)]
pub struct BodyLimitLayer {
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
pub struct BodyLimit<S> {
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
    use super::percent_decode;

    #[test]
    fn decodes_escapes() {
        assert_eq!(percent_decode("llama3.2%3A3b"), "llama3.2:3b");
        assert_eq!(percent_decode("a%2Fb"), "a/b");
        assert_eq!(percent_decode("bad%zz%4"), "bad%zz%4");
        assert_eq!(percent_decode("plain"), "plain");
    }
}
