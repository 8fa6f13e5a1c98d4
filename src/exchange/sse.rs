//! ⑦ Server-sent events: an incremental decoder for upstream streams (any chunking, CRLF/CR/LF
//! line ends, comments, a cap on line length) and the few encoder helpers the relay needs.

use bytes::{Bytes, BytesMut};

/// One decoded event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if the stream names its events (Anthropic does).
    pub(crate) event: Option<Bytes>,
    /// The `data:` lines, joined with `\n`.
    pub(crate) data: Bytes,
}

/// The stream broke the decoder's limits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("upstream sent an SSE line longer than {0} bytes")]
    LineTooLong(usize),
    /// The event's `data:` lines together: an upstream that never ends its event must not
    /// grow the gateway without bound.
    #[error("upstream sent an SSE event larger than {0} bytes")]
    EventTooLarge(usize),
}

/// Incremental SSE decoder. Feed it chunks as they arrive; it returns complete events. A line,
/// and an event's data, are each bounded by `max_line` bytes.
#[derive(Debug)]
pub struct SseDecoder {
    max_line: usize,
    /// Bytes of a line whose end has not arrived yet.
    partial: BytesMut,
    /// A `\r` ended the last chunk: a `\n` starting the next one belongs to it.
    pending_cr: bool,
    data: BytesMut,
    /// The event's one `data:` line so far, shared with the chunk it came in rather than
    /// copied (the common case: an event within one chunk, one data line).
    shared: Option<Bytes>,
    has_data: bool,
    event: Option<Bytes>,
}

impl SseDecoder {
    pub fn new(max_line: usize) -> SseDecoder {
        SseDecoder {
            max_line,
            partial: BytesMut::new(),
            pending_cr: false,
            data: BytesMut::new(),
            shared: None,
            has_data: false,
            event: None,
        }
    }

    /// Decodes `chunk`, appending every event it completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        self.feed_from(chunk, None, out)
    }

    /// [`Self::feed`] for a chunk the decoder may keep parts of: an event's data and name that
    /// lie whole within it are handed on as slices of it, not copies.
    pub fn feed_bytes(&mut self, chunk: &Bytes, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        self.feed_from(chunk, Some(chunk), out)
    }

    fn feed_from(
        &mut self,
        chunk: &[u8],
        source: Option<&Bytes>,
        out: &mut Vec<SseEvent>,
    ) -> Result<(), SseError> {
        if chunk.is_empty() {
            return Ok(());
        }
        let mut rest = chunk;
        if self.pending_cr {
            self.pending_cr = false;
            if let Some(b'\n') = rest.first() {
                rest = &rest[1..];
            }
        }
        while let Some(pos) = memchr::memchr2(b'\n', b'\r', rest) {
            let (line, tail) = rest.split_at(pos);
            let mut next = &tail[1..];
            if tail[0] == b'\r' {
                match next.first() {
                    Some(b'\n') => next = &next[1..],
                    None => self.pending_cr = true,
                    _ => {}
                }
            }
            if self.partial.is_empty() {
                self.check_len(line.len())?;
                self.line(line, source, out)?;
            } else {
                self.check_len(self.partial.len() + line.len())?;
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                let done = self.line(&whole, None, out);
                whole.clear();
                self.partial = whole;
                done?;
            }
            rest = next;
        }
        if !rest.is_empty() {
            self.check_len(self.partial.len() + rest.len())?;
            self.partial.extend_from_slice(rest);
        }
        Ok(())
    }

    /// The upstream body ended: dispatches an event whose final blank line never came.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, None, out)?;
        }
        self.line(b"", None, out)
    }

    /// Whether bytes of an unfinished event are buffered (the stream ended mid-event).
    #[cfg(test)]
    pub(crate) fn has_partial_event(&self) -> bool {
        !self.partial.is_empty() || self.has_data || self.event.is_some()
    }

    fn check_len(&self, n: usize) -> Result<(), SseError> {
        if n > self.max_line {
            Err(SseError::LineTooLong(self.max_line))
        } else {
            Ok(())
        }
    }

    /// One line; `source`, when given, is the chunk `line` lies in.
    fn line(
        &mut self,
        line: &[u8],
        source: Option<&Bytes>,
        out: &mut Vec<SseEvent>,
    ) -> Result<(), SseError> {
        if line.is_empty() {
            if self.has_data || self.event.is_some() {
                let data = match self.shared.take() {
                    Some(shared) => shared,
                    None => self.data.split().freeze(),
                };
                out.push(SseEvent {
                    event: self.event.take(),
                    data,
                });
                self.has_data = false;
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(()); // comment (keep-alive)
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                let held = self.shared.as_ref().map_or(self.data.len(), Bytes::len);
                if held + value.len() + 1 > self.max_line {
                    return Err(SseError::EventTooLarge(self.max_line));
                }
                match (self.has_data, source) {
                    (false, Some(chunk)) => self.shared = Some(chunk.slice_ref(value)),
                    (false, None) => self.data.extend_from_slice(value),
                    (true, _) => {
                        // A second data line: the event is joined in the decoder's own buffer.
                        if let Some(first) = self.shared.take() {
                            self.data.extend_from_slice(&first);
                        }
                        self.data.extend_from_slice(b"\n");
                        self.data.extend_from_slice(value);
                    }
                }
                self.has_data = true;
            }
            b"event" => {
                self.event = Some(match source {
                    Some(chunk) => chunk.slice_ref(value),
                    None => Bytes::copy_from_slice(value),
                });
            }
            _ => {} // id, retry and unknown fields do not matter to a relay
        }
        Ok(())
    }
}

/// `data: [DONE]`, the end of an OpenAI stream.
pub(crate) const DONE: &[u8] = b"data: [DONE]\n\n";

/// Appends `data: <json>\n\n` to `out`.
pub(crate) fn write_data(out: &mut BytesMut, json: &[u8]) {
    out.reserve(json.len() + 8);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut d = SseDecoder::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            d.feed(c, &mut out).unwrap();
        }
        out
    }

    fn ev(event: Option<&str>, data: &str) -> SseEvent {
        SseEvent {
            event: event.map(|e| Bytes::copy_from_slice(e.as_bytes())),
            data: Bytes::copy_from_slice(data.as_bytes()),
        }
    }

    const STREAM: &[u8] = b": keep-alive\n\nevent: message_start\ndata: {\"a\":1}\n\ndata: x\r\ndata: y\r\n\r\ndata:no-space\r\rretry: 10\nid: 7\ndata: [DONE]\n\n";

    #[test]
    fn decodes_fields_and_line_ends() {
        assert_eq!(
            decode_all(&[STREAM]),
            vec![
                ev(Some("message_start"), "{\"a\":1}"),
                ev(None, "x\ny"),
                ev(None, "no-space"),
                ev(None, "[DONE]"),
            ]
        );
    }

    #[test]
    fn any_split_gives_the_same_events() {
        let whole = decode_all(&[STREAM]);
        for i in 0..=STREAM.len() {
            for j in i..=STREAM.len() {
                let got = decode_all(&[&STREAM[..i], &STREAM[i..j], &STREAM[j..]]);
                assert_eq!(got, whole, "split at {i},{j}");
            }
        }
    }

    /// Chunks the decoder may keep slices of decode as copied ones do, at every split; an event
    /// that lies whole in one chunk is handed on without a copy.
    #[test]
    fn shared_chunks_give_the_same_events_without_copies() {
        let whole = decode_all(&[STREAM]);
        let shared = |chunks: &[&[u8]]| {
            let mut d = SseDecoder::new(1 << 20);
            let mut out = Vec::new();
            for c in chunks {
                d.feed_bytes(&Bytes::copy_from_slice(c), &mut out).unwrap();
            }
            d.finish(&mut out).unwrap();
            out
        };
        for i in 0..=STREAM.len() {
            for j in i..=STREAM.len() {
                let got = shared(&[&STREAM[..i], &STREAM[i..j], &STREAM[j..]]);
                assert_eq!(got, whole, "split at {i},{j}");
            }
        }
        let chunk = Bytes::from_static(b"event: delta\ndata: {\"t\":\"hi\"}\n\n");
        let mut d = SseDecoder::new(1024);
        let mut out = Vec::new();
        d.feed_bytes(&chunk, &mut out).unwrap();
        let within = |b: &Bytes| chunk.as_ptr_range().contains(&b.as_ptr());
        assert!(within(&out[0].data) && out[0].event.as_ref().is_some_and(within));
        // The bound counts a shared first line too.
        let mut d = SseDecoder::new(16);
        let mut out = Vec::new();
        d.feed_bytes(&Bytes::from_static(b"data: 0123456789\n"), &mut out)
            .unwrap();
        assert_eq!(
            d.feed_bytes(&Bytes::from_static(b"data: 0123456789\n"), &mut out),
            Err(SseError::EventTooLarge(16))
        );
    }

    #[test]
    fn long_lines_are_refused() {
        let mut d = SseDecoder::new(16);
        let mut out = Vec::new();
        assert!(d.feed(b"data: 0123456789", &mut out).is_ok());
        assert_eq!(d.feed(b"abcdef", &mut out), Err(SseError::LineTooLong(16)));
        let mut d = SseDecoder::new(16);
        assert_eq!(
            d.feed(b"data: 0123456789abcdef\n", &mut out),
            Err(SseError::LineTooLong(16))
        );
    }

    #[test]
    fn an_endless_event_is_refused_at_the_bound() {
        // Short lines, never a blank one: the event, not the line, must hit the bound.
        let mut d = SseDecoder::new(4096);
        let mut out = Vec::new();
        let line = [b"data: ".as_slice(), &[b'x'; 1000], b"\n"].concat();
        let mut fed = 0;
        let err = loop {
            match d.feed(&line, &mut out) {
                Ok(()) => fed += 1,
                Err(e) => break e,
            }
            assert!(fed < 10, "still accepted after {fed} lines");
        };
        assert_eq!(err, SseError::EventTooLarge(4096));
        assert!(out.is_empty());
        // The same at the end of the body, when the last lines never became an event.
        let mut d = SseDecoder::new(1500);
        d.feed(b"data: 0123456789\n", &mut out).unwrap();
        d.feed(&[b"data: ".as_slice(), &[b'x'; 1490]].concat(), &mut out)
            .unwrap();
        assert_eq!(d.finish(&mut out), Err(SseError::EventTooLarge(1500)));
    }

    #[test]
    fn an_unfinished_event_is_reported() {
        let mut d = SseDecoder::new(1024);
        let mut out = Vec::new();
        d.feed(b"data: {\"x\":1}\n\ndata: {\"cut", &mut out)
            .unwrap();
        assert_eq!(out.len(), 1);
        assert!(d.has_partial_event());
    }
}
