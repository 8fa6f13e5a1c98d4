//! ① Request ids: keep a well-formed `x-request-id` from the client, replace anything else with
//! a fresh one, and echo it on the response, errors included.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, FutureExt};
use http::{HeaderName, HeaderValue, Request, Response};
use tower::{Layer, Service};
use tracing::Instrument;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

static SEED: OnceLock<u64> = OnceLock::new();
static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh id: 32 hex characters, unique within the process and unpredictable across runs.
pub fn fresh() -> String {
    let seed = *SEED.get_or_init(|| {
        let mut b = [0u8; 8];
        // Without entropy the ids are still unique within the process, which is what matters.
        let _ = getrandom::getrandom(&mut b);
        u64::from_le_bytes(b)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let a = splitmix(seed ^ n);
    let mut id = String::with_capacity(32);
    push_hex(&mut id, a);
    push_hex(&mut id, splitmix(a ^ seed.rotate_left(32)));
    id
}

/// Appends `n` as 16 lowercase hex digits: what `{n:016x}` writes, without `format!`'s
/// machinery on every request.
pub fn push_hex(out: &mut String, n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.extend(
        (0..16)
            .rev()
            .map(|i| char::from(DIGITS[(n >> (i * 4)) as usize & 0xf])),
    );
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Whether a client's id is safe to keep, log and echo.
fn acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
}

#[derive(Clone, Copy, Default)]
pub struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;
    fn layer(&self, inner: S) -> RequestId<S> {
        RequestId { inner }
    }
}

#[derive(Clone)]
pub struct RequestId<S> {
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
            path = %crate::error::printable(req.uri().path()),
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
            push_hex(&mut s, n);
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
