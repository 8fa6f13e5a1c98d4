//! ⑤ Anthropic's Messages API: OpenAI requests out as Messages requests, Messages answers and
//! event streams back as the gateway's answers.

mod request;
mod response;
mod stream;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};

use super::{
    Adapter, AdapterError, AnswerBody, Completed, StreamTranslator, UpstreamFault, UpstreamRequest,
};
use crate::config::Deployment;
use crate::exchange::chat::ChatRequest;

/// The API version the translation is written for.
pub(crate) const VERSION: &str = "2023-06-01";

pub(crate) struct Anthropic;

impl Adapter for Anthropic {
    fn build_request(
        &self,
        req: &ChatRequest,
        d: &Deployment,
    ) -> Result<UpstreamRequest, AdapterError> {
        let body = request::build(req, d)?;
        Ok(UpstreamRequest {
            url: super::chat_url(d, req.stream)?,
            headers: headers(d),
            body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        })
    }

    /// The client's body with the deployment's model name, without what counting refuses.
    fn build_count_tokens(
        &self,
        body: &serde_json::Value,
        d: &Deployment,
    ) -> Result<UpstreamRequest, AdapterError> {
        let mut body = body.clone();
        body["model"] = serde_json::Value::String(d.upstream_model.clone());
        if let Some(o) = body.as_object_mut() {
            o.remove("stream");
            o.remove("max_tokens");
        }
        Ok(UpstreamRequest {
            url: super::prepared(d.urls().count_tokens.as_ref())?,
            headers: headers(d),
            body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        })
    }

    fn parse_response(
        &self,
        body: Bytes,
        _req: &ChatRequest,
        _d: &Deployment,
    ) -> Result<Completed, AdapterError> {
        let c = response::parse(&body)?;
        Ok(Completed {
            usage: Some(c.usage),
            body: AnswerBody::Parsed(c),
        })
    }

    fn parse_error(&self, status: StatusCode, body: &[u8], d: &Deployment) -> UpstreamFault {
        response::error(status, body, d)
    }

    fn stream_translator(&self, _req: &ChatRequest, _d: &Deployment) -> Box<dyn StreamTranslator> {
        Box::new(stream::AnthropicStream::default())
    }
}

/// The headers of every request to the Messages API.
fn headers(d: &Deployment) -> Vec<(HeaderName, HeaderValue)> {
    let mut headers = super::json_headers(d);
    headers.push((
        HeaderName::from_static("anthropic-version"),
        HeaderValue::from_static(VERSION),
    ));
    headers
}

#[cfg(test)]
mod tests;
