//! ① Request ids: keep a well-formed `x-request-id` from the client, replace anything else with
//! a fresh one, and echo it on the response, errors included.

use http::{HeaderValue, Request};

pub(crate) use crate::exchange::headers::X_REQUEST_ID;

/// Whether a client's id is safe to keep, log and echo.
fn acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':'))
}

/// The request's id: the client's if [`acceptable`], else a fresh one, which replaces the
/// client's in the request so that everything after sees the id the response will carry.
pub(crate) fn ensure<B>(req: &mut Request<B>) -> HeaderValue {
    match req.headers().get(&X_REQUEST_ID) {
        Some(v) if acceptable(v) => v.clone(),
        _ => {
            // From the id's bytes: one check and one copy, no `String` made and checked first.
            let v = HeaderValue::from_bytes(&crate::base::fresh_id_bytes())
                .unwrap_or(HeaderValue::from_static("0"));
            req.headers_mut().insert(X_REQUEST_ID.clone(), v.clone());
            v
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::fresh_id as fresh;

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
