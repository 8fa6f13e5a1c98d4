//! ⑦ Encoders: write a streamed answer in the client's format. The upstream's translator hands
//! each piece of the answer to the encoder of the endpoint the client called (OpenAI chunks for
//! `/v1/chat/completions`, Anthropic events for `/v1/messages`). An OpenAI client of an
//! OpenAI-compatible upstream gets the upstream's chunks as they are (`passthrough`).

use bytes::BytesMut;

use crate::exchange::answer::Piece;
use crate::exchange::{ErrorBody, Usage};

/// What is known when an answer completes.
#[derive(Clone, Copy, Debug, Default)]
pub struct End {
    /// The usage the upstream reported, if any.
    pub usage: Option<Usage>,
    /// A usage chunk was already relayed to the client as it was.
    pub usage_relayed: bool,
    /// Bytes of generated text, for an estimate when there is no usage.
    pub output_chars: usize,
}

/// What the translator found at the top level of an OpenAI chunk it reads anyway, so that the
/// encoder relaying the chunk does not read it again: each value's JSON as it came.
#[derive(Clone, Debug, Default)]
pub struct ChunkHead<'a> {
    /// Where the chunk's `model` value lies in it (its JSON, quotes included).
    pub model: Option<std::ops::Range<usize>>,
    /// The chunk's `id`.
    pub id: Option<&'a str>,
    /// The chunk's `created`.
    pub created: Option<&'a str>,
}

/// Writes one answer in a client's format.
pub trait Encoder: Send {
    /// Whether upstream OpenAI chunks can be relayed as they are.
    fn passthrough(&self) -> bool {
        false
    }

    /// An upstream OpenAI chunk, relayed as it is (only asked when `passthrough`), and what its
    /// translator read of it.
    fn raw(&mut self, _data: &[u8], _head: &ChunkHead<'_>, _out: &mut BytesMut) {}

    /// One piece of the answer.
    fn piece(&mut self, p: Piece<'_>, out: &mut BytesMut);

    /// The answer is complete: whatever closes the stream in this format.
    fn done(&mut self, end: End, out: &mut BytesMut);

    /// The stream failed: an error event, and nothing that looks like a clean end.
    fn error(&mut self, e: &ErrorBody, out: &mut BytesMut);

    /// An event of OpenAI's Responses API, for the format that relays them as they are.
    fn native(&mut self, _event: &serde_json::Value, _out: &mut BytesMut) {}
}
