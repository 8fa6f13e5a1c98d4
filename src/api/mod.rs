//! ③ Our OpenAI-compatible wire contract: request parsing, response shapes and errors. Owned
//! types; no SDK crate's.

pub(crate) mod anthropic_out;
pub mod messages;
pub(crate) mod models;
pub(crate) mod openai_out;
pub(crate) mod responses;

use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http_body_util::BodyExt;

use crate::exchange::RequestError;

/// Reads a request body up to `limit` bytes. A declared `Content-Length` over it was refused
/// before the body was read; this catches chunked bodies that grow past it.
pub(crate) async fn read_body<B>(
    body: B,
    limit: u64,
    within: Duration,
) -> Result<Bytes, RequestError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let max = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut body = std::pin::pin!(body);
    let mut whole = Whole::Empty;
    let mut deadline = None;
    loop {
        // A body already in (most are, with their head) is read without arming a timer.
        let ready = body.as_mut().frame().now_or_never();
        // The body's error as the boxed error it becomes: `B::Error` need not be `Send`.
        let frame = match ready.map(|f| f.map(|r| r.map_err(Into::into))) {
            Some(frame) => frame,
            None => {
                // A body trickled in a byte at a time (R.U.D.Y.) would hold the request open
                // for ever: the time to read it counts from its first wait.
                let at = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + within);
                match tokio::time::timeout_at(at, body.as_mut().frame()).await {
                    Ok(frame) => frame.map(|r| r.map_err(Into::into)),
                    Err(_) => return Err(RequestError::Timeout(within.as_secs())),
                }
            }
        };
        match frame {
            None => return Ok(whole.into_bytes()),
            Some(Err(e)) => return Err(RequestError::Body(e.to_string())),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if whole.len() + data.len() > max {
                        return Err(RequestError::TooLarge { limit });
                    }
                    whole.push(data);
                }
            }
        }
    }
}

/// A body as it is read: its one chunk kept as it came (no copy, the usual case), or its
/// chunks, joined at the end into one buffer of their exact size.
enum Whole {
    Empty,
    One(Bytes),
    Many(Vec<Bytes>, usize),
}

impl Whole {
    fn len(&self) -> usize {
        match self {
            Whole::Empty => 0,
            Whole::One(b) => b.len(),
            Whole::Many(_, len) => *len,
        }
    }

    fn push(&mut self, data: Bytes) {
        *self = match std::mem::replace(self, Whole::Empty) {
            Whole::Empty => Whole::One(data),
            Whole::One(first) => {
                let len = first.len() + data.len();
                Whole::Many(vec![first, data], len)
            }
            Whole::Many(mut chunks, len) => {
                let len = len + data.len();
                chunks.push(data);
                Whole::Many(chunks, len)
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Whole::Empty => Bytes::new(),
            Whole::One(b) => b,
            Whole::Many(chunks, len) => {
                let mut joined = bytes::BytesMut::with_capacity(len);
                for c in &chunks {
                    joined.extend_from_slice(c);
                }
                joined.freeze()
            }
        }
    }
}

/// Checks that a body is declared as JSON (or not declared at all, as curl without `-H` does),
/// and is not compressed (a compressed body is refused rather than inflated: no bombs).
pub(crate) fn check_json_content_type(headers: &http::HeaderMap) -> Result<(), RequestError> {
    if let Some(ce) = headers.get(http::header::CONTENT_ENCODING) {
        let ce = ce.to_str().unwrap_or("?").trim();
        if !ce.eq_ignore_ascii_case("identity") {
            return Err(RequestError::ContentEncoding(ce.chars().take(32).collect()));
        }
    }
    let Some(ct) = headers.get(http::header::CONTENT_TYPE) else {
        return Ok(());
    };
    // On bytes, trimmed of ASCII space only: header values are visible ASCII (RFC 9110), and
    // the text's Unicode trimming and splitting are code every request would run for nothing.
    let bytes = ct.as_bytes();
    let essence = bytes
        .iter()
        .position(|&b| b == b';')
        .map_or(bytes, |end| &bytes[..end])
        .trim_ascii();
    if essence.eq_ignore_ascii_case(b"application/json")
        || essence.eq_ignore_ascii_case(b"application/x-www-form-urlencoded")
        || essence.is_empty()
    {
        // curl -d sends the form content type with a JSON body; accept it as JSON.
        Ok(())
    } else {
        let ct = ct.to_str().unwrap_or("?");
        Err(RequestError::ContentType(
            ct.chars().take(64).collect::<String>(),
        ))
    }
}

/// The API format a client speaks: it shapes how its request is read and its answer written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Front {
    /// `/v1/chat/completions`.
    OpenAi,
    /// `/v1/messages`.
    Anthropic,
    /// `/v1/responses`: OpenAI's error format; its answers are written by `responses::output`.
    Responses,
}

impl Front {
    pub(crate) fn endpoint(self) -> crate::policy::EndpointName {
        match self {
            Front::OpenAi => crate::policy::EndpointName::ChatCompletions,
            Front::Anthropic => crate::policy::EndpointName::Messages,
            Front::Responses => crate::policy::EndpointName::Responses,
        }
    }

    /// The stream encoder for this format.
    /// The encoder of a stream in this format; `output_limit` (the request's `max_tokens` ×
    /// `n`) bounds an estimated output, and every event names `model` as the model.
    pub fn encoder(
        self,
        wants_usage: bool,
        prompt_estimate: u64,
        output_limit: Option<u64>,
        model: &str,
    ) -> Box<dyn crate::exchange::encode::Encoder> {
        match self {
            Front::OpenAi | Front::Responses => Box::new(openai_out::OpenAiEncoder::new(
                wants_usage,
                prompt_estimate,
                output_limit,
                model,
            )),
            Front::Anthropic => Box::new(anthropic_out::AnthropicEncoder::new(
                prompt_estimate,
                output_limit,
                model,
            )),
        }
    }

    /// A whole answer in this format.
    /// A whole answer in this format, naming `model` as the model that answered.
    pub(crate) fn whole(
        self,
        body: crate::adapters::AnswerBody,
        model: &str,
    ) -> Result<Bytes, crate::adapters::AdapterError> {
        use crate::adapters::AnswerBody;
        Ok(match (self, body) {
            (Front::OpenAi | Front::Responses, AnswerBody::OpenAi(b, at)) => match at {
                Some(at) => model_at(&b, at, model).unwrap_or(b),
                None => with_model(&b, model).unwrap_or(b),
            },
            (Front::OpenAi | Front::Responses, AnswerBody::Parsed(mut c)) => {
                c.model = model.to_owned();
                openai_out::completion_json(&c)
            }
            (Front::Anthropic, AnswerBody::OpenAi(b, _)) => {
                let mut c = crate::adapters::openai_compat::parse_completion(&b)?;
                c.model = model.to_owned();
                anthropic_out::message_json(&c)
            }
            (Front::Anthropic, AnswerBody::Parsed(mut c)) => {
                c.model = model.to_owned();
                anthropic_out::message_json(&c)
            }
            // Only a Responses client's request is sent to OpenAI's Responses API.
            (_, AnswerBody::Responses(_)) => {
                return Err(crate::adapters::AdapterError::InvalidResponse(
                    "a Responses API answer to a chat request".into(),
                ));
            }
        })
    }
}

/// The model an answer names: the catalog id of the model that served it, as the response
/// headers say; for a model the catalog does not know, the name the client asked for (or,
/// for `auto`, the backend's name without any directory or file extension), never a path.
pub(crate) fn answer_model<'a>(d: &'a crate::config::Deployment, requested: &'a str) -> &'a str {
    if !d.model.uncatalogued {
        return &d.model.id;
    }
    if requested != crate::config::AUTO && !requested.contains(['/', '\\']) {
        return requested;
    }
    let base = d
        .upstream_model
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(&d.upstream_model);
    base.strip_suffix(".gguf").unwrap_or(base)
}

/// An OpenAI-format JSON object (a completion or a chunk) with its top-level `model` set to
/// `model`; `None` when it already says so or has no `model`. The rest of the bytes are kept
/// as they came.
pub(crate) fn with_model(json: &[u8], model: &str) -> Option<Bytes> {
    #[derive(serde::Deserialize)]
    struct Probe<'a> {
        #[serde(borrow)]
        model: Option<&'a serde_json::value::RawValue>,
    }
    let probe: Probe<'_> = crate::base::json(json).ok()?;
    let raw = probe.model?.get();
    let start = (raw.as_ptr() as usize).checked_sub(json.as_ptr() as usize)?;
    model_at(json, start..start + raw.len(), model)
}

/// [`with_model`] where the `model` value is known to lie at `at` (its JSON, quotes included).
pub(crate) fn model_at(json: &[u8], at: std::ops::Range<usize>, model: &str) -> Option<Bytes> {
    let raw = json.get(at.clone())?;
    // Most answers name the model already: compared without writing the JSON string first.
    if raw
        .strip_prefix(b"\"")
        .and_then(|r| r.strip_suffix(b"\""))
        .is_some_and(|r| {
            r == model.as_bytes() && !r.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\')
        })
    {
        return None;
    }
    let want = serde_json::to_string(model).ok()?;
    if raw == want.as_bytes() {
        return None;
    }
    let mut out = Vec::with_capacity(json.len() + want.len());
    out.extend_from_slice(&json[..at.start]);
    out.extend_from_slice(want.as_bytes());
    out.extend_from_slice(&json[at.end..]);
    Some(Bytes::from(out))
}

#[cfg(test)]
mod model_tests {
    #[test]
    fn the_model_field_is_replaced_and_nothing_else() {
        let b = br#"{"id":"x","model":"/models/Qwen2.5-7B-Instruct-Q4_K_M.gguf","choices":[{"delta":{"content":"model"}}]}"#;
        let out = super::with_model(b, "qwen2.5-7b-instruct").unwrap();
        assert_eq!(
            &out[..],
            br#"{"id":"x","model":"qwen2.5-7b-instruct","choices":[{"delta":{"content":"model"}}]}"#
        );
        assert!(super::with_model(&out, "qwen2.5-7b-instruct").is_none());
        assert!(super::with_model(br#"{"id":"x"}"#, "m").is_none());
    }

    #[test]
    fn a_model_already_named_is_kept_escaped_or_not() {
        let at = |json: &[u8]| 9..json.len() - 1;
        let plain = br#"{"model":"m-1"}"#;
        assert!(super::model_at(plain, at(plain), "m-1").is_none());
        let out = super::model_at(plain, at(plain), "m-2").unwrap();
        assert_eq!(&out[..], br#"{"model":"m-2"}"#);
        let escaped = br#"{"model":"a\"b"}"#;
        assert!(super::model_at(escaped, at(escaped), "a\"b").is_none());
        // The bytes of the name, but not the JSON string of it (a backslash escapes).
        let raw = br#"{"model":"a\b"}"#;
        let out = super::model_at(raw, at(raw), "a\\b").unwrap();
        assert_eq!(&out[..], br#"{"model":"a\\b"}"#);
        assert!(super::model_at(&out, at(&out), "a\\b").is_none());
    }
}

#[cfg(test)]
mod read_body_tests {
    use std::convert::Infallible;
    use std::time::Duration;

    use bytes::Bytes;
    use futures_util::StreamExt;
    use http_body::Frame;
    use http_body_util::StreamBody;

    use super::read_body;
    use crate::exchange::RequestError;

    type Chunk = Result<Frame<Bytes>, Infallible>;

    fn chunks(
        parts: &[&'static str],
    ) -> StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Chunk>>> {
        let frames: Vec<Chunk> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn one_chunk_many_chunks_and_none_are_read_whole() {
        let s = Duration::from_secs(1);
        let one = read_body(chunks(&["{\"a\":1}"]), 100, s).await.unwrap();
        assert_eq!(&one[..], b"{\"a\":1}");
        let many = read_body(chunks(&["{\"a\"", ":", "1}"]), 100, s)
            .await
            .unwrap();
        assert_eq!(&many[..], b"{\"a\":1}");
        assert!(read_body(chunks(&[]), 100, s).await.unwrap().is_empty());
        // Exactly the limit passes; one byte over it does not, however it is cut.
        assert_eq!(
            read_body(chunks(&["12", "34"]), 4, s).await.unwrap().len(),
            4
        );
        for parts in [&["12345"][..], &["12", "345"], &["1234", "5"]] {
            let e = read_body(chunks(parts), 4, s).await.unwrap_err();
            assert!(
                matches!(e, RequestError::TooLarge { limit: 4 }),
                "{parts:?}: {e:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_coming_times_out() {
        let first = Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"{")));
        let stalled = futures_util::stream::iter([first]).chain(futures_util::stream::pending());
        let body = StreamBody::new(stalled.boxed());
        let e = read_body(body, 100, Duration::from_secs(3))
            .await
            .unwrap_err();
        assert!(matches!(e, RequestError::Timeout(3)), "{e:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(content_type: &[u8]) -> Result<(), RequestError> {
        let mut h = http::HeaderMap::new();
        let v = http::HeaderValue::from_bytes(content_type).unwrap();
        h.insert(http::header::CONTENT_TYPE, v);
        check_json_content_type(&h)
    }

    #[test]
    fn json_and_what_curl_sends_are_accepted_in_any_case_and_spacing() {
        assert!(check_json_content_type(&http::HeaderMap::new()).is_ok());
        for ok in [
            &b"application/json"[..],
            b"application/json; charset=utf-8",
            b" Application/JSON \t;charset=utf-8",
            b"application/x-www-form-urlencoded",
            b"",
            b" ; charset=utf-8",
        ] {
            assert!(check(ok).is_ok(), "{:?}", String::from_utf8_lossy(ok));
        }
    }

    #[test]
    fn other_types_are_refused_with_what_was_sent() {
        for bad in [
            &b"text/plain"[..],
            b"application/jsonx",
            b"multipart/form-data; boundary=x",
            b"application/json\xff",
        ] {
            match check(bad) {
                Err(RequestError::ContentType(t)) => assert!(t.len() <= 64),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bad)),
            }
        }
        let long = format!("text/{}", "x".repeat(500));
        assert!(
            matches!(check(long.as_bytes()), Err(RequestError::ContentType(t)) if t.len() == 64)
        );
    }
}
