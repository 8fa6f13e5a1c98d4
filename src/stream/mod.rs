//! ⑦ Translate back and stream: SSE decoding, the relay, and the response the client gets.

pub mod body;
pub mod relay;
pub mod respond;
