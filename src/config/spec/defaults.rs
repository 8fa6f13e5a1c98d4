//! What a field left out of `modelgate.yaml` means, where it is not simply nothing: kept apart
//! from the specs so that `spec.rs` stays the field list the reference is generated from.

use super::{CatalogRefSpec, LimitsSpec, PoliciesRefSpec, StoreErrorMode};

impl Default for PoliciesRefSpec {
    fn default() -> Self {
        PoliciesRefSpec {
            builtin: true,
            paths: Vec::new(),
            active: None,
            shadow: None,
        }
    }
}

impl Default for CatalogRefSpec {
    fn default() -> Self {
        CatalogRefSpec {
            builtin: true,
            paths: Vec::new(),
        }
    }
}

impl Default for LimitsSpec {
    fn default() -> Self {
        LimitsSpec {
            max_body_bytes: max_body(),
            max_messages: max_messages(),
            max_json_depth: max_depth(),
            max_response_bytes: max_response(),
            max_sse_line_bytes: max_sse_line(),
            body_read_timeout: None,
            store: None,
            on_store_error: StoreErrorMode::Closed,
        }
    }
}

pub(super) fn yes() -> bool {
    true
}

pub(super) fn max_body() -> u64 {
    8 << 20
}

pub(super) fn max_messages() -> usize {
    10_000
}

pub(super) fn max_depth() -> usize {
    64
}

pub(super) fn max_response() -> u64 {
    16 << 20
}

pub(super) fn max_sse_line() -> usize {
    1 << 20
}
