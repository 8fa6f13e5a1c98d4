//! What passes between a client, the gateway and an upstream, in no client's or provider's
//! format: the parsed request, the answer and its pieces, token counts, the error a client is
//! sent, and the encoder that writes pieces in a client's format. Everything above reads and
//! writes these; nothing here knows a deployment, a policy or a socket.

pub(crate) mod answer;
pub mod chat;
pub(crate) mod depth;
pub mod embeddings;
pub mod encode;
pub(crate) mod error;
pub(crate) mod headers;
pub(crate) mod scan;
pub mod sse;
pub(crate) mod usage;

pub(crate) use error::{ErrorBody, ErrorType, RequestError};
pub(crate) use usage::Usage;
