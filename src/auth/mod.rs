//! ② Authenticate: turn the presented key into a [`Caller`], against the keys of the snapshot
//! this request will use throughout. Deny by default: every API route goes through here.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::future::{Either, Ready, ready};
use http::{HeaderMap, Request, Response};
use tower::{Layer, Service};

use crate::config::Snapshot;
pub(crate) use crate::config::keys::Caller;
use crate::error::{AuthError, GatewayError};
use crate::live::{Current, Live};
use crate::stream::body::ResponseBody;

/// A request whose caller is known, with the configuration snapshot it is served under.
pub(crate) struct Authed<B> {
    pub(crate) caller: Caller,
    /// The state it is served under, loaded once.
    pub(crate) current: Arc<Current>,
    pub(crate) request: Request<B>,
}

/// Finds the caller of a request under a snapshot's keys.
pub(crate) fn authenticate(headers: &HeaderMap, snapshot: &Snapshot) -> Result<Caller, AuthError> {
    let cfg = &snapshot.config;
    if !cfg.auth_required {
        return Ok(cfg.anonymous.clone());
    }
    let presented = presented_key(headers)?;
    let caller = cfg.keys.authenticate(presented).ok_or(AuthError::Invalid)?;
    if let Some(at) = caller.expires
        && crate::base::unix_now() >= at
    {
        return Err(AuthError::Expired);
    }
    Ok(caller.clone())
}

/// The key in `Authorization: Bearer …` (or `x-api-key`, as Anthropic's clients send it).
fn presented_key(headers: &HeaderMap) -> Result<&[u8], AuthError> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let v = v.as_bytes();
        let (scheme, rest) = match v.iter().position(|&b| b == b' ') {
            Some(i) => (&v[..i], &v[i + 1..]),
            None => return Err(AuthError::Malformed),
        };
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return Err(AuthError::Malformed);
        }
        let token = trim(rest);
        if token.is_empty() || token.contains(&b' ') {
            return Err(AuthError::Malformed);
        }
        return Ok(token);
    }
    if let Some(v) = headers.get("x-api-key") {
        let token = trim(v.as_bytes());
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        return Ok(token);
    }
    Err(AuthError::Missing)
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| *c != b' ').unwrap_or(b.len());
    let end = b.iter().rposition(|c| *c != b' ').map_or(start, |e| e + 1);
    &b[start..end]
}

// === impl AuthLayer ===

/// Resolves the caller and the snapshot once per request.
#[derive(Clone)]
pub(crate) struct AuthLayer {
    live: Live,
}

impl AuthLayer {
    pub(crate) fn new(live: Live) -> Self {
        AuthLayer { live }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            live: self.live.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct AuthService<S> {
    inner: S,
    live: Live,
}

impl<S, B> Service<Request<B>> for AuthService<S>
where
    S: Service<Authed<B>, Response = Response<ResponseBody>, Error = Infallible>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = Either<Ready<Result<Response<ResponseBody>, Infallible>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let current = self.live.load_full();
        match authenticate(request.headers(), &current) {
            Ok(caller) => Either::Right(self.inner.call(Authed {
                caller,
                current,
                request,
            })),
            Err(e) => Either::Left(ready(Ok(GatewayError::from(e).into_response()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn bearer_parsing_is_strict() {
        assert_eq!(
            presented_key(&headers(&[("authorization", "Bearer abc")])).unwrap(),
            b"abc"
        );
        assert_eq!(
            presented_key(&headers(&[("authorization", "bearer  abc ")])).unwrap(),
            b"abc"
        );
        assert!(matches!(
            presented_key(&headers(&[("authorization", "Basic abc")])),
            Err(AuthError::Malformed)
        ));
        assert!(matches!(
            presented_key(&headers(&[("authorization", "Bearer")])),
            Err(AuthError::Malformed)
        ));
        assert!(matches!(
            presented_key(&headers(&[("authorization", "Bearer a b")])),
            Err(AuthError::Malformed)
        ));
        assert!(matches!(
            presented_key(&headers(&[("authorization", "xBearer abc")])),
            Err(AuthError::Malformed)
        ));
        assert!(matches!(
            presented_key(&headers(&[])),
            Err(AuthError::Missing)
        ));
        assert_eq!(
            presented_key(&headers(&[("x-api-key", "k1")])).unwrap(),
            b"k1"
        );
    }
}
