//! Loop detection. Every upstream call carries `x-modelgate-hops`: the ids of the gateways the
//! request has passed through, this one's last. A request that arrives carrying this
//! instance's id has come back to it (a deployment whose `base_url` is the gateway itself, or
//! a ring of gateways) and is refused at once with 508, so a loop costs one extra call, not
//! every admission slot.

use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};

pub(crate) static HOPS: HeaderName = HeaderName::from_static("x-modelgate-hops");

/// Gateways a request may pass through before it is taken for a loop all the same.
const MAX_HOPS: usize = 16;

tokio::task_local! {
    /// The hops a request arrived with, for the upstream calls made on its behalf.
    static ARRIVED: Option<HeaderValue>;
}

/// This process's id: random, so two processes (or one restarted) never share it.
pub fn instance_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let mut b = [0u8; 8];
        // Without entropy the time still tells a restarted process from the one before it.
        if getrandom::getrandom(&mut b).is_err() {
            b = crate::base::unix_ms().to_le_bytes();
        }
        b.iter().map(|x| format!("{x:02x}")).collect()
    })
}

/// Whether a request has come back to this gateway, or passed through too many.
pub(crate) fn is_loop(headers: &HeaderMap) -> bool {
    let me = instance_id();
    let mut hops = 0;
    for v in headers.get_all(&HOPS) {
        let Ok(v) = v.to_str() else {
            continue;
        };
        for id in v.split(',').map(str::trim) {
            hops += 1;
            if id == me || hops >= MAX_HOPS {
                return true;
            }
        }
    }
    false
}

/// Runs `poll` (one poll of a request's handling) with the hops the request arrived with in
/// reach of the upstream calls it makes.
pub(crate) fn carried<R>(arrived: &Option<HeaderValue>, poll: impl FnOnce() -> R) -> R {
    ARRIVED.sync_scope(arrived.clone(), poll)
}

/// The value for an upstream call: the hops the request arrived with, then this gateway.
pub(crate) fn outgoing() -> HeaderValue {
    static ALONE: OnceLock<HeaderValue> = OnceLock::new();
    let arrived = ARRIVED.try_with(Clone::clone).ok().flatten();
    match arrived.and_then(|a| {
        let a = a.to_str().ok()?.to_owned();
        HeaderValue::try_from(format!("{a},{}", instance_id())).ok()
    }) {
        Some(v) => v,
        None => ALONE
            .get_or_init(|| {
                HeaderValue::try_from(instance_id()).unwrap_or(HeaderValue::from_static("-"))
            })
            .clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(&HOPS, HeaderValue::from_str(v).unwrap());
        h
    }

    #[tokio::test]
    async fn a_request_back_at_its_gateway_is_a_loop() {
        assert!(!is_loop(&HeaderMap::new()));
        assert!(!is_loop(&with("other-gateway")));
        assert!(is_loop(&with(instance_id())));
        assert!(is_loop(&with(&format!("a, b,{}", instance_id()))));
        let many: Vec<String> = (0..MAX_HOPS).map(|i| format!("g{i}")).collect();
        assert!(is_loop(&with(&many.join(","))));
        // Outgoing calls name the gateways before this one, then this one.
        assert_eq!(outgoing(), instance_id());
        let out = carried(&with("a,b").get(&HOPS).cloned(), outgoing);
        assert_eq!(out, format!("a,b,{}", instance_id()).as_str());
        assert!(is_loop(&with(out.to_str().unwrap())));
    }
}
