//! ③ Our OpenAI-compatible wire contract: request parsing, response shapes and errors. Owned
//! types; no SDK crate's.

pub(crate) mod anthropic_out;
pub mod messages;
pub(crate) mod models;
pub(crate) mod openai_out;
pub(crate) mod responses;

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

use crate::exchange::RequestError;

/// Reads a request body up to `limit` bytes. The `Content-Length` check already happened in
/// the body-limit layer; this catches chunked bodies that grow past it.
pub(crate) async fn read_body<B>(
    body: B,
    limit: u64,
    within: Duration,
) -> Result<Bytes, RequestError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limited = http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX));
    // A body trickled in a byte at a time (R.U.D.Y.) would hold the request open for ever.
    let Ok(collected) = tokio::time::timeout(within, limited.collect()).await else {
        return Err(RequestError::Timeout(within.as_secs()));
    };
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(RequestError::TooLarge { limit })
        }
        Err(e) => Err(RequestError::Body(e.to_string())),
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
    let ct = ct.to_str().unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json")
        || essence.eq_ignore_ascii_case("application/x-www-form-urlencoded")
        || essence.is_empty()
    {
        // curl -d sends the form content type with a JSON body; accept it as JSON.
        Ok(())
    } else {
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
pub(crate) fn answer_model(d: &crate::config::Deployment, requested: &str) -> String {
    if !d.model.uncatalogued {
        return d.model.id.clone();
    }
    if requested != crate::config::AUTO && !requested.contains(['/', '\\']) {
        return requested.to_owned();
    }
    let base = d
        .upstream_model
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or(&d.upstream_model);
    base.strip_suffix(".gguf").unwrap_or(base).to_owned()
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
}
