//! ⑤ Google's Gemini API (`generateContent`, `streamGenerateContent?alt=sse`): OpenAI requests
//! out as Gemini requests, Gemini answers and streams back as the gateway's answers.

mod request;
mod response;
mod stream;

use bytes::Bytes;
use http::StatusCode;

use super::{
    Adapter, AdapterError, AnswerBody, Completed, StreamTranslator, UpstreamFault, UpstreamRequest,
};
use crate::config::Deployment;
use crate::exchange::chat::ChatRequest;
use crate::exchange::embeddings::{Embeddings, EmbeddingsRequest, Input};

pub(crate) struct Gemini;

impl Adapter for Gemini {
    fn build_request(
        &self,
        req: &ChatRequest,
        d: &Deployment,
    ) -> Result<UpstreamRequest, AdapterError> {
        if req.max_output_tokens() == Some(0) {
            return Err(crate::adapters::openai_compat::prewarm_only());
        }
        let body = request::build(req, &d.model)?;
        let headers = super::json_headers(d);
        Ok(UpstreamRequest {
            url: super::chat_url(d, req.stream)?,
            headers,
            body: Bytes::from(serde_json::to_vec(&body).unwrap_or_default()),
        })
    }

    fn parse_response(
        &self,
        body: Bytes,
        _req: &ChatRequest,
        d: &Deployment,
    ) -> Result<Completed, AdapterError> {
        let c = response::parse(&body, &d.upstream_model)?;
        Ok(Completed {
            usage: Some(c.usage),
            body: AnswerBody::Parsed(c),
        })
    }

    fn parse_error(&self, status: StatusCode, body: &[u8], d: &Deployment) -> UpstreamFault {
        response::error(status, body, d)
    }

    fn retry_after_in_body(&self, body: &[u8]) -> Option<http::HeaderValue> {
        response::retry_delay(body)
    }

    fn build_embeddings(
        &self,
        req: &EmbeddingsRequest,
        d: &Deployment,
    ) -> Result<UpstreamRequest, AdapterError> {
        let Input::Texts(texts) = &req.input else {
            return Err(AdapterError::Unsupported(
                "Gemini embeds text, not token ids".into(),
            ));
        };
        let model = format!("models/{}", d.upstream_model);
        let requests: Vec<serde_json::Value> = texts
            .iter()
            .map(|t| {
                let mut r =
                    serde_json::json!({"model": model, "content": {"parts": [{"text": t}]}});
                if let Some(n) = req.dimensions {
                    r["outputDimensionality"] = serde_json::json!(n);
                }
                r
            })
            .collect();
        let headers = super::json_headers(d);
        Ok(UpstreamRequest {
            url: super::prepared(d.urls().embeddings.as_ref())?,
            headers,
            body: Bytes::from(
                serde_json::to_vec(&serde_json::json!({"requests": requests})).unwrap_or_default(),
            ),
        })
    }

    fn parse_embeddings(&self, body: &[u8], d: &Deployment) -> Result<Embeddings, AdapterError> {
        #[derive(serde::Deserialize)]
        struct Batch {
            embeddings: Vec<Values>,
        }
        #[derive(serde::Deserialize)]
        struct Values {
            values: Vec<f32>,
        }
        let b: Batch = serde_json::from_slice(body).map_err(|e| {
            AdapterError::InvalidResponse(format!("not a batchEmbedContents answer: {e}"))
        })?;
        Ok(Embeddings {
            model: d.upstream_model.clone(),
            vectors: b.embeddings.into_iter().map(|v| v.values).collect(),
            usage: None,
        })
    }

    fn stream_translator(&self, req: &ChatRequest, d: &Deployment) -> Box<dyn StreamTranslator> {
        Box::new(stream::GeminiStream::new(
            &d.upstream_model,
            req.n.unwrap_or(1),
        ))
    }
}

#[cfg(test)]
mod tests;
