//! ② Authenticate: turn the presented key into a [`Caller`], against the keys of the snapshot
//! this request will use throughout. Deny by default: every API route goes through here.

use std::sync::Arc;

use http::{HeaderMap, Request};

use crate::config::Snapshot;
pub(crate) use crate::config::keys::Caller;
use crate::error::AuthError;
use crate::exchange::headers::X_API_KEY;
use crate::live::Current;

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
    if let Some(v) = headers.get(&X_API_KEY) {
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
