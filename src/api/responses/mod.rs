//! ③ OpenAI's Responses API (`/v1/responses`) as a front door: the request read and turned into
//! the gateway's one request type (`request.rs`), and the answer written back as a response
//! object or its typed event stream (`output.rs`). Conversations continued with
//! `previous_response_id` are replayed from the store by the endpoint's flow.

mod messages;
pub(crate) mod output;
pub(crate) mod request;
mod tools;

pub(crate) use tools::Namespaced;

/// A fresh id for an output or input item: `msg_…`, `fc_…`.
pub(crate) fn item_id(prefix: &str) -> String {
    format!("{prefix}_{}", crate::base::fresh_id())
}

/// A fresh response id, `resp_` and 32 random hex digits: the key of a stored conversation,
/// so it is drawn from the system's randomness, not from a sequence.
pub(crate) fn response_id() -> String {
    let mut b = [0u8; 16];
    if getrandom::getrandom(&mut b).is_err() {
        return item_id("resp");
    }
    let mut id = String::with_capacity(37);
    id.push_str("resp_");
    for half in b.chunks_exact(8) {
        let mut n = [0u8; 8];
        n.copy_from_slice(half);
        crate::base::push_hex(&mut id, u64::from_le_bytes(n));
    }
    id
}
