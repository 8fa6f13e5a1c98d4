//! The API listener's service: everything a request passes through, in order, then the route
//! table. One service rather than a stack of tower layers: the steps do not compose apart
//! (each needs what an earlier one found: the snapshot, the caller, the route), and each layer
//! cost a boxed future and a move of the response on every request.

use std::convert::Infallible;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, header};
use tokio::sync::OwnedSemaphorePermit;

use super::boundary::{Exit, Guard};
use super::request_id::{self, X_REQUEST_ID};
use crate::auth::{Authed, authenticate};
use crate::base::pinned;
use crate::error::{GatewayError, panic_response};
use crate::exchange::RequestError;
use crate::pipeline::{self, Ctx, Outcome};
use crate::stream::body::ResponseBody;

/// Whether a header's values must never reach logs or traces (the `Debug` of a value marked
/// sensitive prints `Sensitive`).
fn sensitive(name: &header::HeaderName) -> bool {
    name == header::AUTHORIZATION
        || name == header::PROXY_AUTHORIZATION
        || name == header::COOKIE
        || name == crate::exchange::headers::X_API_KEY
        || name.as_str() == "x-goog-api-key"
}

/// Marks the values of [`sensitive`] headers, every value of each: one pass over the few
/// headers a request has, rather than a lookup per name.
fn mark_sensitive(headers: &mut HeaderMap) {
    for (name, value) in headers.iter_mut() {
        if sensitive(name) {
            value.set_sensitive(true);
        }
    }
}

/// The API listener's service.
#[derive(Clone)]
pub(crate) struct Api {
    ctx: Arc<Ctx>,
}

impl Api {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Api {
        Api { ctx }
    }
}

impl<B> hyper::service::Service<Request<B>> for Api
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Served;

    /// Everything up to the endpoint's own work is done here, at once; what is left to wait
    /// for is one boxed future (the endpoint's) in [`Served`]. A panic anywhere, here or in a
    /// later poll, is answered with a 500 in OpenAI's format rather than a dropped connection.
    fn call(&self, mut request: Request<B>) -> Served {
        // Before anything can log a header.
        mark_sensitive(request.headers_mut());
        let id = request_id::ensure(&mut request);
        // A span costs nothing unless debug lines are on: its fields are not even formatted.
        let span = tracing::debug_span!(
            "request",
            method = %request.method(),
            path = %crate::base::printable(request.uri().path()),
            request_id = id.to_str().unwrap_or("-"),
        );
        let started = {
            let _in = span.enter();
            catch_unwind(AssertUnwindSafe(|| start(&self.ctx, request, id.clone())))
        };
        match started {
            Ok(Started::Answered(response)) => Served::answered(response, id),
            Ok(Started::Waiting(waiting)) => Served {
                state: State::Waiting(waiting),
                span,
            },
            Err(panic) => Served::answered(panicked(&self.ctx, panic), id),
        }
    }
}

/// A caught panic's response, counted.
fn panicked(ctx: &Ctx, panic: Box<dyn std::any::Any + Send>) -> Response<ResponseBody> {
    ctx.metrics.panics.inc();
    panic_response(panic)
}

/// What [`start`] leaves: an answer already, or an endpoint's work to wait for.
enum Started {
    Answered(Response<ResponseBody>),
    Waiting(Waiting),
}

/// The response future of the API service, written out rather than an `async` block: that
/// would hold the request and each part made from it twice (as an argument and as the local
/// it is moved to), and allocate per request what hyper keeps per connection here.
pub(crate) struct Served {
    state: State,
    /// The request's span, entered on every poll.
    span: tracing::Span,
}

enum State {
    Answered(Option<Response<ResponseBody>>),
    Waiting(Waiting),
}

/// An admitted request while its endpoint works.
struct Waiting {
    /// First, so that it is dropped (its own accounting of a client gone) before the guard.
    work: Pin<Box<dyn Future<Output = Outcome> + Send>>,
    ctx: Arc<Ctx>,
    /// Counts and logs the request when it is answered, or dropped (its client gone); a
    /// stream's goes with it.
    guard: Option<Guard>,
    /// The request's id, for its response's header.
    id: HeaderValue,
    arrived: Option<HeaderValue>,
    endpoint: &'static str,
    /// Its admission slot, given to its stream if the answer is one.
    permit: Option<OwnedSemaphorePermit>,
}

impl Served {
    fn answered(mut response: Response<ResponseBody>, id: HeaderValue) -> Served {
        let _ = response.headers_mut().try_insert(X_REQUEST_ID.clone(), id);
        Served {
            state: State::Answered(Some(response)),
            span: tracing::Span::none(),
        }
    }
}

impl Future for Served {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every part is `Unpin` (the endpoint's future is boxed).
        let this = self.get_mut();
        let w = match &mut this.state {
            State::Answered(response) => {
                let Some(r) = response.take() else {
                    return Poll::Ready(Ok(
                        GatewayError::Internal("polled again".into()).into_response()
                    ));
                };
                return Poll::Ready(Ok(r));
            }
            State::Waiting(w) => w,
        };
        let _in = this.span.enter();
        // The answer is counted inside the catch too: a panic anywhere in a request is a 500.
        let polled = catch_unwind(AssertUnwindSafe(|| {
            match crate::hop::carried(&w.arrived, || w.work.as_mut().poll(cx)) {
                Poll::Pending => None,
                Poll::Ready(outcome) => Some(w.finish(outcome)),
            }
        }));
        let mut response = match polled {
            Ok(None) => return Poll::Pending,
            Ok(Some(response)) => response,
            Err(panic) => {
                if let Some(guard) = &mut w.guard {
                    guard.panicked();
                }
                panicked(&w.ctx, panic)
            }
        };
        let id = w.id.clone();
        // Done: the endpoint's future, finished or poisoned, is never polled again, and what
        // it held goes now rather than with the connection's next request.
        this.state = State::Answered(None);
        let _ = response.headers_mut().try_insert(X_REQUEST_ID.clone(), id);
        Poll::Ready(Ok(response))
    }
}

impl Drop for Served {
    /// A request dropped mid-work (its client gone) is torn down inside its span, as its polls
    /// ran.
    fn drop(&mut self) {
        let _in = self.span.enter();
        self.state = State::Answered(None);
    }
}

impl Waiting {
    /// The endpoint's answer, counted; a started stream moved from the request slots to the
    /// stream slots. A stream's are done after its first bytes are written (see
    /// [`Relay::later`](crate::upstream::relay::Relay::later)).
    fn finish(&mut self, outcome: Outcome) -> Response<ResponseBody> {
        let mut exit = Exit::of(outcome, self.endpoint);
        let status = exit.response.status();
        if let ResponseBody::Relay(relay) = exit.response.body_mut()
            && let Some(mut guard) = self.guard.take()
        {
            let (endpoint, policy, logged) = (exit.endpoint, exit.policy.take(), exit.logged);
            // A started stream is mostly an idle connection: it leaves the slots of requests
            // still being decided for them, and counts among open streams instead. With none of
            // those free it keeps its request slot (refusing it now would waste the answer
            // under way).
            let streams = self.permit.take().map(|p| {
                relay.hold(p);
                self.ctx.streams.clone()
            });
            relay.later(move |relay| {
                if let Some(Ok(stream)) = streams.map(|s| s.try_acquire_owned()) {
                    relay.hold(stream);
                }
                guard.counted(status, endpoint, policy.as_deref(), logged);
            });
            return exit.response;
        }
        if let Some(guard) = &mut self.guard {
            guard.answered(&exit);
        }
        exit.response
    }
}

/// A request up to its endpoint: counted in by its guard; refused at once if it has looped
/// back through this gateway, fails [`admit`] or finds no admission slot (POSTs only);
/// answered at once if its route is unknown, its method not allowed, or its answer needs no
/// waiting; else its endpoint's work, to wait for.
fn start<B>(ctx: &Arc<Ctx>, request: Request<B>, id: HeaderValue) -> Started
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut guard = Guard::new(ctx.metrics.clone(), &request, id);
    let route = Endpoint::of(request.uri().path());
    let endpoint = route.map_or("unknown", Endpoint::label);
    let mut answer = |outcome: Outcome| {
        let exit = Exit::of(outcome, endpoint);
        guard.answered(&exit);
        Started::Answered(exit.response)
    };
    // Before anything else (a key, a body, an admission slot).
    if crate::hop::is_loop(request.headers()) {
        return answer(GatewayError::Loop.into());
    }
    let arrived = request.headers().get(&crate::hop::HOPS).cloned();
    let authed = match admit(ctx, request) {
        Ok(authed) => authed,
        Err(e) => return answer(e.into()),
    };
    // Shed rather than queue: a queue in front of model calls only adds latency to requests
    // that will time out anyway. Listing models costs nothing and is not shed.
    let permit = if authed.request.method() == Method::POST {
        match ctx.admission.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                ctx.metrics.shed.inc();
                return answer(GatewayError::Overloaded.into());
            }
        }
    } else {
        None
    };
    let ctx = ctx.clone();
    // Each endpoint's future in a box of its own size, made in it (see `base::pinned`).
    let work: Pin<Box<dyn Future<Output = Outcome> + Send>> = match route {
        None => {
            let path = authed.request.uri().path().to_owned();
            return answer(GatewayError::NotFound(path).into());
        }
        Some(e) if !e.allows(authed.request.method()) => {
            return answer(GatewayError::MethodNotAllowed { allow: e.allow() }.into());
        }
        Some(Endpoint::Models | Endpoint::Model) => return answer(pipeline::models(&authed)),
        Some(Endpoint::ChatCompletions) => {
            pinned(|| pipeline::chat_completions(ctx.clone(), authed))
        }
        Some(Endpoint::Responses) => pinned(|| pipeline::responses::create(ctx.clone(), authed)),
        Some(Endpoint::Response) => pinned(|| pipeline::responses::stored(ctx.clone(), authed)),
        Some(Endpoint::Messages) => pinned(|| pipeline::messages(ctx.clone(), authed)),
        Some(Endpoint::CountTokens) => pinned(|| pipeline::count_tokens(ctx.clone(), authed)),
        Some(Endpoint::Embeddings) => pinned(|| pipeline::embeddings(ctx.clone(), authed)),
        Some(Endpoint::Usage) => pinned(|| pipeline::usage(authed)),
    };
    Started::Waiting(Waiting {
        work,
        ctx,
        id: guard.request_id().clone(),
        guard: Some(guard),
        arrived,
        endpoint,
        permit,
    })
}

/// Refuses a body whose declared length is over the limit before a byte of it is read (413;
/// bodies without a length are capped while they are read), then a request without a valid
/// key (401); else the caller, under the snapshot the request loads once.
fn admit<B>(ctx: &Ctx, request: Request<B>) -> Result<Authed<B>, GatewayError> {
    let current = ctx.live.load_full();
    let limit = current.config.limits.max_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(RequestError::TooLarge { limit }.into());
    }
    let caller = authenticate(request.headers(), &current)?;
    Ok(Authed {
        caller,
        current,
        request,
    })
}

// === the route table ===

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

    /// What `allow` lists, without searching its text on every request.
    fn allows(self, method: &Method) -> bool {
        match self {
            Endpoint::ChatCompletions
            | Endpoint::Responses
            | Endpoint::Messages
            | Endpoint::CountTokens
            | Endpoint::Embeddings => method == Method::POST,
            Endpoint::Response => method == Method::GET || method == Method::DELETE,
            Endpoint::Usage | Endpoint::Models | Endpoint::Model => method == Method::GET,
        }
    }
}

/// The endpoint label of a path: the route it takes, `unknown` for none.
pub(crate) fn endpoint_of(path: &str) -> &'static str {
    Endpoint::of(path).map_or("unknown", Endpoint::label)
}

#[cfg(test)]
mod tests;
