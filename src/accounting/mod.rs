//! ⑧ Accounting: tokens and cost, estimated before a call (for the policy's caps) and settled
//! after it from the usage the upstream reported.

pub(crate) mod cost;
pub(crate) mod tokens;
