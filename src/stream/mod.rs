//! ⑦ The response the client gets: JSON or SSE (the relay that reads an upstream stream is in
//! `upstream::relay`), with the headers that name the decision.

pub(crate) mod body;
pub(crate) mod respond;
