//! ① Request ids: keep a well-formed `x-request-id` from the client, replace anything else with
//! a fresh one, and echo it on the response, errors included.

use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, FutureExt};
use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};
use tracing::Instrument;

pub(crate) use crate::exchange::headers::X_REQUEST_ID;

pub(crate) use crate::base::fresh_id as fresh;

/// Whether a client's id is safe to keep, log and echo.
fn acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
}

#[derive(Clone, Copy, Default)]
pub(crate) struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;
    fn layer(&self, inner: S) -> RequestId<S> {
        RequestId { inner }
    }
}

#[derive(Clone)]
pub(crate) struct RequestId<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for RequestId<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = match req.headers().get(&X_REQUEST_ID) {
            Some(v) if acceptable(v) => v.clone(),
            _ => {
                let v = HeaderValue::try_from(fresh()).unwrap_or(HeaderValue::from_static("0"));
                req.headers_mut().insert(X_REQUEST_ID.clone(), v.clone());
                v
            }
        };
        // A span costs nothing unless debug lines are on: its fields are not even formatted.
        let span = tracing::debug_span!(
            "request",
            method = %req.method(),
            path = %crate::base::printable(req.uri().path()),
            request_id = id.to_str().unwrap_or("-"),
        );
        self.inner
            .call(req)
            .map(move |res| {
                res.map(|mut r| {
                    r.headers_mut().insert(X_REQUEST_ID.clone(), id);
                    r
                })
            })
            .instrument(span)
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_format_hex() {
        for n in [0, 1, 0xabc, u64::MAX, 0x0123_4567_89ab_cdef] {
            let mut s = String::new();
            crate::base::push_hex(&mut s, n);
            assert_eq!(s, format!("{n:016x}"));
        }
    }

    #[test]
    fn ids_are_unique_and_clean() {
        let a = fresh();
        let b = fresh();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(acceptable(&HeaderValue::try_from(a).unwrap()));
        assert!(!acceptable(&HeaderValue::from_static("a b")));
        assert!(!acceptable(&HeaderValue::from_static("")));
        assert!(!acceptable(
            &HeaderValue::try_from("x".repeat(129)).unwrap()
        ));
    }
}
